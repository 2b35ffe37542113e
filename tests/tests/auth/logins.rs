//! Logins over time: failed-login rate limiting, htpasswd file changes
//! without restart, registry token expiry and signing key changes.

use super::*;

#[tokio::test]
async fn failed_logins_are_rate_limited_per_source() {
    let _g = EXCLUSIVE.read().await;
    let cfg = htpasswd_config("[auth.rate_limit]\nmax_failures = 3\nwindow = \"60s\"\n", "");
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(4))], &[]).await;
    let c = s.client();
    let alice = basic("alice", ALICE_PW);
    assert_eq!(c.get("/v2/myorg/app/tags/list", Some(&alice)).await.status, 404, "alice is allowed (no such repo)");
    for i in 0..3 {
        let r = c.get("/v2/myorg/app/tags/list", Some(&basic("alice", &format!("guess-{i}-wrong")))).await;
        assert_eq!(r.status, 401, "failure {i}: {}", r.body);
    }
    // The source is now blocked, good credentials included, and the token
    // endpoint too; the response says when to retry.
    for (what, r) in [
        ("wrong password", c.get("/v2/myorg/app/tags/list", Some(&basic("alice", "guess-4-wrong"))).await),
        ("good password", c.get("/v2/myorg/app/tags/list", Some(&alice)).await),
        ("token endpoint", c.get("/token?service=cove", Some(&alice)).await),
    ] {
        assert_eq!(r.status, 429, "{what} after 3 failures: {}", r.body);
        assert!(r.codes().iter().any(|c| c == "TOOMANYREQUESTS"), "{what}: {}", r.body);
        let retry: u64 = r.header("retry-after").parse().unwrap_or(0);
        assert!((1..=60).contains(&retry), "{what}: Retry-After {:?}", r.header("retry-after"));
    }
    // Another source address is not affected.
    let other = s.client_from("127.0.0.2");
    assert_eq!(other.get("/v2/myorg/app/tags/list", Some(&alice)).await.status, 404, "127.0.0.2 is not blocked");
    assert_no_secrets("server log", &s.logs(), &[ALICE_PW.into(), alice]);
}

#[tokio::test]
async fn htpasswd_file_changes_apply_without_restart_and_weak_hashes_are_refused() {
    let _g = EXCLUSIVE.read().await;
    let cfg = htpasswd_config("htpasswd_reload_interval = \"200ms\"", "");
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(4))], &[]).await;
    let c = s.client();
    let file = s.tmp.path().join("htpasswd");
    let status = |auth: String| {
        let c = c.clone();
        async move { c.get("/v2/myorg/app/tags/list", Some(&auth)).await.status }
    };
    assert_eq!(status(basic("alice", ALICE_PW)).await, 404, "alice logs in (and is cached)");
    // Replace the file atomically: alice gets a new password, dave appears.
    let new_pw = "alice-New-Pw-55aa";
    let content = format!("{}\n{}\n", bcrypt_line("alice", new_pw, 4), sha_crypt_line("dave", "dave-Pw-1234", 512));
    std::fs::write(s.tmp.path().join("htpasswd.new"), content).expect("write");
    std::fs::rename(s.tmp.path().join("htpasswd.new"), &file).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(basic("dave", "dave-Pw-1234")).await != 404 {
        assert!(Instant::now() < deadline, "the new htpasswd file was not picked up within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(basic("alice", ALICE_PW)).await, 401, "the old (cached) password stops working");
    assert_eq!(status(basic("alice", new_pw)).await, 404, "the new password works");
    assert_eq!(status(basic("bob", BOB_PW)).await, 401, "a removed user is refused");
    // An invalid file (a weak hash) is refused and the previous users stay.
    std::fs::write(
        &file,
        format!("{}\ncarol:$apr1$abcdefgh$0123456789abcdefghijkl\n", bcrypt_line("alice", new_pw, 4)),
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(basic("dave", "dave-Pw-1234")).await, 404, "invalid file: previous users kept");
    assert!(s.logs().contains("$apr1$") || s.logs().contains("MD5"), "the refusal is logged");
    assert_no_secrets("server log", &s.logs(), &[ALICE_PW.into(), new_pw.into(), "dave-Pw-1234".into()]);

    // At start-up, a weak scheme stops the server with a message naming the user and line.
    for (line, scheme) in [
        ("carol:$apr1$abcdefgh$0123456789abcdefghijkl", "MD5"),
        ("carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA"),
        ("carol:plaintext-password", "plain"),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("htpasswd"), format!("{}\n{line}\n", bcrypt_line("alice", ALICE_PW, 4)))
            .expect("write");
        let cfg = htpasswd_config("", "")
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@LISTEN@", "127.0.0.1:1");
        std::fs::write(dir.path().join("cove.toml"), cfg).expect("write");
        let out = Command::new(cove_bin())
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("cove.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", common::free_port()))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .expect("run cove");
        let err = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{scheme}: start-up must fail:\n{err}");
        assert!(err.contains("carol") && err.contains("line 2"), "{scheme}: the error names user and line:\n{err}");
        assert!(!err.contains("plaintext-password"), "{scheme}: the refused secret is not printed");
    }
}

#[tokio::test]
async fn registry_tokens_expire_and_do_not_survive_a_key_change() {
    let _g = EXCLUSIVE.read().await;
    let cfg = htpasswd_config("[auth.token]\nlifetime = \"1s\"", "");
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(4))], &[]).await;
    let c = s.client();
    let alice = basic("alice", ALICE_PW);
    let (tok, _) = registry_token(&c, Some(&alice), &["repository:myorg/app:pull,push".into()]).await;
    let claims = b64url_json(tok.split('.').nth(1).expect("payload"));
    let (iat, exp) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0));
    assert!(exp > iat && exp - iat <= 1, "lifetime 1s: iat {iat} exp {exp}");
    let bearer = format!("Bearer {tok}");
    assert_eq!(c.send("POST", "/v2/myorg/app/blobs/uploads/", Some(&bearer), &[], None).await.status, 202);
    // Past exp plus the verifier's few seconds of clock leeway.
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = c.send("POST", "/v2/myorg/app/blobs/uploads/", Some(&bearer), &[], None).await;
        if r.status != 202 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(r.status, 401, "expired registry token: {}", r.body);
    assert!(now() >= exp, "refused only after exp");
    let ch = parse_challenge(&r.header("www-authenticate"));
    assert_eq!(ch.get("error"), Some("invalid_token"), "{ch:?}");
    // A token signed by another instance (its own random key) is not accepted here.
    let other = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(4))], &[]).await;
    let (foreign, _) = registry_token(&other.client(), Some(&alice), &["repository:myorg/app:pull,push".into()]).await;
    let r = c.send("POST", "/v2/myorg/app/blobs/uploads/", Some(&format!("Bearer {foreign}")), &[], None).await;
    assert_eq!(r.status, 401, "another instance's token: {}", r.body);
    assert_no_secrets("server log", &s.logs(), &[ALICE_PW.into(), alice, tok, foreign]);
}
