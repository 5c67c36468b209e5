//! The HTTP layer: parse the request, call a service, write the answer.
//!
//! One dispatcher serves every `/v2/...` path: [`path::Route`] recognises the endpoint
//! from the end of the path, so repository names may have any number of segments.

pub mod error;
pub mod headers;
pub mod path;

mod auth;
mod blobs;
mod listing;
mod manifests;
mod referrers;
mod uploads;

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};

use self::headers::{OCI_NAMESPACE, Query};
use self::path::{Route, RouteKind};
use crate::auth::{Action, Auth, Caller};
use crate::observability::{CallerTag, Metrics, RouteTag, observe};
use crate::oci::RepoName;
use crate::services::{Lookup, Registry, namespace};
use error::{ErrorCode, RegistryError, Result};

/// Everything a handler can reach.
pub struct App {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Users, policy and tokens; `None` serves everyone everything.
    pub auth: Option<Arc<Auth>>,
    /// Whether the registry serves HTTPS (the scheme of token realms).
    pub tls: bool,
    /// A request body idle this long fails.
    pub body_timeout: std::time::Duration,
    /// Whether `/metrics` answers (`--no-metrics`: it is not found).
    pub serve_metrics: bool,
}

pub fn router(app: Arc<App>) -> Router {
    let metrics = app.metrics.clone();
    let body_timeout = app.body_timeout;
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route("/token", any(auth::token))
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .with_state(app)
        .layer(axum::middleware::map_response(headers::content_safety))
        .layer(axum::middleware::from_fn_with_state(
            body_timeout,
            crate::listen::idle_bodies,
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
}

/// One request as the handlers see it.
pub(crate) struct Ctx {
    pub app: Arc<App>,
    pub parts: Parts,
    pub query: Query,
    pub body: Body,
    /// Who is calling, when the registry checks.
    pub caller: Option<Caller>,
}

/// Who made a request, for the audit log.
pub(crate) struct Who {
    user: String,
    remote: Option<std::net::SocketAddr>,
}

impl Who {
    /// The signed-in user; `None` when anonymous or without sign-in.
    pub fn user(&self) -> Option<&str> {
        (self.user != "-").then_some(self.user.as_str())
    }

    /// One line on the `audit` log target for a change of content or names: a push, a
    /// tag, an untag, a delete, a mount.
    pub fn audit(
        &self,
        action: &str,
        repository: &RepoName,
        reference: Option<&str>,
        digest: Option<&crate::oci::Digest>,
    ) {
        crate::observability::audit(
            &self.user,
            self.remote,
            action,
            repository,
            reference,
            digest,
        );
    }
}

impl Ctx {
    /// The caller (`-` when anonymous or without sign-in) and its address.
    pub fn who(&self) -> Who {
        Who {
            user: self
                .caller
                .as_ref()
                .map_or("-", |c| c.principal.name())
                .to_string(),
            remote: self
                .parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        }
    }

    pub fn name(raw: &str) -> Result<RepoName> {
        Ok(RepoName::parse(raw)?)
    }

    /// Where a read of `name` may be answered from (docs/design.md, contract 3, then the mirror),
    /// leaving out the other local names the caller may not pull.
    pub fn lookup(&self, name: &RepoName) -> Lookup {
        let mut lookup = self.app.registry.lookup(name, self.query.get("ns"));
        if let (Some(auth), Some(caller)) = (&self.app.auth, &self.caller) {
            let may_pull = |repo: &RepoName| {
                repo == name || auth.policy_allows(&caller.principal, repo.as_str(), Action::Pull)
            };
            lookup.local.retain(|repo| may_pull(repo));
            // Nor is the upstream asked on behalf of a caller who may not read its cache.
            lookup.mirror = lookup.mirror.filter(|route| may_pull(&route.local));
        }
        lookup
    }

    /// Whether the caller may do `action` to `name` (always, without authentication).
    pub fn may(&self, name: &RepoName, action: Action) -> bool {
        match (&self.app.auth, &self.caller) {
            (Some(auth), Some(caller)) => auth.may(caller, name.as_str(), action),
            _ => true,
        }
    }

    /// Which repositories the caller may see in the catalog.
    pub fn visible(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let auth = self.app.auth.clone();
        let caller = self.caller.clone();
        move |name| match (&auth, &caller) {
            (Some(auth), Some(caller)) => auth.policy_allows(&caller.principal, name, Action::Pull),
            _ => true,
        }
    }

    /// Refuses a push to a name that belongs to a mirrored registry.
    pub fn check_push(&self, name: &RepoName) -> Result<()> {
        if self.app.registry.refuses_push(name, self.query.get("ns")) {
            return Err(RegistryError::new(
                ErrorCode::Denied,
                format!("{name} belongs to a mirrored registry: pushes to it are refused"),
            ));
        }
        Ok(())
    }

    pub fn body_stream(body: Body) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin {
        body.into_data_stream().map_err(io::Error::other)
    }
}

async fn dispatch(State(app): State<Arc<App>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(route) = Route::parse(parts.uri.path()) else {
        return not_found().await;
    };
    let kind = route.kind();
    let query = Query::parse(parts.uri.query());
    let ns = query
        .get("ns")
        .map(|ns| headers::value(namespace::canonical_host(ns)));
    let tagged = |mut response: Response, user: Option<CallerTag>| {
        response.extensions_mut().insert(RouteTag(kind));
        if let Some(user) = user {
            response.extensions_mut().insert(user);
        }
        response
    };
    let caller = match admit(&app, &parts, &route).await {
        Ok(caller) => caller,
        Err((e, user)) => return tagged(e.into_response(), user),
    };
    let user = caller
        .as_ref()
        .map(|c| CallerTag(c.principal.name().to_string()));
    let method = parts.method.clone();
    let ctx = Ctx {
        app,
        parts,
        query,
        body,
        caller,
    };
    let result = handle(ctx, route, method).await;
    let mut response = tagged(result.unwrap_or_else(IntoResponse::into_response), user);
    if let Some(ns) = ns {
        response.headers_mut().insert(OCI_NAMESPACE, ns);
    }
    response
}

/// Who is calling (with sign-in on), and whether they may do what the route does; a
/// read-only registry refuses pushes and deletes to everyone. A refusal carries the
/// caller's name for the access log, when known.
async fn admit(
    app: &App,
    parts: &Parts,
    route: &Route,
) -> Result<Option<Caller>, (RegistryError, Option<CallerTag>)> {
    let caller = auth::caller(app, parts).await.map_err(|e| (e, None))?;
    let user = || {
        caller
            .as_ref()
            .map(|c| CallerTag(c.principal.name().to_string()))
    };
    if let Some(c) = &caller {
        auth::check(app, parts, route, c).map_err(|e| (e, user()))?;
    }
    let writes = matches!(
        route.action(&parts.method),
        Some((_, Action::Push | Action::Delete))
    );
    if app.registry.options.read_only && writes {
        let e = RegistryError::new(
            ErrorCode::Unsupported,
            "this registry is read-only: pushes and deletes are refused",
        );
        return Err((e, user()));
    }
    Ok(caller)
}

/// The handler of `route` for `method`.
async fn handle(ctx: Ctx, route: Route, method: Method) -> Result<Response> {
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => {
            Ok(json_response(StatusCode::OK, b"{}".to_vec()))
        }
        (Route::Catalog, Method::GET) => listing::catalog(ctx).await,
        (Route::Tags { name }, Method::GET) => listing::tags(ctx, &name).await,
        (Route::Manifest { name, reference }, m @ (Method::GET | Method::HEAD)) => {
            manifests::get(ctx, &name, &reference, m == Method::HEAD).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(ctx, &name, &reference).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(ctx, &name, &reference).await
        }
        (Route::Blob { name, digest }, m @ (Method::GET | Method::HEAD)) => {
            blobs::get(ctx, &name, &digest, m == Method::HEAD).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => blobs::delete(ctx, &name, &digest).await,
        (Route::UploadStart { name }, Method::POST) => uploads::start(ctx, &name).await,
        (Route::Upload { name, id }, Method::GET) => uploads::status(ctx, &name, &id).await,
        (Route::Upload { name, id }, Method::PATCH) => uploads::patch(ctx, &name, &id).await,
        (Route::Upload { name, id }, Method::PUT) => uploads::put(ctx, &name, &id).await,
        (Route::Upload { name, id }, Method::DELETE) => uploads::cancel(ctx, &name, &id).await,
        (Route::Referrers { name, digest }, Method::GET) => {
            referrers::list(ctx, &name, &digest).await
        }
        (route, _) => Err(method_not_allowed(&route)),
    }
}

fn method_not_allowed(route: &Route) -> RegistryError {
    let allow = match route {
        Route::Base => "GET, HEAD",
        Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => "GET",
        Route::Manifest { .. } => "GET, HEAD, PUT, DELETE",
        Route::Blob { .. } => "GET, HEAD, DELETE",
        Route::UploadStart { .. } => "POST",
        Route::Upload { .. } => "GET, PATCH, PUT, DELETE",
    };
    RegistryError::new(
        ErrorCode::Unsupported,
        "method not allowed on this endpoint",
    )
    .with_header(header::ALLOW, HeaderValue::from_static(allow))
}

async fn not_found() -> Response {
    let mut r = RegistryError::new(ErrorCode::Unsupported, "no such endpoint")
        .with_status(StatusCode::NOT_FOUND)
        .into_response();
    r.extensions_mut().insert(RouteTag(RouteKind::Other));
    r
}

async fn healthz() -> Response {
    let mut r = json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec());
    r.extensions_mut().insert(RouteTag(RouteKind::Health));
    r
}

async fn render_metrics(State(app): State<Arc<App>>, request: Request) -> Response {
    if !app.serve_metrics {
        return not_found().await;
    }
    if let Err(refused) = auth::metrics_caller(&app, &request.into_parts().0).await {
        let mut r = refused.into_response();
        r.extensions_mut().insert(RouteTag(RouteKind::Metrics));
        return r;
    }
    app.metrics
        .uploads_in_progress
        .set(app.registry.uploads.open_sessions());
    let mut r = (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response();
    r.extensions_mut().insert(RouteTag(RouteKind::Metrics));
    r
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let len = body.len();
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, headers::value(len.to_string()));
    r
}

/// An empty response with a status and headers.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut r = status.into_response();
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}
