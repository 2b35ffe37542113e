//! Cache retention per upstream and tag retention per repository pattern:
//! the scheduled runs, the ones the admin endpoint asks for, and offline
//! runs (`cove retention` with the server stopped). The policies are
//! `[retention]` (see [`crate::config::RetentionConfig`]). Runs that
//! delete hold the maintenance lease ([`crate::jobs::maintenance`]); on
//! shared storage every run first merges the other replicas' activity
//! records ([`crate::jobs::activity::SharedActivity`]).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use cove_core::gc::{self, GcGuard, GcReport};
use cove_core::lease::{FenceRef, LeaseKeeper};
use cove_core::retention::{self as core_retention, ActivityLog, BlobSizes, RetentionReport};
use cove_core::{Registry, RepoName};

use crate::config::{Config, RetentionSettings};
use crate::jobs::activity::{activity_path, SharedActivity};
use crate::jobs::gc::fetch_protect;
use crate::jobs::maintenance::{self, JobError};
use crate::metrics::Metrics;

/// The outcome of `POST /admin/retention`: the retention run and the blob
/// sweep that followed it (none in a dry run or when nothing was removed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub retention: RetentionReport,
    pub gc: Option<GcReport>,
}

/// How often the schedule checks free space against storage.min_free.
const LOW_SPACE_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// The last non-dry run: when, and what it did or why it failed.
pub type LastRun = Option<(SystemTime, Result<RunReport, String>)>;

/// Retention in a serving process (settings replaced on reload).
pub struct RetentionJob {
    registry: Registry,
    guard: Arc<GcGuard>,
    metrics: Arc<Metrics>,
    settings: Mutex<RetentionSettings>,
    activity: Arc<ActivityLog>,
    /// The replicas' activity records (shared storage only).
    shared: Option<Arc<SharedActivity>>,
    keeper: Arc<LeaseKeeper>,
    sizes: BlobSizes,
    last: Mutex<LastRun>,
}

/// The shared handles of a [`RetentionJob`] besides the registry.
pub struct RetentionHandles {
    /// The garbage collector's guard: a run and a collection never overlap.
    pub guard: Arc<GcGuard>,
    pub metrics: Arc<Metrics>,
    pub activity: Arc<ActivityLog>,
    /// The replicas' activity records, on shared storage.
    pub shared: Option<Arc<SharedActivity>>,
    /// The maintenance lease's keeper (the garbage collector's).
    pub keeper: Arc<LeaseKeeper>,
}

impl RetentionJob {
    /// A job on `registry` with the handles it shares with the other jobs.
    pub fn new(registry: Registry, handles: RetentionHandles, settings: RetentionSettings) -> Self {
        let RetentionHandles { guard, metrics, activity, shared, keeper } = handles;
        RetentionJob {
            registry,
            guard,
            metrics,
            settings: Mutex::new(settings),
            activity,
            shared,
            keeper,
            sizes: BlobSizes::default(),
            last: Mutex::new(None),
        }
    }

    fn settings(&self) -> RetentionSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the settings with those of a new, validated `config`
    /// (config reload); the next run uses them.
    pub fn set_settings(&self, config: &Config) {
        let new = RetentionSettings::from_config(config);
        tracing::info!(
            enabled = new.enabled,
            upstreams = new.upstreams.len(),
            tag_policies = new.tags.len(),
            "retention settings reloaded"
        );
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = new;
    }

    /// The activity log retention decides by.
    pub fn activity(&self) -> &ActivityLog {
        &self.activity
    }

    /// The last run that was not a dry run.
    pub fn last_run(&self) -> LastRun {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs retention every `[retention] interval` (re-read each time: a
    /// reload may change it) while it is enabled and has something to do.
    pub fn spawn_schedule(self: &Arc<Self>) -> JoinHandle<()> {
        let job = self.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + job.settings().interval;
            loop {
                // Wake at the interval, or earlier when free space is below
                // storage.min_free (checked every LOW_SPACE_CHECK).
                tokio::time::sleep_until(next.min(tokio::time::Instant::now() + LOW_SPACE_CHECK)).await;
                let low = matches!(job.registry.storage().space().await, Ok(Some(s)) if s.low());
                if !low && tokio::time::Instant::now() < next {
                    continue;
                }
                next = tokio::time::Instant::now() + job.settings().interval;
                let s = job.settings();
                // Without policies a run still measures each upstream's cache
                // (cove status, cove_cache_bytes) and removes nothing.
                let upstreams = job.registry.cache().is_some_and(|c| !c.routes().is_empty());
                if !s.enabled || (s.upstreams.is_empty() && s.tags.is_empty() && !upstreams) {
                    continue;
                }
                match job.run(false).await {
                    Err(e) if e.is_busy() => tracing::debug!(reason = %e, "scheduled retention run skipped"),
                    Err(e) => tracing::warn!(error = %e, "scheduled retention run failed"),
                    Ok(_) => {}
                }
            }
        })
    }

    /// Runs retention once (one run or GC at a time): evictions and tag
    /// removals, then, if anything was removed, the garbage collector's sweep
    /// in the same exclusive run.
    pub async fn run(&self, dry_run: bool) -> Result<RunReport, JobError> {
        let settings = self.settings();
        let hold = if dry_run { None } else { Some(self.keeper.hold().await?) };
        if let Some(shared) = &self.shared {
            shared.merge_all().await;
        }
        let fence = hold.as_ref().map(maintenance::fence);
        let result = self.run_locked(&settings, dry_run, fence).await;
        if let Some(h) = &hold {
            self.keeper.done(h).await;
        }
        if !dry_run {
            if let Err(e) = self.activity.save().await {
                tracing::warn!(error = %e, "cannot save the activity log");
            }
        }
        let summary = match &result {
            Ok(r) => Ok(r.retention.clone()),
            Err(e) => Err(e.to_string()),
        };
        self.metrics.record_retention(&summary);
        if !dry_run {
            let keep = match &result {
                Ok(r) => Ok(r.clone()),
                Err(e) => Err(e.to_string()),
            };
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((SystemTime::now(), keep));
        }
        result
    }

    /// The run and its sweep, holding the guard's run lock throughout.
    async fn run_locked(
        &self,
        settings: &RetentionSettings,
        dry_run: bool,
        fence: Option<FenceRef>,
    ) -> Result<RunReport, JobError> {
        let cache = self.registry.cache().cloned();
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
        let protect = fetch_protect(&self.registry);
        let storage = self.registry.storage().as_ref();
        let mut options = settings.options(dry_run);
        options.fence = fence.clone();
        // Below the storage.min_free floor: evict cached images to get back above it.
        if let Ok(Some(space)) = storage.space().await {
            if space.low() {
                tracing::warn!(
                    available = space.available,
                    floor = space.floor,
                    "free space below storage.min_free: evicting least recently pulled cached images"
                );
                options.free_bytes = Some(space.shortfall());
            }
        }
        // Upstreams without a policy are measured (cache size in status and
        // metrics), never evicted.
        for route in cache.as_ref().map(|c| c.routes()).unwrap_or_default() {
            if !options.upstreams.iter().any(|p| p.host == route.host) {
                options.upstreams.push(core_retention::UpstreamPolicy {
                    host: route.host,
                    max_size: None,
                    max_age: None,
                });
            }
        }
        let running = self.guard.lock_runs().await;
        let r =
            core_retention::run(storage, &self.guard, &self.activity, &self.sizes, &upstream_of, &protect, &options)
                .await?;
        let mut out = RunReport { retention: r, gc: None };
        if !dry_run && !out.retention.manifests_removed.is_empty() {
            let mut sweep = settings.sweep_options();
            sweep.fence = fence;
            let swept = gc::collect_locked(storage, &self.guard, &protect, &sweep, &running).await;
            self.metrics.record_gc(swept.as_ref().map_err(|_| ()));
            out.gc = Some(swept?);
        }
        Ok(out)
    }
}

/// Runs retention on storage nobody else uses (`cove retention` with the
/// server stopped): references and the saved activity log decide.
pub async fn run_offline(
    config: &Config,
    storage: Arc<dyn cove_core::Storage>,
    dry_run: bool,
) -> Result<RunReport, String> {
    let validated = config.validate().map_err(|e| e.to_string())?;
    let hosts = validated.upstream_hosts();
    let settings = RetentionSettings::from_config(config);
    let activity = ActivityLog::load(&activity_path(config));
    let guard = GcGuard::offline();
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
