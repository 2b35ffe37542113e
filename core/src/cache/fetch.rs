//! The single upstream fetch of a missing blob: one task per (upstream,
//! digest) streams the body into a spool file while hashing it, publishes
//! its progress to the readers (`spool::follow`), and once the
//! blob verified imports the spool file into storage and links it into
//! every repository that asked for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::counters::UpstreamCounters;
use super::failure::{upstream_error, upstream_invalid};
use super::spool::write_all_at;
use super::CachedRepo;
use crate::digest::{Digest, DigestHasher};
use crate::error::{ErrorCode, RegistryError, Result};
use crate::name::RepoName;
use crate::storage::Storage;
use crate::upstream::Upstream;

/// How many upstream chunks may wait for the spool writer.
const SPOOL_QUEUE: usize = 32;

/// How far a fetch got; readers wait on changes.
#[derive(Debug, Clone)]
pub(crate) enum FetchState {
    Starting,
    /// `written` bytes are in the spool; `size` as announced by upstream.
    Running {
        written: u64,
        size: Option<u64>,
    },
    /// Verified: every byte may be read.
    Done {
        size: Option<u64>,
    },
    Failed(RegistryError),
}

/// One in-flight upstream fetch of a blob.
pub(crate) struct BlobFlight {
    pub(crate) spool: PathBuf,
    /// The spool file, opened once by the fetch task (set before the first
    /// `Running`). Readers read it positionally through this handle, never
    /// by path, so they keep reading after [`Storage::blob_import`] moved it.
    pub(crate) file: OnceLock<Arc<std::fs::File>>,
    pub(crate) state: watch::Sender<FetchState>,
    /// Repositories to link the blob into once committed.
    repos: Mutex<Vec<RepoName>>,
}

impl BlobFlight {
    pub(crate) fn new(spool: PathBuf, repos: Vec<RepoName>) -> BlobFlight {
        let (state, _) = watch::channel(FetchState::Starting);
        BlobFlight { spool, file: OnceLock::new(), state, repos: Mutex::new(repos) }
    }
}

impl Drop for BlobFlight {
    fn drop(&mut self) {
        // Readers hold this Arc while they read, so nobody needs the file now
        // (after a successful import it is no longer there).
        let _ = std::fs::remove_file(&self.spool);
    }
}

/// The fetches in flight by (upstream host, digest).
#[derive(Default)]
pub(crate) struct BlobFlights {
    by_key: Mutex<HashMap<(String, Digest), Arc<BlobFlight>>>,
}

impl BlobFlights {
    fn get(&self, host: &str, digest: &Digest) -> Option<Arc<BlobFlight>> {
        self.by_key.lock().ok()?.get(&(host.to_owned(), digest.clone())).cloned()
    }

    pub(crate) fn digests(&self) -> Vec<Digest> {
        self.by_key.lock().map(|m| m.keys().map(|(_, d)| d.clone()).collect()).unwrap_or_default()
    }

    pub(crate) fn is_fetching(&self, digest: &Digest) -> bool {
        self.by_key.lock().map(|m| m.keys().any(|(_, d)| d == digest)).unwrap_or(false)
    }

    /// Whether a fetch of `digest` for `repo` is in flight (or committed and
    /// not yet linked).
    pub(crate) fn is_fetching_for(&self, host: &str, digest: &Digest, repo: &RepoName) -> bool {
        self.get(host, digest).is_some_and(|f| f.repos.lock().map(|r| r.contains(repo)).unwrap_or(false))
    }

    /// The size a fetch in flight announced, if any.
    pub(crate) fn size_of(&self, host: &str, digest: &Digest) -> Option<u64> {
        let flight = self.get(host, digest)?;
        let state = flight.state.borrow().clone();
        match state {
            FetchState::Running { size, .. } | FetchState::Done { size } => size,
            _ => None,
        }
    }

    /// Joins the fetch of `digest` from `at`'s upstream, adding `at.repo` to
    /// the repositories it links, or starts one spooling to `new_spool()`.
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        digest: &Digest,
        new_spool: impl FnOnce() -> PathBuf,
        counters: &Arc<UpstreamCounters>,
    ) -> Arc<BlobFlight> {
        let key = (at.route.host.clone(), digest.clone());
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&key) {
            let mut repos = f.repos.lock().unwrap_or_else(|p| p.into_inner());
            if !repos.contains(at.repo) {
                repos.push(at.repo.clone());
            }
            return f.clone();
        }
        let flight = Arc::new(BlobFlight::new(new_spool(), vec![at.repo.clone()]));
        map.insert(key.clone(), flight.clone());
        let task = FetchTask {
            storage: at.storage.clone(),
            upstream: at.route.upstream.clone(),
            host: at.route.host.clone(),
            remote: at.remote.clone(),
            digest: digest.clone(),
            flight: flight.clone(),
            counters: counters.clone(),
        };
        let flights = self.clone();
        tokio::spawn(async move {
            task.run().await;
            flights.by_key.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        });
        flight
    }
}

/// Everything one fetch needs, owned by its task.
struct FetchTask {
    storage: Arc<dyn Storage>,
    upstream: Arc<dyn Upstream>,
    host: String,
    remote: RepoName,
    digest: Digest,
    flight: Arc<BlobFlight>,
    counters: Arc<UpstreamCounters>,
}

impl FetchTask {
    async fn run(self) {
        let started = Instant::now();
        match self.fetch().await {
            Ok(size) => {
                self.counters.count(&self.host, |c| c.bytes_fetched += size);
                tracing::info!(upstream = %self.host, digest = %self.digest, bytes = size,
                    ms = started.elapsed().as_millis() as u64, "blob fetched, verified and cached");
            }
            Err(e) => {
                tracing::warn!(upstream = %self.host, digest = %self.digest, error = %e, "blob fetch failed; nothing cached");
                // Upstream's fault (not a 404, not a local I/O failure): counted.
                if !matches!(e.code, ErrorCode::BlobUnknown | ErrorCode::Internal) {
                    self.counters.failure(&self.host, e.message.clone(), e.code == ErrorCode::TooManyRequests);
                }
                self.flight.state.send_replace(FetchState::Failed(e));
            }
        }
    }

    /// Streams, verifies and commits the blob; returns its size.
    async fn fetch(&self) -> Result<u64> {
        let blob = self
            .upstream
            .get_blob(&self.remote, &self.digest)
            .await
            .map_err(|e| upstream_error(e, RegistryError::blob_unknown(&self.digest)))?;
        let size = blob.size;
        let file = Arc::new(self.create_spool().await?);
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
                        ErrorCode::Unavailable,
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
        self.verify(received, written, size, hasher.finish())?;
        // Verified: release the last byte to readers, then make the spool
        // file the blob (readers keep their handle) and link it.
        self.flight.state.send_replace(FetchState::Done { size: Some(written) });
        self.commit(written).await;
        Ok(written)
    }

    async fn create_spool(&self) -> Result<std::fs::File> {
        let path = self.flight.spool.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)
        })
        .await
        .map_err(|e| RegistryError::internal(format!("spool task failed: {e}")))?
        .map_err(|e| RegistryError::internal(format!("cannot create spool file: {e}")))
    }

    /// Checks what arrived against what upstream announced and the digest.
    fn verify(&self, received: u64, written: u64, announced: Option<u64>, actual: Digest) -> Result<()> {
        if written != received {
            return Err(RegistryError::internal(format!("spool holds {written} of {received} bytes")));
        }
        if announced.is_some_and(|s| s != written) {
            return Err(upstream_invalid(&self.host, &format!("ended the body after {written} bytes")));
        }
        if actual != self.digest {
            return Err(upstream_invalid(
                &self.host,
                &format!("sent content with digest {actual} for {}", self.digest),
            ));
        }
        Ok(())
    }

    /// Imports the verified spool file as the blob and links it into every
    /// repository that asked; failures only cost a later refetch.
    async fn commit(&self, size: u64) {
        match self.storage.blob_import(&self.digest, &self.flight.spool, size).await {
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
    }
}

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
