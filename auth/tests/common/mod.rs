//! Shared test helpers: the authenticator conformance suite, request
//! builders, hash generation and a loopback OIDC issuer.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use cove_core::{AuthRequest, Authenticator, ErrorCode, Identity};
/// What a client receives for an error (status, headers, body).
pub use cove_server::error::HttpError;
use http_body_util::Full;
use hyper::{Request, Response};

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

pub fn req<'a>(peer: &str, authorization: Option<&'a str>, xff: Option<&'a str>) -> AuthRequest<'a> {
    AuthRequest { peer: peer.parse::<IpAddr>().unwrap(), authorization, forwarded_for: xff }
}

// ---------------------------------------------------------------------------
// Authenticator conformance suite: every Authenticator passes these. What an
// implementation does with credentials is a parameter, never a silent skip.

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

pub async fn anonymous(a: &dyn Authenticator) {
    let id = a.authenticate(&req("127.0.0.1", None, None)).await.unwrap();
    assert_eq!(id, Identity::Anonymous, "{}: no header must be anonymous", a.kind());
}

pub async fn good_credentials(a: &dyn Authenticator, e: &Expect) {
    let Some((header, user)) = &e.good else {
        assert!(!e.verifies_credentials, "a verifying authenticator must provide good credentials");
        return;
    };
    let id = a.authenticate(&req("127.0.0.1", Some(header), None)).await.unwrap();
    if e.verifies_credentials {
        assert_eq!(id.name(), Some(user.as_str()), "{}", a.kind());
    } else {
        assert_eq!(id, Identity::Anonymous);
    }
}

pub async fn bad_credentials(a: &dyn Authenticator, e: &Expect) {
    for h in &e.bad {
        let r = a.authenticate(&req("127.0.0.1", Some(h), None)).await;
        if e.verifies_credentials {
            let err = r.expect_err("wrong credentials must fail");
            assert_eq!(err.code, ErrorCode::Unauthorized, "{}", a.kind());
            assert_eq!(err.http_status(), 401);
            assert_no_secret_echo(&err, h);
        } else {
            assert_eq!(r.unwrap(), Identity::Anonymous);
        }
    }
}

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
            assert_eq!(r.unwrap(), Identity::Anonymous);
        }
    }
}

pub fn challenge_format(a: &dyn Authenticator, e: &Expect) {
    match (a.challenge().map(|c| cove_server::error::challenge_header(&c)), e.challenge_scheme) {
        (None, None) => {}
        (Some(c), Some(scheme)) => {
            assert!(c.starts_with(&format!("{scheme} ")), "{c}");
            assert!(c.contains("realm=\""), "challenge needs a quoted realm: {c}");
            assert_eq!(c.matches('"').count() % 2, 0, "unbalanced quotes: {c}");
        }
        (got, want) => panic!("{}: challenge {got:?}, expected scheme {want:?}", a.kind()),
    }
}

pub async fn run_conformance(a: &dyn Authenticator, e: &Expect) {
    anonymous(a).await;
    good_credentials(a, e).await;
    bad_credentials(a, e).await;
    malformed_header(a, e).await;
    challenge_format(a, e);
}

fn assert_no_secret_echo(err: &cove_core::RegistryError, header: &str) {
    // The part after the scheme is the secret (a bare scheme has none).
    let secret = header.split_once(' ').map_or("", |(_, s)| s);
    if secret.len() < 4 {
        return;
    }
    let body = err.body().to_string();
    assert!(!body.contains(secret), "error body echoes the credential");
    assert!(!err.message.contains(secret));
    for (_, v) in &err.headers() {
        assert!(!v.contains(secret), "error header echoes the credential");
    }
}

// ---------------------------------------------------------------------------
// Keys and hashes made by the test.

/// Runs `openssl` with `args`, returning stdout.
pub fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl").args(args).output().expect("openssl must be installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn rsa_pem() -> String {
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
}

pub fn ec_pem() -> String {
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
}

// ---------------------------------------------------------------------------
// A loopback OIDC issuer: discovery + JWKS over real HTTP.

pub struct Issuer {
    pub url: String,
    pub jwks: Arc<Mutex<serde_json::Value>>,
    pub jwks_fetches: Arc<AtomicUsize>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let jwks = Arc::new(Mutex::new(serde_json::json!({"keys": []})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (u, j, f) = (url.clone(), jwks.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (u, j, f) = (u.clone(), j.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                        let (u, j, f) = (u.clone(), j.clone(), f.clone());
                        async move {
                            let body = match r.uri().path() {
                                "/.well-known/openid-configuration" => serde_json::json!({
                                    "issuer": u,
                                    "jwks_uri": format!("{u}/jwks"),
                                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                                })
                                .to_string(),
                                "/jwks" => {
                                    f.fetch_add(1, Ordering::SeqCst);
                                    j.lock().unwrap().to_string()
                                }
                                _ => {
                                    return Ok::<_, Infallible>(
                                        Response::builder().status(404).body(Full::new(Bytes::new())).unwrap(),
                                    )
                                }
                            };
                            Ok(Response::builder()
                                .header("Content-Type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Issuer { url, jwks, jwks_fetches: fetches }
    }

    pub fn set_keys(&self, keys: Vec<serde_json::Value>) {
        *self.jwks.lock().unwrap() = serde_json::json!({ "keys": keys });
    }
}

/// A signing key of the test issuer.
pub struct SigningKey {
    pub kid: String,
    pub alg: jsonwebtoken::Algorithm,
    pub key: jsonwebtoken::EncodingKey,
}

impl SigningKey {
    pub fn rsa(kid: &str) -> SigningKey {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(rsa_pem().as_bytes()).unwrap();
        SigningKey { kid: kid.into(), alg: jsonwebtoken::Algorithm::RS256, key }
    }

    pub fn ec(kid: &str) -> SigningKey {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(ec_pem().as_bytes()).unwrap();
        SigningKey { kid: kid.into(), alg: jsonwebtoken::Algorithm::ES256, key }
    }

    /// The public JWK, with `kid`, `alg` and `use`.
    pub fn jwk(&self) -> serde_json::Value {
        let mut j = jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        j.common.key_id = Some(self.kid.clone());
        j.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        serde_json::to_value(j).unwrap()
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let mut h = jsonwebtoken::Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
