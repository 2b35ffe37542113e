//! `cove-bench`: runs the same workloads against Cove and the CNCF
//! distribution registry side by side, interleaved in pairs, and prints both
//! absolute figures and the per-pair ratio Cove/distribution. See
//! `cove-bench --help` and the README's Benchmarks section.
//!
//! This file holds the command line and the run itself (which workloads,
//! in which order, and the report). `plan` sizes each mode; `limits`
//! measures the machine's SHA-256 and disk speed; `dedicated` holds the
//! workloads that start servers of their own (start-up, blob GET vs nginx);
//! `cache` the pull-through cache ones (miss and hit, concurrent clients,
//! cold pull of a 10-layer image); `skopeo` pushes and pulls with skopeo,
//! a real client; `verdicts` checks the figures against the performance
//! targets; `workloads` and `client` are the rest.

mod client;
mod data;
mod limits;
mod plan;
mod report;
mod scale;
mod server;
mod verdicts;
mod workloads;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use client::Registry;
use data::{big_blob, Blob, Image};
use limits::measure_limits;
use plan::{Mode, Plan};
use report::{fmt_num, Run, WorkloadResult};
use server::{Binaries, Kind, Server};
use verdicts::targets_summary;
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
const ALL: &[&str] = &[
    "v2",
    "manifest",
    "pull-check",
    "blob-get",
    "push",
    "storm",
    "mixed",
    "startup",
    "cache",
    "cache-concurrency",
    "cache-cold-pull",
    "skopeo",
    "scale",
    "scale-s3",
];

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
    /// skopeo, the real client of the skopeo push/pull rows; they are left
    /// out when it is missing.
    #[arg(long, default_value = "/usr/bin/skopeo")]
    skopeo: PathBuf,
    /// s3s-fs, the S3 server of the object-storage scale rows (`scale-s3`);
    /// they are left out when it is missing (scripts/peers/install-s3s-fs.sh).
    #[arg(long, default_value = "/opt/cove-peers/bin/s3s-fs")]
    s3s_fs: PathBuf,
    /// Workloads to run, comma-separated (default: all):
    /// v2, manifest, pull-check, blob-get, push, storm, mixed, startup, cache,
    /// cache-concurrency, cache-cold-pull, skopeo, scale, scale-s3.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Keep this run's storage directories afterwards.
    #[arg(long)]
    keep: bool,
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

// After the macro: their workloads use `interleave!`.
mod cache;
mod dedicated;
mod skopeo;
use cache::{cache, cache_concurrency, cold_pull};
use dedicated::{blob_get_vs_nginx, startup};

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
    let skopeo = args.skopeo.is_file().then(|| args.skopeo.clone());
    let s3s_fs = args.s3s_fs.is_file().then(|| args.s3s_fs.clone());
    let bins = Binaries { cove: args.cove.clone(), registry: args.registry.clone(), nginx, skopeo, s3s_fs };
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
        "physical limits: SHA-256 one core {} MB/s; sequential write+fsync of {} {} MB/s ({:.2} s kernel CPU per GiB into a new file); push limit {} MB/s\n\n",
        fmt_num(limits.sha_mbs),
        run_dir.display(),
        fmt_num(limits.disk_mbs),
        limits.write_cpu_s_per_gib,
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
    if wanted("skopeo") {
        results.extend(skopeo::skopeo(bins.skopeo.as_deref(), &targets, &run_dir, &pool, &plan).await?);
    }
    let rss_after = [server::rss_kib(cove.pid), server::rss_kib(dist.pid)];
    if wanted("startup") {
        results.push(startup(&bins, &base_dir, &plan).await?);
    }
    if wanted("cache") {
        results.extend(cache(&bins, &run_dir, &dist, &pool, &plan).await?);
    }
    if wanted("cache-concurrency") {
        results.push(cache_concurrency(&bins, &run_dir, &dist, &pool, &plan).await?);
    }
    if wanted("cache-cold-pull") {
        results.push(cold_pull(&bins, &run_dir, &dist, &pool, &plan).await?);
    }
    drop(cove);
    drop(dist);
    // Its own server on its own store, with the shared pair stopped.
    let scale = if wanted("scale") { Some(scale::scale(&bins, &base_dir, &plan).await?) } else { None };
    let scale_s3 = match (&bins.s3s_fs, wanted("scale-s3")) {
        (Some(s3s_fs), true) => Some(scale::scale_s3(s3s_fs, &bins, &base_dir, &plan).await?),
        _ => None,
    };

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
    for section in scale.iter().chain(&scale_s3) {
        out.push('\n');
        out.push_str(section);
    }
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
