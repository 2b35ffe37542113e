//! Every answer of the interface as HTTP: the page frame, redirects, the
//! security headers (CSP, no framing, no sniffing), `no-store`, the session
//! and OIDC cookies; and the embedded assets with their long cache life.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::app::router::UiMethod;
use crate::body::{self, Body};

use super::{assets, pages, Reply, Req, Ui, CSP};

impl Ui {
    /// Adds the frame, the security headers and the session cookie.
    pub(super) fn respond(&self, r: &Req<'_>, reply: Reply, head: bool) -> Response<Body> {
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
pub(super) fn asset(path: &str, method: UiMethod) -> Response<Body> {
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
