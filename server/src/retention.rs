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

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::metrics::{ResultLabels, UpstreamLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use cove_core::gc::{self, GcError, GcReport};
use cove_core::retention::{self as core_retention, ActivityLog, BlobSizes, RetentionReport};
use cove_core::{Registry, RepoName};

use crate::app::App;
use crate::config::{Config, RetentionSettings};
use crate::ops::Ops;

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
                let swept =
                    gc::collect_locked(storage, &ops.guard, &protect, &settings.sweep_options(), &running).await;
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
            let opts = settings.sweep_options();
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
