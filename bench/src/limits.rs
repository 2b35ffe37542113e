//! The machine's physical limits, measured at the start of a run: one
//! core's SHA-256 speed and the disk's sequential write+fsync speed (a push
//! can go no faster than the slower of the two), and the CPU the kernel
//! spends writing a new file through the page cache (a push's floor beside
//! hashing: on this project's VM it varies tenfold between hours, since a
//! page the guest has not touched lately costs a fault in the host).

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use sha2::Digest as _;

use crate::report::summary;
use crate::{BenchError, MIB};

/// Physical limits measured in this run.
pub(crate) struct Limits {
    pub(crate) sha_mbs: f64,
    pub(crate) disk_mbs: f64,
    /// CPU seconds per GiB of writing (and fsyncing) a new file, by this
    /// thread (NaN where it cannot be read).
    pub(crate) write_cpu_s_per_gib: f64,
}

/// Single-core SHA-256 and sequential write+fsync throughput of `dir`'s disk.
pub(crate) async fn measure_limits(pool: &Bytes, dir: &Path, disk_bytes: u64) -> Result<Limits, BenchError> {
    let pool = pool.clone();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut sha = Vec::new();
        for _ in 0..3 {
            let data = &pool[..pool.len().min(256 << 20)];
            let t = Instant::now();
            let d = sha2::Sha256::digest(data);
            std::hint::black_box(d);
            sha.push(data.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        let mut disk = Vec::new();
        let mut write_cpu = Vec::new();
        let mut paths = Vec::new();
        for i in 0..2 {
            let path = dir.join(format!("disk-test-{i}"));
            let t = Instant::now();
            let cpu0 = crate::server::thread_cpu_seconds();
            let mut f = std::fs::File::create(&path)?;
            let mut written = 0u64;
            while written < disk_bytes {
                let n = (disk_bytes - written).min(MIB) as usize;
                let off = (written as usize) % (pool.len() - n);
                f.write_all(&pool[off..off + n])?;
                written += n as u64;
            }
            f.sync_all()?;
            disk.push(disk_bytes as f64 / t.elapsed().as_secs_f64() / 1e6);
            if let (Some(a), Some(b)) = (cpu0, crate::server::thread_cpu_seconds()) {
                write_cpu.push((b - a) * (1u64 << 30) as f64 / disk_bytes as f64);
            }
            drop(f);
            // Kept until both are written: the second file gets new pages,
            // as a push does (pages just freed would be cheaper).
            paths.push(path);
        }
        for path in paths {
            std::fs::remove_file(&path)?;
        }
        let best = |v: Vec<f64>| summary(v).map(|s| s.0).unwrap_or(f64::NAN);
        Ok(Limits { sha_mbs: best(sha), disk_mbs: best(disk), write_cpu_s_per_gib: best(write_cpu) })
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?
}
