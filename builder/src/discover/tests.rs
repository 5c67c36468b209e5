//! Unit tests of image discovery: files, charts, manifests and the lists they make.
use super::*;

/// Every image found, with the line of its first place.
fn lines(d: &Discovery) -> Vec<(String, usize)> {
    d.images
        .iter()
        .map(|(image, places)| (image.clone(), places[0].line))
        .collect()
}

fn pairs(v: &[(&str, usize)]) -> Vec<(String, usize)> {
    let mut v: Vec<_> = v.iter().map(|(i, l)| (i.to_string(), *l)).collect();
    v.sort();
    v
}

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: busybox:1.36
      containers:
        - name: web
          image: "nginx:1.25"
        - name: sidecar
          image: docker.io/envoyproxy/envoy:v1.28.0
---
apiVersion: apps/v1
kind: StatefulSet
spec:
  template:
    spec:
      containers:
      - image: registry.k8s.io/etcd:3.5.9-0
---
apiVersion: apps/v1
kind: DaemonSet
spec:
  template:
    spec:
      containers: [{name: agent, image: 'quay.io/cilium/cilium:v1.14.2'}]
---
apiVersion: apps/v1
kind: ReplicaSet
spec:
  template:
    spec:
      containers:
        - image: localhost:5000/team/rs@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
---
apiVersion: batch/v1
kind: Job
spec:
  template:
    spec:
      containers:
        - image: alpine:3.19
---
apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - image: ghcr.io/org/backup:2.0
---
apiVersion: v1
kind: Pod
spec:
  containers:
    - image: nginx:1.25
  ephemeralContainers:
    - image: nicolaka/netshoot:v0.11
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    spec:
      containers:
        - image: k8s.gcr.io/pause:3.9
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
spec:
  image: quay.io/prometheus/prometheus:v2.45.0
  version: v2.45.0
"#;

#[test]
fn every_workload_kind_and_custom_resources() {
    let d = scan_yaml(Path::new("manifests/app.yaml"), WORKLOADS, None);
    assert_eq!(d.problems, []);
    assert_eq!(
        lines(&d),
        pairs(&[
            ("docker.io/library/busybox:1.36", 9),
            ("docker.io/library/nginx:1.25", 12),
            ("docker.io/envoyproxy/envoy:v1.28.0", 14),
            ("registry.k8s.io/etcd:3.5.9-0", 22),
            ("quay.io/cilium/cilium:v1.14.2", 29),
            (
                "localhost:5000/team/rs@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                37
            ),
            ("docker.io/library/alpine:3.19", 45),
            ("ghcr.io/org/backup:2.0", 55),
            ("docker.io/nicolaka/netshoot:v0.11", 63),
            ("k8s.gcr.io/pause:3.9", 72),
            ("quay.io/prometheus/prometheus:v2.45.0", 77),
        ])
    );
    // nginx:1.25 is named twice: both places are kept.
    let places: Vec<_> = d.images["docker.io/library/nginx:1.25"]
        .iter()
        .map(|p| p.line)
        .collect();
    assert_eq!(places, [12, 61]);
}

#[test]
fn bad_and_templated_references_are_problems_with_their_line() {
    let d = scan_yaml(
        Path::new("m.yaml"),
        "spec:\n  containers:\n    - image: Nginx:Latest!\n    - image: \"{{ .Values.image }}\"\n    - image: ''\n",
        None,
    );
    assert!(d.images.is_empty());
    let problems: Vec<_> = d.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("m.yaml:3: \"Nginx:Latest!\" is not an image reference"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("m.yaml:4: templated image reference"),
        "{problems:?}"
    );
    let broken = scan_yaml(Path::new("bad.yaml"), "a: [b\nc: d\n", None);
    assert!(
        broken.problems[0].to_string().contains("not valid YAML"),
        "{:?}",
        broken.problems
    );
}

#[test]
fn image_lists_skip_comments_and_blank_lines() {
    let d = scan_image_list(
        Path::new("imageList"),
        "# base images\nnginx:1.25\n\n  registry.k8s.io/pause:3.9  # the sandbox\nbad image\n",
    );
    assert_eq!(
        lines(&d),
        pairs(&[
            ("docker.io/library/nginx:1.25", 2),
            ("registry.k8s.io/pause:3.9", 4)
        ])
    );
    assert_eq!(d.problems.len(), 1);
    assert_eq!(d.problems[0].place.line, 5);
}

/// A chart as charts are usually written, plus manifests and an imageList beside it.
fn write_context(root: &Path) {
    let chart = root.join("charts/mysql");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        r#"apiVersion: v2
name: mysql
version: 1.0.0
appVersion: "8.0.35"
annotations:
  helm.sh/images: |
    - name: exporter
      image: quay.io/prometheus/mysqld-exporter:v0.15.0
  artifacthub.io/images: |
    - name: mysql
      image: docker.io/bitnami/mysql:8.0.35
"#,
    )
    .unwrap();
    std::fs::write(
        chart.join("values.yaml"),
        r#"image:
  registry: docker.io
  repository: bitnami/mysql
  tag: ""
metrics:
  image:
    registry: quay.io
    repository: prometheus/mysqld-exporter
    tag: v0.15.0
volumePermissions:
  image:
    repository: bitnami/os-shell
    digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
controller:
  repository: registry.k8s.io/ingress-nginx/controller
  tag: "1.20"
sidecar:
  image: busybox:1.36
"#,
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/statefulset.yaml"),
        r#"apiVersion: apps/v1
kind: StatefulSet
spec:
  template:
    spec:
      containers:
        - name: mysql
          image: {{ include "mysql.image" . }}
        - name: helper
          image: "registry.k8s.io/busybox:1.27"   # a literal
{{- if .Values.extra }}
        - image: 'alpine:3.19'
{{- end }}
"#,
    )
    .unwrap();
    std::fs::create_dir_all(root.join("manifests")).unwrap();
    std::fs::write(root.join("manifests/app.yaml"), WORKLOADS).unwrap();
    std::fs::write(root.join("manifests/imageList"), "calico/node:v3.26.1\n").unwrap();
    std::fs::write(root.join("README.md"), "image: not-scanned:1\n").unwrap();
}

#[test]
fn a_build_context_with_a_chart_manifests_and_an_image_list() {
    let dir = tempfile::tempdir().unwrap();
    write_context(dir.path());
    let d = scan_dir(dir.path()).unwrap();
    assert_eq!(d.problems, [], "{:?}", d.problems);
    let rel = |image: &str| -> Vec<(String, usize)> {
        d.images[image]
            .iter()
            .map(|p| {
                (
                    p.file
                        .strip_prefix(dir.path())
                        .unwrap()
                        .display()
                        .to_string(),
                    p.line,
                )
            })
            .collect()
    };
    // Values: an empty tag takes the chart's appVersion; annotations count too.
    assert_eq!(
        rel("docker.io/bitnami/mysql:8.0.35"),
        [
            ("charts/mysql/Chart.yaml".to_string(), 11),
            ("charts/mysql/values.yaml".to_string(), 3)
        ]
    );
    assert_eq!(
        rel("quay.io/prometheus/mysqld-exporter:v0.15.0"),
        [
            ("charts/mysql/Chart.yaml".to_string(), 8),
            ("charts/mysql/values.yaml".to_string(), 8)
        ]
    );
    assert_eq!(
        rel(
            "docker.io/bitnami/os-shell@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        ),
        [("charts/mysql/values.yaml".to_string(), 12)]
    );
    // `tag: "1.20"` stays the string it is written as.
    assert_eq!(
        rel("registry.k8s.io/ingress-nginx/controller:1.20"),
        [("charts/mysql/values.yaml".to_string(), 15)]
    );
    // Template literals; the values-driven image is found through values.yaml.
    assert_eq!(
        rel("registry.k8s.io/busybox:1.27"),
        [("charts/mysql/templates/statefulset.yaml".to_string(), 10)]
    );
    assert_eq!(
        rel("docker.io/library/alpine:3.19"),
        [
            ("charts/mysql/templates/statefulset.yaml".to_string(), 12),
            ("manifests/app.yaml".to_string(), 45)
        ]
    );
    assert_eq!(
        rel("docker.io/calico/node:v3.26.1"),
        [("manifests/imageList".to_string(), 1)]
    );
    assert!(!d.images.keys().any(|i| i.contains("not-scanned")));
    assert_eq!(d.images.len(), 17, "{:#?}", d.images.keys());
}

#[test]
fn ignoring_images_by_any_name() {
    let mut d = scan_image_list(Path::new("imageList"), "nginx\nbusybox:1.36\n");
    d.ignore(&[
        "docker.io/library/nginx:latest".into(),
        "busybox:1.36".into(),
    ])
    .unwrap();
    assert!(d.images.is_empty());
    assert!(
        d.ignore(&["Bad!".into()])
            .unwrap_err()
            .contains("--ignore-image")
    );
}

#[test]
fn aliases_and_merge_keys_are_followed() {
    let text = r#"base: &img registry.k8s.io/pause:3.9
sidecar: &sidecar {repository: envoyproxy/envoy, tag: v1.28.0}
spec:
  containers:
    - image: *img
    - <<: *sidecar
      tag: v1.29.0
proxy: *sidecar
"#;
    let found = scan_yaml(Path::new("values.yaml"), text, None);
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(
        lines(&found),
        pairs(&[
            ("docker.io/envoyproxy/envoy:v1.28.0", 2),
            ("docker.io/envoyproxy/envoy:v1.29.0", 2),
            ("registry.k8s.io/pause:3.9", 1),
        ])
    );
    // A bare scalar alias is an image once it stands under `image:`.
    let text = "x: &img nginx:1.25\nspec:\n  image: *img\n";
    let found = scan_yaml(Path::new("a.yaml"), text, None);
    assert_eq!(lines(&found), pairs(&[("docker.io/library/nginx:1.25", 1)]));
}

#[test]
fn an_alias_bomb_is_a_problem_not_gigabytes() {
    // Nine levels of ten aliases each: 10^9 copies of "lol" if expanded.
    let mut text = String::from("a0: &a0 [image: nginx:1]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{p}"); 10].join(",")
        ));
    }
    let found = scan_yaml(Path::new("bomb.yaml"), &text, None);
    assert_eq!(found.problems.len(), 1, "{:?}", found.problems);
    assert!(
        found.problems[0]
            .message
            .contains("aliases expand the file beyond"),
        "{}",
        found.problems[0]
    );
}

#[test]
fn a_file_that_is_not_utf8_is_a_problem_naming_it() {
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("ok.yaml"), "image: nginx:1.25\n").unwrap();
    std::fs::write(root.path().join("latin1.yaml"), b"a: b\nname: caf\xe9\n").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd\n\xff.yaml");
    std::fs::write(root.path().join(odd), "image: busybox:1.36\n").unwrap();
    let found = scan_dir(root.path()).unwrap();
    // Files with odd names are still read; their names print escaped.
    assert_eq!(found.images.len(), 2, "{:?}", found.images);
    let busybox = &found.images["docker.io/library/busybox:1.36"][0];
    assert!(busybox.to_string().ends_with("odd\\n\\xff.yaml:1"));
    assert_eq!(found.problems.len(), 1);
    let problem = found.problems[0].to_string();
    assert!(
        problem.ends_with("latin1.yaml:2: not UTF-8 text; its images cannot be read"),
        "{problem}"
    );
    let json = serde_json::to_string(&found).unwrap();
    assert!(json.contains(r#"odd\\n\\xff.yaml"#), "{json}");
}
