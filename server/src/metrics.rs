//! Prometheus metrics, rendered on `GET /metrics` in the Prometheus text
//! format (0.0.4). The registry is owned by the application (no global
//! recorder), so several servers in one process do not share counters.
//!
//! Request metrics are recorded once per request by the HTTP layer, under
//! the label of the request's parsed route; the
//! pull-through cache's per-upstream counters, in-flight uploads and fetches
//! are read when the metrics are scraped.
//!
//! This file holds [`Metrics`] and its recording methods; `names` is the
//! table of every metric's name and help text; `labels` the label sets;
//! `retention` the retention-run metrics; `body` the byte-counting
//! response body.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use cove_core::cache::CacheCounters;
use cove_core::gc::GcReport;
use cove_core::retention::RetentionReport;

use crate::body::Body;

mod body;
mod labels;
mod names;
mod retention;

use body::CountedBody;
use labels::{
    CacheLabels, EndpointLabels, OpLabels, ReasonLabels, ReplicaLabels, RequestLabels, ResultLabels, UpstreamLabels,
};
use retention::RetentionMetrics;

/// The `Content-Type` of the rendered metrics.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric Cove exports.
pub struct Metrics {
    registry: PromRegistry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    bytes_in: Family<EndpointLabels, Counter>,
    bytes_out: Family<EndpointLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    upstream_rate_limited: Family<UpstreamLabels, Counter>,
    cache_bytes_saved: Family<UpstreamLabels, Counter>,
    upstream_bytes_fetched: Family<UpstreamLabels, Counter>,
    uploads_in_progress: Gauge,
    fetches_in_flight: Gauge,
    upstream_healthy: Family<UpstreamLabels, Gauge>,
    upstream_health_changes: Family<UpstreamLabels, Counter>,
    upstream_unhealthy_seconds: Family<UpstreamLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    upstream_ratelimit_limit: Family<UpstreamLabels, Gauge>,
    upstream_ratelimit_remaining: Family<UpstreamLabels, Gauge>,
    cache_headroom_skips: Family<UpstreamLabels, Counter>,
    gc_runs: Family<ResultLabels, Counter>,
    gc_blobs_removed: Counter,
    gc_bytes_freed: Counter,
    gc_manifests_removed: Counter,
    gc_uploads_removed: Counter,
    gc_last_success: Gauge,
    storage_blobs: Gauge,
    storage_bytes: Gauge,
    storage_full: Counter,
    storage_requests: Family<OpLabels, Counter>,
    storage_available: Gauge,
    storage_min_free: Gauge,
    cache_uncached: Family<UpstreamLabels, Counter>,
    retention: RetentionMetrics,
    config_reloads: Family<ResultLabels, Counter>,
    config_last_reload_success: Gauge,
    /// Serialises scrapes (cache counters are synchronised by difference).
    scrape: Mutex<()>,
    /// `[metrics] enabled`: whether `GET /metrics` answers (a reload may change it).
    enabled: AtomicBool,
    connections: ConnectionMetrics,
    /// `cove_replica_info{replica="…"} 1`: which replica answered the scrape.
    replica_info: Family<ReplicaLabels, Gauge>,
    /// The maintenance lease: held here (0/1), its epoch, acquisitions, losses.
    lease: [Gauge; 2],
    lease_counts: [Counter; 2],
}

/// Open connections and those refused at accept.
#[derive(Default)]
struct ConnectionMetrics {
    open: Gauge,
    refused: Family<ReasonLabels, Counter>,
    limited: Family<ReasonLabels, Counter>,
}

/// Counts a connection as open until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Names the replica in `cove_replica_info` (one series).
    pub fn set_replica(&self, name: &str) {
        self.replica_info.clear();
        self.replica_info.get_or_create(&ReplicaLabels { replica: name.to_owned() }).set(1);
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("cove");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            cache: Family::default(),
            upstream_errors: Family::default(),
            upstream_rate_limited: Family::default(),
            cache_bytes_saved: Family::default(),
            upstream_bytes_fetched: Family::default(),
            uploads_in_progress: Gauge::default(),
            storage_full: Counter::default(),
            storage_requests: Family::default(),
            storage_available: Gauge::default(),
            storage_min_free: Gauge::default(),
            cache_uncached: Family::default(),
            fetches_in_flight: Gauge::default(),
            upstream_healthy: Family::default(),
            upstream_health_changes: Family::default(),
            upstream_unhealthy_seconds: Family::default(),
            upstream_ratelimit_limit: Family::default(),
            upstream_ratelimit_remaining: Family::default(),
            cache_headroom_skips: Family::default(),
            gc_runs: Family::default(),
            gc_blobs_removed: Counter::default(),
            gc_bytes_freed: Counter::default(),
            gc_manifests_removed: Counter::default(),
            gc_uploads_removed: Counter::default(),
            gc_last_success: Gauge::default(),
            storage_blobs: Gauge::default(),
            storage_bytes: Gauge::default(),
            retention: RetentionMetrics::default(),
            config_reloads: Family::default(),
            config_last_reload_success: Gauge::default(),
            scrape: Mutex::new(()),
            enabled: AtomicBool::new(true),
            connections: ConnectionMetrics::default(),
            replica_info: Family::default(),
            lease: Default::default(),
            lease_counts: Default::default(),
            registry: PromRegistry::default(),
        };
        names::register_all(&m, &mut registry);
        Metrics { registry, ..m }
    }

    /// Counts a new connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.open.inc();
        OpenConnection(self.connections.open.clone())
    }

    /// Counts a connection closed at accept for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a request refused by a `[server]` limit.
    pub fn request_limited(&self, reason: &'static str) {
        self.connections.limited.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Records one finished request (up to its response headers) and wraps
    /// the response body so the bytes actually sent are counted.
    pub fn record_request(
        &self,
        endpoint: &'static str,
        method: &str,
        status: u16,
        request_bytes: Option<u64>,
        elapsed: Duration,
        body: Body,
    ) -> Body {
        let ep = EndpointLabels { endpoint };
        self.requests.get_or_create(&RequestLabels { endpoint, method: method.to_owned(), status }).inc();
        self.latency.get_or_create(&ep).observe(elapsed.as_secs_f64());
        if let Some(n) = request_bytes {
            self.bytes_in.get_or_create(&ep).inc_by(n);
        }
        let counter = self.bytes_out.get_or_create(&ep).clone();
        CountedBody { inner: body, counter }.boxed_unsync()
    }

    /// Records a garbage collection run.
    pub fn record_gc(&self, result: Result<&GcReport, ()>) {
        match result {
            Ok(r) => {
                self.gc_runs.get_or_create(&ResultLabels { result: if r.dry_run { "dry_run" } else { "ok" } }).inc();
                if !r.dry_run {
                    self.gc_blobs_removed.inc_by(r.blobs_removed.len() as u64);
                    self.gc_bytes_freed.inc_by(r.bytes_freed);
                    self.gc_manifests_removed.inc_by(r.manifests_removed.len() as u64);
                    self.gc_uploads_removed.inc_by(r.uploads_removed.len() as u64);
                    self.gc_last_success.set(unix_now());
                    self.storage_blobs.set((r.blobs - r.blobs_removed.len()) as i64);
                    self.storage_bytes.set(i64::try_from(r.bytes_referenced).unwrap_or(i64::MAX));
                }
            }
            Err(()) => {
                self.gc_runs.get_or_create(&ResultLabels { result: "error" }).inc();
            }
        }
    }

    /// Records a configuration reload (SIGHUP or `POST /admin/reload`).
    pub fn record_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
        if ok {
            self.config_last_reload_success.set(unix_now());
        }
    }

    /// Records a retention run (its summary, or the error).
    pub fn record_retention(&self, result: &Result<RetentionReport, String>) {
        self.retention.record(result);
    }

    /// Whether `GET /metrics` answers (`[metrics] enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns `GET /metrics` on or off (start-up and config reload).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Renders every metric, after updating the sampled ones.
    pub fn render(
        &self,
        cache: &std::collections::HashMap<String, CacheCounters>,
        uploads: Option<usize>,
        fetches: usize,
        health: &[(String, cove_core::upstream::UpstreamHealth)],
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for (host, h) in health {
            let upstream = UpstreamLabels { upstream: host.clone() };
            self.upstream_healthy.get_or_create(&upstream).set(i64::from(h.healthy));
            sync_counter(&self.upstream_health_changes.get_or_create(&upstream), h.changes);
            let secs = self.upstream_unhealthy_seconds.get_or_create(&upstream);
            let total = h.unhealthy_total.as_secs_f64();
            if total > secs.get() {
                secs.inc_by(total - secs.get());
            }
        }
        for (host, c) in cache {
            for (result, value) in
                [("hit", c.hits), ("miss", c.misses), ("revalidated", c.revalidated), ("stale", c.stale)]
            {
                sync_counter(&self.cache.get_or_create(&CacheLabels { upstream: host.clone(), result }), value);
            }
            let upstream = UpstreamLabels { upstream: host.clone() };
            sync_counter(&self.upstream_errors.get_or_create(&upstream), c.upstream_errors);
            sync_counter(&self.upstream_rate_limited.get_or_create(&upstream), c.rate_limited);
            sync_counter(&self.cache_bytes_saved.get_or_create(&upstream), c.bytes_saved);
            sync_counter(&self.upstream_bytes_fetched.get_or_create(&upstream), c.bytes_fetched);
            sync_counter(&self.cache_uncached.get_or_create(&upstream), c.uncached);
            sync_counter(&self.cache_headroom_skips.get_or_create(&upstream), c.headroom_skips);
        }
        if let Some(n) = uploads {
            self.uploads_in_progress.set(n as i64);
        }
        self.fetches_in_flight.set(fetches as i64);
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics could not be rendered");
        }
        out
    }
}

impl Metrics {
    /// Records the rate limits the upstreams last announced (before
    /// [`Metrics::render`]); an upstream that announced none has no gauge.
    pub fn record_rate_limits(&self, limits: &[(String, Option<cove_core::upstream::RateLimit>)]) {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for (host, r) in limits {
            if let Some(r) = r {
                let upstream = UpstreamLabels { upstream: host.clone() };
                self.upstream_ratelimit_limit.get_or_create(&upstream).set(r.limit.min(i64::MAX as u64) as i64);
                self.upstream_ratelimit_remaining.get_or_create(&upstream).set(r.remaining.min(i64::MAX as u64) as i64);
            }
        }
    }

    /// Records the maintenance lease as this replica sees it (before [`Metrics::render`]).
    pub fn record_lease(&self, keeper: &cove_core::lease::LeaseKeeper) {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let (held, epoch) = keeper.held();
        let (acquired, lost) = keeper.counts();
        self.lease[0].set(i64::from(held));
        self.lease[1].set(i64::try_from(epoch).unwrap_or(i64::MAX));
        sync_counter(&self.lease_counts[0], acquired);
        sync_counter(&self.lease_counts[1], lost);
    }

    /// Records the storage-full refusals so far and the free space (before
    /// [`Metrics::render`]).
    pub fn record_storage(
        &self,
        full_total: u64,
        space: Option<cove_core::storage::Space>,
        requests: Option<cove_core::storage::StoreRequests>,
    ) {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        sync_counter(&self.storage_full, full_total);
        for (op, n) in requests.iter().flat_map(|r| r.by_kind()) {
            sync_counter(&self.storage_requests.get_or_create(&OpLabels { op }), n);
        }
        if let Some(s) = space {
            self.storage_available.set(i64::try_from(s.available).unwrap_or(i64::MAX));
            self.storage_min_free.set(i64::try_from(s.floor).unwrap_or(i64::MAX));
        }
    }
}

/// Seconds since the Unix epoch, for "last success" gauges.
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Brings a counter up to a monotonic total kept elsewhere.
fn sync_counter(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}
