//! This machine as a host (`sealer run` on the machine it is started on).

use std::net::IpAddr;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use super::{
    BOOTSTRAP, Channel, Host, HostError, Output, exit_status, feed, finish, script_header,
};

pub struct LocalHost {
    ip: IpAddr,
}

impl LocalHost {
    /// This machine, known to the cluster as `ip`.
    pub fn new(ip: IpAddr) -> LocalHost {
        LocalHost { ip }
    }

    /// `sh` running [`BOOTSTRAP`], its three streams piped.
    fn spawn_sh(&self) -> Result<tokio::process::Child, HostError> {
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(BOOTSTRAP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(HostError::io(self.ip, "starting sh"))
    }
}

#[async_trait]
impl Host for LocalHost {
    fn ip(&self) -> IpAddr {
        self.ip
    }

    async fn open(&self, script: &str) -> Result<Channel, HostError> {
        use tokio::io::AsyncWriteExt;
        let io = |context: &str| HostError::io(self.ip, context);
        let mut child = self.spawn_sh()?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(script_header(script).as_bytes())
            .await
            .map_err(io("writing stdin"))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take();
        let ip = self.ip;
        Ok(Channel {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            done: Box::pin(async move {
                finish(
                    ip,
                    stderr,
                    async move { child.wait().await.map(|s| s.code()) },
                )
                .await
            }),
        })
    }

    async fn run_streaming(
        &self,
        script: &str,
        input: Option<&mut (dyn AsyncRead + Send + Unpin)>,
    ) -> Result<Output, HostError> {
        let io = |context: &str| HostError::io(self.ip, context);
        let mut child = self.spawn_sh()?;
        if let Some(mut stdin) = child.stdin.take() {
            feed(&mut stdin, script, input)
                .await
                .map_err(io("writing stdin"))?;
        }
        let out = child.wait_with_output().await.map_err(io("running sh"))?;
        let (code, stderr) = exit_status(out.status.code(), &String::from_utf8_lossy(&out.stderr));
        Ok(Output {
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_that_stops_reading_is_judged_by_its_exit_status() {
        let host = LocalHost::new("127.0.0.1".parse().unwrap());
        // More than a pipe holds, so the writer meets the closed pipe.
        let input = vec![b'x'; 4 << 20];
        let out = host.run_with_input("exit 0", &input).await.unwrap();
        assert!(out.success());
        let out = host
            .run_with_input("echo nothing to do >&2; exit 3", &input)
            .await
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert!(out.stderr.contains("nothing to do"));
        let out = host.run_with_input("wc -c", &input).await.unwrap();
        assert_eq!(out.stdout.trim(), (4 << 20).to_string());
        // A command not found is exit 127, with the shell's words and nothing of ours.
        let out = host
            .run("echo before >&2; no-such-command-xyz")
            .await
            .unwrap();
        assert_eq!(out.code, Some(127));
        assert!(out.stderr.starts_with("before\n"), "{:?}", out.stderr);
        assert!(out.stderr.contains("not found") && !out.stderr.contains("sealer-exit"));
    }

    /// Every process's arguments on this machine.
    fn all_arguments() -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(args) = std::fs::read(entry.path().join("cmdline")) {
                all.push_str(&String::from_utf8_lossy(&args));
                all.push('\n');
            }
        }
        all
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_script_and_its_secrets_are_in_no_process_arguments() {
        let host = LocalHost::new("127.0.0.1".parse().unwrap());
        let secret = format!("pw-{}", std::process::id());
        let script = format!("export PASSWORD='{secret}'\nsleep 1\necho \"$PASSWORD\"; exit 4");
        let running = tokio::spawn(async move { host.run(&script).await.unwrap() });
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let seen = all_arguments();
        let out = running.await.unwrap();
        assert_eq!((out.code, out.stdout.trim()), (Some(4), secret.as_str()));
        assert!(seen.contains("sleep"), "the script was running");
        assert!(
            !seen.contains(&secret),
            "the secret is in a process's arguments"
        );
    }
}
