//! Files on hosts, content-addressed: each file lands in the host's blob folder
//! (`<data root>/blobs/<alg>/<hex>`) under its digest, checked on the host before it is
//! renamed into place. A host that already holds a digest is not sent it again, so a
//! re-run after a failure sends only what is missing. This module asks hosts what they
//! have and sends over SSH; [`crate::relay`] decides who feeds whom.

use std::path::{Path, PathBuf};

use sealer_registry::oci::Digest;

use crate::hosts::{Host, HostError, sh_quote};

/// A file to send, known by its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub path: PathBuf,
    pub size: u64,
}

impl Blob {
    /// The file at `path` as a blob: hashed (SHA-256) once, here.
    pub fn of_file(path: PathBuf) -> std::io::Result<Blob> {
        let file = std::fs::File::open(&path)?;
        let mut hasher = sealer_registry::oci::Algorithm::Sha256.hasher();
        let size = hasher.update_from(file)?;
        Ok(Blob {
            digest: hasher.finish(),
            path,
            size,
        })
    }
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

/// What a host has of a delivery.
pub struct Survey<'b> {
    /// The blobs it lacks.
    pub lacking: Vec<&'b Blob>,
    /// Whether it has `curl`, to fetch from other hosts.
    pub curl: bool,
}

/// Which of `blobs` `host` lacks, and whether it can fetch from other hosts, in one
/// command; relay files a stopped delivery left are removed.
pub async fn survey<'b>(
    host: &dyn Host,
    root: &Path,
    blobs: &'b [Blob],
) -> Result<Survey<'b>, HostError> {
    let mut script = String::from(
        "command -v curl > /dev/null && echo curl
for f in",
    );
    for b in blobs {
        script.push(' ');
        script.push_str(&quote(&host_blob(root, &b.digest)));
    }
    script.push_str("; do [ -f \"$f\" ] || echo \"$f\"; done\n");
    let dirs: std::collections::BTreeSet<_> = blobs
        .iter()
        .filter_map(|b| host_blob(root, &b.digest).parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        script.push_str(&format!("rm -f {}/.relay.*\n", quote(&dir)));
    }
    let out = host.check(&script).await?;
    let absent: std::collections::HashSet<&str> = out.lines().collect();
    Ok(Survey {
        lacking: blobs
            .iter()
            .filter(|b| absent.contains(host_blob(root, &b.digest).to_string_lossy().as_ref()))
            .collect(),
        curl: absent.contains("curl"),
    })
}

/// Sends one blob over the host's SSH connection (see [`send_counted`]).
pub async fn send(host: &dyn Host, root: &Path, blob: &Blob) -> Result<(), HostError> {
    send_counted(host, root, blob, &|_| {}).await
}

/// Sends one blob: streamed to its relay file while the host hashes the same stream (so
/// checking costs no second read and overlaps the transfer), then renamed into place once
/// the digest matches; `sent` hears of each piece as it leaves. The hash is `openssl
/// dgst` where the host has it (its assembly runs about 1.8 times as fast as coreutils'
/// `sha256sum` here: 349 against 189 MB/s), else `sha256sum`/`sha512sum`.
pub async fn send_counted(
    host: &dyn Host,
    root: &Path,
    blob: &Blob,
    sent: &(dyn Fn(u64) + Sync),
) -> Result<(), HostError> {
    let target = host_blob(root, &blob.digest);
    let dir = target.parent().expect("blob paths have a folder");
    let alg = blob.digest.algorithm();
    let script = format!(
        "set -e\nmkdir -p {dir}\ntmp={tmp}\nrm -f \"$tmp\"\ntrap 'rm -f \"$tmp\"' EXIT\n\
         if command -v openssl > /dev/null; then hash='openssl dgst -{alg} -r'; else hash={alg}sum; fi\n\
         sum=$(tee \"$tmp\" | $hash | cut -d' ' -f1)\n\
         if [ \"$sum\" != {hex} ]; then echo \"{digest} arrived damaged\" >&2; exit 1; fi\n\
         if [ \"$(wc -c < \"$tmp\")\" -ne {size} ]; then echo \"{digest} was not written whole\" >&2; exit 1; fi\n\
         chmod 0644 \"$tmp\"\nmv \"$tmp\" {target}\ntrap - EXIT",
        dir = quote(dir),
        tmp = quote(&crate::relay::relay_file(root, &blob.digest)),
        hex = blob.digest.hex(),
        digest = blob.digest,
        size = blob.size,
        target = quote(&target),
    );
    let file = tokio::fs::File::open(&blob.path)
        .await
        .map_err(HostError::io(
            host.ip(),
            &format!("reading {}", blob.path.display()),
        ))?;
    let mut counted = Counted { inner: file, sent };
    let out = host.run_streaming(&script, Some(&mut counted)).await?;
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

/// A reader that reports how many bytes each read gave.
struct Counted<'a, R> {
    inner: R,
    sent: &'a (dyn Fn(u64) + Sync),
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            (self.sent)(n as u64);
        }
        r
    }
}

/// `path` quoted for `sh`.
pub fn quote(path: &Path) -> String {
    sh_quote(&path.to_string_lossy())
}
