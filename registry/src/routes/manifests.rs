//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::error::{ErrorCode, RegistryError, Result};
use super::headers::{self, DOCKER_CONTENT_DIGEST, OCI_SUBJECT, OCI_TAG};
use super::{Ctx, empty};
use crate::oci::{Reference, ReferenceError, Tag};
use crate::services::manifests::too_large;

pub async fn get(ctx: Ctx, name: &str, reference: &str, head: bool) -> Result<Response> {
    let name = Ctx::name(name)?;
    let reference = match Reference::parse(reference) {
        Ok(r) => r,
        // No manifest can have a tag outside the grammar: a pull of one is simply not
        // found (the spec lists only 404 for end-3). A malformed digest stays 400.
        Err(ReferenceError::Tag(_)) => return Err(RegistryError::manifest_unknown(&reference)),
        Err(e) => return Err(e.into()),
    };
    let lookup = ctx.lookup(&name);
    let accept = headers::accept(&ctx.parts.headers);
    let m = ctx
        .app
        .registry
        .manifests
        .get(&lookup, &reference, &accept)
        .await?;

    let len = m.body.len();
    let mut response = if head {
        empty(StatusCode::OK)
    } else {
        Response::new(Body::from(m.body))
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, headers::value(&m.media_type));
    h.insert(header::CONTENT_LENGTH, headers::value(len.to_string()));
    h.insert(DOCKER_CONTENT_DIGEST, headers::value(m.digest.to_string()));
    h.insert(header::ETAG, headers::value(format!("\"{}\"", m.digest)));
    Ok(response)
}

pub async fn put(ctx: Ctx, name: &str, reference: &str) -> Result<Response> {
    let who = ctx.who();
    let name = Ctx::name(name)?;
    ctx.check_push(&name)?;
    let reference = Reference::parse(reference)?;
    let tags = ctx
        .query
        .all("tag")
        .map(Tag::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let limit = ctx.app.registry.options.max_manifest_bytes;
    let content_type = headers::content_type(&ctx.parts.headers).map(str::to_string);
    let body = read_limited(ctx.body, limit).await?;
    let pushed = ctx
        .app
        .registry
        .manifests
        .put(&name, &reference, content_type.as_deref(), body, tags)
        .await?;

    who.audit("push", &name, None, Some(&pushed.digest));
    for tag in &pushed.tags {
        who.audit("tag", &name, Some(tag.as_str()), Some(&pushed.digest));
    }

    let mut response = empty(StatusCode::CREATED);
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        headers::value(format!("/v2/{name}/manifests/{}", pushed.digest)),
    );
    h.insert(
        DOCKER_CONTENT_DIGEST,
        headers::value(pushed.digest.to_string()),
    );
    if let Some(subject) = &pushed.subject {
        h.insert(OCI_SUBJECT, headers::value(subject.to_string()));
    }
    if matches!(reference, Reference::Digest(_)) {
        for tag in &pushed.tags {
            h.append(OCI_TAG, headers::value(tag.as_str()));
        }
    }
    Ok(response)
}

pub async fn delete(ctx: Ctx, name: &str, reference: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let reference = Reference::parse(reference)?;
    ctx.app.registry.manifests.delete(&name, &reference).await?;
    match &reference {
        Reference::Tag(t) => ctx.who().audit("untag", &name, Some(t.as_str()), None),
        Reference::Digest(d) => ctx.who().audit("delete", &name, None, Some(d)),
    }
    Ok(empty(StatusCode::ACCEPTED))
}

/// Reads a request body of at most `limit` bytes; 413 beyond it.
///
/// An oversized body is still drained (up to a bound) before answering, so the client
/// reads a clean 413 instead of a connection reset in the middle of its upload.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("failed to receive the manifest: {e}"),
            )
        })?;
        seen += chunk.len();
        if seen > limit {
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(too_large(limit).into());
    }
    Ok(buf.freeze())
}
