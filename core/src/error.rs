//! The one error model: every failure a client can see carries an OCI error
//! code, and the code decides the HTTP status. The server turns a
//! [`RegistryError`] into a response in exactly one place.

use std::fmt;

/// OCI Distribution error codes (plus `UNKNOWN` for internal failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// A malformed `n` or `last` pagination parameter (distribution's code).
    PaginationInvalid,
    /// A read `Range` that cannot be satisfied (416). The spec has no code for
    /// it; out-of-order upload chunks use `BLOB_UPLOAD_INVALID` with 416.
    RangeInvalid,
    /// Upstream registry failed and nothing was cached (502/503/504).
    UpstreamUnavailable,
    /// A failure inside Cove; clients see no internals.
    Internal,
}

impl ErrorCode {
    /// The code string as it appears in the JSON error body.
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
            ErrorCode::PaginationInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::UpstreamUnavailable => "UNAVAILABLE",
            ErrorCode::Internal => "UNKNOWN",
        }
    }

    /// The HTTP status the spec pairs with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::PaginationInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::UpstreamUnavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error a client can see: an OCI code, a human message, an optional
/// status override and extra response headers (e.g. `Retry-After`, `Range`).
#[derive(Debug, Clone, thiserror::Error)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    /// Overrides `code.status()` where the spec pairs a code with another
    /// status (e.g. 413 for an oversize manifest, 416 for a bad chunk).
    pub status: Option<u16>,
    /// Extra headers to send with the error response.
    pub headers: Vec<(&'static str, String)>,
    /// Optional structured detail for the JSON body.
    pub detail: Option<serde_json::Value>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError { code, message: message.into(), status: None, headers: Vec::new(), detail: None }
    }

    /// Sets the HTTP status (for codes the spec uses with several statuses).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The HTTP status of the response.
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// An internal failure: the message is for logs only; clients see a
    /// generic text.
    pub fn internal(message: impl Into<String>) -> Self {
        RegistryError::new(ErrorCode::Internal, message)
    }

    /// The JSON body of the spec's error format. Internal errors never leak
    /// their message.
    pub fn body(&self) -> serde_json::Value {
        let message =
            if self.code == ErrorCode::Internal { "internal server error".to_owned() } else { self.message.clone() };
        let mut err = serde_json::json!({ "code": self.code.as_str(), "message": message });
        if let Some(d) = &self.detail {
            err["detail"] = d.clone();
        }
        serde_json::json!({ "errors": [err] })
    }

    pub fn blob_unknown(d: &crate::Digest) -> Self {
        RegistryError::new(ErrorCode::BlobUnknown, format!("blob {d} is not known to this repository"))
    }

    pub fn manifest_unknown(r: impl fmt::Display) -> Self {
        RegistryError::new(ErrorCode::ManifestUnknown, format!("manifest {r} is not known"))
    }

    pub fn upload_unknown() -> Self {
        RegistryError::new(ErrorCode::BlobUploadUnknown, "upload session is not known (it may have expired)")
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        RegistryError::new(ErrorCode::Unsupported, message)
    }

    pub fn denied(message: impl Into<String>) -> Self {
        RegistryError::new(ErrorCode::Denied, message)
    }
}

impl From<crate::storage::StorageError> for RegistryError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as S;
        match e {
            S::DigestMismatch { expected, actual } => RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("content digest {actual} does not match {expected}"),
            ),
            S::UploadUnknown => RegistryError::upload_unknown(),
            S::OffsetMismatch { expected, got } => RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("chunk starts at {got} but the upload holds {expected} bytes"),
            )
            .with_header("Range", range_header(expected))
            .with_status(416),
            S::SizeMismatch { expected, actual } => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("content length {actual} does not match declared {expected}"),
            ),
            S::NotFound => RegistryError::new(ErrorCode::BlobUnknown, "not found"),
            S::BodyError(m) => {
                RegistryError::new(ErrorCode::BlobUploadInvalid, format!("request body ended early: {m}"))
            }
            other => RegistryError::internal(other.to_string()),
        }
    }
}

/// The `Range` header value for an upload holding `size` bytes
/// (`0-(size-1)`, and `0-0` for an empty upload, as distribution does).
pub fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
