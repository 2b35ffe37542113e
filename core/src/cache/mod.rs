//! The pull-through cache: name routing (origin-path convention and
//! containerd's `ns=`), tag freshness and revalidation, stale-if-error, and
//! single-flight streaming of blob misses.
//!
//! - [`routing`]: which upstream a repository name belongs to;
//! - [`counters`]: per-upstream hit/miss/error counters;
//! - [`manifest`]: the manifest path (TTL, revalidation, stale-if-error, one
//!   upstream round trip for concurrent requests);
//! - [`blob`], [`fetch`] and `spool`: serving blobs, and the single upstream
//!   fetch of a missing one, spooled to disk while clients read it;
//! - [`referrers`]: referrers lists of cached images, from the upstream's
//!   referrers API or its tag schema, cached like tags;
//! - [`failure`]: what an upstream failure becomes for the client.
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

pub mod blob;
pub mod counters;
pub mod failure;
pub mod fetch;
pub mod manifest;
pub mod referrers;
pub mod routing;
pub(crate) mod spool;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::digest::Digest;
use crate::name::RepoName;
use crate::storage::Storage;

pub use counters::CacheCounters;
pub use failure::upstream_error;
pub use routing::{NameRules, Route, UpstreamRoute};

use counters::UpstreamCounters;
use fetch::BlobFlights;
use manifest::{ManifestFlights, Revalidations, TagFreshness};
use referrers::ReferrersFreshness;

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

/// One request's cached repository: where Cove stores it and where it comes
/// from. The route is the snapshot the request started with.
#[derive(Clone, Copy)]
pub struct CachedRepo<'a> {
    pub storage: &'a Arc<dyn Storage>,
    pub route: &'a UpstreamRoute,
    /// The name in the upstream's own namespace (`library/nginx`).
    pub remote: &'a RepoName,
    /// The name Cove stores it under (`docker.io/library/nginx`).
    pub repo: &'a RepoName,
}

/// The pull-through cache state shared by all requests.
pub struct PullThrough {
    /// Swapped as a whole by [`PullThrough::set_routes`] (config reload).
    routes: RwLock<Vec<UpstreamRoute>>,
    names: RwLock<NameRules>,
    spool_dir: PathBuf,
    freshness: TagFreshness,
    referrers_freshness: ReferrersFreshness,
    revalidations: Revalidations,
    blob_flights: Arc<BlobFlights>,
    manifest_flights: ManifestFlights,
    counters: Arc<UpstreamCounters>,
    spool_seq: std::sync::atomic::AtomicU64,
}

impl PullThrough {
    /// `names` say how names without an upstream prefix are read;
    /// `spool_dir` holds in-flight blob downloads (emptied here).
    pub fn new(routes: Vec<UpstreamRoute>, names: NameRules, spool_dir: PathBuf) -> std::io::Result<Self> {
        if spool_dir.exists() {
            std::fs::remove_dir_all(&spool_dir)?;
        }
        std::fs::create_dir_all(&spool_dir)?;
        Ok(PullThrough {
            routes: RwLock::new(routes),
            names: RwLock::new(names.normalized()),
            spool_dir,
            freshness: TagFreshness::default(),
            referrers_freshness: ReferrersFreshness::default(),
            revalidations: Revalidations::default(),
            blob_flights: Arc::default(),
            manifest_flights: ManifestFlights::default(),
            counters: Arc::default(),
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
        self.freshness.retain_hosts(&keep);
        self.referrers_freshness.retain_hosts(&keep);
    }

    /// A snapshot of the per-upstream counters.
    pub fn counters(&self) -> std::collections::HashMap<String, CacheCounters> {
        self.counters.snapshot()
    }

    /// Whether `route`'s upstream announced fewer remaining pulls than its
    /// `ratelimit_floor` in the current window: then cached tags are not
    /// revalidated and nothing is prefetched.
    pub fn low_headroom(&self, route: &UpstreamRoute) -> bool {
        route.ratelimit_floor > 0
            && route.upstream.rate_limit().is_some_and(|r| r.current() && r.remaining < route.ratelimit_floor)
    }

    /// Digests with an upstream fetch in flight (garbage collection keeps
    /// them; metrics count them).
    pub fn inflight_digests(&self) -> Vec<Digest> {
        self.blob_flights.digests()
    }

    /// Whether an upstream fetch of `digest` is in flight (without copying
    /// the in-flight set, as [`Self::inflight_digests`] does).
    pub fn is_fetching(&self, digest: &Digest) -> bool {
        self.blob_flights.is_fetching(digest)
    }
}
