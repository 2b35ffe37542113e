//! The shared [`Authenticator`] suite: every authenticator passes these.
//! What an implementation does with credentials is a parameter
//! ([`Expect`]), never a silent skip.

use std::net::IpAddr;

use std::time::Duration;

use cove_core::{AuthRequest, Authenticator, Challenge, ErrorCode, ErrorDetail, Identity, RegistryError};

/// The challenge an error carries (rendered as `WWW-Authenticate` by the
/// server; the rendering itself is tested in `cove-server`).
pub fn challenge(e: &RegistryError) -> Option<&Challenge> {
    match &e.detail {
        Some(ErrorDetail::Challenge(c)) => Some(c),
        _ => None,
    }
}

/// How long an error asks the client to wait (`Retry-After`).
pub fn retry_after(e: &RegistryError) -> Option<Duration> {
    match &e.detail {
        Some(ErrorDetail::RetryAfter(d)) => Some(*d),
        _ => None,
    }
}

/// The scheme of a challenge, as it appears in `WWW-Authenticate`.
pub fn scheme(c: &Challenge) -> &'static str {
    match c {
        Challenge::Basic { .. } => "Basic",
        Challenge::Bearer { .. } => "Bearer",
    }
}

/// A request from `peer` with an optional `Authorization` and
/// `X-Forwarded-For` header.
pub fn req<'a>(peer: &str, authorization: Option<&'a str>, xff: Option<&'a str>) -> AuthRequest<'a> {
    AuthRequest {
        peer: peer.parse::<IpAddr>().expect("peer address"),
        authorization,
        forwarded_for: xff,
        forwarded: None,
    }
}

/// What the authenticator under test is expected to do.
pub struct Expect {
    /// False for authenticators that ignore credentials (network trust).
    pub verifies_credentials: bool,
    /// A header that must authenticate, and the user name it yields.
    pub good: Option<(String, String)>,
    /// Headers with wrong credentials.
    pub bad: Vec<String>,
    /// The challenge scheme (`Basic`, `Bearer`), if any.
    pub challenge_scheme: Option<&'static str>,
}

/// No header: anonymous.
pub async fn anonymous(a: &dyn Authenticator) {
    let id = a.authenticate(&req("127.0.0.1", None, None)).await.expect("authenticates");
    assert_eq!(id, Identity::Anonymous, "{}: no header must be anonymous", a.kind());
}

/// The good header yields its user (or anonymity, if credentials are ignored).
pub async fn good_credentials(a: &dyn Authenticator, e: &Expect) {
    let Some((header, user)) = &e.good else {
        assert!(!e.verifies_credentials, "a verifying authenticator must provide good credentials");
        return;
    };
    let id = a.authenticate(&req("127.0.0.1", Some(header), None)).await.expect("authenticates");
    if e.verifies_credentials {
        assert_eq!(id.name(), Some(user.as_str()), "{}", a.kind());
    } else {
        assert_eq!(id, Identity::Anonymous);
    }
}

/// Wrong credentials: 401 UNAUTHORIZED that does not echo them.
pub async fn bad_credentials(a: &dyn Authenticator, e: &Expect) {
    for h in &e.bad {
        let r = a.authenticate(&req("127.0.0.1", Some(h), None)).await;
        if e.verifies_credentials {
            let err = r.expect_err("wrong credentials must fail");
            assert_eq!(err.code, ErrorCode::Unauthorized, "{}", a.kind());
            assert_no_secret_echo(&err, h);
        } else {
            assert_eq!(r.expect("authenticates"), Identity::Anonymous);
        }
    }
}

/// Malformed headers fail (or are ignored) without echoing them.
pub async fn malformed_header(a: &dyn Authenticator, e: &Expect) {
    let long = format!("Bearer {}", "a".repeat(20_000));
    let cases = [
        "Basic",
        "Basic !!!notbase64!!!",
        "Basic Zm9vYmFy",
        "Digest username=\"x\"",
        "Bearer",
        "Bearer not-a-jwt",
        "garbage",
        long.as_str(),
    ];
    for h in cases {
        let r = a.authenticate(&req("127.0.0.1", Some(h), None)).await;
        if e.verifies_credentials {
            let err = r.expect_err(&format!("{}: malformed header {h:.40} must fail", a.kind()));
            assert_eq!(err.code, ErrorCode::Unauthorized, "{}: {h:.40}", a.kind());
            assert_no_secret_echo(&err, h);
        } else {
            assert_eq!(r.expect("authenticates"), Identity::Anonymous);
        }
    }
}

/// The challenge has the expected scheme and a realm that renders as a
/// quoted string (non-empty, no quote, backslash or control character).
pub fn challenge_format(a: &dyn Authenticator, e: &Expect) {
    match (a.challenge(), e.challenge_scheme) {
        (None, None) => {}
        (Some(c), Some(want)) => {
            assert_eq!(scheme(&c), want, "{}: {c:?}", a.kind());
            let (Challenge::Basic { realm } | Challenge::Bearer { realm, .. }) = &c;
            assert!(!realm.is_empty(), "{}: challenge needs a realm", a.kind());
            assert!(
                !realm.chars().any(|ch| ch == '"' || ch == '\\' || ch.is_control()),
                "{}: realm cannot be quoted: {realm:?}",
                a.kind()
            );
        }
        (got, want) => panic!("{}: challenge {got:?}, expected scheme {want:?}", a.kind()),
    }
}

/// Runs every check.
pub async fn run_all(a: &dyn Authenticator, e: &Expect) {
    anonymous(a).await;
    good_credentials(a, e).await;
    bad_credentials(a, e).await;
    malformed_header(a, e).await;
    challenge_format(a, e);
}

fn assert_no_secret_echo(err: &RegistryError, header: &str) {
    // The part after the scheme is the secret (a bare scheme has none).
    let secret = header.split_once(' ').map_or("", |(_, s)| s);
    if secret.len() < 4 {
        return;
    }
    // The message is the body's text; the detail is what the headers render.
    assert!(!err.message.contains(secret), "error message echoes the credential");
    assert!(!format!("{:?}", err.detail).contains(secret), "error detail echoes the credential");
}
