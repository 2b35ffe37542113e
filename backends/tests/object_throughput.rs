//! Throughput and peak RSS of a 1 GiB blob through the object backend
//! (in-memory store, s3s-fs, Garage). Measurements, not checks of speed:
//! ignored by default; run one backend per process so peak RSS is its own:
//!
//! ```text
//! cargo test -p cove-backends --release --test object_throughput -- --ignored --nocapture memory
//! cargo test -p cove-backends --release --test object_throughput -- --ignored --nocapture s3s
//! cargo test -p cove-backends --release --test object_throughput -- --ignored --nocapture garage
//! ```
//! Each run still asserts that the bytes read back are complete and exact.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cove_backends::object::ObjectStorage;
use cove_core::{Algorithm, ByteStream, Digest, DigestHasher, Storage};
use cove_testkit::content::peak_rss;
use cove_testkit::peers::s3::S3Peer;
use futures::StreamExt;

const MIB: u64 = 1024 * 1024;
const TOTAL: u64 = 1024 * MIB;
const CHUNK: usize = (MIB as usize) + 17;

fn pool() -> Vec<Bytes> {
    (0..16u64).map(|i| cove_testkit::util::seeded_bytes(CHUNK, i + 100)).collect()
}

fn body(pool: &[Bytes], total: u64) -> ByteStream {
    let pool = pool.to_vec();
    let n = total.div_ceil(CHUNK as u64);
    Box::pin(futures::stream::iter((0..n).map(move |i| {
        let c = &pool[(i as usize) % pool.len()];
        let len = (total - i * CHUNK as u64).min(CHUNK as u64) as usize;
        Ok(c.slice(..len))
    })))
}

fn digest_of(pool: &[Bytes], total: u64) -> Digest {
    let mut h = DigestHasher::new(Algorithm::Sha256);
    let n = total.div_ceil(CHUNK as u64);
    for i in 0..n {
        let len = (total - i * CHUNK as u64).min(CHUNK as u64) as usize;
        h.update(&pool[(i as usize) % pool.len()][..len]);
    }
    h.finish()
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

async fn measure(name: &str, s: &ObjectStorage) {
    let pool = pool();
    let d = digest_of(&pool, TOTAL);
    let base = peak_rss();

    let t = Instant::now();
    s.blob_write(&d, body(&pool, TOTAL), Some(TOTAL)).await.expect("push");
    let push = t.elapsed().as_secs_f64();
    let rss_push = peak_rss();

    let t = Instant::now();
    let mut st = s.blob_read(&d, None).await.expect("read");
    let mut h = DigestHasher::new(Algorithm::Sha256);
    let mut n = 0u64;
    while let Some(c) = st.next().await {
        let c = c.expect("chunk");
        n += c.len() as u64;
        h.update(&c);
    }
    let read = t.elapsed().as_secs_f64();
    assert_eq!((n, h.finish()), (TOTAL, d.clone()), "read back exactly");
    let rss_read = peak_rss();
    assert!(s.blob_delete(&d).await.expect("delete"));

    // Chunked: 16 PATCHes of 64 MiB, then commit (complete + server copy).
    let r = "bench/chunked".parse().expect("repo");
    let t = Instant::now();
    let info = s.upload_start(&r).await.expect("start");
    let mut off = 0;
    for _ in 0..16 {
        off = s.upload_append(&info.id, off, body_at(&pool, off, TOTAL / 16)).await.expect("append");
    }
    s.upload_commit(&info.id, &d).await.expect("commit");
    let chunked = t.elapsed().as_secs_f64();
    let rss_all = peak_rss();
    eprintln!(
        "[{name}] 1 GiB: push {:.0} MiB/s ({push:.1} s), read {:.0} MiB/s ({read:.1} s), \
         chunked push+commit {:.0} MiB/s ({chunked:.1} s); peak RSS base {} MiB, \
         after push {} MiB, after read {} MiB, after chunked {} MiB",
        mbps(TOTAL, push),
        mbps(TOTAL, read),
        mbps(TOTAL, chunked),
        base / MIB,
        rss_push / MIB,
        rss_read / MIB,
        rss_all / MIB
    );
}

/// The continuation of `body` from byte `off` (chunk-aligned in this test).
fn body_at(pool: &[Bytes], off: u64, len: u64) -> ByteStream {
    // 64 MiB pieces are not chunk aligned: rebuild the exact byte window.
    let pool = pool.to_vec();
    let chunk = CHUNK as u64;
    let mut pos = off;
    let end = off + len;
    let mut out = Vec::new();
    while pos < end {
        let i = pos / chunk;
        let within = (pos % chunk) as usize;
        let take = ((chunk - within as u64).min(end - pos)) as usize;
        out.push((i, within, take));
        pos += take as u64;
    }
    Box::pin(futures::stream::iter(
        out.into_iter().map(move |(i, w, t)| Ok(pool[(i as usize) % pool.len()].slice(w..w + t))),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn throughput_memory() {
    let mem = Arc::new(object_store::memory::InMemory::new());
    let s = ObjectStorage::new(mem.clone(), Some(mem), "");
    measure("memory", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn throughput_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    let s = peer.storage("").with_part_size(8 * MIB);
    measure("s3s-fs", &s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored --nocapture"]
async fn throughput_garage() {
    let peer = S3Peer::garage();
    let s = peer.storage("").with_part_size(8 * MIB);
    measure("garage", &s).await;
}
