//! The name, help text and type of every metric: one table, in the order
//! `GET /metrics` lists them. Names get the registry's `cove_` prefix.

use prometheus_client::registry::Registry as PromRegistry;

use super::Metrics;

/// Registers each `(name, help, metric)` of the table in `$r`; the
/// registry holds a clone of the metric (they share one value).
macro_rules! register {
    ($r:expr, [$(($name:expr, $help:expr, $metric:expr)),* $(,)?]) => {
        $( $r.register($name, $help, $metric.clone()); )*
    };
}

/// Registers every metric of `m` in `r`.
pub(super) fn register_all(m: &Metrics, r: &mut PromRegistry) {
    register!(
        r,
        [
            ("http_requests", "HTTP requests by endpoint, method and status", m.requests),
            ("replica_info", "This replica's name (server.replica, default the host name)", m.replica_info),
            ("lease_held", "1 while this replica holds the GC/retention lease", m.lease[0]),
            ("lease_epoch", "Epoch of this replica's last GC/retention lease", m.lease[1]),
            ("lease_acquisitions", "Times this replica took the GC/retention lease", m.lease_counts[0]),
            ("lease_losses", "Times this replica lost the lease before giving it back", m.lease_counts[1]),
            ("http_request_duration_seconds", "Time from request to response headers, by endpoint", m.latency),
            ("http_request_bytes", "Request body bytes by endpoint (as declared by Content-Length)", m.bytes_in),
            ("http_response_bytes", "Response body bytes sent, by endpoint", m.bytes_out),
            ("cache_requests", "Pull-through manifest and blob requests by upstream and result (hit, miss, revalidated, stale)", m.cache),
            ("upstream_errors", "Failed upstream requests by upstream", m.upstream_errors),
            ("upstream_rate_limited", "Upstream answers of 429 Too Many Requests, by upstream", m.upstream_rate_limited),
            ("cache_bytes_saved", "Blob bytes served from the cache without fetching them upstream, by upstream", m.cache_bytes_saved),
            ("upstream_bytes_fetched", "Blob bytes fetched from upstream, verified and cached, by upstream", m.upstream_bytes_fetched),
            ("uploads_in_progress", "Open upload sessions", m.uploads_in_progress),
            ("storage_full", "Writes refused with 507 because storage was full (disk, quota or storage.min_free)", m.storage_full),
            ("storage_requests", "Requests made to the object store by kind (get, head, put, delete, list, copy, multipart); a listing counts once", m.storage_requests),
            ("storage_available_bytes", "Free bytes of the filesystem backend's disk", m.storage_available),
            ("storage_min_free_bytes", "The storage.min_free floor in bytes (pushes are refused below it)", m.storage_min_free),
            ("cache_uncached_misses", "Blob misses streamed to the client but not cached (no room to spool them), by upstream", m.cache_uncached),
            ("upstream_fetches_in_flight", "Blob fetches from upstreams in flight", m.fetches_in_flight),
            ("upstream_healthy", "1 while the upstream answers, 0 while its circuit is open (requests fail at once, cache served)", m.upstream_healthy),
            ("upstream_health_changes", "Healthy/unhealthy transitions of an upstream", m.upstream_health_changes),
            ("upstream_unhealthy_seconds", "Time an upstream spent unhealthy (not answering)", m.upstream_unhealthy_seconds),
            ("upstream_ratelimit_limit", "Pulls per window the upstream announced (ratelimit-limit), as last seen on a manifest response", m.upstream_ratelimit_limit),
            ("upstream_ratelimit_remaining", "Pulls left in the window the upstream announced (ratelimit-remaining), as last seen", m.upstream_ratelimit_remaining),
            ("cache_headroom_skips", "Cached tags served without revalidation because the upstream's rate-limit headroom was below ratelimit_floor", m.cache_headroom_skips),
            ("gc_runs", "Garbage collection runs by result", m.gc_runs),
            ("gc_blobs_removed", "Blobs removed by garbage collection", m.gc_blobs_removed),
            ("gc_bytes_freed", "Bytes freed by garbage collection", m.gc_bytes_freed),
            ("gc_manifests_removed", "Untagged manifests removed by garbage collection", m.gc_manifests_removed),
            ("gc_uploads_removed", "Expired upload sessions removed by garbage collection", m.gc_uploads_removed),
            ("gc_last_success_timestamp_seconds", "Unix time of the last successful garbage collection", m.gc_last_success),
            ("storage_blobs", "Committed blobs seen by the last garbage collection", m.storage_blobs),
            ("storage_bytes", "Bytes of the blobs referenced by manifests, as of the last garbage collection", m.storage_bytes),
            ("retention_runs", "Retention runs by result (ok, dry_run, error)", m.retention.runs),
            ("retention_evicted_images", "Cached images evicted by retention, by upstream", m.retention.evicted_images),
            ("retention_evicted_bytes", "Bytes freed by cache evictions (manifests and blobs nothing else references), by upstream", m.retention.evicted_bytes),
            ("retention_tags_removed", "Tags removed by tag retention policies", m.retention.tags_removed),
            ("cache_bytes", "Size of an upstream's cache (distinct blob and manifest bytes of its cached images) at the last retention run", m.retention.cache_bytes),
            ("config_reloads", "Configuration reloads by result (ok, error)", m.config_reloads),
            ("config_last_reload_success_timestamp_seconds", "Unix time of the last successful configuration reload", m.config_last_reload_success),
            ("connections_open", "Open client connections", m.connections.open),
            ("connections_refused", "Connections closed at accept, by reason (untrusted: outside auth.trusted_networks; max_connections)", m.connections.refused),
            ("requests_limited", "Requests refused by a [server] limit, by reason (uploads, uploads_per_source, max_blob_size)", m.connections.limited),
        ]
    );
}
