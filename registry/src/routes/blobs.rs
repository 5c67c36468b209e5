//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::error::{ErrorCode, RegistryError, Result};
use super::headers::{self, DOCKER_CONTENT_DIGEST, RangeRequest};
use super::{Ctx, empty};
use crate::oci::Digest;
use crate::services::blobs::Found;

/// 307 to where the object store serves the blob (presigned), so its bytes bypass the
/// registry; Range requests go there too.
fn redirect_to(url: &str, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
    let h = r.headers_mut();
    h.insert(header::LOCATION, headers::value(url));
    h.insert(DOCKER_CONTENT_DIGEST, headers::value(digest.to_string()));
    r
}

pub async fn get(ctx: Ctx, name: &str, digest: &str, head: bool) -> Result<Response> {
    let name = Ctx::name(name)?;
    let digest: Digest = digest.parse()?;
    let lookup = ctx.lookup(&name);
    let blobs = &ctx.app.registry.blobs;

    let (status, size, part, body) = if head {
        let size = blobs.stat(&lookup, &digest).await?;
        (StatusCode::OK, size, None, None)
    } else {
        match blobs.find(&lookup, &digest).await? {
            // A blob arriving from upstream is sent whole; Range applies once it is cached.
            Found::Upstream(blob) => (StatusCode::OK, blob.size, None, Some(blob.body)),
            Found::Local(_) if let Some(url) = blobs.redirect(&digest).await? => {
                return Ok(redirect_to(&url, &digest));
            }
            Found::Local(size) => match headers::range(&ctx.parts.headers, size) {
                RangeRequest::Whole => (StatusCode::OK, size, None, None),
                RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, size, Some(r), None),
                RangeRequest::Unsatisfiable => {
                    return Err(RegistryError::new(
                        ErrorCode::SizeInvalid,
                        format!("requested range is outside the blob's {size} bytes"),
                    )
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .with_header(
                        header::CONTENT_RANGE,
                        headers::value(format!("bytes */{size}")),
                    ));
                }
            },
        }
    };
    let len = part.map_or(size, |r| r.len);
    let mut response = if head {
        empty(status)
    } else {
        let stream = match body {
            Some(upstream) => upstream,
            None => blobs.read(&digest, part).await?,
        };
        let mut r = Response::new(Body::from_stream(stream));
        *r.status_mut() = status;
        r
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, headers::value(len.to_string()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(DOCKER_CONTENT_DIGEST, headers::value(digest.to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, headers::value(format!("\"{digest}\"")));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if let Some(r) = part {
        h.insert(
            header::CONTENT_RANGE,
            headers::value(format!(
                "bytes {}-{}/{size}",
                r.offset,
                r.offset + r.len - 1
            )),
        );
    }
    Ok(response)
}

pub async fn delete(ctx: Ctx, name: &str, digest: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let digest: Digest = digest.parse()?;
    ctx.app.registry.blobs.delete(&name, &digest).await?;
    ctx.who().audit("delete-blob", &name, None, Some(&digest));
    Ok(empty(StatusCode::ACCEPTED))
}
