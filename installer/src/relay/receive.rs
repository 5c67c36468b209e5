//! `sealer relay-fetch`, the receiving end of a hop on a host that has `sealer`: each
//! named blob is fetched from a relay server into its relay file (where this host's own
//! server finds it to pass on), hashed as it arrives, and renamed into place only when
//! its digest and size match. One process, where `curl | tee | openssl` took three and
//! two pipes (the bootstrap of `sealer` itself still uses curl: see [`super::fetch`]).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sealer_registry::oci::Digest;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use super::{FETCH_STALL, relay_file};
use crate::distribute::host_blob;

/// What the installer writes on the first line of stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct FetchConfig {
    pub token: String,
    /// The blobs to fetch, in order, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
}

/// Fetches every blob the config on stdin names from the relay server at `from`.
pub async fn fetch(from: SocketAddr, root: PathBuf) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .take(16 << 20)
        .read_line(&mut line)
        .await?;
    let config: FetchConfig = serde_json::from_str(&line)
        .map_err(|e| anyhow::anyhow!("the relay's configuration on stdin: {e}"))?;
    // Plain HTTP; reqwest still wants a TLS set-up (ring, as everywhere in sealer).
    let tls = sealer_registry::tls::client::client_config(None, false)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()?;
    for (digest, size) in &config.blobs {
        let tmp = relay_file(&root, digest);
        let r = fetch_one(&client, from, &root, digest, *size, &config.token, &tmp).await;
        if r.is_err() {
            // Unfinished: gone, so this host's own server stops passing it on.
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
    }
    Ok(())
}

async fn fetch_one(
    client: &reqwest::Client,
    from: SocketAddr,
    root: &Path,
    digest: &Digest,
    size: u64,
    token: &str,
    tmp: &Path,
) -> anyhow::Result<()> {
    let target = host_blob(root, digest);
    let dir = target.parent().expect("blob paths have a folder");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(tmp);
    let mut file =
        std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let url = format!("http://{from}/blobs/{digest}");
    let mut response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("fetching {digest} from {}", from.ip()))?;
    if !response.status().is_success() {
        let status = response.status();
        let said = response.text().await.unwrap_or_default();
        bail!(
            "{} answered {status} for {digest}: {}",
            from.ip(),
            said.trim()
        );
    }
    let mut hasher = digest.algorithm().hasher();
    let mut got = 0u64;
    loop {
        let chunk = tokio::time::timeout(FETCH_STALL, response.chunk())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{digest}: nothing from {} for {}s",
                    from.ip(),
                    FETCH_STALL.as_secs()
                )
            })?
            .with_context(|| format!("{digest} from {}", from.ip()))?;
        let Some(chunk) = chunk else { break };
        got += chunk.len() as u64;
        if got > size {
            bail!(
                "{digest} from {} is longer than its {size} bytes",
                from.ip()
            );
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    if got != size || hasher.finish() != *digest {
        bail!(
            "{digest} did not arrive whole from {} (its digest does not match)",
            from.ip()
        );
    }
    drop(file);
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(tmp, &target).with_context(|| format!("moving {digest} into place"))?;
    Ok(())
}
