//! Network trust: the matrix under default trust and with a boundary that
//! excludes the client; trusted networks from 127.0.0.2 and
//! `X-Forwarded-For` via trusted proxies.

use super::*;

#[tokio::test]
async fn matrix_network_default_trust_and_excluded_client() {
    let _g = EXCLUSIVE.read().await;
    let up = empty_upstream().await;
    let cfg = format!("[server]\npublic_url = \"http://@LISTEN@\"\n{}", upstream_config(&up));
    let s = AuthServer::start(&cove_bin(), &cfg, &[], &[]).await;
    let c = s.client();
    let mut repos = Vec::new();
    for name in ["myorg/app", "public/app", "misc/app"] {
        let img = Image::random(1);
        push_image(&c, None, name, &img).await;
        repos.push(MatrixRepo { name: name.into(), image: img, upstream: false });
    }
    repos.push(MatrixRepo { name: "docker.io/library/alpine".into(), image: Image::random(1), upstream: true });
    // Network trust ignores credentials: every identity is anonymous; the
    // default policy allows everything except writes to upstream namespaces.
    let model =
        |r: &str, a: &str| if !r.starts_with("docker.io/") || a == "pull" { Want::Allowed } else { Want::Denied };
    let whos: Vec<Who> = [
        ("anonymous", None),
        ("basic user", Some(basic("alice", ALICE_PW))),
        ("malformed header", Some("Basic !!!".to_owned())),
        ("bearer garbage", Some("Bearer not.a.jwt".to_owned())),
    ]
    .into_iter()
    .map(|(label, header)| Who { label, header, want: Box::new(model) })
    .collect();
    let secrets = vec![ALICE_PW.to_owned(), basic("alice", ALICE_PW)];
    let cells = run_matrix("network", &c, &whos, &repos, None, None, &secrets).await;
    assert_eq!(c.get("/v2/", None).await.status, 200);
    let r = c.get("/v2/_catalog", None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("myorg/app") && r.body.contains("misc/app"), "{}", r.body);

    // The same registry with a boundary that excludes the client: 403 DENIED
    // everywhere, naming the setting, never a challenge.
    let cfg = format!(
        "[server]\npublic_url = \"http://@LISTEN@\"\n{}\n[auth]\nkind = \"network\"\ntrusted_networks = [\"10.0.0.0/8\", \"192.168.0.0/16\"]\n",
        upstream_config(&up)
    );
    let s2 = AuthServer::start(&cove_bin(), &cfg, &[], &[]).await;
    let c2 = s2.client();
    let whos: Vec<Who> = [("anonymous", None), ("basic user", Some(basic("alice", ALICE_PW)))]
        .into_iter()
        .map(|(label, header)| Who { label, header, want: Box::new(|_: &str, _: &str| Want::Denied) })
        .collect();
    let cells2 =
        run_matrix("network, client excluded", &c2, &whos, &repos, None, Some("auth.trusted_networks"), &secrets).await;
    for path in ["/v2/", "/v2/_catalog", "/token?service=cove"] {
        let r = c2.get(path, None).await;
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(r.message().contains("auth.trusted_networks"), "{path}: {}", r.body);
        assert!(r.header("www-authenticate").is_empty());
    }
    assert_no_secrets("server log", &s.logs(), &secrets);
    assert_no_secrets("server log", &s2.logs(), &secrets);
    report(&format!("auth matrix [network]: {cells} cells default trust + {cells2} cells excluded client as expected"));
}

#[tokio::test]
async fn trusted_networks_and_forwarded_for() {
    let _g = EXCLUSIVE.read().await;
    // No trusted proxies: loopback peers other than 127.0.0.1 are plain clients.
    // refuse_untrusted = false: 127.0.0.2 is answered (403 naming the
    // setting) instead of being closed at accept (tests/tests/hardening.rs).
    let cfg = "[server]\nrefuse_untrusted = false\n[auth]\nkind = \"network\"\ntrusted_networks = [\"127.0.0.1/32\"]\ntrusted_proxies = []\n";
    let s = AuthServer::start(&cove_bin(), cfg, &[], &[]).await;
    let local = s.client();
    let other = s.client_from("127.0.0.2");
    assert_eq!(local.get("/v2/", None).await.status, 200);
    assert_eq!(local.send("POST", "/v2/myorg/app/blobs/uploads/", None, &[], None).await.status, 202);
    for path in ["/v2/", "/v2/myorg/app/tags/list", "/v2/_catalog"] {
        let r = other.get(path, None).await;
        assert_eq!(r.status, 403, "127.0.0.2 {path}: {}", r.body);
        assert!(r.codes().contains(&"DENIED".to_owned()), "{}", r.body);
        assert!(r.message().contains("auth.trusted_networks") && r.message().contains("127.0.0.2"), "{}", r.body);
        assert!(r.header("www-authenticate").is_empty(), "no challenge when credentials cannot help");
    }
    let r = other.send("POST", "/v2/myorg/app/blobs/uploads/", None, &[], None).await;
    assert_eq!(r.status, 403);
    // X-Forwarded-For from a peer that is not a trusted proxy is ignored.
    let r = other.send("GET", "/v2/", None, &[("x-forwarded-for", "127.0.0.1")], None).await;
    assert_eq!(r.status, 403, "spoofed X-Forwarded-For from 127.0.0.2: {}", r.body);

    // Behind a trusted proxy on 127.0.0.1: the client is the forwarded address.
    let cfg = "[server]\nrefuse_untrusted = false\n[auth]\nkind = \"network\"\ntrusted_networks = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";
    let p = AuthServer::start(&cove_bin(), cfg, &[], &[]).await;
    let proxy = p.client();
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let r = proxy.get("/v2/", None).await;
    assert_eq!(r.status, 403, "the proxy itself is not in trusted_networks: {}", r.body);
    let r = proxy.send("GET", "/v2/", None, &xff("10.1.2.3"), None).await;
    assert_eq!(r.status, 200, "forwarded 10.1.2.3 is admitted: {}", r.body);
    let r = proxy.send("POST", "/v2/myorg/app/blobs/uploads/", None, &xff("10.1.2.3"), None).await;
    assert_eq!(r.status, 202, "and may push: {}", r.body);
    let r = proxy.send("GET", "/v2/", None, &xff("8.8.8.8"), None).await;
    assert_eq!(r.status, 403, "forwarded 8.8.8.8 is refused: {}", r.body);
    assert!(r.message().contains("8.8.8.8") && r.message().contains("auth.trusted_networks"), "{}", r.body);
    // A client-supplied left-most entry cannot launder an untrusted source:
    // the right-most entry added by the proxy is the client.
    let r = proxy.send("GET", "/v2/", None, &xff("10.9.9.9, 8.8.8.8"), None).await;
    assert_eq!(r.status, 403, "spoofed left-most X-Forwarded-For: {}", r.body);
    let r = proxy.send("GET", "/v2/", None, &xff("garbage"), None).await;
    assert_eq!(r.status, 403, "malformed X-Forwarded-For fails closed: {}", r.body);
    // A non-proxy peer's header is ignored even when it names a trusted network.
    let r = p.client_from("127.0.0.2").send("GET", "/v2/", None, &xff("10.1.2.3"), None).await;
    assert_eq!(r.status, 403, "X-Forwarded-For from a non-proxy peer: {}", r.body);
    // The request log shows the peer, and the refusal is logged with the client.
    let logs = p.logs();
    assert!(logs.contains("8.8.8.8"), "refusal logged with the forwarded client");
}
