//! Browser sessions and CSRF protection for the web interface.
//!
//! A session is a cookie the server signed: `base64url(json) "." base64url(mac)`
//! where the MAC is HMAC-SHA256 under a key derived from the token signing
//! keys (the key file, or the key set shared through storage: sessions then
//! survive restarts, are valid on every replica and follow key rotation:
//! signed under the key derived from the signing key, accepted under any
//! key of the set; with neither, a key drawn from the OS at start, and a
//! restart logs everyone out). It
//! holds who logged in, when it expires and a random nonce; the CSRF token
//! of every form is HMAC(key, "csrf" ‖ nonce), so it is bound to the
//! session and cannot be forged without the key. Every MAC is checked in
//! constant time (`hmac`'s `verify_slice`). The cookie is `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Secure` over https, and short-lived.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::header::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use cove_auth::keys::SigningKeys;
use cove_core::Identity;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE: &str = "cove_session";

/// Longest cookie value read (a session is a few hundred bytes).
const MAX_COOKIE: usize = 4096;

/// A verified, unexpired session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub identity: Identity,
    /// Unix seconds.
    pub expires: u64,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    /// User name; absent for an anonymous session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    g: Vec<String>,
    e: u64,
    n: String,
}

/// The keys sessions are signed with.
enum SessionKeys {
    /// One key (random at start, or given).
    Fixed([u8; 32]),
    /// Derived from the token signing keys: sign with the one derived from
    /// the signing key, accept any, so sessions follow key rotation.
    Derived(Arc<SigningKeys>),
}

/// Signs and checks sessions and CSRF tokens.
pub struct Sessions {
    keys: SessionKeys,
    ttl: Duration,
}

/// The label of the session keys derived from the token signing keys.
const DERIVE_LABEL: &str = "ui-session";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Sessions {
    /// Sessions lasting `ttl`, under a fresh random key.
    pub fn new(ttl: Duration) -> Sessions {
        let mut key = [0u8; 32];
        random(&mut key);
        Sessions::with_key(key, ttl)
    }

    /// Sessions under a given key.
    pub fn with_key(key: [u8; 32], ttl: Duration) -> Sessions {
        Sessions { keys: SessionKeys::Fixed(key), ttl }
    }

    /// Sessions under keys derived from the token signing keys (the same
    /// on every replica, across restarts, following rotation).
    pub fn derived(keys: Arc<SigningKeys>, ttl: Duration) -> Sessions {
        Sessions { keys: SessionKeys::Derived(keys), ttl }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The keys to check with; the first one signs.
    fn keys(&self) -> Vec<[u8; 32]> {
        match &self.keys {
            SessionKeys::Fixed(k) => vec![*k],
            SessionKeys::Derived(set) => set.derive_all(DERIVE_LABEL),
        }
    }

    /// A MAC under the signing key.
    fn mac(&self) -> HmacSha256 {
        mac_with(self.keys().first().unwrap_or(&[0u8; 32]))
    }

    /// Whether `sig` is the MAC of `parts` under any of the keys (each
    /// check in constant time).
    fn verifies(&self, parts: &[&[u8]], sig: &[u8]) -> bool {
        self.keys().iter().any(|k| {
            let mut mac = mac_with(k);
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(sig).is_ok()
        })
    }

    /// A new session for `identity`, expiring after the TTL.
    pub fn start(&self, identity: Identity) -> Session {
        let mut n = [0u8; 16];
        random(&mut n);
        Session { identity, expires: now() + self.ttl.as_secs(), nonce: hex::encode(n) }
    }

    /// The cookie value of `s`.
    pub fn encode(&self, s: &Session) -> String {
        let (u, g) = match &s.identity {
            Identity::Anonymous => (None, Vec::new()),
            Identity::User { name, groups } => (Some(name.clone()), groups.clone()),
        };
        let json = serde_json::to_vec(&Payload { u, g, e: s.expires, n: s.nonce.clone() }).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Verifies a cookie value: signature (constant time), shape, expiry.
    pub fn decode(&self, value: &str) -> Option<Session> {
        if value.len() > MAX_COOKIE {
            return None;
        }
        let (payload, sig) = value.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if !self.verifies(&[payload.as_bytes()], &sig) {
            return None;
        }
        let p: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if p.e <= now() {
            return None;
        }
        let identity = match p.u {
            None => Identity::Anonymous,
            Some(name) => Identity::User { name, groups: p.g },
        };
        Some(Session { identity, expires: p.e, nonce: p.n })
    }

    /// `data` with its MAC (`base64url(data).base64url(mac)`), for other
    /// short-lived signed cookies (the OIDC login's state).
    pub fn sign(&self, data: &[u8]) -> String {
        let payload = URL_SAFE_NO_PAD.encode(data);
        let mut mac = self.mac();
        mac.update(b"data\0");
        mac.update(payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// The data of a value made by [`Sessions::sign`] (constant-time check).
    pub fn verify(&self, value: &str) -> Option<Vec<u8>> {
        if value.len() > MAX_COOKIE {
            return None;
        }
        let (payload, sig) = value.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if !self.verifies(&[b"data\0", payload.as_bytes()], &sig) {
            return None;
        }
        URL_SAFE_NO_PAD.decode(payload).ok()
    }

    /// The values of cookie `name`.
    pub fn cookies(headers: &HeaderMap, name: &str) -> Vec<String> {
        cookie_values(headers, name).collect()
    }

    /// The valid session a request's cookies carry, if any.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<Session> {
        cookie_values(headers, COOKIE).find_map(|v| self.decode(&v))
    }

    /// The `Set-Cookie` value for `s`.
    pub fn set_cookie(&self, s: &Session, secure: bool) -> String {
        let max_age = s.expires.saturating_sub(now());
        let secure = if secure { "; Secure" } else { "" };
        format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}", self.encode(s))
    }

    /// The CSRF token of forms shown in session `s`.
    pub fn csrf_token(&self, s: &Session) -> String {
        let mut mac = self.mac();
        mac.update(b"csrf\0");
        mac.update(s.nonce.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `token` is session `s`'s CSRF token (constant time).
    pub fn csrf_ok(&self, s: &Session, token: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        self.verifies(&[b"csrf\0", s.nonce.as_bytes()], &sig)
    }
}

fn mac_with(key: &[u8; 32]) -> HmacSha256 {
    // HMAC accepts keys of any length: this cannot fail.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).filter_map(
        move |kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then(|| v.trim().to_owned())
        },
    )
}

/// Whether a state-changing request comes from a page of this origin: a
/// browser's `Sec-Fetch-Site` must be `same-origin` (or `none`: typed by the
/// user), and an `Origin` must be the scheme and host the request was sent
/// to. Requests without either (non-browser clients) rely on the CSRF token.
pub fn same_origin(headers: &HeaderMap, scheme: &str, host: &str) -> bool {
    let get = |n: &str| headers.get(n).map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(site) = get("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    match get("origin") {
        None => true,
        Some(o) => o.eq_ignore_ascii_case(&format!("{scheme}://{host}")),
    }
}

/// Fills `buf` from the OS CSPRNG.
pub fn random(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // Without randomness no session key can be made safely.
        panic!("operating system random number generator failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Identity {
        Identity::User { name: "alice".into(), groups: vec!["dev".into()] }
    }

    #[test]
    fn sessions_round_trip_and_reject_tampering() {
        let s = Sessions::with_key([7; 32], Duration::from_secs(600));
        let sess = s.start(user());
        let v = s.encode(&sess);
        assert_eq!(s.decode(&v), Some(sess.clone()));
        // Another key, a flipped payload byte, a swapped signature: refused.
        assert_eq!(Sessions::with_key([8; 32], Duration::from_secs(600)).decode(&v), None);
        let (payload, sig) = v.split_once('.').expect("two parts");
        let forged = serde_json::json!({"u": "root", "e": now() + 600, "n": "00"}).to_string();
        assert_eq!(s.decode(&format!("{}.{sig}", URL_SAFE_NO_PAD.encode(forged))), None);
        let mut bytes = payload.as_bytes().to_vec();
        bytes[3] ^= 1;
        assert_eq!(s.decode(&format!("{}.{sig}", String::from_utf8_lossy(&bytes))), None);
        assert_eq!(s.decode(payload), None);
        assert_eq!(s.decode(""), None);
        assert_eq!(s.decode(&"a".repeat(10_000)), None);
    }

    #[test]
    fn expired_sessions_are_refused() {
        let s = Sessions::with_key([1; 32], Duration::from_secs(600));
        let mut sess = s.start(user());
        sess.expires = now() - 1;
        assert_eq!(s.decode(&s.encode(&sess)), None);
    }

    #[test]
    fn cookie_attributes_and_parsing() {
        let s = Sessions::with_key([2; 32], Duration::from_secs(900));
        let sess = s.start(Identity::Anonymous);
        let c = s.set_cookie(&sess, true);
        assert!(c.starts_with("cove_session="), "{c}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure", "Max-Age=9"] {
            assert!(c.contains(attr), "{c} has {attr}");
        }
        assert!(!s.set_cookie(&sess, false).contains("Secure"));
        let mut h = HeaderMap::new();
        let value = s.encode(&sess);
        h.insert(http::header::COOKIE, format!("other=1; cove_session={value}; x=y").parse().expect("header"));
        assert_eq!(s.from_headers(&h), Some(sess));
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let s = Sessions::with_key([3; 32], Duration::from_secs(900));
        let a = s.start(user());
        let b = s.start(user());
        let t = s.csrf_token(&a);
        assert!(s.csrf_ok(&a, &t));
        assert!(!s.csrf_ok(&b, &t), "another session's token");
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, "not base64!"));
        assert!(!s.csrf_ok(&a, &t[..t.len() - 2]));
    }

    #[test]
    fn signed_data_round_trips_and_is_not_a_session() {
        let s = Sessions::with_key([4; 32], Duration::from_secs(60));
        let v = s.sign(b"state");
        assert_eq!(s.verify(&v).as_deref(), Some(&b"state"[..]));
        assert_eq!(Sessions::with_key([5; 32], Duration::from_secs(60)).verify(&v), None);
        assert_eq!(s.decode(&v), None, "signed data is never accepted as a session");
        let sess = s.encode(&s.start(user()));
        assert_eq!(s.verify(&sess), None, "a session is never accepted as signed data");
    }

    #[test]
    fn origin_checks() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().expect("value"));
            }
            m
        };
        assert!(same_origin(&h(&[]), "http", "cove:5050"));
        assert!(same_origin(
            &h(&[("origin", "http://cove:5050"), ("sec-fetch-site", "same-origin")]),
            "http",
            "cove:5050"
        ));
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")]), "http", "cove:5050"));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")]), "http", "cove:5050"));
        assert!(!same_origin(&h(&[("origin", "http://evil.example")]), "http", "cove:5050"));
        assert!(!same_origin(&h(&[("origin", "null")]), "http", "cove:5050"));
        assert!(!same_origin(&h(&[("origin", "https://cove:5050")]), "http", "cove:5050"));
    }
}
