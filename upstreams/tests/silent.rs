//! `OciUpstream` against upstreams that stop answering: one that accepts
//! connections and never responds, one whose TCP handshake never completes
//! (a listening socket with a full backlog), and one switched between
//! silent and answering. Checks the time budgets (response timeout, one
//! deadline over all retries, connect timeout) and the circuit breaker.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream_from_toml;
use cove_core::upstream::UpstreamError;
use cove_core::Upstream;
use cove_testkit::fault::{FaultServer, Reply};
use cove_testkit::oci::OCI_MANIFEST;
use cove_testkit::util::{digest, reference, repo, sha256_digest};
use cove_upstreams::OciUpstream;

const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

fn manifest_reply() -> Reply {
    Reply::new(200, MANIFEST)
        .header("Content-Type", OCI_MANIFEST)
        .header("Docker-Content-Digest", sha256_digest(MANIFEST))
}

fn client(url: &str, extra: &str) -> OciUpstream {
    upstream_from_toml("silent.example", &format!("url = \"{url}\"\n{extra}"))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(100))
}

fn unavailable(r: Result<cove_core::upstream::UpstreamManifest, UpstreamError>) -> String {
    match r {
        Err(UpstreamError::Unavailable(m)) => m,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Accepts connections and reads requests but never answers.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = l.accept().await {
            held.push(conn);
        }
    });
    (url, task)
}

/// A listening socket (backlog 1) that never accepts, its queue filled so
/// that further handshakes never complete.
fn blackhole() -> (String, Vec<std::net::TcpStream>, tokio::net::TcpListener) {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = sock.local_addr().expect("addr");
    let listener = sock.listen(1).expect("listen");
    let mut fill = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fill.push(c),
            Err(_) => break,
        }
    }
    (format!("http://{addr}"), fill, listener)
}

#[tokio::test]
async fn retries_share_one_deadline_and_the_circuit_then_fails_at_once() {
    let (url, _server) = silent_server().await;
    // Without a deadline, 4 attempts × 400 ms response timeout + backoff
    // would take ~1.8 s; the deadline bounds the whole request at 1 s.
    let up = client(&url, "retries = 3\nresponse_timeout = \"400ms\"\nrequest_deadline = \"1s\"");
    let t0 = Instant::now();
    let m = unavailable(up.get_manifest(&repo("a"), &reference("t")).await);
    let first = t0.elapsed();
    assert!(first >= Duration::from_millis(390) && first < Duration::from_millis(1300), "first request: {first:?}");
    assert!(m.contains("response_timeout") || m.contains("request_deadline"), "{m}");
    let h = up.health();
    assert!(!h.healthy && h.unhealthy_since.is_some() && h.changes == 1, "{h:?}");
    assert!(h.last_failure.is_some());
    // Open: every later request fails at once, whatever it is.
    for _ in 0..3 {
        let t0 = Instant::now();
        let m = unavailable(up.head_manifest(&repo("b"), &reference("t")).await);
        assert!(m.contains("circuit open"), "{m}");
        assert!(t0.elapsed() < Duration::from_millis(50), "{:?}", t0.elapsed());
    }
    assert!(matches!(up.get_blob(&repo("b"), &digest(&sha256_digest(b"x"))).await, Err(UpstreamError::Unavailable(_))));
}

#[tokio::test]
async fn a_handshake_that_never_completes_is_bounded_by_connect_timeout() {
    let (url, _fill, _listener) = blackhole();
    let up = client(&url, "retries = 0\nconnect_timeout = \"300ms\"\nrequest_deadline = \"5s\"");
    let t0 = Instant::now();
    let m = unavailable(up.get_manifest(&repo("a"), &reference("t")).await);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(2), "connect took {took:?}: {m}");
    assert!(!up.health().healthy);
}

#[tokio::test]
async fn the_probe_closes_the_circuit_once_the_upstream_answers() {
    let silent = Arc::new(AtomicBool::new(true));
    let flag = silent.clone();
    let s = FaultServer::start(move |r| {
        if flag.load(Ordering::SeqCst) {
            return Reply::new(200, "").delay(Duration::from_secs(3600));
        }
        if r.path() == "/v2/" {
            return Reply::new(200, "{}");
        }
        manifest_reply()
    })
    .await;
    let up = client(&s.url(), "retries = 1\nresponse_timeout = \"200ms\"\nrequest_deadline = \"1s\"");
    unavailable(up.get_manifest(&repo("a"), &reference("t")).await);
    assert!(!up.health().healthy);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!up.health().healthy, "still silent: the probe keeps it open");
    let probes_while_silent = s.requests().iter().filter(|r| r.method == "GET" && r.target == "/v2/").count();
    assert!(probes_while_silent >= 1, "probed while silent: {probes_while_silent}");

    silent.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    while !up.health().healthy {
        assert!(t0.elapsed() < Duration::from_secs(5), "circuit not closed within 5 s of the upstream answering");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed_after = t0.elapsed();
    let h = up.health();
    assert_eq!(h.changes, 2, "{h:?}");
    assert!(h.unhealthy_total >= Duration::from_millis(1000), "{h:?}");
    let m = up.get_manifest(&repo("a"), &reference("t")).await.expect("answers again");
    assert_eq!(m.digest.to_string(), sha256_digest(MANIFEST));
    eprintln!("circuit closed {closed_after:?} after the upstream answered again");
}

/// An HTTP error status is an answer: it never opens the circuit.
#[tokio::test]
async fn errors_that_are_answers_keep_the_circuit_closed() {
    let s = FaultServer::start(|_| Reply::new(503, "busy")).await;
    let up = client(&s.url(), "retries = 1");
    for _ in 0..3 {
        unavailable(up.get_manifest(&repo("a"), &reference("t")).await);
    }
    assert!(up.health().healthy);
    assert_eq!(s.count_prefix("GET /v2/a/manifests/t"), 6, "every request was sent, with its retry");
}
