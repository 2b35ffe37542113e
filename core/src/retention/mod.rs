//! Cache retention per upstream and tag retention per repository.
//!
//! - [`ActivityLog`] ([`activity`]): the last pull of every manifest and the
//!   last push and pull of every tag, saved to a small JSON file.
//! - [`run`]: one retention pass, in named steps: list every repository;
//!   plan each upstream's evictions and the tag policies' removals
//!   (`plan`); carry them out (`evict`); forget what is gone. The unit
//!   of cache eviction is a cached *image* (a tagged manifest, or one pulled
//!   by digest, with the children of an index and the referrers belonging
//!   to it); its last pull is the latest over its members. Images idle for
//!   longer than `max_age` go, then the least recently pulled until the
//!   upstream's cache fits in `max_size`; then, when storage is below its
//!   `min_free` floor (`free_bytes`), the least recently pulled cached
//!   images of all upstreams until that much is freed. Evicting removes tags, manifests
//!   and referrer records only: blobs are left to garbage collection's
//!   sweep, which removes a blob only when nothing at all references it, so
//!   a layer shared with a private or another cached image stays.
//!
//! # Safety while serving
//! An image is never evicted while it is in use: pulled within `grace`,
//! blobs in an upstream fetch (`protect`), or (through [`GcGuard`]) any of
//! the manifests it deletes or blobs only it references written, linked or
//! read within `grace` or since the run started. The deletion holds
//! [`GcGuard`] claims on those digests, so a pull re-caching the image
//! meanwhile waits and then stores it again; a pull that got the manifest
//! just before finds the blobs in storage or fetches them again upstream.
//! Private repositories are only touched by explicit tag policies.

pub mod activity;
mod evict;
mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::gc::{GcError, GcGuard};
use crate::name::RepoName;
use crate::storage::{Storage, StorageError};

pub use activity::{now_ms, ActivityLog, TagTimes};

/// Sizes of committed blobs, remembered (a digest's size never changes).
#[derive(Default)]
pub struct BlobSizes {
    sizes: Mutex<HashMap<Digest, u64>>,
}

impl BlobSizes {
    /// The size of `digest` in storage; `None` if it is not stored.
    pub async fn get(&self, storage: &dyn Storage, digest: &Digest) -> Result<Option<u64>, StorageError> {
        if let Some(s) = self.sizes.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Ok(Some(*s));
        }
        let size = storage.blob_size(digest).await?;
        if let Some(s) = size {
            self.sizes.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.clone(), s);
        }
        Ok(size)
    }

    pub(crate) fn forget(&self, digest: &Digest) {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
    }

    pub(crate) fn retain(&self, keep: &HashSet<Digest>) {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).retain(|d, _| keep.contains(d));
    }
}

/// Cache limits of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    /// The upstream host (first component of its cached repositories).
    pub host: String,
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
}

/// Tag retention for the repositories a predicate selects.
pub struct TagPolicy {
    /// The pattern as configured (for reports).
    pub pattern: String,
    pub matches: Box<dyn Fn(&RepoName) -> bool + Send + Sync>,
    /// Keep this many most recently pushed tags.
    pub keep_last: Option<usize>,
    /// Keep tags pulled (or pushed) within this duration.
    pub keep_pulled_within: Option<Duration>,
}

/// Says whether `repository:tag` is pinned.
pub type PinnedTags = Box<dyn Fn(&RepoName, &str) -> bool + Send + Sync>;

/// What a retention run does.
pub struct RetentionOptions {
    pub upstreams: Vec<UpstreamPolicy>,
    /// The first policy whose pattern matches a repository applies to it.
    pub tags: Vec<TagPolicy>,
    /// Nothing used more recently than this is removed.
    pub grace: Duration,
    /// Report what would go; remove nothing.
    pub dry_run: bool,
    /// Bytes to free to get storage back above its `min_free` floor: after
    /// the per-upstream limits, the least recently pulled cached images of
    /// every upstream go until this much is freed. Private images never.
    pub free_bytes: Option<u64>,
    /// Whether `repository:tag` is pinned (`[[prefetch]] pin = true`): a
    /// cached image a pinned tag points at is never evicted by cache limits.
    pub pinned: PinnedTags,
    /// Checked before each image's deletion: the run stops when it fails
    /// (the replicas' maintenance lease, see [`crate::lease`]).
    pub fence: Option<crate::lease::FenceRef>,
}

/// One evicted (or, in a dry run, evictable) cached image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvictedImage {
    pub upstream: String,
    pub repository: String,
    /// The root manifest.
    pub digest: String,
    pub tags: Vec<String>,
    /// Manifests removed with it (the root, an index's children, referrers).
    pub manifests: usize,
    /// Bytes freed: its manifests and the blobs nothing else references.
    pub bytes: u64,
    /// Time since its last pull.
    pub idle_seconds: u64,
    /// `max_age` or `max_size`.
    pub reason: String,
}

/// Cache usage of one upstream with a policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamUsage {
    pub host: String,
    /// Cached image roots after the run.
    pub images: usize,
    /// Distinct blob bytes plus manifest bytes of the remaining images.
    pub bytes: u64,
    /// The same before the run.
    pub bytes_before: u64,
    pub max_size: Option<u64>,
    pub evicted_images: usize,
    pub evicted_bytes: u64,
}

/// The outcome of a retention run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub evicted: Vec<EvictedImage>,
    /// `repository:tag` removed by tag policies (or by eviction).
    pub tags_removed: Vec<String>,
    /// `repository@digest` of every manifest removed.
    pub manifests_removed: Vec<String>,
    /// Candidates kept because they were in use (recent pull, push, fetch).
    pub kept_in_use: usize,
    pub upstreams: Vec<UpstreamUsage>,
    /// Bytes that nothing references any more (freed by the blob sweep).
    pub bytes_freed: u64,
    pub duration_ms: u64,
    /// Requests made to an object store during the run (with whatever else
    /// this replica asked of it meanwhile); `None` on a filesystem.
    #[serde(default)]
    pub store_requests: Option<crate::storage::StoreRequests>,
}

/// One run's fixed inputs, shared by its steps.
struct RetentionRun<'a> {
    storage: &'a dyn Storage,
    guard: &'a Arc<GcGuard>,
    activity: &'a ActivityLog,
    sizes: &'a BlobSizes,
    protect: &'a (dyn Fn(&Digest) -> bool + Send + Sync),
    opts: &'a RetentionOptions,
    /// When the run started: digests touched since then stay.
    t0: Instant,
    /// The run's clock for idle times (Unix milliseconds).
    now: u64,
    grace_ms: u64,
}

/// Runs one retention pass over `storage` (the guarded storage that serves
/// requests). `upstream_of` names the upstream host of a cached repository
/// (`None`: private); `protect` names digests in an upstream fetch.
/// Deletes tags, manifests and referrer records; the caller then runs the
/// garbage collector's blob sweep when anything was removed.
pub async fn run(
    storage: &dyn Storage,
    guard: &Arc<GcGuard>,
    activity: &ActivityLog,
    sizes: &BlobSizes,
    upstream_of: &(dyn Fn(&RepoName) -> Option<String> + Send + Sync),
    protect: &(dyn Fn(&Digest) -> bool + Send + Sync),
    opts: &RetentionOptions,
) -> Result<RetentionReport, GcError> {
    let started = Instant::now();
    let requests_before = storage.store_requests();
    let run = RetentionRun {
        storage,
        guard,
        activity,
        sizes,
        protect,
        opts,
        t0: Instant::now(),
        now: now_ms(),
        grace_ms: opts.grace.as_millis() as u64,
    };
    let mut report = RetentionReport { dry_run: opts.dry_run, ..Default::default() };
    let repos = plan::list_repositories(storage, guard, upstream_of).await?;
    let mut evictions = Vec::new();
    for policy in &opts.upstreams {
        evictions.extend(run.plan_upstream(&repos, policy, &mut report).await?);
    }
    if let Some(need) = opts.free_bytes.filter(|n| *n > 0) {
        let more = run.plan_free_space(&repos, &evictions, need, &mut report).await?;
        evictions.extend(more);
    }
    let mut removals = plan::eviction_removals(&repos, evictions);
    run.plan_tag_removals(&repos, &mut removals, &mut report);
    let removed = run.remove_all(&repos, removals, &mut report).await?;
    if !opts.dry_run {
        run.forget_removed(&repos, &removed);
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.store_requests = storage.store_requests().zip(requests_before).map(|(now, before)| now.since(&before));
    tracing::info!(
        dry_run = opts.dry_run,
        store_requests = report.store_requests.map(|r| r.total()),
        evicted = report.evicted.len(),
        tags_removed = report.tags_removed.len(),
        manifests_removed = report.manifests_removed.len(),
        bytes_freed = report.bytes_freed,
        kept_in_use = report.kept_in_use,
        ms = report.duration_ms,
        "retention finished"
    );
    Ok(report)
}
