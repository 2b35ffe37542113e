//! `cove-bench`: runs the same workloads against Cove and the CNCF
//! distribution registry side by side, interleaved in pairs, and prints both
//! absolute figures and the per-pair ratio Cove/distribution. See
//! `cove-bench --help` and the README's Benchmarks section.

mod client;
mod data;
mod report;
mod server;
mod workloads;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use sha2::Digest as _;

use client::Registry;
use data::{Blob, Image};
use report::{fmt_num, summary, Run, WorkloadResult};
use server::{Binaries, Kind, Server};
use workloads::Target;

/// Why a request, a check or the set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("wrong answer: {0}")]
    Check(String),
    #[error("set-up: {0}")]
    Setup(String),
}

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
const ALL: &[&str] = &["v2", "manifest", "pull-check", "blob-get", "push", "storm", "mixed", "startup", "cache"];

/// Cove vs the CNCF distribution registry on this machine.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Short mode: fewer pairs, shorter runs, large blobs scaled down (under 5 minutes).
    #[arg(long)]
    short: bool,
    /// Smoke mode: every workload once with tiny sizes, to check the harness
    /// and every answer (about a minute; the figures mean nothing).
    #[arg(long, conflicts_with = "short")]
    smoke: bool,
    /// Directory for both servers' storage (same disk); default: <temp dir>/cove-bench.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The `cove` binary (a release build).
    #[arg(long, default_value = "target/release/cove")]
    cove: PathBuf,
    /// The distribution registry binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    registry: PathBuf,
    /// nginx, the blob GET reference (serving Cove's blob files with
    /// sendfile); the reference rows are left out when it is missing.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Workloads to run, comma-separated (default: all):
    /// v2, manifest, pull-check, blob-get, push, storm, mixed, startup, cache.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Keep this run's storage directories afterwards.
    #[arg(long)]
    keep: bool,
}

/// How big a run is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Smoke,
    Short,
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Short => "short",
            Mode::Full => "full",
        }
    }
}

/// Sizes and repetitions of one mode.
struct Plan {
    /// Bytes of random data every blob is cut from.
    pool: usize,
    pairs: usize,
    dur: Duration,
    workers: usize,
    blob_count: usize,
    blob_large_max: u64,
    blob_huge: u64,
    blob_requests: usize,
    push_size: u64,
    push_pairs: usize,
    storm_images: usize,
    mixed_rates: Vec<f64>,
    mixed_dur: Duration,
    mixed_pairs: usize,
    startup_repos: usize,
    startup_pairs: usize,
    cache_size: u64,
    cache_pairs: usize,
    disk_bytes: u64,
}

impl Plan {
    fn new(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan {
                pool: 64 << 20,
                pairs: 1,
                dur: Duration::from_millis(300),
                workers: 4,
                blob_count: 8,
                blob_large_max: 12 * MIB,
                blob_huge: 16 * MIB,
                blob_requests: 16,
                push_size: 16 * MIB,
                push_pairs: 1,
                storm_images: 4,
                mixed_rates: vec![20.0],
                mixed_dur: Duration::from_millis(500),
                mixed_pairs: 1,
                startup_repos: 20,
                startup_pairs: 1,
                cache_size: 8 * MIB,
                cache_pairs: 1,
                disk_bytes: 16 * MIB,
            },
            Mode::Short => Plan {
                pool: 1 << 30,
                pairs: 3,
                dur: Duration::from_secs(2),
                workers: 8,
                blob_count: 20,
                blob_large_max: 40 * MIB,
                blob_huge: 160 * MIB,
                blob_requests: 80,
                push_size: 1 << 30,
                push_pairs: 2,
                storm_images: 48,
                mixed_rates: vec![25.0, 100.0, 200.0],
                mixed_dur: Duration::from_secs(3),
                mixed_pairs: 2,
                startup_repos: 10_000,
                startup_pairs: 3,
                cache_size: 64 * MIB,
                cache_pairs: 3,
                disk_bytes: 512 * MIB,
            },
            Mode::Full => Plan {
                pool: 1 << 30,
                pairs: 5,
                dur: Duration::from_secs(5),
                workers: 8,
                blob_count: 40,
                blob_large_max: 100 * MIB,
                blob_huge: 1 << 30,
                blob_requests: 300,
                push_size: 1 << 30,
                push_pairs: 4,
                storm_images: 200,
                mixed_rates: vec![25.0, 50.0, 100.0, 200.0, 400.0],
                mixed_dur: Duration::from_secs(8),
                mixed_pairs: 3,
                startup_repos: 10_000,
                startup_pairs: 5,
                cache_size: 256 * MIB,
                cache_pairs: 5,
                disk_bytes: 1 << 30,
            },
        }
    }
}

/// Runs `$body` (an async expression using `$t: &Target` and pair `$i`)
/// against both targets in pairs, alternating which goes first.
macro_rules! interleave {
    ($name:expr, $targets:expr, $n:expr, |$t:ident, $i:ident| $body:expr) => {{
        let mut pairs = Vec::new();
        for $i in 0..$n {
            let mut slots: [Option<Run>; 2] = [None, None];
            let order = if $i % 2 == 0 { [0usize, 1] } else { [1, 0] };
            for j in order {
                let $t: &Target = &$targets[j];
                slots[j] = Some($body.await);
            }
            let [a, b] = slots;
            pairs.push([a.unwrap_or_default(), b.unwrap_or_default()]);
        }
        let w = WorkloadResult { name: $name.to_string(), pairs, against: $targets[1].kind.name() };
        progress(&w);
        w
    }};
}

fn progress(w: &WorkloadResult) {
    let mut s = String::new();
    w.render(&mut s);
    eprint!("{s}");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cove-bench: {e}");
            ExitCode::from(2)
        }
    }
}

impl Args {
    fn mode(&self) -> Mode {
        if self.smoke {
            Mode::Smoke
        } else if self.short {
            Mode::Short
        } else {
            Mode::Full
        }
    }
}

/// Physical limits measured in this run.
struct Limits {
    sha_mbs: f64,
    disk_mbs: f64,
}

async fn run(args: Args) -> Result<bool, BenchError> {
    let mode = args.mode();
    let plan = Plan::new(mode);
    let wanted = |w: &str| args.only.is_empty() || args.only.iter().any(|o| o == w);
    for o in &args.only {
        if !ALL.contains(&o.as_str()) {
            return Err(BenchError::Setup(format!("unknown workload {o}; known: {}", ALL.join(", "))));
        }
    }
    let nginx = args.nginx.is_file().then(|| args.nginx.clone());
    let bins = Binaries { cove: args.cove.clone(), registry: args.registry.clone(), nginx };
    for (what, p) in [("cove", &bins.cove), ("docker-registry", &bins.registry)] {
        if !p.exists() {
            return Err(BenchError::Setup(format!("{what} binary not found at {}", p.display())));
        }
    }
    let base_dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("cove-bench"));
    let run_dir = base_dir.join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir)?;
    let started = Instant::now();
    let mut out = String::new();
    header(&mut out, mode, &bins, &run_dir);
    eprint!("{out}");

    eprintln!("generating {} MiB of random data…", plan.pool >> 20);
    let pool_len = plan.pool;
    let pool = tokio::task::spawn_blocking(move || data::random_bytes(pool_len, 1))
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let limits = measure_limits(&pool, &run_dir, plan.disk_bytes).await?;
    let limit_line = format!(
        "physical limits: SHA-256 one core {} MB/s; sequential write+fsync of {} {} MB/s; push limit {} MB/s\n\n",
        fmt_num(limits.sha_mbs),
        run_dir.display(),
        fmt_num(limits.disk_mbs),
        fmt_num(limits.sha_mbs.min(limits.disk_mbs))
    );
    eprint!("{limit_line}");
    out.push_str(&limit_line);

    let (cove, cove_start) = Server::start(Kind::Cove, &bins, &run_dir.join("cove"), "")?;
    let (dist, dist_start) = Server::start(Kind::Distribution, &bins, &run_dir.join("distribution"), "")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = [server::rss_kib(cove.pid), server::rss_kib(dist.pid)];
    let line = format!(
        "fresh start (empty storage): ready in {:.1} ms / {:.1} ms, idle RSS {} / {} MiB (cove / distribution)\n\n",
        cove_start.as_secs_f64() * 1e3,
        dist_start.as_secs_f64() * 1e3,
        idle[0].map(|k| fmt_num(k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
        idle[1].map(|k| fmt_num(k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
    );
    eprint!("{line}");
    out.push_str(&line);
    let targets = [
        Target { kind: Kind::Cove, pid: cove.pid, reg: Registry::new(cove.base(), "") },
        Target { kind: Kind::Distribution, pid: dist.pid, reg: Registry::new(dist.base(), "") },
    ];

    let mut results: Vec<WorkloadResult> = Vec::new();
    let pull_image = workloads::pull_check_image(&pool);
    if wanted("manifest") || wanted("pull-check") {
        for t in &targets {
            t.reg.push_image("bench/pull", "v1", &pull_image).await?;
        }
    }
    if wanted("v2") {
        results.push(interleave!(format!("GET /v2/ (c={})", plan.workers), targets, plan.pairs, |t, _i| {
            workloads::v2(t, plan.workers, plan.dur)
        }));
    }
    if wanted("manifest") {
        let name = format!("manifest HEAD by tag + GET by digest (c={})", plan.workers);
        results.push(interleave!(name, targets, plan.pairs, |t, _i| {
            workloads::manifest(t, &pull_image, plan.workers, plan.dur)
        }));
    }
    if wanted("pull-check") {
        let name = format!("pull check: HEAD tag, GET manifest, GET config, HEAD 4 layers (c={})", plan.workers);
        results.push(interleave!(name, targets, plan.pairs, |t, _i| {
            workloads::pull_check(t, &pull_image, plan.workers, plan.dur)
        }));
    }
    if wanted("blob-get") {
        let mix = workloads::blob_mix(&pool, plan.blob_count, plan.blob_large_max, plan.blob_huge);
        let total: u64 = mix.iter().map(|(_, b)| b.len).sum();
        eprintln!("pushing the blob mix ({} blobs, {} MiB) to both…", mix.len(), total / MIB);
        for t in &targets {
            for (_, b) in &mix {
                t.reg.push_monolithic("bench/blobs", b).await?;
            }
        }
        let mix = Arc::new(mix);
        for c in [1usize, 4, 32] {
            let name = format!("blob GET, size mix 65/15/15/5 % (≤{} MiB), c={c}", plan.blob_huge / MIB);
            results.push(interleave!(name, targets, plan.pairs, |t, i| {
                let seq = Arc::new(workloads::blob_sequence(&mix, plan.blob_requests, (c * 100 + i) as u64));
                let mix = &mix;
                async move { workloads::blob_get(t, mix, &seq, c).await }
            }));
        }
        results.extend(blob_get_vs_nginx(&bins, &run_dir, &targets[0], &mix, &plan).await?);
    }
    if wanted("push") {
        let chunks = [8 * MIB, 16 * MIB, 12 * MIB];
        for (label, chunked) in [("monolithic (POST + PUT)", false), ("chunked (PATCH 8–16 MiB)", true)] {
            let name = format!("push {} MiB blob, {label}", plan.push_size / MIB);
            let id0 = if chunked { 20_000 } else { 10_000 };
            results.push(interleave!(name, targets, plan.push_pairs, |t, i| {
                // A new blob for every pair (same bytes for both servers).
                let blob = big_blob(&pool, id0 + i as u64, plan.push_size);
                let chunks: &[u64] = if chunked { &chunks } else { &[] };
                async move { workloads::push_big(t, &blob, chunks).await }
            }));
        }
    }
    if wanted("storm") {
        let name = format!("push storm: {} images (1 MiB layer + config + manifest), 8 parallel", plan.storm_images);
        results.push(interleave!(name, targets, plan.pairs, |t, i| {
            let images = Arc::new(workloads::small_images(&pool, 100_000 + (i * 10_000) as u64, plan.storm_images));
            async move { workloads::push_storm(t, &images, 8, i).await }
        }));
    }
    if wanted("mixed") {
        let base = Image::new(2, vec![Blob::unique(&pool, 2, 77, MIB as usize)]);
        for t in &targets {
            t.reg.push_image("mixed/base", "v1", &base).await?;
        }
        for (ri, rate) in plan.mixed_rates.iter().enumerate() {
            let name = format!("mixed 75% pull / 25% push, offered {rate}/s for {} s", plan.mixed_dur.as_secs());
            let need = (rate * plan.mixed_dur.as_secs_f64() * 0.4) as usize + 16;
            results.push(interleave!(name, targets, plan.mixed_pairs, |t, i| {
                let run_id = ri * 100 + i;
                let pushes = Arc::new(workloads::small_images(&pool, 1_000_000 + (run_id * 10_000) as u64, need));
                let base = &base;
                async move { workloads::mixed(t, base, &pushes, *rate, plan.mixed_dur, run_id).await }
            }));
        }
    }
    let rss_after = [server::rss_kib(cove.pid), server::rss_kib(dist.pid)];
    if wanted("startup") {
        results.push(startup(&bins, &base_dir, &plan).await?);
    }
    if wanted("cache") {
        results.extend(cache(&bins, &run_dir, &dist, &pool, &plan).await?);
    }
    drop(cove);
    drop(dist);

    out.push_str(&format!(
        "{:<26} {:>12} {:>14}   {}\n",
        "workload / metric", "cove", "distribution", "cove/distribution per pair: median [min–max]"
    ));
    for r in &results {
        r.render(&mut out);
    }
    out.push_str(&format!(
        "RSS after the workloads above: cove {} MiB, distribution {} MiB\n",
        rss_after[0].map(|k| fmt_num(k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
        rss_after[1].map(|k| fmt_num(k as f64 / 1024.0)).unwrap_or_else(|| "-".into()),
    ));
    let failures: u64 = results.iter().map(|r| r.failures(0) + r.failures(1)).sum();
    targets_summary(&mut out, &results, &limits, idle[0]);
    out.push_str(&format!(
        "\ncorrectness: {failures} failures (wrong answers, bad status codes or headers)\ntotal time {:.0} s\n",
        started.elapsed().as_secs_f64()
    ));
    println!("\n{out}");
    let _ = std::io::stdout().flush();
    if !args.keep {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    Ok(failures == 0)
}

fn header(out: &mut String, mode: Mode, bins: &Binaries, dir: &Path) {
    let version = |p: &Path| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_default()
    };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    out.push_str(&format!(
        "cove-bench ({} mode): {} CPUs; cove: {} ({}); distribution: {} ({}); storage under {}\n",
        mode.name(),
        cpus,
        bins.cove.display(),
        version(&bins.cove),
        bins.registry.display(),
        version(&bins.registry),
        dir.display()
    ));
    out.push_str("pairs alternate which server goes first; figures are medians over pairs; ↑ higher is better, ↓ lower is better\n");
}

/// A blob of `size` bytes unique to `id`.
fn big_blob(pool: &Bytes, id: u64, size: u64) -> Blob {
    Blob::unique(pool, id, (id as usize) * 4096, size as usize)
}

/// Single-core SHA-256 and sequential write+fsync throughput of `dir`'s disk.
async fn measure_limits(pool: &Bytes, dir: &Path, disk_bytes: u64) -> Result<Limits, BenchError> {
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

/// Time from spawn until `/v2/` answers, with `repos` repositories in
/// storage, and idle RSS. The storage is built once and kept in `base/`.
async fn startup(bins: &Binaries, base: &Path, plan: &Plan) -> Result<WorkloadResult, BenchError> {
    let root = base.join(format!("startup-{}", plan.startup_repos));
    let image = Image::new(3, vec![Blob::from_bytes(Bytes::from_static(b"a tiny layer for start-up"))]);
    for kind in [Kind::Cove, Kind::Distribution] {
        let dir = root.join(kind.name());
        if dir.join("ready").exists() {
            continue;
        }
        eprintln!("building {} repositories for {}…", plan.startup_repos, kind.name());
        let _ = std::fs::remove_dir_all(&dir);
        let (mut s, _) = Server::start(kind, bins, &dir, "")?;
        Registry::new(s.base(), "").push_image("many/r00000", "latest", &image).await?;
        s.stop();
        let repos = match kind {
            Kind::Cove => dir.join("storage/repositories/many"),
            Kind::Distribution => dir.join("storage/docker/registry/v2/repositories/many"),
            Kind::Nginx => continue,
        };
        let n = plan.startup_repos;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for i in 1..n {
                copy_dir(&repos.join("r00000"), &repos.join(format!("r{i:05}")))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))??;
        std::fs::write(dir.join("ready"), b"")?;
    }
    let last = format!("many/r{:05}", plan.startup_repos - 1);
    let name = format!("start-up with {} repositories in storage", plan.startup_repos);
    let kinds = [Kind::Cove, Kind::Distribution];
    let mut pairs = Vec::new();
    for i in 0..plan.startup_pairs {
        let mut slots = [Run::default(), Run::default()];
        let order = if i % 2 == 0 { [0usize, 1] } else { [1, 0] };
        for j in order {
            let mut run = Run::default();
            match Server::start(kinds[j], bins, &root.join(kinds[j].name()), "") {
                Ok((s, ready)) => {
                    run.m("ready ms", ready.as_secs_f64() * 1e3, false);
                    if let Err(e) =
                        Registry::new(s.base(), "").get_manifest(&last, "latest", &image.manifest_digest).await
                    {
                        run.fail(e);
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if let Some(k) = server::rss_kib(s.pid) {
                        run.m("idle RSS MiB", k as f64 / 1024.0, false);
                    }
                }
                Err(e) => run.fail(e),
            }
            slots[j] = run;
        }
        pairs.push(slots);
    }
    let w = WorkloadResult { name, pairs, against: Kind::Distribution.name() };
    progress(&w);
    Ok(w)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

/// Blob GETs from Cove vs nginx serving the same files from the same disk
/// (the physical reference), for single sizes at 1, 4 and 32 clients. Empty
/// when nginx is not installed.
async fn blob_get_vs_nginx(
    bins: &Binaries,
    run_dir: &Path,
    cove: &Target,
    mix: &Arc<Vec<(usize, Blob)>>,
    plan: &Plan,
) -> Result<Vec<WorkloadResult>, BenchError> {
    if bins.nginx.is_none() {
        eprintln!("nginx not found: no blob GET reference rows (install nginx or pass --nginx)");
        return Ok(Vec::new());
    }
    let cove_storage = run_dir.join("cove").join("storage");
    let (nginx, _) = Server::start(Kind::Nginx, bins, &run_dir.join("nginx"), &cove_storage.to_string_lossy())?;
    let targets = [
        Target { kind: Kind::Cove, pid: cove.pid, reg: cove.reg.clone() },
        Target { kind: Kind::Nginx, pid: nginx.pid, reg: Registry::new(nginx.base(), "") },
    ];
    let mut results = Vec::new();
    // One size class at a time: the smallest and the largest blob of the mix.
    let by_len = |pick: fn(&Blob, &Blob) -> bool| {
        mix.iter().enumerate().fold(None::<usize>, |best, (i, (_, b))| match best {
            Some(j) if !pick(b, &mix[j].1) => Some(j),
            _ => Some(i),
        })
    };
    let sizes = [by_len(|a, b| a.len < b.len), by_len(|a, b| a.len > b.len)];
    for index in sizes.into_iter().flatten() {
        let kib = mix[index].1.len / 1024;
        for c in [1usize, 4, 32] {
            let name = format!("blob GET {kib} KiB, c={c}: Cove vs nginx (sendfile, same files)");
            results.push(interleave!(name, targets, plan.pairs, |t, _i| {
                let seq = Arc::new(vec![index; plan.blob_requests.max(c * 4)]);
                async move { workloads::blob_get(t, mix, &seq, c).await }
            }));
        }
    }
    Ok(results)
}

/// Pull-through: Cove with `dist` as its docker.io upstream, blob miss and
/// hit through Cove vs the same blob straight from `dist`.
async fn cache(
    bins: &Binaries,
    run_dir: &Path,
    dist: &Server,
    pool: &Bytes,
    plan: &Plan,
) -> Result<Vec<WorkloadResult>, BenchError> {
    let config = format!("[upstreams.\"docker.io\"]\nurl = \"{}\"\n", dist.base());
    let (cove, _) = Server::start(Kind::Cove, bins, &run_dir.join("cove-cache"), &config)?;
    let direct = Registry::new(dist.base(), "");
    let blobs: Vec<Blob> = (0..plan.cache_pairs).map(|i| big_blob(pool, 50_000 + i as u64, plan.cache_size)).collect();
    for b in &blobs {
        direct.push_monolithic("library/cachebench", b).await?;
    }
    let targets = [
        Target { kind: Kind::Cove, pid: cove.pid, reg: Registry::new(cove.base(), "docker.io/") },
        Target { kind: Kind::Distribution, pid: dist.pid, reg: direct },
    ];
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

/// The performance targets, each as measured in this run.
fn targets_summary(out: &mut String, results: &[WorkloadResult], limits: &Limits, idle_cove: Option<u64>) {
    out.push_str("\ntargets (performance issue: ratios to references measured in this run)\n");
    fn find<'a>(results: &'a [WorkloadResult], prefix: &'a str) -> impl Iterator<Item = &'a WorkloadResult> + 'a {
        results.iter().filter(move |r| r.name.starts_with(prefix))
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let floor = GIB / (limits.sha_mbs * 1e6);
    out.push_str(&format!(
        "  SHA-256 floor: {floor:.2} s CPU per GiB ({} MB/s on one core)\n",
        fmt_num(limits.sha_mbs)
    ));
    for r in find(results, "push ") {
        if let Some(cpu) = r.median(0, "CPU s/GiB") {
            out.push_str(&format!(
                "  {:<62} {:.2} s CPU/GiB (target ≤ 1.2): {}; {:.2} × distribution's MB/s\n",
                r.name,
                cpu,
                verdict(cpu <= 1.2),
                r.ratio("MB/s").map(|x| x.0).unwrap_or(f64::NAN)
            ));
        }
    }
    for r in find(results, "pull-through cache miss") {
        if let (Some(t), Some(cpu)) = (r.ratio("total ms"), r.median(0, "CPU s/GiB")) {
            let ttfb = r.median(0, "TTFB ms").zip(r.median(1, "TTFB ms")).map(|(c, d)| c - d);
            out.push_str(&format!(
                "  {:<62} {:.2} × direct time (target ≤ 1.25): {}; {:.2} s CPU/GiB (target ≤ 1.2): {}; TTFB direct + {:.1} ms (target ≤ 2): {}\n",
                r.name,
                t.0,
                verdict(t.0 <= 1.25),
                cpu,
                verdict(cpu <= 1.2),
                ttfb.unwrap_or(f64::NAN),
                verdict(ttfb.is_some_and(|x| x <= 2.0))
            ));
        }
    }
    for r in find(results, "pull-through cache hit") {
        if let Some((m, _, _)) = r.ratio("MB/s") {
            out.push_str(&format!("  {:<62} {:.2} × direct (target ≥ 1.5): {}\n", r.name, m, verdict(m >= 1.5)));
        }
    }
    for r in results.iter().filter(|r| r.against == Kind::Nginx.name()) {
        if let Some((m, lo, _)) = r.ratio("MB/s") {
            out.push_str(&format!(
                "  {:<62} {:.2} × nginx (min {:.2}) (target ≥ 0.9): {}\n",
                r.name,
                m,
                lo,
                verdict(m >= 0.9)
            ));
        }
    }
    let mut idle: Vec<f64> = idle_cove.map(|k| k as f64 / 1024.0).into_iter().collect();
    if let Some(r) = find(results, "start-up").next() {
        idle.extend(
            r.pairs.iter().filter_map(|p| p[0].metrics.iter().find(|m| m.name == "idle RSS MiB")).map(|m| m.value),
        );
        if let Some(ms) = r.median(0, "ready ms") {
            out.push_str(&format!("  {:<62} {:.1} ms (target < 100): {}\n", r.name, ms, verdict(ms < 100.0)));
        }
    }
    if let Some((med, _, hi)) = summary(idle) {
        out.push_str(&format!(
            "  {:<62} median {:.1} MiB, max {:.1} (target ≤ 10): {}\n",
            "idle RSS",
            med,
            hi,
            verdict(hi <= 10.0)
        ));
    }
    let peak = results
        .iter()
        .flat_map(|r| r.pairs.iter().map(move |p| (r, &p[0])))
        .flat_map(|(r, run)| run.metrics.iter().filter(|m| m.name == "peak RSS MiB").map(move |m| (m.value, &r.name)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((v, name)) = peak {
        out.push_str(&format!(
            "  {:<62} {:.1} MiB, in \"{}\" (target ≤ 48): {}\n",
            "peak RSS under load (max over all runs, filesystem backend)",
            v,
            name,
            verdict(v <= 48.0)
        ));
    }
}
