//! The Clusterfile's `Plugin` hooks and the image's launch commands.
//!
//! Hooks of the install phases run once per image digest (a marker on the host records
//! each), so a re-run after a failure does not repeat what already ran; clean-up hooks
//! run whenever a host is cleaned. Master0's phases run on master0 only; the host
//! phases on every host the plugin's scope (roles) selects. Scripts run with `sh -e` in
//! the image's files (when laid out) with the host's env.

use std::sync::Arc;

use anyhow::bail;

use super::{HOST_DIR, all_ok};
use crate::clusterfile::{Cluster, EnvVar, Phase};
use crate::distribute::quote;
use crate::hosts::{Host, on_all, sh_quote};
use crate::image::Image;

/// The script prologue: stop at the first failure, the host's env, the image's files.
fn prologue(cluster: &Cluster, env: &[EnvVar]) -> String {
    let mut script = String::from("set -e\n");
    for e in env {
        script.push_str(&format!("export {}={}\n", e.key, sh_quote(&e.value)));
    }
    script.push_str(&format!(
        "[ ! -d {dir} ] || cd {dir}\n",
        dir = quote(&cluster.rootfs())
    ));
    script
}

/// Runs the hooks of `phase` on `hosts` (master0's phases: on master0 if it is among
/// them). With `once`, each hook runs once per key on a host.
pub async fn run_phase(
    cluster: &Cluster,
    hosts: &[Arc<dyn Host>],
    phase: Phase,
    once: Option<&str>,
    jobs: usize,
) -> anyhow::Result<()> {
    let plugins: Vec<_> = cluster
        .plugins
        .iter()
        .filter(|p| p.phase == phase)
        .collect();
    if plugins.is_empty() {
        return Ok(());
    }
    let master0 = cluster.master0().ip;
    let targets: Vec<Arc<dyn Host>> = hosts
        .iter()
        .filter(|h| !phase.on_master0() || h.ip() == master0)
        .cloned()
        .collect();
    let results = on_all(&targets, jobs, |h| {
        let plugins = &plugins;
        async move {
            let Some(host) = cluster.host(h.ip()) else {
                return Ok(());
            };
            for p in plugins.iter() {
                let in_scope = phase.on_master0()
                    || p.scope.is_empty()
                    || p.scope.iter().any(|r| host.roles.contains(r));
                if !in_scope {
                    continue;
                }
                // The hook runs in a subshell; its failure stops the script before the
                // marker is written.
                let mut script = String::from("set -e\n");
                let marker = once.map(|key| {
                    format!(
                        "{HOST_DIR}/hooks/{}.{}.{key}",
                        phase.name(),
                        p.name.replace('/', "_")
                    )
                });
                if let Some(m) = &marker {
                    script.push_str(&format!("[ ! -e {m} ] || exit 0\n", m = sh_quote(m)));
                }
                script.push_str(&format!(
                    "(\n{}{}\n)\n",
                    prologue(cluster, &host.env),
                    p.data
                ));
                if let Some(m) = &marker {
                    script.push_str(&format!(
                        "mkdir -p {HOST_DIR}/hooks\ntouch {}\n",
                        sh_quote(m)
                    ));
                }
                let out = h.run(&script).await?;
                if !out.success() {
                    bail!(
                        "host {}: the {} hook {:?} failed ({}): {}",
                        h.ip(),
                        phase.name(),
                        p.name,
                        exit_reason(out.code),
                        out.stderr.trim()
                    );
                }
            }
            Ok(())
        }
    })
    .await;
    all_ok(&format!("the {} hooks", phase.name()), results).map(|_| ())
}

/// Runs the launch commands on master0 with the image's env and the Clusterfile's over
/// it, once per image digest; true when they ran now.
pub async fn launch(
    cluster: &Cluster,
    master0: &dyn Host,
    image: &Image,
    commands: &[String],
) -> anyhow::Result<bool> {
    let digest_hex = image.digest.hex();
    if commands.is_empty() {
        return Ok(false);
    }
    let marker = cluster.data_dir().join(format!("launched-{digest_hex}"));
    let mut script = format!("set -e\n[ ! -e {m} ] || exit 0\n(\n", m = quote(&marker));
    let env: Vec<EnvVar> = image.env.iter().chain(&cluster.env).cloned().collect();
    script.push_str(&prologue(cluster, &env));
    for c in commands {
        script.push_str(c);
        script.push('\n');
    }
    script.push_str(&format!(
        ")\ntouch {}\necho sealer-launched\n",
        quote(&marker)
    ));
    let out = master0.run(&script).await?;
    if !out.success() {
        bail!(
            "host {}: the launch commands failed ({}): {}",
            master0.ip(),
            exit_reason(out.code),
            out.stderr.trim()
        );
    }
    Ok(out.stdout.lines().any(|l| l == "sealer-launched"))
}

/// What a script's exit status says, in words where the shell gives it a meaning.
fn exit_reason(code: Option<i32>) -> String {
    match code {
        Some(127) => "exit 127: a command was not found on the host".into(),
        Some(126) => "exit 126: a command could not be run (not executable)".into(),
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::local::LocalHost;

    #[tokio::test]
    async fn a_failing_hook_stops_with_the_host_the_hook_and_its_stderr() {
        let file = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  image: x:1\n  env: [Mode=t]\n  \
                    hosts: [{ips: [127.0.0.1], roles: [master]}]\n---\napiVersion: sealer.io/v1\n\
                    kind: Plugin\nmetadata: {name: check}\nspec: {action: pre-install, data: \"echo mode $Mode >&2; exit 4\"}\n";
        let cluster = crate::clusterfile::parse(file, "Clusterfile").unwrap();
        let hosts: Vec<Arc<dyn Host>> =
            vec![Arc::new(LocalHost::new("127.0.0.1".parse().unwrap()))];
        // Once per key: a failed hook must not be marked as done.
        let key = format!("test-{}", std::process::id());
        let err = run_phase(&cluster, &hosts, Phase::PreInstall, Some(&key), 1)
            .await
            .unwrap_err();
        let marker = format!("{HOST_DIR}/hooks/pre-install.check.{key}");
        let marked = std::path::Path::new(&marker).exists();
        let _ = std::fs::remove_file(&marker);
        assert!(!marked, "a failed hook was marked as run");
        let text = format!("{err:#}");
        assert!(
            text.contains("the pre-install hook \"check\" failed (exit 4): mode t"),
            "{text}"
        );
        // Other phases have no hooks: nothing runs.
        run_phase(&cluster, &hosts, Phase::PostInstall, None, 1)
            .await
            .unwrap();
    }
}
