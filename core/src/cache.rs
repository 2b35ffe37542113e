//! The pull-through cache: name routing (origin-path convention and
//! containerd's `ns=`), tag freshness and revalidation, stale-if-error, and
//! single-flight streaming of blob misses.
//!
//! A blob miss starts one upstream fetch. Its bytes are hashed once and
//! written once, to a local spool file; every client asking for that blob
//! meanwhile (the first one and any late joiner) reads the spool file as it
//! grows, through the fetch's open file handle. The last byte is released
//! only after the whole blob verified against its digest, so no client ever
//! receives a complete wrong blob. Only then is the spool file handed to
//! [`Storage::blob_import`], which makes it the blob (the filesystem backend
//! renames it into place), so storage commits nothing unverified. The fetch
//! runs in its own task: a client hanging up does not stop it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::digest::{Digest, DigestHasher};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::name::{Reference, RepoName, Tag};
use crate::registry::{BlobResponse, ManifestResponse};
use crate::storage::{ByteStream, Storage, StoredManifest};
use crate::upstream::{Upstream, UpstreamError};

/// After an upstream fails (down, timing out, 5xx, 429), cached tags are
/// served stale for this long without asking it again.
const UPSTREAM_DOWN_BACKOFF: Duration = Duration::from_secs(10);

/// How a response was served, sent to clients in the `X-Cove-Cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache without asking upstream.
    Hit,
    /// Fetched from upstream (and cached).
    Miss,
    /// Upstream confirmed the cached copy is current.
    Revalidated,
    /// Upstream failed; the cached copy was served anyway.
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Revalidated => "revalidated",
            CacheStatus::Stale => "stale",
        }
    }
}

/// One configured upstream and its cache policy.
#[derive(Clone)]
pub struct UpstreamRoute {
    /// The origin host and first path component of its cached names.
    pub host: String,
    pub upstream: Arc<dyn Upstream>,
    /// How long a tag is served without revalidation.
    pub tag_ttl: Duration,
}

/// Per-upstream counters.
#[derive(Debug, Default, Clone)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub revalidated: u64,
    pub stale: u64,
    pub upstream_errors: u64,
    /// Upstream answers of 429 Too Many Requests (part of `upstream_errors`).
    pub rate_limited: u64,
    /// The last upstream failure and when it happened.
    pub last_error: Option<String>,
    pub last_error_at: Option<std::time::SystemTime>,
    /// Blob bytes served from the cache without asking upstream for them.
    pub bytes_saved: u64,
    /// Blob bytes fetched from upstream, verified and cached.
    pub bytes_fetched: u64,
}

type Counters = Arc<Mutex<HashMap<String, CacheCounters>>>;

/// Counts one failed upstream request of `host` (a 404 is not a failure).
fn note_failure(counters: &Counters, host: &str, e: &UpstreamError) {
    if matches!(e, UpstreamError::NotFound) {
        return;
    }
    note_failure_message(counters, host, e.to_string(), matches!(e, UpstreamError::TooManyRequests { .. }));
}

fn note_failure_message(counters: &Counters, host: &str, message: String, rate_limited: bool) {
    if let Ok(mut c) = counters.lock() {
        let c = c.entry(host.to_owned()).or_default();
        c.upstream_errors += 1;
        c.rate_limited += u64::from(rate_limited);
        c.last_error = Some(message);
        c.last_error_at = Some(std::time::SystemTime::now());
    }
}

/// The pull-through cache state shared by all requests.
pub struct PullThrough {
    /// Swapped as a whole by [`PullThrough::set_routes`] (config reload).
    routes: std::sync::RwLock<Vec<UpstreamRoute>>,
    self_hosts: std::sync::RwLock<Vec<String>>,
    spool_dir: PathBuf,
    fresh: Mutex<HashMap<(RepoName, Tag), Instant>>,
    /// Upstreams that just failed, until when: cached tags are served stale
    /// without retrying them meanwhile.
    down_until: Mutex<HashMap<String, Instant>>,
    inflight: Arc<InflightMap>,
    manifest_flights: ManifestFlights,
    counters: Counters,
    spool_seq: std::sync::atomic::AtomicU64,
}

type InflightMap = Mutex<HashMap<(String, Digest), Arc<Inflight>>>;

/// The outcome of one manifest resolution, shared with every request that
/// waited for it.
type ManifestOutcome = Result<(ManifestResponse, CacheStatus)>;

/// In-flight manifest resolutions by (repository, reference): concurrent
/// misses and revalidations of one manifest share one upstream round trip
/// (Docker Hub counts manifest GETs against its pull limit).
type ManifestFlights = Mutex<HashMap<(RepoName, String), Arc<watch::Sender<Option<ManifestOutcome>>>>>;

/// Removes a manifest flight from the map when its leader finishes or is
/// cancelled (a cancelled leader's followers then retry).
struct ManifestFlightGuard<'a> {
    flights: &'a ManifestFlights,
    key: (RepoName, String),
}

impl Drop for ManifestFlightGuard<'_> {
    fn drop(&mut self) {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Where a repository's content comes from. The route is a snapshot: a
/// request keeps the upstream it started with across a config reload.
pub enum Route {
    Private,
    Cached { route: UpstreamRoute, remote: RepoName },
}

impl PullThrough {
    /// `self_hosts` are the host names that mean Cove itself in `ns=`;
    /// `spool_dir` holds in-flight blob downloads (emptied here).
    pub fn new(routes: Vec<UpstreamRoute>, self_hosts: Vec<String>, spool_dir: PathBuf) -> std::io::Result<Self> {
        if spool_dir.exists() {
            std::fs::remove_dir_all(&spool_dir)?;
        }
        std::fs::create_dir_all(&spool_dir)?;
        Ok(PullThrough {
            routes: std::sync::RwLock::new(routes),
            self_hosts: std::sync::RwLock::new(self_hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
            spool_dir,
            fresh: Mutex::new(HashMap::new()),
            down_until: Mutex::new(HashMap::new()),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            manifest_flights: Mutex::new(HashMap::new()),
            counters: Arc::new(Mutex::new(HashMap::new())),
            spool_seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A snapshot of the configured upstream routes.
    pub fn routes(&self) -> Vec<UpstreamRoute> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the upstream routes (config reload). Requests already routed
    /// keep their snapshot; tag freshness, in-flight fetches and counters of
    /// hosts that remain are kept. A removed host's freshness and back-off
    /// are forgotten, so re-adding it asks upstream again.
    pub fn set_routes(&self, routes: Vec<UpstreamRoute>) {
        let keep: std::collections::HashSet<String> = routes.iter().map(|r| r.host.clone()).collect();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
        if let Ok(mut d) = self.down_until.lock() {
            d.retain(|host, _| keep.contains(host));
        }
        if let Ok(mut f) = self.fresh.lock() {
            f.retain(|(repo, _), _| keep.contains(repo.first_component()));
        }
    }

    /// Replaces the host names that mean Cove itself in `ns=` (config reload).
    pub fn set_self_hosts(&self, self_hosts: Vec<String>) {
        *self.self_hosts.write().unwrap_or_else(|p| p.into_inner()) =
            self_hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect();
    }

    /// A snapshot of the per-upstream counters.
    pub fn counters(&self) -> HashMap<String, CacheCounters> {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Digests with an upstream fetch in flight (garbage collection keeps
    /// them; metrics count them). Added for operations (issue 7).
    pub fn inflight_digests(&self) -> Vec<Digest> {
        self.inflight.lock().map(|m| m.keys().map(|(_, d)| d.clone()).collect()).unwrap_or_default()
    }

    /// Whether an upstream fetch of `digest` is in flight (without copying
    /// the in-flight set, as [`Self::inflight_digests`] does).
    pub fn is_fetching(&self, digest: &Digest) -> bool {
        self.inflight.lock().map(|m| m.keys().any(|(_, d)| d == digest)).unwrap_or(false)
    }

    /// Counts a blob served from the cache (and, for a GET, its bytes as saved).
    fn count_hit(&self, host: &str, b: &BlobResponse, head: bool) {
        let served = if head { 0 } else { b.range.map_or(b.size.unwrap_or(0), |r| r.len()) };
        self.count(host, |c| {
            c.hits += 1;
            c.bytes_saved += served;
        });
    }

    fn count(&self, host: &str, f: impl FnOnce(&mut CacheCounters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(c.entry(host.to_owned()).or_default());
        }
    }

    fn route_for_host(&self, host: &str) -> Option<UpstreamRoute> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).iter().find(|r| r.host == host).cloned()
    }

    /// Maps a path name and containerd's optional `ns` to the repository name
    /// Cove stores it under. Docker Hub names are normalised
    /// (`docker.io/nginx` is `docker.io/library/nginx`).
    pub fn resolve_name(&self, name: &str, ns: Option<&str>) -> Result<RepoName> {
        let repo: RepoName = name.parse()?;
        let full = match ns.map(|n| n.trim().to_ascii_lowercase()) {
            None => repo,
            Some(ns) if self.self_hosts.read().unwrap_or_else(|p| p.into_inner()).contains(&ns) => repo,
            Some(ns) if self.route_for_host(&ns).is_some() => repo.with_prefix(&ns)?,
            Some(ns) => {
                return Err(RegistryError::new(
                    ErrorCode::NameUnknown,
                    format!("ns={ns} is not a configured upstream (add [upstreams.\"{ns}\"] to the config); Cove is not an open proxy"),
                ))
            }
        };
        Ok(normalize_docker_hub(full))
    }

    /// Where `repo`'s content comes from.
    pub fn route(&self, repo: &RepoName) -> Route {
        let host = repo.first_component();
        match (self.route_for_host(host), repo.strip_first_component()) {
            (Some(route), Some(remote)) => Route::Cached { route, remote },
            _ => Route::Private,
        }
    }

    /// Whether `repo` lies in an upstream's namespace.
    pub fn is_cached(&self, repo: &RepoName) -> bool {
        matches!(self.route(repo), Route::Cached { .. })
    }

    fn is_fresh(&self, repo: &RepoName, tag: &Tag, ttl: Duration) -> bool {
        self.fresh
            .lock()
            .ok()
            .and_then(|f| f.get(&(repo.clone(), tag.clone())).map(|t| t.elapsed() < ttl))
            .unwrap_or(false)
    }

    fn is_down(&self, host: &str) -> bool {
        self.down_until.lock().ok().and_then(|d| d.get(host).map(|until| Instant::now() < *until)).unwrap_or(false)
    }

    fn mark_down(&self, host: &str) {
        if let Ok(mut d) = self.down_until.lock() {
            d.insert(host.to_owned(), Instant::now() + UPSTREAM_DOWN_BACKOFF);
        }
    }

    fn mark_fresh(&self, repo: &RepoName, tag: &Tag) {
        if let Ok(mut f) = self.fresh.lock() {
            f.insert((repo.clone(), tag.clone()), Instant::now());
        }
    }

    /// Serves a manifest of a cached repository.
    pub async fn manifest(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(ManifestResponse, CacheStatus)> {
        let started = Instant::now();
        let result = self.manifest_coalesced(storage, route, remote, repo, reference).await;
        match &result {
            Ok((_, status)) => {
                self.count(&route.host, |c| match status {
                    CacheStatus::Hit => c.hits += 1,
                    CacheStatus::Miss => c.misses += 1,
                    CacheStatus::Revalidated => c.revalidated += 1,
                    CacheStatus::Stale => c.stale += 1,
                });
                tracing::info!(upstream = %route.host, %repo, %reference, cache = status.as_str(),
                    ms = started.elapsed().as_millis() as u64, "manifest");
            }
            Err(e) => tracing::info!(upstream = %route.host, %repo, %reference, error = %e, "manifest not served"),
        }
        result
    }

    /// Runs [`Self::manifest_inner`] once for all concurrent requests of
    /// the same manifest: the first one leads, the others wait for its
    /// outcome (and take over if it is cancelled).
    async fn manifest_coalesced(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
        reference: &Reference,
    ) -> ManifestOutcome {
        let key = (repo.clone(), reference.to_string());
        loop {
            let role = {
                let mut flights = self.manifest_flights.lock().unwrap_or_else(|p| p.into_inner());
                match flights.get(&key) {
                    Some(tx) => Err(tx.subscribe()),
                    None => {
                        let tx = Arc::new(watch::channel(None).0);
                        flights.insert(key.clone(), tx.clone());
                        Ok(tx)
                    }
                }
            };
            match role {
                Ok(tx) => {
                    let _guard = ManifestFlightGuard { flights: &self.manifest_flights, key };
                    let outcome = self.manifest_inner(storage, route, remote, repo, reference).await;
                    tx.send_replace(Some(outcome.clone()));
                    return outcome;
                }
                Err(mut rx) => loop {
                    if let Some(outcome) = rx.borrow_and_update().clone() {
                        return outcome;
                    }
                    if rx.changed().await.is_err() {
                        // The leader was cancelled before an outcome: retry.
                        break;
                    }
                },
            }
        }
    }

    async fn manifest_inner(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(ManifestResponse, CacheStatus)> {
        let tag = match reference {
            Reference::Digest(d) => {
                if let Some(m) = storage.manifest_get(repo, d).await? {
                    return Ok((response(d.clone(), m), CacheStatus::Hit));
                }
                let m = self.fetch_manifest(storage, route, remote, repo, d).await?;
                return Ok((m, CacheStatus::Miss));
            }
            Reference::Tag(t) => t,
        };
        let local = match storage.tag_get(repo, tag).await? {
            Some(d) => storage.manifest_get(repo, &d).await?.map(|m| response(d, m)),
            None => None,
        };
        if let Some(m) = &local {
            if self.is_fresh(repo, tag, route.tag_ttl) {
                return Ok((m.clone(), CacheStatus::Hit));
            }
            if self.is_down(&route.host) {
                // Upstream failed moments ago: do not make every client wait
                // for its retries again.
                return Ok((m.clone(), CacheStatus::Stale));
            }
        }
        let head = match route.upstream.head_manifest(remote, reference).await {
            Ok(h) => Ok(h.digest),
            // Some registries answer HEAD without a digest: resolve with a GET.
            Err(UpstreamError::Invalid(_)) => match route.upstream.get_manifest(remote, reference).await {
                Ok(m) => Ok(m.digest),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match head {
            Ok(digest) => {
                if let Ok(mut d) = self.down_until.lock() {
                    d.remove(&route.host);
                }
                if let Some(m) = local.filter(|m| m.digest == digest) {
                    self.mark_fresh(repo, tag);
                    return Ok((m, CacheStatus::Revalidated));
                }
                let m = match storage.manifest_get(repo, &digest).await? {
                    Some(m) => response(digest.clone(), m),
                    None => self.fetch_manifest(storage, route, remote, repo, &digest).await?,
                };
                storage.tag_put(repo, tag, &digest).await?;
                self.mark_fresh(repo, tag);
                Ok((m, CacheStatus::Miss))
            }
            Err(UpstreamError::NotFound) => Err(RegistryError::manifest_unknown(reference)),
            Err(e) => {
                note_failure(&self.counters, &route.host, &e);
                if matches!(e, UpstreamError::Unavailable(_) | UpstreamError::TooManyRequests { .. }) {
                    self.mark_down(&route.host);
                }
                match local {
                    Some(m) => {
                        tracing::warn!(upstream = %route.host, %repo, %tag, error = %e, "upstream failed; serving cached manifest (stale)");
                        Ok((m, CacheStatus::Stale))
                    }
                    None => Err(upstream_error(e, RegistryError::manifest_unknown(reference))),
                }
            }
        }
    }

    /// Fetches a manifest by digest, verifies it and stores it.
    async fn fetch_manifest(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<ManifestResponse> {
        let m = route
            .upstream
            .get_manifest(remote, &Reference::Digest(digest.clone()))
            .await
            .map_err(|e| self.upstream_failed(route, e, RegistryError::manifest_unknown(digest)))?;
        let bytes = m.bytes.unwrap_or_default();
        let mut h = DigestHasher::new(digest.algorithm());
        h.update(&bytes);
        let actual = h.finish();
        if &actual != digest {
            note_failure_message(&self.counters, &route.host, format!("manifest digest mismatch for {digest}"), false);
            return Err(RegistryError::new(
                ErrorCode::UpstreamUnavailable,
                format!("upstream {} sent a manifest whose digest is {actual}, not {digest}; not cached", route.host),
            )
            .with_status(502));
        }
        let stored = StoredManifest { media_type: m.media_type, bytes };
        storage.manifest_put(repo, digest, &stored).await?;
        Ok(response(digest.clone(), stored))
    }

    fn upstream_failed(&self, route: &UpstreamRoute, e: UpstreamError, not_found: RegistryError) -> RegistryError {
        note_failure(&self.counters, &route.host, &e);
        upstream_error(e, not_found)
    }

    /// Lists tags of a cached repository: from upstream when reachable,
    /// else from the cache.
    pub async fn tags(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
    ) -> Result<Vec<String>> {
        match route.upstream.tags(remote).await {
            Ok(mut tags) => {
                tags.sort();
                tags.dedup();
                Ok(tags)
            }
            Err(e) => match storage.tag_list(repo).await? {
                Some(tags) if !matches!(e, UpstreamError::NotFound) => Ok(tags),
                _ => Err(self.upstream_failed(
                    route,
                    e,
                    RegistryError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known upstream")),
                )),
            },
        }
    }

    /// Serves a blob of a cached repository: from storage, or by joining or
    /// starting the single upstream fetch of it.
    #[allow(clippy::too_many_arguments)]
    pub async fn blob(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&str>,
        head: bool,
    ) -> Result<(BlobResponse, CacheStatus)> {
        if storage.blob_linked(repo, digest).await? {
            let size = storage.blob_size(digest).await?.ok_or_else(|| RegistryError::blob_unknown(digest))?;
            let b = local_blob(storage, digest, size, range, head).await?;
            self.count_hit(&route.host, &b, head);
            return Ok((b, CacheStatus::Hit));
        }
        if let Some(size) = storage.blob_size(digest).await? {
            // Stored for another repository: serve it here only if upstream
            // confirms this repository has it (no cross-repository leaks).
            // A fetch for this repository that just committed and is about
            // to link it needs no confirmation.
            if !self.inflight_for_repo(&route.host, digest, repo) {
                route
                    .upstream
                    .head_blob(remote, digest)
                    .await
                    .map_err(|e| self.upstream_failed(route, e, RegistryError::blob_unknown(digest)))?;
            }
            storage.blob_link(repo, digest).await?;
            let b = local_blob(storage, digest, size, range, head).await?;
            self.count_hit(&route.host, &b, head);
            return Ok((b, CacheStatus::Hit));
        }
        if head {
            if let Some(size) = self.inflight_size(&route.host, digest).await {
                return Ok((
                    BlobResponse { size: Some(size), range: None, body: Box::pin(futures::stream::empty()) },
                    CacheStatus::Miss,
                ));
            }
            let size = route
                .upstream
                .head_blob(remote, digest)
                .await
                .map_err(|e| self.upstream_failed(route, e, RegistryError::blob_unknown(digest)))?;
            let range = match range {
                Some(r) => crate::registry::resolve_range(r, size)?,
                None => None,
            };
            return Ok((
                BlobResponse { size: Some(size), range, body: Box::pin(futures::stream::empty()) },
                CacheStatus::Miss,
            ));
        }
        let flight = self.join_or_fetch(storage, route, remote, repo, digest);
        let mut rx = flight.state.subscribe();
        let size = loop {
            let st = rx.borrow_and_update().clone();
            match st {
                FetchState::Starting => {}
                FetchState::Running { size, .. } | FetchState::Done { size } => break size,
                FetchState::Failed(e) => return Err(e),
            }
            if rx.changed().await.is_err() {
                return Err(RegistryError::internal("blob fetch ended without a result"));
            }
        };
        self.count(&route.host, |c| c.misses += 1);
        // An in-flight blob of unknown size is sent whole (no Range).
        let range = match (range, size) {
            (Some(r), Some(s)) => crate::registry::resolve_range(r, s)?,
            _ => None,
        };
        let start = range.map_or(0, |r| r.start);
        let end = range.map(|r| r.end + 1).or(size);
        let body = follow(flight, start, end);
        Ok((BlobResponse { size, range, body }, CacheStatus::Miss))
    }

    /// Whether an upstream fetch of `digest` for `repo` is in flight (or
    /// committed and not yet linked).
    fn inflight_for_repo(&self, host: &str, digest: &Digest, repo: &RepoName) -> bool {
        let flight = self.inflight.lock().ok().and_then(|m| m.get(&(host.to_owned(), digest.clone())).cloned());
        flight.is_some_and(|f| f.repos.lock().map(|r| r.contains(repo)).unwrap_or(false))
    }

    async fn inflight_size(&self, host: &str, digest: &Digest) -> Option<u64> {
        let flight = self.inflight.lock().ok()?.get(&(host.to_owned(), digest.clone())).cloned()?;
        let state = flight.state.borrow().clone();
        match state {
            FetchState::Running { size, .. } | FetchState::Done { size } => size,
            _ => None,
        }
    }

    fn join_or_fetch(
        &self,
        storage: &Arc<dyn Storage>,
        route: &UpstreamRoute,
        remote: &RepoName,
        repo: &RepoName,
        digest: &Digest,
    ) -> Arc<Inflight> {
        let key = (route.host.clone(), digest.clone());
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&key) {
            let mut repos = f.repos.lock().unwrap_or_else(|p| p.into_inner());
            if !repos.contains(repo) {
                repos.push(repo.clone());
            }
            return f.clone();
        }
        let n = self.spool_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spool = self.spool_dir.join(format!("{}-{}-{n}", digest.algorithm().as_str(), digest.hex()));
        let (state, _) = watch::channel(FetchState::Starting);
        let flight = Arc::new(Inflight { spool, file: OnceLock::new(), state, repos: Mutex::new(vec![repo.clone()]) });
        map.insert(key.clone(), flight.clone());
        let task = FetchTask {
            storage: storage.clone(),
            upstream: route.upstream.clone(),
            host: route.host.clone(),
            remote: remote.clone(),
            digest: digest.clone(),
            flight: flight.clone(),
            counters: self.counters.clone(),
        };
        let inflight = self.inflight.clone();
        tokio::spawn(async move {
            task.run().await;
            inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        });
        flight
    }
}

fn response(digest: Digest, m: StoredManifest) -> ManifestResponse {
    ManifestResponse { digest, media_type: m.media_type, bytes: m.bytes }
}

async fn local_blob(
    storage: &Arc<dyn Storage>,
    digest: &Digest,
    size: u64,
    range: Option<&str>,
    head: bool,
) -> Result<BlobResponse> {
    let range = match range {
        Some(r) => crate::registry::resolve_range(r, size)?,
        None => None,
    };
    let body: ByteStream =
        if head { Box::pin(futures::stream::empty()) } else { storage.blob_read(digest, range).await? };
    Ok(BlobResponse { size: Some(size), range, body })
}

/// Maps an upstream failure to what the client sees.
pub fn upstream_error(e: UpstreamError, not_found: RegistryError) -> RegistryError {
    match e {
        UpstreamError::NotFound => not_found,
        // Docker Hub answers 401 for repositories that do not exist.
        UpstreamError::Unauthorized(m) => RegistryError::new(
            not_found.code,
            format!(
                "{} (upstream refused access: {m}; the repository may not exist or needs credentials)",
                not_found.message
            ),
        ),
        UpstreamError::TooManyRequests { retry_after } => {
            let e = RegistryError::new(ErrorCode::TooManyRequests, "upstream rate limit reached and nothing is cached");
            match retry_after {
                Some(r) => e.with_header("Retry-After", r),
                None => e,
            }
        }
        UpstreamError::Unavailable(m) => RegistryError::new(
            ErrorCode::UpstreamUnavailable,
            format!("upstream unavailable and nothing is cached: {m}"),
        ),
        UpstreamError::Invalid(m) => {
            RegistryError::new(ErrorCode::UpstreamUnavailable, format!("upstream sent an invalid response: {m}"))
                .with_status(502)
        }
    }
}

/// Docker Hub's official images live under `library/`.
fn normalize_docker_hub(repo: RepoName) -> RepoName {
    if repo.first_component() == "docker.io" && repo.components().count() == 2 {
        if let Some(rest) = repo.strip_first_component() {
            if let Ok(r) = format!("docker.io/library/{rest}").parse() {
                return r;
            }
        }
    }
    repo
}

#[derive(Debug, Clone)]
enum FetchState {
    Starting,
    /// `written` bytes are in the spool; `size` as announced by upstream.
    Running {
        written: u64,
        size: Option<u64>,
    },
    Done {
        size: Option<u64>,
    },
    Failed(RegistryError),
}

/// One in-flight upstream fetch.
struct Inflight {
    spool: PathBuf,
    /// The spool file, opened once by the fetch task (set before the first
    /// `Running`). Readers read it positionally through this handle, never
    /// by path, so they keep reading after [`Storage::blob_import`] moved it.
    file: OnceLock<Arc<std::fs::File>>,
    state: watch::Sender<FetchState>,
    /// Repositories to link the blob into once committed.
    repos: Mutex<Vec<RepoName>>,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        // Readers hold this Arc while they read, so nobody needs the file now
        // (after a successful import it is no longer there).
        let _ = std::fs::remove_file(&self.spool);
    }
}

struct FetchTask {
    storage: Arc<dyn Storage>,
    upstream: Arc<dyn Upstream>,
    host: String,
    remote: RepoName,
    digest: Digest,
    flight: Arc<Inflight>,
    counters: Counters,
}

impl FetchTask {
    async fn run(self) {
        let started = Instant::now();
        match self.fetch().await {
            Ok(size) => {
                if let Ok(mut c) = self.counters.lock() {
                    c.entry(self.host.clone()).or_default().bytes_fetched += size;
                }
                tracing::info!(upstream = %self.host, digest = %self.digest, bytes = size,
                    ms = started.elapsed().as_millis() as u64, "blob fetched, verified and cached");
            }
            Err(e) => {
                tracing::warn!(upstream = %self.host, digest = %self.digest, error = %e, "blob fetch failed; nothing cached");
                // Upstream's fault (not a 404, not a local I/O failure): counted.
                if !matches!(e.code, ErrorCode::BlobUnknown | ErrorCode::Internal) {
                    note_failure_message(
                        &self.counters,
                        &self.host,
                        e.message.clone(),
                        e.code == ErrorCode::TooManyRequests,
                    );
                }
                self.flight.state.send_replace(FetchState::Failed(e));
            }
        }
    }

    async fn fetch(&self) -> Result<u64> {
        let blob = self
            .upstream
            .get_blob(&self.remote, &self.digest)
            .await
            .map_err(|e| upstream_error(e, RegistryError::blob_unknown(&self.digest)))?;
        let size = blob.size;
        let path = self.flight.spool.clone();
        let file = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)
        })
        .await
        .map_err(|e| RegistryError::internal(format!("spool task failed: {e}")))?
        .map_err(|e| RegistryError::internal(format!("cannot create spool file: {e}")))?;
        let file = Arc::new(file);
        let _ = self.flight.file.set(file.clone());
        self.flight.state.send_replace(FetchState::Running { written: 0, size });

        // One blocking thread appends to the spool and publishes progress;
        // this task hashes meanwhile, so hashing and writing overlap.
        let (tx, rx) = mpsc::channel::<Bytes>(SPOOL_QUEUE);
        let flight = self.flight.clone();
        let writer = tokio::task::spawn_blocking(move || spool_writer(&file, rx, &flight.state, size));
        let mut hasher = DigestHasher::new(self.digest.algorithm());
        let mut received = 0u64;
        let mut stream = blob.stream;
        let mut failure: Option<RegistryError> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    failure = Some(RegistryError::new(
                        ErrorCode::UpstreamUnavailable,
                        format!("upstream body failed after {received} bytes: {e}"),
                    ));
                    break;
                }
            };
            received += chunk.len() as u64;
            if size.is_some_and(|s| received > s) {
                failure = Some(upstream_invalid(&self.host, "sent more bytes than it announced"));
                break;
            }
            hasher.update(&chunk);
            if tx.send(chunk).await.is_err() {
                // The writer stopped: its result says why.
                break;
            }
        }
        drop(tx);
        let written = match writer.await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                return Err(failure.unwrap_or_else(|| RegistryError::internal(format!("spool write failed: {e}"))))
            }
            Err(e) => return Err(failure.unwrap_or_else(|| RegistryError::internal(format!("spool task failed: {e}")))),
        };
        if let Some(f) = failure {
            return Err(f);
        }
        if written != received {
            return Err(RegistryError::internal(format!("spool holds {written} of {received} bytes")));
        }
        if size.is_some_and(|s| s != written) {
            return Err(upstream_invalid(&self.host, &format!("ended the body after {written} bytes")));
        }
        let actual = hasher.finish();
        if actual != self.digest {
            return Err(upstream_invalid(
                &self.host,
                &format!("sent content with digest {actual} for {}", self.digest),
            ));
        }
        // Verified: release the last byte to readers, then make the spool
        // file the blob (readers keep their handle) and link it.
        self.flight.state.send_replace(FetchState::Done { size: Some(written) });
        match self.storage.blob_import(&self.digest, &self.flight.spool, written).await {
            Ok(_) => {
                let repos = self.flight.repos.lock().map(|r| r.clone()).unwrap_or_default();
                for repo in repos {
                    if let Err(e) = self.storage.blob_link(&repo, &self.digest).await {
                        tracing::warn!(%repo, digest = %self.digest, error = %e, "cannot link cached blob");
                    }
                }
            }
            Err(e) => tracing::warn!(digest = %self.digest, error = %e, "verified blob could not be stored"),
        }
        Ok(written)
    }
}

/// How many upstream chunks may wait for the spool writer.
const SPOOL_QUEUE: usize = 32;

/// Bytes read from the spool per follower read.
const FOLLOW_CHUNK: usize = 256 * 1024;

/// Appends every chunk from `rx` to the spool `file` (on a blocking thread),
/// publishing how many bytes are readable after each batch. Returns the
/// bytes written once `rx` closes.
fn spool_writer(
    file: &std::fs::File,
    mut rx: mpsc::Receiver<Bytes>,
    state: &watch::Sender<FetchState>,
    size: Option<u64>,
) -> std::io::Result<u64> {
    let mut written = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        write_all_at(file, &chunk, written)?;
        written += chunk.len() as u64;
        // Whatever else already waits goes out before the next progress note.
        while let Ok(chunk) = rx.try_recv() {
            write_all_at(file, &chunk, written)?;
            written += chunk.len() as u64;
        }
        state.send_replace(FetchState::Running { written, size });
    }
    Ok(written)
}

#[cfg(unix)]
fn write_all_at(file: &std::fs::File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
fn write_all_at(file: &std::fs::File, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        pos += n as u64;
    }
    Ok(())
}

#[cfg(unix)]
fn read_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

fn upstream_invalid(host: &str, what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::UpstreamUnavailable, format!("upstream {host} {what}; not cached")).with_status(502)
}

/// Reads an in-flight blob from its spool file from `start` up to `end`
/// (exclusive; `None` = until the fetch ends), waiting for bytes as they
/// arrive. The last byte is held back until the blob verified. Reads go
/// through the fetch's open file handle (positional reads on a blocking
/// thread), so they go on after the file was moved into storage.
fn follow(flight: Arc<Inflight>, start: u64, end: Option<u64>) -> ByteStream {
    struct St {
        flight: Arc<Inflight>,
        rx: watch::Receiver<FetchState>,
        pos: u64,
        end: Option<u64>,
        failed: bool,
    }
    impl St {
        fn fail(mut self, e: std::io::Error) -> Option<(std::io::Result<Bytes>, St)> {
            self.failed = true;
            Some((Err(e), self))
        }
    }
    let rx = flight.state.subscribe();
    let st = St { flight, rx, pos: start, end, failed: false };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.failed || st.end.is_some_and(|e| st.pos >= e) {
                return None;
            }
            let state = st.rx.borrow_and_update().clone();
            let limit = match state {
                FetchState::Starting => 0,
                FetchState::Running { written, .. } => written.saturating_sub(1),
                FetchState::Done { size } => size.unwrap_or(0),
                FetchState::Failed(e) => return st.fail(std::io::Error::other(e.message)),
            };
            let limit = st.end.map_or(limit, |e| limit.min(e));
            if st.pos < limit {
                let Some(file) = st.flight.file.get().cloned() else {
                    return st.fail(std::io::Error::other("spool file missing"));
                };
                let want = ((limit - st.pos) as usize).min(FOLLOW_CHUNK);
                let pos = st.pos;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; want];
                    let n = read_at(&file, &mut buf, pos)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>(buf)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("spool read task failed: {e}"))));
                match read {
                    Ok(buf) if buf.is_empty() => {
                        return st.fail(std::io::Error::other("spool file shorter than announced"));
                    }
                    Ok(buf) => {
                        st.pos += buf.len() as u64;
                        return Some((Ok(Bytes::from(buf)), st));
                    }
                    Err(e) => return st.fail(e),
                }
            }
            if matches!(state, FetchState::Done { .. }) && st.pos >= limit {
                return None;
            }
            if st.rx.changed().await.is_err() {
                // The fetch task is gone without a final state.
                let done = matches!(*st.rx.borrow(), FetchState::Done { .. });
                if !done {
                    return st.fail(std::io::Error::other("blob fetch aborted"));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflight(spool: PathBuf) -> (Arc<Inflight>, Arc<std::fs::File>) {
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&spool).expect("spool");
        let file = Arc::new(file);
        let (state, _) = watch::channel(FetchState::Starting);
        let flight = Arc::new(Inflight { spool, file: OnceLock::new(), state, repos: Mutex::new(Vec::new()) });
        assert!(flight.file.set(file.clone()).is_ok());
        (flight, file)
    }

    async fn read_to(stream: &mut ByteStream, got: &mut Vec<u8>, len: usize) {
        while got.len() < len {
            let chunk = stream.next().await.expect("more bytes").expect("no error");
            got.extend_from_slice(&chunk);
        }
    }

    /// Followers read through the fetch's open handle: one that started
    /// before the spool was moved into storage and one that starts after
    /// both get every byte; the last byte waits for verification.
    #[tokio::test]
    async fn followers_keep_reading_after_the_spool_is_moved() {
        let dir = std::env::temp_dir().join(format!("cove-follow-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let spool = dir.join("spool");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (flight, file) = inflight(spool.clone());
        write_all_at(&file, &data[..600_000], 0).expect("write");
        flight.state.send_replace(FetchState::Running { written: 600_000, size: Some(1_000_000) });

        let mut early = follow(flight.clone(), 0, None);
        let mut got = Vec::new();
        read_to(&mut early, &mut got, 599_999).await;
        assert_eq!(got.len(), 599_999, "the last written byte is held back");
        let waited = tokio::time::timeout(Duration::from_millis(100), early.next()).await;
        assert!(waited.is_err(), "nothing more until more bytes arrive");

        write_all_at(&file, &data[600_000..], 600_000).expect("write");
        flight.state.send_replace(FetchState::Done { size: Some(1_000_000) });
        let moved = dir.join("moved");
        std::fs::rename(&spool, &moved).expect("move the spool away like blob_import");
        assert!(!spool.exists());

        let mut late = follow(flight.clone(), 500_000, Some(900_000));
        let mut tail = Vec::new();
        read_to(&mut late, &mut tail, 400_000).await;
        assert!(late.next().await.is_none(), "a ranged follower ends at its end");
        assert_eq!(tail, data[500_000..900_000].to_vec());

        read_to(&mut early, &mut got, 1_000_000).await;
        assert!(early.next().await.is_none());
        assert_eq!(got, data);
        drop((early, late, flight));
        assert!(moved.exists(), "dropping the flight leaves the moved file alone");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A failed fetch ends every follower with an error after the bytes
    /// already readable, never with a clean end; the spool is removed once
    /// the last follower is gone.
    #[tokio::test]
    async fn a_failed_fetch_fails_followers_and_removes_the_spool() {
        let dir = std::env::temp_dir().join(format!("cove-follow-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let spool = dir.join("spool");
        let (flight, file) = inflight(spool.clone());
        write_all_at(&file, &[7u8; 1000], 0).expect("write");
        flight.state.send_replace(FetchState::Running { written: 1000, size: Some(5000) });
        let mut s = follow(flight.clone(), 0, None);
        let mut got = Vec::new();
        read_to(&mut s, &mut got, 999).await;
        flight.state.send_replace(FetchState::Failed(RegistryError::internal("boom")));
        assert!(s.next().await.expect("an item").is_err(), "failure is reported, not a clean end");
        assert!(s.next().await.is_none());
        drop((s, flight, file));
        assert!(!spool.exists(), "spool removed with the last reference");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
