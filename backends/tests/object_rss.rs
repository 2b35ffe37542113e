//! Memory stays flat while a large blob streams through the object backend
//! to a real S3 server (s3s-fs): the process's peak RSS grows by far less
//! than the blob. Alone in its own test binary so nothing else allocates.

use cove_core::{ByteStream, Storage};
use cove_testkit::content::{generated, generated_digest, peak_rss, RssWatch};
use cove_testkit::peers::s3::S3Peer;
use futures::StreamExt;

const MIB: u64 = 1024 * 1024;
const BLOB: u64 = 256 * MIB;
const CHUNK: usize = 256 * 1024;
/// Allowed growth: a part being filled + two in flight + client buffers.
const BUDGET: u64 = 96 * MIB;

async fn drain_hash(mut s: ByteStream) -> (u64, cove_core::Digest) {
    let mut h = cove_core::DigestHasher::new(cove_core::Algorithm::Sha256);
    let mut n = 0u64;
    while let Some(c) = s.next().await {
        let c = c.expect("read chunk");
        n += c.len() as u64;
        h.update(&c);
    }
    (n, h.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_256_mib_keeps_rss_flat() {
    let peer = S3Peer::s3s_fs();
    let s = peer.storage("rss");
    let digest = generated_digest(BLOB, CHUNK);
    // Warm up the client (TLS-free, but connection pools, allocator arenas).
    s.check().await.expect("check");
    let watch = RssWatch::start();
    let base = peak_rss();

    // Whole-blob write.
    let n = s.blob_write(&digest, generated(BLOB, CHUNK, 0), Some(BLOB)).await.expect("blob write");
    assert_eq!(n, BLOB);
    let after_write = peak_rss();

    // Streaming read, hashed on the fly.
    let (len, got) = drain_hash(s.blob_read(&digest, None).await.expect("read")).await;
    assert_eq!((len, &got), (BLOB, &digest), "read back exactly");
    assert!(s.blob_delete(&digest).await.expect("delete"));

    // Chunked upload in four PATCH-sized pieces, committed.
    let r = "rss/chunked".parse().expect("repo");
    let info = s.upload_start(&r).await.expect("start");
    let quarter = BLOB / 4;
    let mut off = 0;
    for q in 0..4u64 {
        let first = q * quarter / CHUNK as u64;
        off = s.upload_append(&info.id, off, generated(quarter, CHUNK, first)).await.expect("append");
    }
    assert_eq!(off, BLOB);
    assert_eq!(s.upload_commit(&info.id, &digest).await.expect("commit"), BLOB);
    let peak = watch.stop().max(peak_rss());
    let growth = peak.saturating_sub(base);
    eprintln!(
        "rss base {} MiB, after write {} MiB, peak {} MiB, growth {} MiB for a {} MiB blob",
        base / MIB,
        after_write / MIB,
        peak / MIB,
        growth / MIB,
        BLOB / MIB
    );
    assert!(
        growth < BUDGET,
        "peak RSS grew by {} MiB streaming {} MiB (budget {} MiB)",
        growth / MIB,
        BLOB / MIB,
        BUDGET / MIB
    );
}
