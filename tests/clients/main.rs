//! Real clients against a running `sealer-registry`: skopeo, podman, buildah, oras-py,
//! containerd's ctr (as a mirror client) and dockerd (direct, as a mirror, and push).
//! A client that is not installed fails its test.

use std::process::Command;

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::Value;

/// `skopeo copy` of the test image layout into `registry/<dest>`, as OCI or docker v2s2.
fn skopeo_push(reg: &Registry, dest: &str, v2s2: bool) {
    let mut cmd = Command::new(require("skopeo"));
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if v2s2 {
        cmd.args(["--format", "v2s2"]);
    }
    cmd.arg(format!("oci:{}:app", test_image_layout().display()))
        .arg(format!("docker://{}/{dest}", reg.host));
    run(&mut cmd);
}

async fn manifest_digest(reg: &Registry, repo: &str, reference: &str) -> String {
    let resp = client()
        .head(reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{repo}:{reference}");
    header(&resp, "docker-content-digest")
}

#[tokio::test]
async fn skopeo_pushes_oci_and_v2s2_pulls_lists_and_deletes() {
    let reg = Registry::start();
    skopeo_push(&reg, "test/app:1", false);
    skopeo_push(&reg, "test/app:v2s2", true);
    // The second push of the same layers to another repository uses cross-repo mounts.
    skopeo_push(&reg, "library/app:1", false);
    reg.log_where("skopeo mounting blobs across repositories", |l| {
        l.contains("mount=sha256")
    });

    let resp = client()
        .get(reg.url("/v2/test/app/manifests/v2s2"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-type"), DOCKER_MANIFEST);
    let resp = client()
        .get(reg.url("/v2/test/app/manifests/1"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);

    let skopeo = require("skopeo");
    let tags: Value = serde_json::from_str(&run(Command::new(&skopeo)
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/test/app", reg.host))))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1", "v2s2"]));

    // Pull back and compare the layers with the source layout's.
    let out = tempfile::tempdir().unwrap();
    for tag in ["1", "v2s2"] {
        let dest = out.path().join(tag);
        run(Command::new(&skopeo)
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}/test/app:{tag}", reg.host))
            .arg(format!("dir:{}", dest.display())));
        let m: Value =
            serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).unwrap()).unwrap();
        for layer in m["layers"].as_array().unwrap() {
            let digest = layer["digest"].as_str().unwrap();
            let file = dest.join(digest.trim_start_matches("sha256:"));
            assert_eq!(
                sha256(&std::fs::read(&file).unwrap()),
                digest,
                "layer pulled intact"
            );
        }
    }
    let inspect: Value = serde_json::from_str(&run(Command::new(&skopeo)
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/test/app:1", reg.host))))
    .unwrap();
    assert_eq!(inspect["Architecture"], "amd64");

    run(Command::new(&skopeo)
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}/test/app:v2s2", reg.host)));
    let tags: Value = serde_json::from_str(&run(Command::new(&skopeo)
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/test/app", reg.host))))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["1"]));
}

#[tokio::test]
async fn podman_pulls() {
    let reg = Registry::start();
    skopeo_push(&reg, "test/app:1", false);
    let expected = manifest_digest(&reg, "test/app", "1").await;
    let store = tempfile::tempdir().unwrap();
    let podman = |args: &[&str]| containers_tool("podman", store.path(), args);
    let image = format!("{}/test/app:1", reg.host);
    run(&mut podman(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        &image,
    ]));
    let digest = run(&mut podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Digest}}",
        &image,
    ]));
    assert_eq!(digest.trim(), expected);
}

#[tokio::test]
async fn buildah_pushes_a_two_platform_index() {
    let reg = Registry::start();
    // The arm64 member comes from the registry, the amd64 one is built by buildah.
    let arm = tempfile::tempdir().unwrap();
    run(Command::new(fixtures().join("make-image.sh"))
        .arg(arm.path())
        .arg("app")
        .arg("arm64"));
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}/oci:app", arm.path().display()))
        .arg(format!("docker://{}/test/arm:1", reg.host)));

    let store = tempfile::tempdir().unwrap();
    let buildah = |args: &[&str]| containers_tool("buildah", store.path(), args);
    let ctr = run(&mut buildah(&["from", "scratch"])).trim().to_string();
    let file = store.path().join("b.txt");
    std::fs::write(&file, "built by buildah\n").unwrap();
    run(&mut buildah(&[
        "copy",
        &ctr,
        file.to_str().unwrap(),
        "/data/b.txt",
    ]));
    run(&mut buildah(&[
        "config",
        "--cmd",
        "/data/b.txt",
        "--arch",
        "amd64",
        "--os",
        "linux",
        &ctr,
    ]));
    run(&mut buildah(&[
        "commit",
        "--quiet",
        "--format",
        "oci",
        &ctr,
        "test/buildah:1",
    ]));
    run(&mut buildah(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        "test/buildah:1",
        &format!("docker://{}/test/buildah:1", reg.host),
    ]));
    run(&mut buildah(&["manifest", "create", "test/list:1"]));
    run(&mut buildah(&[
        "manifest",
        "add",
        "--arch",
        "amd64",
        "--os",
        "linux",
        "test/list:1",
        "containers-storage:localhost/test/buildah:1",
    ]));
    run(&mut buildah(&[
        "manifest",
        "add",
        "--arch",
        "arm64",
        "--os",
        "linux",
        "--tls-verify=false",
        "test/list:1",
        &format!("docker://{}/test/arm:1", reg.host),
    ]));
    run(&mut buildah(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "test/list:1",
        &format!("docker://{}/test/list:1", reg.host),
    ]));

    let resp = client()
        .get(reg.url("/v2/test/list/manifests/1"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = header(&resp, "content-type");
    assert!(ct == OCI_INDEX || ct == DOCKER_LIST, "{ct}");
    let index: Value = resp.json().await.unwrap();
    let members = index["manifests"].as_array().unwrap();
    let mut archs: Vec<_> = members
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap().to_string())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
    for m in members {
        let d = m["digest"].as_str().unwrap();
        assert_eq!(
            manifest_digest(&reg, "test/list", d).await,
            d,
            "member {d} is in the repository"
        );
    }
    // skopeo copies the whole index back out intact.
    let out = tempfile::tempdir().unwrap();
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/test/list:1", reg.host))
        .arg(format!("oci:{}:list", out.path().display())));
}

#[tokio::test]
async fn oras_py_artifacts_and_referrers() {
    let reg = Registry::start();
    require_oras_py();
    let work = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/oras_roundtrip.py");
    let out = run(Command::new("python3")
        .arg(script)
        .arg(&reg.host)
        .arg(work.path()));
    assert!(out.contains("ORAS OK"), "{out}");
    reg.log_where("oras-py's chunked push using PATCH", |l| {
        l.contains("method=PATCH")
    });
}

#[tokio::test]
async fn containerd_pulls_through_a_hosts_toml_mirror() {
    let reg = Registry::start();
    // Stored under the fully qualified name (docs/design.md, contract 2) and under a short name,
    // which contract 3 also finds for `?ns=docker.io`.
    skopeo_push(&reg, "docker.io/library/app:1", false);
    skopeo_push(&reg, "library/short:1", false);
    let full = manifest_digest(&reg, "docker.io/library/app", "1").await;

    let ctrd = Containerd::start();
    let hosts = ctrd.dir.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("docker.io")).unwrap();
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host
        ),
    )
    .unwrap();
    let pull = |image: &str| {
        output(
            ctrd.ctr()
                .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
                .arg(&hosts)
                .arg(image),
        )
    };
    for image in ["docker.io/library/app:1", "docker.io/library/short:1"] {
        let out = pull(image);
        assert!(
            out.status.success(),
            "ctr pull {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = run(ctrd.ctr().args(["images", "ls"]));
    let line = list
        .lines()
        .find(|l| l.starts_with("docker.io/library/app:1"))
        .expect("image listed");
    assert!(line.contains(&full), "{line}");

    reg.log_where("containerd resolving through the mirror with ns", |l| {
        l.contains("/v2/library/app/manifests/1?ns=docker.io")
            && l.contains("user_agent=\"containerd/")
    });

    // A miss is a clean 404, so containerd moves on to the upstream (unreachable here).
    let out = pull("docker.io/library/absent:1");
    assert!(!out.status.success());
    reg.log_where("a 404 for the absent image", |log| {
        log.lines().any(|l| {
            l.contains("/v2/library/absent/manifests/1?ns=docker.io") && l.contains("status=404")
        })
    });
}

#[tokio::test]
async fn dockerd_pulls_directly_and_through_registry_mirrors_and_pushes() {
    let reg = Registry::start();
    skopeo_push(&reg, "test/app:1", false);
    skopeo_push(&reg, "docker.io/library/app:1", false);
    let ctrd = Containerd::start();
    let dockerd = Dockerd::start(&ctrd, &format!("http://{}", reg.host));

    let direct = format!("{}/test/app:1", reg.host);
    run(&mut dockerd.docker_cmd(&["pull", "--quiet", &direct]));
    // `app:1` is docker.io/library/app:1: dockerd asks the mirror for a bare library/app.
    run(&mut dockerd.docker_cmd(&["pull", "--quiet", "app:1"]));
    reg.log_where("dockerd pulling through the mirror without ns", |log| {
        log.lines().any(|l| {
            l.contains("/v2/library/app/manifests/1")
                && !l.contains("ns=")
                && l.contains("status=200")
        })
    });
    let out = run(&mut dockerd.docker_cmd(&["run", "--rm", "--network", "none", &direct]));
    assert!(out.contains("hello from sealer test image"), "{out}");

    let pushed = format!("{}/test/dockerpush:1", reg.host);
    run(&mut dockerd.docker_cmd(&["tag", &direct, &pushed]));
    run(&mut dockerd.docker_cmd(&["push", "--quiet", &pushed]));
    let resp = client()
        .get(reg.url("/v2/test/dockerpush/manifests/1"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type"),
        DOCKER_MANIFEST,
        "dockerd pushes docker v2s2"
    );
}
