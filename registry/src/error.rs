//! Errors as clients see them: the distribution spec's error codes and JSON body.
//!
//! Every failure a handler returns is a [`RegistryError`] carrying one of the spec's codes.
//! Internal failures are logged with their cause and reach the client only as a generic
//! 5xx, never as an internal message or code.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oci::digest::DigestError;
use crate::oci::manifest::ManifestError;
use crate::oci::name::{NameError, TagError};
use crate::oci::reference::ReferenceError;
use crate::storage::StorageError;

/// The error codes of the distribution spec, one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
        }
    }

    fn default_status(self) -> StatusCode {
        match self {
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
}

#[derive(Debug)]
enum Kind {
    Spec(ErrorCode),
    /// A server-side failure; the cause is logged, the client sees a generic message.
    Internal,
}

#[derive(Debug)]
pub struct RegistryError {
    kind: Kind,
    status: StatusCode,
    message: Cow<'static, str>,
    detail: Option<serde_json::Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        RegistryError {
            kind: Kind::Spec(code),
            status: code.default_status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        RegistryError {
            kind: Kind::Internal,
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal server error".into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self.kind {
            Kind::Spec(c) => Some(c),
            Kind::Internal => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    // Shorthands for the errors that recur across services.
    pub fn blob_unknown(digest: &impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(json!({ "digest": digest.to_string() }))
    }

    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
            .with_detail(json!({ "reference": reference.to_string() }))
    }

    pub fn name_unknown(name: &impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )
        .with_detail(json!({ "name": name.to_string() }))
    }

    pub fn upload_unknown() -> Self {
        Self::new(
            ErrorCode::BlobUploadUnknown,
            "blob upload unknown to registry",
        )
    }

    pub fn unsupported(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Kind::Spec(c) => write!(f, "{}: {}", c.as_str(), self.message),
            Kind::Internal => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RegistryError {}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let code = match self.kind {
            Kind::Spec(c) => c.as_str(),
            Kind::Internal => "UNKNOWN",
        };
        let mut entry = json!({ "code": code, "message": self.message });
        if let Some(detail) = self.detail {
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

impl From<NameError> for RegistryError {
    fn from(e: NameError) -> Self {
        RegistryError::new(ErrorCode::NameInvalid, e.to_string())
    }
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<TagError> for RegistryError {
    fn from(e: TagError) -> Self {
        // The spec has no code of its own for a malformed tag; the reference is the
        // manifest's name, so MANIFEST_INVALID with the grammar in the message.
        RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

impl From<ReferenceError> for RegistryError {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::Digest(d) => d.into(),
            ReferenceError::Tag(t) => t.into(),
        }
    }
}

impl From<ManifestError> for RegistryError {
    fn from(e: ManifestError) -> Self {
        RegistryError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

impl From<StorageError> for RegistryError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Full => {
                tracing::error!("storage is full: a write was refused and rolled back");
                RegistryError {
                    kind: Kind::Internal,
                    status: StatusCode::INSUFFICIENT_STORAGE,
                    message: "registry storage is full; nothing was stored".into(),
                    detail: None,
                    headers: Vec::new(),
                }
            }
            StorageError::ReadOnly => RegistryError::new(
                ErrorCode::Unsupported,
                "this registry serves bundles read-only; start it with --root DIR as well to \
                 accept pushes and deletes",
            ),
            other => RegistryError::internal(other),
        }
    }
}
