//! Where a step's files come from: paths in the build context (never outside it),
//! wildcards, local archives that `ADD` unpacks, and `APP` sources with their type.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::archive::Kind;

/// The context paths a `COPY`/`ADD` source names: one, or every match of a wildcard in
/// its last component. Sources may not leave the context, by `..` or by a symlink.
pub fn resolve(context: &Path, written: &str) -> Result<Vec<PathBuf>, String> {
    let rel = Path::new(written.trim_start_matches('/'));
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => clean.push(p),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{written}: sources must stay inside the build context"
                ));
            }
        }
    }
    let name = clean
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let paths = if name.contains(['*', '?']) {
        let parent = context.join(clean.parent().unwrap_or(Path::new("")));
        let mut found = Vec::new();
        let entries = std::fs::read_dir(&parent)
            .map_err(|e| format!("{written}: cannot list {}: {e}", parent.display()))?;
        for entry in entries.flatten() {
            if let Some(n) = entry.file_name().to_str()
                && wildcard(&name, n)
            {
                found.push(entry.path());
            }
        }
        found.sort();
        if found.is_empty() {
            return Err(format!("{written}: no file in the build context matches"));
        }
        found
    } else {
        vec![context.join(&clean)]
    };
    let root = context
        .canonicalize()
        .map_err(|e| format!("cannot open the build context {}: {e}", context.display()))?;
    for p in &paths {
        let real = p.canonicalize().map_err(|e| {
            format!(
                "{written}: {} is not in the build context ({e})",
                p.strip_prefix(context).unwrap_or(p).display()
            )
        })?;
        if !real.starts_with(&root) {
            return Err(format!("{written}: it leads outside the build context"));
        }
    }
    Ok(paths)
}

/// `*` (any run of characters) and `?` (one character), as in shell patterns.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The kind of a local archive `ADD` unpacks, judged by its first bytes; `None` when
/// the file is not an archive (it is then copied as is).
pub fn archive_kind(path: &Path) -> Option<Kind> {
    crate::archive::sniff_file(path)
}

/// Unpacks a local archive into `dir`.
pub fn unpack_archive(path: &Path, kind: Kind, dir: &Path, max_bytes: u64) -> std::io::Result<()> {
    use super::rootfs::unpack_tar;
    std::fs::create_dir_all(dir)?;
    let f = std::fs::File::open(path)?;
    let unpacked = match kind {
        Kind::Zstd => unpack_tar(zstd::Decoder::new(f)?, dir, max_bytes),
        Kind::Gzip => unpack_tar(flate2::read::GzDecoder::new(f), dir, max_bytes),
        Kind::Tar => unpack_tar(f, dir, max_bytes),
    };
    unpacked.map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// An application's type from its files: a chart folder or packaged chart is `helm`,
/// `.sh` is `shell`, `.yaml`/`.yml` is `kube`; mixed or unknown is empty.
pub fn app_type(files: &[PathBuf]) -> String {
    let kinds: Vec<&str> = files
        .iter()
        .map(|f| {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if f.join("Chart.yaml").is_file() || name.ends_with(".tgz") || name.ends_with(".tar.gz")
            {
                "helm"
            } else if name.ends_with(".sh") {
                "shell"
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                "kube"
            } else {
                ""
            }
        })
        .collect();
    match kinds.first() {
        Some(k) if kinds.iter().all(|x| x == k) => k.to_string(),
        _ => String::new(),
    }
}

/// The file an `APP` URL names: its last path segment.
pub fn url_file_name(url: &url::Url) -> Result<String, String> {
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{url}: the URL does not end in a file name"))?
        .to_string();
    if name == ".." || name == "." || name.contains('/') {
        return Err(format!("{url}: unusable file name {name:?}"));
    }
    Ok(name)
}

/// Bounds on an `APP` download: the server and the URL are the Kubefile author's.
#[derive(Debug, Clone, Copy)]
pub struct DownloadLimits {
    /// Largest file taken.
    pub max_bytes: u64,
    /// A download that receives nothing for this long fails.
    pub stall: Duration,
    pub connect: Duration,
    /// The whole download, however steadily it trickles.
    pub overall: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            max_bytes: 4 << 30,
            stall: Duration::from_secs(60),
            connect: Duration::from_secs(10),
            overall: Duration::from_secs(3600),
        }
    }
}

/// An `APP` URL and the SHA-256 its `#sha256=HEX` fragment pins, if any.
pub fn app_url(url: &str) -> Result<(url::Url, Option<String>), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let pinned = match parsed.fragment() {
        None => None,
        Some(f) => {
            let hex = f
                .strip_prefix("sha256=")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("{url}: the fragment must be #sha256=<64 hex digits>"))?;
            Some(hex.to_ascii_lowercase())
        }
    };
    parsed.set_fragment(None);
    Ok((parsed, pinned))
}

/// Redirects stay on the URL's own host and never go from https to http: a download
/// elsewhere is the Kubefile's to name.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = &attempt.previous()[0];
        let to = attempt.url();
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if first.scheme() == "https" && to.scheme() != "https" {
            let why = format!("redirected from https to {to}");
            attempt.error(why)
        } else if to.host_str() != first.host_str() {
            let why = format!("redirected to another host ({to}); name that URL in the Kubefile");
            attempt.error(why)
        } else {
            attempt.follow()
        }
    })
}

/// Downloads an `APP` source to `dir`, named by the URL's last segment: streamed to a
/// file within `limits`, checked against a pinned SHA-256, and only then given its
/// name.
pub async fn download(url: &str, dir: &Path, limits: &DownloadLimits) -> Result<PathBuf, String> {
    let (parsed, pinned) = app_url(url)?;
    let name = url_file_name(&parsed)?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(sealer_client::tls_client_config().map_err(|e| e.to_string())?)
        .connect_timeout(limits.connect)
        .read_timeout(limits.stall)
        .timeout(limits.overall)
        .redirect(redirect_policy())
        .build()
        .map_err(|e| e.to_string())?;
    let failed = |e: reqwest::Error| {
        let why = if e.is_timeout() {
            format!(
                "no data for {:?} or longer than {:?} in all",
                limits.stall, limits.overall
            )
        } else {
            sealer_client::error_chain(&e)
        };
        format!("{url}: {why}")
    };
    let mut resp = http.get(parsed).send().await.map_err(failed)?;
    if !resp.status().is_success() {
        return Err(format!("{url}: the server answered {}", resp.status()));
    }
    let too_big = || format!("{url}: larger than the limit of {} bytes", limits.max_bytes);
    if resp.content_length().is_some_and(|n| n > limits.max_bytes) {
        return Err(too_big());
    }
    let part = dir.join(format!(".{name}.part"));
    let result = async {
        let mut file =
            std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            total += chunk.len() as u64;
            if total > limits.max_bytes {
                return Err(too_big());
            }
            hash.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", part.display()))?;
        }
        let got = hex::encode(hash.finish());
        match pinned {
            Some(want) if want != got => Err(format!(
                "{url}: the file's sha256 is {got}, not the pinned {want}"
            )),
            _ => Ok(()),
        }
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    let path = dir.join(&name);
    std::fs::rename(&part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_the_context_and_wildcards_expand() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(ctx.join("amd64")).unwrap();
        std::fs::write(ctx.join("amd64/a.bin"), "a").unwrap();
        std::fs::write(ctx.join("amd64/b.bin"), "b").unwrap();
        std::fs::write(ctx.join("amd64/c.txt"), "c").unwrap();
        std::fs::write(tmp.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), ctx.join("link")).unwrap();

        let found = resolve(&ctx, "amd64/*.bin").unwrap();
        assert_eq!(found, [ctx.join("amd64/a.bin"), ctx.join("amd64/b.bin")]);
        assert_eq!(
            resolve(&ctx, "/amd64/c.txt").unwrap(),
            [ctx.join("amd64/c.txt")]
        );
        assert!(
            resolve(&ctx, "../secret")
                .unwrap_err()
                .contains("inside the build context")
        );
        assert!(
            resolve(&ctx, "link")
                .unwrap_err()
                .contains("outside the build context")
        );
        assert!(
            resolve(&ctx, "missing")
                .unwrap_err()
                .contains("not in the build context")
        );
        assert!(
            resolve(&ctx, "amd64/*.rpm")
                .unwrap_err()
                .contains("no file")
        );
    }

    #[test]
    fn app_types_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("web")).unwrap();
        std::fs::write(tmp.path().join("web/Chart.yaml"), "name: web").unwrap();
        let p = |n: &str| tmp.path().join(n);
        assert_eq!(app_type(&[p("web")]), "helm");
        assert_eq!(app_type(&[p("mysql.tgz")]), "helm");
        assert_eq!(app_type(&[p("install.sh")]), "shell");
        assert_eq!(app_type(&[p("a.yaml"), p("b.yml")]), "kube");
        assert_eq!(app_type(&[p("a.yaml"), p("x.sh")]), "");
    }
}
