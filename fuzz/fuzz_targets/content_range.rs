//! A chunk's Content-Range header: parsing never panics, and a range that parses is
//! well-formed (start <= end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealer_registry::routes::headers::chunk_range;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_RANGE, value);
    if let Ok(Some(r)) = chunk_range(&headers) {
        assert!(r.start <= r.end, "{r:?}");
    }
});
