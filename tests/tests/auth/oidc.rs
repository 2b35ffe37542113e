//! OIDC from a loopback issuer (discovery + JWKS) with real signatures, and
//! an issuer that is down.

use super::*;

fn oidc_config(issuer: &str, extra: &str) -> String {
    format!(
        r#"[server]
public_url = "http://@LISTEN@"
{extra}
[auth]
kind = "oidc"
[auth.rate_limit]
max_failures = 0

[auth.oidc]
issuer = "{issuer}"
audience = "cove"
username_claim = "email"
groups_claim = "groups"
algorithms = ["RS256", "ES256"]
leeway = "5s"
jwks_refetch_interval = "1s"
{}"#,
        [
            access_rule("ci/**", &["pull", "push"], r#"groups = ["builders"]"#),
            access_rule("ci/**", &["pull"], r#"anyone = "authenticated""#),
            access_rule("public/*", &["pull"], r#"anyone = "anonymous""#),
            access_rule("public/*", &["pull", "push"], r#"groups = ["builders"]"#),
        ]
        .concat()
    )
}

fn oidc_model(groups: Option<&[&str]>, repo: &str, action: &str) -> bool {
    let builder = groups.is_some_and(|g| g.contains(&"builders"));
    match repo.split('/').next().unwrap_or_default() {
        "ci" => (builder && action != "delete") || (groups.is_some() && action == "pull"),
        "public" => action == "pull" || (builder && action == "push"),
        "docker.io" => groups.is_some() && action == "pull",
        _ => groups.is_some(),
    }
}

fn claims(iss: &str, email: &str, groups: &[&str]) -> serde_json::Value {
    json!({"iss": iss, "aud": "cove", "sub": format!("sub-{email}"), "email": email, "groups": groups,
           "exp": now() + 300, "nbf": now() - 10, "iat": now()})
}

#[tokio::test]
async fn oidc_tokens_from_a_loopback_issuer() {
    let _g = EXCLUSIVE.read().await;
    let issuer = Issuer::start().await;
    let k1 = SigningKey::ec("key-1");
    issuer.set_keys(vec![k1.jwk()]);
    let up = empty_upstream().await;
    let cfg = oidc_config(&issuer.url, &upstream_config(&up));
    let s = AuthServer::start(&cove_bin(), &cfg, &[], &[("COVE_LOG", "debug")]).await;
    let c = s.client();
    let realm = format!("{}/token", s.base);
    let iss = issuer.url.clone();

    let builder = k1.sign(&claims(&iss, "ci-bot@example.org", &["builders", "ops"]));
    let outsider = k1.sign(&claims(&iss, "dev@example.org", &["dev"]));
    let builder_h = format!("Bearer {builder}");
    let mut repos = Vec::new();
    for name in ["ci/app", "public/app", "misc/app"] {
        let img = Image::random(1);
        push_image(&c, Some(&builder_h), name, &img).await;
        repos.push(MatrixRepo { name: name.into(), image: img, upstream: false });
    }
    repos.push(MatrixRepo { name: "docker.io/library/alpine".into(), image: Image::random(1), upstream: true });

    let mut expired = claims(&iss, "ci-bot@example.org", &["builders"]);
    expired["exp"] = json!(now() - 120);
    let expired = k1.sign(&expired);
    let mut wrong_aud = claims(&iss, "ci-bot@example.org", &["builders"]);
    wrong_aud["aud"] = json!("another-service");
    let wrong_aud = k1.sign(&wrong_aud);
    let mut wrong_iss = claims(&iss, "ci-bot@example.org", &["builders"]);
    wrong_iss["iss"] = json!("https://evil.example");
    let wrong_iss = k1.sign(&wrong_iss);
    let none = unsigned_token("key-1", &claims(&iss, "ci-bot@example.org", &["builders"]));
    let hs =
        hs256_token("key-1", b"a-guessable-secret-of-32-bytes!!", &claims(&iss, "ci-bot@example.org", &["builders"]));
    let foreign = SigningKey::ec("key-1").sign(&claims(&iss, "ci-bot@example.org", &["builders"]));

    let m = oidc_model;
    let invalid = |label: &'static str, token: &str| Who::invalid(label, format!("Bearer {token}"));
    let whos = vec![
        Who::allowed_or("anonymous", None, move |r, a| m(None, r, a), Want::Unauthorized { error: None }),
        Who::allowed_or(
            "builder (Bearer)",
            Some(builder_h.clone()),
            move |r, a| m(Some(&["builders"]), r, a),
            Want::Denied,
        ),
        Who::allowed_or(
            "builder (JWT as Basic password)",
            Some(basic("ci", &builder)),
            move |r, a| m(Some(&["builders"]), r, a),
            Want::Denied,
        ),
        Who::allowed_or(
            "outsider (Bearer)",
            Some(format!("Bearer {outsider}")),
            move |r, a| m(Some(&["dev"]), r, a),
            Want::Denied,
        ),
        invalid("expired", &expired),
        invalid("wrong audience", &wrong_aud),
        invalid("wrong issuer", &wrong_iss),
        invalid("alg none", &none),
        invalid("HS256 with kid of an EC key", &hs),
        invalid("signed by an unknown key with a known kid", &foreign),
        invalid("malformed", "not-a-jwt"),
    ];
    let secrets: Vec<String> = [&builder, &outsider, &expired, &wrong_aud, &wrong_iss, &none, &hs, &foreign]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cells = run_matrix("oidc", &c, &whos, &repos, Some(&realm), None, &secrets).await;

    // The JWT as a password at the token endpoint: exchanged for a registry token.
    let (tok, access) =
        registry_token(&c, Some(&basic("ci", &builder)), &["repository:ci/app:pull,push,delete".into()]).await;
    assert_eq!(granted(&access, "ci/app"), vec!["pull", "push"]);
    assert_eq!(
        c.send("POST", "/v2/ci/app/blobs/uploads/", Some(&format!("Bearer {tok}")), &[], None).await.status,
        202
    );
    let r = c.get("/token?service=cove", Some(&basic("ci", &expired))).await;
    assert_eq!(r.status, 401, "expired JWT at the token endpoint: {}", r.body);

    // A real client logging in with the JWT as password (docker login -p "$JWT").
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    let img = Image::random(1);
    write_oci_layout(&src, &img, "v1");
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", &format!("ci:{builder}")])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/ci/skopeo:v1", s.host())));
    let r = c.get("/v2/ci/skopeo/manifests/v1", Some(&builder_h)).await;
    assert_eq!(r.header("docker-content-digest"), img.digest, "skopeo pushed with an OIDC token");
    run_fail(
        skopeo()
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", &format!("ci:{expired}")])
            .arg(format!("oci:{}:v1", src.display()))
            .arg(format!("docker://{}/ci/skopeo:v2", s.host())),
    );

    // Key rotation: the issuer replaces key-1 by an RSA key-2. A token with
    // the new kid makes Cove refetch the JWKS (at most every 1 s) and pass.
    let fetches = issuer.jwks_fetches();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let k2 = SigningKey::rsa("key-2");
    issuer.set_keys(vec![k2.jwk()]);
    let rotated = k2.sign(&claims(&iss, "ci-bot@example.org", &["builders"]));
    let r = c.send("POST", "/v2/ci/app/blobs/uploads/", Some(&format!("Bearer {rotated}")), &[], None).await;
    assert_eq!(r.status, 202, "token signed with the rotated key: {}", r.body);
    assert!(issuer.jwks_fetches() > fetches, "the unknown kid triggered a JWKS refetch");
    // The retired key no longer verifies.
    let r = c.get("/v2/ci/app/tags/list", Some(&builder_h)).await;
    assert_eq!(r.status, 401, "token of the removed key-1 after rotation: {}", r.body);
    // A flood of unknown kids does not hammer the issuer.
    let fetches = issuer.jwks_fetches();
    for i in 0..20 {
        let t = SigningKey::ec(&format!("bogus-{i}"));
        let _ = c.get("/v2/ci/app/tags/list", Some(&format!("Bearer {}", t.sign(&claims(&iss, "x@y", &[]))))).await;
    }
    assert!(
        issuer.jwks_fetches() - fetches <= 3,
        "JWKS refetches are rate-limited: {}",
        issuer.jwks_fetches() - fetches
    );

    let mut all = secrets;
    all.extend([rotated, tok]);
    assert_no_secrets("server log", &s.logs(), &all);
    report(&format!("auth matrix [oidc]: {cells} cells (11 identities x 4 repositories x 6 actions) as expected"));
}

#[tokio::test]
async fn oidc_issuer_down_is_503_not_a_login_failure() {
    let _g = EXCLUSIVE.read().await;
    // An issuer URL where nothing listens (keys are fetched lazily, so Cove starts).
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let cfg = oidc_config(&dead, "").replace("max_failures = 0", "max_failures = 2");
    let s = AuthServer::start(&cove_bin(), &cfg, &[], &[]).await;
    let c = s.client();
    let token = SigningKey::ec("key-1").sign(&claims(&dead, "ci-bot@example.org", &["builders"]));
    for i in 0..4 {
        let r = c.get("/v2/ci/app/tags/list", Some(&format!("Bearer {token}"))).await;
        assert_eq!(r.status, 503, "attempt {i}: the issuer is down, credentials are not wrong: {}", r.body);
        assert!(r.codes().iter().any(|c| c == "UNAVAILABLE"), "{}", r.body);
    }
    // Anonymous access still works where the policy allows it.
    assert_eq!(c.get("/v2/public/app/tags/list", None).await.status, 404);
    assert_no_secrets("server log", &s.logs(), &[token]);
}
