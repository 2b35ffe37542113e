//! Token signing keys shared through the bucket (issue 20): replicas accept
//! each other's tokens and agree on the key.

use super::*;

const ALICE_PW: &str = "alice-Pw-4c2e91d7";

/// A replica config with htpasswd logins; `realm` overrides the token realm
/// (to send clients of one replica to another's `/token`).
fn auth_config(peer: &S3Peer, prefix: &str, htpasswd: &Path, realm: Option<&str>) -> String {
    let realm = realm.map(|r| format!("[auth.token]\nrealm = \"{r}\"\n")).unwrap_or_default();
    format!(
        "[server]\npublic_url = \"http://@LISTEN@\"\n\n{}\n[auth]\nkind = \"htpasswd\"\nhtpasswd_file = \"{}\"\n{realm}\n\
         [[access]]\nrepository = \"team/**\"\nactions = [\"pull\", \"push\", \"delete\"]\nusers = [\"alice\"]\n",
        s3_config(peer, prefix),
        htpasswd.display()
    )
}

/// `GET /token` on `s` as alice for pull+push on `repo`.
async fn alice_token(s: &Server, repo: &str) -> String {
    password_token(s, "alice", ALICE_PW, repo).await
}

/// The `kid` header of a JWT.
fn kid_of(token: &str) -> String {
    jwt_kid(token)
}

/// Pushes `img` to `s` as `repo:tag` with a bearer token; every status is
/// returned (the first non-success stops the push).
async fn push_with_token(s: &Server, token: &str, repo: &str, tag: &str, img: &Image) -> u16 {
    let bearer = format!("Bearer {token}");
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let r = s
            .req("POST", &format!("/v2/{repo}/blobs/uploads/"))
            .header("authorization", &bearer)
            .send()
            .await
            .expect("POST");
        if r.status() != 202 {
            return r.status().as_u16();
        }
        let url = with_query(&s.resolve(&header(&r, "location")), &format!("digest={}", sha256_digest(blob)));
        let r = s.req("PUT", &url).header("authorization", &bearer).body(blob.clone()).send().await.expect("PUT");
        if r.status() != 201 {
            return r.status().as_u16();
        }
    }
    let r = s
        .req("PUT", &format!("/v2/{repo}/manifests/{tag}"))
        .header("authorization", &bearer)
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    r.status().as_u16()
}

/// GET `repo:tag` on `s` with a bearer token: the status.
async fn pull_status(s: &Server, token: &str, repo: &str, tag: &str) -> u16 {
    s.req("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .expect("GET manifest")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_accept_each_others_tokens_on_s3s_fs() {
    tokens_across_replicas(&S3Peer::s3s_fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_accept_each_others_tokens_on_garage() {
    tokens_across_replicas(&S3Peer::garage()).await;
}

/// Two htpasswd replicas on `peer`'s bucket: one key in the bucket, tokens
/// of each accepted by the other (HTTP and skopeo sent to the other's
/// /token), a restart keeps the key, other key sets and tampered tokens
/// are refused, the secret never logged.
async fn tokens_across_replicas(peer: &S3Peer) {
    let work = tempfile::tempdir().expect("tmp");
    let htpasswd = work.path().join("htpasswd");
    let line =
        run(Command::new(require_tool("htpasswd", "apache2-utils")).args(["-nbB", "-C", "4", "alice", ALICE_PW]));
    std::fs::write(&htpasswd, line).expect("write htpasswd");

    // A creates the key set on the empty bucket; B, whose challenges send
    // clients to A's /token (a load balancer's worst case), loads it.
    let mut a = Server::start_with(ServerOptions {
        config: Some(auth_config(peer, PREFIX, &htpasswd, None)),
        ..Default::default()
    })
    .await;
    let realm = format!("{}/token", a.base);
    let b = Server::start_with(ServerOptions {
        config: Some(auth_config(peer, PREFIX, &htpasswd, Some(&realm))),
        ..Default::default()
    })
    .await;
    let keys = key_ids(peer).await;
    assert_eq!(keys.len(), 1, "one signing key in the bucket: {keys:?}");
    let key_id = keys[0].clone();
    assert!(a.logs().contains("created a token signing key in storage"), "A created the key");
    assert!(b.logs().contains("loaded the token signing keys from storage"), "B loaded it");

    // A token from A works on B (push and pull), and one from B on A.
    let from_a = alice_token(&a, "team/app").await;
    assert_eq!(kid_of(&from_a), key_id, "tokens name the shared key");
    let img = Image::random(2);
    assert_eq!(push_with_token(&b, &from_a, "team/app", "v1", &img).await, 201, "push on B with A's token");
    assert_eq!(pull_status(&b, &from_a, "team/app", "v1").await, 200, "pull on B with A's token");
    let from_b = alice_token(&b, "team/app").await;
    assert_eq!(pull_status(&a, &from_b, "team/app", "v1").await, 200, "pull on A with B's token");
    // Without a token both refuse.
    assert_eq!(b.manifest("GET", "team/app", "v1").await.status(), 401);

    // skopeo logs in against B, is sent to A for the token, uses it on B.
    let src = work.path().join("src");
    let img2 = Image::random(2);
    write_oci_layout(&src, &img2, "v2");
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", &format!("alice:{ALICE_PW}")])
        .arg(format!("oci:{}:v2", src.display()))
        .arg(format!("docker://{}/team/app:v2", b.addr)));
    let out = work.path().join("out");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("alice:{ALICE_PW}")])
        .arg(format!("docker://{}/team/app:v2", b.addr))
        .arg(format!("oci:{}:v2", out.display())));
    assert_eq!(oci_layout_manifest_digest(&out, "v2"), img2.digest, "skopeo round trip through both replicas");
    assert!(a.logs().contains("/token"), "skopeo fetched its tokens from A");

    // A web-interface session started on A is valid on B (its key is
    // derived from the shared signing key), and on A after a restart.
    let cookie = ui_login(&a).await;
    assert!(ui_signed_in(&b, &cookie).await, "A's web session on B");
    assert!(!ui_signed_in(&b, "cove_session=forged.forged").await, "a forged session cookie");

    // A restart keeps the key: the old token still works, no key is added.
    a.restart().await;
    assert_eq!(pull_status(&a, &from_a, "team/app", "v1").await, 200, "A's old token after A's restart");
    assert!(ui_signed_in(&a, &cookie).await, "the web session after A's restart");
    assert_eq!(key_ids(peer).await, vec![key_id.clone()], "a restart creates no key");

    // A Cove on another prefix has its own key set: its tokens are refused.
    let other = Server::start_with(ServerOptions {
        config: Some(auth_config(peer, "elsewhere", &htpasswd, None)),
        ..Default::default()
    })
    .await;
    let foreign = alice_token(&other, "team/app").await;
    assert_ne!(kid_of(&foreign), key_id);
    assert_eq!(pull_status(&a, &foreign, "team/app", "v1").await, 401, "a token of another key set");
    // A tampered token naming the shared key is refused too.
    let mut forged = from_a.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == 'Q' { 'w' } else { 'Q' });
    assert_eq!(pull_status(&b, &forged, "team/app", "v1").await, 401, "a tampered token");

    // The secret is in the bucket only, never in a log.
    let doc = peer
        .raw_s3()
        .get(&object_store::path::Path::from(format!("{PREFIX}/_shared/keys/{key_id}")))
        .await
        .expect("key doc")
        .bytes()
        .await
        .expect("key bytes");
    let doc: serde_json::Value = serde_json::from_slice(&doc).expect("key json");
    let secret = doc["secret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 64, "a 32-byte secret");
    for s in [&a, &b, &other] {
        assert!(!s.logs().contains(&secret), "{}: the signing secret is in the log", s.base);
    }
}

/// Signs alice in to `s`'s web interface over plain HTTP (login page,
/// CSRF token, same-origin POST); returns the session cookie.
async fn ui_login(s: &Server) -> String {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = http.get(s.url("/ui/login")).send().await.expect("login page");
    assert_eq!(r.status(), 200, "{}: login page", s.base);
    let anon = header(&r, "set-cookie").split(';').next().unwrap_or_default().to_owned();
    let page = r.text().await.expect("page");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|v| v.split('"').next()).expect("csrf").to_owned();
    let r = http
        .post(s.url("/ui/login"))
        .header("cookie", &anon)
        .header("origin", &s.base)
        .form(&[("username", "alice"), ("password", ALICE_PW), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .expect("POST login");
    assert!(r.status().is_redirection(), "{}: sign-in answered {}", s.base, r.status());
    header(&r, "set-cookie").split(';').next().unwrap_or_default().to_owned()
}

/// Whether `s`'s web interface takes `cookie` as alice's session (the
/// repository list instead of a redirect to the login page).
async fn ui_signed_in(s: &Server, cookie: &str) -> bool {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = http.get(s.url("/")).header("cookie", cookie).header("accept", "text/html").send().await.expect("GET /");
    r.status() == 200 && r.text().await.expect("page").contains("alice")
}

/// The ids of the signing keys in the bucket (under [`PREFIX`]).
async fn key_ids(peer: &S3Peer) -> Vec<String> {
    peer.list_names(&format!("{PREFIX}/_shared/keys")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_an_empty_bucket_agree_on_the_key() {
    let peer = S3Peer::s3s_fs();
    let work = tempfile::tempdir().expect("tmp");
    let htpasswd = work.path().join("htpasswd");
    let line =
        run(Command::new(require_tool("htpasswd", "apache2-utils")).args(["-nbB", "-C", "4", "alice", ALICE_PW]));
    std::fs::write(&htpasswd, line).expect("write htpasswd");
    let opts = || ServerOptions { config: Some(auth_config(&peer, PREFIX, &htpasswd, None)), ..Default::default() };
    let (a, b) = tokio::join!(Server::start_with(opts()), Server::start_with(opts()));
    let keys = key_ids(&peer).await;
    report(&format!("replicas started together on an empty bucket wrote {} signing key(s)", keys.len()));
    assert!((1..=2).contains(&keys.len()), "{keys:?}");
    let img = Image::random(1);
    let ta = alice_token(&a, "team/app").await;
    assert_eq!(push_with_token(&a, &ta, "team/app", "v1", &img).await, 201);
    // Right away, whichever key each signed with, each accepts the other's.
    let tb = alice_token(&b, "team/app").await;
    assert_eq!(pull_status(&b, &ta, "team/app", "v1").await, 200, "A's token on B");
    assert_eq!(pull_status(&a, &tb, "team/app", "v1").await, 200, "B's token on A");
    // Having seen each other's key, both now sign with the smallest id.
    let (ta, tb) = (alice_token(&a, "team/app").await, alice_token(&b, "team/app").await);
    assert_eq!(kid_of(&ta), keys[0], "A signs with the smallest id");
    assert_eq!(kid_of(&tb), keys[0], "B signs with the smallest id");
}
