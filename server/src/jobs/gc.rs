//! Online garbage collection: the scheduled runs and the ones the admin
//! endpoint asks for, one at a time, while the server keeps serving.

use std::sync::{Arc, Mutex};

use cove_core::gc::{self, GcError, GcGuard, GcReport, GuardedStorage};
use cove_core::{Registry, Storage};
use tokio::task::JoinHandle;

use crate::config::GcSettings;
use crate::metrics::Metrics;

/// Wraps storage so garbage collection can run while serving. Call before
/// the registry is built, then give the guard to [`GarbageCollector::new`].
pub fn guard_storage(storage: Arc<dyn Storage>) -> (Arc<dyn Storage>, Arc<GcGuard>) {
    let guard = GcGuard::new();
    (Arc::new(GuardedStorage::new(storage, guard.clone())), guard)
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
    /// Replaced by a config reload; each run reads it afresh.
    settings: Mutex<GcSettings>,
    /// The last run that was not a dry run (for `/admin/status`).
    last: Mutex<Option<Result<GcReport, String>>>,
}

impl GarbageCollector {
    /// `registry` must run on the storage [`guard_storage`] returned with `guard`.
    pub fn new(registry: Registry, guard: Arc<GcGuard>, metrics: Arc<Metrics>, settings: GcSettings) -> Self {
        GarbageCollector { registry, guard, metrics, settings: Mutex::new(settings), last: Mutex::new(None) }
    }

    fn settings(&self) -> GcSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the GC settings (config reload); the next scheduled run uses them.
    pub fn set_settings(&self, settings: GcSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Runs one garbage collection over the registry's storage.
    pub async fn run(&self, dry_run: bool) -> Result<GcReport, GcError> {
        let settings = self.settings();
        let protect = fetch_protect(&self.registry);
        let result =
            gc::collect(self.registry.storage().as_ref(), &self.guard, &protect, &settings.options(dry_run)).await;
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
                if let Err(e) = gc.run(false).await {
                    tracing::warn!(error = %e, "scheduled garbage collection failed");
                }
            }
        })
    }
}
