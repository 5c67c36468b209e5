//! A repository name from a URL: parsing never panics, and a name that parses can never
//! become a path outside its place (no empty, `.`, `..` or `_` component, no separator
//! other than `/`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealer_registry::oci::RepoName;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = RepoName::parse(s) {
        assert_eq!(name.as_str(), s);
        for c in name.components() {
            assert!(
                !c.is_empty() && c != "." && c != ".." && !c.starts_with('_'),
                "{s:?}"
            );
            assert!(!c.contains('\\') && !c.contains('\0'), "{s:?}");
        }
    }
});
