//! The workloads. Each takes one target and returns one [`Run`]; the caller
//! interleaves them in pairs.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::Registry;
use crate::data::{Blob, Image, Rng};
use crate::report::{quantile_ms, Run};
use crate::server::{Kind, Meter, Usage};
use crate::BenchError;

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// A server under test, as the workloads see it.
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub pid: u32,
    pub reg: Registry,
}

/// What a closed or open loop of operations saw.
#[derive(Default)]
pub struct LoopResult {
    pub ops: u64,
    pub requests: u64,
    pub latencies: Vec<Duration>,
    pub failures: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl LoopResult {
    fn merge(&mut self, other: LoopResult) {
        self.ops += other.ops;
        self.requests += other.requests;
        self.latencies.extend(other.latencies);
        self.failures += other.failures;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, started: Instant, r: Result<u64, BenchError>) {
        self.record_latency(started.elapsed(), r)
    }

    fn record_latency(&mut self, latency: Duration, r: Result<u64, BenchError>) {
        match r {
            Ok(n) => {
                self.ops += 1;
                self.requests += n;
                self.latencies.push(latency);
            }
            Err(e) => {
                self.failures += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }
}

/// Runs `op` in `workers` keep-alive workers for `dur`. `op` returns how
/// many requests one operation made.
pub async fn closed_loop<F, Fut>(workers: usize, dur: Duration, op: F) -> LoopResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, BenchError>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoopResult::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let res = op(w, i).await;
                let failed = res.is_err();
                r.record(t, res);
                if failed {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                i += 1;
            }
            r
        }));
    }
    let mut total = LoopResult::default();
    for t in tasks {
        match t.await {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.failures += 1;
                total.first_error.get_or_insert_with(|| format!("worker panicked: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total.latencies.sort();
    total
}

fn loop_run(r: &LoopResult, meter: &Meter, unit: &str) -> Run {
    let mut run = Run::default();
    let secs = r.elapsed.as_secs_f64();
    run.m("req/s", r.requests as f64 / secs, true);
    if unit != "req" {
        run.m(&format!("{unit}/s"), r.ops as f64 / secs, true);
    }
    run.m(&format!("{unit} p50 ms"), quantile_ms(&r.latencies, 0.5), false);
    run.m(&format!("{unit} p99 ms"), quantile_ms(&r.latencies, 0.99), false);
    run.usage(&meter.finish(), "µs/req", r.requests as f64, 1e6);
    run.add_failures(r.failures, r.first_error.clone());
    run
}

/// The figures of a loop counted per operation over `elapsed` seconds:
/// operations per second (named `rate`), `<unit> p50 ms` and `<unit> p99 ms`
/// latency, CPU in `ms/<unit>`, and the failures.
fn per_op_run(mut r: LoopResult, elapsed: f64, usage: &Usage, rate: &str, unit: &str) -> Run {
    r.latencies.sort();
    let mut run = Run::default();
    run.m(rate, r.ops as f64 / elapsed, true);
    run.m(&format!("{unit} p50 ms"), quantile_ms(&r.latencies, 0.5), false);
    run.m(&format!("{unit} p99 ms"), quantile_ms(&r.latencies, 0.99), false);
    run.usage(usage, &format!("ms/{unit}"), r.ops as f64, 1e3);
    run.add_failures(r.failures, r.first_error);
    run
}

/// `GET /v2/` from `workers` connections.
pub async fn v2(t: &Target, workers: usize, dur: Duration) -> Run {
    let reg = t.reg.clone();
    let meter = Meter::start(t.pid);
    let r = closed_loop(workers, dur, move |_, _| {
        let reg = reg.clone();
        async move { reg.v2().await.map(|_| 1) }
    })
    .await;
    loop_run(&r, &meter, "req")
}

/// The image the manifest and pull-check workloads read.
pub fn pull_check_image(pool: &Bytes) -> Image {
    let layers = (0..4).map(|i| Blob::unique(pool, 1000 + i, (i as usize) * 1_000_003, 64 * 1024)).collect();
    Image::new(1, layers)
}

/// Manifest HEAD by tag and GET by digest, alternating.
pub async fn manifest(t: &Target, image: &Image, workers: usize, dur: Duration) -> Run {
    let reg = t.reg.clone();
    let digest: Arc<str> = image.manifest_digest.as_str().into();
    let meter = Meter::start(t.pid);
    let r = closed_loop(workers, dur, move |_, i| {
        let (reg, digest) = (reg.clone(), digest.clone());
        async move {
            if i % 2 == 0 {
                reg.head_manifest("bench/pull", "v1", &digest).await?;
            } else {
                reg.get_manifest("bench/pull", &digest, &digest).await?;
            }
            Ok(1)
        }
    })
    .await;
    loop_run(&r, &meter, "req")
}

/// What a client does before pulling: HEAD manifest by tag, GET it by
/// digest, GET the config, HEAD every layer.
pub async fn pull_check(t: &Target, image: &Image, workers: usize, dur: Duration) -> Run {
    let reg = t.reg.clone();
    let image = Arc::new(image.clone());
    let meter = Meter::start(t.pid);
    let r = closed_loop(workers, dur, move |_, _| {
        let (reg, image) = (reg.clone(), image.clone());
        async move {
            let d = &image.manifest_digest;
            reg.head_manifest("bench/pull", "v1", d).await?;
            reg.get_manifest("bench/pull", d, d).await?;
            reg.get_blob("bench/pull", &image.config).await?;
            for l in &image.layers {
                if !reg.head_blob("bench/pull", l).await? {
                    return Err(BenchError::Check("HEAD layer: 404 for a pushed layer".into()));
                }
            }
            Ok(3 + image.layers.len() as u64)
        }
    })
    .await;
    loop_run(&r, &meter, "check")
}

/// The blob set with the size mix: 65% ≤ 1 MiB, 15% 1–10 MiB, 15% 10–100 MiB,
/// 5% large (`huge` bytes at most). Returns the blobs and their classes.
pub fn blob_mix(pool: &Bytes, count: usize, large_max: u64, huge: u64) -> Vec<(usize, Blob)> {
    let mut rng = Rng::new(42);
    let per_class = [count * 65 / 100, count * 15 / 100, count * 15 / 100];
    let mut out = Vec::new();
    let mut id = 5000u64;
    for (class, n) in per_class.iter().enumerate() {
        for _ in 0..(*n).max(1) {
            let size = match class {
                0 => rng.range(4 * 1024, MIB),
                1 => rng.range(MIB + 1, 10 * MIB),
                _ => rng.range(10 * MIB + 1, large_max),
            };
            out.push((class, Blob::unique(pool, id, rng.next() as usize, size as usize)));
            id += 1;
        }
    }
    let n_huge = (count - out.len().min(count)).max(1);
    for i in 0..n_huge {
        // The first is the full size, others spread between 100 MiB and it.
        let size = if i == 0 { huge } else { rng.range((100 * MIB).min(huge), huge) };
        out.push((3, Blob::unique(pool, id, rng.next() as usize, size as usize)));
        id += 1;
    }
    out
}

/// A request sequence over the mix: class by the 65/15/15/5 weights, then a
/// blob of that class uniformly.
pub fn blob_sequence(mix: &[(usize, Blob)], requests: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed);
    let by_class: Vec<Vec<usize>> =
        (0..4).map(|c| mix.iter().enumerate().filter(|(_, (k, _))| *k == c).map(|(i, _)| i).collect()).collect();
    (0..requests)
        .map(|_| {
            let u = rng.unit();
            let class = if u < 0.65 {
                0
            } else if u < 0.80 {
                1
            } else if u < 0.95 {
                2
            } else {
                3
            };
            let c = &by_class[class];
            c[(rng.next() % c.len() as u64) as usize]
        })
        .collect()
}

/// GETs the blobs of `seq` with `concurrency` workers; every byte is checked.
pub async fn blob_get(t: &Target, mix: &Arc<Vec<(usize, Blob)>>, seq: &Arc<Vec<usize>>, concurrency: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let ttfbs = Arc::new(Mutex::new(Vec::new()));
    let meter = Meter::start(t.pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (reg, mix, seq, next, bytes, ttfbs) =
            (t.reg.clone(), mix.clone(), seq.clone(), next.clone(), bytes.clone(), ttfbs.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = LoopResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&b) = seq.get(i) else { break };
                match reg.get_blob("bench/blobs", &mix[b].1).await {
                    Ok(f) => {
                        bytes.fetch_add(f.bytes, Ordering::Relaxed);
                        if let Ok(mut v) = ttfbs.lock() {
                            v.push(f.ttfb);
                        }
                    }
                    Err(e) => failures.record(Instant::now(), Err(e)),
                }
            }
            failures
        }));
    }
    let mut fails = LoopResult::default();
    for task in tasks {
        if let Ok(r) = task.await {
            fails.merge(r);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let usage = meter.finish();
    let total = bytes.load(Ordering::Relaxed) as f64;
    let mut ttfb = ttfbs.lock().map(|v| v.clone()).unwrap_or_default();
    ttfb.sort();
    let mut run = Run::default();
    run.m("MB/s", total / elapsed / 1e6, true);
    run.m("TTFB p50 ms", quantile_ms(&ttfb, 0.5), false);
    run.m("TTFB p99 ms", quantile_ms(&ttfb, 0.99), false);
    run.usage(&usage, "s/GiB", total / GIB, 1.0);
    run.add_failures(fails.failures, fails.first_error);
    run
}

/// Pushes one large blob, monolithic (`chunks` empty) or in PATCH chunks.
pub async fn push_big(t: &Target, blob: &Blob, chunks: &[u64]) -> Run {
    let meter = Meter::start(t.pid);
    let start = Instant::now();
    let res = if chunks.is_empty() {
        t.reg.push_monolithic("bench/big", blob).await
    } else {
        t.reg.push_chunked("bench/big", blob, chunks).await
    };
    let elapsed = start.elapsed().as_secs_f64();
    let usage = meter.finish();
    let mut run = Run::default();
    match res {
        Ok(()) => {
            run.m("MB/s", blob.len as f64 / elapsed / 1e6, true);
            run.usage(&usage, "s/GiB", blob.len as f64 / GIB, 1.0);
        }
        Err(e) => run.fail(e),
    }
    run
}

/// Images for one push-storm or mixed run: a 1 MiB layer each, unique.
pub fn small_images(pool: &Bytes, first_id: u64, n: usize) -> Vec<Image> {
    (0..n as u64)
        .map(|i| {
            let id = first_id + i;
            Image::new(id, vec![Blob::unique(pool, id, (id as usize).wrapping_mul(7_919_993), MIB as usize)])
        })
        .collect()
}

/// Pushes `images` with `parallel` workers; afterwards (untimed) checks
/// every tag resolves to its manifest.
pub async fn push_storm(t: &Target, images: &Arc<Vec<Image>>, parallel: usize, run_id: usize) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(t.pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (reg, images, next) = (t.reg.clone(), images.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = LoopResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(img) = images.get(i) else { break };
                let t0 = Instant::now();
                let res = reg.push_image(&format!("storm/r{}", i % 16), &format!("t{run_id}-{i}"), img).await;
                r.record(t0, res.map(|_| 6));
            }
            r
        }));
    }
    let mut total = LoopResult::default();
    for task in tasks {
        if let Ok(r) = task.await {
            total.merge(r);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let usage = meter.finish();
    let mut run = per_op_run(total, elapsed, &usage, "images/s", "image");
    for (i, img) in images.iter().enumerate() {
        if let Err(e) =
            t.reg.head_manifest(&format!("storm/r{}", i % 16), &format!("t{run_id}-{i}"), &img.manifest_digest).await
        {
            run.fail(format!("after the storm: {e}"));
        }
    }
    run
}

/// 75% pulls (manifest by tag, config, 1 MiB layer) and 25% pushes of a new
/// small image, started at a fixed `rate` per second for `dur` (open loop:
/// latency counts from the scheduled start, so a slow server is not
/// offered less work).
pub async fn mixed(t: &Target, base: &Image, pushes: &Arc<Vec<Image>>, rate: f64, dur: Duration, run_id: usize) -> Run {
    let n = (rate * dur.as_secs_f64()) as usize;
    let base = Arc::new(base.clone());
    let push_next = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(t.pid);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut rng = Rng::new(run_id as u64 + 77);
    for k in 0..n {
        let at = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(at).await;
        let is_push = rng.unit() < 0.25;
        let (reg, base, pushes, push_next) = (t.reg.clone(), base.clone(), pushes.clone(), push_next.clone());
        tasks.push(tokio::spawn(async move {
            let res = if is_push {
                let i = push_next.fetch_add(1, Ordering::Relaxed);
                match pushes.get(i) {
                    Some(img) => reg.push_image("mixed/push", &format!("t{run_id}-{i}"), img).await.map(|_| 6),
                    None => Err(BenchError::Setup("not enough pre-generated images".into())),
                }
            } else {
                async {
                    let d = &base.manifest_digest;
                    reg.get_manifest("mixed/base", "v1", d).await?;
                    reg.get_blob("mixed/base", &base.config).await?;
                    reg.get_blob("mixed/base", &base.layers[0]).await?;
                    Ok(3)
                }
                .await
            };
            (at.elapsed(), res)
        }));
    }
    let mut r = LoopResult::default();
    for task in tasks {
        if let Ok((latency, res)) = task.await {
            r.record_latency(latency, res);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let usage = meter.finish();
    per_op_run(r, elapsed, &usage, "done ops/s", "op")
}

/// One blob GET through the cache or directly, with the expected
/// `X-Cove-Cache` value (`None` for distribution).
pub async fn fetch_once(t: &Target, repo: &str, blob: &Blob, want_cache: Option<&str>) -> Run {
    let meter = Meter::start(t.pid);
    let start = Instant::now();
    let res = t.reg.get_blob(repo, blob).await;
    let total = start.elapsed();
    let usage = meter.finish();
    let mut run = Run::default();
    match res {
        Ok(f) => {
            run.m("TTFB ms", f.ttfb.as_secs_f64() * 1e3, false);
            run.m("total ms", total.as_secs_f64() * 1e3, false);
            run.m("MB/s", blob.len as f64 / total.as_secs_f64() / 1e6, true);
            run.usage(&usage, "s/GiB", blob.len as f64 / GIB, 1.0);
            if let Some(want) = want_cache {
                if f.cache.as_deref() != Some(want) {
                    run.fail(format!("X-Cove-Cache is {:?}, expected {want}", f.cache));
                }
            }
        }
        Err(e) => run.fail(e),
    }
    run
}
