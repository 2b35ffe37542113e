//! Cove's core: the domain types (names, references, digests, manifests), the
//! error model (OCI error codes with typed details), the plugin traits ([`Storage`],
//! [`Upstream`], [`Authenticator`], [`AccessPolicy`]) and the registry engine
//! that implements OCI Distribution semantics on top of them, free of HTTP.

pub mod auth;
pub mod cache;
pub mod copy;
pub mod digest;
pub mod error;
pub mod gc;
pub mod lease;
pub mod manifest;
pub mod name;
pub mod range;
pub mod registry;
pub mod retention;
pub mod scrub;
pub mod secret;
pub mod storage;
pub mod upstream;

pub use auth::{AccessPolicy, Action, AuthRequest, Authenticator, Identity, UnknownAction};
pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{Challenge, ChallengeError, ErrorCode, ErrorDetail, RegistryError, Result};
pub use name::{Reference, RepoName, Tag};
pub use range::RangeRequest;
pub use registry::Registry;
pub use secret::Secret;
pub use storage::{BlobReader, ByteRange, ByteStream, OpenBlob, Storage, StorageError};
pub use upstream::Upstream;
