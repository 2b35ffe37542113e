//! Signing in from a browser: the htpasswd login form (checked as a Basic
//! header by the API's authenticator and failed-login limiter), and the
//! OIDC authorization code flow with PKCE (its state in a signed cookie
//! until the browser comes back; the ID token checked by the API's OIDC
//! authenticator).

use std::time::SystemTime;

use base64::Engine as _;
use http::StatusCode;

use cove_core::ErrorCode;

use super::session::{self, Sessions};
use super::{pages, safe_next, Form, Reply, Req, Ui};

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

impl Ui {
    fn redirect_uri(r: &Req<'_>) -> String {
        format!("{}://{}/ui/oidc/callback", r.scheme, r.host)
    }

    /// `GET /ui/login` under OIDC: off to the issuer with a fresh state and
    /// PKCE verifier, kept in a signed cookie until the browser comes back.
    pub(super) async fn oidc_start(&self, r: &mut Req<'_>) -> Reply {
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
    pub(super) async fn oidc_callback(&self, r: &mut Req<'_>) -> Reply {
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
    pub(super) async fn login(&self, r: &mut Req<'_>, form: &Form) -> Reply {
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
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
