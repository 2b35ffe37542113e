//! The `/admin/status` document (`cove status`): uptime, storage kind, each
//! upstream (probed for reachability, with its cache counters and size), the
//! last garbage collection, the last retention run and the last scheduled
//! prefetch round.

use std::time::{Duration, SystemTime};

use cove_core::Registry;

use crate::jobs::gc::GarbageCollector;
use crate::jobs::retention::RetentionJob;

/// How long `cove status` waits for each upstream's `/v2/`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which server a status document is about.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// The replica name (`server.replica`, default the host name).
    pub replica: String,
    pub started: SystemTime,
}

/// Builds the status document of the server `who`.
pub async fn status(
    registry: &Registry,
    gc: &GarbageCollector,
    retention: &RetentionJob,
    who: &ServerIdentity,
) -> serde_json::Value {
    let mut v = base_status(registry, gc, who.started).await;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("replica".into(), who.replica.clone().into());
    }
    add_retention(retention, &mut v);
    let lease = lease_status(gc.keeper()).await;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("lease".into(), lease);
    }
    v
}

/// The maintenance lease (who runs GC and retention among the replicas):
/// its record in the store, and this replica's part.
async fn lease_status(keeper: &cove_core::lease::LeaseKeeper) -> serde_json::Value {
    match keeper.status().await {
        Ok(st) => {
            let now = cove_core::retention::now_ms();
            let at = |ms: u64| {
                let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
                humantime::format_rfc3339_millis(t).to_string()
            };
            let r = st.record.as_ref();
            serde_json::json!({
                "holder": r.filter(|_| st.active).map(|r| r.holder.clone()),
                "last_holder": r.map(|r| r.holder.clone()),
                "epoch": r.map(|r| r.epoch),
                "active": st.active,
                "expires_at": r.map(|r| at(r.expires_ms)),
                "expires_in_ms": r.map(|r| r.expires_ms.saturating_sub(now)),
                "held_here": st.held_here,
                "contending": st.contending,
                "acquired_total": st.acquired_total,
                "lost_total": st.lost_total,
                "ttl_ms": keeper.lease().timing().ttl.as_millis() as u64,
            })
        }
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// Uptime, storage, upstreams (probed at once, each for at most
/// [`PROBE_TIMEOUT`]) and the last garbage collection.
async fn base_status(registry: &Registry, gc: &GarbageCollector, started: SystemTime) -> serde_json::Value {
    let counters = registry.cache().map(|c| c.counters()).unwrap_or_default();
    let routes: Vec<cove_core::cache::UpstreamRoute> =
        registry.cache().map(|c| c.routes().to_vec()).unwrap_or_default();
    // Every upstream is probed at once, each for at most PROBE_TIMEOUT.
    let probes = futures::future::join_all(routes.iter().map(|r| async move {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(PROBE_TIMEOUT, r.upstream.ping()).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        result
    }))
    .await;
    let upstreams: Vec<serde_json::Value> = routes
        .iter()
        .zip(probes)
        .map(|(route, probe)| {
            let host = &route.host;
            let c = counters.get(host).cloned().unwrap_or_default();
            let served = c.hits + c.misses + c.revalidated + c.stale;
            let hit_rate = if served == 0 { None } else { Some((c.hits + c.revalidated) as f64 / served as f64) };
            let last_error_at = c.last_error_at.map(|t| humantime::format_rfc3339_seconds(t).to_string());
            let (reachable, probe_ms, probe_error) = match probe {
                Ok(d) => (true, Some(d.as_millis() as u64), None),
                Err(e) => (false, None, Some(e)),
            };
            let health = route.upstream.health();
            let ratelimit = route.upstream.rate_limit().map(|r| {
                serde_json::json!({
                    "limit": r.limit, "remaining": r.remaining,
                    "window_seconds": r.window.map(|w| w.as_secs()),
                    "observed_at": humantime::format_rfc3339_seconds(r.observed).to_string(),
                    "current": r.current(),
                })
            });
            let headroom_low = registry.cache().is_some_and(|c| c.low_headroom(route));
            let rfc3339 = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
            serde_json::json!({
                "host": host,
                "reachable": reachable, "probe_ms": probe_ms, "probe_error": probe_error,
                "healthy": health.healthy,
                "unhealthy_since": health.unhealthy_since.map(rfc3339),
                "health_changes": health.changes,
                "unhealthy_seconds": health.unhealthy_total.as_secs(),
                "last_silence": health.last_failure.map(|(at, e)| format!("{}: {e}", rfc3339(at))),
                "hits": c.hits, "misses": c.misses, "revalidated": c.revalidated, "stale": c.stale,
                "upstream_errors": c.upstream_errors,
                "rate_limited": c.rate_limited,
                "last_error": c.last_error,
                "last_error_at": last_error_at,
                "bytes_saved": c.bytes_saved,
                "bytes_fetched": c.bytes_fetched,
                "hit_rate": hit_rate,
                "ratelimit": ratelimit,
                "ratelimit_floor": route.ratelimit_floor,
                "headroom_low": headroom_low,
                "headroom_skips": c.headroom_skips,
            })
        })
        .collect();
    let last_gc = match &gc.last_run() {
        None => serde_json::Value::Null,
        Some(Ok(r)) => serde_json::json!({
            "ok": true, "blobs": r.blobs, "blobs_removed": r.blobs_removed.len(),
            "bytes_freed": r.bytes_freed, "manifests_removed": r.manifests_removed.len(),
            "uploads_removed": r.uploads_removed.len(), "duration_ms": r.duration_ms,
        }),
        Some(Err(e)) => serde_json::json!({ "ok": false, "error": e }),
    };
    let space = match registry.storage().space().await {
        Ok(Some(s)) => serde_json::json!({
            "available": s.available, "total": s.total, "min_free": s.floor, "low": s.low(),
        }),
        Ok(None) => serde_json::Value::Null,
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    serde_json::json!({
        "uptime_seconds": started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        "storage": registry.storage().kind(),
        "storage_space": space,
        "storage_full_total": registry.storage_full_count(),
        "upstreams": upstreams,
        "last_gc": last_gc,
    })
}

/// Adds the last scheduled prefetch round (`[[prefetch]]`) to
/// `/admin/status` JSON as `last_prefetch` (null before the first).
pub fn add_prefetch(prefetch: &crate::jobs::prefetch::PrefetchJob, status: &mut serde_json::Value) {
    let last = match prefetch.last_run() {
        None => serde_json::Value::Null,
        Some((at, r)) => {
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("at".into(), humantime::format_rfc3339_seconds(at).to_string().into());
            }
            v
        }
    };
    if let Some(obj) = status.as_object_mut() {
        obj.insert("last_prefetch".into(), last);
    }
}

/// Adds the cache size per upstream (as of the last run) and the last
/// retention result to `/admin/status` JSON.
fn add_retention(retention: &RetentionJob, status: &mut serde_json::Value) {
    let last = retention.last_run();
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
    let (manifests, tags) = retention.activity().len();
    if let Some(obj) = status.as_object_mut() {
        obj.insert("last_retention".into(), last_json);
        obj.insert("activity_log".into(), serde_json::json!({ "manifests": manifests, "tags": tags }));
    }
}
