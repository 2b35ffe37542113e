//! Reading a blob while its fetch still writes it: readers follow the spool
//! file through the fetch's open handle, waiting for bytes as they arrive.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, watch};

use super::fetch::{BlobFlight, FetchState, Relayed};
use crate::storage::ByteStream;

/// Bytes read from the spool per follower read.
const FOLLOW_CHUNK: u64 = 256 * 1024;
/// Spool reads one follower keeps in flight (as for stored blobs): each is
/// a round trip to a blocking thread, so a follower that reads them one at
/// a time waits for every one of them between its socket writes.
const FOLLOW_AHEAD: usize = 2;

/// Read buffers one follower keeps for reuse: one per read in flight and
/// two for chunks the connection still sends.
const FOLLOW_BUFFERS: usize = FOLLOW_AHEAD + 2;

/// A spool read in flight: its offset, length and the blocking task.
type Ahead = (u64, u64, tokio::task::JoinHandle<std::io::Result<BytesMut>>);

/// Where one reader of a spool file is.
struct SpoolReader {
    flight: Arc<BlobFlight>,
    rx: watch::Receiver<FetchState>,
    pos: u64,
    end: Option<u64>,
    failed: bool,
    /// Where relayed chunks arrive if the flight has to relay.
    relay: Option<tokio::sync::mpsc::Receiver<Relayed>>,
    /// Chunks as they arrive from upstream (`None` once the fetch is gone).
    live: Option<broadcast::Receiver<Relayed>>,
    /// A live chunk not (fully) served yet: ahead of `pos` (the spool has to
    /// catch up first) or cut at the held-back last byte.
    pending: Option<Relayed>,
    /// Spool reads in flight, contiguous from `pos`, each below the limit
    /// readable when it was issued (at most [`FOLLOW_AHEAD`]).
    ahead: std::collections::VecDeque<Ahead>,
    /// Buffers of earlier spool reads (up to [`FOLLOW_BUFFERS`]), reused once
    /// the connection has sent and dropped what was read into them: a
    /// fresh buffer per read costs page faults and zeroing of new memory.
    buffers: Vec<BytesMut>,
}

impl SpoolReader {
    fn new(
        flight: Arc<BlobFlight>,
        pos: u64,
        end: Option<u64>,
        relay: Option<tokio::sync::mpsc::Receiver<Relayed>>,
    ) -> SpoolReader {
        // Subscribed before the state is read: no chunk falls between the two.
        let live = Some(flight.live.subscribe());
        let rx = flight.state.subscribe();
        let (ahead, buffers) = (std::collections::VecDeque::new(), Vec::new());
        SpoolReader { flight, rx, pos, end, failed: false, relay, live, pending: None, ahead, buffers }
    }

    /// A zeroed buffer of `len` (at most [`FOLLOW_CHUNK`]) bytes to read the
    /// spool into: from a kept buffer whose earlier bytes are all dropped,
    /// else newly allocated (and kept, while fewer than [`FOLLOW_BUFFERS`]).
    fn buffer(&mut self, len: usize) -> BytesMut {
        for b in &mut self.buffers {
            if b.try_reclaim(len) {
                b.resize(len, 0);
                return b.split_to(len);
            }
        }
        let mut b = BytesMut::with_capacity(FOLLOW_CHUNK as usize);
        b.resize(len, 0);
        let piece = b.split_to(len);
        if self.buffers.len() < FOLLOW_BUFFERS {
            self.buffers.push(b);
        }
        piece
    }

    fn fail(mut self, e: std::io::Error) -> Option<(std::io::Result<Bytes>, SpoolReader)> {
        self.failed = true;
        Some((Err(e), self))
    }

    /// The next bytes at `pos` from the live chunks, up to `limit`
    /// (exclusive), without waiting: `None` when no received chunk covers
    /// `pos` yet.
    fn take_live(&mut self, limit: u64) -> Option<Bytes> {
        loop {
            if self.pending.is_none() {
                match self.live.as_mut()?.try_recv() {
                    Ok(chunk) => self.pending = Some(chunk),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                    Err(broadcast::error::TryRecvError::Empty) => return None,
                    Err(broadcast::error::TryRecvError::Closed) => {
                        self.live = None;
                        return None;
                    }
                }
            }
            let (off, bytes) = self.pending.as_ref()?;
            let (off, chunk_end) = (*off, *off + bytes.len() as u64);
            if chunk_end <= self.pos {
                self.pending = None;
                continue;
            }
            if off > self.pos {
                // Received before this reader subscribed: the spool has it.
                return None;
            }
            let to = chunk_end.min(limit);
            if to <= self.pos {
                return None;
            }
            let slice = bytes.slice((self.pos - off) as usize..(to - off) as usize);
            if to == chunk_end {
                self.pending = None;
            }
            self.pos = to;
            return Some(slice);
        }
    }
}

/// Reads an in-flight blob from its spool file from `start` up to `end`
/// (exclusive; `None` = until the fetch ends), waiting for bytes as they
/// arrive. The last byte is held back until the blob verified. Reads go
/// through the fetch's open file handle (positional reads on a blocking
/// thread), so they go on after the file was moved into storage.
///
/// A reader within [`super::fetch`]'s `LIVE_QUEUE` chunks of the fetch
/// takes the chunks as they arrive ([`BlobFlight::live`]) instead of
/// reading them back from the spool: no read, no copy, no wait for the
/// spool writer. It reads the spool when it falls further behind.
///
/// When the flight relays (no room to spool), the reader reads the spool
/// up to where spooling stopped and the rest from `relay`, the channel it
/// registered with [`BlobFlight::register`].
pub(crate) fn follow(
    flight: Arc<BlobFlight>,
    start: u64,
    end: Option<u64>,
    relay: Option<tokio::sync::mpsc::Receiver<Relayed>>,
) -> ByteStream {
    let reader = SpoolReader::new(flight, start, end, relay);
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        loop {
            if r.failed || r.end.is_some_and(|e| r.pos >= e) {
                return None;
            }
            let state = r.rx.borrow_and_update().clone();
            if let Some(&spooled) = r.flight.relay_from.get() {
                if r.pos >= spooled {
                    return relayed(r).await;
                }
            }
            let limit = match state {
                _ if r.flight.relay_from.get().is_some() => r.flight.relay_from.get().copied().unwrap_or(0),
                FetchState::Starting => 0,
                // The last byte waits for verification: when the size is
                // known that is only the blob's last byte, else the last
                // one written.
                FetchState::Running { written, size: Some(size) } => written.min(size.saturating_sub(1)),
                FetchState::Running { written, size: None } => written.saturating_sub(1),
                FetchState::Done { size } => size.unwrap_or(0),
                FetchState::Failed(e) => return r.fail(std::io::Error::other(e.message)),
            };
            let limit = r.end.map_or(limit, |e| limit.min(e));
            // The received chunks first, whenever one covers `pos` (no spool
            // read in flight, so none comes before it): no read back, no
            // copy, no round trip to a blocking thread. Up to the announced
            // size less the held-back last byte.
            if let (FetchState::Running { size: Some(size), .. }, None, true) =
                (&state, r.flight.relay_from.get(), r.ahead.is_empty())
            {
                let live_limit = r.end.map_or(size - 1, |e| e.min(size - 1));
                if let Some(bytes) = r.take_live(live_limit) {
                    return Some((Ok(bytes), r));
                }
            }
            // Behind the received chunks: the spool has the bytes.
            if r.pos < limit {
                return read_spool(r, limit).await;
            }
            if matches!(state, FetchState::Done { .. }) && r.pos >= limit {
                return None;
            }
            let waiting_live = r.pending.is_none() && r.live.is_some();
            tokio::select! {
                changed = r.rx.changed() => {
                    if changed.is_err() {
                        // The fetch task is gone without a final state.
                        let done = matches!(*r.rx.borrow(), FetchState::Done { .. });
                        if !done {
                            return r.fail(std::io::Error::other("blob fetch aborted"));
                        }
                    }
                }
                chunk = async { r.live.as_mut()?.recv().await.ok() }, if waiting_live => {
                    match chunk {
                        Some(c) => r.pending = Some(c),
                        // Lagged (the spool has those bytes) or closed.
                        None => if r.live.as_ref().is_some_and(|l| l.is_closed()) { r.live = None },
                    }
                }
            }
        }
    }))
}

/// Reads the next spooled bytes of `r`, below `limit`, keeping up to
/// [`FOLLOW_AHEAD`] reads of the bytes after them in flight. Every read
/// covers bytes already readable (below `limit`, which only grows), so
/// nothing is read ahead of the spool writer or past the held-back byte.
async fn read_spool(mut r: SpoolReader, limit: u64) -> Option<(std::io::Result<Bytes>, SpoolReader)> {
    let Some(file) = r.flight.file.get().cloned() else {
        return r.fail(std::io::Error::other("spool file missing"));
    };
    let mut next = r.ahead.back().map_or(r.pos, |(off, len, _)| off + len);
    while r.ahead.len() < FOLLOW_AHEAD && next < limit {
        let want = (limit - next).min(FOLLOW_CHUNK);
        // At most FOLLOW_CHUNK: fits in usize.
        let mut buf = r.buffer(want as usize);
        let file = file.clone();
        let task = tokio::task::spawn_blocking(move || read_exact_at(&file, &mut buf, next).map(|()| buf));
        r.ahead.push_back((next, want, task));
        next += want;
    }
    let Some((off, _, task)) = r.ahead.pop_front() else {
        return r.fail(std::io::Error::other("no spooled bytes to read"));
    };
    if off != r.pos {
        let msg = format!("spool read at {off}, reader at {}", r.pos);
        return r.fail(std::io::Error::other(msg));
    }
    let read = task.await.unwrap_or_else(|e| Err(std::io::Error::other(format!("spool read task failed: {e}"))));
    match read {
        Ok(buf) => {
            r.pos += buf.len() as u64;
            Some((Ok(buf.freeze()), r))
        }
        Err(e) => r.fail(e),
    }
}

/// Fills `buf` with the spool's bytes at `pos`; a spool shorter than that
/// fails.
fn read_exact_at(file: &std::fs::File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match read_at(file, &mut buf[done..], pos + done as u64)? {
            0 => return Err(std::io::Error::other("spool file shorter than announced")),
            n => done += n,
        }
    }
    Ok(())
}

/// The next bytes of a relaying flight for reader `r` (at or past the
/// spooled part): from its channel, cut to its range. The channel ends
/// after the last (verified) chunk, or early when the fetch failed.
async fn relayed(mut r: SpoolReader) -> Option<(std::io::Result<Bytes>, SpoolReader)> {
    let Some(rx) = r.relay.as_mut() else {
        return r.fail(std::io::Error::other("blob fetch is relayed and this reader joined too late"));
    };
    loop {
        match rx.recv().await {
            Some((off, bytes)) => {
                let len = bytes.len() as u64;
                if off + len <= r.pos {
                    continue;
                }
                let from = r.pos.saturating_sub(off) as usize;
                let to = match r.end {
                    Some(e) if e < off + len => (e.saturating_sub(off)) as usize,
                    _ => bytes.len(),
                };
                if from >= to {
                    return None;
                }
                r.pos = off + to as u64;
                return Some((Ok(bytes.slice(from..to)), r));
            }
            None => {
                let state = r.rx.borrow().clone();
                return match state {
                    FetchState::Done { size } if r.end.or(size).is_none_or(|e| r.pos >= e) => None,
                    FetchState::Failed(e) => r.fail(std::io::Error::other(e.message)),
                    _ => r.fail(std::io::Error::other("blob fetch aborted")),
                };
            }
        }
    }
}

#[cfg(unix)]
pub(crate) fn write_all_at(file: &std::fs::File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
pub(crate) fn write_all_at(file: &std::fs::File, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::error::RegistryError;

    fn flight(spool: PathBuf) -> (Arc<BlobFlight>, Arc<std::fs::File>) {
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&spool).expect("spool");
        let file = Arc::new(file);
        let flight = Arc::new(BlobFlight::new(spool, Vec::new()));
        assert!(flight.file.set(file.clone()).is_ok());
        (flight, file)
    }

    async fn read_to(stream: &mut ByteStream, got: &mut Vec<u8>, len: usize) {
        while got.len() < len {
            let chunk = stream.next().await.expect("more bytes").expect("no error");
            got.extend_from_slice(&chunk);
        }
    }

    /// Spool reads reuse a follower's buffers once the bytes read into them
    /// are dropped, never while they are held: a follower that keeps every
    /// chunk and one that drops each at once both get every byte.
    #[tokio::test]
    async fn spool_read_buffers_are_reused_only_once_dropped() {
        let dir = std::env::temp_dir().join(format!("cove-follow-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let len = 3 * FOLLOW_CHUNK as usize + 12_345;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let (flight, file) = flight(dir.join("spool"));
        write_all_at(&file, &data, 0).expect("write");
        flight.state.send_replace(FetchState::Done { size: Some(len as u64) });

        let mut kept = Vec::new();
        let mut s = follow(flight.clone(), 0, None, None);
        while let Some(chunk) = s.next().await {
            kept.push(chunk.expect("no error"));
        }
        assert_eq!(kept.concat(), data, "chunks held by the reader are never overwritten");
        let mut dropped = Vec::new();
        let mut s = follow(flight.clone(), 0, None, None);
        while let Some(chunk) = s.next().await {
            dropped.extend_from_slice(&chunk.expect("no error"));
        }
        assert_eq!(dropped, data);

        let mut reader = SpoolReader::new(flight.clone(), 0, None, None);
        let full = FOLLOW_CHUNK as usize;
        let mut a = reader.buffer(full);
        a[0] = 9;
        let (a_ptr, a) = (a.as_ptr(), a.freeze());
        let b = reader.buffer(full);
        assert_ne!(b.as_ptr(), a_ptr, "a buffer still held is not reused");
        drop((a, b));
        let c = reader.buffer(full);
        assert_eq!(c.as_ptr(), a_ptr, "a buffer whose bytes were dropped is reused");
        assert!(c.iter().all(|&x| x == 0), "a reused buffer is zeroed");
        assert!(reader.buffers.len() <= FOLLOW_BUFFERS);
        drop((s, c, reader, flight, file));
        std::fs::remove_dir_all(&dir).expect("cleanup");
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
        let (flight, file) = flight(spool.clone());
        write_all_at(&file, &data[..600_000], 0).expect("write");
        flight.state.send_replace(FetchState::Running { written: 600_000, size: Some(1_000_000) });

        let mut early = follow(flight.clone(), 0, None, None);
        let mut got = Vec::new();
        read_to(&mut early, &mut got, 600_000).await;
        assert_eq!(got.len(), 600_000, "every written byte (the size is known: only the blob's last byte waits)");
        let waited = tokio::time::timeout(Duration::from_millis(100), early.next()).await;
        assert!(waited.is_err(), "nothing more until more bytes arrive");

        write_all_at(&file, &data[600_000..], 600_000).expect("write");
        flight.state.send_replace(FetchState::Done { size: Some(1_000_000) });
        let moved = dir.join("moved");
        std::fs::rename(&spool, &moved).expect("move the spool away like blob_import");
        assert!(!spool.exists());

        let mut late = follow(flight.clone(), 500_000, Some(900_000), None);
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

    /// A reader that caught up takes received chunks straight from the
    /// fetch, before the spool has them, except the last byte, which waits
    /// for verification and then comes from the spool. A reader that joins
    /// later reads what it missed from the spool, then live chunks.
    #[tokio::test]
    async fn caught_up_readers_take_chunks_before_they_are_spooled() {
        let dir = std::env::temp_dir().join(format!("cove-follow-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let (flight, file) = flight(dir.join("spool"));
        flight.state.send_replace(FetchState::Running { written: 0, size: Some(300_000) });

        let mut early = follow(flight.clone(), 0, None, None);
        assert!(flight.live.send((0, Bytes::copy_from_slice(&data[..100_000]))).is_ok());
        let mut got = Vec::new();
        read_to(&mut early, &mut got, 100_000).await;
        assert_eq!(got, data[..100_000].to_vec(), "served from the live chunk; the spool is still empty");

        // The spool catches up with the first chunk; a late reader reads it
        // from there and the next chunk live, like the early one.
        write_all_at(&file, &data[..100_000], 0).expect("write");
        flight.state.send_replace(FetchState::Running { written: 100_000, size: Some(300_000) });
        let mut late = follow(flight.clone(), 50_000, None, None);
        let mut late_got = Vec::new();
        read_to(&mut late, &mut late_got, 49_999).await;
        assert!(flight.live.send((100_000, Bytes::copy_from_slice(&data[100_000..]))).is_ok());
        read_to(&mut late, &mut late_got, 249_999).await;
        read_to(&mut early, &mut got, 299_999).await;
        assert_eq!(got.len(), 299_999, "the last byte is held back until verified");
        let waited = tokio::time::timeout(Duration::from_millis(100), early.next()).await;
        assert!(waited.is_err(), "nothing more before verification");

        write_all_at(&file, &data[100_000..], 100_000).expect("write");
        flight.state.send_replace(FetchState::Done { size: Some(300_000) });
        read_to(&mut early, &mut got, 300_000).await;
        read_to(&mut late, &mut late_got, 250_000).await;
        assert!(early.next().await.is_none());
        assert!(late.next().await.is_none());
        assert_eq!(got, data);
        assert_eq!(late_got, data[50_000..].to_vec());
        drop((early, late, flight, file));
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
        let (flight, file) = flight(spool.clone());
        write_all_at(&file, &[7u8; 1000], 0).expect("write");
        flight.state.send_replace(FetchState::Running { written: 1000, size: Some(5000) });
        let mut s = follow(flight.clone(), 0, None, None);
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
