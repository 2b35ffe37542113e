//! The scale workload: a filesystem store with many repositories (and one
//! repository with many tags), then catalog and tag pages, the web
//! interface's list, start-up, GC and retention dry runs and memory. Cove
//! only: the figures are checked against the scale issue's targets.
//!
//! The store is built once and kept in `base/scale-N/`: one image pushed
//! through Cove, its repository directory copied N-1 times (names
//! `orgNN/repoNNNNNN`, 100 organisations), and the tags pushed through the
//! API.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Method, StatusCode};
use http_body_util::BodyExt as _;

use crate::client::{empty, Registry};
use crate::data::{Blob, Image};
use crate::plan::Plan;
use crate::report::fmt_num;
use crate::server::{self, Binaries, Kind, Server};
use crate::BenchError;

/// Requests per figure (the median is reported).
const REPEAT: usize = 7;
/// The first tag page after start: the one request that lists the
/// repository's tags from the store (later pages come from the tag cache).
const FIRST_TAG_PAGE: &str = "tags/list?n=100, first request (lists the store)";

/// How many times a page is timed: once for [`FIRST_TAG_PAGE`], else
/// [`REPEAT`] (the median is shown).
fn repeats(label: &str) -> usize {
    if label == FIRST_TAG_PAGE {
        1
    } else {
        REPEAT
    }
}

/// A page's target: the issue's, except for [`FIRST_TAG_PAGE`] (one store
/// listing, whatever the store takes for it).
fn target(label: &str, ms: f64) -> Option<f64> {
    (label != FIRST_TAG_PAGE).then_some(ms)
}

fn repo_name(i: usize) -> String {
    format!("org{:02}/repo{i:06}", i % 100)
}

fn tag_name(i: usize) -> String {
    format!("t{i:06}")
}

/// Builds (once) and measures the scale store; returns the report section.
pub(crate) async fn scale(bins: &Binaries, base: &Path, plan: &Plan) -> Result<String, BenchError> {
    let (repos, tags) = (plan.scale_repos, plan.scale_tags);
    let dir = base.join(format!("scale-{repos}-{tags}"));
    let image = Image::new(4, vec![Blob::from_bytes(Bytes::from_static(b"a tiny layer for the scale store"))]);
    if !dir.join("ready").exists() {
        build(bins, &dir, &image, repos, tags).await?;
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scale: {repos} repositories and {tags} tags in one repository, filesystem (Cove only; pages: median of {REPEAT} requests, dry runs: one)"
    );
    // Start-up: spawn until `/v2/` answers, three times.
    let mut ready = Vec::new();
    for _ in 0..2 {
        let (mut s, t) = Server::start(Kind::Cove, bins, &dir, "")?;
        ready.push(t.as_secs_f64() * 1e3);
        s.stop();
    }
    let (mut cove, t) = Server::start(Kind::Cove, bins, &dir, "")?;
    ready.push(t.as_secs_f64() * 1e3);
    ready.sort_by(f64::total_cmp);
    row(&mut out, "start-up (spawn until /v2/ answers)", ready[ready.len() / 2], "ms", Some(100.0));
    let swept = wait_for_sweep(&dir.join("server.log"), Duration::from_secs(120)).await;
    row(&mut out, "repository index ready after start (background sweep)", swept.as_secs_f64() * 1e3, "ms", None);

    let reg = Registry::new(cove.base(), "");
    let b = cove.base();
    let mid = repo_name(repos / 2);
    let mid_tag = tag_name(tags / 2);
    // How many names follow `last` in each listing, to check page sizes.
    let mut all: Vec<String> = (0..repos).map(repo_name).chain(["tags/many".to_owned()]).collect();
    all.sort();
    let after_mid = all.len() - all.iter().position(|n| *n == mid).unwrap_or(0) - 1;
    let tags_after_mid = tags - tags / 2 - 1;
    let pages: Vec<(&str, String, usize)> = vec![
        ("_catalog?n=100, first page", format!("{b}/v2/_catalog?n=100"), 100.min(all.len())),
        ("_catalog?n=100, middle page", format!("{b}/v2/_catalog?n=100&last={mid}"), 100.min(after_mid)),
        ("_catalog?n=1000, middle page", format!("{b}/v2/_catalog?n=1000&last={mid}"), 1000.min(after_mid)),
        (FIRST_TAG_PAGE, format!("{b}/v2/tags/many/tags/list?n=100"), 100.min(tags)),
        ("tags/list?n=100, first page", format!("{b}/v2/tags/many/tags/list?n=100"), 100.min(tags)),
        (
            "tags/list?n=100, middle page",
            format!("{b}/v2/tags/many/tags/list?n=100&last={mid_tag}"),
            100.min(tags_after_mid),
        ),
        (
            "tags/list?n=1000, middle page",
            format!("{b}/v2/tags/many/tags/list?n=1000&last={mid_tag}"),
            1000.min(tags_after_mid),
        ),
    ];
    for (label, url, want) in &pages {
        let ms = timed(&reg, Method::GET, url, repeats(label), |body| check_page(body, *want)).await?;
        row(&mut out, label, ms, "ms", target(label, 10.0));
    }
    let ui: Vec<(&str, String)> = vec![
        ("web interface list, first page", format!("{b}/")),
        ("web interface list, a middle page", format!("{b}/?page={}", (repos / 50 / 2).max(1))),
        ("web interface list, filtered (1 % match)", format!("{b}/?q=repo000")),
    ];
    for (label, url) in &ui {
        let ms = timed(&reg, Method::GET, url, REPEAT, |body| {
            if body.windows(5).any(|w| w == b"/repo") {
                Ok(())
            } else {
                Err(BenchError::Check("web interface list shows no repository".into()))
            }
        })
        .await?;
        row(&mut out, label, ms, "ms", None);
    }
    // GC and retention: the first run lists every repository, a run after
    // that only those written since (one run each: seconds at this size).
    let runs = [("GC dry run", "/admin/gc?dry_run=true"), ("retention dry run", "/admin/retention?dry_run=true")];
    for (when, push) in [("first run", false), ("nothing changed since", false), ("after one push", true)] {
        if push {
            reg.push_image("org00/pushed-now", "latest", &image).await?;
        }
        for (label, path) in runs {
            let ms = timed(&reg, Method::POST, &format!("{b}{path}"), 1, |_| Ok(())).await?;
            row(&mut out, &format!("{label}, {when}"), ms, "ms", None);
        }
    }
    if let Some(k) = server::rss_kib(cove.pid) {
        row(&mut out, "RSS after all of the above", k as f64 / 1024.0, "MiB", Some(64.0));
    }
    cove.stop();
    out.push('\n');
    Ok(out)
}

/// One line: label, value, unit and the target when there is one.
fn row(out: &mut String, label: &str, value: f64, unit: &str, target: Option<f64>) {
    let verdict = match target {
        Some(t) if value <= t => format!("  (target ≤ {}: met)", fmt_num(t)),
        Some(t) => format!("  (target ≤ {}: MISSED)", fmt_num(t)),
        None => String::new(),
    };
    let _ = writeln!(out, "  {label:<58} {:>10} {unit}{verdict}", fmt_num(value));
}

/// The median time of `repeat` requests; every answer must be 200 and
/// pass `check`.
async fn timed(
    reg: &Registry,
    method: Method,
    url: &str,
    repeat: usize,
    check: impl Fn(&[u8]) -> Result<(), BenchError>,
) -> Result<f64, BenchError> {
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        let resp = reg.send(method.clone(), url, &[("content-length", "0")], empty()).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(|e| BenchError::Http(format!("{url}: {e}")))?.to_bytes();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if parts.status != StatusCode::OK {
            return Err(BenchError::Check(format!("{url}: {}", parts.status)));
        }
        check(&bytes)?;
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A catalog or tag page: a JSON list of exactly `want` names.
fn check_page(body: &[u8], want: usize) -> Result<(), BenchError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BenchError::Check(format!("page is not JSON: {e}")))?;
    let n = v.get("repositories").or_else(|| v.get("tags")).and_then(|l| l.as_array()).map(Vec::len);
    if n != Some(want) {
        return Err(BenchError::Check(format!("page has {n:?} names, want {want}")));
    }
    Ok(())
}

/// How long after now the server logs its first index sweep.
async fn wait_for_sweep(log: &Path, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().rev().find(|l| l.contains("repository index swept")) {
            // The server says how long the sweep took.
            if let Some(ms) = line.split("ms=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok()) {
                return Duration::from_millis(ms);
            }
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    limit
}

/// Pushes the seed image and the tags through Cove, then copies the seed
/// repository's directory to every other name.
async fn build(bins: &Binaries, dir: &Path, image: &Image, repos: usize, tags: usize) -> Result<(), BenchError> {
    eprintln!("building the scale store: {repos} repositories, {tags} tags…");
    let _ = std::fs::remove_dir_all(dir);
    let (mut s, _) = Server::start(Kind::Cove, bins, dir, "")?;
    let reg = Registry::new(s.base(), "");
    reg.push_image(&repo_name(0), "latest", image).await?;
    reg.push_image("tags/many", &tag_name(0), image).await?;
    let reg = &reg;
    let mut pending = futures::stream::iter(
        (1..tags).map(|i| async move { reg.put_manifest("tags/many", &tag_name(i), image).await }),
    )
    .buffer_unordered(8);
    while let Some(r) = pending.next().await {
        r?;
    }
    s.stop();
    let root = dir.join("storage/repositories");
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let seed = root.join(repo_name(0));
        for i in 1..repos {
            crate::dedicated::copy_dir(&seed, &root.join(repo_name(i)))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| BenchError::Setup(e.to_string()))??;
    std::fs::write(dir.join("ready"), b"")?;
    Ok(())
}

/// s3s-fs's credentials and bucket in the bench.
const S3_KEYS: (&str, &str) = ("COVEBENCHKEY", "cove-bench-secret-key");
const S3_BUCKET: &str = "cove";

/// A running s3s-fs (a real S3 server storing objects as files), killed on drop.
struct S3sFs {
    child: std::process::Child,
    endpoint: String,
}

impl S3sFs {
    /// Starts `bin` on a free port serving the buckets under `root`.
    fn start(bin: &Path, root: &Path) -> Result<S3sFs, BenchError> {
        std::fs::create_dir_all(root.join(S3_BUCKET))?;
        let addr = server::free_port()?;
        let log = std::fs::File::create(root.with_extension("log"))?;
        let mut child = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--access-key", S3_KEYS.0, "--secret-key", S3_KEYS.1])
            .arg(root)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start s3s-fs: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::Setup(format!("s3s-fs exited during start-up ({status})")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(BenchError::Setup("s3s-fs did not listen within 30 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(S3sFs { child, endpoint: format!("http://{addr}") })
    }

    /// Cove's config on this bucket. The lease settles in 100 ms (2 s by
    /// default on shared stores), so the GC and retention figures are the
    /// runs' own.
    fn cove_config(&self) -> String {
        format!(
            "[storage]\nkind = \"s3\"\nbucket = \"{S3_BUCKET}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\nprefix = \"scale\"\n\
             [gc]\nlease_settle = \"100ms\"\n",
            self.endpoint, S3_KEYS.0, S3_KEYS.1
        )
    }
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every bucket request Cove counted so far (`cove_storage_requests_total`).
async fn store_requests(reg: &Registry, base: &str) -> Result<f64, BenchError> {
    let url = format!("{base}/metrics");
    let resp = reg.send(Method::GET, &url, &[], empty()).await?;
    let bytes = resp.into_body().collect().await.map_err(|e| BenchError::Http(format!("{url}: {e}")))?.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("cove_storage_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    if !text.contains("cove_storage_requests_total{") {
        return Err(BenchError::Check("/metrics has no cove_storage_requests_total".into()));
    }
    Ok(total)
}

/// `POST path` (a GC or retention dry run): its time in ms and the bucket
/// requests its report gives (`store_requests`, all kinds).
async fn dry_run(reg: &Registry, url: &str) -> Result<(f64, f64), BenchError> {
    let start = Instant::now();
    let resp = reg.send(Method::POST, url, &[("content-length", "0")], empty()).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.map_err(|e| BenchError::Http(format!("{url}: {e}")))?.to_bytes();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if parts.status != StatusCode::OK {
        return Err(BenchError::Check(format!("{url}: {}", parts.status)));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| BenchError::Check(format!("{url}: not JSON: {e}")))?;
    // GC's report, or the retention job's (its run under `retention`).
    let counts = v.get("store_requests").or_else(|| v.get("retention").and_then(|r| r.get("store_requests")));
    let total = counts
        .and_then(|c| c.as_object())
        .map(|o| o.values().filter_map(|n| n.as_f64()).sum())
        .ok_or_else(|| BenchError::Check(format!("{url}: no store_requests in the report")))?;
    Ok((ms, total))
}

/// The scale workload on object storage (s3s-fs): a smaller store built by
/// pushing through Cove (kept in `base/scale-s3-N-T/`), then the index's
/// sweep, catalog and tag pages and GC and retention dry runs, each with
/// the bucket requests it made.
pub(crate) async fn scale_s3(s3s_fs: &Path, bins: &Binaries, base: &Path, plan: &Plan) -> Result<String, BenchError> {
    let (repos, tags) = (plan.scale_s3_repos, plan.scale_s3_tags);
    let dir = base.join(format!("scale-s3-{repos}-{tags}"));
    let image = Image::new(4, vec![Blob::from_bytes(Bytes::from_static(b"a tiny layer for the scale store"))]);
    if !dir.join("ready").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let s3 = S3sFs::start(s3s_fs, &dir.join("s3"))?;
        build_through(bins, &dir.join("cove"), &s3.cove_config(), &image, repos, tags).await?;
        drop(s3);
        // The build's change records (one per write, kept 10 minutes by
        // their writer) would have the next 5 minutes' GC runs relist every
        // repository: measure the store as it is once they are gone.
        // s3s-fs keeps each object as a file under <root>/<bucket>/<key>.
        match std::fs::remove_dir_all(dir.join("s3").join(S3_BUCKET).join("scale/_shared/repo-changes")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        std::fs::write(dir.join("ready"), b"")?;
    }
    let s3 = S3sFs::start(s3s_fs, &dir.join("s3"))?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scale on s3s-fs: {repos} repositories and {tags} tags in one repository, object storage (Cove only; pages: median of {REPEAT} requests, store requests per request)"
    );
    let (cove, t) = Server::start(Kind::Cove, bins, &dir.join("cove"), &s3.cove_config())?;
    row(&mut out, "start-up (spawn until /v2/ answers)", t.as_secs_f64() * 1e3, "ms", Some(100.0));
    let swept = wait_for_sweep(&cove.log, Duration::from_secs(600)).await;
    row(&mut out, "repository index ready after start (background sweep)", swept.as_secs_f64() * 1e3, "ms", None);
    let reg = Registry::new(cove.base(), "");
    let b = cove.base();
    // What one scrape of /metrics costs in bucket requests (it lists the
    // open uploads), to leave out of the figures.
    let s0 = store_requests(&reg, &b).await?;
    let _ = writeln!(out, "  {:<58} {:>10}", "bucket requests by start-up and the index's sweep", fmt_num(s0));
    let scrape = store_requests(&reg, &b).await? - s0;
    let mut all: Vec<String> = (0..repos).map(repo_name).chain(["tags/many".to_owned()]).collect();
    all.sort();
    let mid = repo_name(repos / 2);
    let after_mid = all.len() - all.iter().position(|n| *n == mid).unwrap_or(0) - 1;
    let mid_tag = tag_name(tags / 2);
    let pages: Vec<(&str, String, usize)> = vec![
        ("_catalog?n=100, first page", format!("{b}/v2/_catalog?n=100"), 100.min(all.len())),
        ("_catalog?n=100, middle page", format!("{b}/v2/_catalog?n=100&last={mid}"), 100.min(after_mid)),
        (FIRST_TAG_PAGE, format!("{b}/v2/tags/many/tags/list?n=100"), 100.min(tags)),
        ("tags/list?n=100, first page", format!("{b}/v2/tags/many/tags/list?n=100"), 100.min(tags)),
        (
            "tags/list?n=100, middle page",
            format!("{b}/v2/tags/many/tags/list?n=100&last={mid_tag}"),
            100.min(tags - tags / 2 - 1),
        ),
    ];
    for (label, url, want) in &pages {
        let before = store_requests(&reg, &b).await?;
        let repeat = repeats(label);
        let ms = timed(&reg, Method::GET, url, repeat, |body| check_page(body, *want)).await?;
        let used = store_requests(&reg, &b).await? - before - scrape;
        row(&mut out, label, ms, "ms", target(label, 50.0));
        row(&mut out, &format!("{label}: bucket requests"), (used / repeat as f64).max(0.0), "", None);
    }
    let runs = [("GC dry run", "/admin/gc?dry_run=true"), ("retention dry run", "/admin/retention?dry_run=true")];
    for (when, push) in [("first run", false), ("nothing changed since", false), ("after one push", true)] {
        if push {
            reg.push_image("org00/pushed-now", "latest", &image).await?;
        }
        for (label, path) in runs {
            let (ms, requests) = dry_run(&reg, &format!("{b}{path}")).await?;
            row(&mut out, &format!("{label}, {when}"), ms, "ms", None);
            row(&mut out, &format!("{label}, {when}: bucket requests"), requests, "", None);
        }
    }
    if let Some(k) = server::rss_kib(cove.pid) {
        row(&mut out, "RSS after all of the above", k as f64 / 1024.0, "MiB", Some(64.0));
    }
    drop(cove);
    out.push('\n');
    Ok(out)
}

/// Pushes `repos` one-image repositories and `tags` tags of one repository
/// through a Cove started in `dir` with `config` (8 at a time).
async fn build_through(
    bins: &Binaries,
    dir: &Path,
    config: &str,
    image: &Image,
    repos: usize,
    tags: usize,
) -> Result<(), BenchError> {
    eprintln!("building the s3s-fs scale store: {repos} repositories, {tags} tags…");
    let (s, _) = Server::start(Kind::Cove, bins, dir, config)?;
    let reg = Registry::new(s.base(), "");
    reg.push_image(&repo_name(0), "latest", image).await?;
    let reg = &reg;
    let pushes = (1..repos).map(|i| async move { reg.push_image(&repo_name(i), "latest", image).await });
    let mut pending = futures::stream::iter(pushes).buffer_unordered(8);
    while let Some(r) = pending.next().await {
        r?;
    }
    reg.push_image("tags/many", &tag_name(0), image).await?;
    let tagged = (1..tags).map(|i| async move { reg.put_manifest("tags/many", &tag_name(i), image).await });
    let mut pending = futures::stream::iter(tagged).buffer_unordered(8);
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(())
}
