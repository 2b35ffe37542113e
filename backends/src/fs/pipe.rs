//! Streaming plumbing: incoming bodies are batched into ~1 MiB writes and
//! hashed and written concurrently on two blocking threads; blobs are read
//! back with large positional reads, one read ahead.

use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cove_core::storage::BlobReader;
use cove_core::{ByteRange, ByteStream, DigestHasher, StorageError};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Size of the writes handed to the blocking threads.
pub(crate) const BATCH: usize = 1024 * 1024;
/// Batches queued per worker: bounds memory to a few batches per write.
const QUEUE: usize = 2;
/// Size of each read of a blob.
pub(crate) const READ_CHUNK: u64 = 256 * 1024;
/// Reads in flight per blob stream (read-ahead).
const READ_AHEAD: usize = 2;

/// What [`pump`] did. The writer and the token always come back (unless a
/// worker panicked) so the caller can finish or roll back under its lock.
pub(crate) struct Pumped<W, T> {
    /// Bytes taken from the body (including any that failed to be written).
    pub size: u64,
    pub hasher: Option<DigestHasher>,
    /// The writer, if it was opened.
    pub writer: Option<W>,
    pub token: Option<T>,
    pub result: Result<(), StorageError>,
}

/// Streams `body` into the writer made by `open` (if any) while feeding
/// `hasher` (if any). The writer is opened lazily on a blocking thread;
/// `token` travels with it so that, if this future is dropped mid-way, it
/// is released only after the last queued write finished.
///
/// Fails with `BodyError` when the body fails, `SizeMismatch` as soon as the
/// body exceeds `limit`, and `Io` when writing fails.
pub(crate) async fn pump<W, T, F>(
    mut body: ByteStream,
    hasher: Option<DigestHasher>,
    open: Option<F>,
    token: T,
    limit: Option<u64>,
) -> Pumped<W, T>
where
    W: FileSink,
    T: HasFlusher,
    F: FnOnce() -> io::Result<W> + Send + 'static,
{
    let mut size = 0u64;
    let mut buf = BytesMut::new();
    let mut pending = Some((hasher, open, token));
    let mut workers: Option<Workers<W, T>> = None;

    let mut failure = loop {
        let chunk = match body.next().await {
            None => break None,
            Some(Err(e)) => break Some(StorageError::BodyError(e.to_string())),
            Some(Ok(c)) => c,
        };
        size += chunk.len() as u64;
        if let Some(l) = limit.filter(|l| size > *l) {
            break Some(StorageError::SizeMismatch { expected: l, actual: size });
        }
        let batch = if buf.is_empty() && chunk.len() >= BATCH {
            chunk
        } else {
            if buf.capacity() == 0 {
                buf.reserve(BATCH);
            }
            buf.extend_from_slice(&chunk);
            if buf.len() < BATCH {
                continue;
            }
            std::mem::take(&mut buf).freeze()
        };
        if workers.is_none() {
            if let Some((h, o, t)) = pending.take() {
                workers = Some(Workers::start(h, o, t));
            }
        }
        if let Some(w) = workers.as_mut() {
            if !w.send(batch).await {
                // A worker stopped (write error): its error comes from join.
                break None;
            }
        }
    };

    let rest = buf.freeze();
    let mut out = match (workers, pending) {
        (Some(mut w), _) => {
            if failure.is_none() && !rest.is_empty() {
                w.send(rest).await;
            }
            w.join().await
        }
        (None, Some((hasher, open, token))) if failure.is_none() => {
            // Everything fit in one batch: one blocking call does it all.
            let job = tokio::task::spawn_blocking(move || {
                let mut hasher = hasher;
                if let Some(h) = hasher.as_mut() {
                    h.update(&rest);
                }
                let (writer, result) = match open.map(|o| o()) {
                    None => (None, Ok(())),
                    Some(Err(e)) => (None, Err(StorageError::from(e))),
                    Some(Ok(mut w)) => {
                        let r = w.write_all(&rest).map_err(StorageError::from);
                        (Some(w), r)
                    }
                };
                Pumped { size: 0, hasher, writer, token: Some(token), result }
            });
            match job.await {
                Ok(p) => p,
                Err(e) => Pumped { size: 0, hasher: None, writer: None, token: None, result: Err(join_error(e)) },
            }
        }
        (None, pending) => Pumped {
            size: 0,
            hasher: pending.as_ref().and_then(|p| p.0.clone()),
            writer: None,
            token: pending.map(|p| p.2),
            result: Ok(()),
        },
    };
    out.size = size;
    if let Some(f) = failure.take() {
        out.result = Err(f);
    }
    out
}

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Backend(format!("blocking task failed: {e}"))
}

/// Something the pipeline writes to; `as_file` exposes the file (if any)
/// for background flushing.
pub(crate) trait FileSink: Write + Send + 'static {
    fn as_file(&self) -> Option<&File>;
}

impl FileSink for File {
    fn as_file(&self) -> Option<&File> {
        Some(self)
    }
}

impl FileSink for io::Sink {
    fn as_file(&self) -> Option<&File> {
        None
    }
}

/// The token of a [`pump`]: carries the [`Flusher`] of the file written,
/// which may outlive one pump (an upload session's appends share one).
pub(crate) trait HasFlusher: Send + 'static {
    fn flusher(&mut self) -> &mut Flusher;
}

impl HasFlusher for Flusher {
    fn flusher(&mut self) -> &mut Flusher {
        self
    }
}

/// Start a background flush after this many bytes were written since the
/// last one started.
const FLUSH_EVERY: usize = 32 * 1024 * 1024;

/// Flushes written data to disk on a helper thread while writing goes on,
/// so the final fsync of a large blob only waits for the tail rather than
/// the whole file. Portable: a plain `sync_data` on a duplicated handle.
#[derive(Default)]
pub(crate) struct Flusher {
    since: usize,
    running: Option<std::thread::JoinHandle<io::Result<()>>>,
    failed: Option<io::Error>,
}

impl Flusher {
    fn wrote(&mut self, file: Option<&File>, n: usize) {
        self.since += n;
        if self.since < FLUSH_EVERY {
            return;
        }
        let Some(file) = file else { return };
        if let Some(h) = self.running.take_if(|h| h.is_finished()) {
            self.collect(h);
        }
        if self.running.is_some() {
            return;
        }
        let Ok(dup) = file.try_clone() else { return };
        self.since = 0;
        let spawned = std::thread::Builder::new().name("cove-fs-flush".into()).spawn(move || dup.sync_data());
        if let Ok(h) = spawned {
            self.running = Some(h);
        }
    }

    fn collect(&mut self, h: std::thread::JoinHandle<io::Result<()>>) {
        let r = h.join().unwrap_or_else(|_| Err(io::Error::other("flush thread panicked")));
        if let Err(e) = r {
            // Kept: the error may not be reported again to a later fsync
            // on the same open file.
            self.failed.get_or_insert(e);
        }
    }

    /// Waits for the running flush; fails if any background flush failed.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if let Some(h) = self.running.take() {
            self.collect(h);
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

type WriterResult<W, T> = (Option<W>, T, io::Result<()>);

/// The hashing and writing threads of one [`pump`].
struct Workers<W, T> {
    hash_tx: Option<mpsc::Sender<Bytes>>,
    hash_job: Option<JoinHandle<DigestHasher>>,
    write_tx: Option<mpsc::Sender<Bytes>>,
    write_job: Option<JoinHandle<WriterResult<W, T>>>,
    /// The token when there is no writer thread to carry it.
    token: Option<T>,
}

impl<W, T> Workers<W, T>
where
    W: FileSink,
    T: HasFlusher,
{
    fn start<F>(hasher: Option<DigestHasher>, open: Option<F>, token: T) -> Self
    where
        F: FnOnce() -> io::Result<W> + Send + 'static,
    {
        let (hash_tx, hash_job) = match hasher {
            Some(mut h) => {
                let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
                let job = tokio::task::spawn_blocking(move || {
                    while let Some(b) = rx.blocking_recv() {
                        h.update(&b);
                    }
                    h
                });
                (Some(tx), Some(job))
            }
            None => (None, None),
        };
        let (write_tx, write_job, token) = match open {
            Some(open) => {
                let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
                let job = tokio::task::spawn_blocking(move || {
                    let mut w = match open() {
                        Ok(w) => w,
                        Err(e) => return (None, token, Err(e)),
                    };
                    let mut token = token;
                    while let Some(b) = rx.blocking_recv() {
                        if let Err(e) = w.write_all(&b) {
                            return (Some(w), token, Err(e));
                        }
                        token.flusher().wrote(w.as_file(), b.len());
                    }
                    (Some(w), token, Ok(()))
                });
                (Some(tx), Some(job), None)
            }
            None => (None, None, Some(token)),
        };
        Workers { hash_tx, hash_job, write_tx, write_job, token }
    }

    /// Hands a batch to both threads; false if one of them has stopped.
    async fn send(&mut self, batch: Bytes) -> bool {
        if let Some(tx) = &self.write_tx {
            if tx.send(batch.clone()).await.is_err() {
                return false;
            }
        }
        if let Some(tx) = &self.hash_tx {
            if tx.send(batch).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn join(mut self) -> Pumped<W, T> {
        self.hash_tx = None;
        self.write_tx = None;
        let mut result = Ok(());
        let mut writer = None;
        let mut token = self.token.take();
        if let Some(job) = self.write_job.take() {
            match job.await {
                Ok((w, t, r)) => {
                    writer = w;
                    token = Some(t);
                    result = r.map_err(StorageError::from);
                }
                Err(e) => result = Err(join_error(e)),
            }
        }
        let mut hasher = None;
        if let Some(job) = self.hash_job.take() {
            match job.await {
                Ok(h) => hasher = Some(h),
                Err(e) => result = result.and(Err(join_error(e))),
            }
        }
        Pumped { size: 0, hasher, writer, token, result }
    }
}

/// Streams `len` bytes of `file` from `start`, in [`READ_CHUNK`] positional
/// reads with [`READ_AHEAD`] reads in flight. A chunk the page cache holds
/// is read right here ([`read_cached_at`]); one it does not, on a blocking
/// thread. The hand-off to a blocking thread and back per chunk (two
/// wake-ups and context switches) was about 15 % of the CPU of a large
/// cached GET (issue 12).
pub(crate) fn read_stream(file: File, start: u64, len: u64) -> ByteStream {
    let file = Arc::new(file);
    let end = start + len;
    let offsets = (0..len.div_ceil(READ_CHUNK)).map(move |i| {
        let off = start + i * READ_CHUNK;
        (off, READ_CHUNK.min(end - off))
    });
    let s = futures::stream::iter(offsets)
        .map(move |(off, n)| {
            let file = Arc::clone(&file);
            async move {
                if let Some(bytes) = read_cached_at(&file, off, n)? {
                    return Ok(bytes);
                }
                match tokio::task::spawn_blocking(move || read_exact_at(&file, off, n)).await {
                    Ok(r) => r,
                    Err(e) => Err(io::Error::other(e)),
                }
            }
        })
        .buffered(READ_AHEAD);
    Box::pin(s)
}

/// `range` of a file of `size` bytes as (start, length); the whole file
/// for `None`.
pub(crate) fn range_in(range: Option<ByteRange>, size: u64) -> Result<(u64, u64), StorageError> {
    match range {
        None => Ok((0, size)),
        Some(r) if r.end < size && r.start <= r.end => Ok((r.start, r.len())),
        Some(r) => Err(StorageError::Backend(format!("range {}-{} outside blob of {size} bytes", r.start, r.end))),
    }
}

/// The reader of an open blob file of `size` bytes: from `whole` (all its
/// bytes, already read) when given, else with [`read_stream`].
pub(crate) fn file_reader(file: File, size: u64, whole: Option<Bytes>) -> BlobReader {
    Box::new(move |range| {
        let (start, len) = match range_in(range, size) {
            Ok(r) => r,
            Err(e) => return Box::pin(futures::stream::once(async move { Err(io::Error::other(e.to_string())) })),
        };
        match whole {
            // Within `size`, which is the length of `whole`.
            Some(bytes) => {
                let part = bytes.slice(start as usize..(start + len) as usize);
                Box::pin(futures::stream::iter((!part.is_empty()).then_some(Ok(part))))
            }
            None => read_stream(file, start, len),
        }
    })
}

/// All `size` bytes of a file just opened (its offset at 0), read into
/// memory that is not zeroed first; a file shorter than `size` fails.
pub(crate) fn read_whole(file: &File, size: u64) -> io::Result<Bytes> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(usize::try_from(size).map_err(io::Error::other)?);
    file.take(size).read_to_end(&mut buf)?;
    if buf.len() as u64 != size {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its size"));
    }
    Ok(Bytes::from(buf))
}

/// The `n` bytes of `file` at `off` if the page cache holds every one of
/// them (`preadv2` with `RWF_NOWAIT`: nothing waits for the disk), else
/// `None` (also where the kernel or the filesystem does not support the
/// flag).
#[cfg(target_os = "linux")]
pub(crate) fn read_cached_at(file: &File, off: u64, n: u64) -> io::Result<Option<Bytes>> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut buf = vec![0u8; usize::try_from(n).map_err(io::Error::other)?];
    match preadv2(file, &mut [io::IoSliceMut::new(&mut buf)], off, ReadWriteFlags::NOWAIT) {
        Ok(n) if n == buf.len() => Ok(Some(Bytes::from(buf))),
        // Partly cached: the blocking read takes all of it.
        Ok(_) => Ok(None),
        Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Elsewhere nothing tells whether a read would wait: blobs are read on a
/// blocking thread.
#[cfg(not(target_os = "linux"))]
pub(crate) fn read_cached_at(_file: &File, _off: u64, _n: u64) -> io::Result<Option<Bytes>> {
    Ok(None)
}

/// `n` bytes of `file` at `off`, read into memory that is not zeroed first
/// (zeroing each 256 KiB chunk was 6–7 % of a large GET's CPU); a file that
/// ends before fails with `UnexpectedEof`.
fn read_exact_at(file: &File, off: u64, n: u64) -> io::Result<Bytes> {
    let n = usize::try_from(n).map_err(io::Error::other)?;
    #[cfg(unix)]
    let buf = {
        use rustix::buffer::spare_capacity;
        let mut buf: Vec<u8> = Vec::with_capacity(n);
        while buf.len() < n {
            // Appends what it read to `buf` (up to its capacity: any byte
            // past `n` is cut below).
            let at = off + buf.len() as u64;
            match rustix::io::pread(file, spare_capacity(&mut buf), at) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(n);
        buf
    };
    #[cfg(windows)]
    let mut buf = vec![0u8; n];
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < n {
            let got = file.seek_read(&mut buf[done..], off + done as u64)?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += got;
        }
    }
    Ok(Bytes::from(buf))
}

/// Hashes the first `len` bytes of `file` (the re-hash path of an upload
/// whose running hasher was lost in a restart).
pub(crate) fn hash_file(file: &File, len: u64, mut hasher: DigestHasher) -> io::Result<DigestHasher> {
    let mut off = 0u64;
    while off < len {
        let n = (BATCH as u64).min(len - off);
        let chunk = read_exact_at(file, off, n)?;
        hasher.update(&chunk);
        off += n;
    }
    Ok(hasher)
}
