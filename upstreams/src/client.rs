//! [`OciUpstream`]: the generic OCI Distribution client behind every
//! upstream (Docker Hub, GHCR, Quay and any other registry).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use cove_core::manifest::{Descriptor, OCI_INDEX};
use cove_core::upstream::{RateLimit, UpstreamBlob, UpstreamError, UpstreamHealth, UpstreamManifest};
use cove_core::{Digest, DigestHasher, Reference, RepoName, Upstream};
use futures::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LINK, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::{AuthState, Authorization};
use crate::config::{ConfigError, ResolvedUpstream};
use crate::health::{spawn_probe, Health};

/// The manifest media types Cove asks upstreams for.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted from an upstream (4 MiB, as distribution).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Largest tag-list page accepted from an upstream.
const MAX_TAGS_PAGE: usize = 32 << 20;

/// Most tag-list pages followed through `Link` headers.
const MAX_TAG_PAGES: usize = 1000;

/// Most referrers-list pages followed through `Link` headers.
const MAX_REFERRERS_PAGES: usize = 100;

/// The outcome of one failed attempt: what to tell the caller, and whether
/// another attempt may succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Do not retry (404, 401, protocol violation).
    Fatal(UpstreamError),
    /// Transient answer (5xx, 408): retry with backoff.
    Retry(UpstreamError),
    /// No answer at all (connection failed, no response headers in time,
    /// body cut off): retry with backoff, and tell the circuit breaker.
    Silent(UpstreamError),
    /// 429 with a `Retry-After` the upstream asked us to wait.
    RetryAfter(UpstreamError, Duration),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Fatal(e)
    }
}

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

    /// Runs `attempt` up to `1 + retries` times, sleeping between transient
    /// failures, all within `request_deadline`. Fails at once while the
    /// circuit is open; a request that ends without any answer opens it.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + self.request_deadline;
        let mut n: u32 = 0;
        loop {
            self.health.check()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = match tokio::time::timeout(remaining, attempt()).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Silent(UpstreamError::Unavailable(format!(
                    "no answer from {} within {:?} (upstreams.\"{}\".request_deadline)",
                    self.host, self.request_deadline, self.host
                )))),
            };
            // Any HTTP answer, even an error status, means the upstream is there.
            if !matches!(outcome, Err(Failure::Silent(_))) {
                self.health.answered();
            }
            let (err, wait, silent) = match outcome {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => (e, self.backoff(n), false),
                Err(Failure::Silent(e)) => (e, self.backoff(n), true),
                Err(Failure::RetryAfter(e, wait)) if wait > self.max_retry_after => return Err(e),
                Err(Failure::RetryAfter(e, wait)) => (e, wait, false),
            };
            let out_of_time = Instant::now() + wait >= deadline;
            if n >= self.retries || out_of_time {
                if silent {
                    self.went_silent(&err);
                }
                return Err(err);
            }
            n += 1;
            tracing::debug!(
                upstream = %self.host, what, attempt = n, wait_ms = wait.as_millis() as u64,
                error = %err, "retrying upstream request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Opens the circuit after a request got no answer, and starts the one
    /// probe that closes it again.
    fn went_silent(&self, err: &UpstreamError) {
        if !self.health.silent(&err.to_string()) {
            return;
        }
        let (client, timeout) = (self.client.clone(), self.response_timeout);
        let url = format!("{}/v2/", self.base.as_str().trim_end_matches('/'));
        spawn_probe(&self.health, move || {
            let request = client.get(url.clone()).send();
            async move { matches!(tokio::time::timeout(timeout, request).await, Ok(Ok(_))) }
        });
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.backoff_base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        exp.min(self.backoff_max).mul_f64(0.5 + 0.5 * jitter())
    }

    /// One attempt of a request, with the auth flow: sends with cached
    /// credentials; on 401 answers the challenge once and sends again.
    /// Returns the response if its status is 2xx.
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&'static str>,
        scope: &str,
    ) -> Result<Response, Failure> {
        check_status(self.send_answered(method, url, accept, scope).await?)
    }

    /// [`Self::send`] without the status check: the response whatever its
    /// status, except a refusal after authentication.
    async fn send_answered(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&'static str>,
        scope: &str,
    ) -> Result<Response, Failure> {
        let auth = self.auth.authorize(&self.client, scope).await?;
        let resp = self.send_once(method, url, accept, auth.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let rejected = match &auth {
            Some(Authorization::Bearer(t)) => Some(t.clone()),
            _ => None,
        };
        let auth = self.auth.answer_challenge(&self.client, resp.headers(), scope, rejected.as_deref()).await?;
        let resp = self.send_once(method, url, accept, Some(&auth)).await?;
        match resp.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Failure::Fatal(UpstreamError::Unauthorized(
                format!("{} answered {} after authentication", self.host, resp.status()),
            ))),
            _ => Ok(resp),
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        accept: Option<&'static str>,
        auth: Option<&Authorization>,
    ) -> Result<Response, Failure> {
        tracing::debug!(upstream = %self.host, %method, %url, "upstream request");
        let mut rb = self.client.request(method.clone(), url.clone());
        if let Some(a) = accept {
            rb = rb.header(ACCEPT, a);
        }
        if let Some(a) = auth {
            rb = a.apply(rb, self.auth.credentials());
        }
        let started = Instant::now();
        let resp = match tokio::time::timeout(self.response_timeout, rb.send()).await {
            Ok(r) => r.map_err(transport_failure)?,
            Err(_) => {
                return Err(Failure::Silent(UpstreamError::Unavailable(format!(
                    "no response headers from {} within {:?} (upstreams.\"{}\".response_timeout)",
                    self.host, self.response_timeout, self.host
                ))))
            }
        };
        tracing::debug!(
            upstream = %self.host, %method, %url, status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64, "upstream response"
        );
        Ok(resp)
    }

    /// HEAD or GET of a manifest. `Ok(None)`: a HEAD by tag whose answer
    /// carries no digest.
    async fn manifest(
        &self,
        method: Method,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<UpstreamManifest>, UpstreamError> {
        let url = self.endpoint(repo, &format!("manifests/{reference}"))?;
        let scope = pull_scope(repo);
        let (url, scope, method) = (&url, scope.as_str(), &method);
        self.retrying("manifest", || async move {
            let resp = self.send_answered(method, url, Some(MANIFEST_ACCEPT), scope).await?;
            // Docker Hub announces the pull budget on manifest answers, a 429 included.
            self.record_rate_limit(resp.headers());
            let resp = check_status(resp)?;
            let announced = announced_digest(resp.headers())?;
            let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).map(media_type);
            if method == Method::HEAD {
                let size = header_u64(resp.headers(), CONTENT_LENGTH.as_str())
                    .ok_or_else(|| invalid("manifest HEAD without a Content-Length"))?;
                let media_type = content_type.ok_or_else(|| invalid("manifest HEAD without a Content-Type"))?;
                return Ok(Some(UpstreamManifest {
                    digest: match (announced, reference) {
                        (Some(d), _) => d,
                        (None, Reference::Digest(d)) => d.clone(),
                        // Nothing says which digest the tag points to.
                        (None, Reference::Tag(_)) => return Ok(None),
                    },
                    media_type,
                    size,
                    bytes: None,
                }));
            }
            let bytes = read_capped(resp, self.max_manifest_size, "manifest").await?;
            let media_type = match content_type {
                Some(m) => m,
                None => {
                    media_type_field(&bytes).ok_or_else(|| invalid("manifest without a Content-Type or mediaType"))?
                }
            };
            let digest = match announced {
                Some(d) => d,
                None => {
                    let alg = match reference {
                        Reference::Digest(d) => d.algorithm(),
                        Reference::Tag(_) => cove_core::Algorithm::Sha256,
                    };
                    let mut h = DigestHasher::new(alg);
                    h.update(&bytes);
                    h.finish()
                }
            };
            Ok(Some(UpstreamManifest { digest, media_type, size: bytes.len() as u64, bytes: Some(bytes) }))
        })
        .await
    }
}

/// Docker Hub's `ratelimit-limit: 100;w=21600` and
/// `ratelimit-remaining: 76;w=21600` (the draft RateLimit header fields'
/// older form): both must be there and parse.
pub fn parse_rate_limit(h: &HeaderMap) -> Option<RateLimit> {
    fn parts(v: &str) -> Option<(u64, Option<Duration>)> {
        let mut it = v.split(';');
        let n = it.next()?.trim().parse().ok()?;
        let w = it
            .filter_map(|p| p.trim().strip_prefix("w="))
            .find_map(|w| w.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Some((n, w))
    }
    let (limit, w1) = parts(header_str(h, "ratelimit-limit")?)?;
    let (remaining, w2) = parts(header_str(h, "ratelimit-remaining")?)?;
    Some(RateLimit { limit, remaining, window: w2.or(w1), observed: SystemTime::now() })
}

/// A random number in [0, 1) from the standard library's hasher keys.
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let x = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn invalid(msg: &str) -> Failure {
    Failure::Fatal(UpstreamError::Invalid(msg.to_owned()))
}

pub(crate) fn pull_scope(repo: &RepoName) -> String {
    format!("repository:{repo}:pull")
}

/// Maps a transport error (connect, timeout, reset) to a retryable failure.
pub(crate) fn transport_failure(e: reqwest::Error) -> Failure {
    if e.is_builder() {
        return Failure::Fatal(UpstreamError::Invalid(format!("bad request: {e}")));
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Failure::Silent(UpstreamError::Unavailable(format!("{kind}: {}", error_chain(&e))))
}

/// An error and its sources on one line (reqwest's Display hides causes).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Maps a non-401 response status to success or a failure.
pub(crate) fn check_status(resp: Response) -> Result<Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(status_failure(status, resp.headers()))
}

pub(crate) fn status_failure(status: StatusCode, headers: &HeaderMap) -> Failure {
    match status.as_u16() {
        404 => Failure::Fatal(UpstreamError::NotFound),
        401 | 403 => Failure::Fatal(UpstreamError::Unauthorized(format!("upstream answered {status}"))),
        429 => {
            let raw = header_str(headers, RETRY_AFTER.as_str());
            let wait = raw.and_then(parse_retry_after);
            // Passed on as delay-seconds: an HTTP date becomes the seconds
            // until it (rounded up), so nothing downstream parses dates.
            let retry_after = match wait {
                Some(w) if raw.is_some_and(|r| r.parse::<u64>().is_err()) => {
                    Some((w.as_secs() + u64::from(w.subsec_nanos() > 0)).to_string())
                }
                _ => raw.map(str::to_owned),
            };
            let e = UpstreamError::TooManyRequests { retry_after };
            match wait {
                Some(w) => Failure::RetryAfter(e, w),
                None => Failure::Fatal(e),
            }
        }
        408 | 500..=599 => Failure::Retry(UpstreamError::Unavailable(format!("upstream answered {status}"))),
        _ => Failure::Fatal(UpstreamError::Invalid(format!("unexpected status {status}"))),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name).and_then(|v| v.parse().ok())
}

/// The media type of a Content-Type value, without parameters.
fn media_type(ct: &str) -> String {
    ct.split(';').next().unwrap_or(ct).trim().to_owned()
}

fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes).ok()?.media_type
}

fn announced_digest(h: &HeaderMap) -> Result<Option<Digest>, Failure> {
    match header_str(h, "docker-content-digest") {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<Digest>().map(Some).map_err(|_| invalid("malformed Docker-Content-Digest header")),
    }
}

/// Reads a body of at most `cap` bytes. Oversize is a protocol violation;
/// a body cut short is transient.
pub(crate) async fn read_capped(resp: Response, cap: usize, what: &str) -> Result<Bytes, Failure> {
    if let Some(len) = header_u64(resp.headers(), CONTENT_LENGTH.as_str()) {
        if len > cap as u64 {
            return Err(Failure::Fatal(UpstreamError::Invalid(format!(
                "{what} is {len} bytes, more than the {cap}-byte limit"
            ))));
        }
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Failure::Silent(UpstreamError::Unavailable(format!("reading the {what} failed: {}", error_chain(&e))))
        })?;
        if buf.len() + chunk.len() > cap {
            return Err(Failure::Fatal(UpstreamError::Invalid(format!("{what} exceeds the {cap}-byte limit"))));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn body_io_error(e: reqwest::Error) -> std::io::Error {
    let kind = if e.is_timeout() { std::io::ErrorKind::TimedOut } else { std::io::ErrorKind::UnexpectedEof };
    std::io::Error::new(kind, format!("upstream body failed: {}", error_chain(&e)))
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

#[async_trait::async_trait]
impl Upstream for OciUpstream {
    fn host(&self) -> &str {
        &self.host
    }

    async fn head_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<UpstreamManifest, UpstreamError> {
        match self.manifest(Method::HEAD, repo, reference).await? {
            Some(m) => Ok(m),
            None => {
                // No digest header on a HEAD by tag: only the bytes can tell.
                let m = self.get_manifest(repo, reference).await?;
                Ok(UpstreamManifest { bytes: None, ..m })
            }
        }
    }

    async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<UpstreamManifest, UpstreamError> {
        self.manifest(Method::GET, repo, reference)
            .await?
            .ok_or_else(|| UpstreamError::Invalid("manifest GET without a body".into()))
    }

    async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64, UpstreamError> {
        let url = self.endpoint(repo, &format!("blobs/{digest}"))?;
        let scope = pull_scope(repo);
        let (url, scope) = (&url, scope.as_str());
        self.retrying("blob HEAD", || async move {
            let resp = self.send(&Method::HEAD, url, None, scope).await?;
            header_u64(resp.headers(), CONTENT_LENGTH.as_str())
                .ok_or_else(|| invalid("blob HEAD without a Content-Length"))
        })
        .await
    }

    async fn get_blob(&self, repo: &RepoName, digest: &Digest) -> Result<UpstreamBlob, UpstreamError> {
        let url = self.endpoint(repo, &format!("blobs/{digest}"))?;
        let scope = pull_scope(repo);
        let (url, scope) = (&url, scope.as_str());
        // Retried only until the response head arrives: once the stream is
        // handed out, a failure ends it with an error.
        let resp = self.retrying("blob GET", || async move { self.send(&Method::GET, url, None, scope).await }).await?;
        let size = resp.content_length();
        // A body that stalls past read_timeout fails the download; it does
        // not open the circuit (the upstream did answer, and other requests
        // may be flowing), but it is the last failure status reports show.
        let stream = resp.bytes_stream().map(|r| r.map_err(body_io_error));
        Ok(UpstreamBlob { size, stream: Box::pin(stream) })
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let scope = pull_scope(repo);
        let mut url = self.endpoint(repo, "tags/list")?;
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_TAG_PAGES {
            if !seen.insert(url.clone()) {
                return Err(UpstreamError::Invalid("tag list pagination loops".into()));
            }
            let (u, s) = (&url, scope.as_str());
            let (page, next) = self
                .retrying("tags", || async move {
                    let resp = self.send(&Method::GET, u, None, s).await?;
                    let next = header_str(resp.headers(), LINK.as_str()).and_then(crate::challenge::next_link);
                    let body = read_capped(resp, MAX_TAGS_PAGE, "tag list").await?;
                    let page: TagList = serde_json::from_slice(&body)
                        .map_err(|e| invalid(&format!("tag list is not valid JSON: {e}")))?;
                    Ok((page.tags.unwrap_or_default(), next))
                })
                .await?;
            all.extend(page);
            match next {
                None => return Ok(all),
                Some(link) => {
                    let next = url.join(&link).map_err(|_| UpstreamError::Invalid("bad Link header".into()))?;
                    if !same_origin(&next, &self.base) {
                        return Err(UpstreamError::Invalid("tag list Link points to another origin".into()));
                    }
                    url = next;
                }
            }
        }
        Err(UpstreamError::Invalid(format!("tag list has more than {MAX_TAG_PAGES} pages")))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Option<Vec<Descriptor>>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct Index {
            manifests: Option<Vec<Descriptor>>,
        }
        let scope = pull_scope(repo);
        let mut url = self.endpoint(repo, &format!("referrers/{subject}"))?;
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_REFERRERS_PAGES {
            if !seen.insert(url.clone()) {
                return Err(UpstreamError::Invalid("referrers pagination loops".into()));
            }
            let (u, s) = (&url, scope.as_str());
            let page = self
                .retrying("referrers", || async move {
                    let resp = self.send_answered(&Method::GET, u, Some(OCI_INDEX), s).await?;
                    // No referrers API: 404 (distribution 2.8), or the other
                    // answers clients take to mean "use the tag schema".
                    if matches!(resp.status().as_u16(), 400 | 404 | 405 | 406) {
                        return Ok(None);
                    }
                    let resp = check_status(resp)?;
                    if header_str(resp.headers(), CONTENT_TYPE.as_str()).map(media_type).as_deref() != Some(OCI_INDEX) {
                        return Ok(None);
                    }
                    let next = header_str(resp.headers(), LINK.as_str()).and_then(crate::challenge::next_link);
                    let body = read_capped(resp, self.max_manifest_size, "referrers list").await?;
                    let index: Index = serde_json::from_slice(&body)
                        .map_err(|e| invalid(&format!("referrers list is not a valid image index: {e}")))?;
                    Ok(Some((index.manifests.unwrap_or_default(), next)))
                })
                .await?;
            let Some((list, next)) = page else {
                return Ok(None);
            };
            all.extend(list);
            match next {
                None => return Ok(Some(all)),
                Some(link) => {
                    let next = url.join(&link).map_err(|_| UpstreamError::Invalid("bad Link header".into()))?;
                    if !same_origin(&next, &self.base) {
                        return Err(UpstreamError::Invalid("referrers Link points to another origin".into()));
                    }
                    url = next;
                }
            }
        }
        Err(UpstreamError::Invalid(format!("referrers list has more than {MAX_REFERRERS_PAGES} pages")))
    }

    fn health(&self) -> UpstreamHealth {
        self.health.snapshot()
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        *self.rate_limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ping(&self) -> Result<(), UpstreamError> {
        let url = Url::parse(&format!("{}/v2/", self.base.as_str().trim_end_matches('/')))
            .map_err(|e| UpstreamError::Invalid(format!("bad request URL: {e}")))?;
        let resp = match self.send_once(&Method::GET, &url, None, None).await {
            Ok(r) => r,
            Err(Failure::Fatal(e) | Failure::Retry(e) | Failure::Silent(e) | Failure::RetryAfter(e, _)) => {
                return Err(e)
            }
        };
        // A registry answers /v2/ with 200, or 401 and a challenge.
        match resp.status() {
            s if s.is_success() || s == StatusCode::UNAUTHORIZED => Ok(()),
            s => match status_failure(s, resp.headers()) {
                Failure::Fatal(UpstreamError::NotFound) => {
                    Err(UpstreamError::Invalid(format!("{} answered {s} on /v2/: not a registry", self.host)))
                }
                Failure::Fatal(e) | Failure::Retry(e) | Failure::Silent(e) | Failure::RetryAfter(e, _) => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn status_mapping() {
        let h = HeaderMap::new();
        let m = |s: u16| status_failure(StatusCode::from_u16(s).expect("status"), &h);
        assert!(matches!(m(404), Failure::Fatal(UpstreamError::NotFound)));
        assert!(matches!(m(401), Failure::Fatal(UpstreamError::Unauthorized(_))));
        assert!(matches!(m(403), Failure::Fatal(UpstreamError::Unauthorized(_))));
        assert!(matches!(m(500), Failure::Retry(UpstreamError::Unavailable(_))));
        assert!(matches!(m(503), Failure::Retry(UpstreamError::Unavailable(_))));
        assert!(matches!(m(400), Failure::Fatal(UpstreamError::Invalid(_))));
        assert!(matches!(m(429), Failure::Fatal(UpstreamError::TooManyRequests { retry_after: None })));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().expect("hv"));
        match status_failure(StatusCode::TOO_MANY_REQUESTS, &h) {
            Failure::RetryAfter(UpstreamError::TooManyRequests { retry_after }, d) => {
                assert_eq!(retry_after.as_deref(), Some("3"));
                assert_eq!(d, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_rate_limit(&h), None);
        h.insert("ratelimit-limit", "100;w=21600".parse().expect("hv"));
        assert_eq!(parse_rate_limit(&h), None, "remaining missing");
        h.insert("ratelimit-remaining", "76;w=21600".parse().expect("hv"));
        let r = parse_rate_limit(&h).expect("parsed");
        assert_eq!((r.limit, r.remaining, r.window), (100, 76, Some(Duration::from_secs(21600))));
        assert!(r.current());
        h.insert("ratelimit-remaining", " 3 ".parse().expect("hv"));
        let r = parse_rate_limit(&h).expect("parsed");
        assert_eq!((r.remaining, r.window), (3, Some(Duration::from_secs(21600))), "window from the limit");
        h.insert("ratelimit-remaining", "lots".parse().expect("hv"));
        assert_eq!(parse_rate_limit(&h), None);
        let old = RateLimit {
            limit: 1,
            remaining: 0,
            window: Some(Duration::from_secs(60)),
            observed: SystemTime::now() - Duration::from_secs(61),
        };
        assert!(!old.current(), "a past window's budget is renewed");
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            media_type_field(br#"{"mediaType":"application/x","schemaVersion":2}"#).as_deref(),
            Some("application/x")
        );
        assert_eq!(media_type_field(b"not json"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let u = ResolvedUpstream {
            host: "x.example".into(),
            url: Url::parse("http://127.0.0.1:1").expect("url"),
            config: crate::config::UpstreamConfig::with_url("http://127.0.0.1:1"),
        };
        let up =
            OciUpstream::new(&u).expect("build").with_backoff(Duration::from_millis(100), Duration::from_millis(1000));
        for (attempt, lo, hi) in [(0, 50, 100), (1, 100, 200), (2, 200, 400), (5, 500, 1000), (40, 500, 1000)] {
            let d = up.backoff(attempt).as_millis() as u64;
            assert!((lo..=hi).contains(&d), "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn origins() {
        let a = Url::parse("https://h.example/v2/x").expect("url");
        assert!(same_origin(&a, &Url::parse("https://h.example:443/y").expect("url")));
        assert!(!same_origin(&a, &Url::parse("http://h.example/y").expect("url")));
        assert!(!same_origin(&a, &Url::parse("https://evil.example/y").expect("url")));
    }
}
