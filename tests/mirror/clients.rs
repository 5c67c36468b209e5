//! Stock clients pulling through the mirror with the files `sealer-registry
//! mirror-config` generates: containerd (`docker.io` and `_default` hosts.toml), dockerd
//! (`registry-mirrors`) and podman (a `registries.conf.d` drop-in mirror with a path).

use std::process::Command;

use sealer_e2e::*;

use super::*;

/// `sealer-registry mirror-config --for RUNTIME --registry http://HOST --upstream ... --write DIR`.
fn mirror_config(runtime: &str, registry_host: &str, upstreams: &[&str], dir: &std::path::Path) {
    let mut cmd = Command::new(binary("sealer-registry"));
    cmd.args([
        "mirror-config",
        "--for",
        runtime,
        "--registry",
        &format!("http://{registry_host}"),
    ]);
    for u in upstreams {
        cmd.args(["--upstream", u]);
    }
    cmd.arg("--write").arg(dir);
    run(&mut cmd);
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_through_docker_io_and_default_hosts() {
    let tokens = TokenServer::start("127.0.0.1", USER, PASSWORD).await;
    let up = DockerRegistry::start(UpstreamOptions {
        token: Some(&tokens),
        ..Default::default()
    });
    skopeo_push(&up.host, "library/app:1", Some(&creds()));
    skopeo_push(&up.host, "org/tool:3", Some(&creds()));
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}", up.host);
    let reg = mirror(
        dir.path(),
        &format!(
            "{}{}",
            upstream_entry("docker.io", &endpoint),
            upstream_entry("example.org", &endpoint)
        ),
        &[],
    );

    let ctrd = Containerd::start();
    let hosts = ctrd.dir.path().join("certs.d");
    mirror_config("containerd", &reg.host, &["docker.io"], &hosts);
    assert!(hosts.join("_default/hosts.toml").exists());
    for image in ["docker.io/library/app:1", "example.org/org/tool:3"] {
        let out = output(
            ctrd.ctr()
                .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
                .arg(&hosts)
                .arg(image),
        );
        assert!(
            out.status.success(),
            "ctr pull {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // docker.io through its own hosts.toml, example.org through _default: both with ns.
    reg.log_where("containerd's requests with ns", |log| {
        log.contains("/v2/library/app/manifests/1?ns=docker.io")
            && log.contains("/v2/org/tool/manifests/3?ns=example.org")
    });
    // Both are the same test image, so containerd fetched the layers once.
    assert!(
        reg.root
            .join("repositories/docker.io/library/app/_layers")
            .is_dir()
    );
    assert!(
        reg.root
            .join("repositories/example.org/org/tool/_manifests")
            .is_dir()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dockerd_pulls_through_registry_mirrors() {
    let up = Registry::start();
    skopeo_push(&up.host, "library/app:1", None);
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &[]);

    let config = tempfile::tempdir().unwrap();
    mirror_config("docker", &reg.host, &["docker.io"], config.path());
    let daemon: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config.path().join("daemon.json")).unwrap())
            .unwrap();
    let mirrors = daemon["registry-mirrors"][0].as_str().unwrap().to_string();

    let ctrd = Containerd::start();
    let dockerd = Dockerd::start(&ctrd, &mirrors);
    run(&mut dockerd.docker_cmd(&["pull", "--quiet", "app:1"]));
    let out = run(&mut dockerd.docker_cmd(&["run", "--rm", "--network", "none", "app:1"]));
    assert!(out.contains("hello from sealer test image"), "{out}");
    reg.log_where("dockerd's bare pull", |log| {
        log.lines()
            .any(|l| l.contains("/v2/library/app/manifests/1") && l.contains("status=200"))
    });
    up.log_where("the mirror fetching from upstream", |log| {
        log.contains("sealer-registry/")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_pulls_through_a_mirror_location_with_a_path() {
    let up = Registry::start();
    skopeo_push(&up.host, "library/app:1", None);
    skopeo_push(&up.host, "team/app:7", None);
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(
        dir.path(),
        &up.host,
        &["--upstream", &format!("example.org=http://{}", up.host)],
    );
    let config = tempfile::tempdir().unwrap();
    mirror_config(
        "podman",
        &reg.host,
        &["docker.io", "example.org"],
        config.path(),
    );
    let conf = config.path().join("registries.conf.d/sealer.conf");

    let store = tempfile::tempdir().unwrap();
    for image in ["docker.io/library/app:1", "example.org/team/app:7"] {
        let out = output(
            Command::new(require("podman"))
                .env("CONTAINERS_REGISTRIES_CONF", &conf)
                .arg("--root")
                .arg(store.path().join("root"))
                .arg("--runroot")
                .arg(store.path().join("run"))
                .args(["--storage-driver", "vfs", "pull", "--quiet", image]),
        );
        assert!(
            out.status.success(),
            "podman pull {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    reg.log_where("podman's path-prefixed requests", |log| {
        log.contains("/v2/docker.io/library/app/manifests/1")
            && log.contains("/v2/example.org/team/app/manifests/7")
    });
}
