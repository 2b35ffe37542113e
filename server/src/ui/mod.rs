//! The web interface, served at `/` and `/ui/…` on the API's listener.
//!
//! Server-rendered HTML ([`pages`], [`dashboard`]: maud templates, escaped
//! by default) over the same [`Registry`] and the same authentication and
//! access policy as the API: the router sends these paths here after
//! `app::access` checked the network boundary ([`Access::Browser`]); the
//! identity comes from the [`session`] (a login form checks credentials
//! through the API's authenticator and failed-login limiter), and every
//! page asks the access policy what that identity may pull or delete, so
//! what it may not pull it does not see. Every POST carries the session's
//! CSRF token and must come from a page of the same origin. Pages are read
//! from storage only ([`model`]): looking never contacts an upstream.
//!
//! This file holds the request flow: [`Ui::handle`] reads the session and
//! the form, checks origin and CSRF token on every POST, dispatches by path
//! and turns errors into pages. The rest by job: `login` (the htpasswd form
//! and the OIDC authorization-code flow), `browse` (the repository, image,
//! delete, dashboard and dry-run pages behind a session), `response` (the
//! frame, security headers and cookies of every answer, and the assets).
//!
//! [`Access::Browser`]: crate::app::router::Access::Browser

pub mod assets;
pub mod dashboard;
pub mod model;
pub mod pages;
pub mod session;

mod browse;
mod login;
mod response;

use std::net::SocketAddr;
use std::time::Duration;

use http::header::HeaderMap;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use maud::Markup;

use cove_core::{ErrorCode, Identity, Registry, RegistryError, RepoName};

use crate::app::access::Grant;
use crate::app::request::Query;
use crate::app::router::UiMethod;
use crate::body::Body;
use crate::conn::body::RequestBody;
use crate::jobs::gc::GarbageCollector;
use crate::jobs::retention::RetentionJob;
use session::{Session, Sessions};

/// The Content-Security-Policy of every page: only this origin's own
/// stylesheet and script, no inline code, no framing, forms post here only.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Repositories per page of the list.
const REPOS_PER_PAGE: usize = 100;
/// Tags per page of a repository (each row reads a manifest and a config).
const TAGS_PER_PAGE: usize = 50;
/// Largest form body accepted.
const MAX_FORM: usize = 64 * 1024;

/// The web interface: its session key and settings.
pub struct Ui {
    sessions: Sessions,
    /// The OIDC browser login (authorization code + PKCE), under OIDC.
    oidc: Option<cove_auth::oidc_login::BrowserLogin>,
}

/// What the interface reads and acts on for one request.
pub struct Context<'a> {
    pub registry: &'a Registry,
    /// The access check's result (the network boundary held).
    pub grant: &'a Grant,
    pub peer: SocketAddr,
    /// Cove terminates TLS itself.
    pub tls: bool,
    pub gc: &'a GarbageCollector,
    pub retention: &'a RetentionJob,
    pub identity: &'a crate::status::ServerIdentity,
}

/// A page or a redirect, before the frame and headers are added.
enum Reply {
    Page {
        status: StatusCode,
        title: String,
        nav: &'static str,
        body: Markup,
    },
    Redirect(String),
    /// A page that moves on to a local path by itself: a redirect chain that
    /// began at another site (the OIDC issuer) would not carry the
    /// `SameSite=Strict` session cookie, a navigation from this page does.
    Refresh(String),
}

impl Reply {
    fn page(title: impl Into<String>, nav: &'static str, body: Markup) -> Reply {
        Reply::Page { status: StatusCode::OK, title: title.into(), nav, body }
    }

    fn error(status: StatusCode, title: &str, text: &str) -> Reply {
        Reply::Page { status, title: title.into(), nav: "", body: pages::message(title, text, true) }
    }

    fn not_found() -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "Not found", "There is nothing here, or you may not see it.")
    }
}

/// One request being answered.
struct Req<'a> {
    cx: Context<'a>,
    headers: HeaderMap,
    query: Query,
    session: Session,
    /// The session changed (new, login, logout): send its cookie.
    set_cookie: bool,
    /// `https` or `http`, as the browser reached Cove.
    scheme: &'static str,
    /// The host the browser used (`Host`, or a trusted proxy's `X-Forwarded-Host`).
    host: String,
    /// Other `Set-Cookie` values to send (the OIDC flow's cookie).
    extra_cookies: Vec<String>,
}

impl Ui {
    /// The interface with sessions lasting `session_ttl`, signed with keys
    /// derived from the token signing `keys` (so sessions survive restarts,
    /// work on every replica and follow rotation) or else a fresh random
    /// key. `oidc` is the browser login under `auth.kind = "oidc"`.
    pub fn new(
        session_ttl: Duration,
        oidc: Option<cove_auth::oidc_login::BrowserLogin>,
        keys: Option<std::sync::Arc<cove_auth::keys::SigningKeys>>,
    ) -> Ui {
        let sessions = match keys {
            Some(keys) => Sessions::derived(keys, session_ttl),
            None => Sessions::new(session_ttl),
        };
        Ui { sessions, oidc }
    }

    /// Answers one request for `path`; never fails (errors become pages).
    pub async fn handle(
        &self,
        cx: Context<'_>,
        path: &str,
        method: UiMethod,
        req: Request<RequestBody>,
    ) -> Response<Body> {
        let head = method == UiMethod::Head;
        if path.starts_with("/ui/assets/") {
            return response::asset(path, method);
        }
        let (parts, body) = req.into_parts();
        let forwarded_https = parts.headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes() == b"https");
        let scheme = if cx.tls || forwarded_https { "https" } else { "http" };
        let host = browser_host(&parts.headers);
        let (session, set_cookie) = match self.sessions.from_headers(&parts.headers) {
            Some(s) => (s, false),
            None => (self.sessions.start(Identity::Anonymous), true),
        };
        let mut r = Req {
            cx,
            headers: parts.headers,
            query: Query::parse(parts.uri.query()),
            session,
            set_cookie,
            scheme,
            host,
            extra_cookies: Vec::new(),
        };
        let reply = match method {
            UiMethod::Post => match read_form(body).await {
                Ok(form) => self.post(&mut r, path, &form).await,
                Err(reply) => reply,
            },
            UiMethod::Get | UiMethod::Head => self.get(&mut r, path).await,
        };
        self.respond(&r, reply, head)
    }

    /// Whether this server has logins (htpasswd, OIDC) rather than network trust.
    fn logins(r: &Req<'_>) -> bool {
        r.cx.grant.auth.wants_credentials()
    }

    async fn get(&self, r: &mut Req<'_>, path: &str) -> Reply {
        if path == "/ui/login" {
            if !Ui::logins(r) {
                return Reply::Redirect("/".into());
            }
            if r.cx.grant.auth.kind() == "oidc" && self.oidc.is_some() {
                return self.oidc_start(r).await;
            }
            if r.cx.grant.auth.kind() == "oidc" {
                // The browser flow (authorization code + PKCE) is not built yet:
                // say so rather than offer a form OIDC cannot check.
                return Reply::error(
                    StatusCode::NOT_IMPLEMENTED,
                    "Sign-in not available",
                    "This Cove authenticates with OIDC tokens; signing in from a browser through the issuer \
                     is not supported yet. Use the registry API with a token.",
                );
            }
            let next = safe_next(r.query.get("next"));
            return Reply::page("Sign in", "", pages::login(&self.sessions.csrf_token(&r.session), &next, None));
        }
        if path == "/ui/oidc/callback" {
            return self.oidc_callback(r).await;
        }
        if Ui::logins(r) && !r.session.identity.is_authenticated() {
            let mut next = path.to_owned();
            if let Some(q) = r.query_string() {
                next.push('?');
                next.push_str(&q);
            }
            return Reply::Redirect(format!("/ui/login?next={}", pages::q(&next)));
        }
        let result = match path {
            "/" | "/ui" | "/ui/" => self.repo_list(r).await,
            "/ui/dashboard" => self.dashboard(r).await,
            p => {
                if let Some(name) = p.strip_prefix("/ui/repo/") {
                    self.repo_page(r, name).await
                } else if let Some(name) = p.strip_prefix("/ui/image/") {
                    self.image_page(r, name).await
                } else if let Some(name) = p.strip_prefix("/ui/delete/") {
                    self.confirm_delete(r, name).await
                } else {
                    Ok(Reply::not_found())
                }
            }
        };
        result.unwrap_or_else(|e| registry_error(&e))
    }

    async fn post(&self, r: &mut Req<'_>, path: &str, form: &Form) -> Reply {
        if !session::same_origin(&r.headers, r.scheme, &r.host) {
            tracing::warn!(peer = %r.cx.peer.ip(), path, "web interface: cross-site POST refused");
            return Reply::error(StatusCode::FORBIDDEN, "Refused", "This form was not sent from a Cove page.");
        }
        if !self.sessions.csrf_ok(&r.session, form.get("csrf").unwrap_or_default()) {
            tracing::warn!(peer = %r.cx.peer.ip(), path, "web interface: POST without a valid CSRF token refused");
            return Reply::error(
                StatusCode::FORBIDDEN,
                "Refused",
                "The form's security token is missing or expired. Reload the page and try again.",
            );
        }
        match path {
            "/ui/login" => return self.login(r, form).await,
            "/ui/logout" => {
                r.session = self.sessions.start(Identity::Anonymous);
                r.set_cookie = true;
                return Reply::Redirect(if Ui::logins(r) { "/ui/login".into() } else { "/".into() });
            }
            _ => {}
        }
        if Ui::logins(r) && !r.session.identity.is_authenticated() {
            return Reply::error(StatusCode::FORBIDDEN, "Sign in first", "Your session has ended: sign in again.");
        }
        let result = if let Some(name) = path.strip_prefix("/ui/delete/") {
            self.delete(r, name, form).await
        } else if path == "/ui/dry-run" {
            self.dry_run(r, form.get("kind").unwrap_or_default()).await
        } else {
            Ok(Reply::not_found())
        };
        result.unwrap_or_else(|e| registry_error(&e))
    }
}

impl Req<'_> {
    /// The raw query string again (to come back after logging in).
    fn query_string(&self) -> Option<String> {
        let pairs: Vec<String> = self.query.pairs().map(|(k, v)| format!("{}={}", pages::q(k), pages::q(v))).collect();
        (!pairs.is_empty()).then(|| pairs.join("&"))
    }
}

/// A form's fields.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

async fn read_form(body: RequestBody) -> Result<Form, Reply> {
    let bytes = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map_err(|_| Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "Refused", "The form could not be read."))?
        .to_bytes();
    Ok(Form(form_urlencoded::parse(&bytes).into_owned().collect()))
}

/// The page number asked for (1-based, clamped) and the number of pages.
fn page_of(asked: Option<&str>, total: usize, per_page: usize) -> (usize, usize) {
    let pages = total.div_ceil(per_page).max(1);
    let page = asked.and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).clamp(1, pages);
    (page, pages)
}

/// Where to go after logging in: a local path only (never `//host` or a URL).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') && !n.starts_with("/ui/login") => {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The host the browser reached Cove at, for pull references and the
/// origin check; only characters a host name or address may hold.
fn browser_host(h: &HeaderMap) -> String {
    let host = h
        .get("x-forwarded-host")
        .or_else(|| h.get(http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(',').next().unwrap_or(s).trim())
        .unwrap_or_default();
    if !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c)) {
        host.to_ascii_lowercase()
    } else {
        "localhost".to_owned()
    }
}

fn not_allowed(identity: &Identity, action: &str, repo: &RepoName) -> Reply {
    let who = identity.name().map_or("Anonymous users".to_owned(), |n| format!("User {n}"));
    Reply::error(StatusCode::FORBIDDEN, "Not allowed", &format!("{who} may not {action} in {repo}."))
}

/// A registry error as a page: client mistakes say what was wrong;
/// internal errors are logged and shown without internals.
fn registry_error(e: &RegistryError) -> Reply {
    match e.code {
        ErrorCode::Internal => {
            tracing::error!(error = %e.message, "web interface: internal error");
            Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The server could not show this page; the log says why.",
            )
        }
        ErrorCode::NameUnknown | ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown => Reply::not_found(),
        ErrorCode::Denied | ErrorCode::Unauthorized => Reply::error(StatusCode::FORBIDDEN, "Not allowed", &e.message),
        _ => Reply::error(StatusCode::BAD_REQUEST, "Cannot do that", &e.message),
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    #[test]
    fn next_is_a_local_path() {
        assert_eq!(safe_next(Some("/ui/repo/a?page=2")), "/ui/repo/a?page=2");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil", "javascript:alert(1)", "/ui/login?next=/x"] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn hosts_are_sanitised_and_pages_clamped() {
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, HeaderValue::from_static("Cove.LAN:5050"));
        assert_eq!(browser_host(&h), "cove.lan:5050");
        h.insert(http::header::HOST, HeaderValue::from_static("x\"><script>"));
        assert_eq!(browser_host(&h), "localhost");
        assert_eq!(page_of(Some("9"), 250, 100), (3, 3));
        assert_eq!(page_of(Some("0"), 0, 100), (1, 1));
        assert_eq!(page_of(Some("x"), 10, 100), (1, 1));
    }

    #[test]
    fn csp_is_strict() {
        for d in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(CSP.contains(d), "{d}");
        }
        assert!(!CSP.contains("unsafe"), "no unsafe-inline or unsafe-eval");
    }
}
