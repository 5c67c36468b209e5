//! `sealer images discover` on the example build context.

use std::path::Path;
use std::process::Command;

use sealer_e2e::*;

use crate::examples;

#[test]
fn images_discover_lists_every_image_of_the_example_with_file_and_line() {
    let out = output(
        Command::new(binary("sealer"))
            .args(["images", "discover", "--json"])
            .arg(examples()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String, u64)> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let p = &i["places"][0];
            let file = p["file"].as_str().unwrap();
            let rel = Path::new(file)
                .strip_prefix(examples())
                .unwrap()
                .display()
                .to_string();
            (
                i["image"].as_str().unwrap().to_string(),
                rel,
                p["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("docker.io/library/alpine:3.19", "manifests/app.yaml", 36),
        ("docker.io/library/busybox:1.36", "manifests/app.yaml", 16),
        // The chart's values: an empty tag is the chart's appVersion.
        (
            "docker.io/library/httpd:2.4.58",
            "charts/web/values.yaml",
            4,
        ),
        ("docker.io/library/nginx:1.25", "manifests/app.yaml", 20),
        // From the chart's helm.sh/images annotation first, then its values.
        (
            "quay.io/prometheus/apache-exporter:v1.0.3",
            "charts/web/Chart.yaml",
            9,
        ),
        ("registry.k8s.io/pause:3.9", "manifests/imageList", 2),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(i, f, l)| (i.to_string(), f.to_string(), *l))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(v["problems"], serde_json::json!([]));

    // --ignore-image in a short form; the table names the first place.
    let out = output(
        Command::new(binary("sealer"))
            .args([
                "images",
                "discover",
                "--ignore-image",
                "registry.k8s.io/pause:3.9",
            ])
            .arg(examples()),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!table.contains("pause"), "{table}");
    assert!(
        table.lines().any(
            |l| l.starts_with("quay.io/prometheus/apache-exporter:v1.0.3")
                && l.contains("charts/web/Chart.yaml:9 (+1 more)")
        ),
        "{table}"
    );
}

#[test]
fn images_discover_fails_naming_each_unusable_reference() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "kind: Pod\nspec:\n  containers:\n    - image: nginx:1.25\n    - image: Bad:Ref!\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("imageList"), "${REGISTRY}/app:1\n").unwrap();
    let out = output(
        Command::new(binary("sealer"))
            .args(["images", "discover"])
            .arg(dir.path()),
    );
    assert!(
        !out.status.success(),
        "unusable references fail the command"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let app = dir.path().join("app.yaml");
    let list = dir.path().join("imageList");
    assert!(
        stderr.contains(&format!(
            "{}:5: \"Bad:Ref!\" is not an image reference",
            app.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:1: templated image reference", list.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 reference(s) cannot be used as images"),
        "{stderr}"
    );
    // What is usable is still listed.
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker.io/library/nginx:1.25"));
}
