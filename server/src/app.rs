//! The HTTP layer: one request in, one response out. The request's method
//! and path are routed into one [`Route`] ([`router`]), the access the route
//! declares is checked in one place ([`access`]), the route's handler runs
//! ([`oci`] for the registry API and the token endpoint, [`operations`] for
//! health, metrics and admin), and every error is turned into the spec's
//! JSON body in exactly one place ([`error_response`]). Request logs and
//! metrics are written here too, labelled by the parsed route.

pub mod access;
mod oci;
mod operations;
pub mod request;
pub mod response;
pub mod router;
mod uploads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};

use cove_core::{ErrorCode, Registry, RegistryError};

use crate::auth_slot::AuthSlot;
use crate::body::Body;
use crate::config::HttpLimits;
use crate::conn::body::RequestBody;
use crate::jobs::gc::GarbageCollector;
use crate::jobs::retention::RetentionJob;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use request::{declared_length, Query};
use response::{method_not_allowed, set};
use router::{NoRoute, Route, Routed};

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The `ns` a request was scoped by, echoed as the spec's proxying section
/// asks of a registry that uses it.
const OCI_NAMESPACE: HeaderName = HeaderName::from_static("oci-namespace");

/// Shared state of the HTTP application.
pub struct App {
    registry: Registry,
    /// Authentication and the access policy: consulted once per request,
    /// before any handler runs; a config reload swaps it.
    auth: Arc<AuthSlot>,
    /// Whether Cove terminates TLS itself: absolute URLs use `https`.
    tls: bool,
    /// `[server]` request limits (uploads, blob size).
    limits: HttpLimits,
    /// Open upload sessions by source, for the limits.
    uploads: uploads::UploadLimiter,
    ops: Operations,
    request_ids: AtomicU64,
    id_prefix: u32,
}

/// The components behind the operations endpoints.
pub struct Operations {
    pub metrics: Arc<Metrics>,
    pub gc: Arc<GarbageCollector>,
    pub retention: Arc<RetentionJob>,
    pub prefetch: Arc<crate::jobs::prefetch::PrefetchJob>,
    pub reloader: Arc<Reloader>,
    /// Where `POST /admin/scrub?quarantine=true` moves corrupt objects.
    pub quarantine_dir: PathBuf,
    /// The replica name and when it started (`/admin/status`).
    pub identity: crate::status::ServerIdentity,
    /// The web interface (`None` when `[ui] enabled = false`).
    pub ui: Option<crate::ui::Ui>,
}

/// Per-request context for logs.
struct Ctx {
    id: String,
}

impl App {
    /// `tls` when Cove terminates TLS; `limits` from `[server]`.
    pub fn new(registry: Registry, auth: Arc<AuthSlot>, tls: bool, limits: HttpLimits, ops: Operations) -> App {
        App {
            registry,
            auth,
            tls,
            uploads: uploads::UploadLimiter::new(limits.max_uploads, limits.max_uploads_per_source),
            limits,
            ops,
            request_ids: AtomicU64::new(0),
            id_prefix: uuid::Uuid::new_v4().as_fields().0,
        }
    }

    /// Whether a connection from `ip` may be served at all: it is in
    /// `auth.trusted_networks`, a trusted proxy (which forwards for
    /// clients judged per request), or `127.0.0.1`/`::1` (the `cove` admin
    /// commands).
    pub fn admits_connection(&self, ip: std::net::IpAddr) -> bool {
        let auth = self.auth.current();
        let b = auth.boundary();
        let local = match cove_auth::network::canonical_ip(ip) {
            std::net::IpAddr::V4(v4) => v4 == std::net::Ipv4Addr::LOCALHOST,
            std::net::IpAddr::V6(v6) => v6 == std::net::Ipv6Addr::LOCALHOST,
        };
        local || b.is_trusted(ip) || b.is_proxy(ip)
    }

    /// What the web interface reads and acts on for one request.
    fn ui_context<'a>(&'a self, grant: &'a access::Grant, peer: SocketAddr) -> crate::ui::Context<'a> {
        crate::ui::Context {
            registry: &self.registry,
            grant,
            peer,
            tls: self.tls,
            gc: &self.ops.gc,
            retention: &self.ops.retention,
            identity: &self.ops.identity,
        }
    }

    /// The server's metrics.
    pub fn metrics_handle(&self) -> &Arc<Metrics> {
        &self.ops.metrics
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(self: Arc<Self>, req: Request<RequestBody>, peer: SocketAddr) -> Response<Body> {
        let start = Instant::now();
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        let ctx = Ctx { id: format!("{:08x}{:08x}", self.id_prefix, n) };
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = Query::parse(req.uri().query());
        // containerd's mirror namespace, so logs show which upstream a request meant.
        let ns = query.get("ns").map(str::to_owned);
        let is_head = method == Method::HEAD;
        // Which credentials came (never their value): shows the token flow at work.
        let auth_scheme = auth_scheme(req.headers());
        let request_bytes = declared_length(req.headers());
        let Routed { label, route } = router::route(&method, &path);
        let allow = route.as_ref().err().and_then(NoRoute::allow_header);
        let mut resp = match self.respond(req, peer, route, &query).await {
            Ok(r) => r,
            Err(e) => {
                if e.code == ErrorCode::Internal {
                    tracing::error!(request_id = %ctx.id, %method, %path, error = %e.message, "internal error");
                }
                error_response(&e, is_head)
            }
        };
        let h = resp.headers_mut();
        h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        if let Ok(v) = HeaderValue::from_str(&ctx.id) {
            h.insert(REQUEST_ID, v);
        }
        if let Some(allow) = allow {
            set(h, http::header::ALLOW, &allow);
        }
        let bytes = resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info!(
            request_id = %ctx.id,
            peer = %peer.ip(),
            %method,
            %path,
            ns = ns.as_deref().unwrap_or(""),
            auth = auth_scheme,
            status = resp.status().as_u16(),
            bytes,
            duration_ms = format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
            "request"
        );
        let status = resp.status().as_u16();
        let (parts, b) = resp.into_parts();
        let b = self.ops.metrics.record_request(label, method.as_str(), status, request_bytes, start.elapsed(), b);
        Response::from_parts(parts, b)
    }

    /// Checks the route's access, then runs its handler.
    async fn respond(
        &self,
        mut req: Request<RequestBody>,
        peer: SocketAddr,
        route: Result<Route, NoRoute>,
        query: &Query,
    ) -> Result<Response<Body>, RegistryError> {
        let auth = self.auth.current();
        normalize_headers(&mut req, auth.boundary().is_proxy(peer.ip()));
        let route = match route {
            Ok(r) => r,
            Err(NoRoute::NotFound { admin: true }) => {
                return Err(RegistryError::new(ErrorCode::NameUnknown, "no such admin endpoint"))
            }
            Err(NoRoute::NotFound { admin: false }) => {
                return Err(RegistryError::new(ErrorCode::NameUnknown, "no such API endpoint"))
            }
            Err(NoRoute::MethodNotAllowed { .. }) => return Err(method_not_allowed()),
        };
        let grant = access::check(&route, auth, &self.registry, req.headers(), peer, query.get("ns")).await?;
        match route {
            Route::ApiBase => Ok(self.api_base()),
            Route::Catalog => self.catalog(query, &grant).await,
            Route::Repository { op, .. } => {
                let Some(repo) = grant.repository.clone() else {
                    return Err(RegistryError::internal("endpoint without repository"));
                };
                let mut resp = self.repository(op, repo, req, peer, query, &grant).await?;
                // Only reached when `ns` named a configured upstream or Cove
                // itself (without upstreams, `ns` is ignored, so not echoed).
                if let Some(ns) = query.get("ns").filter(|_| self.registry.cache().is_some()) {
                    set(resp.headers_mut(), OCI_NAMESPACE, ns);
                }
                Ok(resp)
            }
            Route::Token => self.token(&req, peer, &grant).await,
            Route::Health => Ok(self.health()),
            Route::Ready => Ok(self.ready().await),
            Route::Metrics => self.metrics().await,
            Route::Admin(op) => self.admin(op, query).await,
            Route::Ui { path, method } => match &self.ops.ui {
                Some(ui) => Ok(ui.handle(self.ui_context(&grant, peer), &path, method, req).await),
                None => Err(RegistryError::new(ErrorCode::NameUnknown, "no such API endpoint")),
            },
        }
    }
}

/// HTTP/2 carries the host in `:authority`, not `Host`: absolute URLs need
/// it. The scheme and host a client used are a reverse proxy's to say: from
/// any other peer they are dropped before anything reads them.
fn normalize_headers(req: &mut Request<RequestBody>, from_proxy: bool) {
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(v) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    if !from_proxy {
        req.headers_mut().remove("x-forwarded-proto");
        req.headers_mut().remove("x-forwarded-host");
    }
}

/// The scheme of the `Authorization` header for the request log: `none`,
/// `basic`, `bearer` or `other`. Never the credentials themselves.
fn auth_scheme(headers: &HeaderMap) -> &'static str {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return "none";
    };
    let scheme = v.as_bytes().split(|b| *b == b' ').next().unwrap_or_default();
    if scheme.eq_ignore_ascii_case(b"basic") {
        "basic"
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        "bearer"
    } else {
        "other"
    }
}

/// Turns an error into the spec's JSON error response (see [`crate::error`]).
pub fn error_response(e: &RegistryError, head: bool) -> Response<Body> {
    crate::error::response(e, head)
}
