//! `sealer save` and `sealer load`: the bundle is an OCI layout tar that skopeo reads,
//! loads back whole into an empty store, plain or zstd; damaged and cut-off bundles fail
//! without leaving anything half-loaded; skopeo's own oci-archive files load.

use std::process::Command;

use sealer_e2e::*;

use crate::*;

/// The example CloudImage built, and saved as `shop.tar` in a temporary folder.
fn saved_example() -> (
    DockerRegistry,
    Sealer,
    String,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let (up, sealer, digest) = built_example();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("shop.tar");
    sealer.ok(&[
        "save",
        "-o",
        bundle.to_str().unwrap(),
        "example.com/shop:1.0",
    ]);
    (up, sealer, digest, dir, bundle)
}

#[test]
fn save_then_load_gives_the_same_images_and_skopeo_reads_the_bundle() {
    let (_up, sealer, digest) = built_example();
    let dir = tempfile::tempdir().unwrap();

    for name in ["shop.tar", "shop.tar.zst"] {
        let bundle = dir.path().join(name);
        let out = sealer.ok(&[
            "save",
            "-o",
            bundle.to_str().unwrap(),
            "example.com/shop:1.0",
        ]);
        assert!(out.contains("saved 1 image(s), 11 blob(s)"), "{out}");
        let zstd_magic = std::fs::read(&bundle).unwrap()[..4] == [0x28, 0xb5, 0x2f, 0xfd];
        assert_eq!(zstd_magic, name.ends_with(".zst"));

        let fresh = Sealer::new();
        let loaded = fresh.ok(&["load", "-i", bundle.to_str().unwrap()]);
        assert_eq!(loaded.trim(), format!("example.com/shop:1.0 {digest}"));
        let info = fresh.inspect("example.com/shop:1.0");
        assert!(
            info["containerImages"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["present"] == true)
        );
        // The carried images get their own names, as after a pull.
        image_row(&fresh.images(), "docker.io/library/nginx", "1.25");
        assert_eq!(fresh.blob_count(), 11);

        // Loading again adds nothing.
        let out = fresh.run(&["load", "-i", bundle.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("0 blob(s) added"));
    }

    // skopeo reads the plain bundle as an oci-archive, by the image's name.
    let ours = Registry::start();
    let bundle = dir.path().join("shop.tar");
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!(
            "oci-archive:{}:example.com/shop:1.0",
            bundle.display()
        ))
        .arg(format!("docker://{}/shop:1.0", ours.host)));
    let pulled = Sealer::new();
    assert_eq!(
        digest_of_line(&pulled.ok(&["pull", &format!("{}/shop:1.0", ours.host)])),
        digest
    );

    // What skopeo writes loads too.
    let sko = dir.path().join("skopeo.tar");
    run(Command::new(require("skopeo"))
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:app", test_image_layout().display()))
        .arg(format!("oci-archive:{}:team/app:2", sko.display())));
    let other = Sealer::new();
    let out = other.ok(&["load", "-i", sko.to_str().unwrap()]);
    assert!(out.starts_with("docker.io/team/app:2 sha256:"), "{out}");
}

#[test]
fn damaged_or_cut_bundles_fail_cleanly_and_a_rerun_finishes() {
    let (_up, _, _, dir, bundle) = saved_example();

    // One byte changed in the largest blob: named as damaged, nothing tagged.
    let damaged = dir.path().join("damaged.tar");
    run(Command::new(require("python3")).arg("-c").arg(format!(
        r#"
import tarfile, io
src = tarfile.open("{}")
members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
big = max((m for m, d in members if d is not None), key=lambda m: m.size)
with tarfile.open("{}", "w") as out:
    for m, d in members:
        if m is big:
            d = bytes([d[0] ^ 1]) + d[1:]
        out.addfile(m, io.BytesIO(d) if d is not None else None)
"#,
        bundle.display(),
        damaged.display()
    )));
    let fresh = Sealer::new();
    let err = fresh.fails(&["load", "-i", damaged.to_str().unwrap()]);
    assert!(err.contains("is damaged"), "{err}");
    assert!(
        fresh.images().is_empty(),
        "nothing is tagged from a damaged bundle"
    );

    // Cut in the middle (a copy that broke off): fails, nothing tagged; the full
    // bundle then loads, reusing the blobs already stored.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let err = fresh.fails(&["load", "-i", cut.to_str().unwrap()]);
    assert!(!err.is_empty());
    assert!(
        fresh.images().is_empty(),
        "nothing is tagged from a cut bundle"
    );
    let out = fresh.run(&["load", "-i", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains(" 0 already present"), "{stderr}");
    image_row(&fresh.images(), "example.com/shop", "1.0");
}

#[test]
fn a_delta_holds_only_what_the_other_side_lacks_and_needs_it_there() {
    let up = example_upstream();
    let sealer = Sealer::new();
    let flags = upstream_flags(&up.host);
    sealer.build("example.com/shop:1.0", examples(), &flags);
    // Version 1.1 changes one file: one layer differs.
    let ctx = tempfile::tempdir().unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(examples())
        .arg(ctx.path().join("ex")));
    let ex = ctx.path().join("ex");
    std::fs::write(ex.join("install.sh"), "#!/bin/sh\necho v1.1\n").unwrap();
    let v11 = sealer.build("example.com/shop:1.1", &ex, &flags);

    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("v1.0.tar");
    sealer.ok(&["save", "-o", full.to_str().unwrap(), "example.com/shop:1.0"]);

    // The target side: 1.0 loaded; it says what it has.
    let target = Sealer::new();
    target.ok(&["load", "-i", full.to_str().unwrap()]);
    let have = dir.path().join("have.txt");
    std::fs::write(&have, target.ok(&["store", "have"])).unwrap();
    assert_eq!(std::fs::read_to_string(&have).unwrap().lines().count(), 11);

    // The plan and the delta agree, whichever way OLD is given.
    let delta = dir.path().join("delta.tar");
    let plan = sealer.ok(&[
        "save",
        "--dry-run",
        "--since",
        have.to_str().unwrap(),
        "-o",
        delta.to_str().unwrap(),
        "example.com/shop:1.1",
    ]);
    // The three manifests, the new config and the one changed layer.
    assert!(
        plan.starts_with("would save 1 image(s), 5 blob(s)"),
        "{plan}"
    );
    assert!(!delta.exists(), "a dry run writes nothing");
    for old in [
        full.to_str().unwrap(),
        have.to_str().unwrap(),
        "example.com/shop:1.0",
    ] {
        let out = sealer.ok(&[
            "save",
            "--since",
            old,
            "-o",
            delta.to_str().unwrap(),
            "example.com/shop:1.1",
        ]);
        assert!(out.contains("left out"), "{out}");
    }
    let size = std::fs::metadata(&delta).unwrap().len();
    assert!(size < 64 * 1024, "the delta is small: {size} bytes");

    // Loaded where 1.0 is: complete. Loaded into an empty store: refused, naming what
    // is missing, and nothing tagged.
    let out = target.ok(&["load", "-i", delta.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("example.com/shop:1.1 {v11}"));
    let empty = Sealer::new();
    let err = empty.fails(&["load", "-i", delta.to_str().unwrap()]);
    assert!(
        err.contains("the bundle lacks blobs") && err.contains("example.com/shop:1.1"),
        "{err}"
    );
    assert!(empty.images().is_empty());
}

#[test]
fn a_bundle_split_into_parts_loads_from_the_parts_in_any_order() {
    let (_up, sealer, digest) = built_example();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shop.tar");
    let listing = sealer.ok(&[
        "save",
        "--split-size",
        "512K",
        "-o",
        out.to_str().unwrap(),
        "example.com/shop:1.0",
    ]);
    let parts: Vec<String> = listing
        .lines()
        .skip(1)
        .map(|l| dir.path().join(l.trim()).display().to_string())
        .collect();
    assert_eq!(parts.len(), 3, "1.3 MiB in 512 KiB parts: {listing}");
    assert!(!out.exists(), "only parts are written");
    // The checksum file is sha256sum's format.
    run(Command::new("sha256sum")
        .current_dir(dir.path())
        .args(["-c", "shop.tar.sha256"]));

    let fresh = Sealer::new();
    let mut args = vec!["load".to_string(), "-i".into()];
    args.extend(parts.iter().rev().cloned());
    assert_eq!(
        fresh.ok(&args).trim(),
        format!("example.com/shop:1.0 {digest}")
    );

    // A missing part and a damaged part are named.
    let other = Sealer::new();
    let err = other.fails(&["load", "-i", &parts[0], &parts[2]]);
    assert!(err.contains("part shop.tar.001 is missing"), "{err}");
    let mut bytes = std::fs::read(&parts[1]).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&parts[1], bytes).unwrap();
    let err = other.fails(&[vec!["load".to_string(), "-i".into()], parts.clone()].concat());
    assert!(
        err.contains("shop.tar.001") && err.contains("damaged"),
        "{err}"
    );
    assert!(other.images().is_empty());
}

#[test]
fn docker_save_archives_load_and_run_again_in_dockerd() {
    let reg = Registry::start();
    skopeo_push(&reg.host, "test/app:1", None);
    let ctrd = Containerd::start();
    let dockerd = Dockerd::start(&ctrd, &format!("http://{}", reg.host));
    let pulled = format!("{}/test/app:1", reg.host);
    run(&mut dockerd.docker_cmd(&["pull", "--quiet", &pulled]));
    run(&mut dockerd.docker_cmd(&["tag", &pulled, "team/web:2"]));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("docker.tar");
    run(&mut dockerd.docker_cmd(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        &pulled,
        "team/web:2",
    ]));

    let sealer = Sealer::new();
    let out = sealer.ok(&["load", "-i", archive.to_str().unwrap()]);
    let names: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names.len(), 2, "{out}");
    assert!(names.contains(&"docker.io/team/web:2"), "{out}");
    assert!(names.contains(&pulled.as_str()), "{out}");
    image_row(&sealer.images(), "docker.io/team/web", "2");

    // Pushed back to a registry, the loaded image is one dockerd pulls (checking every
    // layer against its config) and runs, once it has forgotten its own copy.
    let other = Registry::start();
    let target = format!("{}/loaded/web:2", other.host);
    sealer.ok(&["tag", "docker.io/team/web:2", &target]);
    sealer.ok(&["push", &target]);
    run(&mut dockerd.docker_cmd(&["rmi", &pulled, "team/web:2"]));
    run(&mut dockerd.docker_cmd(&["pull", "--quiet", &target]));
    let ran = run(&mut dockerd.docker_cmd(&["run", "--rm", "--network", "none", &target]));
    assert!(ran.contains("hello from sealer test image"), "{ran}");

    // A layer damaged in the archive is named; nothing is tagged.
    let damaged = dir.path().join("damaged.tar");
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = data_offset(&bytes, |p, _| p.ends_with("layer.tar"));
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let fresh = Sealer::new();
    let err = fresh.fails(&["load", "-i", damaged.to_str().unwrap()]);
    assert!(err.contains("layer.tar is damaged"), "{err}");
    assert!(fresh.images().is_empty());
}

/// An offset inside the content of the first regular file of a tar for which `pick`
/// (given its path and size) is true.
fn data_offset(tar_bytes: &[u8], pick: impl Fn(&std::path::Path, u64) -> bool) -> usize {
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_file() && pick(&entry.path().unwrap(), entry.size()) {
            return entry.raw_file_position() as usize + 100;
        }
    }
    panic!("no such file in the archive");
}

#[test]
fn serve_bundle_serves_the_images_in_place_alone_or_over_a_store() {
    let (_up, sealer, digest, dir, bundle) = saved_example();

    // Alone: read-only, every image by its name, the carried ones too.
    let served = Registry::serve_bundles(&[&bundle]);
    let pulled = Sealer::new();
    let out = pulled.ok(&["pull", &format!("{}/example.com/shop:1.0", served.host)]);
    assert_eq!(digest_of_line(&out), digest);
    assert_eq!(pulled.blob_count(), 11);
    let nginx = run(Command::new(require("skopeo"))
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!(
            "docker://{}/docker.io/library/nginx:1.25",
            served.host
        )));
    assert!(nginx.contains("schemaVersion"), "{nginx}");
    // oras-py walks the whole graph and checks every blob's digest.
    let report = run(Command::new(require("python3"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/builder/oras_graph.py"
        ))
        .arg(&served.host)
        .arg("example.com/shop:1.0"));
    assert!(report.contains("GRAPH OK 8 8"), "{report}");
    assert_eq!(report.matches("IMAGE ").count(), 6, "{report}");
    // A push is refused with the spec's UNSUPPORTED and a reason.
    let push = Command::new(require("skopeo"))
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:app", test_image_layout().display()))
        .arg(format!("docker://{}/team/app:1", served.host))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&push.stderr);
    assert!(!push.status.success());
    assert!(err.contains("read-only"), "{err}");

    // Over a store: both are served, and pushes go to the store.
    let both = Registry::start_with(&["--bundle", bundle.to_str().unwrap()]);
    skopeo_push(&both.host, "team/app:1", None);
    let catalog = run(Command::new(require("skopeo"))
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{}/team/app", both.host)));
    assert!(catalog.contains("\"1\""), "{catalog}");
    let other = Sealer::new();
    let out = other.ok(&["pull", &format!("{}/example.com/shop:1.0", both.host)]);
    assert_eq!(digest_of_line(&out), digest);

    // A compressed bundle cannot be served in place: a clear error at start.
    let zst = dir.path().join("shop.tar.zst");
    sealer.ok(&["save", "-o", zst.to_str().unwrap(), "example.com/shop:1.0"]);
    let refused = Command::new(binary("sealer-registry"))
        .args(["serve", "--addr", "127.0.0.1:0", "--bundle"])
        .arg(&zst)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("compressed") && err.contains("zstd -d"),
        "{err}"
    );

    // A damaged blob is found by the background verification and no longer served.
    let damaged = dir.path().join("damaged.tar");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = data_offset(&bytes, |p, size| p.starts_with("blobs/") && size > 4096);
    bytes[at] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let served = Registry::serve_bundles(&[&damaged]);
    served.log_where("the verification finding the damaged blob", |log| {
        log.contains("bundles verified") && log.contains("damaged=1")
    });
    let err = Sealer::new().fails(&["pull", &format!("{}/example.com/shop:1.0", served.host)]);
    assert!(err.contains("the registry does not have it"), "{err}");
}
