//! Authentication at the edge: `Authorization` in, challenges out, and the token
//! endpoint (`GET`/`POST /token`) of the Docker token flow.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt;
use serde_json::json;

use super::error::{ErrorCode, RegistryError, Result};
use super::path::{Route, RouteKind};
use super::{App, json_response};
use crate::auth::token::Scope;
use crate::auth::{Auth, Caller, Credentials, Refusal};
use crate::observability::{CallerTag, RouteTag};

/// Who sent a `/v2/` request; `None` when the registry has no authentication.
pub(crate) async fn caller(app: &App, parts: &Parts) -> Result<Option<Caller>> {
    let Some(auth) = &app.auth else {
        return Ok(None);
    };
    let credentials = credentials(&parts.headers)?;
    let caller = auth
        .authenticate(credentials)
        .await
        .map_err(|r| refusal(auth, app.tls, parts, r))?;
    Ok(Some(caller))
}

/// With `--metrics-auth`, `/metrics` answers signed-in users only (scrapers send Basic
/// credentials, so the challenge is Basic).
pub(crate) async fn metrics_caller(app: &App, parts: &Parts) -> Result<()> {
    let Some(auth) = app.auth.as_ref().filter(|a| a.settings().metrics_auth) else {
        return Ok(());
    };
    let signed_in = match credentials(&parts.headers)? {
        Credentials::None => false,
        credentials => auth
            .authenticate(credentials)
            .await
            .is_ok_and(|c| c.principal != crate::auth::Principal::Anonymous),
    };
    if signed_in {
        return Ok(());
    }
    Err(
        RegistryError::new(ErrorCode::Unauthorized, "sign in to read the metrics").with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sealer-registry metrics\""),
        ),
    )
}

/// Whether `caller` may make this request.
pub(crate) fn check(app: &App, parts: &Parts, route: &Route, caller: &Caller) -> Result<()> {
    let Some(auth) = &app.auth else {
        return Ok(());
    };
    match (route, route.action(&parts.method)) {
        (_, Some((name, action))) => auth.check(caller, name, action),
        (Route::Catalog, None) => auth.check_catalog(caller),
        (_, None) => auth.check_base(caller),
    }
    .map_err(|r| refusal(auth, app.tls, parts, r))
}

/// `Authorization: Basic ...` or `Bearer ...`; anything else malformed is refused rather
/// than treated as anonymous.
fn credentials(headers: &HeaderMap) -> Result<Credentials> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let bad = || {
        RegistryError::new(
            ErrorCode::Unauthorized,
            "malformed Authorization header: expected Basic or Bearer",
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let (scheme, rest) = text.split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
        Ok(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        Ok(Credentials::Bearer(rest.to_string()))
    } else {
        Err(bad())
    }
}

/// A refusal as the client sees it: 401 with a challenge that tells it where to sign
/// in (and which scope to ask for), or 403 DENIED.
fn refusal(auth: &Auth, tls: bool, parts: &Parts, refusal: Refusal) -> RegistryError {
    match refusal {
        Refusal::Denied(message) => RegistryError::new(ErrorCode::Denied, message),
        Refusal::Unauthenticated { message, scope } => {
            let settings = auth.settings();
            let challenge = if auth.token_flow() {
                let realm = settings
                    .realm
                    .clone()
                    .unwrap_or_else(|| default_realm(tls, &parts.uri, &parts.headers));
                let mut c = format!("Bearer realm=\"{realm}\",service=\"{}\"", settings.service);
                if let Some(scope) = &scope {
                    c.push_str(&format!(",scope=\"{scope}\""));
                }
                c
            } else {
                format!("Basic realm=\"{}\"", settings.service)
            };
            let mut e = RegistryError::new(ErrorCode::Unauthorized, message);
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                e = e.with_header(header::WWW_AUTHENTICATE, v);
            }
            e
        }
    }
}

/// `/token` on the host the client called: HTTP/2's `:authority`, else the Host header.
/// Either is only used if it looks like a host, so a request cannot put text of its
/// choosing into the challenge.
fn default_realm(tls: bool, uri: &Uri, headers: &HeaderMap) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}/token")
}

/// Largest form a client may POST to `/token`.
const MAX_FORM: usize = 64 * 1024;

/// `GET /token?service=..&scope=..` with Basic credentials or none (docker, podman,
/// skopeo), or `POST /token` with an OAuth2 password form (containerd).
pub async fn token(State(app): State<Arc<App>>, request: Request) -> Response {
    let mut response = issue_token(&app, request)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(RouteTag(RouteKind::Token));
    response
}

async fn issue_token(app: &App, request: Request) -> Result<Response> {
    let Some(auth) = app.auth.as_ref().filter(|a| a.token_flow()) else {
        return Err(
            RegistryError::new(ErrorCode::Unsupported, "this registry issues no tokens")
                .with_status(StatusCode::NOT_FOUND),
        );
    };
    let (parts, body) = request.into_parts();
    let refused = |r: Refusal| refusal_at_token(auth, r);
    let (credentials, scopes, oauth) = match parts.method {
        Method::GET | Method::HEAD => {
            let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes());
            let scopes: Vec<String> = query
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .collect();
            (
                credentials(&parts.headers)?,
                Scope::parse_all(scopes.iter().map(String::as_str)),
                false,
            )
        }
        Method::POST => {
            let form = read_form(body).await?;
            let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            if get("grant_type") != Some("password") {
                return Err(RegistryError::new(
                    ErrorCode::Unsupported,
                    "unsupported grant_type: only \"password\" is accepted",
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
            let credentials = Credentials::Basic {
                user: get("username").unwrap_or("").to_string(),
                password: get("password").unwrap_or("").to_string(),
            };
            let scopes = Scope::parse_all(
                form.iter()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.as_str()),
            );
            (credentials, scopes, true)
        }
        _ => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "method not allowed on this endpoint",
            )
            .with_header(header::ALLOW, HeaderValue::from_static("GET, POST")));
        }
    };
    let user = match &credentials {
        Credentials::Basic { user, .. } => user.clone(),
        _ => "-".to_string(),
    };
    let issued = auth.issue(credentials, &scopes).await.map_err(refused)?;
    let issued_at = time::OffsetDateTime::from_unix_timestamp(issued.issued_at as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let body = if oauth {
        json!({
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        })
    } else {
        json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
        })
    };
    let mut response = json_response(
        StatusCode::OK,
        serde_json::to_vec(&body).map_err(RegistryError::internal)?,
    );
    response.extensions_mut().insert(CallerTag(user));
    Ok(response)
}

fn refusal_at_token(auth: &Auth, refusal: Refusal) -> RegistryError {
    let message = match refusal {
        Refusal::Denied(m) | Refusal::Unauthenticated { message: m, .. } => m,
    };
    let challenge = format!("Basic realm=\"{}\"", auth.settings().service);
    RegistryError::new(ErrorCode::Unauthorized, message).with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Basic")),
    )
}

async fn read_form(body: Body) -> Result<Vec<(String, String)>> {
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes = limited
        .collect()
        .await
        .map_err(|_| {
            RegistryError::new(ErrorCode::SizeInvalid, "the token form is too large")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        })?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn authorization_headers_parse_or_are_refused() {
        assert_eq!(credentials(&headers(&[])).unwrap(), Credentials::None);
        // "alice:pa:ss" - a password may hold a colon.
        let basic = headers(&[("authorization", "Basic YWxpY2U6cGE6c3M=")]);
        assert_eq!(
            credentials(&basic).unwrap(),
            Credentials::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        let bearer = headers(&[("authorization", "bearer abc.def.ghi")]);
        assert_eq!(
            credentials(&bearer).unwrap(),
            Credentials::Bearer("abc.def.ghi".into())
        );
        for bad in [
            "Basic !!!",
            "Digest x",
            "Bearer ",
            "Basic",
            "Basic bm9jb2xvbg==",
        ] {
            assert!(
                credentials(&headers(&[("authorization", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_realm_names_the_called_host_only_if_it_looks_like_one() {
        let path: Uri = "/v2/".parse().unwrap();
        let h = headers(&[("host", "sea.hub:5000")]);
        assert_eq!(default_realm(true, &path, &h), "https://sea.hub:5000/token");
        let h = headers(&[("host", "[::1]:5000")]);
        assert_eq!(default_realm(false, &path, &h), "http://[::1]:5000/token");
        let h = headers(&[("host", "evil\",scope=\"x")]);
        assert_eq!(default_realm(false, &path, &h), "http://localhost/token");
        // HTTP/2 has no Host header: the authority is in the URI.
        let h2: Uri = "https://10.0.0.5:5000/v2/".parse().unwrap();
        assert_eq!(
            default_realm(true, &h2, &HeaderMap::new()),
            "https://10.0.0.5:5000/token"
        );
    }
}
