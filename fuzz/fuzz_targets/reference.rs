//! A reference (tag or digest) from a URL: parsing never panics, and whatever parses
//! prints back as the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealer_registry::oci::reference::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(d) = s.parse::<sealer_registry::oci::Digest>() {
        // A digest that parses names a path: only lowercase hex after the algorithm.
        assert!(
            d.hex()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
});
