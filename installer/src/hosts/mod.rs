//! Running work on the cluster's hosts: over SSH ([`ssh::SshHost`], the system OpenSSH
//! through the `openssh` crate, one multiplexed connection per host) or on this machine
//! ([`local::LocalHost`]). [`on_all`] runs a step on many hosts in parallel, with a bound.

pub mod local;
pub mod ssh;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncRead;

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("host {host}: unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("host {host}: login refused for {user}: {detail}")]
    Auth {
        host: String,
        user: String,
        detail: String,
    },
    #[error("host {host}: {detail}")]
    Setup { host: String, detail: String },
    #[error("host {host}: `{command}` failed (exit {code}): {stderr}")]
    Failed {
        host: String,
        command: String,
        code: String,
        stderr: String,
    },
    #[error("host {host}: {context}: {source}")]
    Io {
        host: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl HostError {
    /// Maps an I/O error on `host` while doing `context`.
    pub fn io(host: IpAddr, context: &str) -> impl FnOnce(std::io::Error) -> HostError + use<> {
        let context = context.to_string();
        move |source| HostError::Io {
            host: host.to_string(),
            context,
            source,
        }
    }
}

/// What each host runs: it reads the script from stdin (its length on a line, then the
/// script) and runs it with `eval`. Scripts hold passwords (a Clusterfile's env, hooks):
/// this way they are in no process's arguments, on the hosts or on this machine (`ps`
/// shows this line only). The script's own input follows it on stdin. (`dd bs=1` reads
/// exactly the script, never a byte of the input after it.) The script's exit status
/// comes back as the last line of stderr ([`exit_status`]): ssh gives 127 and 255 a
/// meaning of its own ("remote command not found", "connection lost"), and a script's
/// own 127 must read as a command it did not find.
pub const BOOTSTRAP: &str = "IFS= read -r n && s=$(dd bs=1 count=\"$n\" 2>/dev/null) && \
     { ( eval \"$s\" ); printf '\\nsealer-exit:%d\\n' $? >&2; }";

/// The script's exit status and its stderr, from what [`BOOTSTRAP`] left: `code` is the
/// shell's own when the status line is missing (the bootstrap itself failed).
pub fn exit_status(code: Option<i32>, stderr: &str) -> (Option<i32>, String) {
    let trimmed = stderr.strip_suffix('\n').unwrap_or(stderr);
    if let Some((before, last)) = trimmed.rsplit_once("\nsealer-exit:")
        && let Ok(script_code) = last.parse::<i32>()
    {
        return (Some(script_code), before.to_string());
    }
    (code, stderr.to_string())
}

/// Writes `script` for [`BOOTSTRAP`], then `input`, to a host command's stdin, and
/// closes it. A command may finish without reading all its input (a step with nothing
/// to do): its exit status and stderr tell what happened, not the pipe.
pub async fn feed(
    stdin: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
    script: &str,
    input: Option<&mut (dyn AsyncRead + Send + Unpin)>,
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let sent = async {
        stdin
            .write_all(format!("{}\n{script}", script.len()).as_bytes())
            .await?;
        if let Some(data) = input {
            tokio::io::copy(data, stdin).await?;
        }
        stdin.shutdown().await
    }
    .await;
    match sent {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
        _ => Ok(()),
    }
}

/// A command left running on a host: its stdin to write to, its stdout to read as it
/// comes, and its end. Closing stdin (dropping it) is how the command is told to stop.
pub struct Channel {
    pub stdin: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    pub done: futures::future::BoxFuture<'static, Result<Output, HostError>>,
}

/// What [`Host::open`] writes first: the script, for [`BOOTSTRAP`] to read.
pub fn script_header(script: &str) -> String {
    format!("{}\n{script}", script.len())
}

/// The end of a command whose stdout was taken: its exit status, and stderr read while
/// it runs.
pub async fn finish<S, W>(host: IpAddr, stderr: Option<S>, wait: W) -> Result<Output, HostError>
where
    S: AsyncRead + Unpin,
    W: Future<Output = std::io::Result<Option<i32>>>,
{
    use tokio::io::AsyncReadExt;
    let mut err = Vec::new();
    if let Some(mut s) = stderr {
        s.read_to_end(&mut err)
            .await
            .map_err(HostError::io(host, "reading stderr"))?;
    }
    let code = wait
        .await
        .map_err(HostError::io(host, "waiting for a command"))?;
    let (code, stderr) = exit_status(code, &String::from_utf8_lossy(&err));
    Ok(Output {
        code,
        stdout: String::new(),
        stderr,
    })
}

/// A host work runs on.
#[async_trait]
pub trait Host: Send + Sync {
    /// The host as the Clusterfile names it.
    fn ip(&self) -> IpAddr;

    /// Runs `script` with `sh -c`, streaming `input` (if any) to its stdin.
    async fn run_streaming(
        &self,
        script: &str,
        input: Option<&mut (dyn AsyncRead + Send + Unpin)>,
    ) -> Result<Output, HostError>;

    /// Starts `script` and leaves it running, with its stdin open (see [`Channel`]).
    async fn open(&self, script: &str) -> Result<Channel, HostError>;

    /// Runs `script` with `sh -c`.
    async fn run(&self, script: &str) -> Result<Output, HostError> {
        self.run_streaming(script, None).await
    }

    /// Runs `script` with `sh -c`, with `input` on stdin.
    async fn run_with_input(&self, script: &str, input: &[u8]) -> Result<Output, HostError> {
        let mut reader = input;
        self.run_streaming(script, Some(&mut reader)).await
    }

    /// Runs `script`; a non-zero exit is an error naming the host, the command and what
    /// it printed on stderr.
    async fn check(&self, script: &str) -> Result<String, HostError> {
        let out = self.run(script).await?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(HostError::Failed {
            host: self.ip().to_string(),
            command: first_line(script),
            code: out
                .code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "by a signal".into()),
            stderr: tail(&out.stderr),
        })
    }
}

pub use sealer_builder::shell::quote as sh_quote;

fn first_line(script: &str) -> String {
    let line = script.trim().lines().next().unwrap_or("");
    if line.len() > 80 || script.trim().lines().count() > 1 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line.to_string()
    }
}

/// The last lines of `text` (what explains a failure).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Runs `step` on every host, at most `bound` at a time; returns each host's result in
/// the order given.
pub async fn on_all<'a, T, F, Fut>(
    hosts: &'a [Arc<dyn Host>],
    bound: usize,
    step: F,
) -> Vec<(IpAddr, T)>
where
    F: Fn(&'a dyn Host) -> Fut,
    Fut: Future<Output = T> + 'a,
{
    let mut results: Vec<(usize, IpAddr, T)> = futures::stream::iter(hosts.iter().enumerate())
        .map(|(i, h)| {
            let host = h.as_ref();
            let fut = step(host);
            async move { (i, host.ip(), fut.await) }
        })
        .buffer_unordered(bound.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _, _)| *i);
    results.into_iter().map(|(_, ip, r)| (ip, r)).collect()
}
