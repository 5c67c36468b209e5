//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]`

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::error::{ErrorCode, RegistryError, Result};
use super::headers::OCI_FILTERS_APPLIED;
use super::listing::link_next;
use super::{Ctx, json_response};
use crate::oci::{Digest, media_type};

pub async fn list(ctx: Ctx, name: &str, digest: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let subject: Digest = digest.parse()?;
    let artifact_type = ctx.query.get("artifactType").filter(|a| !a.is_empty());
    let n = match ctx.query.get("n") {
        None => None,
        Some(raw) => Some(raw.parse::<usize>().map_err(|_| {
            RegistryError::new(ErrorCode::Unsupported, "n must be a non-negative integer")
                .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    let lookup = ctx.lookup(&name);
    let page = ctx
        .app
        .registry
        .referrers
        .list(&lookup, &subject, artifact_type, n, ctx.query.get("last"))
        .await?;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": &page.entries,
    }))
    .map_err(RegistryError::internal)?;
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media_type::OCI_INDEX),
    );
    if artifact_type.is_some() {
        response.headers_mut().insert(
            OCI_FILTERS_APPLIED,
            HeaderValue::from_static("artifactType"),
        );
    }
    let extra: Vec<(&str, &str)> = artifact_type
        .map(|a| ("artifactType", a))
        .into_iter()
        .collect();
    let n = n.unwrap_or(page.entries.len());
    link_next(
        &mut response,
        &format!("/v2/{name}/referrers/{subject}"),
        &page,
        n,
        &extra,
    );
    Ok(response)
}
