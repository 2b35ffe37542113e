//! Cove's test kit: everything the crates' tests share, written once.
//!
//! | module | what |
//! |---|---|
//! | [`peers`] | real peers: distribution, containerd, podman, skopeo, s3s-fs, Garage |
//! | [`fault`] | the misbehaving registry server (any status, truncated/slow/chunked bodies) |
//! | [`faulty_store`] | [`faulty_store::FaultyStore`]: the in-memory object store with refused copies and failing GETs |
//! | [`token`] | the token issuer for distribution's `auth: token` (ES256 JWT, `x5c`) |
//! | [`oidc`] | a loopback OIDC issuer, signing keys, forged tokens |
//! | [`certs`] | a test CA, server certificates, self-signed pairs (openssl CLI) |
//! | [`oci`], [`layout`] | OCI media types, images in memory, OCI layouts on disk |
//! | [`content`] | large generated content ([`content::Pattern`]), fast SHA-256, RSS probes |
//! | [`cove_bin`] | the `cove` binary under test (`$COVE_BIN`, a fresh build, or one built on demand) |
//! | [`util`] | ports, random bytes, digests, streams, tools, parse helpers |
//! | [`fake_upstream`] | [`FakeUpstream`]: an in-memory `Upstream` with faults |
//! | [`suites`] | the shared `Storage`, object-backend, `Authenticator` and `Upstream` suites |
//! | `fswatch` | counting directory reads (Linux) |
//!
//! It is a dev-dependency only (`publish = false`). It depends on
//! cove-core and cove-backends, so only *integration* tests of those crates
//! can use it (Cargo allows that dev-dependency cycle); nothing under their
//! `src/` does.

pub mod certs;
pub mod content;
pub mod cove_bin;
pub mod fake_upstream;
pub mod fault;
pub mod faulty_store;
#[cfg(target_os = "linux")]
pub mod fswatch;
pub mod layout;
pub mod oci;
pub mod oidc;
pub mod peers;
pub mod suites;
pub mod token;
pub mod util;

pub use fake_upstream::{FakeUpstream, Fault};
