//! The [`Upstream`] plugin trait: a remote registry that Cove caches.

use bytes::Bytes;

use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::name::{Reference, RepoName};
use crate::storage::ByteStream;

/// A manifest as an upstream describes or returns it.
#[derive(Debug, Clone)]
pub struct UpstreamManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The exact bytes (GET); `None` for a HEAD.
    pub bytes: Option<Bytes>,
}

/// A blob body streaming from an upstream.
pub struct UpstreamBlob {
    /// The size the upstream announced, if it did.
    pub size: Option<u64>,
    pub stream: ByteStream,
}

/// What an upstream can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("not found upstream")]
    NotFound,
    /// Rate limited; `retry_after` is upstream's `Retry-After` as
    /// delay-seconds (an implementation converts an HTTP date).
    #[error("upstream rate limit{}", .retry_after.as_ref().map(|r| format!(" (Retry-After: {r})")).unwrap_or_default())]
    TooManyRequests { retry_after: Option<String> },
    #[error("upstream denied access: {0}")]
    Unauthorized(String),
    /// Connection failure, timeout or 5xx: the cache may serve stale content.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream answered something that violates the protocol.
    #[error("invalid upstream response: {0}")]
    Invalid(String),
}

/// Whether an upstream answers, as its client has seen it (see the
/// circuit breaker in `cove-upstreams`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// False while requests fail at once because the upstream stopped
    /// answering (no connection, no response in time).
    pub healthy: bool,
    /// When the current unhealthy episode began.
    pub unhealthy_since: Option<std::time::SystemTime>,
    /// Healthy ↔ unhealthy transitions since start.
    pub changes: u64,
    /// Time spent unhealthy since start, the current episode included.
    pub unhealthy_total: std::time::Duration,
    /// The last request that got no answer: when, and why.
    pub last_failure: Option<(std::time::SystemTime, String)>,
}

/// An upstream's pull budget as it last announced it, from Docker Hub's
/// `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`
/// headers on manifest responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Pulls allowed per window.
    pub limit: u64,
    /// Pulls left in the current window.
    pub remaining: u64,
    /// The window the numbers are for (`w=`), when given.
    pub window: Option<std::time::Duration>,
    /// When the upstream said so.
    pub observed: std::time::SystemTime,
}

impl RateLimit {
    /// How long an observation is believed without a newer one when the
    /// upstream names no window (Docker Hub's is 6 h).
    pub const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

    /// Whether the window it was observed in may still be running: after
    /// it, the budget has been renewed.
    pub fn current(&self) -> bool {
        let window = self.window.unwrap_or(Self::DEFAULT_WINDOW);
        self.observed.elapsed().map(|e| e < window).unwrap_or(true)
    }
}

/// A remote registry.
///
/// # Contract
/// - `repo` is the name in the upstream's own namespace (`library/nginx`).
/// - Manifests are returned byte for byte with their media type and the
///   digest the upstream announced (or computed from the bytes if it did
///   not); the caller verifies.
/// - Retries only idempotent requests, a bounded number of times.
/// - Never logs credentials.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// The origin host this upstream stands for (`docker.io`).
    fn host(&self) -> &str;

    /// Resolves a reference with a HEAD request.
    async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<UpstreamManifest, UpstreamError>;

    /// Fetches a manifest (size-capped).
    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<UpstreamManifest, UpstreamError>;

    /// The size of a blob, by HEAD.
    async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, UpstreamError>;

    /// Streams a blob.
    async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<UpstreamBlob, UpstreamError>;

    /// Lists the tags of a repository.
    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError>;

    /// The referrers of manifest `subject` from the upstream's referrers API
    /// (`GET /v2/<repo>/referrers/<digest>`), unfiltered, every page.
    /// `Ok(None)`: the upstream has no referrers API (it answered 404), so
    /// the caller falls back to the tag schema (`<alg>-<hex>` tag).
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Option<Vec<Descriptor>>, UpstreamError>;

    /// Checks that the upstream answers as a registry (`GET /v2/` returns
    /// 200 or an authentication challenge), without retries. For status
    /// reports; says nothing about whether a given repository is readable.
    async fn ping(&self) -> Result<(), UpstreamError>;

    /// Whether the upstream answers now. An implementation that fails fast
    /// while its upstream is silent reports it here; one that cannot tell
    /// reports healthy.
    fn health(&self) -> UpstreamHealth;

    /// The rate limit the upstream announced on its latest manifest
    /// response, if it announces one.
    fn rate_limit(&self) -> Option<RateLimit>;
}
