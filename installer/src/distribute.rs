//! Sending files to hosts, content-addressed: each file lands in the host's blob folder
//! (`<data root>/blobs/<alg>/<hex>`) under its digest, checked on the host before it is
//! renamed into place. A host that already holds a digest is not sent it again, so a
//! re-run after a failure sends only what is missing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealer_registry::oci::Digest;

use crate::hosts::{Host, HostError, on_all, sh_quote};

/// A file to send, known by its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub path: PathBuf,
    pub size: u64,
}

/// What one host was sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sent {
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs the host already had.
    pub present: usize,
}

/// Where a host keeps blobs under `root`.
pub fn host_blob(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs")
        .join(digest.algorithm().to_string())
        .join(digest.hex())
}

/// Which of `blobs` `host` lacks, in one command.
pub async fn missing<'b>(
    host: &dyn Host,
    root: &Path,
    blobs: &'b [Blob],
) -> Result<Vec<&'b Blob>, HostError> {
    if blobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut script = String::from("for f in");
    for b in blobs {
        script.push(' ');
        script.push_str(&quote(&host_blob(root, &b.digest)));
    }
    script.push_str("; do [ -f \"$f\" ] || echo \"$f\"; done");
    let out = host.check(&script).await?;
    let absent: std::collections::HashSet<&str> = out.lines().collect();
    Ok(blobs
        .iter()
        .filter(|b| absent.contains(host_blob(root, &b.digest).to_string_lossy().as_ref()))
        .collect())
}

/// Sends one blob: streamed to a temporary name next to its place while the host hashes
/// the same stream (so checking costs no second read and overlaps the transfer), then
/// renamed once the digest matches. The hash is `openssl dgst` where the host has it
/// (its assembly runs about 1.8 times as fast as coreutils' `sha256sum` here: 349
/// against 189 MB/s), else `sha256sum`/`sha512sum`.
pub async fn send(host: &dyn Host, root: &Path, blob: &Blob) -> Result<(), HostError> {
    let target = host_blob(root, &blob.digest);
    let dir = target.parent().expect("blob paths have a folder");
    let alg = blob.digest.algorithm();
    let script = format!(
        "set -e\nmkdir -p {dir}\ntmp=$(mktemp {dir}/.incoming.XXXXXX)\ntrap 'rm -f \"$tmp\"' EXIT\n\
         if command -v openssl > /dev/null; then hash='openssl dgst -{alg} -r'; else hash={alg}sum; fi\n\
         sum=$(tee \"$tmp\" | $hash | cut -d' ' -f1)\n\
         if [ \"$sum\" != {hex} ]; then echo \"{digest} arrived damaged\" >&2; exit 1; fi\n\
         if [ \"$(wc -c < \"$tmp\")\" -ne {size} ]; then echo \"{digest} was not written whole\" >&2; exit 1; fi\n\
         chmod 0644 \"$tmp\"\nmv \"$tmp\" {target}\ntrap - EXIT",
        dir = quote(dir),
        hex = blob.digest.hex(),
        digest = blob.digest,
        size = blob.size,
        target = quote(&target),
    );
    let mut file = tokio::fs::File::open(&blob.path)
        .await
        .map_err(HostError::io(
            host.ip(),
            &format!("reading {}", blob.path.display()),
        ))?;
    let out = host.run_streaming(&script, Some(&mut file)).await?;
    if out.success() {
        return Ok(());
    }
    Err(HostError::Failed {
        host: host.ip().to_string(),
        command: format!("receiving {}", blob.digest),
        code: out.code.map(|c| c.to_string()).unwrap_or_default(),
        stderr: out.stderr.trim().to_string(),
    })
}

/// Sends every host the blobs it lacks, `bound` hosts at a time; returns what each was
/// sent, or the error that stopped it (the other hosts carry on).
pub async fn to_hosts<'a>(
    hosts: &'a [Arc<dyn Host>],
    root: &'a Path,
    blobs: &'a [Blob],
    bound: usize,
) -> Vec<(IpAddr, Result<Sent, HostError>)> {
    on_all(hosts, bound, |host| async move {
        let lacking = missing(host, root, blobs).await?;
        let mut sent = Sent {
            present: blobs.len() - lacking.len(),
            ..Sent::default()
        };
        for blob in lacking {
            send(host, root, blob).await?;
            sent.blobs += 1;
            sent.bytes += blob.size;
        }
        Ok(sent)
    })
    .await
}

/// `path` quoted for `sh`.
pub fn quote(path: &Path) -> String {
    sh_quote(&path.to_string_lossy())
}
