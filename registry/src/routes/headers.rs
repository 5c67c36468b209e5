//! Parsing the request headers and query parameters the API uses.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::services::manifests::Accept;
use crate::services::uploads::ChunkRange;
use crate::storage::ByteRange;

pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// The chunk size a store keeps uploads in best (the spec's chunked upload).
pub const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");

/// What every response says about its content: browsers must take the declared type as
/// it is (`nosniff`), and nothing the registry serves may run as a page: blobs and
/// manifests are whatever pushers sent, so a browser opening one gets an inert,
/// sandboxed document with no scripts, styles, frames or requests.
pub async fn content_safety(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    response
}

/// A header value from text we produced (digests, paths of validated names, numbers).
pub fn value(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The query string's parameters, decoded, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// All `Accept` headers merged: clients such as dockerd send one media type per header
/// line, others one comma-separated line. Parameters (`;q=...`) are dropped.
pub fn accept(headers: &HeaderMap) -> Accept {
    Accept(
        headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// How a `Range` request applies to a blob of a given size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No range, or one we ignore (several ranges, bad syntax): send everything.
    Whole,
    Partial(ByteRange),
    Unsatisfiable,
}

/// Interprets `Range: bytes=a-b | a- | -n` (RFC 9110 §14) against `size`.
pub fn range(headers: &HeaderMap, size: u64) -> RangeRequest {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let parse = |s: &str| -> Option<Option<u64>> {
        let s = s.trim();
        if s.is_empty() {
            Some(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok().map(Some)
        } else {
            None
        }
    };
    let (Some(first), Some(last)) = (parse(first), parse(last)) else {
        return RangeRequest::Whole;
    };
    match (first, last) {
        (Some(a), last) => {
            if let Some(b) = last {
                if b < a {
                    return RangeRequest::Whole;
                }
            }
            if a >= size {
                return RangeRequest::Unsatisfiable;
            }
            let end = last.map_or(size - 1, |b| b.min(size - 1));
            RangeRequest::Partial(ByteRange {
                offset: a,
                len: end - a + 1,
            })
        }
        (None, Some(suffix)) => {
            if suffix == 0 || size == 0 {
                return RangeRequest::Unsatisfiable;
            }
            let len = suffix.min(size);
            RangeRequest::Partial(ByteRange {
                offset: size - len,
                len,
            })
        }
        (None, None) => RangeRequest::Whole,
    }
}

/// Parses an upload chunk's `Content-Range: <start>-<end>` (also tolerating a `bytes `
/// or `bytes=` prefix and a `/<total>` suffix). `Ok(None)` when absent.
pub fn chunk_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, String> {
    let Some(raw) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || format!("malformed Content-Range {:?}: expected <start>-<end>", raw);
    let s = raw.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let num = |x: &str| -> Result<u64, String> {
        if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let (start, end) = (num(a)?, num(b)?);
    // Found by the fuzz target: an inverted range is malformed, not merely out of order.
    if end < start {
        return Err(format!(
            "malformed Content-Range {raw:?}: the end comes before the start"
        ));
    }
    Ok(Some(ChunkRange { start, end }))
}

/// The `Range` header of upload responses: `0-<last byte>`, `0-0` when empty (as
/// distribution writes it).
pub fn upload_range(offset: u64) -> HeaderValue {
    value(format!("0-{}", offset.saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    fn r(v: &str, size: u64) -> RangeRequest {
        range(&with(header::RANGE, v), size)
    }

    fn part(offset: u64, len: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { offset, len })
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(r("bytes=0-9", 100), part(0, 10));
        assert_eq!(r("bytes=90-", 100), part(90, 10));
        assert_eq!(r("bytes=90-1000", 100), part(90, 10));
        assert_eq!(r("bytes=-10", 100), part(90, 10));
        assert_eq!(r("bytes=-1000", 100), part(0, 100));
        assert_eq!(r("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(r("bytes=5-1", 100), RangeRequest::Whole);
        assert_eq!(r("bytes=0-1,5-6", 100), RangeRequest::Whole);
        assert_eq!(r("items=0-1", 100), RangeRequest::Whole);
        assert_eq!(r("bytes=x-1", 100), RangeRequest::Whole);
        assert_eq!(range(&HeaderMap::new(), 100), RangeRequest::Whole);
    }

    #[test]
    fn accept_headers_are_merged() {
        let mut h = HeaderMap::new();
        h.append(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        h.append(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/vnd.docker.distribution.manifest.v2+json, */*;q=0.8",
            ),
        );
        assert_eq!(
            accept(&h).0,
            [
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "*/*"
            ]
        );
    }

    #[test]
    fn content_ranges() {
        let cr = |v: &str| chunk_range(&with(header::CONTENT_RANGE, v));
        assert_eq!(cr("0-99"), Ok(Some(ChunkRange { start: 0, end: 99 })));
        assert_eq!(
            cr("bytes 100-199/*"),
            Ok(Some(ChunkRange {
                start: 100,
                end: 199
            }))
        );
        assert_eq!(cr("bytes=5-6"), Ok(Some(ChunkRange { start: 5, end: 6 })));
        assert!(cr("-5").is_err());
        assert!(cr("a-b").is_err());
        assert!(cr("5").is_err());
        assert!(
            cr("23-3")
                .unwrap_err()
                .contains("end comes before the start")
        );
        assert_eq!(cr("7-7"), Ok(Some(ChunkRange { start: 7, end: 7 })));
        assert_eq!(chunk_range(&HeaderMap::new()), Ok(None));
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
