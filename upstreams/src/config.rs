//! Upstream configuration: one table per origin host, merged over the
//! built-in presets.
//!
//! ```toml
//! [upstreams."docker.io"]
//! url = "https://registry-1.docker.io"   # preset default
//! tag_ttl = "5m"
//! credentials_file = "/etc/cove/dockerhub.cred"
//!
//! [upstreams."registry.k8s.io"]          # a new upstream
//! url = "https://registry.k8s.io"
//!
//! [upstreams."quay.io"]
//! enabled = false                         # removes the preset
//! ```
//!
//! This file holds the settings of one upstream ([`UpstreamConfig`], its
//! defaults and the presets) and the error type; `resolve` merges the
//! tables over the presets and validates them; `credentials` reads an
//! upstream's credentials (inline or from `credentials_file`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod credentials;
mod resolve;

pub use cove_core::Secret;
pub use credentials::Credentials;
pub use resolve::{resolve_upstreams, valid_host, validate, ResolvedUpstream};

/// The built-in upstreams: origin host → registry URL. Enabled with default
/// settings unless the configuration says otherwise.
pub const PRESETS: &[(&str, &str)] =
    &[("docker.io", "https://registry-1.docker.io"), ("ghcr.io", "https://ghcr.io"), ("quay.io", "https://quay.io")];

/// The most retries a configuration may ask for.
pub const MAX_RETRIES: u32 = 10;

/// One upstream's settings, as written under `[upstreams."HOST"]`.
///
/// Every field is optional in TOML; the defaults are documented per field.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the registry (`https://registry-1.docker.io`). Required
    /// for a host without a preset; for a preset, replaces its URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `false` removes the upstream (also a preset). Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a tag resolved from this upstream is served from cache
    /// before it is revalidated. Humantime string, default `"5m"`.
    #[serde(default = "default_tag_ttl", deserialize_with = "de_duration")]
    pub tag_ttl: Duration,
    /// How long a client waits for the revalidation of a cached tag past
    /// `tag_ttl` before it is served the cached manifest (marked `stale`;
    /// the revalidation finishes in the background). Default `"1500ms"`.
    #[serde(default = "default_revalidate_wait", deserialize_with = "de_duration")]
    pub revalidate_wait: Duration,
    /// User name for the registry's token service or Basic auth.
    #[serde(default)]
    pub username: Option<String>,
    /// Password or access token; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding `username:password` on its first non-empty,
    /// non-`#` line (the password may contain `:`). Read when the upstream
    /// is built; exclusive with `username`/`password`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Verify the registry's TLS certificate. Default `true`.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// Time allowed to open a connection (TCP and TLS). Default `"3s"`.
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to its response headers.
    /// Default `"5s"`.
    #[serde(default = "default_response_timeout", deserialize_with = "de_duration")]
    pub response_timeout: Duration,
    /// Time allowed between two reads of a response body (not a total
    /// limit, so large blobs stream as long as bytes keep coming); a blob
    /// download that stalls longer fails. Default `"30s"`.
    #[serde(default = "default_read_timeout", deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Time allowed for all attempts of one request (token, retries,
    /// backoff, up to the response headers; a manifest's body too), so
    /// retries never multiply the timeouts. Default `"10s"`.
    #[serde(default = "default_request_deadline", deserialize_with = "de_duration")]
    pub request_deadline: Duration,
    /// Retries of an idempotent request after a transient failure (5xx,
    /// connect error, timeout). Default `3`, at most [`MAX_RETRIES`].
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// When the upstream's `ratelimit-remaining` (Docker Hub's pull limit
    /// headers) falls below this, cached tags are served without
    /// revalidation (marked `stale`) and prefetching pauses, so the pulls
    /// left go to images not cached yet. Default `10`; `0` turns it off.
    #[serde(default = "default_ratelimit_floor")]
    pub ratelimit_floor: u64,
}

fn default_true() -> bool {
    true
}
fn default_tag_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_revalidate_wait() -> Duration {
    Duration::from_millis(1500)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_deadline() -> Duration {
    Duration::from_secs(10)
}
fn default_retries() -> u32 {
    3
}
fn default_ratelimit_floor() -> u64 {
    10
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("invalid duration {s:?} ({e}); use e.g. \"30s\", \"5m\", \"1h\""))
    })
}

impl Default for UpstreamConfig {
    /// All defaults, no URL.
    fn default() -> Self {
        UpstreamConfig {
            url: None,
            enabled: true,
            tag_ttl: default_tag_ttl(),
            revalidate_wait: default_revalidate_wait(),
            username: None,
            password: None,
            credentials_file: None,
            tls_verify: true,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            read_timeout: default_read_timeout(),
            request_deadline: default_request_deadline(),
            retries: default_retries(),
            ratelimit_floor: default_ratelimit_floor(),
        }
    }
}

impl UpstreamConfig {
    /// Defaults with the given URL (how tests point an upstream at a local
    /// registry).
    pub fn with_url(url: impl Into<String>) -> Self {
        UpstreamConfig { url: Some(url.into()), ..UpstreamConfig::default() }
    }
}

/// A configuration problem, with the TOML path of the offending key
/// (`upstreams."docker.io".url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted TOML path of the key.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// The TOML path of `key` in the table of upstream `host`.
pub fn key_path(host: &str, key: &str) -> String {
    if key.is_empty() {
        format!("upstreams.\"{host}\"")
    } else {
        format!("upstreams.\"{host}\".{key}")
    }
}

/// The built-in presets as configurations (each with its URL set).
pub fn presets() -> BTreeMap<String, UpstreamConfig> {
    PRESETS.iter().map(|(host, url)| ((*host).to_owned(), UpstreamConfig::with_url(*url))).collect()
}
