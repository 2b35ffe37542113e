//! Cache retention per upstream and tag retention per repository pattern
//! (issue 7): configuration, the schedule, the admin endpoint's runs, the
//! activity log's persistence and the state a config reload replaces.
//!
//! ```toml
//! [retention]
//! interval = "1h"            # time between scheduled runs (default 1h)
//!
//! [retention.upstreams."docker.io"]   # key: a host of [upstreams]
//! max_size = "20GiB"         # cache size limit, least-recently-pulled first
//! max_age = "30d"            # evict images not pulled for this long
//!
//! [[retention.tags]]         # any repository, private ones included
//! repository = "myorg/ci-*"  # pattern syntax of [[access]] rules
//! keep_last = 10             # the 10 most recently pushed tags stay
//! keep_pulled_within = "14d" # and every tag pulled within 14 days
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::metrics::{ResultLabels, UpstreamLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use cove_core::gc::{self, GcError, GcOptions, GcReport};
use cove_core::retention::{self as core_retention, ActivityLog, BlobSizes, RetentionOptions, RetentionReport};
use cove_core::{Registry, RepoName};

use crate::app::App;
use crate::config::{parse_duration, Config};
use crate::ops::Ops;

/// `[retention]`: cache retention per upstream and tag retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Run retention on a schedule. Default: `true` on the filesystem
    /// backend, `false` on object storage (same reasoning as `[gc] enabled`:
    /// one process must own the storage).
    pub enabled: Option<bool>,
    /// Time between scheduled runs; the first runs one interval after start.
    /// Default `"1h"`.
    pub interval: String,
    /// `[retention.upstreams."HOST"]`: cache limits of one upstream.
    pub upstreams: BTreeMap<String, UpstreamRetention>,
    /// `[[retention.tags]]`: tag retention by repository pattern.
    pub tags: Vec<TagRetention>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { enabled: None, interval: "1h".into(), upstreams: BTreeMap::new(), tags: Vec::new() }
    }
}

/// `[retention.upstreams."HOST"]`: at least one of the two limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamRetention {
    /// Largest total size of this upstream's cache (`"20GiB"`, `"500MB"`);
    /// least-recently-pulled images are evicted until it fits.
    pub max_size: Option<String>,
    /// Images not pulled for longer than this are evicted (`"30d"`).
    pub max_age: Option<String>,
}

/// `[[retention.tags]]`: at least one of `keep_last`, `keep_pulled_within`;
/// a tag stays if either keeps it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRetention {
    /// Repository pattern, as in `[[access]]` (`myorg/**`, `myorg/ci-*`).
    pub repository: String,
    /// Keep this many most recently pushed tags per repository.
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// Keep every tag pulled (or pushed) within this duration.
    #[serde(default)]
    pub keep_pulled_within: Option<String>,
}

/// Parses sizes like `20GiB`, `500MB`, `1.5G`, `1024` (bytes). `K/M/G/T`
/// and `KiB…TiB` are powers of 1024, `KB…TB` powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a size like 500MB, 20GiB or 1T");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Checks `[retention]`; every problem names its key.
pub fn validate(config: &Config, upstream_hosts: &[String]) -> Vec<String> {
    let r = &config.retention;
    let mut problems = Vec::new();
    match parse_duration(&r.interval) {
        Ok(d) if d.is_zero() => problems.push("retention.interval: must be longer than 0s".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("retention.interval: {e}")),
    }
    for (host, u) in &r.upstreams {
        let key = format!("retention.upstreams.\"{host}\"");
        if !upstream_hosts.iter().any(|h| h == host) {
            problems.push(format!(
                "{key}: {host:?} is not a configured (enabled) upstream; configured: {}",
                if upstream_hosts.is_empty() { "none".to_owned() } else { upstream_hosts.join(", ") }
            ));
        }
        if u.max_size.is_none() && u.max_age.is_none() {
            problems.push(format!("{key}: set max_size and/or max_age"));
        }
        if let Some(s) = &u.max_size {
            if let Err(e) = parse_size(s) {
                problems.push(format!("{key}.max_size: {e}"));
            }
        }
        if let Some(s) = &u.max_age {
            if let Err(e) = parse_duration(s) {
                problems.push(format!("{key}.max_age: {e}"));
            }
        }
    }
    for (i, t) in r.tags.iter().enumerate() {
        let key = format!("retention.tags[{i}]");
        if let Err(e) = cove_auth::RepoPattern::parse(&t.repository) {
            problems.push(format!("{key}.repository: {e}"));
        }
        if t.keep_last.is_none() && t.keep_pulled_within.is_none() {
            problems.push(format!("{key}: set keep_last and/or keep_pulled_within"));
        }
        if let Some(s) = &t.keep_pulled_within {
            if let Err(e) = parse_duration(s) {
                problems.push(format!("{key}.keep_pulled_within: {e}"));
            }
        }
    }
    problems
}

/// Retention settings derived from a validated config.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub enabled: bool,
    pub interval: Duration,
    /// Per upstream host: (max_size bytes, max_age).
    pub upstreams: BTreeMap<String, (Option<u64>, Option<Duration>)>,
    /// Tag policies in config order: (pattern, keep_last, keep_pulled_within).
    pub tags: Vec<(cove_auth::RepoPattern, Option<usize>, Option<Duration>)>,
    /// `[gc] grace`: nothing used more recently is evicted.
    pub grace: Duration,
    /// `[gc] untagged` and `storage.upload_ttl`, for the blob sweep.
    pub gc_untagged: bool,
    pub upload_ttl: Option<Duration>,
}

impl RetentionSettings {
    /// Reads the settings of a config that passed validation.
    pub fn from_config(config: &Config) -> RetentionSettings {
        let r = &config.retention;
        RetentionSettings {
            enabled: r.enabled.unwrap_or(config.storage.kind == crate::config::StorageKind::Filesystem),
            interval: parse_duration(&r.interval).unwrap_or(Duration::from_secs(3600)),
            upstreams: r
                .upstreams
                .iter()
                .map(|(h, u)| {
                    let size = u.max_size.as_deref().and_then(|s| parse_size(s).ok());
                    let age = u.max_age.as_deref().and_then(|s| parse_duration(s).ok());
                    (h.clone(), (size, age))
                })
                .collect(),
            tags: r
                .tags
                .iter()
                .filter_map(|t| {
                    let p = cove_auth::RepoPattern::parse(&t.repository).ok()?;
                    Some((p, t.keep_last, t.keep_pulled_within.as_deref().and_then(|s| parse_duration(s).ok())))
                })
                .collect(),
            grace: parse_duration(&config.gc.grace).unwrap_or(Duration::from_secs(3600)),
            gc_untagged: config.gc.untagged,
            upload_ttl: parse_duration(&config.storage.upload_ttl).ok(),
        }
    }

    fn options(&self, dry_run: bool) -> RetentionOptions {
        RetentionOptions {
            upstreams: self
                .upstreams
                .iter()
                .map(|(host, (max_size, max_age))| core_retention::UpstreamPolicy {
                    host: host.clone(),
                    max_size: *max_size,
                    max_age: *max_age,
                })
                .collect(),
            tags: self
                .tags
                .iter()
                .map(|(pattern, keep_last, within)| {
                    let p = pattern.clone();
                    core_retention::TagPolicy {
                        pattern: format!("{pattern:?}"),
                        matches: Box::new(move |r: &RepoName| p.matches(r)),
                        keep_last: *keep_last,
                        keep_pulled_within: *within,
                    }
                })
                .collect(),
            grace: self.grace,
            dry_run,
        }
    }
}

/// The outcome of `POST /admin/retention`: the retention run and the blob
/// sweep that followed it (none in a dry run or when nothing was removed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub retention: RetentionReport,
    pub gc: Option<GcReport>,
}

/// Metrics of retention runs (registered with the others in `/metrics`).
#[derive(Default)]
pub struct RetentionMetrics {
    runs: Family<ResultLabels, Counter>,
    evicted_images: Family<UpstreamLabels, Counter>,
    evicted_bytes: Family<UpstreamLabels, Counter>,
    tags_removed: Counter,
    cache_bytes: Family<UpstreamLabels, Gauge>,
}

impl RetentionMetrics {
    /// Registers every retention metric in `r` (prefix `cove_`).
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register("retention_runs", "Retention runs by result (ok, dry_run, error)", self.runs.clone());
        r.register(
            "retention_evicted_images",
            "Cached images evicted by retention, by upstream",
            self.evicted_images.clone(),
        );
        r.register(
            "retention_evicted_bytes",
            "Bytes freed by cache evictions (manifests and blobs nothing else references), by upstream",
            self.evicted_bytes.clone(),
        );
        r.register("retention_tags_removed", "Tags removed by tag retention policies", self.tags_removed.clone());
        r.register(
            "cache_bytes",
            "Size of an upstream's cache (distinct blob and manifest bytes of its cached images) at the last retention run",
            self.cache_bytes.clone(),
        );
    }

    fn record(&self, result: &Result<RetentionReport, String>) {
        match result {
            Ok(r) if r.dry_run => {
                self.runs.get_or_create(&ResultLabels { result: "dry_run" }).inc();
            }
            Ok(r) => {
                self.runs.get_or_create(&ResultLabels { result: "ok" }).inc();
                for e in &r.evicted {
                    let l = UpstreamLabels { upstream: e.upstream.clone() };
                    self.evicted_images.get_or_create(&l).inc();
                    self.evicted_bytes.get_or_create(&l).inc_by(e.bytes);
                }
                let evicted_tags: usize = r.evicted.iter().map(|e| e.tags.len()).sum();
                self.tags_removed.inc_by(r.tags_removed.len().saturating_sub(evicted_tags) as u64);
                for u in &r.upstreams {
                    let l = UpstreamLabels { upstream: u.host.clone() };
                    self.cache_bytes.get_or_create(&l).set(i64::try_from(u.bytes).unwrap_or(i64::MAX));
                }
            }
            Err(_) => {
                self.runs.get_or_create(&ResultLabels { result: "error" }).inc();
            }
        }
    }
}

/// The retention state of a serving process (settings replaced on reload).
pub struct Retention {
    settings: Mutex<RetentionSettings>,
    activity: Arc<ActivityLog>,
    sizes: BlobSizes,
    last: Mutex<Option<(SystemTime, Result<RunReport, String>)>>,
}

/// Where the activity log lives: local scratch space even for object storage.
pub fn activity_path(config: &Config) -> PathBuf {
    config.storage.root.join("state").join("activity.json")
}

/// How often a changed activity log is written.
const SAVE_EVERY: Duration = Duration::from_secs(60);

/// Creates the retention state: loads the activity log, hooks it into the
/// registry, and starts the save loop and the schedule. Called by
/// `ops::install`.
pub fn install(app: &Arc<App>, config: &Config, ops: &Arc<Ops>) {
    let activity = Arc::new(ActivityLog::load(&activity_path(config)));
    app.registry.set_activity(activity.clone());
    let state = Arc::new(Retention {
        settings: Mutex::new(RetentionSettings::from_config(config)),
        activity: activity.clone(),
        sizes: BlobSizes::default(),
        last: Mutex::new(None),
    });
    if ops.retention.set(state.clone()).is_err() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SAVE_EVERY).await;
            if let Err(e) = activity.save().await {
                tracing::warn!(error = %e, "cannot save the activity log");
            }
        }
    });
    let (registry, ops) = (app.registry.clone(), ops.clone());
    tokio::spawn(async move {
        loop {
            // Re-read each time: a reload may change the interval.
            tokio::time::sleep(state.settings().interval).await;
            let s = state.settings();
            // Without policies a run still measures each upstream's cache
            // (cove status, cove_cache_bytes) and removes nothing.
            let upstreams = registry.cache().is_some_and(|c| !c.routes().is_empty());
            if !s.enabled || (s.upstreams.is_empty() && s.tags.is_empty() && !upstreams) {
                continue;
            }
            if let Err(e) = run(&ops, &registry, false).await {
                tracing::warn!(error = %e, "scheduled retention run failed");
            }
        }
    });
}

/// Writes the activity log if it changed (at shutdown).
pub async fn flush(app: &App) {
    if let Some(state) = app.ops.get().and_then(|o| o.retention.get()) {
        match state.activity.save().await {
            Ok(true) => tracing::info!("activity log saved"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot save the activity log"),
        }
    }
}

impl Retention {
    fn settings(&self) -> RetentionSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs retention once (one run or GC at a time): evictions and tag
/// removals, then, if anything was removed, the garbage collector's sweep
/// in the same exclusive run.
pub async fn run(ops: &Ops, registry: &Registry, dry_run: bool) -> Result<RunReport, GcError> {
    let Some(state) = ops.retention.get() else {
        return Ok(RunReport::default());
    };
    let settings = state.settings();
    let cache = registry.cache().cloned();
    let upstream_of = {
        let cache = cache.clone();
        move |repo: &RepoName| -> Option<String> {
            let c = cache.as_ref()?;
            match c.route(repo) {
                cove_core::cache::Route::Cached { route, .. } => Some(route.host.clone()),
                cove_core::cache::Route::Private => None,
            }
        }
    };
    let protect = crate::ops::fetch_protect(registry);
    let storage = registry.storage().as_ref();
    let mut options = settings.options(dry_run);
    // Upstreams without a policy are measured (cache size in status and
    // metrics), never evicted.
    for route in cache.as_ref().map(|c| c.routes()).unwrap_or_default() {
        if !options.upstreams.iter().any(|p| p.host == route.host) {
            options.upstreams.push(core_retention::UpstreamPolicy { host: route.host, max_size: None, max_age: None });
        }
    }
    let running = ops.guard.lock_runs().await;
    let result =
        core_retention::run(storage, &ops.guard, &state.activity, &state.sizes, &upstream_of, &protect, &options).await;
    let result = match result {
        Ok(r) => {
            let mut out = RunReport { retention: r, gc: None };
            if !dry_run && !out.retention.manifests_removed.is_empty() {
                let opts = GcOptions {
                    grace: settings.grace,
                    untagged: settings.gc_untagged,
                    upload_ttl: settings.upload_ttl,
                    dry_run: false,
                };
                let swept = gc::collect_locked(storage, &ops.guard, &protect, &opts, &running).await;
                ops.metrics.record_gc(swept.as_ref().map_err(|_| ()));
                out.gc = Some(swept?);
            }
            Ok(out)
        }
        Err(e) => Err(e),
    };
    drop(running);
    if !dry_run {
        if let Err(e) = state.activity.save().await {
            tracing::warn!(error = %e, "cannot save the activity log");
        }
    }
    let summary = match &result {
        Ok(r) => Ok(r.retention.clone()),
        Err(e) => Err(e.to_string()),
    };
    ops.metrics.retention.record(&summary);
    let keep = match &result {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(e.to_string()),
    };
    if !dry_run {
        *state.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((SystemTime::now(), keep));
    }
    result
}

/// Runs retention on storage nobody else uses (`cove retention` with the
/// server stopped): references and the saved activity log decide.
pub async fn run_offline(
    config: &Config,
    storage: Arc<dyn cove_core::Storage>,
    dry_run: bool,
) -> Result<RunReport, String> {
    let validated = config.validate().map_err(|e| e.to_string())?;
    let hosts: Vec<String> = validated.upstreams.iter().map(|u| u.host.clone()).collect();
    let settings = RetentionSettings::from_config(config);
    let activity = ActivityLog::load(&activity_path(config));
    let guard = cove_core::gc::GcGuard::offline();
    let upstream_of = move |repo: &RepoName| -> Option<String> {
        let host = repo.first_component();
        (repo.strip_first_component().is_some() && hosts.iter().any(|h| h == host)).then(|| host.to_owned())
    };
    let sizes = BlobSizes::default();
    let r = core_retention::run(
        storage.as_ref(),
        &guard,
        &activity,
        &sizes,
        &upstream_of,
        &|_| false,
        &settings.options(dry_run),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = RunReport { retention: r, gc: None };
    if !dry_run {
        if !out.retention.manifests_removed.is_empty() {
            let opts = GcOptions {
                grace: settings.grace,
                untagged: settings.gc_untagged,
                upload_ttl: settings.upload_ttl,
                dry_run: false,
            };
            out.gc = Some(gc::collect(storage.as_ref(), &guard, &|_| false, &opts).await.map_err(|e| e.to_string())?);
        }
        activity.save().await.map_err(|e| format!("cannot save the activity log: {e}"))?;
    }
    Ok(out)
}

/// Adds the cache size per upstream (as of the last run) and the last
/// retention result to `/admin/status` JSON.
pub fn add_status(ops: &Ops, status: &mut serde_json::Value) {
    let Some(state) = ops.retention.get() else {
        return;
    };
    let last = state.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let usage = match &last {
        Some((_, Ok(r))) => r.retention.upstreams.clone(),
        _ => Vec::new(),
    };
    if let Some(ups) = status.get_mut("upstreams").and_then(|u| u.as_array_mut()) {
        for u in ups {
            let host = u.get("host").and_then(|h| h.as_str()).unwrap_or_default().to_owned();
            if let (Some(obj), Some(x)) = (u.as_object_mut(), usage.iter().find(|x| x.host == host)) {
                obj.insert("cache_bytes".into(), x.bytes.into());
                obj.insert("cached_images".into(), x.images.into());
                obj.insert("max_size".into(), x.max_size.into());
            }
        }
    }
    let last_json = match last {
        None => serde_json::Value::Null,
        Some((at, Ok(r))) => serde_json::json!({
            "ok": true,
            "at": humantime::format_rfc3339_seconds(at).to_string(),
            "evicted_images": r.retention.evicted.len(),
            "tags_removed": r.retention.tags_removed.len(),
            "manifests_removed": r.retention.manifests_removed.len(),
            "bytes_freed": r.retention.bytes_freed,
            "kept_in_use": r.retention.kept_in_use,
            "blobs_removed": r.gc.as_ref().map_or(0, |g| g.blobs_removed.len()),
            "duration_ms": r.retention.duration_ms,
        }),
        Some((at, Err(e))) => serde_json::json!({
            "ok": false, "at": humantime::format_rfc3339_seconds(at).to_string(), "error": e,
        }),
    };
    let (manifests, tags) = state.activity.len();
    if let Some(obj) = status.as_object_mut() {
        obj.insert("last_retention".into(), last_json);
        obj.insert("activity_log".into(), serde_json::json!({ "manifests": manifests, "tags": tags }));
    }
}

/// Prints a run report for `cove retention`.
pub fn print_report(r: &RunReport) -> std::process::ExitCode {
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
    std::process::ExitCode::SUCCESS
}

/// Replaces the retention settings of a running server with those of a
/// new, already validated `config` (SIGHUP reload). A no-op before start-up
/// finished.
pub fn reload(app: &App, config: &Config) {
    let Some(state) = app.ops.get().and_then(|o| o.retention.get()) else {
        return;
    };
    let new = RetentionSettings::from_config(config);
    tracing::info!(
        enabled = new.enabled,
        upstreams = new.upstreams.len(),
        tag_policies = new.tags.len(),
        "retention settings reloaded"
    );
    *state.settings.lock().unwrap_or_else(|p| p.into_inner()) = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_keys() {
        let c = Config::parse(
            "[retention]\ninterval = \"x\"\n[retention.upstreams.\"a.io\"]\nmax_size = \"1Q\"\n\
             [retention.upstreams.\"b.io\"]\nmax_age = \"1d\"\n[[retention.tags]]\nrepository = \"a//b\"\n",
        )
        .expect("parses");
        let p = validate(&c, &["a.io".to_owned()]).join("\n");
        for key in [
            "retention.interval",
            "retention.upstreams.\"a.io\".max_size",
            "retention.upstreams.\"b.io\": \"b.io\" is not a configured",
            "retention.tags[0].repository",
            "retention.tags[0]: set keep_last",
        ] {
            assert!(p.contains(key), "{p} names {key}");
        }
        let c = Config::parse(
            "[retention.upstreams.\"a.io\"]\nmax_size = \"2GiB\"\nmax_age = \"30d\"\n\
             [[retention.tags]]\nrepository = \"ci/*\"\nkeep_last = 3\n",
        )
        .expect("parses");
        assert!(validate(&c, &["a.io".to_owned()]).is_empty());
        let s = RetentionSettings::from_config(&c);
        assert_eq!(s.upstreams.get("a.io"), Some(&(Some(2 << 30), Some(Duration::from_secs(30 * 86400)))));
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert!(s.enabled, "on by default for the filesystem backend");
        let opts = s.options(true);
        assert!((opts.tags[0].matches)(&"ci/app".parse().expect("repo")));
        assert!(!(opts.tags[0].matches)(&"ci/app/x".parse().expect("repo")));
        assert!(Config::parse("[retention]\nbogus = 1\n").expect_err("unknown key").contains("bogus"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size(" 2 G "), Ok(2 << 30));
        for bad in ["", "GiB", "12 parsecs", "-1G", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
