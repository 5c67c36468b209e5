//! What a service says went wrong, in the distribution spec's terms and nothing of HTTP:
//! one of the spec's error codes with a message, a limit an outsider went over, a full
//! store, or an internal failure. The routes turn these into responses
//! (`routes/error.rs`).

use std::borrow::Cow;

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
}

/// What kind of failure a [`ServiceError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is wrong or names something absent: one of the spec's codes.
    Spec(ErrorCode),
    /// Something the client sent is over a limit this registry keeps.
    TooLarge(ErrorCode),
    /// The store is full; the write was rolled back.
    Full,
    /// A server-side failure; the cause is logged, the client learns nothing of it.
    Internal,
}

#[derive(Debug)]
pub struct ServiceError {
    pub kind: Kind,
    pub message: Cow<'static, str>,
    /// The spec's `detail`: what the error is about (a digest, a reference).
    pub detail: Option<serde_json::Value>,
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ServiceError {
            kind: Kind::Spec(code),
            message: message.into(),
            detail: None,
        }
    }

    /// Over a limit: `code` says what (`SIZE_INVALID` for a body, `DENIED` for a quota).
    pub fn too_large(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ServiceError {
            kind: Kind::TooLarge(code),
            ..ServiceError::new(code, message)
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ServiceError {
            kind: Kind::Internal,
            message: "internal server error".into(),
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The spec's code, if the error has one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self.kind {
            Kind::Spec(c) | Kind::TooLarge(c) => Some(c),
            Kind::Full | Kind::Internal => None,
        }
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

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code() {
            Some(c) => write!(f, "{}: {}", c.as_str(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ServiceError {}

impl From<NameError> for ServiceError {
    fn from(e: NameError) -> Self {
        ServiceError::new(ErrorCode::NameInvalid, e.to_string())
    }
}

impl From<DigestError> for ServiceError {
    fn from(e: DigestError) -> Self {
        ServiceError::new(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<TagError> for ServiceError {
    fn from(e: TagError) -> Self {
        // The spec has no code of its own for a malformed tag; the reference is the
        // manifest's name, so MANIFEST_INVALID with the grammar in the message.
        ServiceError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

impl From<ReferenceError> for ServiceError {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::Digest(d) => d.into(),
            ReferenceError::Tag(t) => t.into(),
        }
    }
}

impl From<ManifestError> for ServiceError {
    fn from(e: ManifestError) -> Self {
        ServiceError::new(ErrorCode::ManifestInvalid, e.to_string())
    }
}

impl From<StorageError> for ServiceError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Full => {
                tracing::error!("storage is full: a write was refused and rolled back");
                ServiceError {
                    kind: Kind::Full,
                    message: "registry storage is full; nothing was stored".into(),
                    detail: None,
                }
            }
            StorageError::ReadOnly => ServiceError::new(
                ErrorCode::Unsupported,
                "this registry serves bundles read-only; start it with --root DIR as well to \
                 accept pushes and deletes",
            ),
            other => ServiceError::internal(other),
        }
    }
}
