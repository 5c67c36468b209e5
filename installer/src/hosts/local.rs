//! This machine as a host (`sealer run` on the machine it is started on).

use std::net::IpAddr;
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncRead;

use super::{Host, HostError, Output};

pub struct LocalHost {
    ip: IpAddr,
}

impl LocalHost {
    /// This machine, known to the cluster as `ip`.
    pub fn new(ip: IpAddr) -> LocalHost {
        LocalHost { ip }
    }
}

#[async_trait]
impl Host for LocalHost {
    fn ip(&self) -> IpAddr {
        self.ip
    }

    async fn run_streaming(
        &self,
        script: &str,
        input: Option<&mut (dyn AsyncRead + Send + Unpin)>,
    ) -> Result<Output, HostError> {
        let io = |context: &str| HostError::io(self.ip, context);
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting sh"))?;
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            // As over SSH: a command that stops reading is judged by its exit status.
            match tokio::io::copy(data, &mut stdin).await {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(io("writing stdin")(e));
                }
                _ => {}
            }
        }
        let out = child.wait_with_output().await.map_err(io("running sh"))?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
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
    }
}
