//! `OciUpstream` against a registry server that misbehaves on purpose:
//! 5xx, 429 + Retry-After, truncated, oversized and slow bodies, bad links.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream_from_toml;
use cove_core::upstream::UpstreamError;
use cove_core::Upstream;
use cove_testkit::fault::{BodyMode, FaultServer, Reply, Request};
use cove_testkit::oci::{OCI_INDEX, OCI_MANIFEST};
use cove_testkit::util::{digest, free_port, random_bytes, reference, repo, sha256_digest, try_read_all};
use cove_upstreams::OciUpstream;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

fn upstream(server: &FaultServer, extra: &str) -> OciUpstream {
    upstream_from_toml("faulty.example", &format!("url = \"{}\"\n{extra}", server.url()))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

fn manifest_reply() -> Reply {
    Reply::new(200, MANIFEST)
        .header("Content-Type", OCI_MANIFEST)
        .header("Docker-Content-Digest", sha256_digest(MANIFEST))
}

/// Fails the first `n` requests with `fail`, then answers `ok`.
fn fail_first(n: usize, fail: Reply, ok: Reply) -> impl Fn(&Request) -> Reply + Send + Sync {
    let seen = AtomicUsize::new(0);
    move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < n {
            fail.clone()
        } else {
            ok.clone()
        }
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let s = FaultServer::start(fail_first(2, Reply::new(503, "busy"), manifest_reply())).await;
    let up = upstream(&s, "retries = 3");
    let m = up.get_manifest(&repo("a/b"), &reference("latest")).await.expect("third attempt succeeds");
    assert_eq!(m.bytes.as_deref(), Some(MANIFEST));
    assert_eq!(m.digest.to_string(), sha256_digest(MANIFEST));
    assert_eq!(s.count_prefix("GET /v2/a/b/manifests/latest"), 3);
    // Every request asked for the manifest types Cove accepts.
    for r in s.requests() {
        let accept = r.header("accept").expect("Accept");
        for t in [
            OCI_MANIFEST,
            OCI_INDEX,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ] {
            assert!(accept.contains(t), "{accept}");
        }
    }

    // A blob GET is retried while no byte has been handed out.
    let blob = b"blob bytes".to_vec();
    let s = FaultServer::start(fail_first(1, Reply::new(502, "bad gateway"), Reply::new(200, blob.clone()))).await;
    let up = upstream(&s, "retries = 3");
    let b = up.get_blob(&repo("a/b"), &digest(&sha256_digest(&blob))).await.expect("blob after retry");
    assert_eq!(try_read_all(b.stream).await.expect("body"), blob);
    assert_eq!(s.count_prefix("GET /v2/a/b/blobs/"), 2);
}

#[tokio::test]
async fn retries_are_bounded() {
    let s = FaultServer::start(|_| Reply::new(500, "down")).await;
    let up = upstream(&s, "retries = 2");
    let d = digest(&sha256_digest(b"x"));
    assert!(matches!(up.get_manifest(&repo("a"), &reference("t")).await, Err(UpstreamError::Unavailable(_))));
    assert_eq!(s.count_prefix("GET /v2/a/manifests/t"), 3);
    assert!(matches!(up.head_blob(&repo("a"), &d).await, Err(UpstreamError::Unavailable(_))));
    assert_eq!(s.count_prefix("HEAD /v2/a/blobs/"), 3);
    assert!(matches!(up.get_blob(&repo("a"), &d).await, Err(UpstreamError::Unavailable(_))));
    assert_eq!(s.count_prefix("GET /v2/a/blobs/"), 3);
    assert!(matches!(up.tags(&repo("a")).await, Err(UpstreamError::Unavailable(_))));
    assert_eq!(s.count_prefix("GET /v2/a/tags/list"), 3);

    let s = FaultServer::start(|_| Reply::new(500, "down")).await;
    let up = upstream(&s, "retries = 0");
    assert!(up.head_manifest(&repo("a"), &reference("t")).await.is_err());
    assert_eq!(s.requests().len(), 1, "retries = 0 means one attempt");
}

#[tokio::test]
async fn not_found_and_unauthorized_are_not_retried() {
    let s = FaultServer::start(|r| match r.path() {
        p if p.starts_with("/v2/nf/") => Reply::new(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
        p if p.starts_with("/v2/basic/") => Reply::new(401, "").header("WWW-Authenticate", "Basic realm=\"r\""),
        p if p.starts_with("/v2/forbidden/") => Reply::new(403, ""),
        _ => Reply::new(401, ""),
    })
    .await;
    let up = upstream(&s, "retries = 3");
    let t = reference("t");
    assert!(matches!(up.get_manifest(&repo("nf"), &t).await, Err(UpstreamError::NotFound)));
    assert_eq!(s.count_prefix("GET /v2/nf/"), 1);
    assert!(matches!(up.get_manifest(&repo("nochallenge"), &t).await, Err(UpstreamError::Unauthorized(_))));
    assert_eq!(s.count_prefix("GET /v2/nochallenge/"), 1);
    assert!(matches!(up.get_manifest(&repo("basic"), &t).await, Err(UpstreamError::Unauthorized(_))));
    assert_eq!(s.count_prefix("GET /v2/basic/"), 1, "no credentials: nothing to answer with");
    assert!(matches!(up.get_manifest(&repo("forbidden"), &t).await, Err(UpstreamError::Unauthorized(_))));
    assert_eq!(s.count_prefix("GET /v2/forbidden/"), 1);
}

#[tokio::test]
async fn too_many_requests() {
    // A short Retry-After is waited out.
    let s =
        FaultServer::start(fail_first(1, Reply::new(429, "slow down").header("Retry-After", "1"), manifest_reply()))
            .await;
    let up = upstream(&s, "retries = 3");
    let t0 = Instant::now();
    up.get_manifest(&repo("a"), &reference("t")).await.expect("after waiting");
    assert!(t0.elapsed() >= Duration::from_millis(950), "{:?}", t0.elapsed());
    assert_eq!(s.requests().len(), 2);

    // A long one goes back to the caller at once, with the header value.
    let s = FaultServer::start(|_| Reply::new(429, "").header("Retry-After", "120")).await;
    let up = upstream(&s, "retries = 3");
    let t0 = Instant::now();
    match up.head_manifest(&repo("a"), &reference("t")).await {
        Err(UpstreamError::TooManyRequests { retry_after }) => {
            assert_eq!(retry_after.as_deref(), Some("120"))
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(s.requests().len(), 1);

    // Without Retry-After: no hammering either.
    let s = FaultServer::start(|_| Reply::new(429, "")).await;
    let up = upstream(&s, "retries = 3");
    assert!(matches!(
        up.get_blob(&repo("a"), &digest(&sha256_digest(b"x"))).await,
        Err(UpstreamError::TooManyRequests { retry_after: None })
    ));
    assert_eq!(s.requests().len(), 1);

    // The cap is configurable: with 0, even 1 s goes back to the caller.
    let s = FaultServer::start(|_| Reply::new(429, "").header("Retry-After", "1")).await;
    let up = upstream(&s, "retries = 3").with_max_retry_after(Duration::ZERO);
    assert!(matches!(up.tags(&repo("a")).await, Err(UpstreamError::TooManyRequests { retry_after: Some(_) })));
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn truncated_bodies() {
    // A manifest cut short is transient: retried, then Unavailable.
    let s = FaultServer::start(|_| manifest_reply().mode(BodyMode::Truncate(20))).await;
    let up = upstream(&s, "retries = 1");
    assert!(matches!(up.get_manifest(&repo("a"), &reference("t")).await, Err(UpstreamError::Unavailable(_))));
    assert_eq!(s.requests().len(), 2);

    // A truncated manifest followed by a good one succeeds.
    let s = FaultServer::start(fail_first(1, manifest_reply().mode(BodyMode::Truncate(20)), manifest_reply())).await;
    let up = upstream(&s, "retries = 1");
    let m = up.get_manifest(&repo("a"), &reference("t")).await.expect("retried");
    assert_eq!(m.bytes.as_deref(), Some(MANIFEST));

    // A blob cut short: the stream ends with an error; no retry once bytes
    // were handed out.
    let blob = random_bytes(100_000);
    let s = FaultServer::start(move |_| Reply::new(200, blob.clone()).mode(BodyMode::Truncate(40_000))).await;
    let up = upstream(&s, "retries = 3");
    let b = up.get_blob(&repo("a"), &digest(&sha256_digest(b"x"))).await.expect("head arrives");
    assert_eq!(b.size, Some(100_000));
    let e = try_read_all(b.stream).await.expect_err("truncated");
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn oversized_manifests_are_rejected() {
    // Announced too large: refused without reading.
    let big = vec![b' '; (4 << 20) + 1];
    let s = FaultServer::start(move |_| Reply::new(200, big.clone()).header("Content-Type", OCI_MANIFEST)).await;
    let up = upstream(&s, "retries = 3");
    match up.get_manifest(&repo("a"), &reference("t")).await {
        Err(UpstreamError::Invalid(m)) => assert!(m.contains("limit"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.requests().len(), 1, "not retried");

    // No Content-Length: the streamed read stops at the cap.
    let s = FaultServer::start(|r| {
        let n = if r.path().contains("/small/") { 1000 } else { 1001 };
        Reply::new(200, vec![b' '; n]).header("Content-Type", OCI_MANIFEST).mode(BodyMode::Chunked(100))
    })
    .await;
    let up = upstream(&s, "retries = 3").with_max_manifest_size(1000);
    assert!(matches!(up.get_manifest(&repo("big"), &reference("t")).await, Err(UpstreamError::Invalid(_))));
    let ok = up.get_manifest(&repo("small"), &reference("t")).await.expect("at the cap");
    assert_eq!(ok.size, 1000);
    // No Docker-Content-Digest: computed from the bytes.
    assert_eq!(ok.digest.to_string(), sha256_digest(&[b' '; 1000]));
}

#[tokio::test]
async fn slow_responses_time_out() {
    let s = FaultServer::start(|r| match r.path() {
        p if p.contains("/manifests/slowhead") => manifest_reply().delay(Duration::from_secs(3)),
        p if p.contains("/manifests/") => manifest_reply().mode(BodyMode::Delay(Duration::from_secs(3))),
        _ => Reply::new(200, vec![7u8; 1000]).mode(BodyMode::Delay(Duration::from_secs(3))),
    })
    .await;
    let up = upstream(&s, "retries = 1\nread_timeout = \"300ms\"");
    let t0 = Instant::now();
    match up.get_manifest(&repo("a"), &reference("slowbody")).await {
        Err(UpstreamError::Unavailable(m)) => {
            assert!(m.contains("timed out") || m.contains("timeout"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(s.count_prefix("GET /v2/a/manifests/slowbody"), 2, "retried once");

    // That request got no answer: the circuit is open and the next request
    // fails at once instead of waiting again.
    let t0 = Instant::now();
    match up.head_manifest(&repo("a"), &reference("slowhead")).await {
        Err(UpstreamError::Unavailable(m)) => assert!(m.contains("circuit open"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_millis(100), "{:?}", t0.elapsed());
    assert!(!up.health().healthy);
    assert_eq!(s.count_prefix("HEAD /v2/a/manifests/slowhead"), 0, "nothing sent while the circuit is open");

    // A fresh client: response headers that do not come in time.
    let up = upstream(&s, "retries = 1\nresponse_timeout = \"300ms\"\nrequest_deadline = \"5s\"");
    let t0 = Instant::now();
    match up.head_manifest(&repo("a"), &reference("slowhead")).await {
        Err(UpstreamError::Unavailable(m)) => assert!(m.contains("response_timeout"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    let up = upstream(&s, "retries = 1\nread_timeout = \"300ms\"");
    let b = up.get_blob(&repo("a"), &digest(&sha256_digest(b"x"))).await.expect("head is quick");
    let t0 = Instant::now();
    let e = try_read_all(b.stream).await.expect_err("body stalls");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connection_refused_is_unavailable() {
    let port = free_port();
    let up = upstream_from_toml(
        "down.example",
        &format!("url = \"http://127.0.0.1:{port}\"\nretries = 1\nconnect_timeout = \"1s\""),
    )
    .with_backoff(Duration::from_millis(10), Duration::from_millis(10));
    match up.head_manifest(&repo("a"), &reference("t")).await {
        Err(UpstreamError::Unavailable(m)) => assert!(m.contains("connection failed"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn tag_list_pagination_follows_link() {
    let s = FaultServer::start(|r| {
        let last = r.query("last");
        let (tags, link) = match last.as_deref() {
            None => (r#"["a","b"]"#, Some("</v2/x/y/tags/list?n=2&last=b>; rel=\"next\"")),
            Some("b") => (r#"["c","d"]"#, Some("<{ORIGIN}/v2/x/y/tags/list?n=2&last=d>; rel=\"next\"")),
            _ => (r#"["e"]"#, None),
        };
        let origin = format!("http://{}", r.header("host").unwrap_or_default());
        let mut reply =
            Reply::new(200, format!(r#"{{"name":"x/y","tags":{tags}}}"#)).header("Content-Type", "application/json");
        if let Some(l) = link {
            reply = reply.header("Link", l.replace("{ORIGIN}", &origin));
        }
        reply
    })
    .await;
    let up = upstream(&s, "");
    assert_eq!(up.tags(&repo("x/y")).await.expect("tags"), ["a", "b", "c", "d", "e"]);
    assert_eq!(s.count_prefix("GET /v2/x/y/tags/list"), 3);

    // A link to another origin is not followed (it would get our token).
    let s = FaultServer::start(|_| {
        Reply::new(200, r#"{"name":"x","tags":["a"]}"#)
            .header("Link", "<http://127.0.0.2:1/v2/x/tags/list?last=a>; rel=\"next\"")
    })
    .await;
    let up = upstream(&s, "");
    assert!(matches!(up.tags(&repo("x")).await, Err(UpstreamError::Invalid(_))));

    // A link that loops is cut off.
    let s = FaultServer::start(|_| {
        Reply::new(200, r#"{"name":"x","tags":["a"]}"#).header("Link", "</v2/x/tags/list>; rel=\"next\"")
    })
    .await;
    let up = upstream(&s, "");
    assert!(matches!(up.tags(&repo("x")).await, Err(UpstreamError::Invalid(_))));
    // Null tags is an empty list.
    let s = FaultServer::start(|_| Reply::new(200, r#"{"name":"x","tags":null}"#)).await;
    assert!(upstream(&s, "").tags(&repo("x")).await.expect("tags").is_empty());
}

#[tokio::test]
async fn digests_without_headers_and_as_announced() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let s = FaultServer::start(move |r| {
        c.fetch_add(1, Ordering::SeqCst);
        match r.path() {
            // As announced, even if wrong: the caller verifies.
            p if p.ends_with("/wrong") => Reply::new(200, MANIFEST)
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", sha256_digest(b"something else")),
            _ => Reply::new(200, MANIFEST).header("Content-Type", format!("{OCI_MANIFEST}; charset=utf-8")),
        }
    })
    .await;
    let up = upstream(&s, "");
    // HEAD by tag without a digest header falls back to a GET.
    let h = up.head_manifest(&repo("a"), &reference("t")).await.expect("head");
    assert_eq!(h.digest.to_string(), sha256_digest(MANIFEST));
    assert_eq!(h.media_type, OCI_MANIFEST);
    assert!(h.bytes.is_none());
    assert_eq!(s.count_prefix("HEAD /v2/a/manifests/t"), 1);
    assert_eq!(s.count_prefix("GET /v2/a/manifests/t"), 1);
    // HEAD by digest without a header trusts the reference.
    let d = sha256_digest(MANIFEST);
    let h = up.head_manifest(&repo("a"), &reference(&d)).await.expect("head digest");
    assert_eq!(h.digest.to_string(), d);
    assert_eq!(h.size, MANIFEST.len() as u64);

    let w = up.get_manifest(&repo("a"), &reference("wrong")).await.expect("get");
    assert_eq!(w.digest.to_string(), sha256_digest(b"something else"));
    assert_eq!(w.bytes.as_deref(), Some(MANIFEST));
}

#[tokio::test]
async fn basic_auth_challenge_is_answered() {
    let s = FaultServer::start(|r| {
        // "bob:pw" in base64.
        if r.header("authorization") == Some("Basic Ym9iOnB3") {
            manifest_reply()
        } else {
            Reply::new(401, "").header("WWW-Authenticate", "Basic realm=\"registry\"")
        }
    })
    .await;
    let up = upstream(&s, "username = \"bob\"\npassword = \"pw\"");
    up.get_manifest(&repo("a"), &reference("t")).await.expect("basic");
    up.head_manifest(&repo("a"), &reference("t")).await.expect("basic again");
    let reqs = s.requests();
    assert_eq!(reqs.len(), 3, "one challenge, then credentials up front");
    assert_eq!(reqs[0].header("authorization"), None);
    assert!(reqs[1..].iter().all(|r| r.header("authorization") == Some("Basic Ym9iOnB3")));

    // Wrong credentials: Unauthorized, not retried.
    let up = upstream(&s, "username = \"bob\"\npassword = \"nope\"");
    assert!(matches!(up.get_manifest(&repo("a"), &reference("t")).await, Err(UpstreamError::Unauthorized(_))));
    assert_eq!(s.requests().len(), 5);
}

#[tokio::test]
async fn bearer_token_service_failures() {
    // The token service is down, then up: the attempt is retried as a whole.
    let token_hits = Arc::new(AtomicUsize::new(0));
    let th = token_hits.clone();
    let s = FaultServer::start(move |r| {
        let origin = format!("http://{}", r.header("host").unwrap_or_default());
        if r.path() == "/token" {
            return if th.fetch_add(1, Ordering::SeqCst) == 0 {
                Reply::new(503, "")
            } else {
                Reply::new(200, r#"{"access_token":"tok-1","expires_in":300}"#)
            };
        }
        if r.header("authorization") == Some("Bearer tok-1") {
            manifest_reply()
        } else {
            Reply::new(401, "").header(
                "WWW-Authenticate",
                format!("Bearer realm=\"{origin}/token\",service=\"svc\",scope=\"repository:a:pull\""),
            )
        }
    })
    .await;
    let up = upstream(&s, "retries = 2");
    up.get_manifest(&repo("a"), &reference("t")).await.expect("token on retry");
    assert_eq!(token_hits.load(Ordering::SeqCst), 2);
    // access_token was accepted and is cached.
    up.get_manifest(&repo("a"), &reference("t")).await.expect("cached");
    assert_eq!(token_hits.load(Ordering::SeqCst), 2);
    // A token response without a token is a protocol violation.
    let s = FaultServer::start(|r| {
        let origin = format!("http://{}", r.header("host").unwrap_or_default());
        if r.path() == "/token" {
            Reply::new(200, r#"{"expires_in":300}"#)
        } else {
            Reply::new(401, "").header("WWW-Authenticate", format!("Bearer realm=\"{origin}/token\""))
        }
    })
    .await;
    assert!(matches!(upstream(&s, "").get_manifest(&repo("a"), &reference("t")).await, Err(UpstreamError::Invalid(_))));
}
