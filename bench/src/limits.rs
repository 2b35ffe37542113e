//! The machine's physical limits, measured at the start of a run: one
//! core's SHA-256 speed and the disk's sequential write+fsync speed (a push
//! can go no faster than the slower of the two).

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
        for i in 0..2 {
            let path = dir.join(format!("disk-test-{i}"));
            let t = Instant::now();
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
            drop(f);
            std::fs::remove_file(&path)?;
        }
        let best = |v: Vec<f64>| summary(v).map(|s| s.0).unwrap_or(f64::NAN);
        Ok(Limits { sha_mbs: best(sha), disk_mbs: best(disk) })
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))?
}
