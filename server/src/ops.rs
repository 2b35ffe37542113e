//! Operations: health and readiness, Prometheus metrics, online garbage
//! collection (scheduled and on demand), scrub and status.
//!
//! HTTP endpoints (answered before `/v2` parsing, without authentication):
//! - `GET /healthz`: 200 while the process serves (liveness).
//! - `GET /readyz`: 200 when storage is reachable and writable, else 503.
//! - `GET /metrics`: Prometheus text (unless `[metrics] enabled = false`).
//! - `POST /admin/gc[?dry_run=true]`, `POST /admin/scrub[?quarantine=true]`,
//!   `GET /admin/status`: JSON; only from a loopback peer without
//!   `X-Forwarded-For` or `Forwarded` (a reverse proxy in front must not
//!   expose them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use cove_core::gc::{self, GcError, GcGuard, GcReport, GuardedStorage};
use cove_core::{ErrorCode, Registry, RegistryError, Storage};

use crate::app::App;
use crate::body::{self, Body};
use crate::config::{Config, GcSettings};
use crate::metrics::Metrics;

/// How long `cove status` waits for each upstream's `/v2/`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The operations state of a serving process.
pub struct Ops {
    pub metrics: Metrics,
    pub guard: Arc<GcGuard>,
    metrics_enabled: std::sync::atomic::AtomicBool,
    gc: Mutex<GcSettings>,
    quarantine_dir: PathBuf,
    started: SystemTime,
    last_gc: Mutex<Option<Result<GcReport, String>>>,
    /// Retention state (issue 7), set by `retention::install`.
    pub retention: std::sync::OnceLock<Arc<crate::retention::Retention>>,
}

/// Wraps storage so garbage collection can run while serving. Call before
/// the registry is built, then give the guard to [`install`].
pub fn guard_storage(storage: Arc<dyn Storage>) -> (Arc<dyn Storage>, Arc<GcGuard>) {
    let guard = GcGuard::new();
    (Arc::new(GuardedStorage::new(storage, guard.clone())), guard)
}

/// Attaches the operations state to `app` and starts scheduled GC.
pub fn install(app: &Arc<App>, config: &Config, guard: Arc<GcGuard>) {
    let settings = GcSettings::from_config(config);
    let ops = Arc::new(Ops {
        metrics: Metrics::new(),
        guard,
        metrics_enabled: std::sync::atomic::AtomicBool::new(config.metrics.enabled),
        gc: Mutex::new(settings.clone()),
        quarantine_dir: config.storage.root.join("quarantine"),
        started: SystemTime::now(),
        last_gc: Mutex::new(None),
        retention: std::sync::OnceLock::new(),
    });
    if app.ops.set(ops.clone()).is_err() {
        tracing::warn!("operations state installed twice; keeping the first");
        return;
    }
    // Retention (issue 7): activity log, schedule.
    crate::retention::install(app, config, &ops);
    // Always scheduled: each run checks `[gc] enabled`, which a reload may change.
    {
        let registry = app.registry.clone();
        tokio::spawn(async move {
            loop {
                let interval = ops.gc_settings().interval;
                tokio::time::sleep(interval).await;
                if !ops.gc_settings().enabled {
                    continue;
                }
                if let Err(e) = ops.run_gc(&registry, false).await {
                    tracing::warn!(error = %e, "scheduled garbage collection failed");
                }
            }
        });
    }
}

impl Ops {
    fn gc_settings(&self) -> GcSettings {
        self.gc.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the GC settings (config reload); the next scheduled run uses them.
    pub fn set_gc_settings(&self, settings: GcSettings) {
        *self.gc.lock().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    /// Turns `GET /metrics` on or off (config reload).
    pub fn set_metrics_enabled(&self, on: bool) {
        self.metrics_enabled.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs one garbage collection over the registry's storage.
    pub async fn run_gc(&self, registry: &Registry, dry_run: bool) -> Result<GcReport, GcError> {
        let settings = self.gc_settings();
        let protect = fetch_protect(registry);
        let result = gc::collect(registry.storage().as_ref(), &self.guard, &protect, &settings.options(dry_run)).await;
        self.metrics.record_gc(result.as_ref().map_err(|_| ()));
        if !dry_run {
            let keep = match &result {
                Ok(r) => Ok(r.clone()),
                Err(e) => Err(e.to_string()),
            };
            *self.last_gc.lock().unwrap_or_else(|p| p.into_inner()) = Some(keep);
        }
        result
    }

    async fn status(&self, registry: &Registry) -> serde_json::Value {
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
                serde_json::json!({
                    "host": host,
                    "reachable": reachable, "probe_ms": probe_ms, "probe_error": probe_error,
                    "hits": c.hits, "misses": c.misses, "revalidated": c.revalidated, "stale": c.stale,
                    "upstream_errors": c.upstream_errors,
                    "rate_limited": c.rate_limited,
                    "last_error": c.last_error,
                    "last_error_at": last_error_at,
                    "bytes_saved": c.bytes_saved,
                    "bytes_fetched": c.bytes_fetched,
                    "hit_rate": hit_rate,
                })
            })
            .collect();
        let last_gc = match &*self.last_gc.lock().unwrap_or_else(|p| p.into_inner()) {
            None => serde_json::Value::Null,
            Some(Ok(r)) => serde_json::json!({
                "ok": true, "blobs": r.blobs, "blobs_removed": r.blobs_removed.len(),
                "bytes_freed": r.bytes_freed, "manifests_removed": r.manifests_removed.len(),
                "uploads_removed": r.uploads_removed.len(), "duration_ms": r.duration_ms,
            }),
            Some(Err(e)) => serde_json::json!({ "ok": false, "error": e }),
        };
        serde_json::json!({
            "uptime_seconds": self.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            "storage": registry.storage().kind(),
            "upstreams": upstreams,
            "last_gc": last_gc,
        })
    }
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

/// The metrics label of a request path.
pub fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/token" => "token",
        p if p.starts_with("/admin/") => "admin",
        p => crate::routes::Endpoint::parse(p).map(|e| e.label()).unwrap_or("other"),
    }
}

/// The request body length a client declared.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Records a finished request in the metrics (a no-op before [`install`]).
pub fn record(
    app: &App,
    method: &Method,
    path: &str,
    request_bytes: Option<u64>,
    elapsed: Duration,
    resp: Response<Body>,
) -> Response<Body> {
    let Some(ops) = app.ops.get() else {
        return resp;
    };
    let status = resp.status().as_u16();
    let (parts, b) = resp.into_parts();
    let b = ops.metrics.record_request(endpoint_label(path), method.as_str(), status, request_bytes, elapsed, b);
    Response::from_parts(parts, b)
}

/// Answers the operations endpoints; `None` for every other path.
pub async fn route(
    app: &App,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Option<Result<Response<Body>, RegistryError>> {
    let path = req.uri().path();
    let method = req.method();
    let get = method == Method::GET || method == Method::HEAD;
    let resp = match path {
        "/healthz" if get => Ok(text(StatusCode::OK, "ok\n")),
        "/readyz" if get => Ok(match app.registry.storage().check().await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed: storage not reachable");
                text(StatusCode::SERVICE_UNAVAILABLE, "storage not reachable\n")
            }
        }),
        "/metrics" if get => {
            let ops = app.ops.get()?;
            if !ops.metrics_enabled.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let counters = app.registry.cache().map(|c| c.counters()).unwrap_or_default();
            let fetches = app.registry.cache().map(|c| c.inflight_digests().len()).unwrap_or(0);
            let uploads = app.registry.storage().upload_list().await.ok().map(|l| l.len());
            let mut resp = Response::new(body::full(ops.metrics.render(&counters, uploads, fetches)));
            set_type(&mut resp, crate::metrics::CONTENT_TYPE);
            Ok(resp)
        }
        p if p.starts_with("/admin/") => {
            let ops = app.ops.get()?;
            if !peer.ip().is_loopback()
                || req.headers().contains_key("x-forwarded-for")
                || req.headers().contains_key("forwarded")
            {
                return Some(Err(RegistryError::new(
                    ErrorCode::Denied,
                    "admin endpoints answer only to loopback clients",
                )));
            }
            let query: Vec<(String, String)> = req
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let flag = |k: &str| query.iter().any(|(n, v)| n == k && matches!(v.as_str(), "" | "1" | "true"));
            match (p, method) {
                ("/admin/gc", &Method::POST) => match ops.run_gc(&app.registry, flag("dry_run")).await {
                    Ok(r) => Ok(json(StatusCode::OK, &serde_json::to_value(&r).unwrap_or_default())),
                    Err(e) => Err(RegistryError::internal(format!("garbage collection failed: {e}"))),
                },
                ("/admin/scrub", &Method::POST) => {
                    let dir = flag("quarantine").then_some(ops.quarantine_dir.as_path());
                    match cove_core::scrub::scrub(app.registry.storage().as_ref(), dir, &mut |_| {}).await {
                        Ok(r) => Ok(json(StatusCode::OK, &serde_json::to_value(&r).unwrap_or_default())),
                        Err(e) => Err(RegistryError::internal(format!("scrub failed: {e}"))),
                    }
                }
                ("/admin/reload", &Method::POST) => Ok(crate::reload::admin(app).await), // config reload
                ("/admin/retention", &Method::POST) => {
                    match crate::retention::run(ops, &app.registry, flag("dry_run")).await {
                        Ok(r) => Ok(json(StatusCode::OK, &serde_json::to_value(&r).unwrap_or_default())),
                        Err(e) => Err(RegistryError::internal(format!("retention failed: {e}"))),
                    }
                }
                ("/admin/status", &Method::GET) => {
                    let mut v = ops.status(&app.registry).await;
                    crate::retention::add_status(ops, &mut v); // retention (issue 7)
                    Ok(json(StatusCode::OK, &v))
                }
                _ => Err(RegistryError::new(ErrorCode::NameUnknown, "no such admin endpoint").with_status(404)),
            }
        }
        _ => return None,
    };
    Some(resp)
}

fn set_type(resp: &mut Response<Body>, content_type: &str) {
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(s.as_bytes())));
    *resp.status_mut() = status;
    set_type(&mut resp, "text/plain; charset=utf-8");
    resp
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    set_type(&mut resp, "application/json");
    resp
}
