//! The one router: a request's method and path become one [`Route`], or
//! the reason there is none (404, or 405 with the methods the path allows).
//! Every route declares the [`Access`] it needs; `app::access` checks it, in
//! one place, before any handler runs. Metric labels come from here too.
//!
//! OCI paths carry repository names with slashes, so `/v2/…` is parsed from
//! the right. A path is first matched to a [`Resource`]; the route table
//! ([`Resource::route`]) then picks the route by method, and the `Allow`
//! header of a 405 is derived from that same table. The web interface is
//! one more resource (`/` and `/ui/…`) with the access it needs.

use http::Method;

use cove_core::Action;

/// One thing a request can do, with its raw (not yet validated) parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET|HEAD /v2/`: the API version check.
    ApiBase,
    /// `GET /v2/_catalog`
    Catalog,
    /// `/v2/<name>/…`: an operation on one repository.
    Repository { name: String, op: RepoOp },
    /// `GET /token`: the Docker token endpoint.
    Token,
    /// `GET|HEAD /healthz`: liveness.
    Health,
    /// `GET|HEAD /readyz`: storage reachable and writable.
    Ready,
    /// `GET|HEAD /metrics`: Prometheus text.
    Metrics,
    /// `/admin/…`: operations for the local administrator.
    Admin(AdminOp),
    /// `GET|HEAD|POST /` and `/ui/…`: the web interface (`server/src/ui`),
    /// which picks its page from `path`.
    Ui { path: String, method: UiMethod },
}

/// The methods the web interface answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiMethod {
    Get,
    Head,
    Post,
}

/// An operation on one repository (`/v2/<name>/…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoOp {
    /// `GET|HEAD …/manifests/<reference>`
    GetManifest { reference: String, head: bool },
    /// `PUT …/manifests/<reference>`
    PutManifest { reference: String },
    /// `DELETE …/manifests/<reference>`
    DeleteManifest { reference: String },
    /// `GET|HEAD …/blobs/<digest>`
    GetBlob { digest: String, head: bool },
    /// `DELETE …/blobs/<digest>`
    DeleteBlob { digest: String },
    /// `POST …/blobs/uploads/`: a session, a monolithic upload or a mount.
    StartUpload,
    /// `GET …/blobs/uploads/<id>`
    UploadStatus { id: String },
    /// `PATCH …/blobs/uploads/<id>`
    UploadChunk { id: String },
    /// `PUT …/blobs/uploads/<id>?digest=…`
    FinishUpload { id: String },
    /// `DELETE …/blobs/uploads/<id>`
    CancelUpload { id: String },
    /// `GET …/tags/list`
    ListTags,
    /// `GET …/referrers/<digest>`
    ListReferrers { digest: String },
}

/// An admin endpoint (`POST` runs something, `GET` reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    /// `POST /admin/gc[?dry_run=true]`
    Gc,
    /// `POST /admin/scrub[?quarantine=true]`
    Scrub,
    /// `POST /admin/retention[?dry_run=true]`
    Retention,
    /// `POST /admin/reload`
    Reload,
    /// `GET /admin/status`
    Status,
    /// `POST /admin/prefetch?ref=IMAGE[&ref=…][&platform=os/arch]`
    Prefetch,
}

/// What a route requires of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes and scrapes.
    Public,
    /// The token endpoint: judging the network boundary and the
    /// credentials is what it does, so it does it itself.
    TokenIssuer,
    /// Any caller the authenticator admits (`GET /v2/`).
    Authenticated,
    /// The catalog scope.
    Catalog,
    /// `action` on the route's repository.
    Repository(Action),
    /// A loopback peer without forwarding headers (no reverse proxy may
    /// expose the admin endpoints).
    LoopbackAdmin,
    /// The web interface: the network boundary here; the identity comes
    /// from the UI's session and each page asks the access policy itself.
    Browser,
}

impl Route {
    /// The access this route needs.
    pub fn access(&self) -> Access {
        match self {
            Route::ApiBase => Access::Authenticated,
            Route::Catalog => Access::Catalog,
            Route::Repository { op, .. } => Access::Repository(op.action()),
            Route::Token => Access::TokenIssuer,
            Route::Health | Route::Ready | Route::Metrics => Access::Public,
            Route::Admin(_) => Access::LoopbackAdmin,
            Route::Ui { .. } => Access::Browser,
        }
    }
}

impl RepoOp {
    /// The permission the operation needs on its repository. Every upload
    /// operation, even a status GET, is part of a push.
    pub fn action(&self) -> Action {
        match self {
            RepoOp::GetManifest { .. } | RepoOp::GetBlob { .. } | RepoOp::ListTags | RepoOp::ListReferrers { .. } => {
                Action::Pull
            }
            RepoOp::DeleteManifest { .. } | RepoOp::DeleteBlob { .. } => Action::Delete,
            RepoOp::PutManifest { .. }
            | RepoOp::StartUpload
            | RepoOp::UploadStatus { .. }
            | RepoOp::UploadChunk { .. }
            | RepoOp::FinishUpload { .. }
            | RepoOp::CancelUpload { .. } => Action::Push,
        }
    }
}

/// A routed request: its metrics label, and the route or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// A short label for logs and metrics (`manifest`, `admin`, `other`).
    pub label: &'static str,
    pub route: Result<Route, NoRoute>,
}

/// Why a request has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No such path (`admin`: under `/admin/`).
    NotFound { admin: bool },
    /// The path exists but not with this method; `allow` lists those it has.
    MethodNotAllowed { allow: Vec<Method> },
}

/// Every method a route may have, in the order `Allow` lists them.
const METHODS: [Method; 6] = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// Routes a request.
pub fn route(method: &Method, path: &str) -> Routed {
    let Some(resource) = Resource::parse(path) else {
        let admin = path.starts_with("/admin/");
        return Routed { label: if admin { "admin" } else { "other" }, route: Err(NoRoute::NotFound { admin }) };
    };
    let label = resource.label();
    let route = match resource.clone().route(method) {
        Some(r) => Ok(r),
        None => {
            let allow = METHODS.iter().filter(|m| resource.clone().route(m).is_some()).cloned().collect();
            Err(NoRoute::MethodNotAllowed { allow })
        }
    };
    Routed { label, route }
}

impl NoRoute {
    /// The `Allow` header value of a 405 (`GET, HEAD`).
    pub fn allow_header(&self) -> Option<String> {
        match self {
            NoRoute::MethodNotAllowed { allow } => {
                Some(allow.iter().map(Method::as_str).collect::<Vec<_>>().join(", "))
            }
            NoRoute::NotFound { .. } => None,
        }
    }
}

/// What a path names, before the method picks a route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        name: String,
        reference: String,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        name: String,
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart {
        name: String,
    },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload {
        name: String,
        id: String,
    },
    /// `/v2/<name>/tags/list`
    Tags {
        name: String,
    },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        name: String,
        digest: String,
    },
    Token,
    Health,
    Ready,
    Metrics,
    Admin(AdminOp),
    /// `/` and `/ui/…`
    Ui(String),
}

impl Resource {
    /// Parses a request path. `None` for paths that name nothing.
    fn parse(path: &str) -> Option<Resource> {
        Some(match path {
            "/token" => Resource::Token,
            "/healthz" => Resource::Health,
            "/readyz" => Resource::Ready,
            "/metrics" => Resource::Metrics,
            "/admin/gc" => Resource::Admin(AdminOp::Gc),
            "/admin/scrub" => Resource::Admin(AdminOp::Scrub),
            "/admin/retention" => Resource::Admin(AdminOp::Retention),
            "/admin/reload" => Resource::Admin(AdminOp::Reload),
            "/admin/status" => Resource::Admin(AdminOp::Status),
            "/admin/prefetch" => Resource::Admin(AdminOp::Prefetch),
            p if p == "/" || p == "/ui" || p.starts_with("/ui/") => Resource::Ui(p.to_owned()),
            p => return Resource::parse_v2(p),
        })
    }

    /// Parses `/v2/…` from the right.
    fn parse_v2(path: &str) -> Option<Resource> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Resource::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Resource::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        if n < 3 {
            return None;
        }
        let name = |k: usize| segs[..n - k].join("/");
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            let id = segs[n - 1];
            return Some(if id.is_empty() {
                Resource::UploadStart { name: name(3) }
            } else {
                Resource::Upload { name: name(3), id: id.to_owned() }
            });
        }
        if segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Some(Resource::UploadStart { name: name(2) });
        }
        let last = percent_decode(segs[n - 1]);
        match segs[n - 2] {
            "tags" if segs[n - 1] == "list" => Some(Resource::Tags { name: name(2) }),
            "manifests" => Some(Resource::Manifest { name: name(2), reference: last }),
            "blobs" => Some(Resource::Blob { name: name(2), digest: last }),
            "referrers" => Some(Resource::Referrers { name: name(2), digest: last }),
            _ => None,
        }
    }

    /// The route table: which method on this resource is which route.
    fn route(self, method: &Method) -> Option<Route> {
        let head = method == Method::HEAD;
        let repo = |name: String, op: RepoOp| Route::Repository { name, op };
        Some(match (self, method.as_str()) {
            (Resource::Base, "GET" | "HEAD") => Route::ApiBase,
            (Resource::Catalog, "GET") => Route::Catalog,
            (Resource::Manifest { name, reference }, "GET" | "HEAD") => {
                repo(name, RepoOp::GetManifest { reference, head })
            }
            (Resource::Manifest { name, reference }, "PUT") => repo(name, RepoOp::PutManifest { reference }),
            (Resource::Manifest { name, reference }, "DELETE") => repo(name, RepoOp::DeleteManifest { reference }),
            (Resource::Blob { name, digest }, "GET" | "HEAD") => repo(name, RepoOp::GetBlob { digest, head }),
            (Resource::Blob { name, digest }, "DELETE") => repo(name, RepoOp::DeleteBlob { digest }),
            (Resource::UploadStart { name }, "POST") => repo(name, RepoOp::StartUpload),
            (Resource::Upload { name, id }, "GET") => repo(name, RepoOp::UploadStatus { id }),
            (Resource::Upload { name, id }, "PATCH") => repo(name, RepoOp::UploadChunk { id }),
            (Resource::Upload { name, id }, "PUT") => repo(name, RepoOp::FinishUpload { id }),
            (Resource::Upload { name, id }, "DELETE") => repo(name, RepoOp::CancelUpload { id }),
            (Resource::Tags { name }, "GET") => repo(name, RepoOp::ListTags),
            (Resource::Referrers { name, digest }, "GET") => repo(name, RepoOp::ListReferrers { digest }),
            (Resource::Token, "GET") => Route::Token,
            (Resource::Health, "GET" | "HEAD") => Route::Health,
            (Resource::Ready, "GET" | "HEAD") => Route::Ready,
            (Resource::Metrics, "GET" | "HEAD") => Route::Metrics,
            (Resource::Admin(op @ AdminOp::Status), "GET") => Route::Admin(op),
            (Resource::Admin(op), "POST") if op != AdminOp::Status => Route::Admin(op),
            (Resource::Ui(path), "GET") => Route::Ui { path, method: UiMethod::Get },
            (Resource::Ui(path), "HEAD") => Route::Ui { path, method: UiMethod::Head },
            (Resource::Ui(path), "POST") => Route::Ui { path, method: UiMethod::Post },
            _ => return None,
        })
    }

    /// The metrics label of everything at this path.
    fn label(&self) -> &'static str {
        match self {
            Resource::Base => "base",
            Resource::Catalog => "catalog",
            Resource::Manifest { .. } => "manifest",
            Resource::Blob { .. } => "blob",
            Resource::UploadStart { .. } | Resource::Upload { .. } => "upload",
            Resource::Tags { .. } => "tags",
            Resource::Referrers { .. } => "referrers",
            Resource::Token => "token",
            Resource::Health => "healthz",
            Resource::Ready => "readyz",
            Resource::Metrics => "metrics",
            Resource::Admin(_) => "admin",
            Resource::Ui(_) => "ui",
        }
    }
}

/// Decodes `%XX` escapes (e.g. `sha256%3A…`); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<Resource> {
        Resource::parse(s)
    }

    #[test]
    fn parses_from_the_right() {
        assert_eq!(p("/v2/"), Some(Resource::Base));
        assert_eq!(p("/v2"), Some(Resource::Base));
        assert_eq!(p("/v2/_catalog"), Some(Resource::Catalog));
        assert_eq!(
            p("/v2/docker.io/library/nginx/manifests/latest"),
            Some(Resource::Manifest { name: "docker.io/library/nginx".into(), reference: "latest".into() })
        );
        assert_eq!(p("/v2/a/blobs/uploads/"), Some(Resource::UploadStart { name: "a".into() }));
        assert_eq!(p("/v2/a/b/blobs/uploads"), Some(Resource::UploadStart { name: "a/b".into() }));
        assert_eq!(p("/v2/a/blobs/uploads/abc-1"), Some(Resource::Upload { name: "a".into(), id: "abc-1".into() }));
        assert_eq!(
            p("/v2/a/blobs/blobs/sha256%3Aab"),
            Some(Resource::Blob { name: "a/blobs".into(), digest: "sha256:ab".into() })
        );
        assert_eq!(p("/v2/x/tags/list"), Some(Resource::Tags { name: "x".into() }));
        assert_eq!(
            p("/v2/x/y/referrers/sha256:1"),
            Some(Resource::Referrers { name: "x/y".into(), digest: "sha256:1".into() })
        );
        assert_eq!(p("/v2/x/manifests/"), Some(Resource::Manifest { name: "x".into(), reference: "".into() }));
        assert_eq!(p("/v3/x/manifests/a"), None);
        assert_eq!(p("/v2/x/other/a"), None);
        assert_eq!(p("/v2/manifests/a"), None);
        assert_eq!(percent_decode("a%3Ab%zz%4"), "a:b%zz%4");
    }

    #[test]
    fn method_picks_the_route_and_access() {
        let r = route(&Method::HEAD, "/v2/a/b/manifests/v1");
        assert_eq!(r.label, "manifest");
        let found = r.route.expect("routed");
        assert_eq!(
            found,
            Route::Repository { name: "a/b".into(), op: RepoOp::GetManifest { reference: "v1".into(), head: true } }
        );
        assert_eq!(found.access(), Access::Repository(Action::Pull));
        let upload = route(&Method::GET, "/v2/a/blobs/uploads/u1").route.expect("upload status");
        assert_eq!(upload.access(), Access::Repository(Action::Push), "upload status is part of a push");
        let delete = route(&Method::DELETE, "/v2/a/blobs/sha256:1").route.expect("blob delete");
        assert_eq!(delete.access(), Access::Repository(Action::Delete));
        assert_eq!(route(&Method::GET, "/v2/").route.map(|r| r.access()), Ok(Access::Authenticated));
        assert_eq!(route(&Method::GET, "/healthz").route.map(|r| r.access()), Ok(Access::Public));
        assert_eq!(route(&Method::GET, "/token").route.map(|r| r.access()), Ok(Access::TokenIssuer));
        assert_eq!(route(&Method::POST, "/admin/gc").route.map(|r| r.access()), Ok(Access::LoopbackAdmin));
        let ui = route(&Method::GET, "/ui/repo/a/b");
        assert_eq!(ui.label, "ui");
        assert_eq!(ui.route, Ok(Route::Ui { path: "/ui/repo/a/b".into(), method: UiMethod::Get }));
        assert_eq!(route(&Method::POST, "/").route.map(|r| r.access()), Ok(Access::Browser));
        assert!(route(&Method::GET, "/uix").route.is_err(), "only /ui and /ui/… are the web interface");
    }

    #[test]
    fn allow_comes_from_the_route_table() {
        let allow = |m: Method, p: &str| route(&m, p).route.err().and_then(|e| e.allow_header());
        assert_eq!(allow(Method::POST, "/v2/a/manifests/t").as_deref(), Some("GET, HEAD, PUT, DELETE"));
        assert_eq!(allow(Method::POST, "/v2/a/blobs/sha256:1").as_deref(), Some("GET, HEAD, DELETE"));
        assert_eq!(allow(Method::GET, "/v2/a/blobs/uploads/").as_deref(), Some("POST"));
        assert_eq!(allow(Method::POST, "/v2/a/blobs/uploads/u").as_deref(), Some("GET, PUT, PATCH, DELETE"));
        assert_eq!(allow(Method::HEAD, "/v2/_catalog").as_deref(), Some("GET"));
        assert_eq!(allow(Method::POST, "/token").as_deref(), Some("GET"));
        assert_eq!(allow(Method::GET, "/admin/gc").as_deref(), Some("POST"));
        assert_eq!(allow(Method::POST, "/admin/status").as_deref(), Some("GET"));
        assert_eq!(allow(Method::DELETE, "/ui/login").as_deref(), Some("GET, HEAD, POST"));
        let missing = route(&Method::GET, "/admin/nope");
        assert_eq!((missing.label, missing.route), ("admin", Err(NoRoute::NotFound { admin: true })));
        let missing = route(&Method::GET, "/nope");
        assert_eq!((missing.label, missing.route), ("other", Err(NoRoute::NotFound { admin: false })));
    }
}
