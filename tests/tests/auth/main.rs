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

#[path = "../auth_support/mod.rs"]
mod auth_support;
#[path = "../common/mod.rs"]
mod common;

mod clients;
mod htpasswd;
mod latency;
mod logins;
mod network;
mod oidc;

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
// The matrix, shared by the htpasswd, network and OIDC tests
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

impl<'a> Who<'a> {
    /// Allowed where `may(repository, action)`, `otherwise` elsewhere.
    fn allowed_or(
        label: &'static str,
        header: Option<String>,
        may: impl Fn(&str, &str) -> bool + 'a,
        otherwise: Want,
    ) -> Who<'a> {
        Who { label, header, want: Box::new(move |r, a| if may(r, a) { Want::Allowed } else { otherwise.clone() }) }
    }

    /// Credentials that are no good anywhere: 401 `invalid_token`.
    fn invalid(label: &'static str, header: String) -> Who<'a> {
        Who { label, header: Some(header), want: Box::new(|_, _| Want::Unauthorized { error: Some("invalid_token") }) }
    }
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

// ---------------------------------------------------------------------------
// htpasswd set-up and shared helpers
// ---------------------------------------------------------------------------

/// An `[[access]]` table: `who` is its `users`, `groups` or `anyone` line.
fn access_rule(repository: &str, actions: &[&str], who: &str) -> String {
    format!("\n[[access]]\nrepository = \"{repository}\"\nactions = {actions:?}\n{who}\n")
}

/// The access rules of the htpasswd set-up (see `htpasswd_model`).
fn htpasswd_access() -> String {
    [
        access_rule("myorg/**", &["pull", "push", "delete"], r#"users = ["alice"]"#),
        access_rule("myorg/**", &["pull"], r#"anyone = "authenticated""#),
        access_rule("public/*", &["pull"], r#"anyone = "anonymous""#),
        access_rule("public/*", &["pull", "push"], r#"users = ["alice"]"#),
        access_rule("private/**", &["pull", "push"], r#"users = ["alice"]"#),
        access_rule("bob/**", &["pull", "push", "delete"], r#"users = ["bob"]"#),
    ]
    .concat()
}

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
         htpasswd_file = \"@DIR@/htpasswd\"\n{extra_auth}\n{}",
        htpasswd_access()
    )
}

/// Runs a command expected to fail; returns its combined output.
fn run_fail(cmd: &mut Command) -> String {
    let out = cmd.stdin(std::process::Stdio::null()).output().expect("spawn");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{cmd:?} should have failed:\n{text}");
    text
}
