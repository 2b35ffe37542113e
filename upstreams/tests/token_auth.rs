//! The bearer-token flow against distribution with `auth: token`, whose
//! token service is an issuer run by the test (ES256 JWTs with `x5c`).

mod common;

use std::time::Duration;

use common::upstream_from_toml;
use cove_core::upstream::UpstreamError;
use cove_core::Upstream;
use cove_testkit::layout::{Layout, LayoutImage};
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;
use cove_testkit::token::{SigningCert, TokenIssuer};
use cove_testkit::util::{digest, reference, repo, try_read_all};

/// Pushes two repositories into a plain registry's storage, then serves
/// the same storage from a token-auth registry.
async fn token_registry(
    cert: &SigningCert,
    issuer: &TokenIssuer,
) -> (Distribution, LayoutImage, LayoutImage, tempfile::TempDir) {
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("storage");
    let mut layout = Layout::new(&work.path().join("layout"));
    let a = layout.add_image("a", &[20_000]);
    let b = layout.add_image("b", &[30_000]);
    {
        let open = Distribution::start(Some(&root), None).await;
        skopeo_push(&layout.dir, "a", &format!("{}/library/app:a", open.authority()), None);
        skopeo_push(&layout.dir, "b", &format!("{}/team/other:b", open.authority()), None);
    }
    let reg = Distribution::start(Some(&root), Some(&issuer.auth_config(cert))).await;
    (reg, a, b, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_token_is_fetched_cached_and_used() {
    let cert = SigningCert::generate();
    let issuer = TokenIssuer::start(&cert, None, 300).await;
    let (reg, a, b, _work) = token_registry(&cert, &issuer).await;
    let up = upstream_from_toml("quay.io", &format!("url = \"{}\"", reg.url()));
    let app = repo("library/app");

    // Without a token the registry challenges; the client answers it.
    let m = up.get_manifest(&app, &reference("a")).await.expect("GET with token");
    assert_eq!(m.bytes.as_deref(), Some(&a.manifest.bytes[..]));
    assert_eq!(issuer.hits(), 1);
    let req = &issuer.server.requests()[0];
    assert_eq!(req.query("scope").as_deref(), Some("repository:library/app:pull"));
    assert_eq!(req.query("service").as_deref(), Some("cove-test-registry"));
    assert_eq!(req.header("authorization"), None, "anonymous token request");

    // Same scope: the cached token serves every method, no new issuer hit.
    let h = up.head_manifest(&app, &reference("a")).await.expect("HEAD");
    assert_eq!(h.digest.to_string(), a.manifest.digest);
    let layer = &a.layers[0];
    let blob = up.get_blob(&app, &digest(&layer.digest)).await.expect("blob");
    assert_eq!(try_read_all(blob.stream).await.expect("body"), layer.bytes);
    assert_eq!(up.head_blob(&app, &digest(&layer.digest)).await.expect("HEAD blob"), layer.bytes.len() as u64);
    assert_eq!(up.tags(&app).await.expect("tags"), ["a"]);
    assert_eq!(issuer.hits(), 1, "token reused for the same scope");
    // Only the first request was challenged.
    let challenged = std::fs::read_to_string(&reg.log).expect("log").lines().filter(|l| l.contains("\" 401 ")).count();
    assert_eq!(challenged, 1, "one 401 from distribution");

    // Another repository: a new scope, fetched up front from the known realm.
    let other = repo("team/other");
    let m = up.get_manifest(&other, &reference("b")).await.expect("other repo");
    assert_eq!(m.bytes.as_deref(), Some(&b.manifest.bytes[..]));
    assert_eq!(issuer.hits(), 2);
    assert_eq!(issuer.server.requests()[1].query("scope").as_deref(), Some("repository:team/other:pull"));

    // Concurrent first requests of a fresh client share one token fetch.
    let fresh = std::sync::Arc::new(upstream_from_toml("quay.io", &format!("url = \"{}\"", reg.url())));
    let before = issuer.hits();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let up = fresh.clone();
            tokio::spawn(async move { up.get_manifest(&repo("library/app"), &reference("a")).await })
        })
        .collect();
    for t in tasks {
        let m = t.await.expect("join").expect("concurrent GET");
        assert_eq!(m.digest.to_string(), a.manifest.digest);
    }
    assert_eq!(issuer.hits(), before + 1, "one token for eight concurrent misses");

    // A missing manifest under a valid token is a 404, not an auth error.
    assert!(matches!(up.get_manifest(&app, &reference("zzz")).await, Err(UpstreamError::NotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_expiry() {
    let cert = SigningCert::generate();
    // 2 s lifetime: used for 1.6 s (a fifth is kept as margin).
    let issuer = TokenIssuer::start(&cert, None, 2).await;
    let (reg, a, _b, _work) = token_registry(&cert, &issuer).await;
    let up = upstream_from_toml("quay.io", &format!("url = \"{}\"", reg.url()));
    let app = repo("library/app");
    up.head_manifest(&app, &reference("a")).await.expect("first");
    up.head_manifest(&app, &reference("a")).await.expect("cached");
    assert_eq!(issuer.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let m = up.get_manifest(&app, &reference("a")).await.expect("after expiry");
    assert_eq!(m.digest.to_string(), a.manifest.digest);
    assert_eq!(issuer.hits(), 2, "a fresh token after the old one aged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentialed_token_flow() {
    let cert = SigningCert::generate();
    let issuer = TokenIssuer::start(&cert, Some(("alice", "s3cret:pw")), 300).await;
    let (reg, a, _b, work) = token_registry(&cert, &issuer).await;
    let app = repo("library/app");

    // Right credentials, from a credentials file.
    let cred = work.path().join("cred");
    std::fs::write(&cred, "alice:s3cret:pw\n").expect("cred file");
    let up =
        upstream_from_toml("ghcr.io", &format!("url = \"{}\"\ncredentials_file = \"{}\"", reg.url(), cred.display()));
    assert!(up.has_credentials());
    let m = up.get_manifest(&app, &reference("a")).await.expect("authorized");
    assert_eq!(m.bytes.as_deref(), Some(&a.manifest.bytes[..]));
    let hits = issuer.hits();
    assert_eq!(hits, 1);
    let auth = issuer.server.requests()[0].header("authorization").map(str::to_owned);
    assert!(auth.is_some_and(|h| h.starts_with("Basic ")));

    // Wrong password: the issuer refuses, the client reports Unauthorized.
    let bad =
        upstream_from_toml("ghcr.io", &format!("url = \"{}\"\nusername = \"alice\"\npassword = \"wrong\"", reg.url()));
    match bad.get_manifest(&app, &reference("a")).await {
        Err(UpstreamError::Unauthorized(msg)) => {
            assert!(!msg.contains("wrong"), "password leaked: {msg}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(issuer.hits(), hits + 1, "no retry of an auth failure");

    // No credentials at all.
    let anon = upstream_from_toml("ghcr.io", &format!("url = \"{}\"", reg.url()));
    assert!(matches!(anon.get_blob(&app, &digest(&a.layers[0].digest)).await, Err(UpstreamError::Unauthorized(_))));
}
