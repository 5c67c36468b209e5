//! Step 3: the image's file layers sent to every host and laid out in
//! `<dataRoot>/<cluster>/rootfs`, with the Clusterfile's `Config` documents applied.
//! The folder is built beside the old one and swapped in, and stamped with what it was
//! made from, so an unchanged image is not laid out again. `<dataRoot>/<cluster>` is
//! made and marked as sealer's here; a folder already there without the mark is refused.

use std::path::Path;
use std::sync::Arc;

use sealer_builder::progress::Progress;

use super::Report;
use super::{HOST_DIR, all_ok, claim_data_dir};
use crate::clusterfile::Cluster;
use crate::distribute::{self, Blob, quote};
use crate::environment::Environment;
use crate::hosts::{Host, on_all, sh_quote};
use crate::image::Image;

pub async fn lay_out(
    env: &Environment,
    cluster: &Cluster,
    hosts: &[Arc<dyn Host>],
    image: &Image,
    report: &mut Report,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let root = Path::new(HOST_DIR);
    let blobs: Vec<Blob> = image.layers.iter().map(|(b, _)| b.clone()).collect();
    let outcome = env.delivery(hosts, root, &blobs).run(progress).await;
    report.delivered("sending the image's files", outcome)?;

    let rootfs = cluster.rootfs();
    let configs = serde_json::to_vec(&cluster.configs)?;
    let mut stamp: String = image
        .layers
        .iter()
        .map(|(b, _)| format!("{}\n", b.digest))
        .collect();
    if !cluster.configs.is_empty() {
        stamp.push_str(&format!(
            "configs {}\n",
            sealer_registry::oci::Digest::sha256_of(&configs)
        ));
    }
    let mut script = format!(
        "set -e\n{claim}if [ \"$(cat {dir}/.sealer-layers 2>/dev/null)\" = \"$(printf '%s' {stamp})\" ]; then exit 0; fi\n\
         rm -rf {dir}.new\n{HOST_DIR}/bin/sealer unpack-layers {dir}.new --configs /dev/stdin",
        claim = claim_data_dir(cluster, true),
        dir = quote(&rootfs),
        stamp = sh_quote(&stamp),
    );
    for (blob, media_type) in &image.layers {
        script.push_str(&format!(
            " {}={}",
            quote(&distribute::host_blob(root, &blob.digest)),
            sh_quote(media_type)
        ));
    }
    script.push_str(&format!(
        "\nprintf '%s' {stamp} > {dir}.new/.sealer-layers\nrm -rf {dir}.old\n\
         [ ! -e {dir} ] || mv {dir} {dir}.old\nmv {dir}.new {dir}\nrm -rf {dir}.old",
        dir = quote(&rootfs),
        stamp = sh_quote(&stamp),
    ));
    let results = on_all(hosts, env.jobs, |h| {
        let (script, configs) = (&script, &configs);
        async move {
            let out = h.run_with_input(script, configs).await?;
            if !out.success() {
                anyhow::bail!(
                    "host {}: laying out the files failed: {}",
                    h.ip(),
                    out.stderr.trim()
                );
            }
            Ok(())
        }
    })
    .await;
    all_ok("laying out the image's files", results).map(|_| ())
}
