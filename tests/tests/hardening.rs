//! Hardening of the network side (issue 13), against the real binary:
//! slow and idle connections are closed, the connection cap answers 503,
//! a stalled upload is dropped and resumed, early answers reach clients that
//! send their whole body without `Expect: 100-continue`, `Location` headers
//! work whatever address the client used, forwarded headers from untrusted
//! peers are ignored, untrusted sources are closed at accept, and the
//! upload-session and blob-size limits answer their OCI errors.
//!
//! Raw `TcpStream`s are used where a client library would hide what the
//! server does (half headers, stalls, bodies sent whole before reading).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::skopeo::skopeo_push;

fn config(server: &str) -> ServerOptions {
    ServerOptions { config: Some(format!("[server]\n{server}\n")), ..Default::default() }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes (or `limit` passes); returns what came.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a whole request (head and body) without waiting, then reads the
/// answer: what a client without `Expect: 100-continue` does. Fails when
/// the server cut the body short (a broken pipe, as such clients report it).
async fn send_whole(addr: SocketAddr, head: &str, body_len: usize) -> String {
    let mut s = connect(addr).await;
    s.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        if let Err(e) = s.write_all(&chunk[..n]).await {
            panic!("the server cut the body after {sent} of {body_len} bytes: {e}");
        }
        sent += n;
    }
    // The connection stays open after a drained early answer: read the head.
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_flood_is_closed_at_the_header_timeout_while_fresh_clients_are_served() {
    const N: usize = 1000;
    let s = Server::start_with(config("header_timeout = \"2s\"\nmax_connections = 4000")).await;
    let before = s.memory();
    let mut held = Vec::with_capacity(N);
    let opened = Instant::now();
    for _ in 0..N {
        let mut c = connect(s.addr).await;
        c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("half a header");
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = s.memory();
    // A fresh client is served at once while the flood is held.
    let t = Instant::now();
    let r = s.get("/v2/").await;
    let fresh = t.elapsed();
    assert_eq!(r.status(), 200);
    assert!(fresh < Duration::from_millis(500), "fresh request took {fresh:?} during the flood");
    // Every held connection is closed by the server within the timeout (+ slack).
    let mut closed_at = Vec::with_capacity(N);
    let reads = held.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let mut b = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b)).await;
            Instant::now()
        })
    });
    for r in reads.collect::<Vec<_>>() {
        closed_at.push(r.await.expect("reader"));
    }
    let last = closed_at.iter().max().map(|t| t.duration_since(opened)).unwrap_or_default();
    assert!(last < Duration::from_secs(5), "the last slow connection was closed {last:?} after the flood began");
    let t = Instant::now();
    assert_eq!(s.get("/v2/").await.status(), 200);
    let after = t.elapsed();
    report(&format!(
        "hardening: {N} half-header connections held at RSS {} KiB (idle server {} KiB); fresh GET /v2/ in {:.1} ms \
         during the flood, {:.1} ms after; all closed by {:.2} s after the first opened (header_timeout 2 s)",
        during.rss_kib,
        before.rss_kib,
        fresh.as_secs_f64() * 1000.0,
        after.as_secs_f64() * 1000.0,
        last.as_secs_f64()
    ));
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = Server::start_with(config("idle_timeout = \"1s\"")).await;
    let mut c = connect(s.addr).await;
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let mut b = [0u8; 4096];
    let n = c.read(&mut b).await.expect("answer");
    assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&b[..n]));
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stays open");
    assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn past_the_connection_cap_a_client_is_told_503_with_retry_after() {
    let s = Server::start_with(config("max_connections = 8\nheader_timeout = \"30s\"")).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = connect(s.addr).await;
        c.write_all(b"GET /v2/ HTTP/1.1\r\n").await.expect("half");
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = connect(s.addr).await;
    c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("request");
    let (text, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("Retry-After: 1") && text.contains("max_connections"), "{text}");
    assert!(closed, "the refused connection is closed");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("/v2/").await.status(), 200, "served again once connections are free");
    let m = scrape(&s).await;
    assert!(
        m.get("cove_connections_refused_total{reason=\"max_connections\"}").copied().unwrap_or(0.0) >= 1.0,
        "{m:?}"
    );
}

#[tokio::test]
async fn a_stalled_upload_is_dropped_and_resumed() {
    let s = Server::start_with(config("body_timeout = \"1s\"")).await;
    let data = random_bytes(2 << 20);
    let half = data.len() / 2;
    let loc = s.start_upload("hard/stall").await;
    let r = s.req("PATCH", &loc).header("content-type", "application/octet-stream").body(data[..half].to_vec());
    let r = r.send().await.expect("first chunk");
    assert_eq!(r.status(), 202);
    let loc = s.resolve(&header(&r, "location"));
    // The second chunk stalls half way: the server drops the connection.
    let path = loc.strip_prefix(&s.base).expect("same server");
    let mut c = connect(s.addr).await;
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Content-Range: {half}-{}\r\n\r\n",
        s.addr,
        data.len() - half,
        data.len() - 1
    );
    c.write_all(head.as_bytes()).await.expect("head");
    c.write_all(&data[half..half + 1000]).await.expect("some bytes");
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut c, Duration::from_secs(10)).await;
    let took = t.elapsed();
    assert!(closed && took < Duration::from_secs(4), "stalled upload closed after {took:?}");
    // The session kept its first chunk: the client asks and resumes.
    let r = s.req("GET", &loc).send().await.expect("status");
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "range"), format!("0-{}", half - 1));
    let r = s.req("PATCH", &loc).body(data[half..].to_vec()).send().await.expect("resume");
    assert_eq!(r.status(), 202);
    let digest = sha256_digest(&data);
    let loc = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&loc, &format!("digest={digest}"))).send().await.expect("close");
    assert_eq!(r.status(), 201);
    let got = s.get(&format!("/v2/hard/stall/blobs/{digest}")).await.bytes().await.expect("blob");
    assert!(got == data, "resumed blob differs");
    report(&format!("hardening: stalled PATCH (body_timeout 1 s) dropped after {took:?}; resumed and verified"));
}

#[tokio::test]
async fn early_answers_reach_clients_that_send_the_whole_body() {
    let s = Server::start().await;
    // A 5 MiB manifest: 413 before reading, then the body is drained.
    let len = 5 << 20;
    let head = format!(
        "PUT /v2/hard/early/manifests/v1 HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
         Content-Length: {len}\r\n\r\n",
        s.addr
    );
    let text = send_whole(s.addr, &head, len).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("MANIFEST_INVALID") || text.contains("SIZE_INVALID"), "{text}");
    // An unknown upload session: 404 before reading an 8 MiB chunk.
    let len = 8 << 20;
    let head = format!(
        "PATCH /v2/hard/early/blobs/uploads/00000000-0000-4000-8000-000000000000 HTTP/1.1\r\nHost: {}\r\n\
         Content-Length: {len}\r\n\r\n",
        s.addr
    );
    let text = send_whole(s.addr, &head, len).await;
    assert!(text.starts_with("HTTP/1.1 404") && text.contains("BLOB_UPLOAD_UNKNOWN"), "{text}");
}

#[tokio::test]
async fn a_401_reaches_a_client_that_sends_the_whole_body() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // alice:secret (bcrypt)
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, "alice:$2y$05$e5PBz3bUVh.zNWH1KVB3P.2ZUyWxyGeJS4oOoM5ti9R0SUMOmVqQK\n")
        .expect("htpasswd");
    let s = Server::start_with(ServerOptions {
        config: Some(format!("[auth]\nkind = \"htpasswd\"\nhtpasswd_file = \"{}\"\n", htpasswd.display())),
        ..Default::default()
    })
    .await;
    let digest = sha256_digest(b"whatever");
    let len = 16 << 20;
    let head = format!(
        "POST /v2/hard/auth/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\n\r\n",
        s.addr
    );
    let text = send_whole(s.addr, &head, len).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.to_ascii_lowercase().contains("www-authenticate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_127_0_0_1_works_with_public_url_set() {
    let s = Server::start_with(config("public_url = \"https://cove.unreachable.invalid\"")).await;
    // Raw: Locations are relative, never public_url's host.
    let r = s.req("POST", "/v2/hard/loc/blobs/uploads/").send().await.expect("post");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/hard/loc/blobs/uploads/"), "{loc}");
    let digest = s.push_blob("hard/loc", b"hello").await;
    let r = s
        .req("POST", &format!("/v2/hard/loc2/blobs/uploads/?mount={digest}&from=hard/loc"))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/hard/loc2/blobs/{digest}"));
    // A real client pushes to 127.0.0.1.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(dir.path());
    let image = layout.add_image("v1", &[300_000, 5_000]);
    let dest = format!("{}/hard/skopeo:v1", s.addr);
    let path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || skopeo_push(&path, "v1", &dest, None)).await.expect("skopeo");
    let r = s.manifest("GET", "hard/skopeo", "v1").await;
    assert_eq!(r.status(), 200);
    for d in image.blob_digests() {
        assert_eq!(s.head(&format!("/v2/hard/skopeo/blobs/{d}")).await.status(), 200, "{d}");
    }
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let s = Server::start_with(ServerOptions {
        config: Some("[auth]\ntrusted_proxies = [\"127.0.0.1/32\"]\n".into()),
        ..Default::default()
    })
    .await;
    let other = client_from("127.0.0.2");
    let r = other
        .post(s.url("/v2/hard/fwd/blobs/uploads/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/hard/fwd/blobs/uploads/"), "untrusted peer steered Location: {loc}");
    // From the trusted proxy they are believed.
    let r = s
        .req("POST", "/v2/hard/fwd/blobs/uploads/")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "cove.example.net")
        .send()
        .await
        .expect("post");
    assert!(header(&r, "location").starts_with("https://cove.example.net/v2/hard/fwd/"), "{}", header(&r, "location"));
}

#[tokio::test]
async fn untrusted_sources_are_closed_at_accept() {
    let s = Server::start_with(ServerOptions {
        config: Some("[auth]\ntrusted_networks = [\"127.0.0.1/32\"]\ntrusted_proxies = []\n".into()),
        ..Default::default()
    })
    .await;
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind("127.0.0.2:0".parse().expect("addr")).expect("bind 127.0.0.2");
    let mut c = sock.connect(s.addr).await.expect("connect");
    let _ = c.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let t = Instant::now();
    let (text, closed) = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(closed && text.is_empty(), "an untrusted source got {text:?}");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(s.get("/v2/").await.status(), 200, "127.0.0.1 is served");
    let m = scrape(&s).await;
    assert!(m.get("cove_connections_refused_total{reason=\"untrusted\"}").copied().unwrap_or(0.0) >= 1.0, "{m:?}");
}

#[tokio::test]
async fn open_upload_sessions_are_limited_per_source() {
    let s = Server::start_with(config("max_uploads_per_source = 3")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(s.start_upload("hard/many").await);
    }
    let r = s.req("POST", "/v2/hard/many/blobs/uploads/").send().await.expect("post");
    let body = assert_error(r, 429, "TOOMANYREQUESTS", "fourth session").await;
    assert!(body.to_string().contains("max_uploads_per_source"), "{body}");
    // Another source is not held to this one's sessions.
    let r = client_from("127.0.0.2").post(s.url("/v2/hard/many/blobs/uploads/")).send().await.expect("post");
    assert_eq!(r.status(), 202);
    let r = s.req("DELETE", &open[0]).send().await.expect("cancel");
    assert_eq!(r.status(), 204);
    assert_eq!(s.req("POST", "/v2/hard/many/blobs/uploads/").send().await.expect("post").status(), 202);
}

#[tokio::test]
async fn blobs_past_max_blob_size_are_refused() {
    let s = Server::start_with(config("max_blob_size = \"1MiB\"")).await;
    let big = random_bytes((1 << 20) + 1);
    let digest = sha256_digest(&big);
    // Declared up front.
    let r = s
        .req("POST", &format!("/v2/hard/size/blobs/uploads/?digest={digest}"))
        .body(big.clone())
        .send()
        .await
        .expect("monolithic");
    let body = assert_error(r, 413, "SIZE_INVALID", "monolithic push").await;
    assert!(body.to_string().contains("max_blob_size"), "{body}");
    // Streamed without a length: refused while streaming, session kept.
    let loc = s.start_upload("hard/size").await;
    let stream =
        futures::stream::iter(big.chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let r = s.req("PATCH", &loc).body(reqwest::Body::wrap_stream(stream)).send().await.expect("chunked");
    assert_error(r, 413, "SIZE_INVALID", "streamed chunk").await;
    let r = s.req("GET", &loc).send().await.expect("status");
    assert_eq!(r.status(), 204, "the session survives");
    // A blob within the limit is fine.
    s.push_blob("hard/size", &big[..1 << 20]).await;
}
