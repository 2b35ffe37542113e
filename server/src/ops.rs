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

// ---- command-line helpers ---------------------------------------------------

/// Sends `method path` to a running Cove at `addr` (plain HTTP/1.0 over
/// loopback) and returns the status and body. `Err` when nothing listens.
pub async fn admin_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    exchange(s, addr, method, path, false).await
}

/// Sends one bodiless HTTP/1.0 request on `s` and reads the response to the
/// end: (status, body). With `tolerate_unclean_close`, a read error after
/// some bytes arrived (a TLS peer closing without close_notify) still
/// returns what was read.
pub(crate) async fn exchange<S>(
    mut s: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    tolerate_unclean_close: bool,
) -> std::io::Result<(u16, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf).await {
        if !tolerate_unclean_close || buf.is_empty() {
            return Err(e);
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// [`admin_request`] over TLS when the config terminates TLS (trusting
/// exactly the configured certificate), plain HTTP otherwise.
pub async fn cli_request(
    config: &Config,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    match &config.server.tls_cert {
        Some(cert) => crate::tls::admin_request_tls(addr, cert, method, path).await,
        None => admin_request(addr, method, path).await,
    }
}

/// The loopback address of the server a config describes (`0.0.0.0` and
/// `[::]` mean this host).
pub fn local_addr(config: &Config) -> Option<SocketAddr> {
    let mut addr: SocketAddr = config.server.listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Some(addr)
}

/// The operations subcommands of the `cove` binary.
#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {
    /// Remove unreferenced blobs (and, with `[gc] untagged`, untagged
    /// manifests) and expired upload sessions. Asks the running server when
    /// one answers at the configured address; otherwise works on the storage
    /// directly (only do that with the server stopped).
    Gc {
        /// TOML configuration file (storage, [gc] settings, listen address).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The running server's address (default: server.listen on loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Verify every blob and manifest against its digest. Exits non-zero
    /// when something is corrupt.
    Scrub {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Copy corrupt objects to <storage.root>/quarantine and remove them.
        #[arg(long)]
        quarantine: bool,
        #[arg(long)]
        addr: Option<SocketAddr>,
    },
    /// Evict cached images (per-upstream max_size/max_age, least recently
    /// pulled first) and remove tags (per-repository keep_last /
    /// keep_pulled_within), then sweep blobs nothing references. Asks the
    /// running server when one answers; otherwise works on the storage
    /// directly (only with the server stopped).
    Retention(RetentionArgs),
    /// Show a running server's upstreams (reachability, last error, hit
    /// rate, bytes saved) and the last garbage collection.
    Status {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// Print the server's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `cove retention`: evict cached images and remove tags by the
/// `[retention]` policies (see README "Cache retention").
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// TOML configuration file ([retention], [upstreams], storage, listen).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// List what would be evicted or removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The running server's address (default: server.listen on loopback).
    #[arg(long)]
    pub addr: Option<SocketAddr>,
}

/// Runs an operations subcommand; returns the process exit code.
pub fn run_command(cmd: OpsCommand) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("cove: {e}");
        ExitCode::FAILURE
    };
    let load = |p: &Option<PathBuf>| -> Result<Config, String> {
        let c = match p {
            Some(p) => Config::load(p).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    };
    let (config, addr) = match &cmd {
        OpsCommand::Gc { config, addr, .. }
        | OpsCommand::Scrub { config, addr, .. }
        | OpsCommand::Retention(RetentionArgs { config, addr, .. })
        | OpsCommand::Status { config, addr, .. } => match load(config) {
            Ok(c) => {
                let a = addr.or_else(|| local_addr(&c));
                (c, a)
            }
            Err(e) => return fail(&e),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async move {
        let (method, path) = match &cmd {
            OpsCommand::Gc { dry_run, .. } => ("POST", format!("/admin/gc?dry_run={dry_run}")),
            OpsCommand::Scrub { quarantine, .. } => ("POST", format!("/admin/scrub?quarantine={quarantine}")),
            OpsCommand::Status { .. } => ("GET", "/admin/status".to_owned()),
            OpsCommand::Retention(RetentionArgs { dry_run, .. }) => {
                ("POST", format!("/admin/retention?dry_run={dry_run}"))
            }
        };
        let online = match addr {
            Some(a) => match cli_request(&config, a, method, &path).await {
                Ok(r) => Some((a, r)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => None,
                Err(e) => return fail(&format!("cannot ask the server at {a}: {e}")),
            },
            None => None,
        };
        if let Some((a, (status, body))) = online {
            if status != 200 {
                return fail(&format!("server at {a} answered {status}: {}", body.trim()));
            }
            eprintln!("(ran by the server at {a})");
            return match &cmd {
                OpsCommand::Gc { .. } => match serde_json::from_str::<GcReport>(&body) {
                    Ok(r) => print_gc(&r),
                    Err(e) => fail(&format!("unexpected answer from {a}: {e}")),
                },
                OpsCommand::Scrub { .. } => match serde_json::from_str::<cove_core::scrub::ScrubReport>(&body) {
                    Ok(r) => print_scrub(&r),
                    Err(e) => fail(&format!("unexpected answer from {a}: {e}")),
                },
                OpsCommand::Retention(_) => match serde_json::from_str::<crate::retention::RunReport>(&body) {
                    Ok(r) => crate::retention::print_report(&r),
                    Err(e) => fail(&format!("unexpected answer from {a}: {e}")),
                },
                OpsCommand::Status { json: true, .. } => {
                    println!("{body}");
                    ExitCode::SUCCESS
                }
                OpsCommand::Status { json: false, .. } => match serde_json::from_str::<serde_json::Value>(&body) {
                    Ok(v) => {
                        print!("{}", format_status(&v));
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&format!("unexpected answer from {a}: {e}")),
                },
            };
        }
        if matches!(cmd, OpsCommand::Status { .. }) {
            return fail(&"no server answers at the configured address (status needs a running server)");
        }
        eprintln!(
            "no server answers at {}; working on {} directly",
            addr.map(|a| a.to_string()).unwrap_or_default(),
            config.storage.describe()
        );
        let storage = match crate::serve::open_storage(&config) {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        match cmd {
            OpsCommand::Gc { dry_run, .. } => {
                let settings = GcSettings::from_config(&config);
                let guard = GcGuard::offline();
                match gc::collect(storage.as_ref(), &guard, &|_| false, &settings.options(dry_run)).await {
                    Ok(r) => print_gc(&r),
                    Err(e) => fail(&e),
                }
            }
            OpsCommand::Scrub { quarantine, .. } => {
                let dir = config.storage.root.join("quarantine");
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                let mut last = std::time::Instant::now();
                let mut progress = |p: cove_core::scrub::ScrubProgress| {
                    if tty && last.elapsed().as_millis() < 100 && p.done < p.total {
                        return;
                    }
                    last = std::time::Instant::now();
                    let width = 30usize;
                    let filled = (p.done * width).checked_div(p.total).unwrap_or(width);
                    let line = format!(
                        "[{}{}] {}/{} objects, {:.1} MiB",
                        "#".repeat(filled),
                        " ".repeat(width - filled),
                        p.done,
                        p.total,
                        p.bytes as f64 / 1048576.0
                    );
                    if tty {
                        eprint!("\r\x1b[2K{line}");
                    } else if p.done == p.total || p.done.is_multiple_of(1000) {
                        eprintln!("{line}");
                    }
                };
                let result =
                    cove_core::scrub::scrub(storage.as_ref(), quarantine.then_some(dir.as_path()), &mut progress).await;
                if tty {
                    eprintln!();
                }
                match result {
                    Ok(r) => print_scrub(&r),
                    Err(e) => fail(&e),
                }
            }
            OpsCommand::Retention(RetentionArgs { dry_run, .. }) => {
                match crate::retention::run_offline(&config, storage, dry_run).await {
                    Ok(r) => crate::retention::print_report(&r),
                    Err(e) => fail(&e),
                }
            }
            OpsCommand::Status { .. } => ExitCode::FAILURE,
        }
    })
}

/// Renders `/admin/status` JSON as a summary line and one row per upstream.
pub fn format_status(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
    let mut out = String::new();
    let _ = write!(
        out,
        "up {}s, storage {}",
        v["uptime_seconds"].as_u64().unwrap_or(0),
        v["storage"].as_str().unwrap_or("?")
    );
    match &v["last_gc"] {
        serde_json::Value::Null => out.push_str(", no garbage collection yet"),
        g if g["ok"].as_bool() == Some(true) => {
            let _ = write!(
                out,
                ", last gc removed {} blobs ({})",
                g["blobs_removed"].as_u64().unwrap_or(0),
                mib(g["bytes_freed"].as_u64().unwrap_or(0))
            );
        }
        g => {
            let _ = write!(out, ", last gc failed: {}", g["error"].as_str().unwrap_or("?"));
        }
    }
    out.push('\n');
    let rows = v["upstreams"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        out.push_str("no upstreams configured\n");
        return out;
    }
    let mut table = vec![[
        "UPSTREAM",
        "REACHABLE",
        "HIT RATE",
        "HITS",
        "MISSES",
        "STALE",
        "ERRORS",
        "429s",
        "SAVED",
        "CACHED",
        "LAST ERROR",
    ]
    .map(String::from)];
    for u in &rows {
        let n = |k: &str| u[k].as_u64().unwrap_or(0).to_string();
        let reachable = match (u["reachable"].as_bool(), u["probe_ms"].as_u64()) {
            (Some(true), Some(ms)) => format!("yes ({ms} ms)"),
            _ => format!("NO: {}", u["probe_error"].as_str().unwrap_or("?")),
        };
        let hit_rate = u["hit_rate"].as_f64().map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        let cached = u["cache_bytes"].as_u64().map_or("-".to_owned(), mib);
        let last_error = match (u["last_error"].as_str(), u["last_error_at"].as_str()) {
            (Some(e), Some(at)) => format!("{at}: {e}"),
            (Some(e), None) => e.to_owned(),
            _ => "-".to_owned(),
        };
        table.push([
            u["host"].as_str().unwrap_or("?").to_owned(),
            reachable,
            hit_rate,
            n("hits"),
            n("misses"),
            n("stale"),
            n("upstream_errors"),
            n("rate_limited"),
            mib(u["bytes_saved"].as_u64().unwrap_or(0)),
            cached,
            last_error,
        ]);
    }
    let widths: Vec<usize> = (0..table[0].len()).map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for row in &table {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn print_gc(r: &GcReport) -> std::process::ExitCode {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for (d, size) in &r.blobs_removed {
        println!("{verb} blob {d} ({size} bytes)");
    }
    for m in &r.manifests_removed {
        println!("{verb} manifest {m}");
    }
    for u in &r.uploads_removed {
        println!("{verb} upload session {u}");
    }
    println!(
        "{}: {} blobs ({:.1} MiB), {} manifests, {} upload sessions; {} unreferenced blobs kept as recent; \
         scanned {} repositories, {} manifests, {} blobs in {} ms",
        if r.dry_run { "dry run" } else { "garbage collection" },
        r.blobs_removed.len(),
        r.bytes_freed as f64 / 1048576.0,
        r.manifests_removed.len(),
        r.uploads_removed.len(),
        r.blobs_kept_recent,
        r.repositories,
        r.manifests,
        r.blobs,
        r.duration_ms
    );
    std::process::ExitCode::SUCCESS
}

fn print_scrub(r: &cove_core::scrub::ScrubReport) -> std::process::ExitCode {
    for c in &r.corrupt {
        let place = c.repository.as_deref().map(|r| format!(" in {r}")).unwrap_or_default();
        let q = c.quarantined_to.as_ref().map(|p| format!("; moved to {}", p.display())).unwrap_or_default();
        println!("CORRUPT {} {}{place}: content is {}{q}", c.kind, c.digest, c.found);
    }
    println!(
        "scrub: {} blobs and {} manifests verified ({:.1} MiB) in {} ms; {} corrupt",
        r.blobs,
        r.manifests,
        r.bytes as f64 / 1048576.0,
        r.duration_ms,
        r.corrupt.len()
    );
    if r.corrupt.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
