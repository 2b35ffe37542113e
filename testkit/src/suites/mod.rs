//! The shared trait suites, in the manner of object_store's integration
//! module: free functions every implementation's tests call, with
//! differences in capability as parameters, never silent skips.
//!
//! - [`storage`]: every `Storage` (the bare drivers and `GuardedStorage`).
//! - [`object`]: what the object backend adds (replicas, multipart).
//! - [`auth`]: every `Authenticator`.
//! - [`upstream`]: every `Upstream` (`OciUpstream`, [`crate::FakeUpstream`]).

pub mod auth;
pub mod object;
pub mod storage;
pub mod upstream;
