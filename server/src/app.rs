//! The HTTP application: one request in, one response out. Requests are
//! parsed into a typed [`Endpoint`], authorised in one place, dispatched to
//! the registry engine, and every error is turned into the spec's JSON body
//! in exactly one place ([`crate::error`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};

use cove_auth::AuthService;
use cove_core::manifest::{too_large as manifest_too_large, MAX_MANIFEST_SIZE, OCI_INDEX};
use cove_core::registry::Page;
use cove_core::{Action, AuthRequest, Digest, ErrorCode, Reference, Registry, RegistryError, RepoName};

use crate::body::{self, Body};
use crate::routes::Endpoint;

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS: HeaderName = HeaderName::from_static("oci-filters-applied");
/// How a pull-through response was served: hit, miss, revalidated or stale.
const CACHE_STATUS: HeaderName = HeaderName::from_static("x-cove-cache");

/// Largest `n` honoured in a paginated request; larger values are clamped
/// (the client follows the `Link` header for the rest).
const MAX_PAGE: usize = 10_000;

/// Shared state of the HTTP application.
pub struct App {
    pub registry: Registry,
    /// Authentication and the access policy: consulted once per request,
    /// before any handler runs. Swapped whole by a config reload; a request
    /// takes one snapshot ([`App::auth`]) and never sees a mix.
    auth: std::sync::RwLock<Arc<AuthService>>,
    /// `server.public_url` without a trailing slash.
    pub public_url: Option<String>,
    request_ids: AtomicU64,
    id_prefix: u32,
    /// Operations state (metrics, GC, health); set once by `ops::install`.
    pub ops: std::sync::OnceLock<Arc<crate::ops::Ops>>,
    /// Config reload (SIGHUP, `POST /admin/reload`); set once at start.
    pub reloader: std::sync::OnceLock<Arc<crate::reload::Reloader>>,
    /// Whether Cove terminates TLS itself: absolute URLs use `https`.
    pub tls: bool,
}

/// Per-request context for logs.
struct Ctx {
    id: String,
}

impl App {
    pub fn new(registry: Registry, auth: Arc<AuthService>, public_url: Option<String>) -> App {
        App {
            registry,
            auth: std::sync::RwLock::new(auth),
            public_url,
            request_ids: AtomicU64::new(0),
            id_prefix: uuid::Uuid::new_v4().as_fields().0,
            ops: std::sync::OnceLock::new(),
            reloader: std::sync::OnceLock::new(),
            tls: false,
        }
    }

    /// The authentication service in effect now (one snapshot per request).
    pub fn auth(&self) -> Arc<AuthService> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the authentication service (config reload). Requests that
    /// already took a snapshot finish with the old one.
    pub fn set_auth(&self, auth: Arc<AuthService>) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = auth;
    }

    /// Handles one request; never fails (errors become responses).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let start = Instant::now();
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        let ctx = Ctx { id: format!("{:08x}{:08x}", self.id_prefix, n) };
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        // containerd's mirror namespace, so logs show which upstream a request meant.
        let ns = req.uri().query().and_then(|q| Query::parse(Some(q)).get("ns").map(str::to_owned));
        let is_head = method == Method::HEAD;
        // Which credentials came (never their value): shows the token flow at work.
        let auth_scheme = auth_scheme(req.headers());
        let request_bytes = crate::ops::declared_length(req.headers()); // ops hook (issue 7): metrics
        let mut resp = match self.route(req, peer).await {
            Ok(r) => r,
            Err(e) => {
                if e.code == ErrorCode::Internal {
                    tracing::error!(request_id = %ctx.id, %method, %path, error = %e.message, "internal error");
                }
                crate::error::response(&e, is_head)
            }
        };
        let h = resp.headers_mut();
        h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
        if let Ok(v) = HeaderValue::from_str(&ctx.id) {
            h.insert(REQUEST_ID, v);
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
        // ops hook (issue 7): metrics
        crate::ops::record(&self, &method, &path, request_bytes, start.elapsed(), resp)
    }

    async fn route(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, RegistryError> {
        // HTTP/2 carries the host in `:authority`, not `Host`: absolute URLs need it.
        if !req.headers().contains_key(http::header::HOST) {
            if let Some(v) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
        // The scheme and host a client used are a reverse proxy's to say:
        // from any other peer they are dropped before anything reads them.
        if !self.auth().boundary().is_proxy(peer.ip()) {
            req.headers_mut().remove("x-forwarded-proto");
            req.headers_mut().remove("x-forwarded-host");
        }
        if req.uri().path() == "/token" {
            return self.token(&req, peer).await;
        }
        // ops hook (issue 7): /healthz, /readyz, /metrics, /admin/*
        if let Some(resp) = crate::ops::route(self, &req, peer).await {
            return resp;
        }
        let endpoint = Endpoint::parse(req.uri().path())
            .ok_or_else(|| RegistryError::new(ErrorCode::NameUnknown, "no such API endpoint"))?;
        let query = Query::parse(req.uri().query());
        let repo = match endpoint.name() {
            Some(n) => Some(self.registry.resolve_name(n, query.get("ns"))?),
            None => None,
        };
        let action = match (&endpoint, req.method()) {
            // Every upload operation, even a status GET, is part of a push.
            (Endpoint::UploadStart { .. } | Endpoint::Upload { .. }, _) => Action::Push,
            (_, &Method::GET | &Method::HEAD) => Action::Pull,
            (_, &Method::DELETE) => Action::Delete,
            _ => Action::Push,
        };
        let need = repo.as_ref().map(|r| (r, action));
        let fwd = Forwarding::of(req.headers());
        let areq = auth_request(req.headers(), peer, &fwd);
        let auth = self.auth();
        let identity = match endpoint {
            // Listing repositories needs the catalog scope, not just any token.
            Endpoint::Catalog => auth.authorize_catalog(&areq).await?,
            _ => auth.authorize(&areq, need).await?,
        };
        let method = req.method().clone();
        match (endpoint, repo) {
            (Endpoint::Base, _) => match method {
                Method::GET | Method::HEAD => Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}"))),
                _ => Err(method_not_allowed()),
            },
            (Endpoint::Catalog, _) => match method {
                Method::GET => {
                    let (n, last) = query.page()?;
                    let page =
                        self.registry.catalog(n, last.as_deref(), |r| auth.visible_in_catalog(&identity, r)).await?;
                    Ok(page_response("repositories", None, page, n))
                }
                _ => Err(method_not_allowed()),
            },
            (Endpoint::Tags { .. }, Some(repo)) => match method {
                Method::GET => {
                    let (n, last) = query.page()?;
                    let page = self.registry.tags(&repo, n, last.as_deref()).await?;
                    Ok(page_response("tags", Some(&repo), page, n))
                }
                _ => Err(method_not_allowed()),
            },
            (Endpoint::Manifest { reference, .. }, Some(repo)) => self.manifest(req, method, repo, &reference).await,
            (Endpoint::Blob { digest, .. }, Some(repo)) => {
                let digest: Digest = digest.parse()?;
                match method {
                    Method::GET | Method::HEAD => {
                        self.get_blob(req.headers(), method == Method::HEAD, &repo, &digest).await
                    }
                    Method::DELETE => {
                        self.registry.delete_blob(&repo, &digest).await?;
                        Ok(status_response(StatusCode::ACCEPTED))
                    }
                    _ => Err(method_not_allowed()),
                }
            }
            (Endpoint::UploadStart { .. }, Some(repo)) => match method {
                Method::POST => self.start_upload(req, peer, repo, &query, &auth).await,
                _ => Err(method_not_allowed()),
            },
            (Endpoint::Upload { id, .. }, Some(repo)) => self.upload(req, method, repo, &id, &query).await,
            (Endpoint::Referrers { digest, .. }, Some(repo)) => match method {
                Method::GET => {
                    let digest: Digest = digest.parse()?;
                    let r = self.registry.referrers(&repo, &digest, query.get("artifactType")).await?;
                    let mut resp = typed_response(StatusCode::OK, OCI_INDEX, r.body);
                    if r.filtered {
                        resp.headers_mut().insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
                    }
                    Ok(resp)
                }
                _ => Err(method_not_allowed()),
            },
            (_, None) => Err(RegistryError::internal("endpoint without repository")),
        }
    }

    /// `GET /token`: the Docker token endpoint for CLIs that log in with
    /// credentials and then use short-lived registry-issued tokens.
    async fn token(&self, req: &Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, RegistryError> {
        if req.method() != Method::GET {
            return Err(method_not_allowed());
        }
        let fwd = Forwarding::of(req.headers());
        let t = self.auth().token(req.uri().query().unwrap_or(""), &auth_request(req.headers(), peer, &fwd)).await?;
        let mut resp = json_response(StatusCode::OK, Bytes::from(t.to_json().to_string()));
        set(resp.headers_mut(), http::header::CACHE_CONTROL, "no-store");
        Ok(resp)
    }

    async fn manifest(
        &self,
        req: Request<Incoming>,
        method: Method,
        repo: RepoName,
        reference: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let reference: Reference = match reference.parse() {
            Ok(r) => r,
            Err(e) if e.code == ErrorCode::DigestInvalid || method == Method::PUT => return Err(e),
            Err(_) => return Err(RegistryError::manifest_unknown(reference)),
        };
        match method {
            Method::GET | Method::HEAD => {
                let (m, cache) = self.registry.get_manifest(&repo, &reference).await?;
                let cache_header = cache.map(|c| c.as_str());
                let mut resp =
                    Response::new(if method == Method::HEAD { body::empty() } else { body::full(m.bytes.clone()) });
                let h = resp.headers_mut();
                set(h, http::header::CONTENT_TYPE, &m.media_type);
                set(h, http::header::CONTENT_LENGTH, &m.bytes.len().to_string());
                set(h, CONTENT_DIGEST, &m.digest.to_string());
                set(h, http::header::ETAG, &format!("\"{}\"", m.digest));
                if let Some(c) = cache_header {
                    set(h, CACHE_STATUS, c);
                }
                Ok(resp)
            }
            Method::PUT => {
                let content_type =
                    req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let location_base = self.base_url(req.headers());
                if content_length(req.headers())?.is_some_and(|l| l > MAX_MANIFEST_SIZE as u64) {
                    return Err(manifest_too_large());
                }
                let bytes = Limited::new(req.into_body(), MAX_MANIFEST_SIZE)
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                            manifest_too_large()
                        } else {
                            RegistryError::new(ErrorCode::ManifestInvalid, "manifest body could not be read")
                        }
                    })?
                    .to_bytes();
                let put = self.registry.put_manifest(&repo, &reference, content_type.as_deref(), bytes).await?;
                let mut resp = status_response(StatusCode::CREATED);
                let h = resp.headers_mut();
                set(h, http::header::LOCATION, &format!("{location_base}/v2/{repo}/manifests/{}", put.digest));
                set(h, CONTENT_DIGEST, &put.digest.to_string());
                if let Some(subject) = &put.subject {
                    set(h, OCI_SUBJECT, &subject.to_string());
                }
                Ok(resp)
            }
            Method::DELETE => {
                self.registry.delete_manifest(&repo, &reference).await?;
                Ok(status_response(StatusCode::ACCEPTED))
            }
            _ => Err(method_not_allowed()),
        }
    }

    async fn get_blob(
        &self,
        headers: &HeaderMap,
        head: bool,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Response<Body>, RegistryError> {
        let range = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok()).and_then(crate::range::parse_range);
        let (b, cache) = self.registry.get_blob(repo, digest, range.as_ref(), head).await?;
        let status = if b.range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
        let (size, range) = (b.size, b.range);
        let body = if head { body::empty() } else { body::stream(b.body) };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if let Some(len) = range.map(|r| r.len()).or(size) {
            set(h, http::header::CONTENT_LENGTH, &len.to_string());
        }
        if let Some(c) = cache {
            set(h, CACHE_STATUS, c.as_str());
        }
        set(h, http::header::CONTENT_TYPE, "application/octet-stream");
        set(h, CONTENT_DIGEST, &digest.to_string());
        set(h, http::header::ETAG, &format!("\"{digest}\""));
        set(h, http::header::ACCEPT_RANGES, "bytes");
        set(h, http::header::CACHE_CONTROL, "max-age=31536000");
        if let (Some(r), Some(size)) = (range, size) {
            set(h, http::header::CONTENT_RANGE, &format!("bytes {}-{}/{size}", r.start, r.end));
        }
        Ok(resp)
    }

    async fn start_upload(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        repo: RepoName,
        query: &Query,
        auth: &AuthService,
    ) -> Result<Response<Body>, RegistryError> {
        let base = self.base_url(req.headers());
        if let Some(mount) = query.get("mount") {
            let digest: Digest = mount.parse()?;
            if let Some(from) = query.get("from") {
                let from = self.registry.resolve_name(from, query.get("ns"))?;
                // Mounting reads the source: the caller must be allowed to pull it.
                let fwd = Forwarding::of(req.headers());
                let pull_ok = auth.may_mount_from(&auth_request(req.headers(), peer, &fwd), &from).await;
                if pull_ok && self.registry.mount_blob(&repo, &digest, &from).await? {
                    return Ok(blob_created(&base, &repo, &digest));
                }
            }
        } else if let Some(digest) = query.get("digest") {
            let digest: Digest = digest.parse()?;
            let length = content_length(req.headers())?;
            let body = body::incoming(req.into_body());
            let body = match length {
                Some(l) => cove_core::registry::exact_length(body, l),
                None => body,
            };
            self.registry.put_blob(&repo, &digest, body, length).await?;
            return Ok(blob_created(&base, &repo, &digest));
        }
        let info = self.registry.start_upload(&repo).await?;
        Ok(upload_accepted(&base, &repo, &info.id, 0, StatusCode::ACCEPTED))
    }

    async fn upload(
        &self,
        req: Request<Incoming>,
        method: Method,
        repo: RepoName,
        id: &str,
        query: &Query,
    ) -> Result<Response<Body>, RegistryError> {
        let base = self.base_url(req.headers());
        match method {
            Method::GET => {
                let info = self.registry.upload_status(&repo, id).await?;
                Ok(upload_accepted(&base, &repo, id, info.size, StatusCode::NO_CONTENT))
            }
            Method::PATCH => {
                let range = match req.headers().get(http::header::CONTENT_RANGE) {
                    Some(v) => Some(crate::range::parse_content_range(v)?),
                    None => None,
                };
                let length = content_length(req.headers())?;
                let body = body::incoming(req.into_body());
                let size = self.registry.upload_chunk(&repo, id, range, length, body).await?;
                Ok(upload_accepted(&base, &repo, id, size, StatusCode::ACCEPTED))
            }
            Method::PUT => {
                let digest: Digest = query
                    .get("digest")
                    .ok_or_else(|| {
                        RegistryError::new(
                            ErrorCode::DigestInvalid,
                            "the digest query parameter is required to complete an upload",
                        )
                    })?
                    .parse()?;
                let length = content_length(req.headers())?;
                let has_body =
                    length.is_some_and(|l| l > 0) || (length.is_none() && req.body().size_hint().exact() != Some(0));
                let body = has_body.then(|| (body::incoming(req.into_body()), length));
                self.registry.finish_upload(&repo, id, &digest, body).await?;
                Ok(blob_created(&base, &repo, &digest))
            }
            Method::DELETE => {
                self.registry.cancel_upload(&repo, id).await?;
                Ok(status_response(StatusCode::NO_CONTENT))
            }
            _ => Err(method_not_allowed()),
        }
    }

    /// The scheme and host to prefix `Location` headers with: the configured
    /// public URL, else what a reverse proxy says, else nothing (relative).
    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let get =
            |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or(v).trim());
        match (get("x-forwarded-proto"), get("x-forwarded-host").or_else(|| get("host"))) {
            (Some(proto), Some(host)) if matches!(proto, "http" | "https") && valid_host(host) => {
                format!("{proto}://{host}")
            }
            // TLS terminated here: the client reached us over https.
            (None, Some(host)) if self.tls && valid_host(host) => format!("https://{host}"),
            _ => String::new(),
        }
    }
}

/// What the authenticator may see of a request. A non-UTF-8 `Authorization`
/// header is passed as empty so it is refused as malformed, not ignored.
/// `forwarded` is [`Forwarding::of`] the same headers.
fn auth_request<'a>(headers: &'a HeaderMap, peer: SocketAddr, forwarded: &'a Forwarding) -> AuthRequest<'a> {
    AuthRequest {
        peer: peer.ip(),
        authorization: headers.get(http::header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("")),
        forwarded_for: forwarded.x_forwarded_for.as_deref(),
        forwarded: forwarded.forwarded.as_deref(),
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

/// The forwarding headers of a request, each header's lines joined in order
/// (proxies may send several). A line that is not text is kept as an
/// unreadable entry, so it is judged (and refused) rather than skipped.
struct Forwarding {
    x_forwarded_for: Option<String>,
    forwarded: Option<String>,
}

impl Forwarding {
    fn of(headers: &HeaderMap) -> Forwarding {
        let joined = |name: &str| {
            let parts: Vec<&str> = headers.get_all(name).iter().map(|v| v.to_str().unwrap_or("?")).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        };
        Forwarding { x_forwarded_for: joined("x-forwarded-for"), forwarded: joined("forwarded") }
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn status_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

fn typed_response(status: StatusCode, content_type: &str, bytes: Bytes) -> Response<Body> {
    let len = bytes.len();
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    set(resp.headers_mut(), http::header::CONTENT_TYPE, content_type);
    set(resp.headers_mut(), http::header::CONTENT_LENGTH, &len.to_string());
    resp
}

fn json_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    typed_response(status, "application/json", bytes)
}

fn page_response(key: &str, repo: Option<&RepoName>, page: Page, n: Option<usize>) -> Response<Body> {
    let mut doc = serde_json::json!({ key: page.items });
    if let Some(repo) = repo {
        doc["name"] = serde_json::Value::String(repo.to_string());
    }
    let mut resp = json_response(StatusCode::OK, Bytes::from(doc.to_string()));
    if let (Some(last), Some(n)) = (page.next_last, n) {
        let path = match repo {
            Some(r) => format!("/v2/{r}/tags/list"),
            None => "/v2/_catalog".to_owned(),
        };
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        set(resp.headers_mut(), http::header::LINK, &format!("<{path}?n={n}&last={last}>; rel=\"next\""));
    }
    resp
}

fn blob_created(base: &str, repo: &RepoName, digest: &Digest) -> Response<Body> {
    let mut resp = status_response(StatusCode::CREATED);
    let h = resp.headers_mut();
    set(h, http::header::LOCATION, &format!("{base}/v2/{repo}/blobs/{digest}"));
    set(h, CONTENT_DIGEST, &digest.to_string());
    resp
}

fn upload_accepted(base: &str, repo: &RepoName, id: &str, size: u64, status: StatusCode) -> Response<Body> {
    let mut resp = status_response(status);
    let h = resp.headers_mut();
    set(h, http::header::LOCATION, &format!("{base}/v2/{repo}/blobs/uploads/{id}"));
    set(h, http::header::RANGE, &crate::error::upload_range(size));
    set(h, UPLOAD_UUID, id);
    resp
}

fn method_not_allowed() -> RegistryError {
    RegistryError::unsupported("method not allowed on this endpoint")
}

fn content_length(h: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    match h.get(http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| RegistryError::new(ErrorCode::SizeInvalid, "invalid Content-Length")),
    }
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `n` and `last` for paginated lists.
    fn page(&self) -> Result<(Option<usize>, Option<String>), RegistryError> {
        let n = match self.get("n") {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .map_err(|_| RegistryError::new(ErrorCode::PaginationInvalid, "n must be a non-negative integer"))?
                    .min(MAX_PAGE),
            ),
        };
        Ok((n, self.get("last").filter(|l| !l.is_empty()).map(str::to_owned)))
    }
}
