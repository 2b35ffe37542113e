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
use crate::storage::{is_storage_full, Storage};
use crate::upstream::Upstream;

/// How many upstream chunks may wait for the spool writer.
const SPOOL_QUEUE: usize = 32;
/// How many relayed chunks may wait for one reader (see [`BlobFlight::register`]).
const RELAY_QUEUE: usize = 16;
/// How many received chunks are kept for readers that caught up with the
/// fetch (see [`BlobFlight::live`]). A reader further behind reads the spool.
const LIVE_QUEUE: usize = 8;

/// A chunk relayed to readers when the blob cannot be spooled: its offset
/// in the blob and its bytes.
pub(crate) type Relayed = (u64, Bytes);

/// The readers of a flight, for relaying when spooling becomes impossible.
#[derive(Default)]
struct Readers {
    /// Set once the flight relays: no reader can join it any more.
    closed: bool,
    senders: Vec<mpsc::Sender<Relayed>>,
}

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
    /// Set when the blob could not be spooled (no room): the spool holds
    /// the bytes before this offset, the rest is relayed from memory to
    /// the readers registered by then, and nothing is cached.
    pub(crate) relay_from: OnceLock<u64>,
    readers: Mutex<Readers>,
    /// Every chunk as it arrives from upstream (offset, bytes), before it is
    /// hashed or spooled: readers that caught up take their bytes from here
    /// instead of reading them back from the spool file. A reader that lags
    /// more than [`LIVE_QUEUE`] chunks behind reads the spool instead.
    pub(crate) live: tokio::sync::broadcast::Sender<Relayed>,
}

impl BlobFlight {
    pub(crate) fn new(spool: PathBuf, repos: Vec<RepoName>) -> BlobFlight {
        let (state, _) = watch::channel(FetchState::Starting);
        BlobFlight {
            spool,
            file: OnceLock::new(),
            state,
            repos: Mutex::new(repos),
            relay_from: OnceLock::new(),
            readers: Mutex::default(),
            live: tokio::sync::broadcast::Sender::new(LIVE_QUEUE),
        }
    }

    /// Registers a reader: the channel it gets relayed chunks on should the
    /// flight have to relay. `None` once the flight relays (a reader that
    /// missed the spooled part cannot join; it needs a fetch of its own).
    pub(crate) fn register(&self) -> Option<mpsc::Receiver<Relayed>> {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        readers.senders.push(tx);
        Some(rx)
    }

    /// Switches to relaying from offset `spooled`: closes registration and
    /// returns the registered readers' channels.
    fn start_relay(&self, spooled: u64, size: Option<u64>) -> Vec<mpsc::Sender<Relayed>> {
        let senders = {
            let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
            readers.closed = true;
            std::mem::take(&mut readers.senders)
        };
        let _ = self.relay_from.set(spooled);
        // Wakes readers waiting for spool progress: they now read up to
        // `spooled` from the spool, then from their channel.
        self.state.send_replace(FetchState::Running { written: spooled, size });
        senders
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
    /// Returns the flight and the caller's reader registration. A fetch that
    /// already relays (no room to spool) takes no readers: a new fetch
    /// replaces it for later readers.
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        at: CachedRepo<'_>,
        digest: &Digest,
        new_spool: impl FnOnce() -> PathBuf,
        counters: &Arc<UpstreamCounters>,
    ) -> (Arc<BlobFlight>, Option<mpsc::Receiver<Relayed>>) {
        let key = (at.route.host.clone(), digest.clone());
        let mut map = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = map.get(&key) {
            if let Some(reader) = f.register() {
                let mut repos = f.repos.lock().unwrap_or_else(|p| p.into_inner());
                if !repos.contains(at.repo) {
                    repos.push(at.repo.clone());
                }
                return (f.clone(), Some(reader));
            }
        }
        let flight = Arc::new(BlobFlight::new(new_spool(), vec![at.repo.clone()]));
        let reader = flight.register();
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
        let mine = flight.clone();
        tokio::spawn(async move {
            task.run().await;
            let mut map = flights.by_key.lock().unwrap_or_else(|p| p.into_inner());
            // A relaying flight may have been replaced meanwhile.
            if map.get(&key).is_some_and(|f| Arc::ptr_eq(f, &mine)) {
                map.remove(&key);
            }
        });
        (flight, reader)
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
            Ok(size) if self.flight.relay_from.get().is_some() => {
                tracing::info!(upstream = %self.host, digest = %self.digest, bytes = size,
                    ms = started.elapsed().as_millis() as u64, "blob fetched, verified and streamed; not cached (no room)");
            }
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
        // Readers may answer with the size now (time to first byte is
        // upstream's plus this hop); bytes follow once they arrive.
        self.flight.state.send_replace(FetchState::Running { written: 0, size });
        let mut hasher = DigestHasher::new(self.digest.algorithm());
        if let Some(why) = self.no_room_for(size).await {
            return self.relay(0, Vec::new(), blob.stream, hasher, size, &why).await;
        }
        let file = match self.create_spool().await {
            Ok(f) => Arc::new(f),
            Err(SpoolError::Full(why)) => return self.relay(0, Vec::new(), blob.stream, hasher, size, &why).await,
            Err(SpoolError::Other(e)) => return Err(e),
        };
        let _ = self.flight.file.set(file.clone());
        self.flight.state.send_replace(FetchState::Running { written: 0, size });

        // One blocking thread appends to the spool and publishes progress;
        // this task hashes meanwhile, so hashing and writing overlap.
        let (tx, rx) = mpsc::channel::<Bytes>(SPOOL_QUEUE);
        let flight = self.flight.clone();
        let writer = tokio::task::spawn_blocking(move || spool_writer(&file, rx, &flight.state, size));
        let mut received = 0u64;
        let mut stream = blob.stream;
        // A chunk the writer no longer took (it stopped on an error).
        let mut refused: Option<Bytes> = None;
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
            let offset = received;
            received += chunk.len() as u64;
            if size.is_some_and(|s| received > s) {
                failure = Some(upstream_invalid(&self.host, "sent more bytes than it announced"));
                break;
            }
            // Readers that caught up get the chunk now (their last byte
            // still waits for verification); no receivers is not an error.
            let _ = self.flight.live.send((offset, chunk.clone()));
            hasher.update(&chunk);
            if let Err(mpsc::error::SendError(chunk)) = tx.send(chunk).await {
                // The writer stopped: its result says why.
                refused = Some(chunk);
                break;
            }
        }
        drop(tx);
        let written = match writer.await {
            Ok(Ok(w)) => w,
            Ok(Err(SpoolFailure { written, error, mut unwritten })) if failure.is_none() && is_storage_full(&error) => {
                // No room to spool the rest: relay it from memory instead.
                unwritten.extend(refused);
                return self.relay_rest(written, unwritten, stream, hasher, received, size, &error.to_string()).await;
            }
            Ok(Err(SpoolFailure { error: e, .. })) => {
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

    async fn create_spool(&self) -> std::result::Result<std::fs::File, SpoolError> {
        let path = self.flight.spool.clone();
        let created = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)
        })
        .await
        .map_err(|e| SpoolError::Other(RegistryError::internal(format!("spool task failed: {e}"))))?;
        created.map_err(|e| {
            if is_storage_full(&e) {
                SpoolError::Full(e.to_string())
            } else {
                SpoolError::Other(RegistryError::internal(format!("cannot create spool file: {e}")))
            }
        })
    }

    /// Why a blob of `size` bytes cannot be spooled, if storage says it has
    /// no room for it above its `min_free` floor (unknown sizes are tried).
    async fn no_room_for(&self, size: Option<u64>) -> Option<String> {
        let size = size?;
        let space = self.storage.space().await.ok().flatten()?;
        let room = space.available.saturating_sub(space.floor);
        (size > room).then(|| {
            format!("{size} bytes do not fit: {} bytes free, storage.min_free {}", space.available, space.floor)
        })
    }

    /// Relays a blob that cannot be spooled from the start.
    async fn relay(
        &self,
        spooled: u64,
        backlog: Vec<Bytes>,
        stream: crate::storage::ByteStream,
        hasher: DigestHasher,
        size: Option<u64>,
        why: &str,
    ) -> Result<u64> {
        self.relay_rest(spooled, backlog, stream, hasher, 0, size, why).await
    }

    /// Streams the rest of the blob from offset `spooled` (the spool holds
    /// what came before) to the registered readers from memory: `backlog`
    /// first (received and hashed, not spooled), then the rest of
    /// `stream`. The slowest reader sets the pace; the last chunk is held
    /// back until the blob verified. Nothing is cached; counted as
    /// `uncached`.
    #[allow(clippy::too_many_arguments)]
    async fn relay_rest(
        &self,
        spooled: u64,
        backlog: Vec<Bytes>,
        mut stream: crate::storage::ByteStream,
        mut hasher: DigestHasher,
        mut received: u64,
        size: Option<u64>,
        why: &str,
    ) -> Result<u64> {
        tracing::warn!(upstream = %self.host, digest = %self.digest, spooled, size, reason = why,
            "no room to spool the blob: streaming it to its readers without caching it");
        self.counters.count(&self.host, |c| c.uncached += 1);
        let mut readers = self.flight.start_relay(spooled, size);
        let mut offset = spooled;
        let mut held: Option<Relayed> = None;
        for chunk in backlog {
            let len = chunk.len() as u64;
            if let Some(prev) = held.replace((offset, chunk)) {
                send_all(&mut readers, prev).await;
            }
            offset += len;
        }
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::new(ErrorCode::Unavailable, format!("upstream body failed after {received} bytes: {e}"))
            })?;
            received += chunk.len() as u64;
            if size.is_some_and(|s| received > s) {
                return Err(upstream_invalid(&self.host, "sent more bytes than it announced"));
            }
            hasher.update(&chunk);
            let len = chunk.len() as u64;
            if let Some(prev) = held.replace((offset, chunk)) {
                send_all(&mut readers, prev).await;
                if readers.is_empty() {
                    return Err(RegistryError::internal("every reader of the relayed blob hung up"));
                }
            }
            offset += len;
        }
        self.verify(received, received, size, hasher.finish())?;
        if let Some(last) = held {
            send_all(&mut readers, last).await;
        }
        self.flight.state.send_replace(FetchState::Done { size: Some(received) });
        Ok(received)
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

/// Sends `item` to every reader, dropping those that hung up.
async fn send_all(readers: &mut Vec<mpsc::Sender<Relayed>>, item: Relayed) {
    let mut i = 0;
    while i < readers.len() {
        if readers[i].send(item.clone()).await.is_err() {
            readers.swap_remove(i);
        } else {
            i += 1;
        }
    }
}

/// Why a spool file could not be created.
enum SpoolError {
    /// No room (disk full or quota).
    Full(String),
    Other(RegistryError),
}

/// A spool write that failed: the bytes in the spool, the error, and the
/// chunks taken from the queue but not written (the failed one first).
struct SpoolFailure {
    written: u64,
    error: std::io::Error,
    unwritten: Vec<Bytes>,
}

/// Appends every chunk from `rx` to the spool `file` (on a blocking thread),
/// publishing how many bytes are readable after each batch. Returns the
/// bytes written once `rx` closes. On a write error it stops taking chunks
/// and hands back those it took but did not write.
fn spool_writer(
    file: &std::fs::File,
    mut rx: mpsc::Receiver<Bytes>,
    state: &watch::Sender<FetchState>,
    size: Option<u64>,
) -> std::result::Result<u64, SpoolFailure> {
    let mut written = 0u64;
    let fail = |written: u64, error: std::io::Error, chunk: Bytes, rx: &mut mpsc::Receiver<Bytes>| {
        rx.close();
        let mut unwritten = vec![chunk];
        while let Some(c) = rx.blocking_recv() {
            unwritten.push(c);
        }
        SpoolFailure { written, error, unwritten }
    };
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = write_all_at(file, &chunk, written) {
            return Err(fail(written, e, chunk, &mut rx));
        }
        written += chunk.len() as u64;
        // Whatever else already waits goes out before the next progress note.
        while let Ok(chunk) = rx.try_recv() {
            if let Err(e) = write_all_at(file, &chunk, written) {
                return Err(fail(written, e, chunk, &mut rx));
            }
            written += chunk.len() as u64;
        }
        state.send_replace(FetchState::Running { written, size });
    }
    Ok(written)
}
