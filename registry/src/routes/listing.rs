//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, with `n`, `last` and `Link`.

use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::error::{ErrorCode, RegistryError, Result};
use super::headers::{self, Query};
use super::{Ctx, json_response};
use crate::services::Page;

/// `n` and `last` from the query.
fn paging(query: &Query) -> Result<(Option<usize>, Option<String>)> {
    let n = match query.get("n") {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<usize>().map_err(|_| {
            RegistryError::new(
                ErrorCode::Unsupported,
                format!("n must be a non-negative integer, got {raw:?}"),
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    Ok((n, query.get("last").map(str::to_string)))
}

/// Adds `Link: <path?n=..&last=..>; rel="next"` when the page has a successor.
pub(crate) fn link_next<T>(
    response: &mut Response,
    path: &str,
    page: &Page<T>,
    n: usize,
    extra: &[(&str, &str)],
) {
    if let Some(after) = &page.next_after {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("n", &n.to_string());
        q.append_pair("last", after);
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        response.headers_mut().insert(
            header::LINK,
            headers::value(format!("<{path}?{}>; rel=\"next\"", q.finish())),
        );
    }
}

pub async fn tags(ctx: Ctx, name: &str) -> Result<Response> {
    let name = Ctx::name(name)?;
    let (n, last) = paging(&ctx.query)?;
    let lookup = ctx.lookup(&name);
    let page = ctx
        .app
        .registry
        .listing
        .tags(&lookup, n, last.as_deref())
        .await?;
    let body = serde_json::to_vec(&json!({ "name": name.as_str(), "tags": &page.entries }))
        .map_err(RegistryError::internal)?;
    let mut response = json_response(StatusCode::OK, body);
    let n = n.unwrap_or(page.entries.len());
    link_next(
        &mut response,
        &format!("/v2/{name}/tags/list"),
        &page,
        n,
        &[],
    );
    Ok(response)
}

pub async fn catalog(ctx: Ctx) -> Result<Response> {
    let (n, last) = paging(&ctx.query)?;
    let visible = ctx.visible();
    let page = ctx
        .app
        .registry
        .listing
        .catalog(n, last.as_deref(), visible)
        .await?;
    let body = serde_json::to_vec(&json!({ "repositories": &page.entries }))
        .map_err(RegistryError::internal)?;
    let mut response = json_response(StatusCode::OK, body);
    let n = n.unwrap_or(page.entries.len());
    link_next(&mut response, "/v2/_catalog", &page, n, &[]);
    Ok(response)
}
