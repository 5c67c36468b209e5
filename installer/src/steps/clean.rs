//! Taking a host back to how it was (only a host that belongs to the cluster): the
//! registry stopped, the runtime configuration
//! files `sealer run` wrote restored from their `.sealer-backup` copies (or removed when
//! there was none), sealer's lines out of `/etc/hosts`, sealer's folders removed (the
//! cluster's data folder only when it carries sealer's mark for this cluster). The
//! clean-host hooks run around it. Running it again after a failure finishes the job.

use std::sync::Arc;

use super::{HOST_DIR, HOSTS_MARK, MIRROR_FILES, check_on_all, claim_data_dir, claim_host, hooks};
use crate::clusterfile::{Cluster, Phase};
use crate::distribute::quote;
use crate::environment::Environment;
use crate::hosts::Host;

/// The script that cleans one host.
fn script(cluster: &Cluster) -> String {
    format!(
        "set -e\n{host}{claim}\
         pid=/run/sealer/registry.pid\n\
         if [ -f $pid ]; then p=$(cat $pid); kill \"$p\" 2>/dev/null || true;\n\
           for i in $(seq 50); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.1; done\n\
           kill -9 \"$p\" 2>/dev/null || true; rm -f $pid /run/sealer/registry.cmd; fi\n\
         if [ -d /run/systemd/system ] && [ -f /etc/systemd/system/sealer-registry.service ]; then\n\
           systemctl disable --now sealer-registry.service || true\n\
           rm -f /etc/systemd/system/sealer-registry.service; systemctl daemon-reload; fi\n\
         if [ -f {MIRROR_FILES} ]; then\n\
           while read -r f; do\n\
             [ -n \"$f\" ] || continue\n\
             if [ -f \"$f.sealer-backup\" ]; then mv \"$f.sealer-backup\" \"$f\"; else rm -f \"$f\"; d=$(dirname \"$f\"); rmdir \"$d\" \"$(dirname \"$d\")\" 2>/dev/null || true; fi\n\
           done < {MIRROR_FILES}\n\
         fi\n\
         if grep -q '{HOSTS_MARK}\\(-registry\\)\\?$' /etc/hosts; then\n\
           t=$(mktemp); grep -v '{HOSTS_MARK}\\(-registry\\)\\?$' /etc/hosts > \"$t\" || true\n\
           cat \"$t\" > /etc/hosts; rm -f \"$t\"; fi\n\
         rm -rf \"$data\" {HOST_DIR} /var/log/sealer/registry.log\n\
         for d in {data_root} /var/lib/sealer /var/log/sealer /run/sealer; do rmdir \"$d\" 2>/dev/null || true; done\n",
        host = claim_host(cluster, false),
        claim = claim_data_dir(cluster, false),
        data_root = quote(&cluster.data_root),
    )
}

/// Cleans `hosts` of `cluster`, with the pre- and post-clean-host hooks.
pub async fn clean(
    env: &Environment,
    cluster: &Cluster,
    hosts: &[Arc<dyn Host>],
) -> anyhow::Result<()> {
    hooks::run_phase(cluster, hosts, Phase::PreCleanHost, None, env.jobs).await?;
    let script = script(cluster);
    check_on_all("cleaning the hosts", hosts, env.jobs, |_| script.clone()).await?;
    hooks::run_phase(cluster, hosts, Phase::PostCleanHost, None, env.jobs).await
}
