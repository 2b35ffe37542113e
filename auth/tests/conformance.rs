//! The shared authenticator conformance suite, run against every kind.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cove_auth::{HtpasswdAuthenticator, HtpasswdOptions, NetworkAuthenticator, OidcAuthenticator, OidcConfig};
use cove_testkit::oidc::*;
use cove_testkit::suites::auth::*;
use cove_testkit::util::{basic, now_secs};

#[tokio::test]
async fn network_authenticator_conforms() {
    let a = NetworkAuthenticator;
    let e = Expect {
        verifies_credentials: false,
        good: Some((basic("alice", "whatever"), "alice".into())),
        bad: vec![basic("alice", "wrong")],
        challenge_scheme: None,
    };
    run_all(&a, &e).await;
}

#[tokio::test]
async fn htpasswd_authenticator_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let hash = bcrypt::hash("correct horse", 5).unwrap();
    std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
    let a = HtpasswdAuthenticator::open(&path, HtpasswdOptions::default()).await.unwrap();
    let e = Expect {
        verifies_credentials: true,
        good: Some((basic("alice", "correct horse"), "alice".into())),
        bad: vec![
            basic("alice", "wrong horse"),
            basic("alice", ""),
            basic("mallory", "correct horse"),
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x".into(),
        ],
        challenge_scheme: Some("Basic"),
    };
    run_all(&a, &e).await;
}

#[tokio::test]
async fn oidc_authenticator_conforms() {
    let issuer = Issuer::start().await;
    let key = SigningKey::rsa("k1");
    issuer.set_keys(vec![key.jwk()]);
    let cfg = oidc_config(&issuer.url);
    let a = OidcAuthenticator::new(cfg, "cove").unwrap();
    let claims = |aud: &str| serde_json::json!({"iss": issuer.url, "aud": aud, "sub": "ci-bot", "exp": now_secs() + 300, "iat": now_secs()});
    let good = format!("Bearer {}", key.sign(&claims("cove")));
    let other = SigningKey::rsa("k1"); // same kid, different key: forged
    let e = Expect {
        verifies_credentials: true,
        good: Some((good, "ci-bot".into())),
        bad: vec![
            format!("Bearer {}", key.sign(&claims("someone-else"))),
            format!("Bearer {}", other.sign(&claims("cove"))),
            basic("ci", &other.sign(&claims("cove"))),
        ],
        challenge_scheme: Some("Bearer"),
    };
    run_all(&a, &e).await;
}

fn oidc_config(issuer: &str) -> OidcConfig {
    toml::from_str::<OidcConfig>(&format!(
        "issuer = \"{issuer}\"\naudience = \"cove\"\njwks_refetch_interval = \"0s\"\n"
    ))
    .map(|mut c| {
        c.leeway = Duration::from_secs(5);
        c
    })
    .unwrap()
}
