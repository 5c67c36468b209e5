//! A pushed manifest body with any Content-Type: parsing never panics, and what parses
//! has a kind that matches what it references.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealer_registry::oci::manifest::{self, ManifestKind};

fuzz_target!(|input: (Option<String>, &[u8])| {
    let (content_type, body) = input;
    if let Ok(m) = manifest::parse(content_type.as_deref(), body) {
        match m.kind {
            ManifestKind::Image => assert!(m.manifests.is_empty()),
            ManifestKind::Index => assert!(m.blobs.is_empty()),
        }
    }
});
