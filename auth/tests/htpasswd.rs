//! htpasswd: real bcrypt and SHA-crypt hashes, reload on change, the
//! verification cache (with measured latency) and failed-login rate limiting.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cove_auth::{AuthConfig, AuthService, HtpasswdAuthenticator, HtpasswdError, HtpasswdOptions};
use cove_core::{Action, Authenticator, ErrorCode, RepoName};
use cove_testkit::oidc::*;
use cove_testkit::suites::auth::*;
use cove_testkit::util::basic;
use sha_crypt::PasswordHasher as _;

fn opts(cache: Duration) -> HtpasswdOptions {
    HtpasswdOptions { cache_ttl: cache, reload_interval: Duration::from_millis(0), realm: "cove".into() }
}

async fn login(a: &dyn Authenticator, user: &str, pw: &str) -> bool {
    let h = basic(user, pw);
    a.authenticate(&req("127.0.0.1", Some(&h), None)).await.is_ok()
}

#[tokio::test]
async fn bcrypt_and_sha_crypt_hashes_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let b2b = bcrypt::hash("pw-b", 6).unwrap(); // $2b$
    let b2y = bcrypt::hash_with_result("pw-y", 6).unwrap().format_for_version(bcrypt::Version::TwoY);
    let b2a = bcrypt::hash_with_result("pw-a", 6).unwrap().format_for_version(bcrypt::Version::TwoA);
    let sha512 = sha_crypt::ShaCrypt::SHA512.hash_password_with_salt(b"pw-6", b"saltsalt").unwrap().to_string();
    let sha256 = sha_crypt::ShaCrypt::SHA256.hash_password_with_salt(b"pw-5", b"saltsalt").unwrap().to_string();
    // Independent implementation: OpenSSL's SHA-crypt.
    let ossl6 = openssl(&["passwd", "-6", "-salt", "Cove1234", "pw-o6"]).trim().to_owned();
    let ossl5 = openssl(&["passwd", "-5", "-salt", "Cove1234", "pw-o5"]).trim().to_owned();
    assert!(
        b2y.starts_with("$2y$") && b2a.starts_with("$2a$") && sha512.starts_with("$6$") && sha256.starts_with("$5$")
    );
    std::fs::write(
        &path,
        format!("# users\nb2b:{b2b}\nb2y:{b2y}\nb2a:{b2a}\ns6:{sha512}\ns5:{sha256}\no6:{ossl6}\no5:{ossl5}\n"),
    )
    .unwrap();
    let a = HtpasswdAuthenticator::open(&path, opts(Duration::ZERO)).await.unwrap();
    assert_eq!(a.user_count(), 7);
    for (u, pw) in [
        ("b2b", "pw-b"),
        ("b2y", "pw-y"),
        ("b2a", "pw-a"),
        ("s6", "pw-6"),
        ("s5", "pw-5"),
        ("o6", "pw-o6"),
        ("o5", "pw-o5"),
    ] {
        assert!(login(&a, u, pw).await, "{u} with the right password");
        assert!(!login(&a, u, "nope").await, "{u} with a wrong password");
    }
    // If Apache's htpasswd is installed, its bcrypt output must verify too.
    if let Ok(out) = std::process::Command::new("htpasswd").args(["-nbB", "apache", "pw-apache"]).output() {
        if out.status.success() {
            let line = String::from_utf8(out.stdout).unwrap();
            std::fs::write(&path, line.trim()).unwrap();
            let a = HtpasswdAuthenticator::open(&path, opts(Duration::ZERO)).await.unwrap();
            assert!(login(&a, "apache", "pw-apache").await);
        }
    }
}

#[tokio::test]
async fn weak_schemes_are_refused_at_load_naming_user_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let apr1 = openssl(&["passwd", "-apr1", "-salt", "abcdefgh", "pw"]).trim().to_owned();
    let md5 = openssl(&["passwd", "-1", "-salt", "abcdefgh", "pw"]).trim().to_owned();
    let good = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(
        &path,
        format!("ok:{good}\nold:{apr1}\nolder:{md5}\nsha:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\nplain:secret-plain\n"),
    )
    .unwrap();
    let err = HtpasswdAuthenticator::open(&path, opts(Duration::ZERO)).await.unwrap_err();
    let HtpasswdError::Invalid { problems, .. } = &err else { panic!("{err}") };
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].contains("line 2") && problems[0].contains("\"old\"") && problems[0].contains("$apr1$"));
    assert!(problems[1].contains("line 3") && problems[1].contains("\"older\""));
    assert!(problems[2].contains("line 4") && problems[2].contains("{SHA}"));
    assert!(problems[3].contains("line 5") && problems[3].contains("\"plain\""));
    assert!(!err.to_string().contains("secret-plain"), "the error must not show the password");
}

#[tokio::test]
async fn file_changes_are_picked_up_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("one", 4).unwrap())).unwrap();
    let a = HtpasswdAuthenticator::open(&path, opts(Duration::from_secs(60))).await.unwrap();
    assert!(login(&a, "alice", "one").await);
    // Change alice's password and add bob (length differs, so even a coarse mtime is not needed).
    std::fs::write(
        &path,
        format!("alice:{}\nbob:{}\n", bcrypt::hash("two", 4).unwrap(), bcrypt::hash("b", 4).unwrap()),
    )
    .unwrap();
    assert!(login(&a, "alice", "two").await, "new password accepted after reload");
    assert!(!login(&a, "alice", "one").await, "old password (even cached) refused after reload");
    assert!(login(&a, "bob", "b").await);
    // An invalid edit keeps the previous users.
    std::fs::write(&path, "alice:plaintext-now\n").unwrap();
    assert!(login(&a, "alice", "two").await, "invalid file keeps the last good users");
    assert_eq!(a.user_count(), 2);
}

async fn mean_latency(a: &dyn Authenticator, n: u32) -> Duration {
    let h = basic("alice", "s3cret-pass");
    // The first request of a pull always pays one verification; measure the rest.
    a.authenticate(&req("127.0.0.1", Some(&h), None)).await.unwrap();
    let start = Instant::now();
    for _ in 0..n {
        a.authenticate(&req("127.0.0.1", Some(&h), None)).await.unwrap();
    }
    start.elapsed() / n
}

#[tokio::test]
async fn verification_cache_makes_repeat_requests_cheap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    // Cost 10: a common production cost (bcrypt crate default is 12, htpasswd -B uses 5).
    std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("s3cret-pass", 10).unwrap())).unwrap();
    let mut o = opts(Duration::from_secs(60));
    o.reload_interval = Duration::from_secs(1);
    let cached = HtpasswdAuthenticator::open(&path, o.clone()).await.unwrap();
    o.cache_ttl = Duration::ZERO;
    let uncached = HtpasswdAuthenticator::open(&path, o).await.unwrap();
    let n = 30; // a 30-layer pull
    let off = mean_latency(&uncached, n).await;
    let on = mean_latency(&cached, n).await;
    eprintln!("htpasswd bcrypt cost 10, {n} requests: mean auth latency after the first request: cache off {off:?}, cache on {on:?}");
    assert!(on * 10 < off, "cache on {on:?} should be far below cache off {off:?}");
    // A wrong password is never served from the cache.
    assert!(!login(&cached, "alice", "s3cret-pasS").await);
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    std::fs::write(&path, format!("alice:{}\n", bcrypt::hash("right", 4).unwrap())).unwrap();
    let cfg: AuthConfig = toml::from_str(&format!(
        "kind = \"htpasswd\"\nhtpasswd_file = {:?}\n[rate_limit]\nmax_failures = 3\nwindow = \"60s\"\n",
        path.display().to_string()
    ))
    .unwrap();
    let svc = Arc::new(AuthService::from_config(&cfg, &[], &[], None).await.unwrap());
    let repo: RepoName = "myorg/app".parse().unwrap();
    let bad = basic("alice", "wrong");
    let good = basic("alice", "right");
    for _ in 0..3 {
        let e = svc.authorize(&req("10.0.0.7", Some(&bad), None), Some((&repo, Action::Pull))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
    }
    let e = svc.authorize(&req("10.0.0.7", Some(&good), None), Some((&repo, Action::Pull))).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TooManyRequests, "blocked even with the right password");
    let retry = retry_after(&e).expect("Retry-After").as_secs_f64();
    assert!((0.5..=60.0).contains(&retry), "{retry}");
    // Another source is unaffected.
    svc.authorize(&req("10.0.0.8", Some(&good), None), Some((&repo, Action::Pull))).await.unwrap();
    // The token endpoint shares the limit.
    let e = svc
        .token("service=cove&scope=repository:myorg/app:pull", &req("10.0.0.7", Some(&good), None))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TooManyRequests);
}
