//! The example CloudImage (`examples/`) and a local registry standing in for the
//! registries its images come from.

use std::path::Path;

use crate::tools::skopeo_push;
use crate::upstream::{DockerRegistry, UpstreamOptions};

pub fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

/// Every image `examples/` names, as the local upstream holds them (`docker.io`'s under
/// `library/`).
pub const EXAMPLE_IMAGES: [&str; 6] = [
    "library/alpine:3.19",
    "library/busybox:1.36",
    "library/httpd:2.4.58",
    "library/nginx:1.25",
    "prometheus/apache-exporter:v1.0.3",
    "pause:3.9",
];

/// A `docker-registry` standing in for docker.io, quay.io and registry.k8s.io, holding
/// the example's images.
pub fn example_upstream() -> DockerRegistry {
    let up = DockerRegistry::start(UpstreamOptions::default());
    for image in EXAMPLE_IMAGES {
        skopeo_push(&up.host, image, None);
    }
    up
}

/// `--upstream` flags sending the example's registries to `host`.
pub fn upstream_flags(host: &str) -> Vec<String> {
    ["docker.io", "quay.io", "registry.k8s.io"]
        .iter()
        .flat_map(|r| ["--upstream".to_string(), format!("{r}=http://{host}")])
        .collect()
}
