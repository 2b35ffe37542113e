//! AuthService: trusted networks and X-Forwarded-For, challenges, the token
//! endpoint and scope enforcement, the policy matrix, config validation.
#![allow(clippy::unwrap_used)]

use cove_auth::config::validate;
use cove_auth::{AccessRule, AuthConfig, AuthService, DefaultPolicy, RulePolicy};
use cove_core::{AccessPolicy, Action, Challenge, ChallengeError, ErrorCode, Identity, RegistryError, RepoName};
use cove_testkit::suites::auth::*;
use cove_testkit::util::basic;

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn bearer_challenge(scopes: &[&str], error: Option<ChallengeError>) -> Challenge {
    Challenge::Bearer {
        realm: "http://127.0.0.1:5000/token".into(),
        service: Some("cove".into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        error,
    }
}

fn basic_cove() -> Challenge {
    Challenge::Basic { realm: "cove".into() }
}

fn bearer_error(e: &RegistryError) -> Option<ChallengeError> {
    match challenge(e) {
        Some(Challenge::Bearer { error, .. }) => *error,
        _ => None,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    access: Vec<AccessRule>,
}

fn parse(toml_text: &str) -> Doc {
    toml::from_str(toml_text).unwrap()
}

async fn service(toml_text: &str, public_url: Option<&str>) -> AuthService {
    let d = parse(toml_text);
    AuthService::from_config(&d.auth, &d.access, &["docker.io".into(), "ghcr.io".into()], public_url).await.unwrap()
}

async fn htpasswd_service(extra: &str) -> (AuthService, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(
        &path,
        format!("alice:{}\nbob:{}\n", bcrypt::hash("alice-pw", 4).unwrap(), bcrypt::hash("bob-pw", 4).unwrap()),
    )
    .unwrap();
    let text = format!("[auth]\nkind = \"htpasswd\"\nhtpasswd_file = {:?}\n{extra}", path.display().to_string());
    (service(&text, Some("http://127.0.0.1:5000")).await, dir)
}

// --- network boundary --------------------------------------------------------

#[tokio::test]
async fn default_trusted_networks_admit_private_ranges_only() {
    let svc = service("", None).await;
    let r = repo("myorg/app");
    for ok in [
        "127.0.0.1",
        "10.1.2.3",
        "172.20.0.1",
        "192.168.1.1",
        "100.100.1.1",
        "::1",
        "fd7a:115c:a1e0::1",
        "::ffff:192.168.0.9",
    ] {
        let id = svc.authorize(&req(ok, None, None), Some((&r, Action::Push))).await.unwrap();
        assert_eq!(id, Identity::Anonymous, "{ok}");
    }
    for bad in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
        let e = svc.authorize(&req(bad, None, None), Some((&r, Action::Pull))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Denied, "{bad}");
        assert!(e.message.contains("auth.trusted_networks"), "{}", e.message);
        // Credentials cannot help: no challenge.
        assert!(challenge(&e).is_none());
    }
    // The network kind ignores credentials and needs no login for /v2/.
    let h = basic("x", "y");
    svc.authorize(&req("10.0.0.1", Some(&h), None), None).await.unwrap();
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let svc = service(
        "[auth]\ntrusted_networks = [\"100.64.0.0/10\", \"127.0.0.2\"]\ntrusted_proxies = [\"127.0.0.1\", \"10.9.0.0/16\"]\n",
        None,
    )
    .await;
    let r = repo("a");
    let ok = |peer: &'static str, xff: &'static str| {
        let svc = &svc;
        let r = &r;
        async move { svc.authorize(&req(peer, None, Some(xff)), Some((r, Action::Pull))).await }
    };
    // From the trusted proxy, the client is the right-most non-proxy entry.
    ok("127.0.0.1", "100.64.1.1").await.unwrap();
    ok("127.0.0.1", "8.8.8.8, 100.64.1.1").await.unwrap(); // spoofed left entry ignored
    ok("127.0.0.1", "100.64.1.1, 10.9.1.1").await.unwrap(); // chain of proxies skipped
    assert_eq!(ok("127.0.0.1", "100.64.1.1, 8.8.8.8").await.unwrap_err().code, ErrorCode::Denied);
    assert_eq!(ok("127.0.0.1", "not-an-ip").await.unwrap_err().code, ErrorCode::Denied);
    // The proxy itself is not a trusted network: without the header it is refused.
    let e = svc.authorize(&req("127.0.0.1", None, None), Some((&r, Action::Pull))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied);
    // From a peer that is not a proxy, the header is not believed: it cannot
    // admit an untrusted peer, and it can only refuse a trusted one (a
    // reverse proxy missing from trusted_proxies must not open the registry).
    ok("127.0.0.2", "100.64.1.1").await.unwrap();
    let e = ok("127.0.0.2", "8.8.8.8").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied);
    assert!(e.message.contains("auth.trusted_proxies") && e.message.contains("8.8.8.8"), "{}", e.message);
    assert_eq!(ok("8.8.8.8", "100.64.1.1").await.unwrap_err().code, ErrorCode::Denied);
}

/// With the defaults, a reverse proxy on the same host (a loopback peer) is
/// believed: the internet client it forwards for is refused, a LAN client
/// admitted, whichever header carries the address.
#[tokio::test]
async fn by_default_a_local_proxy_forwards_the_client_that_is_judged() {
    let svc = service("", None).await;
    let r = repo("a");
    let check = |xff: Option<&'static str>, fwd: Option<&'static str>| {
        let svc = &svc;
        let r = &r;
        async move {
            let mut q = req("127.0.0.1", None, xff);
            q.forwarded = fwd;
            svc.authorize(&q, Some((r, Action::Push))).await
        }
    };
    check(None, None).await.unwrap();
    let e = check(Some("203.0.113.9"), None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied);
    assert!(e.message.contains("203.0.113.9") && e.message.contains("auth.trusted_networks"), "{}", e.message);
    check(Some("192.168.1.20"), None).await.unwrap();
    check(Some("100.101.102.103"), None).await.unwrap();
    assert!(check(None, Some("for=203.0.113.9;proto=https")).await.is_err());
    check(None, Some("for=\"[fd00::5]:443\"")).await.unwrap();
    // A client's own Forwarded header, passed through by the proxy, cannot
    // launder the address the proxy put in X-Forwarded-For.
    assert!(check(Some("203.0.113.9"), Some("for=192.168.1.20")).await.is_err());
    assert!(check(Some("::1"), Some("for=unknown")).await.is_err());
    // `trusted_proxies = []` believes no one: the loopback peer is the client.
    let none = service("[auth]\ntrusted_proxies = []\n", None).await;
    let e = none.authorize(&req("127.0.0.1", None, Some("10.0.0.1")), Some((&r, Action::Pull))).await;
    assert!(e.is_ok(), "a trusted peer forwarding for a trusted client is admitted");
    let e = none.authorize(&req("127.0.0.1", None, Some("203.0.113.9")), Some((&r, Action::Pull))).await.unwrap_err();
    assert!(e.message.contains("auth.trusted_proxies"), "{}", e.message);
}

// --- challenges and htpasswd through the service ----------------------------

#[tokio::test]
async fn unauthenticated_requests_get_a_bearer_challenge_with_scope() {
    let (svc, _d) = htpasswd_service("").await;
    let r = repo("myorg/app");
    let e = svc.authorize(&req("127.0.0.1", None, None), Some((&r, Action::Push))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert_eq!(challenge(&e), Some(&bearer_challenge(&["repository:myorg/app:pull,push"], None)));
    // /v2/ without credentials: 401 with a scope-less challenge.
    let e = svc.authorize(&req("127.0.0.1", None, None), None).await.unwrap_err();
    assert_eq!(challenge(&e), Some(&bearer_challenge(&[], None)));
    // Basic sent directly works.
    let h = basic("alice", "alice-pw");
    let id = svc.authorize(&req("127.0.0.1", Some(&h), None), Some((&r, Action::Delete))).await.unwrap();
    assert_eq!(id.name(), Some("alice"));
    // A wrong password: 401 with challenge, body without the password.
    let h = basic("alice", "wrong-pw-123");
    let e = svc.authorize(&req("127.0.0.1", Some(&h), None), Some((&r, Action::Pull))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert_eq!(
        challenge(&e),
        Some(&bearer_challenge(&["repository:myorg/app:pull"], Some(ChallengeError::InvalidToken)))
    );
    assert!(!e.message.contains("wrong-pw-123") && !format!("{:?}", e.detail).contains("wrong-pw-123"));
}

#[tokio::test]
async fn without_a_public_url_the_challenge_is_basic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("pw", 4).unwrap())).unwrap();
    let svc =
        service(&format!("[auth]\nkind = \"htpasswd\"\nhtpasswd_file = {:?}\n", path.display().to_string()), None)
            .await;
    let e = svc.authorize(&req("127.0.0.1", None, None), None).await.unwrap_err();
    assert_eq!(challenge(&e), Some(&basic_cove()));
}

// --- token endpoint -------------------------------------------------------------

#[tokio::test]
async fn token_endpoint_issues_scoped_tokens_that_are_enforced() {
    let rules =
        "[[access]]\nrepository = \"myorg/**\"\nactions = [\"pull\", \"push\", \"delete\"]\nusers = [\"alice\"]\n\
                 [[access]]\nrepository = \"myorg/**\"\nactions = [\"pull\"]\nanyone = \"authenticated\"\n";
    let (svc, _d) = htpasswd_service(rules).await;
    let app = repo("myorg/app");
    let other = repo("other/thing");

    // alice asks for pull,push on myorg/app and pull on other/thing.
    let h = basic("alice", "alice-pw");
    let t = svc
        .token(
            "service=cove&scope=repository:myorg/app:pull,push&scope=repository:other/thing:pull&account=alice",
            &req("127.0.0.1", Some(&h), None),
        )
        .await
        .unwrap();
    let j = t.to_json();
    assert_eq!(j["token"], j["access_token"]);
    assert_eq!(j["expires_in"], 300);
    assert!(j["issued_at"].as_str().unwrap().ends_with('Z'));
    assert!(!format!("{t:?}").contains(&t.token), "Debug must redact the token");

    let bearer = format!("Bearer {}", t.token);
    let with = |r: &RepoName, a: Action| {
        let (svc, bearer, r) = (&svc, bearer.clone(), r.clone());
        async move { svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&r, a))).await }
    };
    assert_eq!(with(&app, Action::Push).await.unwrap().name(), Some("alice"));
    with(&app, Action::Pull).await.unwrap();
    with(&other, Action::Pull).await.unwrap();
    // Not in the token but allowed by policy: 401 insufficient_scope with the scope to ask for.
    let e = with(&app, Action::Delete).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert_eq!(
        challenge(&e),
        Some(&bearer_challenge(&["repository:myorg/app:delete"], Some(ChallengeError::InsufficientScope)))
    );
    // A cached upstream namespace is pull-only by default, even for alice: 403.
    let up = repo("docker.io/library/alpine");
    let e = with(&up, Action::Push).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied);

    // bob asks for push on myorg/app: granted only pull.
    let h = basic("bob", "bob-pw");
    let t = svc.token("scope=repository:myorg/app:pull,push,delete", &req("127.0.0.1", Some(&h), None)).await.unwrap();
    let bearer = format!("Bearer {}", t.token);
    svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Pull))).await.unwrap();
    let e = svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Push))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied, "policy denies bob push: credentials cannot help");

    // Anonymous token: nothing granted under the htpasswd default.
    let t = svc.token("scope=repository:myorg/app:pull", &req("127.0.0.1", None, None)).await.unwrap();
    let bearer = format!("Bearer {}", t.token);
    let e = svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Pull))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized, "anonymous may log in");
    // ...but an anonymous token does pass the /v2/ check.
    svc.authorize(&req("127.0.0.1", Some(&bearer), None), None).await.unwrap();

    // Wrong password at the token endpoint: 401 with a Basic challenge.
    let h = basic("alice", "nope");
    let e = svc.token("scope=repository:myorg/app:pull", &req("127.0.0.1", Some(&h), None)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert_eq!(challenge(&e), Some(&basic_cove()));

    // A tampered token is refused.
    let h = basic("alice", "alice-pw");
    let t = svc.token("scope=repository:myorg/app:pull", &req("127.0.0.1", Some(&h), None)).await.unwrap();
    // Flip the first character of the signature (a whole 6-bit group, no padding bits).
    let sig_start = t.token.rfind('.').unwrap() + 1;
    let mut forged = t.token.clone();
    let c = if t.token[sig_start..].starts_with('A') { "B" } else { "A" };
    forged.replace_range(sig_start..sig_start + 1, c);
    let bearer = format!("Bearer {forged}");
    let e = svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Pull))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn anonymous_tokens_carry_only_what_anonymous_may_do() {
    let (svc, _d) = htpasswd_service("default_policy = \"anonymous-pull\"\n").await;
    let app = repo("myorg/app");
    let t = svc.token("scope=repository:myorg/app:pull,push", &req("127.0.0.1", None, None)).await.unwrap();
    let bearer = format!("Bearer {}", t.token);
    assert_eq!(
        svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Pull))).await.unwrap(),
        Identity::Anonymous
    );
    let e = svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Push))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized, "anonymous push: log in");
    // Without any token, anonymous pull works directly too.
    svc.authorize(&req("127.0.0.1", None, None), Some((&app, Action::Pull))).await.unwrap();
}

#[tokio::test]
async fn tokens_expire() {
    let (svc, _d) = htpasswd_service("[auth.token]\nlifetime = \"1s\"\n").await;
    let app = repo("myorg/app");
    let h = basic("alice", "alice-pw");
    let t = svc.token("scope=repository:myorg/app:pull", &req("127.0.0.1", Some(&h), None)).await.unwrap();
    let bearer = format!("Bearer {}", t.token);
    svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Pull))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(7)).await; // lifetime + 5 s leeway
    let e = svc.authorize(&req("127.0.0.1", Some(&bearer), None), Some((&app, Action::Pull))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert_eq!(bearer_error(&e), Some(ChallengeError::InvalidToken));
}

#[tokio::test]
async fn cross_repository_mount_checks_pull_on_the_source() {
    let rules = "[[access]]\nrepository = \"secret/**\"\nactions = [\"pull\"]\nusers = [\"alice\"]\n";
    let (svc, _d) = htpasswd_service(rules).await;
    let target = repo("bob/app");
    let source = repo("secret/app");
    let h = basic("bob", "bob-pw");
    let r = req("127.0.0.1", Some(&h), None);
    svc.authorize(&r, Some((&target, Action::Push))).await.unwrap();
    assert!(!svc.may_mount_from(&r, &source).await);
    let e = svc.authorize_all(&r, &[(&target, Action::Push), (&source, Action::Pull)]).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Denied);
    let h = basic("alice", "alice-pw");
    assert!(svc.may_mount_from(&req("127.0.0.1", Some(&h), None), &source).await);
}

#[tokio::test]
async fn catalog_is_filtered_to_what_the_identity_may_pull() {
    let rules = "[[access]]\nrepository = \"team-a/**\"\nactions = [\"pull\", \"push\"]\ngroups = [\"team-a\"]\n";
    let (svc, _d) = htpasswd_service(rules).await;
    let alice = Identity::User { name: "alice".into(), groups: vec![] };
    let member = Identity::User { name: "carol".into(), groups: vec!["team-a".into()] };
    assert!(!svc.visible_in_catalog(&alice, &repo("team-a/app")));
    assert!(svc.visible_in_catalog(&member, &repo("team-a/app")));
    assert!(svc.visible_in_catalog(&alice, &repo("public/app")));
    assert!(!svc.visible_in_catalog(&Identity::Anonymous, &repo("public/app")));
}

// --- policy matrix ----------------------------------------------------------------

#[test]
fn policy_matrix() {
    let d = parse(
        "[[access]]\nrepository = \"myorg/**\"\nactions = [\"pull\", \"push\", \"delete\"]\nusers = [\"alice\"]\n\
         [[access]]\nrepository = \"myorg/**\"\nactions = [\"pull\"]\nanyone = \"authenticated\"\n\
         [[access]]\nrepository = \"public/*\"\nactions = [\"pull\"]\nanyone = \"anonymous\"\n\
         [[access]]\nrepository = \"public/*\"\nactions = [\"push\"]\ngroups = [\"publishers\"]\n\
         [[access]]\nrepository = \"docker.io/**\"\nactions = [\"delete\"]\nusers = [\"admin\"]\n",
    );
    let upstreams = vec!["docker.io".to_owned(), "ghcr.io".to_owned()];
    let alice = Identity::User { name: "alice".into(), groups: vec![] };
    let bob = Identity::User { name: "bob".into(), groups: vec!["publishers".into()] };
    let admin = Identity::User { name: "admin".into(), groups: vec![] };
    let anon = Identity::Anonymous;
    use Action::*;
    // (default, identity, repo, [pull, push, delete])
    let cases: Vec<(DefaultPolicy, &Identity, &str, [bool; 3])> = vec![
        (DefaultPolicy::Authenticated, &alice, "myorg/app", [true, true, true]),
        (DefaultPolicy::Authenticated, &bob, "myorg/app", [true, false, false]),
        (DefaultPolicy::Authenticated, &anon, "myorg/app", [false, false, false]),
        (DefaultPolicy::Authenticated, &anon, "public/x", [true, false, false]),
        (DefaultPolicy::Authenticated, &bob, "public/x", [true, true, false]),
        (DefaultPolicy::Authenticated, &alice, "public/x", [true, false, false]),
        (DefaultPolicy::Authenticated, &alice, "public/x/y", [true, true, true]), // '*' is one component
        (DefaultPolicy::Authenticated, &alice, "elsewhere/app", [true, true, true]),
        (DefaultPolicy::Authenticated, &anon, "elsewhere/app", [false, false, false]),
        (DefaultPolicy::Authenticated, &alice, "ghcr.io/o/r", [true, false, false]), // upstream: pull-only
        (DefaultPolicy::Authenticated, &anon, "ghcr.io/o/r", [false, false, false]),
        (DefaultPolicy::Authenticated, &admin, "docker.io/library/alpine", [false, false, true]), // explicit rule
        (DefaultPolicy::Authenticated, &alice, "docker.io/library/alpine", [false, false, false]),
        (DefaultPolicy::AllowAll, &anon, "elsewhere/app", [true, true, true]),
        (DefaultPolicy::AllowAll, &anon, "ghcr.io/o/r", [true, false, false]),
        (DefaultPolicy::AllowAll, &anon, "myorg/app", [false, false, false]), // rules govern myorg
        (DefaultPolicy::AnonymousPull, &anon, "elsewhere/app", [true, false, false]),
        (DefaultPolicy::AnonymousPull, &alice, "elsewhere/app", [true, true, true]),
        (DefaultPolicy::Deny, &alice, "elsewhere/app", [false, false, false]),
        (DefaultPolicy::Deny, &alice, "myorg/app", [true, true, true]),
    ];
    for (default, id, r, want) in cases {
        let p = RulePolicy::new(&d.access, default, &upstreams).unwrap();
        let got = [Pull, Push, Delete].map(|a| p.allows(id, a, &repo(r)));
        assert_eq!(got, want, "{default:?} {id:?} {r}");
    }
}

// --- config -------------------------------------------------------------------------

#[test]
fn config_defaults_and_examples_parse() {
    let d = parse("");
    assert_eq!(d.auth.kind, cove_auth::AuthKind::Network);
    assert_eq!(d.auth.trusted_networks.len(), 7);
    assert_eq!(d.auth.effective_default_policy(), DefaultPolicy::AllowAll);
    assert_eq!(d.auth.token.lifetime, std::time::Duration::from_secs(300));
    assert!(validate(&d.auth, &d.access).is_empty());

    let oidc = parse(
        "[auth]\nkind = \"oidc\"\ntrusted_networks = [\"0.0.0.0/0\", \"::/0\"]\n\
         [auth.oidc]\nissuer = \"https://token.actions.githubusercontent.com\"\naudience = \"cove\"\n\
         username_claim = \"repository\"\n\
         [[access]]\nrepository = \"ci/**\"\nactions = [\"pull\", \"push\"]\nusers = [\"myorg/app\"]\n",
    );
    assert!(validate(&oidc.auth, &oidc.access).is_empty());
    assert_eq!(oidc.auth.effective_default_policy(), DefaultPolicy::Authenticated);
    assert_eq!(oidc.auth.oidc.as_ref().unwrap().groups_claim, "groups");

    assert!(toml::from_str::<Doc>("[auth]\nkindd = \"network\"\n").is_err(), "unknown keys are refused");
}

#[test]
fn validation_reports_every_problem_with_its_path() {
    let d = parse(
        "[auth]\nkind = \"htpasswd\"\ntrusted_networks = [\"10.0.0.0/33\", \"lan\"]\ntrusted_proxies = [\"x\"]\n\
         [auth.token]\nlifetime = \"0s\"\n\
         [auth.oidc]\nissuer = \"http://idp.example.com\"\naudience = \"\"\nalgorithms = [\"HS256\", \"none\"]\n\
         [[access]]\nrepository = \"Bad/**x\"\nactions = [\"pull\", \"write\"]\n\
         [[access]]\nrepository = \"ok/**\"\nactions = []\nusers = [\"a\"]\n",
    );
    let problems = validate(&d.auth, &d.access);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "auth.trusted_networks[0]",
        "auth.trusted_networks[1]",
        "auth.trusted_proxies[0]",
        "auth.htpasswd_file",
        "auth.token.lifetime",
        "auth.oidc.issuer",
        "auth.oidc.audience",
        "auth.oidc.algorithms[0]",
        "auth.oidc.algorithms[1]",
        "access[0].repository",
        "access[0].actions[1]",
        "access[0]",
        "access[1].actions",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
}

#[test]
fn readme_examples_parse_and_validate() {
    let readme = include_str!("../README.md");
    let blocks: Vec<&str> = readme.split("```toml").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 3, "the three set-ups");
    for b in blocks {
        let d = parse(b);
        let problems = validate(&d.auth, &d.access);
        assert!(problems.is_empty(), "{problems:?} in\n{b}");
    }
}
