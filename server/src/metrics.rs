//! Prometheus metrics, rendered on `GET /metrics` in the Prometheus text
//! format (0.0.4). The registry is owned by the application (no global
//! recorder), so several servers in one process do not share counters.
//!
//! Request metrics are recorded once per request by the HTTP layer, under
//! the label of the request's parsed route; the
//! pull-through cache's per-upstream counters, in-flight uploads and fetches
//! are read when the metrics are scraped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use cove_core::cache::CacheCounters;
use cove_core::gc::GcReport;
use cove_core::retention::RetentionReport;

use crate::body::Body;

/// The `Content-Type` of the rendered metrics.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    upstream: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
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
        let r = &mut registry;
        r.register("http_requests", "HTTP requests by endpoint, method and status", m.requests.clone());
        r.register(
            "replica_info",
            "This replica's name (server.replica, default the host name)",
            m.replica_info.clone(),
        );
        r.register("lease_held", "1 while this replica holds the GC/retention lease", m.lease[0].clone());
        r.register("lease_epoch", "Epoch of this replica's last GC/retention lease", m.lease[1].clone());
        r.register("lease_acquisitions", "Times this replica took the GC/retention lease", m.lease_counts[0].clone());
        r.register(
            "lease_losses",
            "Times this replica lost the lease before giving it back",
            m.lease_counts[1].clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from request to response headers, by endpoint",
            m.latency.clone(),
        );
        r.register(
            "http_request_bytes",
            "Request body bytes by endpoint (as declared by Content-Length)",
            m.bytes_in.clone(),
        );
        r.register("http_response_bytes", "Response body bytes sent, by endpoint", m.bytes_out.clone());
        r.register(
            "cache_requests",
            "Pull-through manifest and blob requests by upstream and result (hit, miss, revalidated, stale)",
            m.cache.clone(),
        );
        r.register("upstream_errors", "Failed upstream requests by upstream", m.upstream_errors.clone());
        r.register(
            "upstream_rate_limited",
            "Upstream answers of 429 Too Many Requests, by upstream",
            m.upstream_rate_limited.clone(),
        );
        r.register(
            "cache_bytes_saved",
            "Blob bytes served from the cache without fetching them upstream, by upstream",
            m.cache_bytes_saved.clone(),
        );
        r.register(
            "upstream_bytes_fetched",
            "Blob bytes fetched from upstream, verified and cached, by upstream",
            m.upstream_bytes_fetched.clone(),
        );
        r.register("uploads_in_progress", "Open upload sessions", m.uploads_in_progress.clone());
        r.register(
            "storage_full",
            "Writes refused with 507 because storage was full (disk, quota or storage.min_free)",
            m.storage_full.clone(),
        );
        r.register(
            "storage_available_bytes",
            "Free bytes of the filesystem backend's disk",
            m.storage_available.clone(),
        );
        r.register(
            "storage_min_free_bytes",
            "The storage.min_free floor in bytes (pushes are refused below it)",
            m.storage_min_free.clone(),
        );
        r.register(
            "cache_uncached_misses",
            "Blob misses streamed to the client but not cached (no room to spool them), by upstream",
            m.cache_uncached.clone(),
        );
        r.register("upstream_fetches_in_flight", "Blob fetches from upstreams in flight", m.fetches_in_flight.clone());
        r.register(
            "upstream_healthy",
            "1 while the upstream answers, 0 while its circuit is open (requests fail at once, cache served)",
            m.upstream_healthy.clone(),
        );
        r.register(
            "upstream_health_changes",
            "Healthy/unhealthy transitions of an upstream",
            m.upstream_health_changes.clone(),
        );
        r.register(
            "upstream_unhealthy_seconds",
            "Time an upstream spent unhealthy (not answering)",
            m.upstream_unhealthy_seconds.clone(),
        );
        r.register(
            "upstream_ratelimit_limit",
            "Pulls per window the upstream announced (ratelimit-limit), as last seen on a manifest response",
            m.upstream_ratelimit_limit.clone(),
        );
        r.register(
            "upstream_ratelimit_remaining",
            "Pulls left in the window the upstream announced (ratelimit-remaining), as last seen",
            m.upstream_ratelimit_remaining.clone(),
        );
        r.register(
            "cache_headroom_skips",
            "Cached tags served without revalidation because the upstream's rate-limit headroom was below ratelimit_floor",
            m.cache_headroom_skips.clone(),
        );
        r.register("gc_runs", "Garbage collection runs by result", m.gc_runs.clone());
        r.register("gc_blobs_removed", "Blobs removed by garbage collection", m.gc_blobs_removed.clone());
        r.register("gc_bytes_freed", "Bytes freed by garbage collection", m.gc_bytes_freed.clone());
        r.register(
            "gc_manifests_removed",
            "Untagged manifests removed by garbage collection",
            m.gc_manifests_removed.clone(),
        );
        r.register(
            "gc_uploads_removed",
            "Expired upload sessions removed by garbage collection",
            m.gc_uploads_removed.clone(),
        );
        r.register(
            "gc_last_success_timestamp_seconds",
            "Unix time of the last successful garbage collection",
            m.gc_last_success.clone(),
        );
        r.register("storage_blobs", "Committed blobs seen by the last garbage collection", m.storage_blobs.clone());
        r.register(
            "storage_bytes",
            "Bytes of the blobs referenced by manifests, as of the last garbage collection",
            m.storage_bytes.clone(),
        );
        m.retention.register(r);
        r.register("config_reloads", "Configuration reloads by result (ok, error)", m.config_reloads.clone());
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload",
            m.config_last_reload_success.clone(),
        );
        r.register("connections_open", "Open client connections", m.connections.open.clone());
        r.register(
            "connections_refused",
            "Connections closed at accept, by reason (untrusted: outside auth.trusted_networks; max_connections)",
            m.connections.refused.clone(),
        );
        r.register(
            "requests_limited",
            "Requests refused by a [server] limit, by reason (uploads, uploads_per_source, max_blob_size)",
            m.connections.limited.clone(),
        );
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
    pub fn record_storage(&self, full_total: u64, space: Option<cove_core::storage::Space>) {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        sync_counter(&self.storage_full, full_total);
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

/// Metrics of retention runs (registered with the others in `/metrics`).
#[derive(Default)]
struct RetentionMetrics {
    runs: Family<ResultLabels, Counter>,
    evicted_images: Family<UpstreamLabels, Counter>,
    evicted_bytes: Family<UpstreamLabels, Counter>,
    tags_removed: Counter,
    cache_bytes: Family<UpstreamLabels, Gauge>,
}

impl RetentionMetrics {
    /// Registers every retention metric in `r` (prefix `cove_`).
    fn register(&self, r: &mut prometheus_client::registry::Registry) {
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

/// Brings a counter up to a monotonic total kept elsewhere.
fn sync_counter(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// A response body that counts the data bytes it yields.
struct CountedBody {
    inner: Body,
    counter: Counter,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.counter.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
