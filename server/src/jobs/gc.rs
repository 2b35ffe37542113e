//! Online garbage collection: the scheduled runs and the ones the admin
//! endpoint asks for, one at a time, while the server keeps serving; among
//! replicas one at a time too, under the maintenance lease
//! ([`crate::jobs::maintenance`]).

use std::sync::{Arc, Mutex};

use cove_core::gc::{self, GcGuard, GcReport, GuardedStorage};
use cove_core::lease::LeaseKeeper;
use cove_core::storage::RepoIndex;
use cove_core::{Registry, Storage};
use tokio::task::JoinHandle;

use crate::config::GcSettings;
use crate::jobs::maintenance::{self, JobError};
use crate::metrics::Metrics;

/// Wraps storage so garbage collection can run while serving, and so every
/// manifest write keeps `index` current. Call before the registry is built,
/// then give the guard to [`GarbageCollector::new`].
pub fn guard_storage(storage: Arc<dyn Storage>, index: Arc<RepoIndex>) -> (Arc<dyn Storage>, Arc<GcGuard>) {
    let guard = GcGuard::new();
    (Arc::new(GuardedStorage::new(storage, guard.clone()).with_index(index)), guard)
}

/// What garbage collection and retention keep whatever references say:
/// blobs with an upstream fetch in flight when the run started, or when the
/// run looks at them (fetches that start later are pinned by the guard).
pub fn fetch_protect(registry: &Registry) -> impl Fn(&cove_core::Digest) -> bool + Send + Sync {
    let cache = registry.cache().cloned();
    let snapshot: std::collections::HashSet<cove_core::Digest> =
        cache.as_ref().map(|c| c.inflight_digests().into_iter().collect()).unwrap_or_default();
    move |d| snapshot.contains(d) || cache.as_ref().is_some_and(|c| c.is_fetching(d))
}

/// The garbage collector of a serving process.
pub struct GarbageCollector {
    registry: Registry,
    guard: Arc<GcGuard>,
    metrics: Arc<Metrics>,
    keeper: Arc<LeaseKeeper>,
    /// Replaced by a config reload; each run reads it afresh.
    settings: Mutex<GcSettings>,
    /// The last run that was not a dry run (for `/admin/status`).
    last: Mutex<Option<Result<GcReport, String>>>,
}

impl GarbageCollector {
    /// `registry` must run on the storage [`guard_storage`] returned with
    /// `guard`; runs that delete hold the lease `keeper` keeps.
    pub fn new(
        registry: Registry,
        guard: Arc<GcGuard>,
        metrics: Arc<Metrics>,
        settings: GcSettings,
        keeper: Arc<LeaseKeeper>,
    ) -> Self {
        GarbageCollector { registry, guard, metrics, keeper, settings: Mutex::new(settings), last: Mutex::new(None) }
    }

    /// The maintenance lease's keeper (shared with retention).
    pub fn keeper(&self) -> &Arc<LeaseKeeper> {
        &self.keeper
    }

    fn settings(&self) -> GcSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the GC settings (config reload); the next scheduled run uses them.
    pub fn set_settings(&self, settings: GcSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Runs one garbage collection over the registry's storage; unless it
    /// is a dry run, under the maintenance lease (refused while another
    /// replica holds it).
    pub async fn run(&self, dry_run: bool) -> Result<GcReport, JobError> {
        let settings = self.settings();
        let mut options = settings.options(dry_run);
        let hold = if dry_run { None } else { Some(self.keeper.hold().await?) };
        options.fence = hold.as_ref().map(maintenance::fence);
        let protect = fetch_protect(&self.registry);
        let result = gc::collect(self.registry.storage().as_ref(), &self.guard, &protect, &options)
            .await
            .map_err(JobError::from);
        if let Some(h) = &hold {
            tracing::debug!(epoch = h.epoch(), "garbage collection ran under the maintenance lease");
            self.keeper.done(h).await;
        }
        self.metrics.record_gc(result.as_ref().map_err(|_| ()));
        if !dry_run {
            let keep = match &result {
                Ok(r) => Ok(r.clone()),
                Err(e) => Err(e.to_string()),
            };
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(keep);
        }
        result
    }

    /// The outcome of the last run that was not a dry run.
    pub fn last_run(&self) -> Option<Result<GcReport, String>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs garbage collection every `[gc] interval`. Always scheduled: each
    /// run checks `[gc] enabled`, which a reload may change.
    pub fn spawn_schedule(self: &Arc<Self>) -> JoinHandle<()> {
        let gc = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(gc.settings().interval).await;
                if !gc.settings().enabled {
                    continue;
                }
                match gc.run(false).await {
                    Err(e) if e.is_busy() => tracing::debug!(reason = %e, "scheduled garbage collection skipped"),
                    Err(e) => tracing::warn!(error = %e, "scheduled garbage collection failed"),
                    Ok(_) => {}
                }
            }
        })
    }
}
