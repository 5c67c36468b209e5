//! Kubefile steps that do more than copy (RUN, ADD of archives), `--dry-run`, and
//! multi-platform builds with sparse container-image indexes.

use std::process::Command;

use sealer_e2e::*;
use serde_json::json;

use crate::*;

#[test]
fn run_and_add_make_layers_and_their_files_are_scanned_for_images() {
    let up = example_upstream();
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::create_dir_all(c.join("rootfs/bin")).unwrap();
    std::fs::write(c.join("rootfs/bin/tool"), "#!/bin/sh\necho from-tool\n").unwrap();
    run(Command::new("chmod")
        .arg("755")
        .arg(c.join("rootfs/bin/tool")));
    std::fs::create_dir_all(c.join("arc/etc")).unwrap();
    std::fs::write(c.join("arc/etc/old.conf"), "old\n").unwrap();
    std::fs::write(c.join("arc/etc/pod.yaml"), "image: nginx:1.25\n").unwrap();
    run(Command::new("tar")
        .arg("czf")
        .arg(c.join("bundle.tar.gz"))
        .arg("-C")
        .arg(c.join("arc"))
        .arg("etc"));
    std::fs::write(
        c.join("Kubefile"),
        "FROM scratch\n\
         ARG WHO=world\n\
         ENV GREETING=hello\n\
         COPY rootfs .\n\
         ADD bundle.tar.gz /\n\
         RUN echo \"$GREETING $WHO\" > etc/greeting && rm etc/old.conf && mkdir -p manifests \\\n  \
           && echo 'image: registry.k8s.io/pause:3.9' > manifests/gen.yaml\n\
         RUN tool > etc/tool.out\n\
         CMDS [\"kubectl get nodes\"]\n",
    )
    .unwrap();
    let flags = upstream_flags(&up.host);

    // --dry-run lists the images with where each comes from, and builds nothing.
    let listed = sealer.ok(&[
        vec![
            "build".to_string(),
            "-t".into(),
            "runner:1".into(),
            "--dry-run".into(),
            "--json".into(),
        ],
        flags.clone(),
        vec![c.display().to_string()],
    ]
    .concat());
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let places: Vec<(String, String)> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["image"].as_str().unwrap().to_string(),
                i["places"][0]["file"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let kubefile = c.join("Kubefile");
    assert_eq!(
        places,
        [(
            "docker.io/library/nginx:1.25".to_string(),
            format!("{}!/etc/pod.yaml", c.join("bundle.tar.gz").display())
        )],
        "RUN is not run, so only what the context holds is listed"
    );
    assert!(sealer.images().is_empty(), "a dry run stores nothing");

    let digest = sealer.build("runner:1", c, &flags);
    let info = sealer.inspect("runner:1");
    let p = &info["platforms"][0];
    assert_eq!(p["env"], json!(["GREETING=hello"]));
    assert_eq!(p["launchCommands"], json!(["kubectl get nodes"]));
    assert_eq!(info["containerImages"].as_array().unwrap().len(), 2);

    // The layers hold what each step made: RUN's changes with a whiteout for the
    // removed file, and its PATH had the image's bin/.
    let layers: Vec<String> = p["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 4);
    let list = |d: &str| {
        let hex = &d[7..];
        let blob = sealer
            .root()
            .join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        let out = run(Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc {} | tar tf -", blob.display())));
        out.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(list(&layers[0]), ["bin", "bin/tool"]);
    assert_eq!(list(&layers[1]), ["etc", "etc/old.conf", "etc/pod.yaml"]);
    assert_eq!(
        list(&layers[2]),
        [
            "etc/.wh.old.conf",
            "etc/greeting",
            "manifests",
            "manifests/gen.yaml"
        ]
    );
    assert_eq!(list(&layers[3]), ["etc/tool.out"]);
    let read = |d: &str, file: &str| {
        let hex = &d[7..];
        let blob = sealer
            .root()
            .join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        run(Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc {} | tar -xOf - {file}", blob.display())))
    };
    assert_eq!(
        read(&layers[2], "etc/greeting"),
        "hello world\n",
        "RUN sees ENV and ARG"
    );
    assert_eq!(
        read(&layers[3], "etc/tool.out"),
        "from-tool\n",
        "RUN finds the image's bin/"
    );

    // A rebuild runs nothing again, and still carries what RUN's files named.
    let out = sealer.run(
        &[
            vec!["build".to_string(), "-t".into(), "runner:1".into()],
            flags.clone(),
            vec![c.display().to_string()],
        ]
        .concat(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("4 layer(s), 4 from the cache"), "{stderr}");
    assert!(stderr.contains("2 container image(s)"), "{stderr}");
    assert_eq!(
        digest_of_line(&String::from_utf8_lossy(&out.stdout)),
        digest
    );

    // A failing RUN names the Kubefile line.
    std::fs::write(&kubefile, "FROM scratch\nRUN exit 3\n").unwrap();
    let err = sealer.fails(&["build", "-t", "bad:1", c.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:2: RUN exit 3 failed", kubefile.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn platforms_fetch_only_their_manifests_and_keep_the_index_byte_exact() {
    // A two-platform image on an upstream (our registry).
    let up = Registry::start();
    let amd = push_image(&up, "library/multi", "amd64", 1, 4096).await;
    let arm = push_image(&up, "library/multi", "arm64", 1, 4096).await;
    let index = index_manifest(
        OCI_INDEX,
        vec![
            (descriptor(OCI_MANIFEST, &amd.manifest), "amd64"),
            (descriptor(OCI_MANIFEST, &arm.manifest), "arm64"),
        ],
        json!({}),
    );
    let resp = put_manifest(&up, "library/multi", "1", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), 201);
    let index_digest = sha256(&index);

    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nCOPY app.yaml manifests/\n",
    )
    .unwrap();
    std::fs::write(ctx.path().join("app.yaml"), "image: multi:1\n").unwrap();
    let flags = vec![
        "--upstream".to_string(),
        format!("docker.io=http://{}", up.host),
    ];

    let sealer = Sealer::new();
    let ctx_path = ctx.path().to_path_buf();
    let s = &sealer;
    let digest = tokio::task::block_in_place(|| {
        s.build(
            "app:1",
            &ctx_path,
            &[
                flags.clone(),
                vec!["--platform".into(), "linux/arm64,linux/amd64".into()],
            ]
            .concat(),
        )
    });
    let info = tokio::task::block_in_place(|| sealer.inspect("app:1"));
    let platforms: Vec<&str> = info["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/arm64", "linux/amd64"]);
    assert_eq!(info["containerImages"][0]["digest"], index_digest.as_str());

    // One platform: the upstream index is stored byte-exact, only arm64's manifest and
    // blobs are fetched.
    let one = Sealer::new();
    tokio::task::block_in_place(|| {
        one.build(
            "app:1",
            &ctx_path,
            &[
                flags.clone(),
                vec!["--platform".into(), "linux/arm64".into()],
            ]
            .concat(),
        )
    });
    let stored = std::fs::read(one.root().join(format!(
        "blobs/sha256/{}/{}",
        &index_digest[7..9],
        &index_digest[7..]
    )))
    .unwrap();
    assert_eq!(stored, index);
    let blob = |d: &str| {
        one.root()
            .join(format!("blobs/sha256/{}/{}", &d[7..9], &d[7..]))
            .exists()
    };
    assert!(blob(&arm.digest) && blob(&sha256(&arm.layers[0])));
    assert!(!blob(&amd.digest) && !blob(&sha256(&amd.layers[0])));

    // Our registry takes the sparse index; docker-registry requires every manifest an
    // index lists, and the error says why and what to do.
    let ours = Registry::start();
    let theirs = DockerRegistry::start(UpstreamOptions::default());
    tokio::task::block_in_place(|| {
        one.ok(&["push", "app:1", &format!("{}/app:1", ours.host)]);
        let err = one.fails(&["push", "app:1", &format!("{}/app:1", theirs.host)]);
        assert!(err.contains("only some platforms were fetched"), "{err}");
        // Built without --platform, the container images come whole and push anywhere.
        let whole = Sealer::new();
        let d = whole.build("app:1", &ctx_path, &flags);
        assert_ne!(d, digest);
        whole.ok(&["push", "app:1", &format!("{}/app:1", theirs.host)]);
    });
}

#[test]
fn app_sources_over_http_are_downloaded_typed_and_scanned() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("deploy.yaml"),
        "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - image: docker.io/library/nginx:1.25\n",
    )
    .unwrap();
    let cdn = Cdn::start(files.path());
    let up = example_upstream();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        format!(
            "FROM scratch\nAPP remote {}/deploy.yaml\nAPP missing {}/nothere.yaml\n",
            cdn.base, cdn.base
        ),
    )
    .unwrap();
    let sealer = Sealer::new();
    let mut args = vec!["build".to_string(), "-t".into(), "remote:1".into()];
    args.extend(upstream_flags(&up.host));
    args.push(ctx.path().display().to_string());
    // A download that fails names the URL and the Kubefile line.
    let err = sealer.fails(&args);
    assert!(
        err.contains(&format!("{}:3", ctx.path().join("Kubefile").display()))
            && err.contains("nothere.yaml")
            && err.contains("404"),
        "{err}"
    );

    std::fs::write(
        ctx.path().join("Kubefile"),
        format!(
            "FROM scratch\nAPP remote {}/deploy.yaml\nLAUNCH [\"remote\"]\n",
            cdn.base
        ),
    )
    .unwrap();
    sealer.ok(&args);
    let info = sealer.inspect("remote:1");
    let p = &info["platforms"][0];
    assert_eq!(p["extension"]["applications"][0]["type"], "kube");
    assert_eq!(
        p["launchCommands"],
        json!(["kubectl apply -f 'application/apps/remote/deploy.yaml'"])
    );
    assert_eq!(
        info["containerImages"][0]["image"],
        "docker.io/library/nginx:1.25"
    );
    assert_eq!(info["containerImages"][0]["appName"], "remote");
}

#[test]
fn a_dry_run_runs_nothing_downloads_nothing_and_writes_nothing() {
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // A server that counts who calls it.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let marker = c.join("ran");
    std::fs::write(c.join("pod.yaml"), "image: nginx:1.25\n").unwrap();
    std::fs::write(
        c.join("Kubefile"),
        format!(
            "FROM scratch\nCOPY pod.yaml manifests/\nRUN touch {}\n\
             APP remote http://127.0.0.1:{port}/deploy.yaml\nLAUNCH [\"remote\"]\n",
            marker.display()
        ),
    )
    .unwrap();
    let out = sealer.run(&["build", "-t", "t:1", "--dry-run", c.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("docker.io/library/nginx:1.25"), "{text}");
    assert!(text.contains("not run in a dry run"), "{text}");
    assert!(!marker.exists(), "RUN ran");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "APP was downloaded"
    );
    let stored: Vec<String> = walk(&sealer.root())
        .into_iter()
        .filter(|p| p.contains("/blobs/") || p.ends_with("layer-cache.json"))
        .collect();
    assert!(stored.is_empty(), "a dry run wrote {stored:?}");
}

/// Every file under `dir`, as paths.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
