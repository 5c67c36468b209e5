//! The example build from a local upstream, pushed to our registry and to
//! `docker-registry`, pulled back into empty stores, and checked by skopeo and oras-py;
//! rebuilt from the cache and with the upstream gone.

use std::process::Command;

use sealer_e2e::*;

use crate::*;

#[test]
fn example_builds_pushes_and_pulls_back_complete_and_rebuilds_offline() {
    let mut up = example_upstream();
    let sealer = Sealer::new();
    let flags = upstream_flags(&up.host);
    let digest = sealer.build("example.com/shop:1.0", examples(), &flags);

    // The CloudImage and the six container images under their own names.
    let rows = sealer.images();
    let shop = image_row(&rows, "example.com/shop", "1.0");
    assert_eq!(shop["digest"], digest.as_str());
    assert_eq!(shop["cloud_image"], true);
    assert_eq!(shop["container_images"], 6);
    assert_eq!(shop["platforms"], serde_json::json!(["linux/amd64"]));
    for (name, tag) in [
        ("docker.io/library/nginx", "1.25"),
        ("quay.io/prometheus/apache-exporter", "v1.0.3"),
        ("registry.k8s.io/pause", "3.9"),
    ] {
        image_row(&rows, name, tag);
    }

    // inspect: apps with their types, launch order and env, carried images by app.
    let info = sealer.inspect("example.com/shop:1.0");
    let platform = &info["platforms"][0];
    let ext = &platform["extension"];
    let apps: Vec<(&str, &str)> = ext["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        apps,
        [("setup", "shell"), ("shop", "kube"), ("web", "helm")]
    );
    assert_eq!(
        ext["launch"]["app_names"],
        serde_json::json!(["setup", "shop", "web"])
    );
    assert_eq!(ext["applications"][2]["env"]["REPLICAS"], "2");
    assert_eq!(ext["kubeVersion"], ">=v1.22.0");
    assert_eq!(platform["labels"]["app.example.com/channel"], "stable");
    assert_eq!(
        platform["launchCommands"][1],
        "kubectl apply -f 'application/apps/shop/app.yaml'"
    );
    let images = info["containerImages"].as_array().unwrap();
    assert_eq!(images.len(), 6);
    assert!(images.iter().all(|i| i["present"] == true));
    let app_of = |r: &str| images.iter().find(|i| i["image"] == r).unwrap()["appName"].clone();
    assert_eq!(app_of("docker.io/library/httpd:2.4.58"), "web");
    assert_eq!(app_of("docker.io/library/nginx:1.25"), "shop");
    assert_eq!(app_of("registry.k8s.io/pause:3.9"), serde_json::Value::Null);

    // A rebuild with nothing changed reuses every layer and fetches nothing.
    let out = sealer.run(
        &[
            vec![
                "build".to_string(),
                "-t".into(),
                "example.com/shop:1.0".into(),
            ],
            flags.clone(),
            vec![examples().display().to_string()],
        ]
        .concat(),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 layer(s), 4 from the cache"), "{stderr}");
    assert!(
        stderr.contains("6 container image(s), 0 fetched"),
        "{stderr}"
    );
    assert_eq!(
        digest_of_line(&String::from_utf8_lossy(&out.stdout)),
        digest
    );

    // With the upstream gone, a build without the cache still succeeds from the store,
    // with the same digest (layers are reproducible).
    up.kill9();
    let offline = sealer.build(
        "example.com/shop:1.0",
        examples(),
        &[flags.clone(), vec!["--no-cache".into()]].concat(),
    );
    assert_eq!(offline, digest);
    // --pull always must ask the (dead) upstream, and says which images failed.
    let err = sealer.fails(
        &[
            vec![
                "build".to_string(),
                "-t".into(),
                "x:1".into(),
                "--pull".into(),
                "always".into(),
            ],
            flags.clone(),
            vec![examples().display().to_string()],
        ]
        .concat(),
    );
    assert!(
        err.contains("6 of 6 container image(s) cannot be fetched"),
        "{err}"
    );
    assert!(err.contains("docker.io/library/nginx:1.25"), "{err}");

    // Push to our registry and to docker-registry; pull each back into an empty store.
    let ours = Registry::start();
    let theirs = DockerRegistry::start(UpstreamOptions::default());
    for host in [&ours.host, &theirs.host] {
        let target = format!("{host}/apps/shop:1.0");
        let pushed = digest_of_line(&sealer.ok(&["push", "example.com/shop:1.0", &target]));
        assert_eq!(pushed, digest);
        // A second push finds every blob there.
        sealer.ok(&["push", "example.com/shop:1.0", &target]);

        let fresh = Sealer::new();
        let pulled = digest_of_line(&fresh.ok(&["pull", &target]));
        assert_eq!(pulled, digest);
        let info = fresh.inspect(&target);
        assert_eq!(info["containerImages"].as_array().unwrap().len(), 6);
        assert!(
            info["containerImages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["present"] == true),
            "{info:#}"
        );
        // The pulled store holds exactly what the build's does for this image.
        assert_eq!(
            fresh.blob_count(),
            11,
            "index, rootfs manifest and config, 4 layers, image manifest, config, 2 layers"
        );

        // skopeo copies the whole graph out; oras-py walks and verifies it.
        let layout = tempfile::tempdir().unwrap();
        run(Command::new(require("skopeo"))
            .args(["copy", "--quiet", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{target}"))
            .arg(format!("oci:{}:shop", layout.path().display())));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).unwrap())
                .unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest.as_str());
        let report = run(Command::new(require("python3"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/builder/oras_graph.py"
            ))
            .arg(host)
            .arg("apps/shop:1.0"));
        assert!(report.contains("GRAPH OK 8 8"), "{report}");
        assert_eq!(report.matches("IMAGE ").count(), 6, "{report}");
    }
}

#[test]
fn a_build_from_a_cloudimage_inherits_its_files_apps_and_images() {
    let up = example_upstream();
    let sealer = Sealer::new();
    let flags = upstream_flags(&up.host);
    sealer.build("example.com/shop:1.0", examples(), &flags);
    let base = sealer.inspect("example.com/shop:1.0");

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM example.com/shop:1.0\n\
         ENV TIER=prod\n\
         COPY extra.yaml manifests/\n\
         APP extra local://extra.yaml\n\
         LAUNCH [\"setup\", \"extra\"]\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("extra.yaml"),
        "kind: Pod\nspec:\n  containers:\n    - image: docker.io/library/nginx:1.25\n",
    )
    .unwrap();
    sealer.build("example.com/shop-extra:1.0", ctx.path(), &flags);
    let info = sealer.inspect("example.com/shop-extra:1.0");
    let p = &info["platforms"][0];
    let base_layers = base["platforms"][0]["layers"].as_array().unwrap();
    let layers = p["layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers.len() + 2);
    assert_eq!(
        &layers[..base_layers.len()],
        base_layers.as_slice(),
        "the base's layers come first"
    );
    let apps: Vec<&str> = p["extension"]["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["setup", "shop", "web", "extra"]);
    assert_eq!(
        p["extension"]["launch"]["app_names"],
        serde_json::json!(["setup", "extra"])
    );
    assert_eq!(
        p["labels"]["app.example.com/channel"], "stable",
        "labels are inherited"
    );
    assert_eq!(p["env"], serde_json::json!(["TIER=prod"]));
    // The base's six images are carried (nginx once, though named again).
    let mut images: Vec<&str> = info["containerImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    images.sort();
    let mut expected: Vec<&str> = base["containerImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    expected.sort();
    assert_eq!(images, expected);

    // The new image is complete on its own: pushed and pulled elsewhere.
    let ours = Registry::start();
    let target = format!("{}/shop-extra:1.0", ours.host);
    sealer.ok(&["push", "example.com/shop-extra:1.0", &target]);
    let fresh = Sealer::new();
    fresh.ok(&["pull", &target]);
    assert!(
        fresh.inspect(&target)["containerImages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["present"] == true)
    );
}
