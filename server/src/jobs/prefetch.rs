//! Keep-warm: the `[[prefetch]]` entries pulled into the cache at start and
//! then each at its `interval`, and the one-off prefetches of
//! `POST /admin/prefetch` (`cove prefetch REF…`). The engine is
//! [`cove_core::registry::prefetch`]; it pauses while an upstream's
//! rate-limit headroom is below its floor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use cove_core::registry::prefetch::{PrefetchEvent, PrefetchReport, PrefetchRequest, PrefetchTarget};
use cove_core::Registry;

use crate::config::prefetch::{glob_match, PrefetchSpec, PrefetchWhat};
use crate::config::Config;

/// How often the schedule looks again when nothing is due (a reload may
/// have added entries).
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// The prefetch schedule of a serving process (entries replaced on reload).
pub struct PrefetchJob {
    registry: Registry,
    specs: Mutex<(u64, Vec<PrefetchSpec>)>,
    /// The last scheduled round: when, and what it did.
    last: Mutex<Option<(SystemTime, PrefetchReport)>>,
    /// One prefetch at a time (scheduled or asked for).
    running: tokio::sync::Mutex<()>,
    /// Wakes the schedule when the entries change.
    changed: tokio::sync::Notify,
}

impl PrefetchJob {
    pub fn new(registry: Registry, specs: Vec<PrefetchSpec>) -> Self {
        PrefetchJob {
            registry,
            specs: Mutex::new((0, specs)),
            last: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the entries with those of a new, validated `config`
    /// (config reload); every entry is then due at once, and the schedule
    /// wakes for them.
    pub fn set_specs(&self, config: &Config) {
        let new = crate::config::prefetch::specs(config);
        let mut s = self.specs.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(entries = new.len(), "prefetch entries reloaded");
        *s = (s.0 + 1, new);
        drop(s);
        self.changed.notify_one();
    }

    /// The last scheduled round's report.
    pub fn last_run(&self) -> Option<(SystemTime, PrefetchReport)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Prefetches `specs` one after the other, reporting to `progress`.
    pub async fn run(
        &self,
        specs: &[PrefetchSpec],
        progress: &(dyn Fn(PrefetchEvent) + Send + Sync),
    ) -> PrefetchReport {
        let _one = self.running.lock().await;
        let mut total = PrefetchReport::default();
        for spec in specs {
            let req = request(spec);
            match self.registry.prefetch(&req, progress).await {
                Ok(r) => total.add(&r),
                Err(e) => {
                    total.errors += 1;
                    progress(PrefetchEvent::Error {
                        repository: spec.repo.to_string(),
                        reference: String::new(),
                        message: e.message,
                    });
                }
            }
        }
        total
    }

    /// Runs every entry at start, then each again after its interval.
    pub fn spawn_schedule(self: &Arc<Self>) -> JoinHandle<()> {
        let job = self.clone();
        tokio::spawn(async move {
            let mut generation = u64::MAX;
            let mut due: Vec<tokio::time::Instant> = Vec::new();
            loop {
                let (g, specs) = job.specs.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let now = tokio::time::Instant::now();
                if g != generation {
                    generation = g;
                    due = vec![now; specs.len()];
                }
                let ready: Vec<PrefetchSpec> =
                    specs.iter().zip(&due).filter(|(_, d)| **d <= now).map(|(s, _)| s.clone()).collect();
                if !ready.is_empty() {
                    let started = std::time::Instant::now();
                    let report = job.run(&ready, &|e| tracing::debug!(event = ?e, "prefetch")).await;
                    tracing::info!(
                        entries = ready.len(),
                        images = report.images,
                        blobs_fetched = report.blobs_fetched,
                        bytes_fetched = report.bytes_fetched,
                        blobs_cached = report.blobs_cached,
                        errors = report.errors,
                        paused = report.paused,
                        ms = started.elapsed().as_millis() as u64,
                        "prefetch finished"
                    );
                    *job.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((SystemTime::now(), report));
                    let after = tokio::time::Instant::now();
                    for (s, d) in specs.iter().zip(due.iter_mut()) {
                        if *d <= now {
                            *d = after + s.interval;
                        }
                    }
                }
                let next = due.iter().min().copied().unwrap_or(now + IDLE_CHECK);
                tokio::select! {
                    _ = tokio::time::sleep_until(next.min(tokio::time::Instant::now() + IDLE_CHECK)) => {}
                    _ = job.changed.notified() => {}
                }
            }
        })
    }
}

/// The engine's request for an entry.
pub fn request(spec: &PrefetchSpec) -> PrefetchRequest {
    let target = match &spec.what {
        PrefetchWhat::Reference(r) => PrefetchTarget::Reference(r.clone()),
        PrefetchWhat::Tags(p) => {
            let p = p.clone();
            PrefetchTarget::Tags(Box::new(move |t: &str| glob_match(&p, t)))
        }
    };
    PrefetchRequest { repo: spec.repo.clone(), target, platforms: spec.platforms.clone() }
}
