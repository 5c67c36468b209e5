//! `sealer delete --all`: takes off every host what `sealer run` put there. The
//! registry is stopped, the runtime configuration files it wrote are restored from
//! their `.sealer-backup` copies (or removed when there was none), the registry's line
//! leaves `/etc/hosts`, and sealer's folders are removed; the cluster's local state
//! goes last. Running it again after a failure finishes the job.

use crate::clusterfile::Cluster;
use crate::run::{Environment, HOST_DIR, MIRROR_FILES, check_on_all, connect_all};
use sealer_builder::progress::Progress;

/// The script that cleans one host.
fn clean_host(cluster: &Cluster) -> String {
    let data = cluster.data_root.join(&cluster.name);
    format!(
        "set -e\n\
         pid=/run/sealer/registry.pid\n\
         if [ -f $pid ]; then p=$(cat $pid); kill \"$p\" 2>/dev/null || true;\n\
           for i in $(seq 50); do kill -0 \"$p\" 2>/dev/null || break; sleep 0.1; done\n\
           kill -9 \"$p\" 2>/dev/null || true; rm -f $pid; fi\n\
         if [ -d /run/systemd/system ] && [ -f /etc/systemd/system/sealer-registry.service ]; then\n\
           systemctl disable --now sealer-registry.service || true\n\
           rm -f /etc/systemd/system/sealer-registry.service; systemctl daemon-reload; fi\n\
         if [ -f {MIRROR_FILES} ]; then\n\
           while read -r f; do\n\
             [ -n \"$f\" ] || continue\n\
             if [ -f \"$f.sealer-backup\" ]; then mv \"$f.sealer-backup\" \"$f\"; else rm -f \"$f\"; d=$(dirname \"$f\"); rmdir \"$d\" \"$(dirname \"$d\")\" 2>/dev/null || true; fi\n\
           done < {MIRROR_FILES}\n\
         fi\n\
         if grep -q ' # sealer-registry$' /etc/hosts; then\n\
           grep -v ' # sealer-registry$' /etc/hosts > /etc/hosts.sealer || true\n\
           cat /etc/hosts.sealer > /etc/hosts; rm -f /etc/hosts.sealer; fi\n\
         rm -rf '{data}' {HOST_DIR} /var/log/sealer/registry.log\n\
         for d in '{data_root}' /var/lib/sealer /var/log/sealer /run/sealer; do rmdir \"$d\" 2>/dev/null || true; done\n",
        data = data.display(),
        data_root = cluster.data_root.display(),
    )
}

pub async fn delete_all(
    env: &Environment,
    cluster: &Cluster,
    progress: &dyn Progress,
) -> anyhow::Result<()> {
    let hosts = connect_all(env, cluster, progress).await?;
    let script = clean_host(cluster);
    check_on_all("cleaning the hosts", &hosts, env.jobs, |_| script.clone()).await?;
    let state = env.state_dir.join(&cluster.name);
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    Ok(())
}
