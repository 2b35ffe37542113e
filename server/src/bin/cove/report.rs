//! What the CLI prints: reports of GC, scrub and retention runs, the status
//! table, and progress lines on stderr.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Instant;

use cove_core::gc::GcReport;
use cove_core::scrub::ScrubReport;
use cove_server::jobs::retention::RunReport;

/// The maintenance lease line of `cove status` (empty for servers without one).
fn format_lease(l: &serde_json::Value) -> String {
    if l.is_null() {
        return String::new();
    }
    if let Some(e) = l["error"].as_str() {
        return format!("gc/retention lease: unknown ({e})\n");
    }
    let epoch = l["epoch"].as_u64().unwrap_or(0);
    let here = if l["held_here"].as_bool() == Some(true) { ", this replica" } else { "" };
    match (l["holder"].as_str(), l["last_holder"].as_str()) {
        (Some(h), _) => format!(
            "gc/retention lease: held by {h} (epoch {epoch}{here}), expires {} (in {:.1}s)\n",
            l["expires_at"].as_str().unwrap_or("?"),
            l["expires_in_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
        ),
        (None, Some(last)) => format!("gc/retention lease: free (last held by {last}, epoch {epoch})\n"),
        (None, None) => "gc/retention lease: free (never taken)\n".to_owned(),
    }
}

/// Renders `/admin/status` JSON as a summary line, the maintenance lease
/// and one row per upstream.
pub fn format_status(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let mut out = String::new();
    let _ = write!(
        out,
        "{}: up {}s, storage {}",
        v["replica"].as_str().unwrap_or("?"),
        v["uptime_seconds"].as_u64().unwrap_or(0),
        v["storage"].as_str().unwrap_or("?")
    );
    let space = &v["storage_space"];
    if let (Some(avail), Some(floor)) = (space["available"].as_u64(), space["min_free"].as_u64()) {
        let _ = write!(out, ", {} free (min_free {})", mib(avail), mib(floor));
        if space["low"].as_bool() == Some(true) {
            out.push_str(" LOW FREE SPACE: pushes are refused");
        }
    }
    if let Some(n) = v["storage_full_total"].as_u64().filter(|n| *n > 0) {
        let _ = write!(out, ", {n} writes refused (storage full)");
    }
    match &v["last_gc"] {
        serde_json::Value::Null => out.push_str(", no garbage collection yet"),
        g if g["ok"].as_bool() == Some(true) => {
            let _ = write!(
                out,
                ", last gc removed {} blobs ({})",
                g["blobs_removed"].as_u64().unwrap_or(0),
                mib(g["bytes_freed"].as_u64().unwrap_or(0))
            );
        }
        g => {
            let _ = write!(out, ", last gc failed: {}", g["error"].as_str().unwrap_or("?"));
        }
    }
    out.push('\n');
    out.push_str(&format_lease(&v["lease"]));
    let rows = v["upstreams"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        out.push_str("no upstreams configured\n");
        return out;
    }
    let mut table = vec![[
        "UPSTREAM",
        "REACHABLE",
        "HIT RATE",
        "HITS",
        "MISSES",
        "STALE",
        "ERRORS",
        "429s",
        "RATE LIMIT",
        "SAVED",
        "CACHED",
        "LAST ERROR",
    ]
    .map(String::from)];
    for u in &rows {
        let n = |k: &str| u[k].as_u64().unwrap_or(0).to_string();
        let reachable = match (u["reachable"].as_bool(), u["probe_ms"].as_u64(), u["unhealthy_since"].as_str()) {
            (_, _, Some(since)) => format!("NO: not answering since {since}, cache only"),
            (Some(true), Some(ms), None) => format!("yes ({ms} ms)"),
            _ => format!("NO: {}", u["probe_error"].as_str().unwrap_or("?")),
        };
        let hit_rate = u["hit_rate"].as_f64().map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        // `76/100 left`, and `LOW` once under the floor (tags not revalidated).
        let ratelimit = match (u["ratelimit"]["remaining"].as_u64(), u["ratelimit"]["limit"].as_u64()) {
            (Some(rem), Some(lim)) if u["headroom_low"].as_bool() == Some(true) => {
                format!("{rem}/{lim} left, LOW (< {}): cache only for cached tags", n("ratelimit_floor"))
            }
            (Some(rem), Some(lim)) => format!("{rem}/{lim} left"),
            _ => "-".to_owned(),
        };
        let cached = u["cache_bytes"].as_u64().map_or("-".to_owned(), mib);
        let last_error = match (u["last_error"].as_str(), u["last_error_at"].as_str()) {
            (Some(e), Some(at)) => format!("{at}: {e}"),
            (Some(e), None) => e.to_owned(),
            _ => "-".to_owned(),
        };
        table.push([
            u["host"].as_str().unwrap_or("?").to_owned(),
            reachable,
            hit_rate,
            n("hits"),
            n("misses"),
            n("stale"),
            n("upstream_errors"),
            n("rate_limited"),
            ratelimit,
            mib(u["bytes_saved"].as_u64().unwrap_or(0)),
            cached,
            last_error,
        ]);
    }
    let widths: Vec<usize> = (0..table[0].len()).map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One line per prefetch event, as it happens.
pub fn print_prefetch_event(e: &cove_core::registry::prefetch::PrefetchEvent) {
    use cove_core::registry::prefetch::PrefetchEvent as E;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    match e {
        E::Manifest { repository, reference, digest, cache } => {
            let at = if reference.starts_with("sha256:") { "@" } else { ":" };
            if reference == digest {
                println!("{repository}@{digest} ({cache})");
            } else {
                println!("{repository}{at}{reference} -> {digest} ({cache})");
            }
        }
        E::Blob { digest, size, fetched: true } => println!("  blob {digest} {} fetched", mib(*size)),
        E::Blob { digest, size, fetched: false } => println!("  blob {digest} {} already cached", mib(*size)),
        E::Error { repository, reference, message } => println!("FAILED {repository} {reference}: {message}"),
        E::Paused { reason, .. } => println!("PAUSED: {reason}"),
    }
}

/// The totals of a prefetch; failure when anything failed or it paused.
pub fn print_prefetch(r: &cove_core::registry::prefetch::PrefetchReport) -> ExitCode {
    println!(
        "prefetch: {} images, {} manifests, {} blobs fetched ({:.1} MiB), {} already cached, {} errors{}",
        r.images,
        r.manifests,
        r.blobs_fetched,
        r.bytes_fetched as f64 / 1048576.0,
        r.blobs_cached,
        r.errors,
        if r.paused { ", paused (rate-limit headroom)" } else { "" }
    );
    if r.errors > 0 || r.paused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn print_gc(r: &GcReport) -> ExitCode {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for (d, size) in &r.blobs_removed {
        println!("{verb} blob {d} ({size} bytes)");
    }
    for m in &r.manifests_removed {
        println!("{verb} manifest {m}");
    }
    for u in &r.uploads_removed {
        println!("{verb} upload session {u}");
    }
    println!(
        "{}: {} blobs ({:.1} MiB), {} manifests, {} upload sessions; {} unreferenced blobs kept as recent; \
         scanned {} repositories, {} manifests, {} blobs in {} ms",
        if r.dry_run { "dry run" } else { "garbage collection" },
        r.blobs_removed.len(),
        r.bytes_freed as f64 / 1048576.0,
        r.manifests_removed.len(),
        r.uploads_removed.len(),
        r.blobs_kept_recent,
        r.repositories,
        r.manifests,
        r.blobs,
        r.duration_ms
    );
    ExitCode::SUCCESS
}

pub fn print_scrub(r: &ScrubReport) -> ExitCode {
    for c in &r.corrupt {
        let place = c.repository.as_deref().map(|r| format!(" in {r}")).unwrap_or_default();
        let q = c.quarantined_to.as_ref().map(|p| format!("; moved to {}", p.display())).unwrap_or_default();
        println!("CORRUPT {} {}{place}: content is {}{q}", c.kind, c.digest, c.found);
    }
    println!(
        "scrub: {} blobs and {} manifests verified ({:.1} MiB) in {} ms; {} corrupt",
        r.blobs,
        r.manifests,
        r.bytes as f64 / 1048576.0,
        r.duration_ms,
        r.corrupt.len()
    );
    if r.corrupt.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints a run report for `cove retention`.
pub fn print_retention(r: &RunReport) -> ExitCode {
    let dry = r.retention.dry_run;
    let verb = if dry { "would evict" } else { "evicted" };
    for e in &r.retention.evicted {
        println!(
            "{verb} {}@{} (tags: {}; {} bytes; idle {}s; {})",
            e.repository,
            e.digest,
            if e.tags.is_empty() { "none".to_owned() } else { e.tags.join(", ") },
            e.bytes,
            e.idle_seconds,
            e.reason
        );
    }
    let verb = if dry { "would remove" } else { "removed" };
    let evicted_tags: HashSet<String> =
        r.retention.evicted.iter().flat_map(|e| e.tags.iter().map(move |t| format!("{}:{t}", e.repository))).collect();
    for t in r.retention.tags_removed.iter().filter(|t| !evicted_tags.contains(*t)) {
        println!("{verb} tag {t}");
    }
    for m in &r.retention.manifests_removed {
        println!("{verb} manifest {m}");
    }
    for u in &r.retention.upstreams {
        println!(
            "upstream {}: {} images, {:.1} MiB cached (was {:.1} MiB{}), {} evicted",
            u.host,
            u.images,
            u.bytes as f64 / 1048576.0,
            u.bytes_before as f64 / 1048576.0,
            u.max_size.map(|m| format!(", limit {:.1} MiB", m as f64 / 1048576.0)).unwrap_or_default(),
            u.evicted_images
        );
    }
    let swept = r.gc.as_ref().map_or(0, |g| g.blobs_removed.len());
    println!(
        "{}: {} images, {} tags, {} manifests; {:.1} MiB {}; {} blobs swept; {} kept as in use; {} ms",
        if dry { "retention dry run" } else { "retention" },
        r.retention.evicted.len(),
        r.retention.tags_removed.len(),
        r.retention.manifests_removed.len(),
        r.retention.bytes_freed as f64 / 1048576.0,
        if dry { "would be freed" } else { "freed" },
        swept,
        r.retention.kept_in_use,
        r.retention.duration_ms
    );
    ExitCode::SUCCESS
}

/// Progress on stderr: on a terminal one line redrawn at most every 100 ms
/// (and always when `done`), otherwise the lines `keep` selects, one each.
pub struct Progress {
    tty: bool,
    last: Instant,
}

impl Progress {
    /// Progress lines, redrawn in place when stderr is a terminal.
    pub fn new() -> Progress {
        Progress { tty: std::io::IsTerminal::is_terminal(&std::io::stderr()), last: Instant::now() }
    }

    /// Shows `line()` unless a terminal was redrawn less than 100 ms ago
    /// (the last line, `done`, always shows) or, off a terminal, `keep` is false.
    pub fn show(&mut self, done: bool, keep: bool, line: impl FnOnce() -> String) {
        if self.tty && self.last.elapsed().as_millis() < 100 && !done {
            return;
        }
        self.last = Instant::now();
        let line = line();
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else if keep {
            eprintln!("{line}");
        }
    }

    /// Ends the redrawn line on a terminal.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
