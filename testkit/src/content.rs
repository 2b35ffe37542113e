//! Large content that is never held whole ([`Pattern`], [`generated`]),
//! fast SHA-256 over it ([`FastSha256`]), and process memory probes
//! ([`memory_of`], [`peak_rss`], [`RssWatch`]).

use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use cove_core::{Algorithm, ByteStream, Digest, DigestHasher};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

use crate::util::{random_bytes, run, seed, seeded_bytes};

/// Memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Peak resident set size (VmHWM).
    pub peak_kib: u64,
    /// Current resident set size (VmRSS).
    pub rss_kib: u64,
}

/// Reads VmHWM and VmRSS from `/proc/<pid>/status` (Linux), or asks `ps` for
/// the current RSS elsewhere (then peak = current).
pub fn memory_of(pid: u32) -> Memory {
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
        };
        return Memory { peak_kib: field("VmHWM:"), rss_kib: field("VmRSS:") };
    }
    let out = run(Command::new("ps").args(["-o", "rss=", "-p", &pid.to_string()]));
    let rss = out.trim().parse().expect("ps rss");
    Memory { peak_kib: rss, rss_kib: rss }
}

/// A deterministic, incompressible byte source of any size that never holds
/// more than one chunk: chunk `i` is a fixed random block with `i` and the
/// seed stamped at its start.
#[derive(Clone)]
pub struct Pattern {
    block: Bytes,
    seed: u64,
    pub total: u64,
}

impl Pattern {
    pub const CHUNK: usize = 1 << 20;

    pub fn new(total: u64) -> Pattern {
        let seed = seed();
        Pattern { block: Bytes::from(random_bytes(Self::CHUNK)), seed, total }
    }

    /// The bytes of chunk `i` (the last one may be short).
    pub fn chunk(&self, i: u64) -> Bytes {
        let start = i * Self::CHUNK as u64;
        let len = (self.total - start).min(Self::CHUNK as u64) as usize;
        let mut v = self.block[..len].to_vec();
        let stamp = [i.to_le_bytes(), self.seed.to_le_bytes()].concat();
        let n = stamp.len().min(len);
        v[..n].copy_from_slice(&stamp[..n]);
        Bytes::from(v)
    }

    pub fn chunks(&self) -> u64 {
        self.total.div_ceil(Self::CHUNK as u64)
    }

    /// The bytes in `[start, end)` as a stream of chunks.
    pub fn stream_range(
        &self,
        start: u64,
        end: u64,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        let me = self.clone();
        let c = Self::CHUNK as u64;
        let first = start / c;
        let last = if end == 0 { 0 } else { end.div_ceil(c) };
        futures::stream::iter(first..last).map(move |i| {
            let chunk = me.chunk(i);
            let cs = i * c;
            let a = start.saturating_sub(cs) as usize;
            let b = ((end - cs) as usize).min(chunk.len());
            Ok(chunk.slice(a..b))
        })
    }

    /// Reads `body` and checks it equals `self[start..]` chunk by chunk,
    /// without holding it; returns the number of bytes read. Panics naming
    /// the first differing range, or when the body is longer.
    pub async fn verify<E: std::fmt::Debug>(
        &self,
        body: impl futures::Stream<Item = Result<Bytes, E>>,
        start: u64,
    ) -> u64 {
        let mut body = std::pin::pin!(body);
        let c = Self::CHUNK as u64;
        let mut pos = start;
        let mut cur: Option<(u64, Bytes)> = None;
        while let Some(piece) = body.next().await {
            let piece = piece.expect("body chunk");
            let mut off = 0usize;
            while off < piece.len() {
                let idx = pos / c;
                if cur.as_ref().is_none_or(|(i, _)| *i != idx) {
                    assert!(idx < self.chunks(), "body longer than expected");
                    cur = Some((idx, self.chunk(idx)));
                }
                let (_, expected) = cur.as_ref().expect("chunk");
                let in_chunk = (pos - idx * c) as usize;
                let n = (expected.len() - in_chunk).min(piece.len() - off);
                assert!(
                    piece[off..off + n] == expected[in_chunk..in_chunk + n],
                    "content differs in bytes {pos}..{}",
                    pos + n as u64
                );
                off += n;
                pos += n as u64;
            }
        }
        pos - start
    }

    /// The sha256 digest of the whole content.
    pub fn digest(&self) -> String {
        let mut h = FastSha256::new();
        for i in 0..self.chunks() {
            h.update(&self.chunk(i));
        }
        h.finish()
    }
}

/// SHA-256 over large content. Test binaries are built without
/// optimisation, where the sha2 crate manages only ~10 MiB/s; `openssl dgst`
/// (SHA-NI) is ~100× faster, so it is used when present, else sha2.
pub struct FastSha256 {
    child: Option<(Child, std::process::ChildStdin)>,
    fallback: Sha256,
}

impl FastSha256 {
    pub fn new() -> FastSha256 {
        let child = Command::new("openssl")
            .args(["dgst", "-sha256", "-r"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut c| c.stdin.take().map(|i| (c, i)));
        FastSha256 { child, fallback: Sha256::new() }
    }

    pub fn update(&mut self, data: &[u8]) {
        use std::io::Write as _;
        match &mut self.child {
            Some((_, stdin)) => stdin.write_all(data).expect("write to openssl"),
            None => self.fallback.update(data),
        }
    }

    /// `sha256:<hex>`.
    pub fn finish(self) -> String {
        match self.child {
            Some((child, stdin)) => {
                drop(stdin);
                let out = child.wait_with_output().expect("openssl output");
                assert!(out.status.success(), "openssl dgst failed");
                let text = String::from_utf8_lossy(&out.stdout);
                let hex = text
                    .split(|c: char| !c.is_ascii_hexdigit())
                    .find(|t| t.len() == 64)
                    .unwrap_or_else(|| panic!("no digest in openssl output {text:?}"));
                format!("sha256:{}", hex.to_ascii_lowercase())
            }
            None => format!("sha256:{}", hex::encode(self.fallback.finalize())),
        }
    }
}

impl Default for FastSha256 {
    fn default() -> Self {
        Self::new()
    }
}

/// A stream of `total` generated bytes in `chunk_len` chunks, starting at
/// chunk number `first_chunk`; each chunk is made on demand and dropped once
/// consumed, so appending `generated(n, c, k)` pieces in order makes the same
/// bytes as one `generated(total, c, 0)`.
pub fn generated(total: u64, chunk_len: usize, first_chunk: u64) -> ByteStream {
    let n = total.div_ceil(chunk_len as u64);
    Box::pin(futures::stream::iter((0..n).map(move |i| {
        let len = (total - i * chunk_len as u64).min(chunk_len as u64) as usize;
        Ok(seeded_bytes(len, first_chunk + i))
    })))
}

/// The digest of [`generated`]`(total, chunk_len, 0)` without holding it.
pub fn generated_digest(total: u64, chunk_len: usize) -> Digest {
    let mut h = DigestHasher::new(Algorithm::Sha256);
    let n = total.div_ceil(chunk_len as u64);
    for i in 0..n {
        let len = (total - i * chunk_len as u64).min(chunk_len as u64) as usize;
        h.update(&seeded_bytes(len, i));
    }
    h.finish()
}

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`;
/// elsewhere the current RSS from `ps`, to be sampled by [`RssWatch`]).
pub fn peak_rss() -> u64 {
    memory_of(std::process::id()).peak_kib * 1024
}

/// Samples this process's RSS every 20 ms on a thread (for systems without
/// `VmHWM`) and returns the peak seen between `start` and `stop`.
pub struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl RssWatch {
    /// Starts sampling.
    pub fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(peak_rss());
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak.max(peak_rss())
        });
        RssWatch { stop, handle: Some(handle) }
    }

    /// Stops sampling; the peak in bytes.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}
