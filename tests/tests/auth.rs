//! Authentication and access control end to end (issue 4): the real `cove`
//! binary with `[auth]` + `[[access]]` configs, driven over HTTP and by real
//! clients (skopeo, podman).
//!
//! - a matrix (authenticator × identity × action × repository) → status,
//!   OCI code and a parsed `WWW-Authenticate` challenge, for `network`
//!   (default trust, and a boundary that excludes the client), `htpasswd`
//!   (Basic, registry tokens with and without the scope) and `oidc`;
//! - skopeo and podman logging in through the Docker token flow (bcrypt and
//!   SHA-crypt users), wrong passwords refused, the catalog filtered per
//!   identity, cross-repository mounts checked against pull permission,
//!   failed-login rate limiting;
//! - OIDC from a loopback issuer (discovery + JWKS) with real signatures:
//!   expired, wrong audience, rotated key, `alg: none`, HS256 confusion;
//! - trusted networks from 127.0.0.2 and `X-Forwarded-For` via trusted proxies;
//! - no password, token or `Authorization` value in any log or error body;
//! - the latency overhead of htpasswd (bcrypt cost 10) with the verification
//!   cache on and off, on the release binary.

mod auth_support;
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use auth_support::*;
use common::{
    cove_bin, oci_layout_manifest_digest, random_name, report, request_log, require_tool, run, sha256_digest,
    write_oci_layout, Image, Podman, OCI_MANIFEST,
};
use cove_testkit::fault::{FaultServer, Reply};
use cove_testkit::peers::containerd;
use cove_testkit::peers::skopeo::skopeo;
use serde_json::json;

/// The latency measurement takes this for writing; every other test for
/// reading, so the measurement runs alone on the machine.
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const ALICE_PW: &str = "alice-Pw-7f3e9a1c";
const BOB_PW: &str = "bob-Pw-0d5b2e8f";
const CAROL_PW: &str = "carol-Pw-9a8c7b6d";

// ---------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------

/// What a matrix cell does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// GET a manifest by tag.
    PullManifest,
    /// GET a blob.
    PullBlob,
    /// GET the tag list.
    Tags,
    /// POST an upload session.
    PushStart,
    /// PUT a manifest under a new tag.
    PushManifest,
    /// DELETE a manifest by (unknown) digest.
    Delete,
}

const ACTS: [Act; 6] = [Act::PullManifest, Act::PullBlob, Act::Tags, Act::PushStart, Act::PushManifest, Act::Delete];

impl Act {
    fn action(self) -> &'static str {
        match self {
            Act::PullManifest | Act::PullBlob | Act::Tags => "pull",
            Act::PushStart | Act::PushManifest => "push",
            Act::Delete => "delete",
        }
    }

    /// The scope a challenge should ask for (push asks for pull too).
    fn scope_actions(self) -> &'static str {
        match self.action() {
            "push" => "pull,push",
            a => a,
        }
    }

    /// The status when the request is authorised: content exists in local
    /// repositories; upstream namespaces answer 404 from the test upstream;
    /// DELETE targets an unknown digest.
    fn allowed_status(self, upstream: bool) -> u16 {
        match self {
            Act::PullManifest | Act::PullBlob | Act::Tags if upstream => 404,
            Act::PullManifest | Act::PullBlob | Act::Tags => 200,
            Act::PushStart => 202,
            Act::PushManifest => 201,
            Act::Delete => 404,
        }
    }
}

/// The expected outcome of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Allowed,
    /// 401 UNAUTHORIZED with a Bearer challenge; `error` is its `error=` param.
    Unauthorized {
        error: Option<&'static str>,
    },
    /// 403 DENIED without a challenge.
    Denied,
}

/// One repository of the matrix with an image already in it (or, for an
/// upstream namespace, an image that is not).
struct MatrixRepo {
    name: String,
    image: Image,
    upstream: bool,
}

async fn perform(c: &Client, auth: Option<&str>, repo: &MatrixRepo, act: Act) -> Resp {
    let name = &repo.name;
    match act {
        Act::PullManifest => c.get(&format!("/v2/{name}/manifests/v1"), auth).await,
        Act::PullBlob => c.get(&format!("/v2/{name}/blobs/{}", sha256_digest(&repo.image.config)), auth).await,
        Act::Tags => c.get(&format!("/v2/{name}/tags/list"), auth).await,
        Act::PushStart => c.send("POST", &format!("/v2/{name}/blobs/uploads/"), auth, &[], None).await,
        Act::PushManifest => {
            let path = format!("/v2/{name}/manifests/{}", random_name("m"));
            c.send("PUT", &path, auth, &[], Some((repo.image.manifest.clone(), OCI_MANIFEST))).await
        }
        Act::Delete => {
            let digest = sha256_digest(random_name("nothing").as_bytes());
            c.send("DELETE", &format!("/v2/{name}/manifests/{digest}"), auth, &[], None).await
        }
    }
}

/// Checks one response against `want`; returns a description of every
/// mismatch. `realm` is the expected Bearer realm (None: no challenge may
/// be sent at all, e.g. network trust). `secrets` must not be echoed.
fn check(
    r: &Resp,
    want: &Want,
    act: Act,
    repo: &MatrixRepo,
    realm: Option<&str>,
    denial_mentions: Option<&str>,
    secrets: &[String],
) -> Vec<String> {
    let mut bad = Vec::new();
    let challenge = r.header("www-authenticate");
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        if r.body.contains(s.as_str()) || challenge.contains(s.as_str()) {
            bad.push("response echoes a credential".into());
        }
    }
    match want {
        Want::Allowed => {
            let expected = act.allowed_status(repo.upstream);
            if r.status != expected {
                bad.push(format!("status {} (want {expected}) body {:.200}", r.status, r.body));
            }
        }
        Want::Denied => {
            if r.status != 403 || !r.codes().iter().any(|c| c == "DENIED") {
                bad.push(format!("want 403 DENIED, got {} {:.200}", r.status, r.body));
            }
            if !challenge.is_empty() {
                bad.push(format!("403 must not challenge, got {challenge:?}"));
            }
            if let Some(m) = denial_mentions {
                if !r.message().contains(m) {
                    bad.push(format!("denial message {:?} does not name {m}", r.message()));
                }
            }
        }
        Want::Unauthorized { error } => {
            if r.status != 401 || !r.codes().iter().any(|c| c == "UNAUTHORIZED") {
                bad.push(format!("want 401 UNAUTHORIZED, got {} {:.200}", r.status, r.body));
            }
            let c = parse_challenge(&challenge);
            let scope = format!("repository:{}:{}", repo.name, act.scope_actions());
            if c.scheme != "Bearer"
                || c.get("realm") != realm
                || c.get("service") != Some("cove")
                || c.get("scope") != Some(scope.as_str())
                || c.get("error") != *error
            {
                bad.push(format!(
                    "challenge {challenge:?}: want Bearer realm={realm:?} service=cove scope={scope} error={error:?}"
                ));
            }
        }
    }
    bad
}

/// The expected outcome of an identity for a (repository, action).
type Expect<'a> = Box<dyn Fn(&str, &str) -> Want + 'a>;

/// An identity of the matrix: a label, its `Authorization` header, and the
/// expected outcome for a (repository, action).
struct Who<'a> {
    label: &'static str,
    header: Option<String>,
    want: Expect<'a>,
}

/// Runs every (identity × repository × action) cell; panics listing every
/// cell that differs. Returns the number of cells.
#[allow(clippy::too_many_arguments)]
async fn run_matrix(
    kind: &str,
    c: &Client,
    whos: &[Who<'_>],
    repos: &[MatrixRepo],
    realm: Option<&str>,
    denial_mentions: Option<&str>,
    secrets: &[String],
) -> usize {
    let mut failures = Vec::new();
    let mut cells = 0;
    for who in whos {
        for repo in repos {
            for act in ACTS {
                let want = (who.want)(&repo.name, act.action());
                let r = perform(c, who.header.as_deref(), repo, act).await;
                cells += 1;
                for f in check(&r, &want, act, repo, realm, denial_mentions, secrets) {
                    failures.push(format!("[{kind}] {} {act:?} {}: want {want:?}: {f}", who.label, repo.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cells} matrix cells wrong:\n{}", failures.len(), failures.join("\n"));
    cells
}

/// A loopback stand-in for Docker Hub that knows nothing (404 for everything),
/// so authorised pulls in `docker.io/…` end quickly and without the internet.
async fn empty_upstream() -> FaultServer {
    FaultServer::start(|req| {
        let code = if req.path().contains("/blobs/") {
            "BLOB_UNKNOWN"
        } else if req.path().contains("/manifests/") {
            "MANIFEST_UNKNOWN"
        } else {
            "NAME_UNKNOWN"
        };
        Reply::error(404, code)
    })
    .await
}

fn upstream_config(up: &FaultServer) -> String {
    format!("[upstreams.\"docker.io\"]\nurl = \"{}\"\nretries = 0\n", up.url())
}

/// Pushes `img` as `repo:v1` with `auth` (asserting success).
async fn push_image(c: &Client, auth: Option<&str>, repo: &str, img: &Image) {
    let mut blobs = vec![img.config.clone()];
    blobs.extend(img.layers.iter().cloned());
    for b in blobs {
        let r = c.send("POST", &format!("/v2/{repo}/blobs/uploads/"), auth, &[], None).await;
        assert_eq!(r.status, 202, "start upload to {repo}: {}", r.body);
        let loc = r.header("location");
        let url = if loc.starts_with("http") { loc } else { format!("{}{loc}", c.base) };
        let url = format!("{url}{}digest={}", if url.contains('?') { '&' } else { '?' }, sha256_digest(&b));
        let r = c.send("PUT", &url, auth, &[], Some((b, "application/octet-stream"))).await;
        assert_eq!(r.status, 201, "finish upload to {repo}: {}", r.body);
    }
    let r =
        c.send("PUT", &format!("/v2/{repo}/manifests/v1"), auth, &[], Some((img.manifest.clone(), OCI_MANIFEST))).await;
    assert_eq!(r.status, 201, "push manifest {repo}:v1: {}", r.body);
}

fn b64url_json(part: &str) -> serde_json::Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("json")
}

/// `GET /token` with optional credentials and scopes; returns the token
/// (asserting 200 and the Docker token response shape) and its `access` claim.
async fn registry_token(c: &Client, auth: Option<&str>, scopes: &[String]) -> (String, serde_json::Value) {
    let mut q = String::from("/token?service=cove");
    for s in scopes {
        q.push_str("&scope=");
        q.extend(form_escape(s));
    }
    let r = c.get(&q, auth).await;
    assert_eq!(r.status, 200, "token endpoint: {}", r.body);
    assert_eq!(r.header("cache-control"), "no-store", "token responses must not be cached");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("token response is JSON");
    let token = v["token"].as_str().expect("token field").to_owned();
    assert!(v["expires_in"].as_u64().is_some_and(|e| e > 0), "expires_in: {v}");
    let claims = b64url_json(token.split('.').nth(1).expect("JWT payload"));
    (token, claims["access"].clone())
}

fn form_escape(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(|c| match c {
        ':' => "%3A".chars().collect::<Vec<_>>(),
        ',' => "%2C".chars().collect(),
        '/' => "%2F".chars().collect(),
        ' ' => "%20".chars().collect(),
        c => vec![c],
    })
}

/// Actions granted for `repo` in a token's `access` claim, sorted.
fn granted(access: &serde_json::Value, repo: &str) -> Vec<String> {
    let mut out: Vec<String> = access
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "repository" && e["name"] == repo)
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

// ---- htpasswd --------------------------------------------------------------

/// The access rules of the htpasswd set-up, as a model: may `user` (None =
/// anonymous) do `action` on `repo`?
fn htpasswd_model(user: Option<&str>, repo: &str, action: &str) -> bool {
    let ns = repo.split('/').next().unwrap_or_default();
    match ns {
        // myorg/**: alice everything; any authenticated user pulls.
        "myorg" => user == Some("alice") || (user.is_some() && action == "pull"),
        // public/*: anyone pulls; alice pushes.
        // (`*` is one component: public/team/app falls to the default.)
        "public" if repo.split('/').count() == 2 => action == "pull" || (user == Some("alice") && action == "push"),
        // private/**: alice pulls and pushes.
        "private" => user == Some("alice") && action != "delete",
        // bob/**: bob everything.
        "bob" => user == Some("bob"),
        // Cached upstream namespace, no rule: default (authenticated) capped at pull.
        "docker.io" => user.is_some() && action == "pull",
        // No rule: default policy `authenticated`.
        _ => user.is_some(),
    }
}

const HTPASSWD_ACCESS: &str = r#"
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

[[access]]
repository = "private/**"
actions = ["pull", "push"]
users = ["alice"]

[[access]]
repository = "bob/**"
actions = ["pull", "push", "delete"]
users = ["bob"]
"#;

/// htpasswd: alice (bcrypt), bob (SHA-crypt 512), carol (SHA-crypt 256).
fn htpasswd_file(bcrypt_cost: u32) -> String {
    format!(
        "{}\n{}\n{}\n",
        bcrypt_line("alice", ALICE_PW, bcrypt_cost),
        sha_crypt_line("bob", BOB_PW, 512),
        sha_crypt_line("carol", CAROL_PW, 256)
    )
}

fn htpasswd_config(extra_auth: &str, extra: &str) -> String {
    format!(
        "[server]\npublic_url = \"http://@LISTEN@\"\n\n{extra}\n[auth]\nkind = \"htpasswd\"\n\
         htpasswd_file = \"@DIR@/htpasswd\"\n{extra_auth}\n{HTPASSWD_ACCESS}"
    )
}

#[tokio::test]
async fn matrix_htpasswd_basic_and_registry_tokens() {
    let _g = EXCLUSIVE.read().await;
    let up = empty_upstream().await;
    let cfg = htpasswd_config("[auth.rate_limit]\nmax_failures = 0\n", &upstream_config(&up));
    // debug logs: the secret scan below then covers everything the server says.
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(4))], &[("COVE_LOG", "debug")]).await;
    let c = s.client();
    let realm = format!("{}/token", s.base);
    let alice = basic("alice", ALICE_PW);
    let bob = basic("bob", BOB_PW);

    // Content: alice pushes to every local repository of the matrix.
    let mut repos = Vec::new();
    for name in ["myorg/team/app", "public/app", "private/app", "misc/app", "public/team/app"] {
        let img = Image::random(1);
        push_image(&c, Some(&alice), name, &img).await;
        repos.push(MatrixRepo { name: name.into(), image: img, upstream: false });
    }
    let img = Image::random(1);
    push_image(&c, Some(&bob), "bob/app", &img).await;
    repos.push(MatrixRepo { name: "bob/app".into(), image: img, upstream: false });
    repos.push(MatrixRepo { name: "docker.io/library/alpine".into(), image: Image::random(1), upstream: true });

    // Registry tokens: alice's with every scope of the matrix, alice's for an
    // unrelated repository only, and an anonymous one for public/app.
    let all_scopes: Vec<String> = repos.iter().map(|r| format!("repository:{}:pull,push,delete", r.name)).collect();
    let (scoped, access) = registry_token(&c, Some(&alice), &all_scopes).await;
    for r in &repos {
        let want: Vec<String> = ["delete", "pull", "push"]
            .iter()
            .filter(|a| htpasswd_model(Some("alice"), &r.name, a))
            .map(|a| a.to_string())
            .collect();
        assert_eq!(granted(&access, &r.name), want, "token grants alice exactly what the policy allows on {}", r.name);
    }
    let (unscoped, _) = registry_token(&c, Some(&alice), &["repository:elsewhere/x:pull".into()]).await;
    let (anon_token, anon_access) = registry_token(&c, None, &["repository:public/app:pull,push".into()]).await;
    assert_eq!(granted(&anon_access, "public/app"), vec!["pull"], "anonymous token: pull only");
    // Wrong password at the token endpoint: 401 with a Basic challenge.
    let r = c
        .get("/token?service=cove&scope=repository%3Amyorg%2Fteam%2Fapp%3Apull", Some(&basic("alice", "nope-wrong")))
        .await;
    assert_eq!(r.status, 401, "token endpoint with a wrong password: {}", r.body);
    assert_eq!(parse_challenge(&r.header("www-authenticate")).scheme, "Basic");

    let m = htpasswd_model;
    let whos = vec![
        Who {
            label: "anonymous",
            header: None,
            want: Box::new(move |r, a| if m(None, r, a) { Want::Allowed } else { Want::Unauthorized { error: None } }),
        },
        Who {
            label: "alice(bcrypt)",
            header: Some(alice.clone()),
            want: Box::new(move |r, a| if m(Some("alice"), r, a) { Want::Allowed } else { Want::Denied }),
        },
        Who {
            label: "bob(sha512-crypt)",
            header: Some(bob.clone()),
            want: Box::new(move |r, a| if m(Some("bob"), r, a) { Want::Allowed } else { Want::Denied }),
        },
        Who {
            label: "carol(sha256-crypt)",
            header: Some(basic("carol", CAROL_PW)),
            want: Box::new(move |r, a| if m(Some("carol"), r, a) { Want::Allowed } else { Want::Denied }),
        },
        Who {
            label: "wrong password",
            header: Some(basic("alice", "alice-wrong-password")),
            want: Box::new(|_, _| Want::Unauthorized { error: Some("invalid_token") }),
        },
        Who {
            label: "unknown user",
            header: Some(basic("mallory", "mallory-password")),
            want: Box::new(|_, _| Want::Unauthorized { error: Some("invalid_token") }),
        },
        Who {
            label: "malformed header",
            header: Some("Basic !!!not-base64!!!".into()),
            want: Box::new(|_, _| Want::Unauthorized { error: Some("invalid_token") }),
        },
        Who {
            label: "token with scope",
            header: Some(format!("Bearer {scoped}")),
            want: Box::new(move |r, a| if m(Some("alice"), r, a) { Want::Allowed } else { Want::Denied }),
        },
        Who {
            label: "token without scope",
            header: Some(format!("Bearer {unscoped}")),
            want: Box::new(move |r, a| {
                if m(Some("alice"), r, a) {
                    Want::Unauthorized { error: Some("insufficient_scope") }
                } else {
                    Want::Denied
                }
            }),
        },
        Who {
            label: "anonymous token",
            header: Some(format!("Bearer {anon_token}")),
            want: Box::new(move |r, a| if m(None, r, a) { Want::Allowed } else { Want::Unauthorized { error: None } }),
        },
        Who {
            label: "forged token",
            header: Some(format!("Bearer {}x", &scoped[..scoped.len() - 1])),
            want: Box::new(|_, _| Want::Unauthorized { error: Some("invalid_token") }),
        },
    ];
    let secrets: Vec<String> = vec![
        ALICE_PW.into(),
        BOB_PW.into(),
        CAROL_PW.into(),
        "alice-wrong-password".into(),
        "mallory-password".into(),
        alice.clone(),
        bob.clone(),
        scoped.clone(),
        unscoped.clone(),
        anon_token.clone(),
    ];
    let cells = run_matrix("htpasswd", &c, &whos, &repos, Some(&realm), None, &secrets).await;

    // GET /v2/: authentication only.
    assert_eq!(c.get("/v2/", None).await.status, 401);
    assert_eq!(c.get("/v2/", Some(&alice)).await.status, 200);
    assert_eq!(c.get("/v2/", Some(&format!("Bearer {scoped}"))).await.status, 200);
    let r = c.get("/v2/", Some(&basic("alice", "alice-wrong-password"))).await;
    assert_eq!(r.status, 401);
    let ch = parse_challenge(&r.header("www-authenticate"));
    assert_eq!(
        (ch.scheme.as_str(), ch.get("realm"), ch.get("service")),
        ("Bearer", Some(realm.as_str()), Some("cove"))
    );

    // The catalog, filtered by what each identity may pull.
    let catalog = |auth: Option<String>| {
        let c = c.clone();
        async move {
            let r = c.get("/v2/_catalog", auth.as_deref()).await;
            (r.status, serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default())
        }
    };
    let r = c.get("/v2/_catalog", None).await;
    assert_eq!(r.status, 401, "anonymous catalog needs a login");
    let ch = parse_challenge(&r.header("www-authenticate"));
    assert_eq!((ch.get("realm"), ch.get("scope")), (Some(realm.as_str()), Some("registry:catalog:*")), "{ch:?}");
    // Registry tokens list the catalog only with the catalog scope, which an
    // anonymous caller cannot get; alice's repository-only token is not enough.
    let (anon_cat, anon_cat_access) = registry_token(&c, None, &["registry:catalog:*".into()]).await;
    assert!(!anon_cat_access.to_string().contains("catalog"), "anonymous gets no catalog scope: {anon_cat_access}");
    for (who, tok) in [("anonymous token", &anon_cat), ("alice's repository token", &scoped)] {
        let r = c.get("/v2/_catalog", Some(&format!("Bearer {tok}"))).await;
        assert_eq!(r.status, 401, "{who} on the catalog: {}", r.body);
        let ch = parse_challenge(&r.header("www-authenticate"));
        assert_eq!(
            (ch.get("scope"), ch.get("error")),
            (Some("registry:catalog:*"), Some("insufficient_scope")),
            "{who}: {ch:?}"
        );
    }
    for (user, hdr) in [("alice", &alice), ("bob", &bob)] {
        let (st, v) = catalog(Some(hdr.clone())).await;
        assert_eq!(st, 200, "{user} catalog: {v}");
        let mut want: Vec<String> = repos
            .iter()
            .filter(|r| !r.upstream && htpasswd_model(Some(user), &r.name, "pull"))
            .map(|r| r.name.clone())
            .collect();
        want.sort();
        let got: Vec<String> = v["repositories"]
            .as_array()
            .expect("repositories")
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        assert_eq!(got, want, "{user}'s catalog");
        // Page by page, the filtered catalog is the same list, and `Link`
        // is there exactly when more visible repositories follow.
        for n in [1, 2] {
            let mut paged: Vec<String> = Vec::new();
            loop {
                let mut url = format!("/v2/_catalog?n={n}");
                if let Some(l) = paged.last() {
                    url.push_str(&format!("&last={l}"));
                }
                let r = c.get(&url, Some(hdr)).await;
                assert_eq!(r.status, 200, "{user} {url}: {}", r.body);
                let v: serde_json::Value = serde_json::from_str(&r.body).expect("catalog json");
                let page: Vec<String> = v["repositories"]
                    .as_array()
                    .expect("repositories")
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                assert!(page.len() <= n, "{user} {url}: {page:?}");
                paged.extend(page);
                let more = paged.len() < want.len();
                assert_eq!(!r.header("link").is_empty(), more, "{user} {url}: Link iff more follow");
                if !more {
                    break;
                }
            }
            assert_eq!(paged, want, "{user}'s catalog in pages of {n}");
        }
    }
    // Through the token flow: bob's token with the catalog scope sees bob's list.
    let (bob_cat, _) = registry_token(&c, Some(&bob), &["registry:catalog:*".into()]).await;
    let (st, v) = catalog(Some(format!("Bearer {bob_cat}"))).await;
    assert_eq!(st, 200, "catalog with a registry token: {v}");
    assert!(!v.to_string().contains("private/app"), "bob's catalog hides private/app: {v}");
    assert!(v.to_string().contains("bob/app"), "bob's catalog shows bob/app: {v}");

    // Cross-repository mount: bob may push bob/** but not pull private/**, so
    // the mount falls back to a plain upload session (202); from public/app
    // (which he may pull) it mounts (201).
    let private_blob = sha256_digest(&repos[2].image.config);
    let r = c
        .send(
            "POST",
            &format!("/v2/bob/app/blobs/uploads/?mount={private_blob}&from=private/app"),
            Some(&bob),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 202, "mount from a repository bob cannot pull must fall back to an upload: {}", r.body);
    let r = c.get(&format!("/v2/bob/app/blobs/{private_blob}"), Some(&bob)).await;
    assert_eq!(r.status, 404, "the private blob did not leak into bob/app");
    let public_blob = sha256_digest(&repos[1].image.config);
    let r = c
        .send("POST", &format!("/v2/bob/app/blobs/uploads/?mount={public_blob}&from=public/app"), Some(&bob), &[], None)
        .await;
    assert_eq!(r.status, 201, "mount from a pullable repository: {}", r.body);
    // alice may pull private/app: her mount into myorg works.
    let r = c
        .send(
            "POST",
            &format!("/v2/myorg/team/app/blobs/uploads/?mount={private_blob}&from=private/app"),
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 201, "alice mounts from private/app: {}", r.body);

    // No secret in the server's (debug-level) log.
    let mut all = secrets.clone();
    all.push(bob_cat);
    assert_no_secrets("server log", &s.logs(), &all);
    report(&format!("auth matrix [htpasswd]: {cells} cells (11 identities x 7 repositories x 6 actions) as expected"));
}

// ---- network ---------------------------------------------------------------

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

// ---- rate limit -----------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------

/// Runs a command expected to fail; returns its combined output.
fn run_fail(cmd: &mut Command) -> String {
    let out = cmd.stdin(std::process::Stdio::null()).output().expect("spawn");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{cmd:?} should have failed:\n{text}");
    text
}

/// A small uncompressed tar layer holding one random file, made by `tar`.
fn tar_layer(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let root = dir.join(format!("layer-{name}"));
    std::fs::create_dir_all(&root).expect("layer dir");
    std::fs::write(root.join(format!("{name}.txt")), random_name("content-")).expect("layer file");
    let tar = dir.join(format!("layer-{name}.tar"));
    run(Command::new(require_tool("tar", "tar")).arg("-cf").arg(&tar).arg("-C").arg(&root).arg("."));
    std::fs::read(&tar).expect("read tar")
}

#[tokio::test]
async fn skopeo_and_podman_log_in_through_the_token_flow() {
    let _g = EXCLUSIVE.read().await;
    let cfg = htpasswd_config("", "");
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(10))], &[]).await;
    let host = s.host();
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    // Real tar layers: podman unpacks what it pulls.
    let img = Image::from_layers(vec![tar_layer(work.path(), "a"), tar_layer(work.path(), "b")]);
    write_oci_layout(&src, &img, "v1");
    let src_ref = format!("oci:{}:v1", src.display());

    // Refused: wrong password, no credentials, and a user without push.
    let out = run_fail(
        skopeo()
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", "alice:wrong-Pw-123"])
            .arg(&src_ref)
            .arg(format!("docker://{host}/myorg/app:v1")),
    );
    assert!(out.contains("401") || out.to_lowercase().contains("unauthorized"), "wrong password: {out}");
    let out = run_fail(
        skopeo().args(["copy", "--dest-tls-verify=false"]).arg(&src_ref).arg(format!("docker://{host}/myorg/app:v1")),
    );
    assert!(out.contains("401") || out.to_lowercase().contains("unauthorized"), "anonymous: {out}");
    let out = run_fail(
        skopeo()
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", &format!("bob:{BOB_PW}")])
            .arg(&src_ref)
            .arg(format!("docker://{host}/myorg/app:v1")),
    );
    assert!(out.contains("denied") || out.contains("403") || out.contains("401"), "bob cannot push myorg: {out}");
    assert_eq!(
        s.client().get("/v2/myorg/app/manifests/v1", Some(&basic("alice", ALICE_PW))).await.status,
        404,
        "nothing was pushed"
    );

    // alice (bcrypt) pushes; bob (SHA-crypt) pulls; digests identical.
    let before = request_log(&s.logs()).len();
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", &format!("alice:{ALICE_PW}")])
        .arg(&src_ref)
        .arg(format!("docker://{host}/myorg/app:v1")));
    let out_dir = work.path().join("out");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("bob:{BOB_PW}")])
        .arg(format!("docker://{host}/myorg/app:v1"))
        .arg(format!("oci:{}:v1", out_dir.display())));
    assert_eq!(oci_layout_manifest_digest(&out_dir, "v1"), img.digest, "pulled digest identical");
    // bob pushes to his own namespace; carol (SHA-crypt 256) pulls it.
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &format!("bob:{BOB_PW}")])
        .arg(&src_ref)
        .arg(format!("docker://{host}/bob/app:v1")));
    run_fail(
        skopeo()
            .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("carol:{CAROL_PW}")])
            .arg(format!("docker://{host}/bob/app:v1"))
            .arg(format!("oci:{}:bob", out_dir.display())),
    );
    run_fail(
        skopeo()
            .args([
                "copy",
                "--src-tls-verify=false",
                "--preserve-digests",
                "--src-creds",
                &format!("carol:wrong-{CAROL_PW}"),
            ])
            .arg(format!("docker://{host}/myorg/app:v1"))
            .arg(format!("oci:{}:carol", out_dir.display())),
    );
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("carol:{CAROL_PW}")])
        .arg(format!("docker://{host}/myorg/app:v1"))
        .arg(format!("oci:{}:carol", out_dir.display())));
    assert_eq!(oci_layout_manifest_digest(&out_dir, "carol"), img.digest);

    // The server log shows the token flow: skopeo was challenged, fetched
    // /token with Basic credentials, then sent Bearer tokens on the API.
    let log = request_log(&s.logs());
    let flow = &log[before..];
    let token_reqs: Vec<_> = flow.iter().filter(|(_, p, _, _)| p == "/token").collect();
    assert!(!token_reqs.is_empty(), "skopeo never asked /token:\n{flow:?}");
    assert!(token_reqs.iter().all(|(_, _, _, a)| a == "basic"), "token requests carry Basic: {token_reqs:?}");
    // carol's wrong password is the only refused login.
    let refused = token_reqs.iter().filter(|(_, _, st, _)| *st == 401).count();
    assert_eq!(refused, 1, "token requests: {token_reqs:?}");
    assert!(token_reqs.iter().all(|(_, _, st, _)| *st == 200 || *st == 401), "token requests: {token_reqs:?}");
    let api: Vec<_> = flow.iter().filter(|(_, p, _, _)| p.starts_with("/v2/") && p != "/v2/").collect();
    let bearer_ok = api.iter().filter(|(_, _, st, a)| a == "bearer" && *st < 400).count();
    assert!(bearer_ok >= 4, "API requests with Bearer tokens: {bearer_ok}\n{api:?}");
    assert!(
        api.iter().all(|(_, _, _, a)| a != "basic"),
        "after the challenge, skopeo uses tokens, never Basic, on the API:\n{api:?}"
    );

    // podman login (wrong password refused), then push and pull with the auth file.
    let podman = Podman::new();
    let mut login = podman.auth("login");
    login.args(["--tls-verify=false", "-u", "alice", "-p", "wrong-Pw-456", &host]);
    let out = run_fail(&mut login);
    let lower = out.to_lowercase();
    assert!(
        lower.contains("invalid username/password") || lower.contains("unauthorized") || out.contains("401"),
        "podman login wrong password: {out}"
    );
    run(podman.auth("login").args(["--tls-verify=false", "-u", "alice", "-p", ALICE_PW, &host]));
    let authfile = std::fs::read_to_string(podman.authfile()).expect("podman wrote its auth file");
    assert!(authfile.contains(&host), "auth file names the registry: {authfile}");
    let image = format!("{host}/myorg/app:v1");
    run(podman.auth("pull").args(["--tls-verify=false", &image]));
    let pushed = format!("{host}/myorg/podman:v2");
    run(podman.cmd().args(["tag", &image, &pushed]));
    let digest_file = podman.dir.path().join("digest");
    run(podman.auth("push").args(["--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&pushed));
    let digest = std::fs::read_to_string(&digest_file).expect("digest file");
    let r = s.client().get("/v2/myorg/podman/manifests/v2", Some(&basic("alice", ALICE_PW))).await;
    assert_eq!(r.status, 200, "podman's push landed");
    assert_eq!(r.header("docker-content-digest"), digest.trim());
    run(podman.cmd().args(["rmi", "-a", "-f"]));
    run(podman.auth("pull").args(["--tls-verify=false", &pushed]));
    // Logged out, podman is refused.
    run(podman.auth("logout").arg(&host));
    let out = run_fail(podman.auth("push").args(["--tls-verify=false", &pushed]));
    assert!(out.to_lowercase().contains("unauthorized") || out.contains("401"), "push after logout: {out}");
    let log = request_log(&s.logs());
    assert!(
        log.iter().filter(|(_, p, _, a)| p == "/token" && a == "basic").count() > token_reqs.len(),
        "podman used /token"
    );

    let secrets = vec![
        ALICE_PW.to_owned(),
        BOB_PW.to_owned(),
        CAROL_PW.to_owned(),
        "wrong-Pw-123".into(),
        "wrong-Pw-456".into(),
        basic("alice", ALICE_PW),
        basic("bob", BOB_PW),
    ];
    assert_no_secrets("server log", &s.logs(), &secrets);
    assert!(!s.logs().contains("Bearer ey"), "no bearer token in the log");
}

#[tokio::test]
async fn containerd_pulls_with_credentials_through_the_token_flow() {
    let _g = EXCLUSIVE.read().await;
    let s = AuthServer::start(&cove_bin(), &htpasswd_config("", ""), &[("htpasswd", htpasswd_file(4))], &[]).await;
    let work = tempfile::tempdir().expect("tmp");
    let img = Image::from_layers(vec![tar_layer(work.path(), "ctr")]);
    push_image(&s.client(), Some(&basic("alice", ALICE_PW)), "myorg/ctr", &img).await;
    let ctd = containerd::Containerd::start();
    let reference = format!("{}/myorg/ctr:v1", s.host());
    let pull = |user: &str| {
        ctd.ctr(&["images", "pull", "--plain-http", "--snapshotter", "native", "--user", user, &reference])
    };
    let out = pull(&format!("alice:{}", "wrong-Pw-789"));
    assert!(!out.status.success(), "containerd with a wrong password must fail");
    let out = pull(&format!("bob:{BOB_PW}"));
    assert!(out.status.success(), "ctr pull as bob: {}", String::from_utf8_lossy(&out.stderr));
    let out = ctd.ctr(&["images", "ls", "-q"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&reference), "image listed");
    let log = request_log(&s.logs());
    assert!(
        log.iter().any(|(m, p, st, _)| m == "GET" && p == "/token" && *st == 200),
        "containerd used /token:\n{log:?}"
    );
    // containerd first tries the OAuth2 POST form (405 here) and falls back to GET.
    let token_reqs: Vec<_> = log.iter().filter(|(_, p, _, _)| p == "/token").collect();
    eprintln!("containerd token requests: {token_reqs:?}");
    let manifest_gets: Vec<_> =
        log.iter().filter(|(m, p, st, _)| m == "GET" && p.contains("/manifests/") && *st == 200).collect();
    assert!(!manifest_gets.is_empty() && manifest_gets.iter().all(|(_, _, _, a)| a == "bearer"), "{manifest_gets:?}");
    assert_no_secrets("server log", &s.logs(), &[BOB_PW.into(), "wrong-Pw-789".into(), basic("bob", BOB_PW)]);
}

// ---------------------------------------------------------------------------
// OIDC
// ---------------------------------------------------------------------------

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

[[access]]
repository = "ci/**"
actions = ["pull", "push"]
groups = ["builders"]

[[access]]
repository = "ci/**"
actions = ["pull"]
anyone = "authenticated"

[[access]]
repository = "public/*"
actions = ["pull"]
anyone = "anonymous"

[[access]]
repository = "public/*"
actions = ["pull", "push"]
groups = ["builders"]
"#
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
    let invalid = |label: &'static str, token: &str| Who {
        label,
        header: Some(format!("Bearer {token}")),
        want: Box::new(|_, _| Want::Unauthorized { error: Some("invalid_token") }),
    };
    let whos = vec![
        Who {
            label: "anonymous",
            header: None,
            want: Box::new(move |r, a| if m(None, r, a) { Want::Allowed } else { Want::Unauthorized { error: None } }),
        },
        Who {
            label: "builder (Bearer)",
            header: Some(builder_h.clone()),
            want: Box::new(move |r, a| if m(Some(&["builders"]), r, a) { Want::Allowed } else { Want::Denied }),
        },
        Who {
            label: "builder (JWT as Basic password)",
            header: Some(basic("ci", &builder)),
            want: Box::new(move |r, a| if m(Some(&["builders"]), r, a) { Want::Allowed } else { Want::Denied }),
        },
        Who {
            label: "outsider (Bearer)",
            header: Some(format!("Bearer {outsider}")),
            want: Box::new(move |r, a| if m(Some(&["dev"]), r, a) { Want::Allowed } else { Want::Denied }),
        },
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

// ---------------------------------------------------------------------------
// Trusted networks and proxies
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Latency overhead of htpasswd
// ---------------------------------------------------------------------------

/// The release binary when present (`COVE_BIN` first), else the test binary.
fn release_bin() -> (PathBuf, &'static str) {
    if let Some(p) = std::env::var_os("COVE_BIN") {
        return (PathBuf::from(p), "COVE_BIN");
    }
    let r = common::target_dir().join("release").join("cove");
    if r.is_file() {
        (r, "release")
    } else {
        (cove_bin(), "debug (no release build found)")
    }
}

/// Sequential HEAD requests for a blob with keep-alive; returns sorted
/// per-request latencies in microseconds.
async fn latencies(c: &reqwest::Client, url: &str, auth: Option<&str>, n: usize) -> Vec<u128> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut rb = c.head(url);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let t = Instant::now();
        let r = rb.send().await.expect("HEAD");
        assert_eq!(r.status(), 200, "HEAD {url}");
        out.push(t.elapsed().as_micros());
    }
    out.sort_unstable();
    out
}

fn median(v: &[u128]) -> f64 {
    v[v.len() / 2] as f64 / 1000.0
}

#[tokio::test]
async fn htpasswd_latency_overhead_with_and_without_the_cache() {
    let _g = EXCLUSIVE.write().await;
    let (bin, which) = release_bin();
    let alice = basic("alice", ALICE_PW);
    let file = format!("{}\n", bcrypt_line("alice", ALICE_PW, 10));
    const N: usize = 40;
    let mut results = Vec::new();
    for (label, cfg) in [
        ("network (no auth)", "[auth]\nkind = \"network\"\n".to_owned()),
        ("htpasswd, cache on (60s)", htpasswd_config("credential_cache_ttl = \"60s\"", "")),
        ("htpasswd, cache off (0s)", htpasswd_config("credential_cache_ttl = \"0s\"", "")),
    ] {
        let s = AuthServer::start(&bin, &cfg, &[("htpasswd", file.clone())], &[]).await;
        let auth = (!label.starts_with("network")).then_some(alice.as_str());
        let c = s.client();
        let img = Image::random(1);
        push_image(&c, auth, "myorg/bench", &img).await;
        let url = format!("{}/v2/myorg/bench/blobs/{}", s.base, sha256_digest(&img.config));
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let _ = latencies(&http, &url, auth, 3).await; // connection + warm-up
        let lat = latencies(&http, &url, auth, N).await;
        let mean = lat.iter().sum::<u128>() as f64 / lat.len() as f64 / 1000.0;
        results.push((label, median(&lat), mean, lat[lat.len() * 9 / 10] as f64 / 1000.0));
        drop(s);
    }
    // The first request of a user on a fresh server (one bcrypt verification).
    let s = AuthServer::start(&bin, &htpasswd_config("", ""), &[("htpasswd", file.clone())], &[]).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let url = format!("{}/v2/", s.base);
    let _ = http.get(&url).send().await; // connection, no credentials
    let t = Instant::now();
    assert_eq!(http.get(&url).header("authorization", &alice).send().await.expect("GET").status(), 200);
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    assert_eq!(http.get(&url).header("authorization", &alice).send().await.expect("GET").status(), 200);
    let second = t.elapsed().as_secs_f64() * 1000.0;

    // A burst of 30 concurrent requests of one user (a parallel 30-layer pull
    // with Basic credentials) on a cold cache, then again warm.
    let burst = |url: String| {
        let (http, alice) = (http.clone(), alice.clone());
        async move {
            let t = Instant::now();
            let reqs = (0..30).map(|_| {
                let (http, url, alice) = (http.clone(), url.clone(), alice.clone());
                tokio::spawn(
                    async move { http.get(&url).header("authorization", &alice).send().await.map(|r| r.status()) },
                )
            });
            for r in futures::future::join_all(reqs).await {
                assert_eq!(r.expect("task").expect("GET").as_u16(), 200);
            }
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    let s2 = AuthServer::start(&bin, &htpasswd_config("", ""), &[("htpasswd", file.clone())], &[]).await;
    let cold = burst(format!("{}/v2/", s2.base)).await;
    let warm = burst(format!("{}/v2/", s2.base)).await;
    drop(s2);

    let base = results[0].1;
    report(&format!(
        "htpasswd auth latency ({which} binary {}, bcrypt cost 10, {N} sequential HEAD blob requests, keep-alive):",
        bin.display()
    ));
    for (label, med, mean, p90) in &results {
        report(&format!(
            "  {label:<26} median {med:7.3} ms  mean {mean:7.3} ms  p90 {p90:7.3} ms  overhead vs network {:+8.3} ms",
            med - base
        ));
    }
    report(&format!("  first request of a user {first:.3} ms, the next one {second:.3} ms (cache on)"));
    report(&format!(
        "  30 concurrent requests of one user: {cold:.1} ms on a cold cache, {warm:.1} ms warm \
         (concurrent misses share one verification)"
    ));
    assert!(warm < cold, "a warm cache makes the burst cheaper: cold {cold} ms, warm {warm} ms");
    // Without single flight each of the 30 would run bcrypt (~30 x first).
    assert!(cold < 5.0 * first, "a cold burst pays about one verification: {cold:.1} ms vs first {first:.1} ms");
    let (on, off) = (results[1].1, results[2].1);
    assert!(off > on, "without the cache every request pays bcrypt: off {off} ms vs on {on} ms");
    assert!(
        off - base > 5.0 * (on - base).max(0.1),
        "the cache removes most of the bcrypt cost: on {on}, off {off}, base {base}"
    );
    assert!(first > second, "the first request pays the verification");
    assert!(on - base < 2.0, "with the cache, htpasswd adds under 2 ms per request: {:.3} ms", on - base);
}
