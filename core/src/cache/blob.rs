//! Serving blobs of cached repositories: from storage when this repository
//! has them, else by joining or starting the single upstream fetch.

use std::sync::Arc;

use super::fetch::{BlobFlight, FetchState};
use super::{CacheStatus, CachedRepo, PullThrough};
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::range::{resolve as resolve_range, RangeRequest};
use crate::registry::blobs::serve_opened;
use crate::registry::BlobResponse;
use crate::storage::OpenBlob;

impl PullThrough {
    /// Serves a blob of a cached repository: from storage, or by joining or
    /// starting the single upstream fetch of it.
    pub async fn blob(
        &self,
        at: CachedRepo<'_>,
        digest: &Digest,
        range: Option<&RangeRequest>,
        head: bool,
    ) -> Result<(BlobResponse, CacheStatus)> {
        let CachedRepo { storage, route, remote, repo } = at;
        if let Some(opened) = storage.blob_open(digest, Some(repo), !head).await? {
            return Ok((self.serve_stored(at, digest, opened, range, head).await?, CacheStatus::Hit));
        }
        if let Some(opened) = storage.blob_open(digest, None, !head).await? {
            // Stored for another repository: serve it here only if upstream
            // confirms this repository has it (no cross-repository leaks).
            // A fetch for this repository that just committed and is about
            // to link it needs no confirmation.
            if !self.blob_flights.is_fetching_for(&route.host, digest, repo) {
                route
                    .upstream
                    .head_blob(remote, digest)
                    .await
                    .map_err(|e| self.upstream_failed(route, e, RegistryError::blob_unknown(digest)))?;
            }
            storage.blob_link(repo, digest).await?;
            return Ok((self.serve_stored(at, digest, opened, range, head).await?, CacheStatus::Hit));
        }
        if head {
            return Ok((self.head_missing(at, digest, range).await?, CacheStatus::Miss));
        }
        let (flight, relay) = self.join_or_fetch(at, digest);
        let size = flight.announced_size().await?;
        self.counters.count(&route.host, |c| c.misses += 1);
        // An in-flight blob of unknown size is sent whole (no Range).
        let range = match size {
            Some(s) => resolve_range(range, s)?,
            None => None,
        };
        let start = range.map_or(0, |r| r.start);
        let end = range.map(|r| r.end + 1).or(size);
        let body = super::spool::follow(flight, start, end, relay);
        Ok((BlobResponse { size, range, body }, CacheStatus::Miss))
    }

    /// Serves a stored blob (counted as a hit; a GET's bytes as saved).
    async fn serve_stored(
        &self,
        at: CachedRepo<'_>,
        digest: &Digest,
        opened: OpenBlob,
        range: Option<&RangeRequest>,
        head: bool,
    ) -> Result<BlobResponse> {
        let size = opened.size;
        let b = serve_opened(at.storage.as_ref(), digest, opened, range, head).await?;
        let served = if head { 0 } else { b.range.map_or(size, |r| r.len()) };
        self.counters.count(&at.route.host, |c| {
            c.hits += 1;
            c.bytes_saved += served;
        });
        Ok(b)
    }

    /// A HEAD of a blob not in storage: its size from the fetch in flight,
    /// else from upstream (nothing is fetched).
    async fn head_missing(
        &self,
        at: CachedRepo<'_>,
        digest: &Digest,
        range: Option<&RangeRequest>,
    ) -> Result<BlobResponse> {
        if let Some(size) = self.blob_flights.size_of(&at.route.host, digest) {
            return Ok(BlobResponse { size: Some(size), range: None, body: Box::pin(futures::stream::empty()) });
        }
        let size = at
            .route
            .upstream
            .head_blob(at.remote, digest)
            .await
            .map_err(|e| self.upstream_failed(at.route, e, RegistryError::blob_unknown(digest)))?;
        let range = resolve_range(range, size)?;
        Ok(BlobResponse { size: Some(size), range, body: Box::pin(futures::stream::empty()) })
    }

    /// The upstream fetch of `digest` for `at`: the one in flight (which
    /// then also links it into `at.repo`), or a new one.
    fn join_or_fetch(
        &self,
        at: CachedRepo<'_>,
        digest: &Digest,
    ) -> (Arc<BlobFlight>, Option<tokio::sync::mpsc::Receiver<super::fetch::Relayed>>) {
        let new_spool = || {
            let n = self.spool_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.spool_dir.join(format!("{}-{}-{n}", digest.algorithm().as_str(), digest.hex()))
        };
        self.blob_flights.join_or_start(at, digest, new_spool, &self.counters)
    }
}

impl BlobFlight {
    /// Waits until the fetch started streaming (or failed): the size
    /// upstream announced, if it did.
    async fn announced_size(&self) -> Result<Option<u64>> {
        let mut rx = self.state.subscribe();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                FetchState::Starting => {}
                FetchState::Running { size, .. } | FetchState::Done { size } => return Ok(size),
                FetchState::Failed(e) => return Err(e),
            }
            if rx.changed().await.is_err() {
                return Err(RegistryError::internal("blob fetch ended without a result"));
            }
        }
    }
}
