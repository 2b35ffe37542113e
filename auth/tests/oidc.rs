//! OIDC against a loopback issuer (discovery + JWKS over real HTTP) with
//! real RS256 and ES256 signatures.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine;
use cove_auth::{OidcAuthenticator, OidcConfig};
use cove_core::{Authenticator, Challenge, ChallengeError, ErrorCode, Identity, RegistryError};
use cove_testkit::oidc::*;
use cove_testkit::suites::auth::*;
use cove_testkit::util::{basic, now_secs};
use serde_json::{json, Value};

fn config(issuer: &str, refetch: &str) -> OidcConfig {
    let mut c: OidcConfig = toml::from_str(&format!(
        "issuer = \"{issuer}\"\naudience = \"cove\"\nusername_claim = \"email\"\ngroups_claim = \"roles\"\n\
         algorithms = [\"RS256\", \"ES256\"]\njwks_refetch_interval = \"{refetch}\"\n"
    ))
    .unwrap();
    c.leeway = Duration::from_secs(5);
    c
}

fn claims(iss: &str) -> Value {
    json!({"iss": iss, "aud": "cove", "sub": "123", "email": "ci@example.org", "roles": ["builders", "ops"],
           "exp": now_secs() + 300, "nbf": now_secs() - 10, "iat": now_secs()})
}

async fn auth(a: &OidcAuthenticator, token: &str) -> Result<Identity, RegistryError> {
    let h = format!("Bearer {token}");
    a.authenticate(&req("127.0.0.1", Some(&h), None)).await
}

fn assert_invalid(r: Result<Identity, RegistryError>, why: &str) {
    let e = r.expect_err(why);
    assert_eq!(e.code, ErrorCode::Unauthorized, "{why}: {e}");
    match challenge(&e) {
        Some(Challenge::Bearer { error, .. }) => assert_eq!(*error, Some(ChallengeError::InvalidToken), "{why}"),
        c => panic!("{why}: expected a bearer challenge, got {c:?}"),
    }
}

#[tokio::test]
async fn good_tokens_rs256_and_es256_map_claims() {
    let iss = Issuer::start().await;
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    iss.set_keys(vec![rsa.jwk(), ec.jwk()]);
    let a = OidcAuthenticator::new(config(&iss.url, "10s"), "cove").unwrap();
    for k in [&rsa, &ec] {
        let id = auth(&a, &k.sign(&claims(&iss.url))).await.unwrap();
        assert_eq!(id, Identity::User { name: "ci@example.org".into(), groups: vec!["builders".into(), "ops".into()] });
    }
    // The JWT as the password of Basic credentials (docker login -p "$JWT").
    let h = basic("ci", &ec.sign(&claims(&iss.url)));
    let id = a.authenticate(&req("127.0.0.1", Some(&h), None)).await.unwrap();
    assert_eq!(id.name(), Some("ci@example.org"));
    assert_eq!(iss.jwks_fetches(), 1, "JWKS is cached");
}

#[tokio::test]
async fn bad_tokens_are_rejected() {
    let iss = Issuer::start().await;
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    iss.set_keys(vec![rsa.jwk(), ec.jwk()]);
    let a = OidcAuthenticator::new(config(&iss.url, "10s"), "cove").unwrap();

    let mut c = claims(&iss.url);
    c["exp"] = json!(now_secs() - 120);
    assert_invalid(auth(&a, &rsa.sign(&c)).await, "expired");

    let mut c = claims(&iss.url);
    c["nbf"] = json!(now_secs() + 600);
    assert_invalid(auth(&a, &rsa.sign(&c)).await, "not yet valid");

    let mut c = claims(&iss.url);
    c["aud"] = json!("another-service");
    assert_invalid(auth(&a, &rsa.sign(&c)).await, "wrong audience");

    let c = claims("https://evil.example");
    assert_invalid(auth(&a, &rsa.sign(&c)).await, "wrong issuer");

    let mut c = claims(&iss.url);
    c.as_object_mut().unwrap().remove("exp");
    assert_invalid(auth(&a, &rsa.sign(&c)).await, "no exp");

    let mut c = claims(&iss.url);
    c.as_object_mut().unwrap().remove("email");
    assert_invalid(auth(&a, &rsa.sign(&c)).await, "no user-name claim");

    // alg: none — an unsigned token naming a real kid.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})), b64(&claims(&iss.url)));
    assert_invalid(auth(&a, &none).await, "alg none");

    // HS256 signed with the RSA public key material (key confusion).
    let jwk = rsa.jwk();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let hs = jsonwebtoken::encode(
        &h,
        &claims(&iss.url),
        &jsonwebtoken::EncodingKey::from_secret(jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    assert_invalid(auth(&a, &hs).await, "HS256");

    // ES256 header pointing at the RSA key: key type must match.
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(&h, &claims(&iss.url), &ec.key).unwrap();
    assert_invalid(auth(&a, &confused).await, "alg/key mismatch");

    // Tampered payload.
    let good = rsa.sign(&claims(&iss.url));
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims(&iss.url);
    c["email"] = json!("admin@example.org");
    let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
    assert_invalid(auth(&a, &tampered).await, "tampered");

    // Sanity: the untampered token is fine.
    auth(&a, &good).await.unwrap();
}

#[tokio::test]
async fn rotated_key_is_accepted_after_refetch() {
    let iss = Issuer::start().await;
    let old = SigningKey::rsa("2026-a");
    iss.set_keys(vec![old.jwk()]);
    let a = OidcAuthenticator::new(config(&iss.url, "0s"), "cove").unwrap();
    auth(&a, &old.sign(&claims(&iss.url))).await.unwrap();
    assert_eq!(iss.jwks_fetches(), 1);

    // The issuer rotates: new key published, old one withdrawn.
    let new = SigningKey::ec("2026-b");
    iss.set_keys(vec![new.jwk()]);
    let id = auth(&a, &new.sign(&claims(&iss.url))).await.unwrap();
    assert_eq!(id.name(), Some("ci@example.org"));
    assert_eq!(iss.jwks_fetches(), 2, "one refetch for the unknown kid");
    assert_invalid(auth(&a, &old.sign(&claims(&iss.url))).await, "withdrawn key");
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let iss = Issuer::start().await;
    let k = SigningKey::rsa("known");
    iss.set_keys(vec![k.jwk()]);
    let a = OidcAuthenticator::new(config(&iss.url, "60s"), "cove").unwrap();
    auth(&a, &k.sign(&claims(&iss.url))).await.unwrap();
    let stranger = SigningKey::rsa("stranger");
    for i in 0..20 {
        let s = SigningKey { kid: format!("random-{i}"), alg: stranger.alg, key: stranger.key.clone() };
        assert_invalid(auth(&a, &s.sign(&claims(&iss.url))).await, "unknown kid");
    }
    assert_eq!(iss.jwks_fetches(), 1, "unknown kids must not hammer the issuer");
}

#[tokio::test]
async fn unreachable_issuer_is_unavailable_not_unauthorized() {
    // Bind then drop a listener to get a dead loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let a = OidcAuthenticator::new(config(&url, "0s"), "cove").unwrap();
    let k = SigningKey::rsa("k");
    let e = auth(&a, &k.sign(&claims(&url))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
}

#[test]
fn insecure_or_symmetric_settings_are_refused() {
    let mut c = config("http://idp.example.com", "10s");
    assert!(OidcAuthenticator::new(c.clone(), "cove").is_err(), "plain http to a non-loopback issuer");
    c.issuer = "https://idp.example.com".into();
    c.algorithms = vec!["RS256".into(), "HS256".into()];
    assert!(OidcAuthenticator::new(c.clone(), "cove").is_err(), "HS256 in the allow-list");
    c.algorithms = vec!["none".into()];
    assert!(OidcAuthenticator::new(c, "cove").is_err(), "none in the allow-list");
}
