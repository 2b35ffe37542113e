//! The one error model: every failure a client can see carries an OCI error
//! code, a message, and typed facts about it ([`ErrorDetail`]: where an
//! upload stands, how long to wait, how to authenticate, ...). Nothing here
//! knows HTTP: the server maps code and detail to a status, headers and the
//! spec's JSON body in exactly one place (`cove_server::error`).

use std::fmt;
use std::time::Duration;

use crate::digest::Digest;

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
    /// A read range that cannot be satisfied. The spec has no code for it;
    /// out-of-order upload chunks are `BLOB_UPLOAD_INVALID` with
    /// [`ErrorDetail::UploadOffset`].
    RangeInvalid,
    /// Something Cove depends on (an upstream registry, the OIDC issuer)
    /// or one of its own facilities is unavailable now, and nothing cached
    /// can stand in.
    Unavailable,
    /// A configuration handed to Cove (an admin reload) was rejected.
    ConfigInvalid,
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
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::ConfigInvalid => "CONFIG_INVALID",
            ErrorCode::Internal => "UNKNOWN",
        }
    }
}

/// Typed facts about an error, for the client to act on. Each is rendered
/// by the server (as a status, a header or part of the JSON body).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorDetail {
    /// The upload session holds `size` bytes: a chunk must start there.
    UploadOffset { size: u64 },
    /// A chunk's declared range is not `start-end`.
    ChunkRangeInvalid,
    /// The requested byte range lies outside a blob of `size` bytes.
    UnsatisfiableRange { size: u64 },
    /// The content is larger than the `limit` in bytes.
    TooLarge { limit: u64 },
    /// An upstream answered, but with something Cove must not pass on.
    UpstreamInvalid,
    /// How long the client should wait before trying again.
    RetryAfter(Duration),
    /// How the client may authenticate to get in.
    Challenge(Challenge),
    /// The digest the error is about (a manifest's missing reference).
    Digest(Digest),
    /// A push named more tags than the `limit` one request may carry.
    TooManyTags { limit: usize },
    /// Storage has no room (disk full, quota, or below `storage.min_free`):
    /// `507 Insufficient Storage`.
    StorageFull,
}

/// How a client should present credentials when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic credentials for `realm`.
    Basic { realm: String },
    /// A bearer token: from the token endpoint at `realm` (the Docker token
    /// flow, with `service` and the `scopes` to ask for), or an OIDC token.
    Bearer { realm: String, service: Option<String>, scopes: Vec<String>, error: Option<ChallengeError> },
}

/// Why a bearer token was refused (RFC 6750 error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// Expired, malformed or not ours.
    InvalidToken,
    /// Valid, but without the scope the request needs.
    InsufficientScope,
}

impl ChallengeError {
    /// The RFC 6750 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeError::InvalidToken => "invalid_token",
            ChallengeError::InsufficientScope => "insufficient_scope",
        }
    }
}

/// An error a client can see: an OCI code, a human message and an optional
/// typed [`ErrorDetail`].
#[derive(Debug, Clone, thiserror::Error)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<ErrorDetail>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError { code, message: message.into(), detail: None }
    }

    pub fn with_detail(mut self, detail: ErrorDetail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// An internal failure: the message is for logs only; clients see a
    /// generic text.
    pub fn internal(message: impl Into<String>) -> Self {
        RegistryError::new(ErrorCode::Internal, message)
    }

    /// `UNAUTHORIZED`, with how to authenticate when credentials can help.
    pub fn unauthorized(message: impl Into<String>, challenge: Option<Challenge>) -> Self {
        let e = RegistryError::new(ErrorCode::Unauthorized, message);
        match challenge {
            Some(c) => e.with_detail(ErrorDetail::Challenge(c)),
            None => e,
        }
    }

    /// The challenge the error carries, if any.
    pub fn challenge(&self) -> Option<&Challenge> {
        match &self.detail {
            Some(ErrorDetail::Challenge(c)) => Some(c),
            _ => None,
        }
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

    /// Storage has no room: `UNAVAILABLE` with [`ErrorDetail::StorageFull`].
    /// `why` (which may name paths) goes to logs only; clients read that
    /// storage is full.
    pub fn storage_full(why: impl fmt::Display) -> Self {
        tracing::debug!(%why, "storage full");
        RegistryError::new(ErrorCode::Unavailable, "storage is full: the registry has no room for this upload")
            .with_detail(ErrorDetail::StorageFull)
    }

    /// Whether this is a storage-full refusal.
    pub fn is_storage_full(&self) -> bool {
        self.detail == Some(ErrorDetail::StorageFull)
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
            .with_detail(ErrorDetail::UploadOffset { size: expected }),
            S::SizeMismatch { expected, actual } => RegistryError::new(
                ErrorCode::SizeInvalid,
                format!("content length {actual} does not match declared {expected}"),
            ),
            S::Full(m) => RegistryError::storage_full(m),
            S::NotFound => RegistryError::new(ErrorCode::BlobUnknown, "not found"),
            S::BodyError(m) => {
                RegistryError::new(ErrorCode::BlobUploadInvalid, format!("request body ended early: {m}"))
            }
            other => RegistryError::internal(other.to_string()),
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
