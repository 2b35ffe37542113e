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
//! [`Access::Browser`]: crate::app::router::Access::Browser

pub mod assets;
pub mod dashboard;
pub mod model;
pub mod pages;
pub mod session;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use maud::Markup;

use cove_core::{Action, ErrorCode, Identity, Reference, Registry, RegistryError, RepoName};

use crate::app::access::Grant;
use crate::app::request::Query;
use crate::app::router::UiMethod;
use crate::body::{self, Body};
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

/// The OIDC login's cookie: state, PKCE verifier and where to go after.
const OIDC_COOKIE: &str = "cove_oidc";
/// How long a browser may take at the issuer.
const OIDC_FLOW_SECONDS: u64 = 600;

#[derive(serde::Serialize, serde::Deserialize)]
struct OidcFlow {
    state: String,
    verifier: String,
    next: String,
    expires: u64,
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
            return asset(path, method);
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

    fn redirect_uri(r: &Req<'_>) -> String {
        format!("{}://{}/ui/oidc/callback", r.scheme, r.host)
    }

    /// `GET /ui/login` under OIDC: off to the issuer with a fresh state and
    /// PKCE verifier, kept in a signed cookie until the browser comes back.
    async fn oidc_start(&self, r: &mut Req<'_>) -> Reply {
        let Some(oidc) = &self.oidc else { return Reply::not_found() };
        let mut state = [0u8; 16];
        let mut verifier = [0u8; 32];
        session::random(&mut state);
        session::random(&mut verifier);
        let flow = OidcFlow {
            state: hex::encode(state),
            verifier: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(verifier),
            next: safe_next(r.query.get("next")),
            expires: unix_now() + OIDC_FLOW_SECONDS,
        };
        match oidc.authorization_url(&Ui::redirect_uri(r), &flow.state, &flow.verifier).await {
            Ok(url) => {
                let value = self.sessions.sign(&serde_json::to_vec(&flow).unwrap_or_default());
                let secure = if r.scheme == "https" { "; Secure" } else { "" };
                // Lax: the issuer's redirect back is a cross-site navigation.
                r.extra_cookies.push(format!(
                    "{OIDC_COOKIE}={value}; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age={OIDC_FLOW_SECONDS}{secure}"
                ));
                Reply::Redirect(url)
            }
            Err(e) => {
                tracing::warn!(error = %e, "web interface: OIDC issuer unusable");
                Reply::error(StatusCode::BAD_GATEWAY, "Sign-in not available", "The OIDC issuer could not be reached.")
            }
        }
    }

    /// `GET /ui/oidc/callback?code=…&state=…`: the state must be the one
    /// this browser was sent with; the code is exchanged (with the PKCE
    /// verifier) for an ID token, which the API's OIDC authenticator checks.
    async fn oidc_callback(&self, r: &mut Req<'_>) -> Reply {
        let Some(oidc) = &self.oidc else { return Reply::not_found() };
        r.extra_cookies.push(format!("{OIDC_COOKIE}=; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age=0"));
        let refused = |why: &str| Reply::error(StatusCode::FORBIDDEN, "Sign-in failed", why);
        if let Some(e) = r.query.get("error") {
            return refused(&format!("The issuer refused the sign-in: {e}."));
        }
        let flow: Option<OidcFlow> = Sessions::cookies(&r.headers, OIDC_COOKIE)
            .iter()
            .filter_map(|v| self.sessions.verify(v))
            .filter_map(|b| serde_json::from_slice::<OidcFlow>(&b).ok())
            .find(|f| f.expires > unix_now() && Some(f.state.as_str()) == r.query.get("state"));
        let Some(flow) = flow else {
            return refused("This sign-in was not started here, or took too long. Start again.");
        };
        let code = r.query.get("code").unwrap_or_default().to_owned();
        let id_token = match oidc.exchange(&code, &flow.verifier, &Ui::redirect_uri(r)).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "web interface: OIDC code exchange failed");
                return refused("The issuer did not confirm the sign-in.");
            }
        };
        match r.cx.grant.login(&r.headers, r.cx.peer, &format!("Bearer {id_token}")).await {
            Ok(identity) if identity.is_authenticated() => {
                tracing::info!(user = identity.name().unwrap_or(""), "web interface: signed in with OIDC");
                r.session = self.sessions.start(identity);
                r.set_cookie = true;
                Reply::Refresh(flow.next)
            }
            Ok(_) => refused("The ID token names no user."),
            Err(e) => refused(&e.message),
        }
    }

    /// `POST /ui/login`: the form's user name and password go through the
    /// API's authenticator as a Basic header.
    async fn login(&self, r: &mut Req<'_>, form: &Form) -> Reply {
        let next = safe_next(form.get("next"));
        let (user, password) = (form.get("username").unwrap_or_default(), form.get("password").unwrap_or_default());
        let failed = |status: StatusCode, msg: &str, csrf: &str| Reply::Page {
            status,
            title: "Sign in".into(),
            nav: "",
            body: pages::login(csrf, &next, Some(msg)),
        };
        let csrf = self.sessions.csrf_token(&r.session);
        if user.is_empty() || user.contains(':') {
            return failed(StatusCode::UNAUTHORIZED, "Wrong user name or password.", &csrf);
        }
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}").as_bytes())
        );
        match r.cx.grant.login(&r.headers, r.cx.peer, &basic).await {
            Ok(identity) if identity.is_authenticated() => {
                tracing::info!(user = identity.name().unwrap_or(""), "web interface: signed in");
                r.session = self.sessions.start(identity);
                r.set_cookie = true;
                Reply::Redirect(next)
            }
            Ok(_) => failed(StatusCode::UNAUTHORIZED, "Wrong user name or password.", &csrf),
            Err(e) if e.code == ErrorCode::TooManyRequests => {
                failed(StatusCode::TOO_MANY_REQUESTS, "Too many failed sign-ins: wait a little and try again.", &csrf)
            }
            Err(e) if e.code == ErrorCode::Denied => failed(StatusCode::FORBIDDEN, &e.message, &csrf),
            Err(_) => failed(StatusCode::UNAUTHORIZED, "Wrong user name or password.", &csrf),
        }
    }

    async fn repo_list(&self, r: &Req<'_>) -> Result<Reply, RegistryError> {
        let filter = r.query.get("q").unwrap_or_default().trim().to_owned();
        let needle = filter.to_ascii_lowercase();
        let auth = &r.cx.grant.auth;
        let id = &r.session.identity;
        let mut all = model::repositories(r.cx.registry, |n| auth.allows(id, Action::Pull, n)).await?;
        if !needle.is_empty() {
            all.retain(|e| e.name.as_str().contains(&needle));
        }
        let total = all.len();
        let (page, pages) = page_of(r.query.get("page"), total, REPOS_PER_PAGE);
        let mut entries: Vec<model::RepoEntry> =
            all.into_iter().skip((page - 1) * REPOS_PER_PAGE).take(REPOS_PER_PAGE).collect();
        for e in &mut entries {
            e.tags = r.cx.registry.storage().tag_list(&e.name).await.ok().flatten().map(|t| t.len());
        }
        let view = pages::ListView { entries: &entries, filter: &filter, page, pages, total };
        Ok(Reply::page("Repositories", "repos", pages::repo_list(&view)))
    }

    /// The repository `name` if the identity may pull it (else `None`, the
    /// same answer as for one that does not exist).
    fn visible_repo(&self, r: &Req<'_>, name: &str) -> Option<RepoName> {
        let repo: RepoName = name.parse().ok()?;
        r.cx.grant.auth.allows(&r.session.identity, Action::Pull, &repo).then_some(repo)
    }

    fn upstream_of(r: &Req<'_>, repo: &RepoName) -> Option<String> {
        r.cx.registry.cache().filter(|c| c.is_cached(repo)).map(|_| repo.first_component().to_owned())
    }

    async fn repo_page(&self, r: &Req<'_>, name: &str) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        let storage = r.cx.registry.storage();
        let Some(tags) = storage.tag_list(&repo).await? else { return Ok(Reply::not_found()) };
        let manifests = storage.manifest_list(&repo).await?.len();
        let total = tags.len();
        let (page, pages) = page_of(r.query.get("page"), total, TAGS_PER_PAGE);
        let activity = r.cx.registry.activity().map(|a| a.as_ref());
        let mut rows = Vec::new();
        for t in tags.iter().skip((page - 1) * TAGS_PER_PAGE).take(TAGS_PER_PAGE) {
            rows.push(model::tag_row(storage.as_ref(), activity, &repo, t).await);
        }
        let upstream = Ui::upstream_of(r, &repo);
        let view =
            pages::RepoView { repo: &repo, upstream: upstream.as_deref(), rows: &rows, page, pages, total, manifests };
        Ok(Reply::page(repo.to_string(), "repos", pages::repo_page(&view)))
    }

    async fn image_page(&self, r: &Req<'_>, name: &str) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        let raw_ref = r.query.get("ref").unwrap_or("latest").to_owned();
        let Ok(reference) = raw_ref.parse::<Reference>() else {
            return Ok(Reply::error(
                StatusCode::BAD_REQUEST,
                "Not a tag or digest",
                &format!("{raw_ref:?} is neither a tag nor a digest."),
            ));
        };
        let Some(image) = model::image(r.cx.registry.storage().as_ref(), &repo, &reference).await? else {
            return Ok(Reply::not_found());
        };
        let authority = &r.host;
        let tag = match &reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let cached = Ui::upstream_of(r, &repo).is_some();
        let pull = pages::PullRefs {
            by_tag: tag.as_ref().map(|t| format!("{authority}/{repo}:{t}")),
            by_digest: format!("{authority}/{repo}@{}", image.digest),
            plain_http: r.scheme == "http",
            origin: cached.then(|| match &tag {
                Some(t) => format!("{repo}:{t}"),
                None => format!("{repo}@{}", image.digest),
            }),
        };
        let can_delete = self.may_delete(r, &repo);
        let view = pages::ImageView {
            repo: &repo,
            reference: &raw_ref,
            image: &image,
            pull: &pull,
            raw: r.query.flag("raw"),
            can_delete,
        };
        Ok(Reply::page(format!("{repo}:{raw_ref}"), "repos", pages::image_page(&view)))
    }

    /// Delete is offered when the policy allows it and the repository is
    /// private (cached namespaces are pull-only).
    fn may_delete(&self, r: &Req<'_>, repo: &RepoName) -> bool {
        r.cx.grant.auth.allows(&r.session.identity, Action::Delete, repo) && Ui::upstream_of(r, repo).is_none()
    }

    async fn confirm_delete(&self, r: &Req<'_>, name: &str) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        if !self.may_delete(r, &repo) {
            return Ok(not_allowed(&r.session.identity, "delete", &repo));
        }
        let reference = r.query.get("ref").unwrap_or_default().to_owned();
        let Ok(parsed) = reference.parse::<Reference>() else { return Ok(Reply::not_found()) };
        let storage = r.cx.registry.storage();
        let mut tags_too = Vec::new();
        if let Reference::Digest(d) = &parsed {
            for t in storage.tag_list(&repo).await?.unwrap_or_default() {
                if let Ok(tag) = t.parse() {
                    if storage.tag_get(&repo, &tag).await?.as_ref() == Some(d) {
                        tags_too.push(t);
                    }
                }
            }
        }
        let body = pages::confirm_delete(&repo, &reference, &self.sessions.csrf_token(&r.session), &tags_too);
        Ok(Reply::page("Delete", "repos", body))
    }

    async fn delete(&self, r: &Req<'_>, name: &str, form: &Form) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        if !self.may_delete(r, &repo) {
            return Ok(not_allowed(&r.session.identity, "delete", &repo));
        }
        let reference: Reference = form.get("ref").unwrap_or_default().parse()?;
        r.cx.registry.delete_manifest(&repo, &reference).await?;
        tracing::info!(
            user = r.session.identity.name().unwrap_or("anonymous"),
            repository = %repo, reference = %reference, "web interface: deleted"
        );
        Ok(Reply::Redirect(format!("{}?deleted={}", pages::repo_url(&repo), pages::q(&reference.to_string()))))
    }

    /// Dry runs are offered to identities the policy lets delete somewhere.
    async fn may_dry_run(&self, r: &Req<'_>) -> bool {
        let auth = &r.cx.grant.auth;
        let repos = r.cx.registry.storage().repo_list().await.unwrap_or_default();
        repos.iter().any(|repo| auth.allows(&r.session.identity, Action::Delete, repo))
    }

    async fn dashboard(&self, r: &Req<'_>) -> Result<Reply, RegistryError> {
        let status = crate::status::status(r.cx.registry, r.cx.gc, r.cx.retention, r.cx.identity).await;
        let dry = self.may_dry_run(r).await;
        let body = dashboard::dashboard(&status, dry, &self.sessions.csrf_token(&r.session));
        Ok(Reply::page("Cache", "dashboard", body))
    }

    async fn dry_run(&self, r: &Req<'_>, kind: &str) -> Result<Reply, RegistryError> {
        if !self.may_dry_run(r).await {
            return Ok(Reply::error(StatusCode::FORBIDDEN, "Not allowed", "Dry runs need delete permission."));
        }
        let report = match kind {
            "gc" => r.cx.gc.run(true).await.map(|x| serde_json::to_value(&x).unwrap_or_default()),
            "retention" => r.cx.retention.run(true).await.map(|x| serde_json::to_value(&x).unwrap_or_default()),
            _ => return Ok(Reply::not_found()),
        }
        .map_err(|e| RegistryError::internal(format!("{kind} dry run failed: {e}")))?;
        let auth = &r.cx.grant.auth;
        let id = &r.session.identity;
        let visible = |name: &str| name.parse::<RepoName>().is_ok_and(|n| auth.allows(id, Action::Pull, &n));
        Ok(Reply::page("Dry run", "dashboard", dashboard::dry_run_result(kind, &report, visible)))
    }

    /// Adds the frame, the security headers and the session cookie.
    fn respond(&self, r: &Req<'_>, reply: Reply, head: bool) -> Response<Body> {
        let mut resp = match reply {
            Reply::Redirect(to) => {
                let mut resp = Response::new(body::empty());
                *resp.status_mut() = StatusCode::SEE_OTHER;
                set(resp.headers_mut(), http::header::LOCATION, &to);
                resp
            }
            Reply::Refresh(to) => {
                let html = Bytes::from(pages::refresh(&to).into_string());
                let mut resp = Response::new(if head { body::empty() } else { body::full(html) });
                set(resp.headers_mut(), http::header::CONTENT_TYPE, "text/html; charset=utf-8");
                resp
            }
            Reply::Page { status, title, nav, body: content } => {
                let csrf = self.sessions.csrf_token(&r.session);
                let frame = pages::Frame {
                    title: &title,
                    nav,
                    user: r.session.identity.name(),
                    csrf: &csrf,
                    logins: Ui::logins(r),
                };
                let html = Bytes::from(pages::layout(&frame, content).into_string());
                let len = html.len();
                let mut resp = Response::new(if head { body::empty() } else { body::full(html) });
                *resp.status_mut() = status;
                set(resp.headers_mut(), http::header::CONTENT_TYPE, "text/html; charset=utf-8");
                set(resp.headers_mut(), http::header::CONTENT_LENGTH, &len.to_string());
                resp
            }
        };
        let h = resp.headers_mut();
        security_headers(h);
        set(h, http::header::CACHE_CONTROL, "no-store");
        set(h, http::header::VARY, "Cookie");
        if r.set_cookie {
            set(h, http::header::SET_COOKIE, &self.sessions.set_cookie(&r.session, r.scheme == "https"));
        }
        for c in &r.extra_cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.append(http::header::SET_COOKIE, v);
            }
        }
        resp
    }
}

impl Req<'_> {
    /// The raw query string again (to come back after logging in).
    fn query_string(&self) -> Option<String> {
        let pairs: Vec<String> = self.query.pairs().map(|(k, v)| format!("{}={}", pages::q(k), pages::q(v))).collect();
        (!pairs.is_empty()).then(|| pairs.join("&"))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
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

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// The headers every interface response carries.
fn security_headers(h: &mut HeaderMap) {
    set(h, http::header::CONTENT_SECURITY_POLICY, CSP);
    set(h, http::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, http::header::X_FRAME_OPTIONS, "DENY");
    set(h, http::header::REFERRER_POLICY, "same-origin");
    set(h, HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    set(h, HeaderName::from_static("cross-origin-resource-policy"), "same-origin");
}

/// An embedded asset, cached by browsers for a year (its name changes
/// with its content).
fn asset(path: &str, method: UiMethod) -> Response<Body> {
    let mut resp = match (assets::find(path), method) {
        (Some(a), UiMethod::Get | UiMethod::Head) => {
            let mut resp = Response::new(if method == UiMethod::Head {
                body::empty()
            } else {
                body::full(Bytes::from_static(a.body.as_bytes()))
            });
            let h = resp.headers_mut();
            set(h, http::header::CONTENT_TYPE, a.content_type);
            set(h, http::header::CONTENT_LENGTH, &a.body.len().to_string());
            set(h, http::header::CACHE_CONTROL, "public, max-age=31536000, immutable");
            resp
        }
        _ => {
            let mut resp = Response::new(body::full(Bytes::from_static(b"not found\n")));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            set(resp.headers_mut(), http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
            resp
        }
    };
    security_headers(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
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
