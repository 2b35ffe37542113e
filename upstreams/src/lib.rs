//! Upstream registry clients for Cove's pull-through cache.
//!
//! - [`UpstreamConfig`]: one `[upstreams."HOST"]` table; [`resolve_upstreams`]
//!   merges the user's tables over the [`presets`] (docker.io, ghcr.io,
//!   quay.io) and validates them, naming the offending key in each error.
//! - [`OciUpstream`]: the generic OCI Distribution client implementing
//!   [`cove_core::Upstream`] (bearer-token and Basic auth, retries, caps).
//!
//! Wiring from a server config:
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use cove_upstreams::{resolve_upstreams, OciUpstream, UpstreamConfig};
//! let tables: BTreeMap<String, UpstreamConfig> = BTreeMap::new(); // from TOML
//! let resolved = resolve_upstreams(&tables).expect("valid config");
//! let upstreams = OciUpstream::build_all(&resolved).expect("credentials readable");
//! for u in &upstreams {
//!     let _ttl = u.tag_ttl();
//!     let _dyn: std::sync::Arc<dyn cove_core::Upstream> = u.clone();
//! }
//! ```

mod auth;
pub mod challenge;
mod client;
pub mod config;
mod health;

pub use challenge::{next_link, parse_www_authenticate, Challenge};
pub use client::{parse_retry_after, OciUpstream, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE};
pub use config::{
    presets, resolve_upstreams, ConfigError, Credentials, ResolvedUpstream, Secret, UpstreamConfig, PRESETS,
};
