//! Errors as clients see them: the distribution spec's JSON body with the status the
//! spec gives each code.
//!
//! Services say what went wrong in domain terms ([`ServiceError`]); this module alone
//! picks the HTTP status and headers. Internal failures reach the client only as a generic
//! 5xx, never as an internal message or code.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub use crate::services::error::ErrorCode;
use crate::services::error::{Kind, ServiceError};

/// A failure as a response: a service's error, its status and any extra headers.
#[derive(Debug)]
pub struct RegistryError {
    error: ServiceError,
    status: StatusCode,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The status the spec gives an error code.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BlobUnknown
        | ErrorCode::BlobUploadUnknown
        | ErrorCode::ManifestUnknown
        | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Denied => StatusCode::FORBIDDEN,
        ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl<E: Into<ServiceError>> From<E> for RegistryError {
    fn from(e: E) -> Self {
        let error = e.into();
        let status = match error.kind {
            Kind::Spec(code) => status_of(code),
            Kind::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Full => StatusCode::INSUFFICIENT_STORAGE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        RegistryError {
            error,
            status,
            headers: Vec::new(),
        }
    }
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ServiceError::new(code, message).into()
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ServiceError::internal(cause).into()
    }

    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> Self {
        ServiceError::manifest_unknown(reference).into()
    }

    pub fn upload_unknown() -> Self {
        ServiceError::upload_unknown().into()
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.error.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn code(&self) -> Option<ErrorCode> {
        self.error.code()
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let code = self.error.code().map_or("UNKNOWN", ErrorCode::as_str);
        let mut entry = json!({ "code": code, "message": self.error.message });
        if let Some(detail) = self.error.detail {
            entry["detail"] = detail;
        }
        let body = serde_json::to_vec(&json!({ "errors": [entry] })).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
