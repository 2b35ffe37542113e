//! Authentication and access control over the real server: htpasswd with
//! real clients (skopeo through the Docker token flow, podman login), a
//! (identity × action × repository) matrix, trusted networks from another
//! source address, X-Forwarded-For, OIDC bearer tokens from a loopback
//! issuer, and no secret in logs.

mod common;

use std::convert::Infallible;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine;
use common::*;

const ALICE_PW: &str = "alice-S3cret-pw";
const BOB_PW: &str = "bob-0ther-pw";

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("openssl must be installed (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
}

/// An htpasswd file with SHA-crypt users (alice: $6$, bob: $5$).
fn htpasswd(dir: &std::path::Path) -> std::path::PathBuf {
    let a = openssl(&["passwd", "-6", ALICE_PW]);
    let b = openssl(&["passwd", "-5", BOB_PW]);
    let p = dir.join("htpasswd");
    std::fs::write(&p, format!("alice:{a}\nbob:{b}\n")).expect("write htpasswd");
    p
}

fn basic(user: &str, pw: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}")))
}

async fn htpasswd_server(extra: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let file = htpasswd(dir.path());
    let config = format!(
        r#"[server]
public_url = "http://@LISTEN@"
[auth]
kind = "htpasswd"
htpasswd_file = "{}"
{extra}
[[access]]
repository = "myorg/**"
actions = ["pull", "push", "delete"]
users = ["alice"]
[[access]]
repository = "myorg/**"
actions = ["pull"]
anyone = "authenticated"
[[access]]
repository = "public/*"
actions = ["pull"]
anyone = "anonymous"
[[access]]
repository = "public/*"
actions = ["pull", "push"]
users = ["alice"]
"#,
        file.display()
    );
    let s = Server::start_with(ServerOptions { config: Some(config), ..Default::default() }).await;
    (s, dir)
}

fn skopeo() -> Command {
    let mut c = Command::new(require_tool("skopeo", "skopeo"));
    c.arg("--insecure-policy").env_remove("REGISTRY_AUTH_FILE");
    c
}

fn try_run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("spawn");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn htpasswd_with_skopeo_token_flow_and_podman_login() {
    let (s, _d) = htpasswd_server("").await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    let img = Image::random(2);
    write_oci_layout(&src, &img, "v1");
    let dest = format!("docker://{}/myorg/app:v1", s.addr);

    // Anonymous: challenged with the token flow.
    let r = s.get("/v2/").await;
    assert_eq!(r.status(), 401);
    let challenge = header(&r, "www-authenticate");
    assert!(challenge.starts_with("Bearer realm=\"http://"), "{challenge}");
    assert!(challenge.contains("/token\""), "{challenge}");

    // Wrong password and no credentials are refused by a real client.
    let (ok, out) = try_run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:wrong",
        &format!("oci:{}:v1", src.display()),
        &dest,
    ]));
    assert!(!ok, "wrong password must fail: {out}");
    let (ok, out) =
        try_run(skopeo().args(["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", src.display()), &dest]));
    assert!(!ok, "anonymous push must fail: {out}");
    // bob may pull myorg/** but not push.
    let (ok, out) = try_run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("bob:{BOB_PW}"),
        &format!("oci:{}:v1", src.display()),
        &dest,
    ]));
    assert!(!ok, "bob cannot push to myorg: {out}");

    // alice pushes; bob pulls; digests identical.
    run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--preserve-digests",
        "--dest-creds",
        &format!("alice:{ALICE_PW}"),
        &format!("oci:{}:v1", src.display()),
        &dest,
    ]));
    let out_dir = work.path().join("out");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        "--src-creds",
        &format!("bob:{BOB_PW}"),
        &dest,
        &format!("oci:{}:v1", out_dir.display()),
    ]));
    assert_eq!(oci_layout_manifest_digest(&out_dir, "v1"), img.digest, "pulled digest identical");

    // The client used the token endpoint and then Bearer tokens.
    let logs = s.logs();
    assert!(logs.contains("path=/token") || logs.contains("\"path\":\"/token\""), "token endpoint used:\n{logs}");

    // podman login (token flow) and push.
    let pd = tempfile::tempdir().expect("tmp");
    let podman = |args: &[&str]| {
        let mut c = Command::new(require_tool("podman", "podman"));
        c.arg("--root")
            .arg(pd.path().join("root"))
            .arg("--runroot")
            .arg(pd.path().join("runroot"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .env("TMPDIR", pd.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .args(args);
        c
    };
    let authfile = pd.path().join("auth.json");
    let authfile = authfile.to_str().expect("utf8");
    let (ok, out) = try_run(&mut podman(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        "alice",
        "-p",
        "wrong",
        &s.addr.to_string(),
    ]));
    assert!(!ok, "podman login with a wrong password fails: {out}");
    run(&mut podman(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        "alice",
        "-p",
        ALICE_PW,
        &s.addr.to_string(),
    ]));
    let ctx = pd.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(ctx.join("f"), random_bytes(4096)).expect("file");
    std::fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY f /f\n").expect("Containerfile");
    let image = format!("{}/myorg/built:v2", s.addr);
    run(&mut podman(&["build", "--isolation", "chroot", "-t", &image, ctx.to_str().expect("utf8")]));
    run(&mut podman(&["push", "--tls-verify=false", "--authfile", authfile, &image]));
    run(&mut podman(&["rmi", &image]));
    run(&mut podman(&["pull", "--tls-verify=false", "--authfile", authfile, &image]));
    let r = s
        .req("GET", &s.url("/v2/myorg/built/tags/list"))
        .header("Authorization", basic("alice", ALICE_PW))
        .send()
        .await
        .expect("tags");
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["tags"][0], "v2");

    // No secret ever reaches the log.
    let logs = s.logs();
    for secret in [ALICE_PW, BOB_PW, "wrong"] {
        assert!(!logs.contains(secret), "{secret} leaked into the log");
    }
    assert!(!logs.to_ascii_lowercase().contains("authorization:"), "no Authorization header in logs");
}

/// (identity × action × repository) → status and code over HTTP.
#[tokio::test]
async fn access_matrix_over_http() {
    // Every identity here comes from 127.0.0.1: allow its many deliberate failures.
    let (s, _d) = htpasswd_server("[auth.rate_limit]\nmax_failures = 1000\n").await;
    let alice = basic("alice", ALICE_PW);
    // Seed one image per repository as alice.
    for repo in ["myorg/app", "public/app"] {
        let img = Image::random(1);
        for (i, layer) in img.layers.iter().enumerate() {
            let d = sha256_digest(layer);
            let r = s
                .req("POST", &s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
                .header("Authorization", &alice)
                .body(layer.clone())
                .send()
                .await
                .expect("push layer");
            assert_eq!(r.status(), 201, "seed layer {i} of {repo}");
        }
        let d = sha256_digest(&img.config);
        let r = s
            .req("POST", &s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .header("Authorization", &alice)
            .body(img.config.clone())
            .send()
            .await
            .expect("push config");
        assert_eq!(r.status(), 201);
        let r = s
            .req("PUT", &s.url(&format!("/v2/{repo}/manifests/v1")))
            .header("Authorization", &alice)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(img.manifest.clone())
            .send()
            .await
            .expect("push manifest");
        assert_eq!(r.status(), 201, "seed {repo}");
    }
    // A registry token for bob limited to pull on myorg/app.
    let r = s
        .req("GET", &s.url("/token?service=cove&scope=repository:myorg/app:pull,push"))
        .header("Authorization", basic("bob", BOB_PW))
        .send()
        .await
        .expect("token");
    assert_eq!(r.status(), 200);
    let tok = json(r).await["token"].as_str().expect("token").to_owned();
    let bob_token = format!("Bearer {tok}");

    let ids: [(&str, Option<String>); 6] = [
        ("anonymous", None),
        ("alice", Some(alice.clone())),
        ("bob", Some(basic("bob", BOB_PW))),
        ("wrong-password", Some(basic("alice", "nope"))),
        ("malformed", Some("Basic !!!not-base64".to_owned())),
        ("bob-token", Some(bob_token)),
    ];
    // (identity, action, repo) -> expected status; 0 = success.
    let expect = |id: &str, action: &str, repo: &str| -> u16 {
        match (id, action, repo) {
            ("wrong-password" | "malformed", _, _) => 401,
            ("alice", _, "myorg/app") => 0,
            ("alice", "delete", "public/app") => 403,
            ("alice", _, "public/app") => 0,
            ("bob", "pull", _) => 0,
            ("bob", _, _) => 403,
            // The token grants only what bob may do (pull), and only on myorg/app.
            ("bob-token", "pull", "myorg/app") => 0,
            ("bob-token", _, "myorg/app") => 403,
            // Elsewhere the token lacks the scope: 401 (insufficient_scope) where
            // bob could get a token for it, 403 where he could not.
            ("bob-token", "pull", _) => 401,
            ("bob-token", _, _) => 403,
            ("anonymous", "pull", "public/app") => 0,
            ("anonymous", _, _) => 401,
            _ => 999,
        }
    };
    let mut failures = Vec::new();
    for (id, auth) in &ids {
        for repo in ["myorg/app", "public/app"] {
            for action in ["pull", "push", "delete"] {
                let (method, path) = match action {
                    "pull" => ("GET", format!("/v2/{repo}/tags/list")),
                    "push" => ("POST", format!("/v2/{repo}/blobs/uploads/")),
                    _ => ("DELETE", format!("/v2/{repo}/manifests/no-such-tag")),
                };
                let mut rq = s.req(method, &s.url(&path));
                if let Some(a) = auth {
                    rq = rq.header("Authorization", a);
                }
                let r = rq.send().await.expect("request");
                let got = r.status().as_u16();
                let want = expect(id, action, repo);
                let ok = match want {
                    // Success: pull 200, push 202, delete reaches the handler (404 for the missing tag).
                    0 => matches!(got, 200 | 202 | 404),
                    w => got == w,
                };
                if want == 401 && got == 401 {
                    let c = header(&r, "www-authenticate");
                    if !c.starts_with("Bearer realm=") || !c.contains(&format!("scope=\"repository:{repo}:")) {
                        failures.push(format!("{id} {action} {repo}: 401 without a scoped Bearer challenge ({c:?})"));
                    }
                    if *id == "bob-token" && !c.contains("insufficient_scope") {
                        failures.push(format!("{id} {action} {repo}: challenge lacks insufficient_scope ({c:?})"));
                    }
                }
                if want != 0 && got == want {
                    let body = json(r).await;
                    let code = body["errors"][0]["code"].as_str().unwrap_or("");
                    let want_code = if want == 401 { "UNAUTHORIZED" } else { "DENIED" };
                    if code != want_code {
                        failures.push(format!("{id} {action} {repo}: code {code}, want {want_code}"));
                    }
                } else if !ok {
                    failures.push(format!(
                        "{id} {action} {repo}: got {got}, want {}",
                        if want == 0 { "success".into() } else { want.to_string() }
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "matrix mismatches:\n{}", failures.join("\n"));

    // The catalog is filtered to what the identity may pull.
    let r = s
        .req("GET", &s.url("/v2/_catalog"))
        .header("Authorization", basic("bob", BOB_PW))
        .send()
        .await
        .expect("catalog");
    assert_eq!(json(r).await["repositories"], serde_json::json!(["myorg/app", "public/app"]));
    let r = s.get("/v2/_catalog").await;
    assert_eq!(r.status(), 401, "anonymous catalog needs credentials");
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_source() {
    let (s, _d) = htpasswd_server("[auth.rate_limit]\nmax_failures = 3\nwindow = \"60s\"\n").await;
    for i in 0..3 {
        let r = s
            .req("GET", &s.url("/v2/myorg/app/tags/list"))
            .header("Authorization", basic("alice", "guess"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    let r = s
        .req("GET", &s.url("/v2/myorg/app/tags/list"))
        .header("Authorization", basic("alice", "guess"))
        .send()
        .await
        .expect("get");
    assert!(!header(&r, "retry-after").is_empty(), "429 carries Retry-After");
    assert_error(r, 429, "TOOMANYREQUESTS", "fourth failure from one source").await;
}

/// Binds a client to `local` (e.g. 127.0.0.2).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local.parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

#[tokio::test]
async fn trusted_networks_and_forwarded_for() {
    let s = Server::start_with(ServerOptions {
        config: Some("[auth]\ntrusted_networks = [\"127.0.0.1/32\"]\n".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(client_from("127.0.0.1").get(s.url("/v2/")).send().await.expect("get").status(), 200);
    let r = client_from("127.0.0.2").get(s.url("/v2/x/tags/list")).send().await.expect("get");
    let body = assert_error(r, 403, "DENIED", "untrusted source").await;
    assert!(body.to_string().contains("auth.trusted_networks"), "names the setting: {body}");
    // X-Forwarded-For from an untrusted peer is ignored.
    let r =
        client_from("127.0.0.2").get(s.url("/v2/")).header("X-Forwarded-For", "127.0.0.1").send().await.expect("get");
    assert_eq!(r.status(), 403, "spoofed X-Forwarded-For is not believed");
    drop(s);

    let s = Server::start_with(ServerOptions {
        config: Some("[auth]\ntrusted_networks = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"127.0.0.1/32\"]\n".into()),
        ..Default::default()
    })
    .await;
    let via = |xff: &'static str| s.http.get(s.url("/v2/")).header("X-Forwarded-For", xff).send();
    assert_eq!(via("10.1.2.3").await.expect("get").status(), 200, "client behind a trusted proxy");
    assert_eq!(via("8.8.8.8").await.expect("get").status(), 403, "untrusted client behind the proxy");
    assert_eq!(s.get("/v2/").await.status(), 403, "the proxy itself is not a trusted network");
}

/// A loopback OIDC issuer: discovery + JWKS, with swappable keys.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<serde_json::Value>>,
}

async fn start_issuer() -> Issuer {
    use hyper::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let jwks = Arc::new(Mutex::new(serde_json::json!({"keys": []})));
    let (u, j) = (url.clone(), jwks.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (u, j) = (u.clone(), j.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                    let body = match r.uri().path() {
                        "/.well-known/openid-configuration" => {
                            serde_json::json!({"issuer": u, "jwks_uri": format!("{u}/jwks")}).to_string()
                        }
                        "/jwks" => j.lock().expect("lock").to_string(),
                        _ => String::new(),
                    };
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("Content-Type", "application/json")
                                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Issuer { url, jwks }
}

/// An RSA signing key (openssl) and its public JWK.
struct Key {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
}

fn rsa_key(kid: &str) -> Key {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("k.pem");
    let pem = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]);
    std::fs::write(&path, &pem).expect("write key");
    let modulus = openssl(&["rsa", "-in", path.to_str().expect("utf8"), "-noout", "-modulus"]);
    let hex_n = modulus.trim_start_matches("Modulus=");
    let n = hex::decode(hex_n).expect("modulus hex");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Key {
        kid: kid.into(),
        encoding: jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem"),
        jwk: serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64.encode(n), "e": "AQAB"}),
    }
}

fn sign(key: &Key, claims: serde_json::Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, &claims, &key.encoding).expect("sign")
}

#[tokio::test]
async fn oidc_bearer_tokens_over_the_real_server() {
    let issuer = start_issuer().await;
    let k1 = rsa_key("k1");
    issuer.jwks.lock().expect("lock").clone_from(&serde_json::json!({"keys": [k1.jwk.clone()]}));
    let config = format!(
        r#"[server]
public_url = "http://@LISTEN@"
[auth]
kind = "oidc"
[auth.rate_limit]
max_failures = 1000
[auth.oidc]
issuer = "{}"
audience = "cove"
username_claim = "sub"
groups_claim = "groups"
[[access]]
repository = "ci/**"
actions = ["pull", "push"]
groups = ["builders"]
"#,
        issuer.url
    );
    let s = Server::start_with(ServerOptions { config: Some(config), ..Default::default() }).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    let claims = |aud: &str, exp: u64, groups: &[&str]| serde_json::json!({"iss": issuer.url, "aud": aud, "sub": "ci-bot", "groups": groups, "iat": now, "exp": exp});
    let push = |auth: String| s.req("POST", &s.url("/v2/ci/app/blobs/uploads/")).header("Authorization", auth).send();

    let good = sign(&k1, claims("cove", now + 300, &["builders"]));
    assert_eq!(push(format!("Bearer {good}")).await.expect("push").status(), 202, "good token may push");
    assert_eq!(push(basic("ci-bot", &good)).await.expect("push").status(), 202, "token as a Basic password");
    let not_builder = sign(&k1, claims("cove", now + 300, &["readers"]));
    let r = push(format!("Bearer {not_builder}")).await.expect("push");
    assert_error(r, 403, "DENIED", "authenticated but not in the group").await;
    for (what, token) in [
        ("expired", sign(&k1, claims("cove", now - 600, &["builders"]))),
        ("wrong audience", sign(&k1, claims("someone-else", now + 300, &["builders"]))),
        ("alg none", {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let h = b64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
            let c = b64.encode(claims("cove", now + 300, &["builders"]).to_string());
            format!("{h}.{c}.")
        }),
    ] {
        let r = push(format!("Bearer {token}")).await.expect("push");
        assert_eq!(r.status(), 401, "{what} token refused");
        assert!(header(&r, "www-authenticate").starts_with("Bearer"), "{what}: challenge");
    }
    // Key rotation: the issuer switches to a new key; its tokens are accepted.
    let k2 = rsa_key("k2");
    issuer.jwks.lock().expect("lock").clone_from(&serde_json::json!({"keys": [k2.jwk.clone()]}));
    let rotated = sign(&k2, claims("cove", now + 300, &["builders"]));
    let mut status = 0;
    for _ in 0..30 {
        status = push(format!("Bearer {rotated}")).await.expect("push").status().as_u16();
        if status == 202 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(status, 202, "token signed with the rotated key accepted");
    assert!(!s.logs().contains(&good), "tokens never logged");
}
