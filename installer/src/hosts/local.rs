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
            tokio::io::copy(data, &mut stdin)
                .await
                .map_err(io("writing stdin"))?;
        }
        let out = child.wait_with_output().await.map_err(io("running sh"))?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
