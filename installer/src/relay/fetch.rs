//! The receiving end of a hop: from this machine over SSH, or from a host's relay
//! server with `sealer relay-fetch` (or `curl`, for `sealer` itself, which the host does
//! not have yet). Either way the blob is written to its relay file (where the host's own
//! server finds it to pass on), hashed as it arrives, and renamed into place only when
//! its digest and size match.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sealer_builder::progress::Task;

use super::FETCH_STALL;
use crate::distribute::{Blob, host_blob, quote, send_counted};
use crate::hosts::{Host, HostError};

/// Sends `blobs` from this machine, counting the bytes as they leave.
pub async fn from_control(
    host: &dyn Host,
    root: &Path,
    blobs: &[Blob],
    task: &Arc<dyn Task>,
    counter: &AtomicU64,
) -> Result<(), HostError> {
    for blob in blobs {
        send_counted(host, root, blob, &|n| {
            task.advance(n);
            counter.fetch_add(n, Ordering::Relaxed);
        })
        .await?;
    }
    Ok(())
}

/// What a host fetches with.
#[derive(Debug, Clone, Copy)]
pub enum Fetcher<'a> {
    /// `sealer relay-fetch`, after the shell lines `prelude`.
    Sealer { prelude: &'a str, sealer: &'a str },
    /// `curl`, `tee` and `openssl` (or `sha256sum`).
    Curl,
}

/// Has `host` fetch `blobs`, in order, from the relay server at `from`. The token goes
/// on stdin, never in arguments.
pub async fn from_peer(
    host: &dyn Host,
    root: &Path,
    blobs: &[Blob],
    from: SocketAddr,
    token: &str,
    fetcher: Fetcher<'_>,
) -> Result<(), HostError> {
    let (script, input) = match fetcher {
        Fetcher::Curl => (curl_script(root, blobs, from), format!("{token}\n")),
        Fetcher::Sealer { prelude, sealer } => {
            let config = super::receive::FetchConfig {
                token: token.to_string(),
                blobs: blobs.iter().map(|b| (b.digest.clone(), b.size)).collect(),
            };
            (
                format!(
                    "{prelude}\nexec {sealer} relay-fetch --from {from} --root {}",
                    quote(root)
                ),
                format!("{}\n", serde_json::to_string(&config).expect("plain data")),
            )
        }
    };
    let out = host.run_with_input(&script, input.as_bytes()).await?;
    if out.success() {
        return Ok(());
    }
    Err(HostError::Failed {
        host: host.ip().to_string(),
        command: format!("fetching from {}", from.ip()),
        code: out.code.map(|c| c.to_string()).unwrap_or_default(),
        stderr: out.stderr.trim().to_string(),
    })
}

/// The fetch script with curl. The token comes on stdin and goes to a private file for
/// curl's `-H @file`, so it is in no process's arguments.
fn curl_script(root: &Path, blobs: &[Blob], from: SocketAddr) -> String {
    let mut s = format!(
        "set -e\numask 077\nmkdir -p /run/sealer\ntok=$(mktemp /run/sealer/.relay-token.XXXXXX)\n\
         tmp=\ntrap 'rm -f \"$tok\" $tmp' EXIT\nIFS= read -r t\n\
         printf 'Authorization: Bearer %s\\n' \"$t\" > \"$tok\"\n\
         fetch() {{\n\
           mkdir -p \"$5\"; tmp=\"$5/.relay.$3\"; rm -f \"$tmp\"\n\
           if command -v openssl > /dev/null; then h=\"openssl dgst -$2 -r\"; else h=\"$2sum\"; fi\n\
           sum=$(curl -fsS --connect-timeout 10 --speed-limit 1 --speed-time {stall} -H @\"$tok\" \
                 \"http://{from}/blobs/$1\" | tee \"$tmp\" | $h | cut -d' ' -f1)\n\
           if [ \"$sum\" != \"$3\" ]; then echo \"$1 did not arrive whole from {ip} (its digest does not match)\" >&2; exit 1; fi\n\
           if [ \"$(wc -c < \"$tmp\")\" -ne \"$4\" ]; then echo \"$1 was not written whole\" >&2; exit 1; fi\n\
           chmod 0644 \"$tmp\"; mv \"$tmp\" \"$5/$3\"; tmp=\n\
         }}\n",
        stall = FETCH_STALL.as_secs(),
        ip = from.ip(),
    );
    for b in blobs {
        let target = host_blob(root, &b.digest);
        s.push_str(&format!(
            "fetch {} {} {} {} {}\n",
            b.digest,
            b.digest.algorithm(),
            b.digest.hex(),
            b.size,
            quote(target.parent().expect("blob paths have a folder")),
        ));
    }
    s
}
