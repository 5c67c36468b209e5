//! Hostile CloudImages and Clusterfiles against test hosts: what a layer, a file name or
//! a field holds never acts outside the cluster's own folders, never runs as a command,
//! and `delete` removes only what `sealer run` made. Victims live in the hosts' private
//! mounts (`/var/lib/sealer`), never on the machine running the tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sealer_e2e::*;

use super::run::{sealer, sealer_fails, write_cluster};

/// Builds the Kubefile `kubefile` with `files` (name, content; a content starting with
/// `->` makes a symlink to the rest) into `store` as `example.com/t:1`.
fn build(store: &Path, kubefile: &str, files: &[(&str, &str)]) {
    let ctx = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = ctx.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match content.strip_prefix("->") {
            Some(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
            None => std::fs::write(&path, content).unwrap(),
        }
    }
    std::fs::write(ctx.path().join("Kubefile"), kubefile).unwrap();
    sealer(
        store,
        &[
            "build",
            "-q",
            "-t",
            "example.com/t:1",
            ctx.path().to_str().unwrap(),
        ],
    );
}

/// A Clusterfile running `example.com/t:1` on `host` (master, insecure registry, no
/// launch command of its own unless `extra` gives one), with `extra` under `spec`.
fn clusterfile(dir: &Path, host: &TestHost, extra: &str) -> PathBuf {
    let path = write_cluster(
        dir,
        &[(host, "master")],
        &format!("  registry: {{localRegistry: {{insecure: true}}}}\n{extra}"),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("example.com/shop:1.0", "example.com/t:1")
        .replace("  cmd: [\"echo launched > launched\"]\n", "");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_layer_reaching_through_a_link_it_placed_is_refused_and_harms_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // A plain build: a folder holding a link to a host folder, then a whiteout "in" it.
    build(
        &store,
        "FROM scratch\nCOPY d .\nCOPY empty l/.wh.target\n",
        &[("d/l", "->/var/lib/sealer/victim"), ("empty", "")],
    );
    let host = TestHost::start();
    host.ssh("mkdir -p /var/lib/sealer/victim && echo keep > /var/lib/sealer/victim/target");
    let file = clusterfile(work.path(), &host, "");
    let err = sealer_fails(&store, &["run", "-q", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("l/.wh.target") && err.contains("goes through a symlink"),
        "{err}"
    );
    assert_eq!(
        host.ssh("cat /var/lib/sealer/victim/target").trim(),
        "keep",
        "the file the link points at is still there"
    );
}

#[test]
fn names_from_the_image_and_the_clusterfile_never_run_as_commands() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    // An application whose file name is a command substitution.
    build(
        &store,
        "FROM scratch\nENV GLOBAL=image OVER=image\nAPP web 'local://$(touch pwned-by-name).sh'\n\
         APPENV web APPV=app\nLAUNCH [\"web\"]\n",
        &[(
            "$(touch pwned-by-name).sh",
            "echo \"ran $GLOBAL $OVER $APPV\" > ran\n",
        )],
    );
    let host = TestHost::start();
    // A data root with a quote in it: `delete` once ran the rest as a command.
    let root = "/var/lib/sealer/it's; touch /var/lib/sealer/pwned-by-root; '";
    let file = clusterfile(
        work.path(),
        &host,
        &format!("  dataRoot: \"{root}\"\n  env: [OVER=cluster]\n"),
    );
    let out = sealer(&store, &["run", "-q", "-f", file.to_str().unwrap()]);
    assert!(out.contains("launched"), "{out}");
    let rootfs = format!("{root}/shop/rootfs");
    // The script ran under its own name, with the image's env, the Clusterfile's over
    // it, and the application's over both.
    assert_eq!(
        host.ssh(&format!("cat \"{rootfs}/ran\"")).trim(),
        "ran image cluster app",
    );
    sealer(&store, &["delete", "--all", "--cluster", "shop"]);
    let pwned = host.ssh("find /var/lib/sealer -type f -name 'pwned*'");
    assert!(pwned.trim().is_empty(), "a name ran as a command: {pwned}");
    assert_eq!(
        host.ssh(&format!("[ -e \"{root}/shop\" ] && echo left || echo gone"))
            .trim(),
        "gone",
        "delete removed the cluster's folder"
    );

    // A launch command the host lacks is named as such, not as a lost host.
    let file = clusterfile(work.path(), &host, "  cmd: [no-such-command-xyz]\n");
    let err = sealer_fails(&store, &["run", "-q", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("a command was not found") && err.contains("no-such-command-xyz"),
        "{err}"
    );
    assert!(!err.contains("unreachable"), "{err}");
}

#[test]
fn delete_removes_only_a_folder_run_made_and_run_moves_into_none_it_did_not() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build(&store, "FROM scratch\nCOPY f f\n", &[("f", "file\n")]);
    let host = TestHost::start();

    // A system folder as the data root is refused before any host is touched
    // (`delete` would remove /var/lib/sealer, here the host's private one).
    let file = clusterfile(work.path(), &host, "  dataRoot: /var/lib\n");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("name: shop", "name: sealer")).unwrap();
    let err = sealer_fails(&store, &["run", "-q", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("spec.dataRoot") && err.contains("system folder"),
        "{err}"
    );
    assert_eq!(host.logins(), 0, "nothing ran on the host");

    // Someone's folder where the cluster's would go: run does not move in.
    let data = "/var/lib/sealer/data/shop";
    host.ssh(&format!("mkdir -p {data} && echo keep > {data}/precious"));
    let file = clusterfile(work.path(), &host, "");
    let file = file.to_str().unwrap();
    let err = sealer_fails(&store, &["run", "-q", "-f", file]);
    assert!(
        err.contains(&format!("{data} was not made by sealer")),
        "{err}"
    );
    assert_eq!(host.ssh(&format!("ls -A {data}")).trim(), "precious");

    // Its own folder carries the mark; a folder without it survives delete.
    host.ssh(&format!("rm -rf {data}"));
    sealer(&store, &["run", "-q", "-f", file]);
    assert_eq!(
        host.ssh(&format!("cat {data}/.sealer-cluster")).trim(),
        "shop"
    );
    assert_eq!(host.ssh(&format!("cat {data}/rootfs/f")).trim(), "file");
    host.ssh(&format!(
        "rm -rf {data} && mkdir {data} && echo keep > {data}/precious"
    ));
    let err = sealer_fails(&store, &["delete", "--all", "--cluster", "shop"]);
    assert!(
        err.contains(&format!("{data} was not made by sealer")),
        "{err}"
    );
    assert_eq!(host.ssh(&format!("cat {data}/precious")).trim(), "keep");
}

/// Every process's arguments on this machine (test hosts share its process table).
fn all_arguments() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(args) = std::fs::read(entry.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&args).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

#[test]
fn secrets_stay_out_of_process_lists_and_away_from_other_users() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build(&store, "FROM scratch\nCOPY f f\n", &[("f", "file\n")]);
    let host = TestHost::start();
    let secret = format!("pw-{}-secret", std::process::id());
    let file = clusterfile(
        work.path(),
        &host,
        &format!("  env: [PASSWORD={secret}]\n  cmd: [\"sleep 3; echo $PASSWORD > launched\"]\n"),
    );
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "---\napiVersion: sealer.io/v1\nkind: Config\nmetadata: {{name: s}}\n\
         spec: {{path: etc/secret.env, data: \"PASSWORD={secret}\\n\"}}\n"
    ));
    std::fs::write(&file, text).unwrap();

    // While the run goes on, no process here or on the host shows the password.
    let mut child = std::process::Command::new(binary("sealer"))
        .arg("--root")
        .arg(&store)
        .args(["run", "-q", "-f", file.to_str().unwrap()])
        .env("HOME", work.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut looks = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let seen = all_arguments();
        assert!(
            !seen.contains(&secret),
            "the password is in the process list"
        );
        looks += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{:?}", child.wait_with_output());
    assert!(looks > 50, "the run was watched ({looks} looks)");
    let data = "/var/lib/sealer/data/shop";
    assert_eq!(
        host.ssh(&format!("cat {data}/rootfs/launched")).trim(),
        secret,
        "the launch had it"
    );
    // The files holding it are root's alone.
    assert_eq!(host.ssh(&format!("stat -c %a {data}")).trim(), "700");
    let other = host.ssh(&format!(
        "runuser -u nobody -- cat {data}/rootfs/etc/secret.env 2>&1 || true"
    ));
    assert!(other.contains("Permission denied"), "{other}");

    // A password on the command line works but warns; from stdin it does not warn.
    let args = ["run", "example.com/t:1", "-m", "127.0.0.1", "--port", "1"];
    let out = std::process::Command::new(binary("sealer"))
        .arg("--root")
        .arg(&store)
        .args(args)
        .args(["-p", "on-the-command-line"])
        .env("HOME", work.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("warning: a password given with -p is visible"),
        "{said}"
    );
    let mut piped = std::process::Command::new(binary("sealer"))
        .arg("--root")
        .arg(&store)
        .args(args)
        .arg("--passwd-stdin")
        .env("HOME", work.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    piped
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-stdin\n")
        .unwrap();
    let said = String::from_utf8_lossy(&piped.wait_with_output().unwrap().stderr).into_owned();
    assert!(!said.contains("warning"), "{said}");
}

#[test]
fn a_host_serves_one_cluster_and_another_neither_moves_in_nor_takes_its_registry() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build(&store, "FROM scratch\nCOPY f f\n", &[("f", "file\n")]);
    let host = TestHost::start();
    let shop = clusterfile(work.path(), &host, "");
    let shop = shop.to_str().unwrap();
    sealer(&store, &["run", "-q", "-f", shop]);
    let registry_alive = || {
        host.ssh("kill -0 \"$(cat /run/sealer/registry.pid)\" && echo up || echo down")
            .trim()
            .to_string()
    };
    assert_eq!(registry_alive(), "up");

    // Another cluster on the same host: its hooks never run, it takes nothing over.
    let other_dir = work.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = clusterfile(&other_dir, &host, "");
    let hook = |action: &str| {
        format!(
            "---\napiVersion: sealer.io/v1\nkind: Plugin\nmetadata: {{name: {action}}}\n\
             spec: {{type: SHELL, action: {action}, data: \"touch /var/lib/sealer/{action}-ran\"}}\n"
        )
    };
    let text = std::fs::read_to_string(&other)
        .unwrap()
        .replace("name: shop", "name: other")
        + &hook("pre-install")
        + &hook("pre-uninstall");
    std::fs::write(&other, text).unwrap();
    let other = other.to_str().unwrap();
    for args in [["run", "-q", "-f", other], ["delete", "--all", "-f", other]] {
        let err = sealer_fails(&store, &args);
        assert!(
            err.contains("this host belongs to cluster shop, not other"),
            "{args:?}: {err}"
        );
        assert_eq!(registry_alive(), "up", "{args:?}");
        assert_eq!(
            host.ssh("ls /var/lib/sealer | grep -c -- -ran || true")
                .trim(),
            "0",
            "{args:?}: no hook of the other cluster ran"
        );
        assert_eq!(
            host.ssh("cat /var/lib/sealer/data/shop/rootfs/f").trim(),
            "file"
        );
    }

    // Once shop is gone, the host is free for the other cluster.
    sealer(&store, &["delete", "--all", "-f", shop]);
    assert_eq!(host.ssh("ls -A /var/lib/sealer").trim(), "");
    sealer(&store, &["run", "-q", "-f", other]);
    assert_eq!(
        host.ssh("cat /var/lib/sealer/cluster/owner").trim(),
        "other"
    );
    assert_eq!(registry_alive(), "up");
}
