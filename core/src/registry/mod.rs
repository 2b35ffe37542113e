//! The registry engine: OCI Distribution semantics implemented once on top of
//! the plugin traits. The HTTP server parses requests into typed values and
//! calls these methods; everything here is free of HTTP. The operations
//! are grouped by family: `manifests`, `blobs` (with uploads) and
//! `discovery` (tags, catalog, referrers); [`prefetch`] pulls images into
//! the cache ahead of clients.

pub(crate) mod blobs;
mod discovery;
mod manifests;
pub mod prefetch;

pub use manifests::{too_many_tags, MAX_TAGS_PER_PUSH};

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::cache::{CacheStatus, PullThrough, Route, UpstreamRoute};
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::name::{Reference, RepoName, Tag};
use crate::storage::{ByteRange, ByteStream, Storage};

/// A manifest ready to be sent.
#[derive(Debug, Clone)]
pub struct ManifestResponse {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// How a pull-through response was served (`None` for private repositories).
pub type Cache = Option<CacheStatus>;

/// A blob (or a range of it) ready to be sent.
pub struct BlobResponse {
    /// Size of the whole blob (`None` while an upstream fetch of unknown
    /// length is in flight).
    pub size: Option<u64>,
    /// The range being sent, if the request asked for one.
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PutManifestResult {
    pub digest: Digest,
    /// The manifest's `subject`, sent back as `OCI-Subject`.
    pub subject: Option<Digest>,
    /// The tags of the push's `tag` parameters, once each in request order,
    /// sent back in `OCI-Tag`.
    pub tags: Vec<Tag>,
}

/// One page of a sorted list (tags or repositories).
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<String>,
    /// The last item returned, when more items follow (for the `Link` header).
    pub next_last: Option<String>,
}

/// The result of a referrers query.
#[derive(Debug, Clone)]
pub struct ReferrersResponse {
    /// The image index body.
    pub body: Bytes,
    /// Whether an `artifactType` filter was applied.
    pub filtered: bool,
    /// How a cached repository's list was served.
    pub cache: Cache,
}

/// The registry engine.
#[derive(Clone)]
pub struct Registry {
    storage: Arc<dyn Storage>,
    cache: Option<Arc<PullThrough>>,
    /// Pull/push times that retention judges idleness by; shared by clones,
    /// set once.
    activity: Arc<std::sync::OnceLock<Arc<crate::retention::ActivityLog>>>,
    /// Writes refused because storage was full (disk, quota or `min_free`).
    storage_full: Arc<std::sync::atomic::AtomicU64>,
    /// The repository names in memory, when the storage keeps it current
    /// (see [`crate::storage::index`]).
    repo_index: Option<Arc<crate::storage::RepoIndex>>,
}

impl Registry {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Registry { storage, cache: None, activity: Arc::default(), storage_full: Arc::default(), repo_index: None }
    }

    /// Starts recording manifest pulls and tag pushes in `log` (for
    /// retention). Only the first call has an effect.
    pub fn set_activity(&self, log: Arc<crate::retention::ActivityLog>) {
        let _ = self.activity.set(log);
    }

    /// The activity log, once set.
    pub fn activity(&self) -> Option<&Arc<crate::retention::ActivityLog>> {
        self.activity.get()
    }

    fn record_pull(&self, repo: &RepoName, reference: &Reference, digest: &Digest) {
        if let Some(log) = self.activity.get() {
            let tag = match reference {
                Reference::Tag(t) => Some(t),
                Reference::Digest(_) => None,
            };
            log.record_pull(repo, tag, digest);
        }
    }

    /// Adds the pull-through cache for the configured upstreams.
    /// Lists from `index`, which the storage (a
    /// [`crate::gc::GuardedStorage`] with that index) keeps current.
    pub fn with_repo_index(mut self, index: Arc<crate::storage::RepoIndex>) -> Self {
        self.repo_index = Some(index);
        self
    }

    /// The repository names in memory, if kept; ready after its first sweep.
    pub fn repo_index(&self) -> Option<&Arc<crate::storage::RepoIndex>> {
        self.repo_index.as_ref()
    }

    pub fn with_cache(mut self, cache: PullThrough) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    pub fn cache(&self) -> Option<&Arc<PullThrough>> {
        self.cache.as_ref()
    }

    /// Maps a path name and containerd's optional `ns` query parameter to the
    /// repository Cove stores it under.
    pub fn resolve_name(&self, name: &str, ns: Option<&str>) -> Result<RepoName> {
        match &self.cache {
            Some(c) => c.resolve_name(name, ns),
            None => name.parse(),
        }
    }

    fn cached_route(&self, repo: &RepoName) -> Option<(&Arc<PullThrough>, UpstreamRoute, RepoName)> {
        let cache = self.cache.as_ref()?;
        match cache.route(repo) {
            Route::Cached { route, remote } => Some((cache, route, remote)),
            Route::Private => None,
        }
    }

    /// Writes into an upstream's namespace are refused: it mirrors upstream.
    fn ensure_writable(&self, repo: &RepoName) -> Result<()> {
        if let Some((_, route, _)) = self.cached_route(repo) {
            return Err(RegistryError::denied(format!(
                "{repo} is in the pull-through cache of {}; it is read-only (push to a name outside {}/ instead)",
                route.host, route.host
            )));
        }
        Ok(())
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// How many writes were refused because storage was full.
    pub fn storage_full_count(&self) -> u64 {
        self.storage_full.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts and logs a write refused for lack of space. `upload` is the
    /// session it was for: it is ended, so its bytes are given back at once
    /// (the client cannot finish it anyway and starts over later).
    pub(crate) async fn storage_full(&self, repo: &RepoName, upload: Option<&str>, why: &str) {
        self.storage_full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let space = self.storage.space().await.ok().flatten();
        tracing::warn!(
            %repo,
            upload,
            available = space.map(|s| s.available),
            floor = space.map(|s| s.floor),
            reason = why,
            "storage is full: write refused with 507"
        );
        if let Some(id) = upload {
            if let Err(e) = self.storage.upload_abort(id).await {
                tracing::warn!(upload = id, error = %e, "cannot remove the upload refused for lack of space");
            }
        }
    }
}

/// Takes the page after `last` of at most `n` items from a sorted list.
pub fn paginate(items: &[String], n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(last) => items.partition_point(|i| i.as_str() <= last),
        None => 0,
    };
    let rest = &items[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    let page: Vec<String> = rest[..take].to_vec();
    let next_last = if take < rest.len() { page.last().cloned() } else { None };
    Page { items: page, next_last }
}

/// Wraps a body so that it fails unless it yields exactly `len` bytes.
pub fn exact_length(body: ByteStream, len: u64) -> ByteStream {
    let mut seen = 0u64;
    let mut done = false;
    let checked = body.map(Some).chain(futures::stream::once(async { None })).filter_map(move |item| {
        let out = match item {
            Some(Ok(chunk)) => {
                seen += chunk.len() as u64;
                if seen > len {
                    done = true;
                    Some(Err(std::io::Error::other(format!("body is longer than the declared {len} bytes"))))
                } else {
                    Some(Ok(chunk))
                }
            }
            Some(Err(e)) => Some(Err(e)),
            None if !done && seen != len => {
                Some(Err(std::io::Error::other(format!("body has {seen} bytes, {len} were declared"))))
            }
            None => None,
        };
        futures::future::ready(out)
    });
    Box::pin(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = paginate(&items, Some(2), None);
        assert_eq!(p.items, ["a", "b"]);
        assert_eq!(p.next_last.as_deref(), Some("b"));
        let p = paginate(&items, Some(2), Some("b"));
        assert_eq!(p.items, ["c", "d"]);
        assert_eq!(p.next_last, None);
        assert!(paginate(&items, Some(0), None).items.is_empty());
        assert_eq!(paginate(&items, None, Some("bb")).items, ["c", "d"]);
    }
}
