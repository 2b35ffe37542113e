//! Cove as a pull-through cache in front of distribution (Cove's docker.io
//! upstream), each against the same pulls straight from distribution: one
//! blob's miss and hit, many clients pulling one uncached blob at once, and
//! the cold pull of a many-layer image the way containerd fetches it.
//!
//! Every workload starts a Cove of its own (empty cache, fresh counters)
//! and counts the blob GETs it made upstream in distribution's access log.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{Fetched, Registry};
use crate::data::{big_blob, Blob, Image};
use crate::plan::Plan;
use crate::report::{Run, WorkloadResult};
use crate::server::{Binaries, Kind, Meter, Server};
use crate::workloads::{self, Target};
use crate::{progress, BenchError, GIB, MIB};

/// Clients pulling the same uncached blob at once.
pub(crate) const CONCURRENT_CLIENTS: usize = 8;
/// The row of [`cache_concurrency`] comparing Cove's all-done time with
/// that of [`CONCURRENT_CLIENTS`] clients pulling straight from distribution.
pub(crate) const ALL_DONE_VS_DIRECT: &str = "all done ms vs 8 direct";
/// Layers of the cold-pull image, as per cent of its total size: one large
/// base layer, a few middle ones, small ones on top.
const COLD_LAYERS: [u64; 10] = [35, 20, 12, 9, 7, 6, 4, 3, 2, 2];
/// Layers a cold pull fetches at once (containerd's default).
const COLD_PARALLEL: usize = 3;

/// A Cove whose docker.io upstream is `dist`, in `run_dir/<name>`, and the
/// two targets: Cove (with the `docker.io/` prefix) and `dist` directly.
fn cache_pair(bins: &Binaries, run_dir: &Path, name: &str, dist: &Server) -> Result<(Server, [Target; 2]), BenchError> {
    let config = format!("[upstreams.\"docker.io\"]\nurl = \"{}\"\n", dist.base());
    let (cove, _) = Server::start(Kind::Cove, bins, &run_dir.join(name), &config)?;
    let targets = [
        Target { kind: Kind::Cove, pid: cove.pid, reg: Registry::new(cove.base(), "docker.io/") },
        Target { kind: Kind::Distribution, pid: dist.pid, reg: Registry::new(dist.base(), "") },
    ];
    Ok((cove, targets))
}

/// Pull-through: Cove with `dist` as its docker.io upstream, blob miss and
/// hit through Cove vs the same blob straight from `dist`.
pub(crate) async fn cache(
    bins: &Binaries,
    run_dir: &Path,
    dist: &Server,
    pool: &Bytes,
    plan: &Plan,
) -> Result<Vec<WorkloadResult>, BenchError> {
    let (_cove, targets) = cache_pair(bins, run_dir, "cove-cache", dist)?;
    let blobs: Vec<Blob> = (0..plan.cache_pairs).map(|i| big_blob(pool, 50_000 + i as u64, plan.cache_size)).collect();
    for b in &blobs {
        targets[1].reg.push_monolithic("library/cachebench", b).await?;
    }
    let mib = plan.cache_size / MIB;
    let miss_name = format!("pull-through cache miss, {mib} MiB blob: through Cove vs direct from distribution");
    let miss = interleave!(miss_name, targets, plan.cache_pairs, |t, i| {
        let want = (t.kind == Kind::Cove).then_some("miss");
        workloads::fetch_once(t, "library/cachebench", &blobs[i], want)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hit_name = format!("pull-through cache hit, {mib} MiB blob: Cove vs direct from distribution");
    let hit = interleave!(hit_name, targets, plan.cache_pairs, |t, i| {
        let want = (t.kind == Kind::Cove).then_some("hit");
        workloads::fetch_once(t, "library/cachebench", &blobs[i], want)
    });
    Ok(vec![miss, hit])
}

/// [`CONCURRENT_CLIENTS`] clients GET the same uncached blob through Cove at
/// once (released together), against one GET of another blob of the same
/// size straight from `dist`. `all done ms` is the time until the last
/// client has every byte; Cove must fetch the blob upstream exactly once.
/// CPU is per GiB delivered to the clients (8 × the blob through Cove).
///
/// The reference run also times [`CONCURRENT_CLIENTS`] clients pulling its
/// (stored) blob straight from `dist` at once, after the single pull:
/// [`ALL_DONE_VS_DIRECT`] is Cove's all-done time on the Cove side and
/// that on the reference side, so its ratio leaves out what the clients
/// themselves cost (8 clients receiving and comparing every byte with what
/// was pushed: 8 × the work of one pull, on the same cores as the servers).
pub(crate) async fn cache_concurrency(
    bins: &Binaries,
    run_dir: &Path,
    dist: &Server,
    pool: &Bytes,
    plan: &Plan,
) -> Result<WorkloadResult, BenchError> {
    let (_cove, targets) = cache_pair(bins, run_dir, "cove-cache-concurrency", dist)?;
    let repo = "library/concurrent";
    // Pair i: blob 2i through Cove, blob 2i+1 directly (so the access log
    // counts only Cove's GETs of blob 2i).
    let blobs: Vec<Blob> =
        (0..2 * plan.cache_pairs as u64).map(|k| big_blob(pool, 60_000 + k, plan.concurrent_size)).collect();
    for b in &blobs {
        targets[1].reg.push_monolithic(repo, b).await?;
    }
    let name = format!(
        "pull-through cache, {CONCURRENT_CLIENTS} clients pull one uncached {} MiB blob at once vs one direct pull",
        plan.concurrent_size / MIB
    );
    let log = dist.log.as_path();
    Ok(interleave!(name, targets, plan.cache_pairs, |t, i| {
        let (blobs, log) = (&blobs, log);
        async move {
            if t.kind == Kind::Cove {
                concurrent_pulls(t, repo, &blobs[2 * i], log).await
            } else {
                direct_pull(t, repo, &blobs[2 * i + 1]).await
            }
        }
    }))
}

/// The Cove side of [`cache_concurrency`].
async fn concurrent_pulls(t: &Target, repo: &str, blob: &Blob, dist_log: &Path) -> Run {
    let meter = Meter::start(t.pid);
    let (all_done, results) = pull_at_once(t, repo, blob).await;
    let usage = meter.finish();
    let mut run = Run::default();
    let mut delivered = 0u64;
    for r in results {
        match r {
            Ok(f) => {
                delivered += f.bytes;
                if !matches!(f.cache.as_deref(), Some("miss" | "hit")) {
                    run.fail(format!("X-Cove-Cache is {:?}, expected miss or hit", f.cache));
                }
            }
            Err(e) => run.fail(e),
        }
    }
    run.m("all done ms", all_done.as_secs_f64() * 1e3, false);
    run.m(ALL_DONE_VS_DIRECT, all_done.as_secs_f64() * 1e3, false);
    let path = format!("/v2/{repo}/blobs/{}", blob.digest);
    match upstream_gets(dist_log, &[path], 1).await {
        Ok(n) => {
            run.m("upstream blob GETs", n as f64, false);
            if n != 1 {
                run.fail(format!(
                    "Cove fetched the blob upstream {n} times for {CONCURRENT_CLIENTS} clients, expected 1"
                ));
            }
        }
        Err(e) => run.fail(e),
    }
    run.usage(&usage, "s/GiB", delivered as f64 / GIB, 1.0);
    run
}

/// [`CONCURRENT_CLIENTS`] clients GET `blob` at once (released together by
/// a barrier); returns the time until the last one has every byte, and
/// what each got.
async fn pull_at_once(t: &Target, repo: &str, blob: &Blob) -> (Duration, Vec<Result<Fetched, BenchError>>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(CONCURRENT_CLIENTS + 1));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT_CLIENTS {
        let (reg, blob, barrier, repo) = (t.reg.clone(), blob.clone(), barrier.clone(), repo.to_owned());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            reg.get_blob(&repo, &blob).await
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.map_err(|e| BenchError::Check(format!("client task: {e}"))).and_then(|r| r));
    }
    (start.elapsed(), results)
}

/// One GET straight from distribution, timed like [`concurrent_pulls`]
/// (its CPU is this pull's), then [`CONCURRENT_CLIENTS`] GETs of the same
/// blob at once ([`ALL_DONE_VS_DIRECT`]).
async fn direct_pull(t: &Target, repo: &str, blob: &Blob) -> Run {
    let meter = Meter::start(t.pid);
    let start = Instant::now();
    let res = t.reg.get_blob(repo, blob).await;
    let elapsed = start.elapsed();
    let usage = meter.finish();
    let mut run = Run::default();
    match res {
        Ok(f) => {
            run.m("all done ms", elapsed.as_secs_f64() * 1e3, false);
            run.usage(&usage, "s/GiB", f.bytes as f64 / GIB, 1.0);
        }
        Err(e) => run.fail(e),
    }
    let (all_done, results) = pull_at_once(t, repo, blob).await;
    let failed: Vec<BenchError> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        run.m(ALL_DONE_VS_DIRECT, all_done.as_secs_f64() * 1e3, false);
    }
    for e in failed {
        run.fail(e);
    }
    run
}

/// The cold pull of a 10-layer image ([`COLD_LAYERS`], `cache_size` bytes in
/// all) through Cove, against the same pull of another image with the same
/// layer sizes straight from `dist`: HEAD the manifest by tag, GET it by
/// digest, GET the config, then the layers [`COLD_PARALLEL`] at a time.
/// Through Cove, every blob must be fetched upstream exactly once.
pub(crate) async fn cold_pull(
    bins: &Binaries,
    run_dir: &Path,
    dist: &Server,
    pool: &Bytes,
    plan: &Plan,
) -> Result<WorkloadResult, BenchError> {
    let (_cove, targets) = cache_pair(bins, run_dir, "cove-cache-cold", dist)?;
    let repo = "library/coldpull";
    // Pair i: image 2i through Cove (tag c<i>), image 2i+1 directly (tag d<i>).
    let mut images = Vec::new();
    for k in 0..2 * plan.cache_pairs as u64 {
        let id = 70_000 + k * 100;
        let layers = COLD_LAYERS
            .iter()
            .enumerate()
            .map(|(l, pct)| big_blob(pool, id + l as u64, (plan.cache_size * pct / 100).max(1024)))
            .collect();
        let image = Image::new(id, layers);
        let tag = if k % 2 == 0 { format!("c{}", k / 2) } else { format!("d{}", k / 2) };
        targets[1].reg.push_image(repo, &tag, &image).await?;
        images.push((tag, image));
    }
    let name = format!(
        "pull-through cold pull, 10-layer image ({} MiB, {COLD_PARALLEL} layers at a time): through Cove vs direct",
        plan.cache_size / MIB
    );
    let log = dist.log.as_path();
    Ok(interleave!(name, targets, plan.cache_pairs, |t, i| {
        let (tag, image) = if t.kind == Kind::Cove { &images[2 * i] } else { &images[2 * i + 1] };
        let log = (t.kind == Kind::Cove).then_some(log);
        pull_image(t, repo, tag, image, log)
    }))
}

/// One pull of `image` by `tag`, every answer verified; with `dist_log`
/// (through the cache) the layers must be misses and every blob fetched
/// upstream once.
async fn pull_image(t: &Target, repo: &str, tag: &str, image: &Image, dist_log: Option<&Path>) -> Run {
    let meter = Meter::start(t.pid);
    let start = Instant::now();
    let res = fetch_image(t, repo, tag, image, dist_log.is_some()).await;
    let elapsed = start.elapsed();
    let usage = meter.finish();
    let mut run = Run::default();
    match res {
        Ok(bytes) => {
            run.m("total ms", elapsed.as_secs_f64() * 1e3, false);
            run.m("MB/s", bytes as f64 / elapsed.as_secs_f64() / 1e6, true);
            run.usage(&usage, "s/GiB", bytes as f64 / GIB, 1.0);
        }
        Err(e) => run.fail(e),
    }
    if let Some(log) = dist_log {
        let blobs: Vec<&Blob> = image.layers.iter().chain(std::iter::once(&image.config)).collect();
        let paths: Vec<String> = blobs.iter().map(|b| format!("/v2/{repo}/blobs/{}", b.digest)).collect();
        match upstream_gets(log, &paths, blobs.len() as u64).await {
            Ok(n) => {
                run.m("upstream blob GETs", n as f64, false);
                if n != blobs.len() as u64 {
                    run.fail(format!("Cove made {n} upstream blob GETs for {} distinct blobs", blobs.len()));
                }
            }
            Err(e) => run.fail(e),
        }
    }
    run
}

/// The requests of [`pull_image`]; returns the blob bytes received.
async fn fetch_image(t: &Target, repo: &str, tag: &str, image: &Image, cached: bool) -> Result<u64, BenchError> {
    let d = &image.manifest_digest;
    t.reg.head_manifest(repo, tag, d).await?;
    t.reg.get_manifest(repo, d, d).await?;
    let mut total = t.reg.get_blob(repo, &image.config).await?.bytes;
    let layers = Arc::new(image.layers.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..COLD_PARALLEL {
        let (reg, layers, next, repo) = (t.reg.clone(), layers.clone(), next.clone(), repo.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(layer) = layers.get(i) else { return Ok(bytes) };
                let f = reg.get_blob(&repo, layer).await?;
                if cached && f.cache.as_deref() != Some("miss") {
                    return Err(BenchError::Check(format!("layer {i}: X-Cove-Cache is {:?}, expected miss", f.cache)));
                }
                bytes += f.bytes;
            }
        }));
    }
    for task in tasks {
        total += task.await.map_err(|e| BenchError::Check(format!("layer task: {e}")))??;
    }
    Ok(total)
}

/// GETs of `paths` in distribution's access log (`"GET <path> HTTP/1.1"`),
/// waiting up to 3 s for at least `expect` (distribution writes a line once
/// its response is complete) and a further 200 ms for any extra.
async fn upstream_gets(log: &Path, paths: &[String], expect: u64) -> Result<u64, BenchError> {
    let count = || -> Result<u64, BenchError> {
        let text = std::fs::read_to_string(log)?;
        let needles: Vec<String> = paths.iter().map(|p| format!("\"GET {p} HTTP/")).collect();
        Ok(text.lines().filter(|l| needles.iter().any(|n| l.contains(n.as_str()))).count() as u64)
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while count()? < expect && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = count()?;
    if n == 0 {
        return Err(BenchError::Check(format!(
            "no GET of {} in distribution's access log {}",
            paths.join(", "),
            log.display()
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_gets_counts_only_gets_of_the_paths() {
        let dir = std::env::temp_dir().join(format!("cove-bench-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("server.log");
        let a = "/v2/library/x/blobs/sha256:aa";
        let b = "/v2/library/x/blobs/sha256:bb";
        let line = |m: &str, p: &str| {
            format!("127.0.0.1 - - [03/Dec/2026:10:02:37 +0000] \"{m} {p} HTTP/1.1\" 200 8 \"\" \"cove/0.1.0\"\n")
        };
        let text = [
            line("GET", a),
            line("HEAD", a),
            line("GET", b),
            line("GET", b),
            line("GET", "/v2/library/x/blobs/sha256:cc"),
        ];
        std::fs::write(&log, text.concat()).expect("write log");
        assert_eq!(upstream_gets(&log, &[a.to_owned()], 1).await.expect("count"), 1);
        assert_eq!(upstream_gets(&log, &[a.to_owned(), b.to_owned()], 2).await.expect("count"), 3);
        assert!(upstream_gets(&log, &["/v2/library/x/blobs/sha256:dd".to_owned()], 0).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
