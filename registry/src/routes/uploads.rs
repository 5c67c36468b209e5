//! Blob pushes: `POST /v2/<name>/blobs/uploads/` (start, monolithic, mount) and
//! `GET|PATCH|PUT|DELETE /v2/<name>/blobs/uploads/<id>`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

use super::error::{ErrorCode, RegistryError, Result};
use super::headers::{self, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, OCI_CHUNK_MIN_LENGTH};
use super::{Ctx, empty};
use crate::auth::Action;
use crate::oci::{Algorithm, Digest, RepoName};
use crate::services::uploads::AppendError;

fn session_location(name: &RepoName, id: Uuid) -> HeaderValue {
    headers::value(format!("/v2/{name}/blobs/uploads/{}", id.hyphenated()))
}

/// 202 for a session that is still open, telling the client where it stands.
fn session_response(status: StatusCode, name: &RepoName, id: Uuid, offset: u64) -> Response {
    let mut r = empty(status);
    let h = r.headers_mut();
    h.insert(header::LOCATION, session_location(name, id));
    h.insert(header::RANGE, headers::upload_range(offset));
    h.insert(
        DOCKER_UPLOAD_UUID,
        headers::value(id.hyphenated().to_string()),
    );
    r
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        headers::value(format!("/v2/{name}/blobs/{digest}")),
    );
    h.insert(DOCKER_CONTENT_DIGEST, headers::value(digest.to_string()));
    r
}

fn upload_id(id: &str) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| RegistryError::upload_unknown())
}

fn chunk_error(e: AppendError, name: &RepoName, id: Uuid) -> RegistryError {
    match e {
        AppendError::OutOfOrder(o) => RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            "chunk does not start where the upload ends",
        )
        .with_detail(json!({ "offset": o.offset }))
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .with_header(header::LOCATION, session_location(name, id))
        .with_header(header::RANGE, headers::upload_range(o.offset)),
        AppendError::Other(e) => e.into(),
    }
}

fn content_range(ctx: &Ctx) -> Result<Option<crate::services::uploads::ChunkRange>> {
    headers::chunk_range(&ctx.parts.headers)
        .map_err(|m| RegistryError::new(ErrorCode::BlobUploadInvalid, m))
}

pub async fn start(ctx: Ctx, name: &str) -> Result<Response> {
    let who = ctx.who();
    let name = Ctx::name(name)?;
    ctx.check_push(&name)?;
    let registry = &ctx.app.registry;

    if let Some(mount) = ctx.query.get("mount") {
        let digest: Digest = mount.parse()?;
        // Without `from` there is nothing the caller has shown it may read: no automatic
        // mount from wherever the blob happens to be. Nor from a repository the caller
        // may not pull. Either way, fall back to an upload.
        if let Some(from) = ctx.query.get("from") {
            let from = RepoName::parse(from)?;
            if ctx.may(&from, Action::Pull) && registry.blobs.mount(&name, &digest, &from).await? {
                who.audit("mount", &name, Some(&format!("from {from}")), Some(&digest));
                return Ok(blob_created(&name, &digest));
            }
        }
    }

    if let Some(digest) = ctx.query.get("digest") {
        let digest: Digest = digest.parse()?;
        let id = registry
            .uploads
            .start(&name, digest.algorithm(), who.user())
            .await?;
        let body = Ctx::body_stream(ctx.body);
        if let Err(e) = registry
            .uploads
            .finish(&name, id, &digest, None, body)
            .await
        {
            let _ = registry.uploads.cancel(&name, id).await;
            return Err(chunk_error(e, &name, id));
        }
        who.audit("push-blob", &name, None, Some(&digest));
        return Ok(blob_created(&name, &digest));
    }

    let algorithm = match ctx.query.get("digest-algorithm") {
        Some(a) => a.parse::<Algorithm>()?,
        None => Algorithm::Sha256,
    };
    let id = registry.uploads.start(&name, algorithm, who.user()).await?;
    let mut r = session_response(StatusCode::ACCEPTED, &name, id, 0);
    if let Some(min) = registry.uploads.chunk_min_length() {
        r.headers_mut()
            .insert(OCI_CHUNK_MIN_LENGTH, headers::value(min.to_string()));
    }
    Ok(r)
}

pub async fn status(ctx: Ctx, name: &str, id: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let id = upload_id(id)?;
    let offset = ctx.app.registry.uploads.offset(&name, id).await?;
    Ok(session_response(StatusCode::NO_CONTENT, &name, id, offset))
}

pub async fn patch(ctx: Ctx, name: &str, id: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let id = upload_id(id)?;
    let range = content_range(&ctx)?;
    let body = Ctx::body_stream(ctx.body);
    let offset = ctx
        .app
        .registry
        .uploads
        .append(&name, id, range, body)
        .await
        .map_err(|e| chunk_error(e, &name, id))?;
    Ok(session_response(StatusCode::ACCEPTED, &name, id, offset))
}

pub async fn put(ctx: Ctx, name: &str, id: &str) -> Result<Response> {
    let who = ctx.who();
    let name = Ctx::name(name)?;
    let id = upload_id(id)?;
    let digest: Digest = ctx
        .query
        .get("digest")
        .ok_or_else(|| {
            RegistryError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?
        .parse()?;
    let range = content_range(&ctx)?;
    let body = Ctx::body_stream(ctx.body);
    ctx.app
        .registry
        .uploads
        .finish(&name, id, &digest, range, body)
        .await
        .map_err(|e| chunk_error(e, &name, id))?;
    who.audit("push-blob", &name, None, Some(&digest));
    Ok(blob_created(&name, &digest))
}

pub async fn cancel(ctx: Ctx, name: &str, id: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let id = upload_id(id)?;
    ctx.app.registry.uploads.cancel(&name, id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
