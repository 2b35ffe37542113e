//! Referrers of cached images: the list comes from upstream and is cached
//! like a tag.
//!
//! - From the upstream's referrers API when it has one; otherwise from the
//!   tag schema (the `<alg>-<hex>` tag naming an index of the referrers),
//!   which goes through the manifest path like any cached tag.
//! - The list is kept in storage as the repository's referrer records, so
//!   it survives a restart, and is served without asking upstream for the
//!   route's `tag_ttl`. Then it is asked again; when upstream is down,
//!   silent, rate limited or low on rate-limit headroom, the stored list is
//!   served marked stale.
//! - Referrer manifests and their blobs are ordinary cached content,
//!   fetched by digest when a client asks for them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{CacheStatus, CachedRepo, PullThrough};
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::manifest::{parse_manifest, Descriptor};
use crate::name::{Reference, RepoName, Tag};
use crate::upstream::UpstreamError;

/// Held by the one request fetching a list while the others wait.
type Flight = Arc<tokio::sync::Mutex<()>>;

/// When each cached referrers list was last fetched from upstream, and the
/// fetches under way (concurrent requests of one list share one).
#[derive(Default)]
pub(crate) struct ReferrersFreshness {
    fetched: Mutex<HashMap<(RepoName, Digest), Instant>>,
    flights: Mutex<HashMap<(RepoName, Digest), Flight>>,
}

impl ReferrersFreshness {
    /// The lock that one fetch of the list holds while the others wait.
    fn flight(&self, repo: &RepoName, subject: &Digest) -> Flight {
        let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        f.entry((repo.clone(), subject.clone())).or_default().clone()
    }

    /// Forgets the flight `held` once nobody else holds it.
    fn land(&self, repo: &RepoName, subject: &Digest, held: Flight) {
        let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let key = (repo.clone(), subject.clone());
        // Two references: the map's and `held`.
        if f.get(&key).is_some_and(|m| Arc::ptr_eq(m, &held) && Arc::strong_count(m) == 2) {
            f.remove(&key);
        }
    }

    fn is_fresh(&self, repo: &RepoName, subject: &Digest, ttl: std::time::Duration) -> bool {
        let f = self.fetched.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&(repo.clone(), subject.clone())).is_some_and(|t| t.elapsed() < ttl)
    }

    fn mark_fresh(&self, repo: &RepoName, subject: &Digest) {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner()).insert((repo.clone(), subject.clone()), Instant::now());
    }

    /// Forgets everything about hosts not in `keep` (config reload).
    pub(crate) fn retain_hosts(&self, keep: &HashSet<String>) {
        self.fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(repo, _), _| keep.contains(repo.first_component()));
    }
}

/// The tag under which the referrers tag schema keeps the index of the
/// referrers of `subject`: `<alg>-<hex>`, the hex cut to 64 characters.
pub fn referrers_tag(subject: &Digest) -> Option<Tag> {
    let hex = subject.hex();
    let hex = hex.get(..64).unwrap_or(hex);
    format!("{}-{hex}", subject.algorithm().as_str()).parse().ok()
}

impl PullThrough {
    /// The referrers of `subject` in a cached repository (unfiltered), and
    /// how the list was served.
    pub async fn referrers(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        subject: &Digest,
    ) -> Result<(Vec<Descriptor>, CacheStatus)> {
        let CachedRepo { storage, route, repo, .. } = at;
        if self.referrers_freshness.is_fresh(repo, subject, route.tag_ttl) {
            return Ok((storage.referrers(repo, subject).await?, CacheStatus::Hit));
        }
        let flight = self.referrers_freshness.flight(repo, subject);
        let outcome = {
            let _leader = flight.lock().await;
            if self.referrers_freshness.is_fresh(repo, subject, route.tag_ttl) {
                // Another request just fetched it.
                storage.referrers(repo, subject).await.map(|l| (l, CacheStatus::Hit)).map_err(Into::into)
            } else {
                self.fetch_referrers(at, subject).await
            }
        };
        self.referrers_freshness.land(repo, subject, flight);
        outcome
    }

    /// Asks upstream for the list (or serves the stored one when it cannot
    /// be asked now) and stores it.
    async fn fetch_referrers(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        subject: &Digest,
    ) -> Result<(Vec<Descriptor>, CacheStatus)> {
        let CachedRepo { route, remote, repo, .. } = at;
        if self.freshness.is_down(&route.host) || !route.upstream.health().healthy || self.low_headroom(route) {
            return self.stored_referrers(at, subject, None).await;
        }
        let fetched = match route.upstream.referrers(remote, subject).await {
            Ok(Some(list)) => (list, None),
            Ok(None) | Err(UpstreamError::NotFound) => match self.referrers_by_tag(at, subject).await {
                Ok(r) => (r.0, Some(r.1)),
                Err(e) if e.code == ErrorCode::Unavailable || e.code == ErrorCode::TooManyRequests => {
                    return self.stored_referrers(at, subject, Some(e)).await;
                }
                Err(e) => return Err(e),
            },
            Err(e) => {
                self.counters.upstream_failed(&route.host, &e);
                if matches!(e, UpstreamError::Unavailable(_) | UpstreamError::TooManyRequests { .. }) {
                    self.freshness.mark_down(&route.host);
                }
                let not_found = RegistryError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known"));
                return self.stored_referrers(at, subject, Some(super::upstream_error(e, not_found))).await;
            }
        };
        let (list, tag_status) = fetched;
        self.freshness.mark_up(&route.host);
        let changed = self.replace_referrers(at, subject, &list).await?;
        // A fallback index served stale is not a fresh list: ask again next time.
        if tag_status != Some(CacheStatus::Stale) {
            self.referrers_freshness.mark_fresh(repo, subject);
        }
        let status = match tag_status {
            // The tag schema's own cache status (a stale index stays stale).
            Some(s) => s,
            None if changed => CacheStatus::Miss,
            None => CacheStatus::Revalidated,
        };
        tracing::info!(upstream = %route.host, %repo, %subject, referrers = list.len(), cache = status.as_str(), "referrers");
        Ok((list, status))
    }

    /// The referrers from the tag schema: the index `<alg>-<hex>` names,
    /// resolved like any cached tag; no such tag is an empty list.
    async fn referrers_by_tag(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        subject: &Digest,
    ) -> Result<(Vec<Descriptor>, CacheStatus)> {
        let Some(tag) = referrers_tag(subject) else {
            return Ok((Vec::new(), CacheStatus::Miss));
        };
        match self.manifest(at, &Reference::Tag(tag)).await {
            Ok((m, status)) => {
                let parsed = parse_manifest(&m.bytes, Some(&m.media_type))?;
                if !parsed.is_index() {
                    return Err(super::failure::upstream_invalid(
                        &at.route.host,
                        &format!("has a referrers tag for {subject} that is not an index"),
                    ));
                }
                Ok((parsed.manifests, status))
            }
            Err(e) if e.code == ErrorCode::ManifestUnknown => Ok((Vec::new(), CacheStatus::Miss)),
            Err(e) => Err(e),
        }
    }

    /// Makes the stored referrer records of `subject` exactly `list`.
    /// Returns whether anything changed.
    async fn replace_referrers(&self, at: CachedRepo<'_>, subject: &Digest, list: &[Descriptor]) -> Result<bool> {
        let (storage, repo) = (at.storage, at.repo);
        let old = storage.referrers(repo, subject).await?;
        let mut changed = false;
        for d in list {
            if !old.contains(d) {
                storage.referrer_put(repo, subject, d).await?;
                changed = true;
            }
        }
        let keep: HashSet<&Digest> = list.iter().map(|d| &d.digest).collect();
        for d in old.iter().filter(|d| !keep.contains(&d.digest)) {
            storage.referrer_delete(repo, subject, &d.digest).await?;
            changed = true;
        }
        Ok(changed)
    }

    /// The stored list, served stale while upstream cannot be asked. With
    /// nothing known about `subject` (no records, subject not cached) the
    /// upstream failure `failed` is the answer, if there is one.
    async fn stored_referrers(
        &self,
        at: CachedRepo<'_>,
        subject: &Digest,
        failed: Option<RegistryError>,
    ) -> Result<(Vec<Descriptor>, CacheStatus)> {
        let list = at.storage.referrers(at.repo, subject).await?;
        if list.is_empty() && at.storage.manifest_get(at.repo, subject).await?.is_none() {
            if let Some(e) = failed {
                return Err(e);
            }
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!("upstream {} is unavailable and nothing is cached for {subject}", at.route.host),
            )
            .with_detail(crate::error::ErrorDetail::RetryAfter(std::time::Duration::from_secs(10))));
        }
        tracing::info!(upstream = %at.route.host, repo = %at.repo, %subject, referrers = list.len(),
            "upstream not asked or failed; serving cached referrers (stale)");
        Ok((list, CacheStatus::Stale))
    }
}
