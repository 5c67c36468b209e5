//! Where a step's files come from: paths in the build context (never outside it),
//! wildcards, local archives that `ADD` unpacks, and `APP` sources with their type.

use std::path::{Component, Path, PathBuf};

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
pub fn unpack_archive(path: &Path, kind: Kind, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let f = std::fs::File::open(path)?;
    match kind {
        Kind::Zstd => super::rootfs::unpack_tar(zstd::Decoder::new(f)?, dir),
        Kind::Gzip => super::rootfs::unpack_tar(flate2::read::GzDecoder::new(f), dir),
        Kind::Tar => super::rootfs::unpack_tar(f, dir),
    }
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

/// Downloads an `APP` source to `dir`, named by the URL's last segment.
pub async fn download(url: &str, dir: &Path) -> Result<PathBuf, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let name = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{url}: the URL does not end in a file name"))?
        .to_string();
    if name == ".." || name == "." || name.contains('/') {
        return Err(format!("{url}: unusable file name {name:?}"));
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(
            sealer_pull_proxy::upstream::tls_client_config().map_err(|e| e.to_string())?,
        )
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .get(parsed)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", sealer_pull_proxy::upstream::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: the server answered {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    let path = dir.join(&name);
    std::fs::write(&path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
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
