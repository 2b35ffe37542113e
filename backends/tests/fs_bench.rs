//! A quick throughput and memory check of FsStorage with a 1 GiB blob (not
//! a timed test; run by hand in release mode):
//!
//! ```text
//! COVE_BENCH_DIR=/path/on/data/disk cargo test --release -p cove-backends \
//!     --test fs_bench -- --ignored --nocapture
//! ```
//!
//! It prints the physical limits (single-core SHA-256, write+fsync of the
//! disk), then monolithic push, chunked push (16 MiB PATCHes) and full read,
//! with MB/s and the peak RSS growth of each phase (Linux only for RSS).

use std::io::Write;
use std::time::Instant;

use bytes::Bytes;
use cove_backends::FsStorage;
use cove_core::digest::Algorithm;
use cove_core::{ByteStream, DigestHasher, Storage};
use futures::StreamExt;

const TOTAL: usize = 1 << 30;
const POOL: usize = 4 << 20;

fn pool() -> Bytes {
    cove_testkit::util::seeded_bytes(POOL, 0x2545_F491_4F6C_DD1D)
}

/// `len` bytes cycling through `pool`, in `chunk`-sized pieces (no copies).
fn body(pool: &Bytes, len: usize, chunk: usize) -> ByteStream {
    let pool = pool.clone();
    let pieces = (0..len.div_ceil(chunk)).map(move |i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        let off = start % POOL;
        debug_assert!(off + n <= POOL);
        Ok(pool.slice(off..off + n))
    });
    Box::pin(futures::stream::iter(pieces))
}

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak RSS (Linux) and returns the current RSS in KiB.
fn reset_peak() -> Option<u64> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

fn report(what: &str, bytes: usize, secs: f64, rss_before: Option<u64>) {
    let peak = status_kib("VmHWM:");
    let growth = match (rss_before, peak) {
        (Some(b), Some(p)) => format!("{:.1} MiB", p.saturating_sub(b) as f64 / 1024.0),
        _ => "n/a".into(),
    };
    println!("{what:<34} {:>8.0} MB/s  ({secs:.2} s)  peak RSS growth {growth}", bytes as f64 / secs / 1e6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_one_gib() {
    let base = std::env::var_os("COVE_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let pool = pool();
    let chunk = 64 * 1024;

    // Physical limits: SHA-256 on one core, and write+fsync of the disk.
    let rss = reset_peak();
    let t = Instant::now();
    let mut h = DigestHasher::new(Algorithm::Sha256);
    for i in 0..TOTAL / POOL {
        let _ = i;
        h.update(&pool);
    }
    let digest = h.finish();
    let sha_secs = t.elapsed().as_secs_f64();
    report("sha256 (one core)", TOTAL, sha_secs, rss);

    // The disk with the same policy as FsStorage: write 1 MiB at a time,
    // start a background fsync whenever the previous one finished and 32 MiB
    // more were written, fsync once more at the end. (Writing everything and
    // fsyncing once would leave the disk idle while the page cache fills.)
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(dir.path().join("raw")).expect("raw");
        let mut since = 0usize;
        let mut running: Option<std::thread::JoinHandle<std::io::Result<()>>> = None;
        for _ in 0..TOTAL / POOL {
            for piece in pool.chunks(1 << 20) {
                f.write_all(piece).expect("write");
                since += piece.len();
                if since >= 32 << 20 && running.as_ref().is_none_or(|h| h.is_finished()) {
                    if let Some(h) = running.take() {
                        h.join().expect("join").expect("flush");
                    }
                    let dup = f.try_clone().expect("dup");
                    running = Some(std::thread::spawn(move || dup.sync_data()));
                    since = 0;
                }
            }
        }
        if let Some(h) = running.take() {
            h.join().expect("join").expect("flush");
        }
        f.sync_all().expect("fsync");
    }
    let disk_secs = t.elapsed().as_secs_f64();
    report("disk write + fsync", TOTAL, disk_secs, None);
    std::fs::remove_file(dir.path().join("raw")).expect("rm");
    let limit = TOTAL as f64 / sha_secs.max(disk_secs) / 1e6;

    let store = FsStorage::open(dir.path().join("store")).expect("open");

    let rss = reset_peak();
    let t = Instant::now();
    let n = store.blob_write(&digest, body(&pool, TOTAL, chunk), Some(TOTAL as u64)).await.expect("push");
    assert_eq!(n, TOTAL as u64);
    let secs = t.elapsed().as_secs_f64();
    report("push monolithic (64 KiB chunks)", TOTAL, secs, rss);
    println!("  = {:.2} x min(sha256, disk) = {limit:.0} MB/s", TOTAL as f64 / secs / 1e6 / limit);

    let rss = reset_peak();
    let t = Instant::now();
    let mut s = store.blob_read(&digest, None).await.expect("read");
    let mut got = 0usize;
    while let Some(c) = s.next().await {
        got += c.expect("chunk").len();
    }
    assert_eq!(got, TOTAL);
    report("read (page cache)", TOTAL, t.elapsed().as_secs_f64(), rss);

    assert!(store.blob_delete(&digest).await.expect("delete"));
    let rss = reset_peak();
    let t = Instant::now();
    let repo = "bench/chunked".parse().expect("repo");
    let info = store.upload_start(&repo).await.expect("start");
    let patch = 16 << 20;
    let mut off = 0usize;
    while off < TOTAL {
        let n = patch.min(TOTAL - off);
        // Each PATCH body starts at `off` in the cycling pool.
        let pool2 = pool.clone();
        let pieces = (0..n.div_ceil(chunk)).map(move |i| {
            let start = off + i * chunk;
            let len = chunk.min(off + n - start);
            let o = start % POOL;
            Ok(pool2.slice(o..o + len))
        });
        let b: ByteStream = Box::pin(futures::stream::iter(pieces));
        off = store.upload_append(&info.id, off as u64, b).await.expect("append") as usize;
    }
    assert_eq!(store.upload_commit(&info.id, &digest).await.expect("commit"), TOTAL as u64);
    let secs = t.elapsed().as_secs_f64();
    report("push chunked (16 MiB PATCHes)", TOTAL, secs, rss);
    println!("  = {:.2} x min(sha256, disk) = {limit:.0} MB/s", TOTAL as f64 / secs / 1e6 / limit);
}
