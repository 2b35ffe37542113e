//! The README's replicas recipe ("Run several replicas"), run the way a user
//! sets it up: two or three Cove replicas on one bucket (s3s-fs, and Garage,
//! the distributed store that ignores conditional writes), a real Caddy in
//! front doing round-robin with active health checks on `/readyz`, and real
//! clients (skopeo, podman) logging in through it with htpasswd passwords
//! and with OIDC tokens. Every replica has its own `root` and nothing but
//! the bucket in common; `server.public_url` names the proxy.
//!
//! Also here: what a cache miss costs upstream when N replicas × M clients
//! miss the same blob at once (the documented bound: at most one upstream
//! fetch per blob per replica).

mod common;
mod pull_through_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::oidc::{Issuer, SigningKey};
use cove_testkit::peers::caddy::Caddy;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::s3::S3Peer;
use cove_testkit::peers::skopeo::{skopeo, skopeo_push};
use cove_testkit::util::now_secs;
use pull_through_support::{cove_config, UpstreamTable};

const MIB: usize = 1024 * 1024;
const PART: usize = 5 * MIB;
const ALICE_PW: &str = "alice-Pw-0b7d25e1";

/// Replicas on one bucket behind one Caddy.
struct Recipe {
    caddy: Caddy,
    replicas: Vec<Server>,
}

impl Recipe {
    /// `n` replicas named `r0…` on `peer`'s bucket under `prefix`, each
    /// with `extra` appended to its config (the `[auth]` sections), and a
    /// round-robin Caddy in front whose URL is every replica's `public_url`.
    async fn start(peer: &S3Peer, prefix: &str, n: usize, extra: &str) -> Recipe {
        let port = free_port();
        let mut replicas = Vec::new();
        for i in 0..n {
            let config = format!(
                "[server]\npublic_url = \"http://127.0.0.1:{port}\"\nreplica = \"r{i}\"\n\n{}\n{extra}",
                peer.cove_storage_section(prefix, PART)
            );
            replicas.push(Server::start_with(ServerOptions { config: Some(config), ..Default::default() }).await);
        }
        let caddy = Caddy::round_robin(port, &replicas.iter().map(|r| r.addr.to_string()).collect::<Vec<_>>());
        Recipe { caddy, replicas }
    }

    fn host(&self) -> String {
        self.caddy.authority()
    }

    /// Per replica, the API requests it answered with a bearer token
    /// (`(status, path)`), from its request log.
    fn bearer_requests(&self) -> Vec<Vec<(u16, String)>> {
        self.replicas.iter().map(|r| bearer_requests(&r.logs())).collect()
    }

    fn logs(&self) -> String {
        let mut out = format!("--- caddy ---\n{}\n", self.caddy.logs());
        for (i, r) in self.replicas.iter().enumerate() {
            out.push_str(&format!("--- r{i} ---\n{}\n", r.logs_tail(6000)));
        }
        out
    }
}

/// The `(status, path)` of every request in a Cove log that carried a
/// bearer token.
fn bearer_requests(logs: &str) -> Vec<(u16, String)> {
    request_log(logs).into_iter().filter(|(_, _, _, auth)| auth == "bearer").map(|(_, p, s, _)| (s, p)).collect()
}

fn htpasswd_auth(dir: &Path) -> String {
    let file = dir.join("htpasswd");
    let line =
        run(Command::new(require_tool("htpasswd", "apache2-utils")).args(["-nbB", "-C", "4", "alice", ALICE_PW]));
    std::fs::write(&file, line).expect("write htpasswd");
    format!(
        "[auth]\nkind = \"htpasswd\"\nhtpasswd_file = \"{}\"\n\n\
         [[access]]\nrepository = \"team/**\"\nactions = [\"pull\", \"push\", \"delete\"]\nusers = [\"alice\"]\n",
        file.display()
    )
}

fn oidc_auth(issuer: &str) -> String {
    format!(
        "[auth]\nkind = \"oidc\"\n[auth.oidc]\nissuer = \"{issuer}\"\naudience = \"cove\"\nusername_claim = \"email\"\n\
         groups_claim = \"groups\"\nalgorithms = [\"ES256\"]\n\n\
         [[access]]\nrepository = \"ci/**\"\nactions = [\"pull\", \"push\"]\ngroups = [\"builders\"]\n"
    )
}

/// A CI job's ID token from `issuer`.
fn ci_token(issuer: &Issuer, key: &SigningKey) -> String {
    let now = now_secs();
    key.sign(&serde_json::json!({
        "iss": issuer.url, "aud": "cove", "sub": "ci-job", "email": "ci-bot@example.org",
        "groups": ["builders"], "exp": now + 600, "nbf": now - 10, "iat": now,
    }))
}

/// skopeo push of `layout:tag` to `dest` with `creds`, then a pull back
/// with the same credentials: the same manifest digest and layers.
fn skopeo_round_trip(layout: &Layout, image: &cove_testkit::layout::LayoutImage, dest: &str, creds: &str, out: &Path) {
    run(skopeo()
        .args(["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "-q", "--dest-creds", creds])
        .arg(format!("oci:{}:v1", layout.dir.display()))
        .arg(format!("docker://{dest}")));
    run(skopeo()
        .args(["copy", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0", "--src-creds", creds])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:v1", out.display())));
    assert_eq!(oci_layout_manifest_digest(out, "v1"), image.manifest.digest, "{dest}: same manifest");
    for l in &image.layers {
        assert_eq!(sha256_digest(&oci_layout_blob(out, &l.digest)), l.digest, "{dest}: layer intact");
    }
}

/// podman login with `user`/`password`, pull `image`, tag it as `pushed`,
/// push, remove everything, pull `pushed` back; returns the pushed digest.
fn podman_round_trip(host: &str, user: &str, password: &str, image: &str, pushed: &str) -> String {
    let podman = Podman::new();
    run(podman.auth("login").args(["--tls-verify=false", "-u", user, "-p", password, host]));
    run(podman.auth("pull").args(["--tls-verify=false", image]));
    run(podman.cmd().args(["tag", image, pushed]));
    let digest_file = podman.dir.path().join("digest");
    run(podman.auth("push").args(["--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(pushed));
    run(podman.cmd().args(["rmi", "-a", "-f"]));
    run(podman.auth("pull").args(["--tls-verify=false", pushed]));
    std::fs::read_to_string(&digest_file).expect("podman digest file").trim().to_owned()
}

/// Every replica answered bearer-token requests (round-robin spread the
/// clients' token and API requests over all of them), and none refused a
/// token: each replica accepted tokens whichever replica issued them.
fn assert_tokens_accepted_everywhere(recipe: &Recipe, label: &str) {
    let per = recipe.bearer_requests();
    for (i, reqs) in per.iter().enumerate() {
        assert!(
            reqs.iter().any(|(s, _)| (200..300).contains(s)),
            "{label}: r{i} served no request with a bearer token:\n{}",
            recipe.logs()
        );
        let refused: Vec<_> = reqs.iter().filter(|(s, _)| *s == 401).collect();
        assert!(refused.is_empty(), "{label}: r{i} refused bearer tokens: {refused:?}\n{}", recipe.logs());
    }
    let counts: Vec<usize> = per.iter().map(Vec::len).collect();
    report(&format!("replicas [{label}]: bearer requests per replica through Caddy round-robin: {counts:?}"));
}

/// The whole recipe on one store: htpasswd logins (skopeo and podman),
/// a replica killed behind Caddy, then OIDC tokens (skopeo and podman).
async fn recipe(peer: S3Peer, label: &str, n: usize) {
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let image = layout.add_image("v1", &[3 * MIB, 64 * 1024]);

    // htpasswd
    let mut r = Recipe::start(&peer, "pw", n, &htpasswd_auth(work.path())).await;
    let host = r.host();
    let creds = format!("alice:{ALICE_PW}");
    skopeo_round_trip(&layout, &image, &format!("{host}/team/app:v1"), &creds, &work.path().join("pw-out"));
    let digest =
        podman_round_trip(&host, "alice", ALICE_PW, &format!("{host}/team/app:v1"), &format!("{host}/team/podman:v2"));
    for (i, s) in r.replicas.iter().enumerate() {
        let resp = s
            .req("HEAD", "/v2/team/podman/manifests/v2")
            .header("accept", OCI_MANIFEST)
            .basic_auth("alice", Some(ALICE_PW))
            .send()
            .await
            .expect("HEAD");
        assert_eq!(resp.status(), 200, "{label}: r{i} serves podman's push");
        assert_eq!(header(&resp, "docker-content-digest"), digest, "{label}: r{i} same digest");
    }
    assert_tokens_accepted_everywhere(&r, &format!("{label}, htpasswd"));

    // A replica dies: Caddy retries on the others at once and its health
    // check on /readyz takes it out; clients see nothing.
    let dead = r.replicas.len() - 1;
    r.replicas[dead].kill9();
    for round in 0..3 {
        let out = work.path().join(format!("after-kill-{round}"));
        let pulled = skopeo()
            .args(["copy", "--src-tls-verify=false", "--retry-times", "0", "--src-creds", &creds])
            .arg(format!("docker://{host}/team/app:v1"))
            .arg(format!("oci:{}:v1", out.display()))
            .output()
            .expect("skopeo");
        assert!(
            pulled.status.success(),
            "{label}: pull {round} with r{dead} dead: {}\n{}",
            String::from_utf8_lossy(&pulled.stderr),
            r.logs()
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = http_client().get(r.caddy.url("/readyz")).send().await.expect("GET /readyz via caddy");
    assert_eq!(ready.status(), 200, "{label}: the proxy's /readyz answers from a live replica");
    drop(r);

    // OIDC: a CI job's ID token as the password, exchanged at /token.
    let issuer = Issuer::start().await;
    let key = SigningKey::ec("ci-key");
    issuer.set_keys(vec![key.jwk()]);
    let r = Recipe::start(&peer, "oidc", n, &oidc_auth(&issuer.url)).await;
    let host = r.host();
    let jwt = ci_token(&issuer, &key);
    skopeo_round_trip(
        &layout,
        &image,
        &format!("{host}/ci/app:v1"),
        &format!("ci:{jwt}"),
        &work.path().join("oidc-out"),
    );
    podman_round_trip(&host, "ci", &jwt, &format!("{host}/ci/app:v1"), &format!("{host}/ci/podman:v2"));
    assert_tokens_accepted_everywhere(&r, &format!("{label}, oidc"));
    for (i, s) in r.replicas.iter().enumerate() {
        assert!(!s.logs().contains(&jwt), "{label}: r{i} logged the ID token");
        assert!(!s.logs().contains(ALICE_PW), "{label}: r{i} logged a password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_recipe_on_s3s_fs() {
    recipe(S3Peer::s3s_fs(), "s3s-fs", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_recipe_on_garage() {
    recipe(S3Peer::garage(), "garage", 2).await;
}

/// GETs `path` on `base` and checks the body against `digest`.
async fn get_verified(base: String, path: String, digest: String) {
    let r = http_client().get(format!("{base}{path}")).send().await.expect("GET blob");
    assert_eq!(r.status(), 200, "{base}{path}");
    let body = r.bytes().await.expect("body");
    assert_eq!(sha256_digest(&body), digest, "{base}{path}: body matches its digest");
}

/// N replicas × M clients missing one blob at once: at most one upstream
/// fetch per replica (each replica coalesces its own clients), and once the
/// blob is in the bucket no replica fetches it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_missed_on_every_replica_at_once_is_fetched_at_most_once_per_replica() {
    const REPLICAS: usize = 3;
    const CLIENTS: usize = 4;
    let peer = S3Peer::s3s_fs();
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let image = layout.add_image("v1", &[32 * MIB, 24 * MIB]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/app:v1", dist.authority()), None);
    let upstream = cove_config(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }]);
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let config = format!(
            "{}\n{}",
            upstream.replacen("[server]\n", &format!("[server]\nreplica = \"r{i}\"\n"), 1),
            peer.cove_storage_section("cache", PART)
        );
        replicas.push(Server::start_with(ServerOptions { config: Some(config), ..Default::default() }).await);
    }

    let mut fetches = Vec::new();
    for (n, layer) in image.layers.iter().enumerate() {
        let path = format!("/v2/docker.io/library/app/blobs/{}", layer.digest);
        let upstream_get = format!("GET /v2/library/app/blobs/{}", layer.digest);
        // The first layer straight at the replicas, the second through a
        // round-robin Caddy (12 clients spread over 3 replicas).
        let caddy = (n == 1)
            .then(|| Caddy::round_robin(free_port(), &replicas.iter().map(|r| r.addr.to_string()).collect::<Vec<_>>()));
        let mut tasks = Vec::new();
        for r in &replicas {
            for _ in 0..CLIENTS {
                let base = match &caddy {
                    Some(cd) => cd.url(""),
                    None => r.base.clone(),
                };
                tasks.push(tokio::spawn(get_verified(base, path.clone(), layer.digest.clone())));
            }
        }
        for t in tasks {
            t.await.expect("client task");
        }
        let count = dist.count(&upstream_get);
        assert!(
            (1..=REPLICAS).contains(&count),
            "{} clients on {REPLICAS} replicas: {count} upstream GETs of one blob (at most one per replica)\n{}",
            REPLICAS * CLIENTS,
            dist.all_requests()
        );
        // In the bucket now: every replica serves it without upstream.
        for r in &replicas {
            get_verified(r.base.clone(), path.clone(), layer.digest.clone()).await;
        }
        assert_eq!(dist.count(&upstream_get), count, "a stored blob is not fetched again");
        fetches.push(count);
    }
    report(&format!(
        "replicas: {REPLICAS} replicas x {CLIENTS} clients missing one blob at once: upstream GETs {} (direct), {} (through Caddy); 0 once stored",
        fetches[0], fetches[1]
    ));
}

/// `GET /token` on `s` as alice for pull+push on `team/app`.
async fn alice_token(s: &Server) -> String {
    password_token(s, "alice", ALICE_PW, "team/app").await
}

fn kid_of(token: &str) -> String {
    jwt_kid(token)
}

/// `GET /v2/team/app/tags/list` on `s` with `token`: the status.
async fn tags_status(s: &Server, token: &str) -> u16 {
    s.req("GET", "/v2/team/app/tags/list").bearer_auth(token).send().await.expect("GET tags").status().as_u16()
}

/// Two replicas rotating their shared signing keys every 4 s: both switch
/// to the same new key, a token signed with the old key just before the
/// switch is still accepted by the other replica, and the old key is
/// deleted from the bucket once its tokens have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rotate_the_signing_key_together() {
    let peer = S3Peer::s3s_fs();
    let work = tempfile::tempdir().expect("tmp");
    let auth = htpasswd_auth(work.path())
        .replace("[auth]\n", "[auth.token]\nkey_rotation = \"4s\"\nlifetime = \"5s\"\n\n[auth]\n");
    let config = format!(
        "[server]\npublic_url = \"http://@LISTEN@\"\n\n[ui]\nenabled = false\n\n{}\n{auth}",
        peer.cove_storage_section("rot", PART)
    );
    let opts = || ServerOptions { config: Some(config.clone()), ..Default::default() };
    let a = Server::start_with(opts()).await;
    let b = Server::start_with(opts()).await;
    let img = Image::random(1);
    push_image_to_with_basic(&a, &img).await;

    let mut last_old = alice_token(&a).await;
    let first = kid_of(&last_old);
    let dir = "rot/_shared/keys";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut most_keys = 0;
    // The last token signed with the first key, and the first one signed
    // after the switch (tokens fetched 200 ms apart; a switch that falls
    // between two fetches is seen at the next one).
    let new = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = alice_token(&a).await;
        most_keys = most_keys.max(peer.list_names(dir).await.len());
        if kid_of(&now) != first {
            break now;
        }
        last_old = now;
        assert!(std::time::Instant::now() < deadline, "no rotation within 20 s: still {first}");
    };
    assert_eq!(tags_status(&b, &last_old).await, 200, "the old key's last token on the other replica");
    assert_eq!(tags_status(&b, &new).await, 200, "the new key's token on the other replica");
    // Both replicas sign with the same new key.
    let agree = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (ka, kb) = (kid_of(&alice_token(&a).await), kid_of(&alice_token(&b).await));
        if ka == kb && ka != first {
            break;
        }
        assert!(std::time::Instant::now() < agree, "replicas sign with {ka} and {kb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old key goes once its tokens (5 s) have expired.
    let gone = std::time::Instant::now() + Duration::from_secs(20);
    while peer.list_names(dir).await.contains(&first) {
        most_keys = most_keys.max(peer.list_names(dir).await.len());
        assert!(std::time::Instant::now() < gone, "the old key {first} was never retired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(most_keys <= 4, "at most a few keys at once in the bucket, saw {most_keys}");
    assert_eq!(tags_status(&a, &alice_token(&b).await).await, 200, "tokens keep working after the retirement");
    report(&format!("replicas: signing key rotated every 4 s, at most {most_keys} keys in the bucket at once"));
}

/// Pushes `img` to `team/app:v1` on `s` with alice's password.
async fn push_image_to_with_basic(s: &Server, img: &Image) {
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let r = s
            .req("POST", "/v2/team/app/blobs/uploads/")
            .basic_auth("alice", Some(ALICE_PW))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 202);
        let url = with_query(&s.resolve(&header(&r, "location")), &format!("digest={}", sha256_digest(blob)));
        let r = s.req("PUT", &url).basic_auth("alice", Some(ALICE_PW)).body(blob.clone()).send().await.expect("PUT");
        assert_eq!(r.status(), 201);
    }
    let r = s
        .req("PUT", "/v2/team/app/manifests/v1")
        .basic_auth("alice", Some(ALICE_PW))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), 201);
}
