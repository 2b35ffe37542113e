//! The manifest path of the cache: by digest, served forever once verified;
//! by tag, served while younger than the upstream's `tag_ttl`, then
//! revalidated with a HEAD (same digest: refreshed; new digest: fetched);
//! upstream down, timing out, 5xx or 429: the cached copy (stale-if-error).
//! A revalidation runs in its own task: the client waits for it at most the
//! route's `revalidate_wait` and then gets the cached copy marked stale,
//! while the revalidation finishes for the next client (stale while
//! revalidate), so a silent upstream never holds up what is cached.
//! Concurrent requests of one manifest share one upstream round trip.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::failure::upstream_error;
use super::{CacheStatus, CachedRepo, PullThrough};
use crate::digest::{Digest, DigestHasher};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::name::{Reference, RepoName, Tag};
use crate::registry::ManifestResponse;
use crate::storage::StoredManifest;
use crate::upstream::UpstreamError;

/// After an upstream fails (down, timing out, 5xx, 429), cached tags are
/// served stale for this long without asking it again.
const UPSTREAM_DOWN_BACKOFF: Duration = Duration::from_secs(10);

/// The outcome of one manifest resolution, shared with every request that
/// waited for it.
type ManifestOutcome = Result<(ManifestResponse, CacheStatus)>;

/// Where a background revalidation's outcome is awaited.
type OutcomeReceiver = watch::Receiver<Option<ManifestOutcome>>;

/// Where the leader of one manifest resolution publishes its outcome.
type OutcomeSender = Arc<watch::Sender<Option<ManifestOutcome>>>;

/// In-flight manifest resolutions by (repository, reference): concurrent
/// misses and revalidations of one manifest share one upstream round trip
/// (Docker Hub counts manifest GETs against its pull limit).
#[derive(Default)]
pub(crate) struct ManifestFlights {
    by_key: Mutex<HashMap<(RepoName, String), OutcomeSender>>,
}

/// Removes a manifest flight from the map when its leader finishes or is
/// cancelled (a cancelled leader's followers then retry).
struct ManifestFlightGuard<'a> {
    flights: &'a ManifestFlights,
    key: (RepoName, String),
}

impl Drop for ManifestFlightGuard<'_> {
    fn drop(&mut self) {
        self.flights.by_key.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

/// Revalidations of cached tags running in the background, by (repository,
/// tag): a request that finds one running waits on it instead of starting
/// another.
#[derive(Default)]
pub(crate) struct Revalidations {
    by_key: Mutex<HashMap<(RepoName, Tag), OutcomeReceiver>>,
}

/// When each cached tag was last confirmed by upstream, and which
/// upstreams just failed.
#[derive(Default)]
pub(crate) struct TagFreshness {
    confirmed: Mutex<HashMap<(RepoName, Tag), Instant>>,
    /// Upstreams that just failed, until when: cached tags are served stale
    /// without retrying them meanwhile.
    down_until: Mutex<HashMap<String, Instant>>,
}

impl TagFreshness {
    fn is_fresh(&self, repo: &RepoName, tag: &Tag, ttl: Duration) -> bool {
        self.confirmed
            .lock()
            .ok()
            .and_then(|f| f.get(&(repo.clone(), tag.clone())).map(|t| t.elapsed() < ttl))
            .unwrap_or(false)
    }

    fn mark_fresh(&self, repo: &RepoName, tag: &Tag) {
        if let Ok(mut f) = self.confirmed.lock() {
            f.insert((repo.clone(), tag.clone()), Instant::now());
        }
    }

    pub(super) fn is_down(&self, host: &str) -> bool {
        self.down_until.lock().ok().and_then(|d| d.get(host).map(|until| Instant::now() < *until)).unwrap_or(false)
    }

    pub(super) fn mark_down(&self, host: &str) {
        if let Ok(mut d) = self.down_until.lock() {
            d.insert(host.to_owned(), Instant::now() + UPSTREAM_DOWN_BACKOFF);
        }
    }

    pub(super) fn mark_up(&self, host: &str) {
        if let Ok(mut d) = self.down_until.lock() {
            d.remove(host);
        }
    }

    /// Forgets everything about hosts not in `keep` (config reload).
    pub(crate) fn retain_hosts(&self, keep: &HashSet<String>) {
        if let Ok(mut d) = self.down_until.lock() {
            d.retain(|host, _| keep.contains(host));
        }
        if let Ok(mut f) = self.confirmed.lock() {
            f.retain(|(repo, _), _| keep.contains(repo.first_component()));
        }
    }
}

impl PullThrough {
    /// Serves a manifest of a cached repository.
    pub async fn manifest(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        reference: &Reference,
    ) -> Result<(ManifestResponse, CacheStatus)> {
        let started = Instant::now();
        let result = self.manifest_coalesced(at, reference).await;
        let (host, repo) = (&at.route.host, at.repo);
        match &result {
            Ok((_, status)) => {
                self.counters.count(host, |c| match status {
                    CacheStatus::Hit => c.hits += 1,
                    CacheStatus::Miss => c.misses += 1,
                    CacheStatus::Revalidated => c.revalidated += 1,
                    CacheStatus::Stale => c.stale += 1,
                });
                tracing::info!(upstream = %host, %repo, %reference, cache = status.as_str(),
                    ms = started.elapsed().as_millis() as u64, "manifest");
            }
            Err(e) => tracing::info!(upstream = %host, %repo, %reference, error = %e, "manifest not served"),
        }
        result
    }

    /// Runs [`Self::resolve_manifest`] once for all concurrent requests of
    /// the same manifest: the first one leads, the others wait for its
    /// outcome (and take over if it is cancelled).
    async fn manifest_coalesced(self: &Arc<Self>, at: CachedRepo<'_>, reference: &Reference) -> ManifestOutcome {
        let key = (at.repo.clone(), reference.to_string());
        loop {
            let role = {
                let mut flights = self.manifest_flights.by_key.lock().unwrap_or_else(|p| p.into_inner());
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
                    let outcome = self.resolve_manifest(at, reference).await;
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

    /// The cache policy for one manifest request (see the module docs).
    async fn resolve_manifest(self: &Arc<Self>, at: CachedRepo<'_>, reference: &Reference) -> ManifestOutcome {
        let CachedRepo { storage, route, repo, .. } = at;
        let tag = match reference {
            Reference::Digest(d) => {
                if let Some(m) = storage.manifest_get(repo, d).await? {
                    return Ok((response(d.clone(), m), CacheStatus::Hit));
                }
                let m = self.fetch_manifest(at, d).await?;
                return Ok((m, CacheStatus::Miss));
            }
            Reference::Tag(t) => t,
        };
        let local = match storage.tag_get(repo, tag).await? {
            Some(d) => storage.manifest_get(repo, &d).await?.map(|m| response(d, m)),
            None => None,
        };
        if let Some(m) = &local {
            if self.freshness.is_fresh(repo, tag, route.tag_ttl) {
                return Ok((m.clone(), CacheStatus::Hit));
            }
            if self.freshness.is_down(&route.host) || !route.upstream.health().healthy {
                // Upstream failed moments ago, or is not answering: do not
                // make every client wait for it again.
                return Ok((m.clone(), CacheStatus::Stale));
            }
            if self.low_headroom(route) {
                // Keep the upstream's remaining pulls for images not cached.
                self.counters.count(&route.host, |c| c.headroom_skips += 1);
                return Ok((m.clone(), CacheStatus::Stale));
            }
            return Ok(self.revalidate_within(at, tag, m.clone()).await);
        }
        self.revalidate(at, tag, None).await
    }

    /// Revalidates a cached tag in the background and waits for the
    /// outcome at most `revalidate_wait`; then serves `cached` as stale.
    async fn revalidate_within(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        tag: &Tag,
        cached: ManifestResponse,
    ) -> (ManifestResponse, CacheStatus) {
        let key = (at.repo.clone(), tag.clone());
        let mut rx = {
            let mut running = self.revalidations.by_key.lock().unwrap_or_else(|p| p.into_inner());
            match running.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    running.insert(key.clone(), rx.clone());
                    let this = Arc::clone(self);
                    let (storage, route) = (Arc::clone(at.storage), at.route.clone());
                    let (remote, repo, tag, cached) = (at.remote.clone(), at.repo.clone(), tag.clone(), cached.clone());
                    tokio::spawn(async move {
                        let at = CachedRepo { storage: &storage, route: &route, remote: &remote, repo: &repo };
                        let outcome = this.revalidate(at, &tag, Some(cached)).await;
                        this.revalidations.by_key.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                        tx.send_replace(Some(outcome));
                    });
                    rx
                }
            }
        };
        let waited = tokio::time::timeout(at.route.revalidate_wait, async {
            loop {
                if let Some(outcome) = rx.borrow_and_update().clone() {
                    return Some(outcome);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            // A storage failure while revalidating: the cached copy still stands.
            Ok(Some(Ok(served))) => served,
            Ok(Some(Err(e))) => {
                tracing::warn!(repo = %at.repo, %tag, error = %e, "revalidation failed; serving cached manifest (stale)");
                (cached, CacheStatus::Stale)
            }
            Ok(None) | Err(_) => {
                tracing::info!(upstream = %at.route.host, repo = %at.repo, %tag,
                    wait_ms = at.route.revalidate_wait.as_millis() as u64,
                    "revalidation still running; serving cached manifest (stale)");
                (cached, CacheStatus::Stale)
            }
        }
    }

    /// Asks upstream which manifest `tag` names now: the same as `local`
    /// (refreshed), another one (fetched, the tag moved), or no answer
    /// (`local` served stale if there is one).
    async fn revalidate(&self, at: CachedRepo<'_>, tag: &Tag, local: Option<ManifestResponse>) -> ManifestOutcome {
        let CachedRepo { storage, route, remote, repo } = at;
        let reference = &Reference::Tag(tag.clone());
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
                self.freshness.mark_up(&route.host);
                if let Some(m) = local.filter(|m| m.digest == digest) {
                    self.freshness.mark_fresh(repo, tag);
                    return Ok((m, CacheStatus::Revalidated));
                }
                let m = match storage.manifest_get(repo, &digest).await? {
                    Some(m) => response(digest.clone(), m),
                    None => self.fetch_manifest(at, &digest).await?,
                };
                storage.tag_put(repo, tag, &digest).await?;
                self.freshness.mark_fresh(repo, tag);
                Ok((m, CacheStatus::Miss))
            }
            Err(UpstreamError::NotFound) => Err(RegistryError::manifest_unknown(reference)),
            Err(e) => {
                self.counters.upstream_failed(&route.host, &e);
                if matches!(e, UpstreamError::Unavailable(_) | UpstreamError::TooManyRequests { .. }) {
                    self.freshness.mark_down(&route.host);
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
    async fn fetch_manifest(&self, at: CachedRepo<'_>, digest: &Digest) -> Result<ManifestResponse> {
        let CachedRepo { storage, route, remote, repo } = at;
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
            self.counters.failure(&route.host, format!("manifest digest mismatch for {digest}"), false);
            return Err(super::failure::upstream_invalid(
                &route.host,
                &format!("sent a manifest whose digest is {actual}, not {digest}"),
            ));
        }
        let stored = StoredManifest { media_type: m.media_type, bytes };
        storage.manifest_put(repo, digest, &stored).await?;
        Ok(response(digest.clone(), stored))
    }

    /// Lists tags of a cached repository: from upstream when reachable,
    /// else from the cache.
    pub async fn tags(&self, at: CachedRepo<'_>) -> Result<Vec<String>> {
        let CachedRepo { storage, route, remote, repo } = at;
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
}

fn response(digest: Digest, m: StoredManifest) -> ManifestResponse {
    ManifestResponse { digest, media_type: m.media_type, bytes: m.bytes }
}
