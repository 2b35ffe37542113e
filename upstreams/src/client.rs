//! [`OciUpstream`]: the generic OCI Distribution client behind every
//! upstream (Docker Hub, GHCR, Quay and any other registry).
//!
//! This file holds the client itself: its settings, construction and
//! accessors. The rest is split by job:
//! - `request`: one request, end to end: the auth flow, retries with
//!   backoff within one deadline, and the circuit breaker's side of it;
//! - `response`: reading answers: status → [`Failure`], headers
//!   (`Retry-After`, `ratelimit-*`, digests, media types), capped bodies;
//! - `api`: the [`cove_core::Upstream`] implementation (manifests, blobs,
//!   tag and referrers lists with their `Link` pagination, ping).

use std::sync::Arc;
use std::time::Duration;

use cove_core::upstream::{RateLimit, UpstreamError};
use cove_core::RepoName;
use reqwest::header::HeaderMap;
use reqwest::Url;

use crate::auth::AuthState;
use crate::config::{ConfigError, ResolvedUpstream};
use crate::health::Health;

mod api;
mod request;
mod response;

use response::parse_rate_limit;
pub use response::parse_retry_after;
pub(crate) use response::{read_capped, status_failure, transport_failure, Failure};

/// The manifest media types Cove asks upstreams for.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted from an upstream (4 MiB, as distribution).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A registry reached over the OCI Distribution API.
///
/// One pooled HTTP client per upstream; bearer tokens cached per scope;
/// idempotent requests retried with exponential backoff and jitter, all
/// attempts of one request within one deadline; a circuit breaker
/// ([`crate::health`]) fails requests at once while the upstream is silent.
pub struct OciUpstream {
    host: String,
    base: Url,
    tag_ttl: Duration,
    revalidate_wait: Duration,
    client: reqwest::Client,
    auth: Arc<AuthState>,
    health: Arc<Health>,
    response_timeout: Duration,
    request_deadline: Duration,
    retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
    max_manifest_size: usize,
    ratelimit_floor: u64,
    /// The latest `ratelimit-*` headers seen on a manifest response.
    rate_limit: std::sync::Mutex<Option<RateLimit>>,
}

impl std::fmt::Debug for OciUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciUpstream")
            .field("host", &self.host)
            .field("url", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl OciUpstream {
    /// Builds the client for a resolved upstream, reading its credentials
    /// file if it has one. Does no network I/O.
    pub fn new(upstream: &ResolvedUpstream) -> Result<Self, ConfigError> {
        let credentials = upstream.credentials()?;
        let cfg = &upstream.config;
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .tls_danger_accept_invalid_certs(!cfg.tls_verify)
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("cove/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError {
                path: crate::config::key_path(&upstream.host, ""),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(OciUpstream {
            host: upstream.host.clone(),
            base: upstream.url.clone(),
            tag_ttl: cfg.tag_ttl,
            revalidate_wait: cfg.revalidate_wait,
            auth: Arc::new(AuthState::new(credentials, upstream.url.scheme() == "https")),
            health: Health::new(&upstream.host),
            response_timeout: cfg.response_timeout,
            request_deadline: cfg.request_deadline,
            client,
            retries: cfg.retries,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(5),
            max_manifest_size: MAX_MANIFEST_SIZE,
            ratelimit_floor: cfg.ratelimit_floor,
            rate_limit: std::sync::Mutex::new(None),
        })
    }

    /// Builds every resolved upstream, reporting every failure.
    pub fn build_all(upstreams: &[ResolvedUpstream]) -> Result<Vec<Arc<Self>>, Vec<ConfigError>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for u in upstreams {
            match OciUpstream::new(u) {
                Ok(c) => out.push(Arc::new(c)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Sets the backoff between retries: `base * 2^attempt`, capped at
    /// `max`, each scaled by a random factor in [0.5, 1]. Default 200 ms, 5 s.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// The longest `Retry-After` (on 429) waited out before retrying; a
    /// longer one is returned to the caller. Default 5 s.
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Overrides the manifest size cap (default [`MAX_MANIFEST_SIZE`]).
    pub fn with_max_manifest_size(mut self, max: usize) -> Self {
        self.max_manifest_size = max;
        self
    }

    /// The upstream's base URL.
    pub fn url(&self) -> &Url {
        &self.base
    }

    /// How long a tag from this upstream stays fresh in the cache.
    pub fn tag_ttl(&self) -> Duration {
        self.tag_ttl
    }

    /// How long a client waits for a tag's revalidation before it is served
    /// the cached copy as stale.
    pub fn revalidate_wait(&self) -> Duration {
        self.revalidate_wait
    }

    /// Below how many remaining pulls cached tags are not revalidated.
    pub fn ratelimit_floor(&self) -> u64 {
        self.ratelimit_floor
    }

    /// Records the rate limit a manifest response announced, if it did.
    fn record_rate_limit(&self, headers: &HeaderMap) {
        if let Some(r) = parse_rate_limit(headers) {
            tracing::debug!(upstream = %self.host, limit = r.limit, remaining = r.remaining, "upstream rate limit");
            *self.rate_limit.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
    }

    /// Whether credentials are configured (never the credentials).
    pub fn has_credentials(&self) -> bool {
        self.auth.credentials().is_some()
    }

    fn endpoint(&self, repo: &RepoName, tail: &str) -> Result<Url, UpstreamError> {
        // Names, tags and digests are validated types: no characters that
        // need escaping.
        let s = format!("{}/v2/{}/{}", self.base.as_str().trim_end_matches('/'), repo, tail);
        Url::parse(&s).map_err(|e| UpstreamError::Invalid(format!("bad request URL: {e}")))
    }
}
