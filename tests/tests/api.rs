//! The OCI Distribution API, endpoint by endpoint, through the real `cove`
//! binary over HTTP: positive and negative cases, status codes, error codes
//! and headers.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use serde_json::json;

const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Asserts a status below 500 (client mistakes never produce a server error),
/// and that any 4xx carries the spec's JSON error body. Returns the status.
async fn assert_not_5xx(r: reqwest::Response, what: &str) -> u16 {
    let status = r.status().as_u16();
    let method_not_allowed = status == 405;
    let body = r.text().await.unwrap_or_default();
    assert!(status < 500, "{what}: got {status} {body:?}");
    if (400..500).contains(&status) && !method_not_allowed && !body.is_empty() {
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {body:?}"));
        assert!(v["errors"][0]["code"].is_string(), "{what}: {status} body has no error code: {body}");
    }
    status
}

/// Sends a raw HTTP/1.1 request and returns the status line's code, or None
/// if the server closed the connection without answering.
fn raw_request(addr: std::net::SocketAddr, request: &[u8], shutdown_write: bool) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(request).expect("write request");
    if shutdown_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Sends a request whose body is written from another thread (write errors
/// ignored), reading the response meanwhile, as Go clients do: a server may
/// answer early (413) and stop reading. Returns the status and body text.
fn raw_exchange(addr: std::net::SocketAddr, head: String, body: Vec<u8>) -> (u16, String) {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut w = s.try_clone().expect("clone stream");
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(head.as_bytes());
        let _ = w.write_all(&body);
    });
    let mut r = s;
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------
// Base
// ---------------------------------------------------------------------------

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let s = Server::start().await;
    for method in ["GET", "HEAD"] {
        let r = s.req(method, "/v2/").send().await.expect("request");
        assert_eq!(r.status(), 200, "{method} /v2/");
        assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0", "{method} /v2/");
    }
    // Without the trailing slash, clients expect the same endpoint (or a
    // redirect to it), never an error from the server.
    let r = s.get("/v2").await;
    assert!(r.status() == 200 || r.status().is_redirection(), "GET /v2 gave {}", r.status());
}

// ---------------------------------------------------------------------------
// Blob push and pull
// ---------------------------------------------------------------------------

#[tokio::test]
async fn monolithic_post_with_digest_and_blob_pull_headers() {
    let s = Server::start().await;
    let data = random_bytes(100_000);
    let digest = sha256_digest(&data);
    let r = s
        .req("POST", &format!("/v2/mono/blobs/uploads/?digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201, "monolithic POST");
    assert!(
        s.resolve(&header(&r, "location")).ends_with(&format!("/v2/mono/blobs/{digest}")),
        "Location {:?}",
        header(&r, "location")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);

    let r = s.get(&format!("/v2/mono/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert!(!header(&r, "content-type").is_empty(), "blob Content-Type");
    assert!(header(&r, "etag").contains(&digest), "blob ETag should name the digest: {:?}", header(&r, "etag"));
    let body = r.bytes().await.expect("body");
    assert!(body[..] == data[..], "blob body differs");

    let r = s.head(&format!("/v2/mono/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
    assert!(r.bytes().await.expect("body").is_empty(), "HEAD has a body");

    // The blob is not visible from another repository.
    let r = s.head(&format!("/v2/other/blobs/{digest}")).await;
    assert_eq!(r.status(), 404, "blob visible in a repo it was not pushed to");
    let r = s.get(&format!("/v2/other/blobs/{digest}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "GET blob from another repo").await;
}

#[tokio::test]
async fn post_then_put_upload_with_headers() {
    let s = Server::start().await;
    let data = random_bytes(5000);
    let digest = sha256_digest(&data);
    let r = s.req("POST", "/v2/ns/app/blobs/uploads/").send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    let url = s.resolve(&loc);
    let path = url.trim_start_matches(&s.base);
    assert!(path.starts_with("/v2/ns/app/blobs/uploads/"), "upload Location {loc:?}");
    let id = path.trim_start_matches("/v2/ns/app/blobs/uploads/").split('?').next().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "upload Location has no id: {loc:?}");
    assert_eq!(header(&r, "docker-upload-uuid"), id, "Docker-Upload-UUID");

    let r = s.get(path).await;
    assert_eq!(r.status(), 204, "GET upload status of a new session");
    assert_eq!(header(&r, "docker-upload-uuid"), id);
    let range = header(&r, "range");
    assert!(range == "0-0" || range.is_empty(), "empty session Range {range:?}");

    let r = s
        .req("PUT", &with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "PUT completes the upload");
    assert!(
        s.resolve(&header(&r, "location")).ends_with(&format!("/v2/ns/app/blobs/{digest}")),
        "Location {:?}",
        header(&r, "location")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let body = s.get(&format!("/v2/ns/app/blobs/{digest}")).await.bytes().await.expect("body");
    assert!(body[..] == data[..]);

    // The finished session is gone.
    let r = s.get(path).await;
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "status of a finished upload").await;
}

#[tokio::test]
async fn chunked_upload_with_status_and_final_chunk() {
    let s = Server::start().await;
    let data = random_bytes(3 * 65536 + 123);
    let digest = sha256_digest(&data);
    let parts = [&data[..65536], &data[65536..150_000], &data[150_000..]];
    let mut url = s.start_upload("chunky").await;
    let mut offset = 0usize;
    for part in &parts[..2] {
        let end = offset + part.len() - 1;
        let r = s
            .req("PATCH", &url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{offset}-{end}"))
            .body(part.to_vec())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 202, "PATCH {offset}-{end}");
        assert_eq!(header(&r, "range"), format!("0-{end}"), "Range after PATCH");
        assert!(!header(&r, "docker-upload-uuid").is_empty());
        url = s.resolve(&header(&r, "location"));
        assert!(url.contains("/v2/chunky/blobs/uploads/"), "PATCH Location {url}");
        offset = end + 1;
        let r = s.req("GET", &url).send().await.expect("GET status");
        assert_eq!(r.status(), 204);
        assert_eq!(header(&r, "range"), format!("0-{end}"), "Range from GET");
    }
    // The last chunk rides on the PUT.
    let r = s
        .req("PUT", &with_query(&url, &format!("digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(parts[2].to_vec())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 201, "PUT with the final chunk");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let got = s.get(&format!("/v2/chunky/blobs/{digest}")).await.bytes().await.expect("body");
    assert!(got[..] == data[..], "chunked blob differs");
}

#[tokio::test]
async fn chunked_upload_without_content_range_and_empty_put() {
    // Docker-style streamed PATCH (no Content-Range), then PUT with no body.
    let s = Server::start().await;
    let data = random_bytes(70_000);
    let digest = sha256_digest(&data);
    let url = s.start_upload("stream").await;
    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201);
    let r = s.head(&format!("/v2/stream/blobs/{digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), data.len().to_string());
}

#[tokio::test]
async fn chunk_out_of_order_is_416_with_range_and_session_survives() {
    let s = Server::start().await;
    let data = random_bytes(40);
    let digest = sha256_digest(&data);
    let url = s.start_upload("ooo").await;
    // Starts past the end of an empty upload.
    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .header("content-range", "20-39")
        .body(data[20..].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 416, "chunk past the end");
    let range = header(&r, "range");
    assert_error(r, 416, "BLOB_UPLOAD_INVALID", "chunk past the end").await;
    assert_eq!(range, "0-0", "Range on 416 for an empty upload");

    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-19")
        .body(data[..20].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    // Resending the same chunk (overlap) is out of order too.
    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .header("content-range", "0-19")
        .body(data[..20].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 416, "overlapping chunk");
    assert_eq!(header(&r, "range"), "0-19", "Range on 416 names what is held");
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(header(&r, "range"), "0-19", "416 must not change the session");
    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .header("content-range", "20-39")
        .body(data[20..].to_vec())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).send().await.expect("PUT");
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn bad_content_range_and_length_mismatch_are_client_errors() {
    let s = Server::start().await;
    let url = s.start_upload("badrange").await;
    for (range, body_len) in [
        ("abc", 10usize),
        ("5-2", 4),
        ("0-", 10),
        ("-9", 10),
        ("0-99999999999999999999999", 10),
        // Range says 10 bytes, the body has 5.
        ("0-9", 5),
        // Range says 5 bytes, the body has 10.
        ("0-4", 10),
    ] {
        let r = s
            .req("PATCH", &url)
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .body(random_bytes(body_len))
            .send()
            .await
            .expect("PATCH");
        let status = r.status().as_u16();
        assert!(status == 400 || status == 416, "Content-Range {range:?} with {body_len} bytes: got {status}");
        let v = json(r).await;
        let code = v["errors"][0]["code"].as_str().unwrap_or_default();
        assert!(["BLOB_UPLOAD_INVALID", "SIZE_INVALID"].contains(&code), "Content-Range {range:?}: code {code}");
        // Nothing was appended.
        let r = s.req("GET", &url).send().await.expect("status");
        assert_eq!(r.status(), 204, "session must survive a rejected chunk");
        let range_now = header(&r, "range");
        assert!(range_now == "0-0" || range_now.is_empty(), "after rejected {range:?}: Range {range_now}");
    }
}

#[tokio::test]
async fn digest_mismatch_on_put_and_post_stores_nothing() {
    let s = Server::start().await;
    let data = random_bytes(1000);
    let wrong = sha256_digest(b"something else");

    let url = s.start_upload("mismatch").await;
    let r = s
        .req("PUT", &with_query(&url, &format!("digest={wrong}")))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_error(r, 400, "DIGEST_INVALID", "PUT with the wrong digest").await;
    let r = s
        .req("POST", &format!("/v2/mismatch/blobs/uploads/?digest={wrong}"))
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("POST");
    assert_error(r, 400, "DIGEST_INVALID", "monolithic POST with the wrong digest").await;

    for d in [wrong.clone(), sha256_digest(&data)] {
        let r = s.head(&format!("/v2/mismatch/blobs/{d}")).await;
        assert_eq!(r.status(), 404, "{d} must not exist after a mismatch");
    }
    assert_eq!(assert_blobs_verified(&s.data_dir), 0, "no blob file may be left by a failed upload");
}

#[tokio::test]
async fn malformed_digests_are_digest_invalid() {
    let s = Server::start().await;
    let data = random_bytes(10);
    let bad = [
        "sha256:xyz",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256",
        "nonsense",
    ];
    for d in bad {
        let r = s.get(&format!("/v2/digests/blobs/{d}")).await;
        let status = r.status().as_u16();
        if d.contains(':') {
            assert_error(r, 400, "DIGEST_INVALID", &format!("GET blob {d}")).await;
        } else {
            assert!(status == 400 || status == 404, "GET blob {d}: {status}");
        }
        let url = s.start_upload("digests").await;
        let r = s.req("PUT", &with_query(&url, &format!("digest={d}"))).body(data.clone()).send().await.expect("PUT");
        assert_error(r, 400, "DIGEST_INVALID", &format!("PUT ?digest={d}")).await;
        let r = s
            .req("POST", &format!("/v2/digests/blobs/uploads/?digest={d}"))
            .body(data.clone())
            .send()
            .await
            .expect("POST");
        assert_error(r, 400, "DIGEST_INVALID", &format!("POST ?digest={d}")).await;
        let r = s.delete(&format!("/v2/digests/blobs/{d}")).await;
        assert_not_5xx(r, &format!("DELETE blob {d}")).await;
    }
    // PUT without any digest cannot complete an upload.
    let url = s.start_upload("digests").await;
    let r = s.req("PUT", &url).body(data).send().await.expect("PUT");
    let status = assert_not_5xx(r, "PUT without ?digest").await;
    assert_eq!(status, 400, "PUT without ?digest");
}

#[tokio::test]
async fn malformed_names_are_name_invalid() {
    let s = Server::start().await;
    let long = vec!["a"; 130].join("/"); // 259 characters
    let names = ["UPPER", "a//b", "-a", "a-", "a/.b", "a___b", long.as_str()];
    for name in names {
        for (method, path) in [
            ("GET", format!("/v2/{name}/manifests/x")),
            ("HEAD", format!("/v2/{name}/manifests/x")),
            ("GET", format!("/v2/{name}/tags/list")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("GET", format!("/v2/{name}/blobs/{EMPTY_SHA256}")),
            ("GET", format!("/v2/{name}/referrers/{EMPTY_SHA256}")),
        ] {
            let r = s.req(method, &path).send().await.expect("request");
            let what = format!("{method} {path}");
            if method == "HEAD" {
                assert_eq!(r.status(), 400, "{what}");
            } else {
                assert_error(r, 400, "NAME_INVALID", &what).await;
            }
        }
    }
    // The longest valid name is accepted.
    let longest = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(longest.len(), 255);
    let r = s.req("POST", &format!("/v2/{longest}/blobs/uploads/")).send().await.expect("POST");
    assert_eq!(r.status(), 202, "255-character name");
}

#[tokio::test]
async fn upload_sessions_cancel_and_unknown_ids() {
    let s = Server::start().await;
    let url = s.start_upload("cancel").await;
    let r = s
        .req("PATCH", &url)
        .header("content-type", "application/octet-stream")
        .body(random_bytes(100))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    let url = s.resolve(&header(&r, "location"));
    let r = s.req("DELETE", &url).send().await.expect("DELETE");
    assert_eq!(r.status(), 204, "cancel upload");
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let target = if method == "PUT" { with_query(&url, &format!("digest={EMPTY_SHA256}")) } else { url.clone() };
        let r = s.req(method, &target).send().await.expect("request");
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", &format!("{method} a cancelled upload")).await;
    }
    for id in ["deadbeef", "00000000-0000-0000-0000-000000000000", "..%2f..%2fetc", "UPPER", &"a".repeat(300)] {
        let r = s.get(&format!("/v2/cancel/blobs/uploads/{id}")).await;
        let status = r.status().as_u16();
        let v = json(r).await;
        assert!(status == 404 || status == 400, "upload id {id:?}: status {status}");
        let code = v["errors"][0]["code"].as_str().unwrap_or_default();
        assert!(code == "BLOB_UPLOAD_UNKNOWN" || code == "BLOB_UPLOAD_INVALID", "upload id {id:?}: code {code}");
    }
    // A session belongs to its repository.
    let url = s.start_upload("owner").await;
    let id = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    let r = s.get(&format!("/v2/intruder/blobs/uploads/{id}")).await;
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "upload read through another repo").await;
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(r.status(), 204, "owner still sees the session");
}

#[tokio::test]
async fn truncated_bodies_leave_nothing_behind() {
    let s = Server::start().await;
    let data = random_bytes(100_000);
    let digest = sha256_digest(&data);
    // Monolithic POST whose body stops halfway, then the client hangs up.
    let mut req = format!(
        "POST /v2/trunc/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        s.addr,
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(&data[..50_000]);
    let status = raw_request(s.addr, &req, true);
    assert!(status.is_none_or(|c| (400..500).contains(&c)), "truncated POST answered {status:?}");
    // A PATCH whose body stops early.
    let url = s.start_upload("trunc").await;
    let path = url.trim_start_matches(&s.base).to_owned();
    let mut req = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: 0-99999\r\nContent-Length: 100000\r\n\r\n",
        s.addr
    )
    .into_bytes();
    req.extend_from_slice(&data[..30_000]);
    let status = raw_request(s.addr, &req, true);
    assert!(status.is_none_or(|c| (400..500).contains(&c)), "truncated PATCH answered {status:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.head(&format!("/v2/trunc/blobs/{digest}")).await;
    assert_eq!(r.status(), 404, "a truncated body made a blob visible");
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(r.status(), 204);
    let range = header(&r, "range");
    assert!(range == "0-0" || range.is_empty(), "a failed PATCH must leave the session at its old size, Range {range}");
    // And the session still works.
    let r = s.req("PUT", &with_query(&url, &format!("digest={digest}"))).body(data.clone()).send().await.expect("PUT");
    assert_eq!(r.status(), 201);
    assert_eq!(assert_blobs_verified(&s.data_dir), 1);
}

#[tokio::test]
async fn empty_blob_round_trips() {
    let s = Server::start().await;
    let r = s
        .req("POST", &format!("/v2/empty/blobs/uploads/?digest={EMPTY_SHA256}"))
        .header("content-type", "application/octet-stream")
        .body(Vec::<u8>::new())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 201, "empty monolithic blob");
    let r = s.get(&format!("/v2/empty/blobs/{EMPTY_SHA256}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "0");
    assert!(r.bytes().await.expect("body").is_empty());
    // Range on an empty blob cannot be satisfied.
    let r = s
        .req("GET", &format!("/v2/empty/blobs/{EMPTY_SHA256}"))
        .header("range", "bytes=0-0")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */0");
}

#[tokio::test]
async fn blob_range_requests() {
    let s = Server::start().await;
    let data = random_bytes(1000);
    let digest = s.push_blob("ranges", &data).await;
    let path = format!("/v2/ranges/blobs/{digest}");
    for (range, start, end) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=500-5000", 500, 999),
        ("bytes=999-999", 999, 999),
    ] {
        let r = s.req("GET", &path).header("range", range).send().await.expect("GET");
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(header(&r, "content-range"), format!("bytes {start}-{end}/1000"), "{range}");
        assert_eq!(header(&r, "content-length"), (end - start + 1).to_string(), "{range}");
        let body = r.bytes().await.expect("body");
        assert!(body[..] == data[start..=end], "{range} body");
    }
    for range in ["bytes=1000-", "bytes=5-2", "bytes=2000-3000", "bytes=-0"] {
        let r = s.req("GET", &path).header("range", range).send().await.expect("GET");
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(header(&r, "content-range"), "bytes */1000", "{range}");
    }
    // A HEAD with a range is never a server error.
    let r = s.req("HEAD", &path).header("range", "bytes=0-9").send().await.expect("HEAD");
    assert!(r.status() == 200 || r.status() == 206, "HEAD with Range: {}", r.status());
}

#[tokio::test]
async fn cross_repository_mount_both_ways() {
    let s = Server::start().await;
    let data = random_bytes(4096);
    let digest = s.push_blob("src/repo", &data).await;

    // Mounted: the source repository holds the blob.
    let r = s
        .req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo"))
        .send()
        .await
        .expect("POST mount");
    assert_eq!(r.status(), 201, "mount from a repo holding the blob");
    assert!(
        s.resolve(&header(&r, "location")).ends_with(&format!("/v2/dst/repo/blobs/{digest}")),
        "mount Location {:?}",
        header(&r, "location")
    );
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let body = s.get(&format!("/v2/dst/repo/blobs/{digest}")).await.bytes().await.expect("body");
    assert!(body[..] == data[..]);

    // And back the other way, after deleting it from the source.
    let r = s.delete(&format!("/v2/src/repo/blobs/{digest}")).await;
    assert_eq!(r.status(), 202);
    let r = s
        .req("POST", &format!("/v2/src/repo/blobs/uploads/?mount={digest}&from=dst/repo"))
        .send()
        .await
        .expect("POST mount back");
    assert_eq!(r.status(), 201, "mount back into the source");
    assert_eq!(s.head(&format!("/v2/src/repo/blobs/{digest}")).await.status(), 200);

    // Not mounted: the source does not hold it -> an ordinary upload session.
    let other = random_bytes(2048);
    let other_digest = sha256_digest(&other);
    for from in ["src/repo", "nowhere"] {
        let r = s
            .req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={other_digest}&from={from}"))
            .send()
            .await
            .expect("POST mount");
        assert_eq!(r.status(), 202, "mount of a blob {from} does not hold");
        let url = s.resolve(&header(&r, "location"));
        assert!(url.contains("/v2/dst/repo/blobs/uploads/"), "{url}");
        assert!(!header(&r, "docker-upload-uuid").is_empty());
        let r = s
            .req("PUT", &with_query(&url, &format!("digest={other_digest}")))
            .body(other.clone())
            .send()
            .await
            .expect("PUT");
        assert_eq!(r.status(), 201, "finishing the fallback session");
    }
    // A blob pushed to one repo cannot be mounted from a repo that never had it
    // even when it exists in the registry.
    let r =
        s.req("POST", &format!("/v2/third/blobs/uploads/?mount={digest}&from=unrelated")).send().await.expect("POST");
    assert_eq!(r.status(), 202, "mount from a repo without the blob");
    assert_eq!(
        s.head(&format!("/v2/third/blobs/{digest}")).await.status(),
        404,
        "the blob leaked into a repo through a failed mount"
    );
    // Malformed mount parameters never make a server error.
    for q in ["mount=sha256:xyz&from=src/repo", "mount={digest}&from=BAD//name"] {
        let q = q.replace("{digest}", &digest);
        let r = s.req("POST", &format!("/v2/dst/repo/blobs/uploads/?{q}")).send().await.expect("POST");
        let status = assert_not_5xx(r, &format!("POST ?{q}")).await;
        assert!(status == 400 || status == 202, "POST ?{q}: {status}");
    }
}

#[tokio::test]
async fn blob_delete() {
    let s = Server::start().await;
    let digest = s.push_blob("del", &random_bytes(300)).await;
    let r = s.delete(&format!("/v2/del/blobs/{digest}")).await;
    assert_eq!(r.status(), 202, "blob DELETE");
    assert_eq!(s.head(&format!("/v2/del/blobs/{digest}")).await.status(), 404);
    let r = s.get(&format!("/v2/del/blobs/{digest}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "GET deleted blob").await;
    let r = s.delete(&format!("/v2/del/blobs/{digest}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "DELETE deleted blob").await;
    let r = s.delete(&format!("/v2/del/blobs/{EMPTY_SHA256}")).await;
    assert_error(r, 404, "BLOB_UNKNOWN", "DELETE never-pushed blob").await;
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

async fn assert_manifest_served(s: &Server, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
    let digest = sha256_digest(bytes);
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = s
        .req("GET", &path)
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"))
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 200, "GET {path}");
    assert_eq!(header(&r, "content-type"), media_type, "GET {path} Content-Type");
    assert_eq!(header(&r, "docker-content-digest"), digest, "GET {path}");
    assert_eq!(header(&r, "content-length"), bytes.len().to_string());
    assert!(header(&r, "etag").contains(&digest), "ETag {:?}", header(&r, "etag"));
    let body = r.bytes().await.expect("body");
    assert!(body[..] == bytes[..], "GET {path}: bytes differ from what was pushed");

    let r = s.head(&path).await;
    assert_eq!(r.status(), 200, "HEAD {path}");
    assert_eq!(header(&r, "content-type"), media_type, "HEAD {path}");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "content-length"), bytes.len().to_string());
    assert!(r.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn oci_manifest_put_get_head_by_tag_and_digest() {
    let s = Server::start().await;
    let img = Image::random(2);
    s.push_blob("img", &img.config).await;
    for l in &img.layers {
        s.push_blob("img", l).await;
    }
    let r = s.put_manifest("img", "v1", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), img.digest);
    assert!(
        s.resolve(&header(&r, "location")).ends_with(&format!("/v2/img/manifests/{}", img.digest)),
        "manifest Location {:?}",
        header(&r, "location")
    );
    assert!(header(&r, "oci-subject").is_empty(), "no subject, no OCI-Subject");
    assert_manifest_served(&s, "img", "v1", OCI_MANIFEST, &img.manifest).await;
    assert_manifest_served(&s, "img", &img.digest, OCI_MANIFEST, &img.manifest).await;

    // PUT by digest.
    let img2 = Image::from_layers(img.layers.clone());
    s.push_blob("img", &img2.config).await;
    let r = s.put_manifest("img", &img2.digest, OCI_MANIFEST, &img2.manifest).await;
    assert_eq!(r.status(), 201, "PUT by digest");
    assert_eq!(header(&r, "docker-content-digest"), img2.digest);
    assert_manifest_served(&s, "img", &img2.digest, OCI_MANIFEST, &img2.manifest).await;

    // PUT by a digest that is not the body's.
    let r = s.put_manifest("img", &img.digest, OCI_MANIFEST, &img2.manifest).await;
    assert_error(r, 400, "DIGEST_INVALID", "PUT manifest under the wrong digest").await;

    // Re-tagging moves the tag.
    let r = s.put_manifest("img", "v1", OCI_MANIFEST, &img2.manifest).await;
    assert_eq!(r.status(), 201);
    assert_manifest_served(&s, "img", "v1", OCI_MANIFEST, &img2.manifest).await;
    // Pushing the same manifest again is idempotent.
    let r = s.put_manifest("img", "v1", OCI_MANIFEST, &img2.manifest).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn docker_v2_and_manifest_list_stored_byte_for_byte() {
    let s = Server::start().await;
    let config = random_bytes(200);
    let layer = random_bytes(3000);
    let cd = s.push_blob("dock", &config).await;
    let ld = s.push_blob("dock", &layer).await;
    // Unusual formatting and key order: the digest is over these exact bytes.
    let manifest = format!(
        "{{\n   \"schemaVersion\": 2,\n\t\"mediaType\": \"{DOCKER_MANIFEST}\",\n   \"config\": {{ \
         \"size\": {}, \"mediaType\": \"{DOCKER_CONFIG}\", \"digest\": \"{cd}\" }},\n   \
         \"layers\": [ {{\"digest\":\"{ld}\",\"size\":{},\"mediaType\":\"{DOCKER_LAYER}\"}} ]\n}}\n\n",
        config.len(),
        layer.len()
    )
    .into_bytes();
    let md = sha256_digest(&manifest);
    let r = s.put_manifest("dock", "amd64", DOCKER_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "docker-content-digest"), md);
    assert_manifest_served(&s, "dock", "amd64", DOCKER_MANIFEST, &manifest).await;

    let img = Image::random(1);
    s.push_blob("dock", &img.config).await;
    s.push_blob("dock", &img.layers[0]).await;
    assert_eq!(s.put_manifest("dock", &img.digest, OCI_MANIFEST, &img.manifest).await.status(), 201);
    let list = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{DOCKER_LIST}\",\"manifests\":[\
         {{\"mediaType\":\"{DOCKER_MANIFEST}\",\"size\":{},\"digest\":\"{md}\",\
         \"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}},\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"size\":{},\"digest\":\"{}\",\
         \"platform\":{{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}}}]}}   ",
        manifest.len(),
        img.manifest.len(),
        img.digest
    )
    .into_bytes();
    let r = s.put_manifest("dock", "multi", DOCKER_LIST, &list).await;
    assert_eq!(r.status(), 201, "manifest list");
    assert_manifest_served(&s, "dock", "multi", DOCKER_LIST, &list).await;
    assert_manifest_served(&s, "dock", &sha256_digest(&list), DOCKER_LIST, &list).await;

    // An OCI index of the same children.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "size": manifest.len(), "digest": md},
            {"mediaType": OCI_MANIFEST, "size": img.manifest.len(), "digest": img.digest},
        ],
        "annotations": {"org.example": "x"},
    }))
    .expect("json");
    let r = s.put_manifest("dock", "index", OCI_INDEX, &index).await;
    assert_eq!(r.status(), 201, "OCI index");
    assert_manifest_served(&s, "dock", "index", OCI_INDEX, &index).await;

    // An index whose child is missing.
    let missing = sha256_digest(b"no such manifest");
    let bad_index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "size": 10, "digest": missing}],
    }))
    .expect("json");
    let r = s.put_manifest("dock", "broken", OCI_INDEX, &bad_index).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "index with a missing child").await;
}

#[tokio::test]
async fn manifest_with_missing_blobs_is_manifest_blob_unknown() {
    let s = Server::start().await;
    let img = Image::random(2);
    // Nothing pushed.
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "nothing pushed").await;
    // Config only.
    s.push_blob("miss", &img.config).await;
    s.push_blob("miss", &img.layers[0]).await;
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    let v = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "one layer missing").await;
    let _ = v; // the detail, when present, may name the digest
               // The missing layer exists, but only in another repository.
    s.push_blob("elsewhere", &img.layers[1]).await;
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "layer held by another repository only").await;
    // Nothing was stored under the tag or the digest.
    let r = s.get("/v2/miss/manifests/t").await;
    assert_eq!(r.status(), 404);
    let r = s.get(&format!("/v2/miss/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), 404);
    s.push_blob("miss", &img.layers[1]).await;
    let r = s.put_manifest("miss", "t", OCI_MANIFEST, &img.manifest).await;
    assert_eq!(r.status(), 201, "all blobs present now");
}

#[tokio::test]
async fn invalid_manifests_are_manifest_invalid() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("inv", &img.config).await;
    s.push_blob("inv", &img.layers[0]).await;
    let schema1 = br#"{"schemaVersion":1,"name":"inv","tag":"t","architecture":"amd64","fsLayers":[{"blobSum":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}],"history":[{"v1Compatibility":"{}"}],"signatures":[]}"#;
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("schema 1 signed", "application/vnd.docker.distribution.manifest.v1+prettyjws".into(), schema1.to_vec()),
        ("schema 1", "application/vnd.docker.distribution.manifest.v1+json".into(), schema1.to_vec()),
        ("schema 1 as json", "application/json".into(), schema1.to_vec()),
        ("not JSON", OCI_MANIFEST.into(), b"this is not json".to_vec()),
        ("empty body", OCI_MANIFEST.into(), Vec::new()),
        (
            "unknown media type",
            "application/vnd.example.unknown+json".into(),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.example.unknown+json"}"#.to_vec(),
        ),
        ("Content-Type contradicts mediaType", DOCKER_MANIFEST.into(), img.manifest.clone()),
        (
            "schemaVersion 3",
            OCI_MANIFEST.into(),
            String::from_utf8_lossy(&img.manifest).replace("\"schemaVersion\": 2", "\"schemaVersion\": 3").into_bytes(),
        ),
        (
            "image manifest without config",
            OCI_MANIFEST.into(),
            serde_json::to_vec(&json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"layers":[]})).expect("json"),
        ),
        (
            "layer descriptor with a malformed digest",
            OCI_MANIFEST.into(),
            String::from_utf8_lossy(&img.manifest).replace(&sha256_digest(&img.layers[0]), "sha256:1234").into_bytes(),
        ),
    ];
    for (what, ct, body) in cases {
        let r = s.put_manifest("inv", "t", &ct, &body).await;
        let status = r.status().as_u16();
        let v = json(r).await;
        let code = v["errors"][0]["code"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{what}: status ({v})");
        assert!(
            code == "MANIFEST_INVALID" || (what.starts_with("layer") && code == "DIGEST_INVALID"),
            "{what}: code {code}"
        );
    }
    let r = s.get("/v2/inv/manifests/t").await;
    assert_eq!(r.status(), 404, "an invalid manifest was stored");
}

#[tokio::test]
async fn manifest_size_cap_is_4_mib() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("cap", &img.config).await;
    s.push_blob("cap", &img.layers[0]).await;
    const CAP: usize = 4 * 1024 * 1024;
    // A valid manifest padded (via an annotation) to exactly the cap.
    let build = |pad: usize| -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).expect("manifest json");
        v["annotations"] = json!({ "pad": "x".repeat(pad) });
        serde_json::to_vec(&v).expect("json")
    };
    let base = build(0).len();
    let exact = build(CAP - base);
    assert_eq!(exact.len(), CAP);
    let r = s.put_manifest("cap", "exact", OCI_MANIFEST, &exact).await;
    assert_eq!(r.status(), 201, "a 4 MiB manifest is accepted");
    assert_manifest_served(&s, "cap", "exact", OCI_MANIFEST, &exact).await;

    // Oversized bodies: the server may answer before reading the body, so
    // send it from another thread and read the answer meanwhile.
    for (tag, body) in [("over", build(CAP - base + 1)), ("huge", build(3 * CAP))] {
        let head = format!(
            "PUT /v2/cap/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            s.addr,
            body.len()
        );
        let (status, text) = raw_exchange(s.addr, head, body);
        assert_eq!(status, 413, "{tag}: {text}");
        assert!(text.contains("MANIFEST_INVALID"), "{tag}: 413 body must be a MANIFEST_INVALID error: {text:?}");
    }
    // Chunked transfer encoding (no Content-Length) is capped too.
    let over = build(CAP - base + 1);
    let head = format!(
        "PUT /v2/cap/manifests/over HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr
    );
    let mut chunked = Vec::new();
    for piece in over.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_exchange(s.addr, head, chunked);
    assert_eq!(status, 413, "chunked oversize manifest: {text}");
    assert_eq!(s.get("/v2/cap/manifests/over").await.status(), 404);
}

#[tokio::test]
async fn unknown_and_malformed_manifest_references() {
    let s = Server::start().await;
    s.push_image("known", "t", 1).await;
    for (path, code) in [
        ("/v2/known/manifests/nope", "MANIFEST_UNKNOWN"),
        (&format!("/v2/known/manifests/{}", sha256_digest(b"nope")) as &str, "MANIFEST_UNKNOWN"),
    ] {
        let r = s.get(path).await;
        assert_error(r, 404, code, &format!("GET {path}")).await;
        let r = s.head(path).await;
        assert_eq!(r.status(), 404, "HEAD {path}");
        assert!(r.bytes().await.expect("body").is_empty());
    }
    // An unknown repository.
    let r = s.get("/v2/unknown/repo/manifests/latest").await;
    let status = r.status().as_u16();
    let v = json(r).await;
    let code = v["errors"][0]["code"].as_str().unwrap_or_default();
    assert_eq!(status, 404);
    assert!(code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN", "{code}");

    // Malformed references: digests are DIGEST_INVALID; bad tags are a 4xx.
    for reference in ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e"] {
        let r = s.get(&format!("/v2/known/manifests/{reference}")).await;
        assert_error(r, 400, "DIGEST_INVALID", &format!("GET manifest {reference}")).await;
        let r = s.put_manifest("known", reference, OCI_MANIFEST, b"{}").await;
        let status = assert_not_5xx(r, &format!("PUT manifest {reference}")).await;
        assert_eq!(status, 400, "PUT manifest {reference}");
        let r = s.delete(&format!("/v2/known/manifests/{reference}")).await;
        assert_not_5xx(r, &format!("DELETE manifest {reference}")).await;
    }
    let long_tag = "t".repeat(129);
    for reference in ["-dash", ".dot", "a*b", "%20", long_tag.as_str()] {
        let r = s.get(&format!("/v2/known/manifests/{reference}")).await;
        let status = assert_not_5xx(r, &format!("GET manifest {reference:?}")).await;
        assert!(status == 400 || status == 404, "GET manifest {reference:?}: {status}");
        let img = Image::random(0);
        let r = s.put_manifest("known", reference, OCI_MANIFEST, &img.manifest).await;
        let status = assert_not_5xx(r, &format!("PUT manifest {reference:?}")).await;
        assert_eq!(status, 400, "PUT manifest tag {reference:?}");
    }
    // The longest valid tag works.
    let tag = format!("_{}", "x".repeat(127));
    let img = s.push_image("known", &tag, 0).await;
    assert_manifest_served(&s, "known", &tag, OCI_MANIFEST, &img.manifest).await;
}

#[tokio::test]
async fn delete_tag_keeps_manifest_and_delete_digest_removes_tags() {
    let s = Server::start().await;
    let img = s.push_image("deleting", "one", 1).await;
    for t in ["two", "three"] {
        let r = s.put_manifest("deleting", t, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(r.status(), 201);
    }
    let other = s.push_image("deleting", "other", 1).await;

    // Delete a tag: the manifest and the other tags stay.
    let r = s.delete("/v2/deleting/manifests/one").await;
    assert_eq!(r.status(), 202, "DELETE by tag");
    let r = s.get("/v2/deleting/manifests/one").await;
    assert_error(r, 404, "MANIFEST_UNKNOWN", "GET deleted tag").await;
    assert_eq!(
        s.get(&format!("/v2/deleting/manifests/{}", img.digest)).await.status(),
        200,
        "tag delete must keep the manifest"
    );
    assert_eq!(s.get("/v2/deleting/manifests/two").await.status(), 200);
    let tags = json(s.get("/v2/deleting/tags/list").await).await;
    assert_eq!(tags["tags"], json!(["other", "three", "two"]));
    let r = s.delete("/v2/deleting/manifests/one").await;
    assert_error(r, 404, "MANIFEST_UNKNOWN", "DELETE a deleted tag").await;

    // Delete by digest: every tag pointing at it goes too.
    let r = s.delete(&format!("/v2/deleting/manifests/{}", img.digest)).await;
    assert_eq!(r.status(), 202, "DELETE by digest");
    for reference in ["two", "three", img.digest.as_str()] {
        let r = s.get(&format!("/v2/deleting/manifests/{reference}")).await;
        assert_error(r, 404, "MANIFEST_UNKNOWN", &format!("GET {reference} after delete")).await;
    }
    let tags = json(s.get("/v2/deleting/tags/list").await).await;
    assert_eq!(tags["tags"], json!(["other"]), "tags after digest delete");
    assert_manifest_served(&s, "deleting", "other", OCI_MANIFEST, &other.manifest).await;
    let r = s.delete(&format!("/v2/deleting/manifests/{}", img.digest)).await;
    assert_error(r, 404, "MANIFEST_UNKNOWN", "DELETE a deleted digest").await;
    // The blobs of a deleted manifest are still there until deleted themselves.
    assert_eq!(s.head(&format!("/v2/deleting/blobs/{}", sha256_digest(&img.config))).await.status(), 200);
}

// ---------------------------------------------------------------------------
// Referrers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn subject_header_and_referrers_with_and_without_filter() {
    let s = Server::start().await;
    let subject = s.push_image("refs", "base", 1).await;
    let subject_desc = json!({
        "mediaType": OCI_MANIFEST,
        "digest": subject.digest,
        "size": subject.manifest.len(),
    });
    // An empty config ("{}") is the usual artifact config.
    let empty = b"{}".to_vec();
    s.push_blob("refs", &empty).await;
    let sig_layer = random_bytes(64);
    s.push_blob("refs", &sig_layer).await;

    let mut referrers = Vec::new();
    for (artifact, annotations) in [
        ("application/vnd.example.sig", json!({"kind": "sig"})),
        ("application/vnd.example.sbom", json!({"kind": "sbom"})),
    ] {
        let m = oci_manifest(&empty, std::slice::from_ref(&sig_layer), Some(subject_desc.clone()), Some(artifact));
        let mut v: serde_json::Value = serde_json::from_slice(&m).expect("json");
        v["config"]["mediaType"] = json!("application/vnd.oci.empty.v1+json");
        v["annotations"] = annotations;
        let m = serde_json::to_vec(&v).expect("json");
        let d = sha256_digest(&m);
        let r = s.put_manifest("refs", &d, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), 201, "push referrer {artifact}");
        assert_eq!(header(&r, "oci-subject"), subject.digest, "OCI-Subject on a manifest with a subject");
        referrers.push((artifact, d, m.len()));
    }
    // A referrer without artifactType: its config media type counts.
    let cfg = random_bytes(10);
    s.push_blob("refs", &cfg).await;
    let m = oci_manifest(&cfg, &[], Some(subject_desc.clone()), None);
    let d3 = sha256_digest(&m);
    let r = s.put_manifest("refs", &d3, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "oci-subject"), subject.digest);

    let path = format!("/v2/refs/referrers/{}", subject.digest);
    let r = s.get(&path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(header(&r, "oci-filters-applied").is_empty(), "unfiltered");
    let v = json(r).await;
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 3, "all referrers: {v}");
    for (artifact, d, size) in &referrers {
        let e = list.iter().find(|e| e["digest"] == json!(d)).unwrap_or_else(|| panic!("referrer {d} missing in {v}"));
        assert_eq!(e["mediaType"], OCI_MANIFEST);
        assert_eq!(e["size"], json!(size));
        assert_eq!(e["artifactType"], json!(artifact));
        assert!(e["annotations"]["kind"].is_string(), "annotations copied: {e}");
    }
    let e3 = list.iter().find(|e| e["digest"] == json!(d3)).expect("config-typed referrer");
    assert_eq!(e3["artifactType"], OCI_CONFIG);

    // Filtered.
    let r = s.get(&format!("{path}?artifactType=application/vnd.example.sbom")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v = json(r).await;
    let list = v["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 1, "filtered: {v}");
    assert_eq!(list[0]["digest"], json!(referrers[1].1));
    let r = s.get(&format!("{path}?artifactType=application/vnd.none")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    assert_eq!(json(r).await["manifests"], json!([]));

    // Unknown subject: an empty index, 200.
    let r = s.get(&format!("/v2/refs/referrers/{}", sha256_digest(b"unknown"))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v = json(r).await;
    assert_eq!(v["manifests"], json!([]));
    assert_eq!(v["schemaVersion"], 2);
    // Malformed digest.
    let r = s.get("/v2/refs/referrers/sha256:xyz").await;
    assert_error(r, 400, "DIGEST_INVALID", "referrers of a malformed digest").await;
    let r = s.get("/v2/refs/referrers/latest").await;
    let status = assert_not_5xx(r, "referrers of a tag").await;
    assert!(status == 400 || status == 404, "referrers/latest: {status}");

    // Deleting a referrer removes it from the list.
    let r = s.delete(&format!("/v2/refs/manifests/{}", referrers[0].1)).await;
    assert_eq!(r.status(), 202);
    let v = json(s.get(&path).await).await;
    let list = v["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 2, "after deleting one referrer: {v}");
    assert!(list.iter().all(|e| e["digest"] != json!(referrers[0].1)));

    // A referrer may be pushed before its subject exists.
    let future_subject = json!({
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(b"not yet pushed"),
        "size": 14,
    });
    let m = oci_manifest(&empty, &[], Some(future_subject), Some("application/vnd.example.x"));
    let r = s.put_manifest("refs", "early", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "referrer before its subject");
    assert_eq!(header(&r, "oci-subject"), sha256_digest(b"not yet pushed"));
    let v = json(s.get(&format!("/v2/refs/referrers/{}", sha256_digest(b"not yet pushed"))).await).await;
    assert_eq!(v["manifests"].as_array().map(Vec::len), Some(1), "{v}");
    // Referrers are per repository.
    let v = json(s.get(&format!("/v2/elsewhere/referrers/{}", subject.digest)).await).await;
    assert_eq!(v["manifests"], json!([]), "referrers leaked across repos");
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

/// Parses `Link: </v2/...?n=N&last=X>; rel="next"`; returns the path.
fn next_link(r: &reqwest::Response) -> Option<String> {
    let link = header(r, "link");
    if link.is_empty() {
        return None;
    }
    assert!(link.contains("rel=\"next\""), "Link {link:?} has no rel=\"next\"");
    let start = link.find('<').expect("Link has <") + 1;
    let end = link.find('>').expect("Link has >");
    Some(link[start..end].to_owned())
}

#[tokio::test]
async fn tags_list_and_pagination() {
    let s = Server::start().await;
    let img = s.push_image("paged/repo", "latest", 0).await;
    let mut tags = vec!["latest".to_owned()];
    for t in ["v10", "v2", "A", "_under", "v1.0", "b-1", "z", "v1"] {
        let r = s.put_manifest("paged/repo", t, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(r.status(), 201, "tag {t}");
        tags.push(t.to_owned());
    }
    tags.sort();
    let v = json(s.get("/v2/paged/repo/tags/list").await).await;
    assert_eq!(v["name"], "paged/repo");
    assert_eq!(v["tags"], json!(tags), "all tags in lexical order");

    for n in [1usize, 2, 3, 4, 8, 9] {
        let mut got: Vec<String> = Vec::new();
        let mut path = format!("/v2/paged/repo/tags/list?n={n}");
        let mut pages = 0;
        loop {
            let r = s.get(&path).await;
            assert_eq!(r.status(), 200, "{path}");
            let link = next_link(&r);
            let v = json(r).await;
            let page: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap_or_default();
            assert!(page.len() <= n, "{path}: {} tags", page.len());
            got.extend(page.iter().cloned());
            pages += 1;
            assert!(pages <= tags.len() + 1, "pagination does not end");
            match link {
                Some(l) => {
                    assert!(l.starts_with("/v2/paged/repo/tags/list?"), "Link target {l}");
                    assert!(l.contains(&format!("n={n}")), "Link keeps n: {l}");
                    assert!(
                        l.contains(&format!("last={}", page.last().expect("non-empty page"))),
                        "Link last= names the page's last tag: {l}"
                    );
                    path = l;
                }
                None => break,
            }
        }
        assert_eq!(got, tags, "pages of {n} put together");
        assert_eq!(pages, tags.len().div_ceil(n).max(1), "number of pages of {n}");
    }
    // last without n; last between tags; last past the end.
    let v = json(s.get("/v2/paged/repo/tags/list?last=v1").await).await;
    let after: Vec<&String> = tags.iter().filter(|t| t.as_str() > "v1").collect();
    assert_eq!(v["tags"], json!(after), "last=v1");
    let v = json(s.get("/v2/paged/repo/tags/list?last=m").await).await;
    let after: Vec<&String> = tags.iter().filter(|t| t.as_str() > "m").collect();
    assert_eq!(v["tags"], json!(after), "last=m (not a tag)");
    let r = s.get("/v2/paged/repo/tags/list?last=zz&n=5").await;
    assert_eq!(r.status(), 200);
    assert!(next_link(&r).is_none(), "no Link after the end");
    let v = json(r).await;
    assert!(v["tags"].as_array().is_none_or(Vec::is_empty), "last past the end: {v}");
    // n=0: an empty page (or a 400), never more.
    let r = s.get("/v2/paged/repo/tags/list?n=0").await;
    let status = r.status().as_u16();
    if status == 200 {
        let v = json(r).await;
        assert!(v["tags"].as_array().is_none_or(Vec::is_empty), "n=0: {v}");
    } else {
        assert_not_5xx(r, "n=0").await;
    }
    for q in ["n=abc", "n=-1", "n=99999999999999999999999", "last="] {
        let r = s.get(&format!("/v2/paged/repo/tags/list?{q}")).await;
        assert_not_5xx(r, &format!("tags/list?{q}")).await;
    }
    // Unknown repository.
    let r = s.get("/v2/never/pushed/tags/list").await;
    assert_error(r, 404, "NAME_UNKNOWN", "tags of an unknown repository").await;
}

#[tokio::test]
async fn catalog_and_pagination() {
    let s = Server::start().await;
    let v = json(s.get("/v2/_catalog").await).await;
    assert_eq!(v["repositories"], json!([]), "empty registry catalog");
    let mut repos = vec![
        "alpha".to_owned(),
        "beta/one".to_owned(),
        "beta/two".to_owned(),
        "gamma".to_owned(),
        "a-b/c.d/e_f".to_owned(),
    ];
    for r in &repos {
        s.push_image(r, "t", 0).await;
    }
    // A repository with only a blob (no manifest) is not listed.
    s.push_blob("blobonly", b"x").await;
    repos.sort();
    let r = s.get("/v2/_catalog").await;
    assert_eq!(r.status(), 200);
    assert!(next_link(&r).is_none());
    let v = json(r).await;
    assert_eq!(v["repositories"], json!(repos));
    for n in [1usize, 2, 4, 5] {
        let mut got: Vec<String> = Vec::new();
        let mut path = format!("/v2/_catalog?n={n}");
        let mut pages = 0;
        loop {
            let r = s.get(&path).await;
            assert_eq!(r.status(), 200, "{path}");
            let link = next_link(&r);
            let v = json(r).await;
            let page: Vec<String> = serde_json::from_value(v["repositories"].clone()).unwrap_or_default();
            assert!(page.len() <= n);
            got.extend(page.iter().cloned());
            pages += 1;
            assert!(pages <= repos.len() + 1, "pagination does not end");
            match link {
                Some(l) => {
                    assert!(l.starts_with("/v2/_catalog?"), "Link target {l}");
                    assert!(l.contains(&format!("n={n}")), "{l}");
                    path = l;
                }
                None => break,
            }
        }
        assert_eq!(got, repos, "catalog pages of {n}");
    }
    let v = json(s.get("/v2/_catalog?last=beta/one").await).await;
    assert_eq!(v["repositories"], json!(["beta/two", "gamma"]));
    // Deleting the only manifest of a repository removes it from the catalog
    // or keeps it; either way the catalog still answers.
    let r = s.get("/v2/_catalog?n=abc").await;
    assert_not_5xx(r, "_catalog?n=abc").await;
}

// ---------------------------------------------------------------------------
// Robustness: client mistakes are never server errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn client_mistakes_never_cause_500() {
    let s = Server::start().await;
    let img = s.push_image("robust", "t", 1).await;
    let d = img.digest.clone();
    let requests: Vec<(&str, String)> = vec![
        ("PUT", "/v2/".into()),
        ("DELETE", "/v2/".into()),
        ("GET", "/v2/robust".into()),
        ("GET", "/v2/robust/".into()),
        ("GET", "/v2/robust/manifests/".into()),
        ("PUT", "/v2/robust/manifests/".into()),
        ("GET", "/v2/robust/blobs/".into()),
        ("GET", "/v2/robust/blobs/uploads".into()),
        ("GET", "/v2/robust/blobs/uploads/".into()),
        ("PATCH", "/v2/robust/blobs/uploads/".into()),
        ("PUT", "/v2/robust/blobs/uploads/".into()),
        ("DELETE", "/v2/robust/blobs/uploads/".into()),
        ("POST", "/v2/robust/manifests/t".into()),
        ("PATCH", "/v2/robust/manifests/t".into()),
        ("PUT", format!("/v2/robust/blobs/{d}")),
        ("POST", format!("/v2/robust/blobs/{d}")),
        ("PATCH", format!("/v2/robust/blobs/{d}")),
        ("POST", "/v2/robust/tags/list".into()),
        ("DELETE", "/v2/robust/tags/list".into()),
        ("GET", "/v2/robust/tags".into()),
        ("GET", "/v2/robust/referrers/".into()),
        ("PUT", format!("/v2/robust/referrers/{d}")),
        ("POST", "/v2/_catalog".into()),
        ("GET", "/v2/_catalog/extra".into()),
        ("GET", "/v2//manifests/t".into()),
        ("GET", "/v2/manifests/t".into()),
        ("GET", "/v2/robust/manifests/t/extra".into()),
        ("GET", "/v3/".into()),
        ("GET", "/".into()),
        ("GET", "/v2/robust/manifests/t?%ZZ=1".into()),
        ("GET", "/v2/robust/blobs/uploads/%ff%fe".into()),
        ("GET", "/v2/%ff/manifests/t".into()),
        ("GET", "/v2/robust/manifests/%00".into()),
        ("POST", "/v2/robust/blobs/uploads/?digest=".into()),
        ("POST", "/v2/robust/blobs/uploads/?mount=".into()),
        ("POST", "/v2/robust/blobs/uploads/?mount=&from=".into()),
        ("GET", "/v2/robust/referrers/sha256:".into()),
        ("GET", "/v2/robust/referrers/sha512:abc".into()),
        ("GET", format!("/v2/{}/manifests/t", "a/".repeat(4000) + "a")),
        ("GET", format!("/v2/robust/tags/list?n=1&last={}", "z".repeat(10_000))),
        ("GET", format!("/v2/robust/manifests/{}", "t".repeat(10_000))),
        ("GET", format!("/v2/robust/blobs/sha256:{}", "a".repeat(10_000))),
        ("GET", "/v2/robust/tags/list?n=18446744073709551615".into()),
        ("GET", "/v2/_catalog?n=18446744073709551615&last=zzz".into()),
    ];
    for (method, path) in &requests {
        let r = s.req(method, path).send().await.expect("request");
        assert_not_5xx(r, &format!("{method} {path}")).await;
    }
    // Known paths with the wrong method are 404 or 405, not a server error,
    // and 405 only where the spec allows it (UNSUPPORTED or no body).
    let r = s.req("POST", "/v2/robust/manifests/t").send().await.expect("r");
    let status = r.status().as_u16();
    assert!(status == 404 || status == 405 || status == 400, "POST to a manifest: {status}");
    // Odd headers.
    let r = s
        .req("GET", &format!("/v2/robust/blobs/{}", sha256_digest(&img.config)))
        .header("range", "bytes=abc")
        .send()
        .await
        .expect("r");
    assert_not_5xx(r, "Range: bytes=abc").await;
    let r = s
        .req("PUT", "/v2/robust/manifests/u")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
        .body(img.manifest.clone())
        .send()
        .await
        .expect("r");
    assert_not_5xx(r, "manifest with Content-Type parameters").await;
    // A raw request with a garbage request line.
    let status = raw_request(s.addr, b"GARBAGE\r\n\r\n", true);
    assert!(status.is_none_or(|c| c < 500), "garbage request line: {status:?}");
    // The server is still healthy after all of that.
    assert_eq!(s.get("/v2/").await.status(), 200);
    assert!(!s.logs().contains("panicked"), "the server panicked:\n{}", s.logs_tail(4000));
}

// ---------------------------------------------------------------------------
// Server: configuration, layout, proxies, shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn config_file_sets_listen_and_root_and_layout_matches_readme() {
    let opts = ServerOptions {
        config: Some(
            "[server]\nlisten = \"@LISTEN@\"\nlog_format = \"json\"\n\n\
             [storage]\nkind = \"filesystem\"\nroot = \"@DATA@\"\n"
                .into(),
        ),
        no_flags: true,
        ..Default::default()
    };
    let s = Server::start_with(opts).await;
    let img = s.push_image("lay/out", "t", 1).await;
    let layer_digest = sha256_digest(&img.layers[0]);
    let hex = layer_digest.trim_start_matches("sha256:");
    let blob = s.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    assert!(blob.is_file(), "blob not at {}", blob.display());
    assert_eq!(std::fs::read(&blob).expect("blob"), img.layers[0]);
    assert!(s.data_dir.join("tmp").is_dir(), "tmp/ missing");
    let repo = s.data_dir.join("repositories/lay/out");
    for sub in ["_manifests", "_tags"] {
        assert!(repo.join(sub).is_dir(), "{} missing", repo.join(sub).display());
    }
    // JSON logs: at least one request line names the path.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.logs();
    let json_lines: Vec<serde_json::Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!json_lines.is_empty(), "log_format = json gave no JSON lines:\n{logs}");
    let line = json_lines
        .iter()
        .find(|v| v.to_string().contains("/v2/lay/out/manifests/t"))
        .unwrap_or_else(|| panic!("no JSON request log for the manifest PUT:\n{logs}"));
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            for (k, v) in o {
                out.push(k.to_ascii_lowercase());
                keys(v, out);
            }
        }
    }
    let mut names = Vec::new();
    keys(line, &mut names);
    // The issue asks for a request id, method, path, status, bytes and duration.
    for want in ["id", "method", "path", "status", "bytes", "duration"] {
        assert!(names.iter().any(|k| k.contains(want)), "request log has no {want} field: {line}");
    }
    fn status_of(v: &serde_json::Value) -> Option<String> {
        let o = v.as_object()?;
        o.iter().find_map(|(k, v)| {
            if k.to_ascii_lowercase().contains("status") {
                Some(v.to_string().trim_matches('"').to_owned())
            } else {
                status_of(v)
            }
        })
    }
    assert_eq!(status_of(line).as_deref(), Some("201"), "request log status: {line}");
}

#[tokio::test]
async fn unknown_config_keys_are_rejected_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (cfg, key) in [
        ("[server]\nlisten = \"127.0.0.1:0\"\nbogus_key = 1\n", "bogus_key"),
        ("[storage]\nkind = \"filesystem\"\nrooot = \"/tmp/x\"\n", "rooot"),
        ("[mystery]\na = 1\n", "mystery"),
    ] {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, cfg).expect("write");
        let mut child = std::process::Command::new(cove_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("cove kept running with an unknown key {key:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(!status.success(), "unknown key {key:?} accepted");
        assert!(err.contains(key), "the error must name {key:?}: {err}");
    }
}

#[tokio::test]
async fn locations_honour_public_url_and_forwarded_headers() {
    let opts = ServerOptions {
        config: Some("[server]\npublic_url = \"https://registry.example.com\"\n".into()),
        ..Default::default()
    };
    let s = Server::start_with(opts).await;
    let r = s.req("POST", "/v2/proxied/blobs/uploads/").send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(
        loc.starts_with("/v2/proxied/blobs/uploads/")
            || loc.starts_with("https://registry.example.com/v2/proxied/blobs/uploads/"),
        "with public_url, Location is {loc:?}"
    );

    let s = Server::start().await;
    let r = s
        .req("POST", "/v2/proxied/blobs/uploads/")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "cache.example.org")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(
        loc.starts_with("/v2/proxied/blobs/uploads/")
            || loc.starts_with("https://cache.example.org/v2/proxied/blobs/uploads/"),
        "behind a proxy, Location is {loc:?}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut s = Server::start().await;
    s.push_image("bye", "t", 1).await;
    let status = s.terminate(Duration::from_secs(15));
    let status = status.expect("cove did not exit within 15 s of SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}; logs:\n{}", s.logs_tail(2000));
}

// ---------------------------------------------------------------------------
// Content-Type handling and concurrency
// ---------------------------------------------------------------------------

#[tokio::test]
async fn manifest_media_type_from_body_or_header() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("mt", &img.config).await;
    s.push_blob("mt", &img.layers[0]).await;
    // No Content-Type: the body's mediaType decides.
    let r = s.req("PUT", "/v2/mt/manifests/nohdr").body(img.manifest.clone()).send().await.expect("PUT");
    assert_eq!(r.status(), 201, "manifest PUT without Content-Type");
    assert_manifest_served(&s, "mt", "nohdr", OCI_MANIFEST, &img.manifest).await;
    // No mediaType in the body: the Content-Type decides.
    let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).expect("json");
    v.as_object_mut().expect("object").remove("mediaType");
    let bare = serde_json::to_vec(&v).expect("json");
    let r = s.put_manifest("mt", "bare", OCI_MANIFEST, &bare).await;
    assert_eq!(r.status(), 201, "manifest without mediaType");
    assert_manifest_served(&s, "mt", "bare", OCI_MANIFEST, &bare).await;
}

#[tokio::test]
async fn concurrent_chunks_at_the_same_offset_do_not_interleave() {
    let s = Server::start().await;
    for round in 0..5 {
        let url = s.start_upload("race").await;
        let a = random_bytes(2 << 20);
        let b = random_bytes(2 << 20);
        let send = |data: Vec<u8>| {
            let req = s
                .req("PATCH", &url)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("0-{}", data.len() - 1))
                .body(data);
            async move { req.send().await.expect("PATCH").status().as_u16() }
        };
        let (sa, sb) = tokio::join!(send(a.clone()), send(b.clone()));
        let mut statuses = [sa, sb];
        statuses.sort();
        assert!(
            statuses == [202, 416] || statuses == [202, 409] || statuses == [202, 400],
            "round {round}: two PATCHes at offset 0 gave {statuses:?}; exactly one may win"
        );
        let r = s.req("GET", &url).send().await.expect("status");
        assert_eq!(header(&r, "range"), format!("0-{}", a.len() - 1), "round {round}");
        let winner = if sa == 202 { &a } else { &b };
        let r =
            s.req("PUT", &with_query(&url, &format!("digest={}", sha256_digest(winner)))).send().await.expect("PUT");
        assert_eq!(r.status(), 201, "round {round}: the session must hold exactly the winning chunk");
    }
}

#[tokio::test]
async fn concurrent_uploads_of_one_blob_and_tag_updates_stay_consistent() {
    let s = Server::start().await;
    let data = random_bytes(8 << 20);
    let digest = sha256_digest(&data);
    let pushes = (0..4).map(|i| {
        let repo = format!("same/r{}", i % 2);
        let data = data.clone();
        let digest = digest.clone();
        let s = &s;
        async move {
            let r = s
                .req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"))
                .header("content-type", "application/octet-stream")
                .body(data)
                .send()
                .await
                .expect("POST");
            r.status().as_u16()
        }
    });
    let statuses = futures::future::join_all(pushes).await;
    assert!(statuses.iter().all(|s| *s == 201), "concurrent pushes of one blob: {statuses:?}");
    for repo in ["same/r0", "same/r1"] {
        let body = s.get(&format!("/v2/{repo}/blobs/{digest}")).await.bytes().await.expect("body");
        assert!(body[..] == data[..], "{repo}: blob differs");
    }
    assert_eq!(assert_blobs_verified(&s.data_dir), 1, "one file per digest");

    // Racing tag updates: the tag ends on one of the manifests, and what GET
    // serves matches its Docker-Content-Digest.
    let imgs: Vec<Image> = (0..6).map(|_| Image::random(0)).collect();
    for img in &imgs {
        s.push_blob("same/r0", &img.config).await;
    }
    let puts = imgs.iter().map(|img| s.put_manifest("same/r0", "racy", OCI_MANIFEST, &img.manifest));
    for r in futures::future::join_all(puts).await {
        assert_eq!(r.status(), 201);
    }
    let r = s.get("/v2/same/r0/manifests/racy").await;
    assert_eq!(r.status(), 200);
    let d = header(&r, "docker-content-digest");
    let body = r.bytes().await.expect("body");
    assert_eq!(sha256_digest(&body), d, "served bytes do not match Docker-Content-Digest");
    assert!(imgs.iter().any(|i| i.digest == d), "tag points at a manifest never pushed to it");
}

#[tokio::test]
async fn upload_sessions_cannot_be_used_through_another_repository() {
    let s = Server::start().await;
    let url = s.start_upload("owner/repo").await;
    let intruder = url.replace("/v2/owner/repo/", "/v2/intruder/");
    assert_ne!(intruder, url);
    let data = random_bytes(100);
    let r = s
        .req("PATCH", &intruder)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .expect("PATCH");
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "PATCH through another repo").await;
    let r = s
        .req("PUT", &with_query(&intruder, &format!("digest={}", sha256_digest(&data))))
        .body(data.clone())
        .send()
        .await
        .expect("PUT");
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "PUT through another repo").await;
    let r = s.req("DELETE", &intruder).send().await.expect("DELETE");
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "DELETE through another repo").await;
    assert_eq!(s.head(&format!("/v2/intruder/blobs/{}", sha256_digest(&data))).await.status(), 404);
    // The owner's session is intact.
    let r = s.req("GET", &url).send().await.expect("status");
    assert_eq!(r.status(), 204);
    let range = header(&r, "range");
    assert!(range == "0-0" || range.is_empty(), "intruder changed the session: {range}");
}

#[tokio::test]
async fn default_data_dir_is_data_under_the_working_directory() {
    let s = Server::start_with(ServerOptions { omit_data_dir: true, ..Default::default() }).await;
    let data = random_bytes(500);
    let digest = s.push_blob("defaults", &data).await;
    let hex = digest.trim_start_matches("sha256:");
    let blob = s.tmp.path().join("data/blobs/sha256").join(&hex[..2]).join(hex);
    assert!(blob.is_file(), "without --data-dir the blob should be at {}", blob.display());
}

#[tokio::test]
async fn default_listen_address_is_port_5050() {
    // Only meaningful when 5050 is free here; otherwise say so loudly.
    if std::net::TcpListener::bind("0.0.0.0:5050").is_err() {
        panic!("port 5050 is in use on this machine, so `cove serve`'s default listen address cannot be tested");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = std::process::Command::new(cove_bin())
        .arg("serve")
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn cove");
    let client = http_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ok = loop {
        if let Ok(r) = client.get("http://127.0.0.1:5050/v2/").send().await {
            break r.status() == 200 && header(&r, "docker-distribution-api-version") == "registry/2.0";
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "`cove serve` with no flags did not answer on 0.0.0.0:5050");
    assert!(tmp.path().join("data").is_dir(), "`cove serve` with no flags did not create ./data");
}

#[tokio::test]
async fn deleted_blobs_and_foreign_layers_in_manifests() {
    let s = Server::start().await;
    let img = Image::random(1);
    s.push_blob("gone", &img.config).await;
    let layer = s.push_blob("gone", &img.layers[0]).await;
    assert_eq!(s.delete(&format!("/v2/gone/blobs/{layer}")).await.status(), 202);
    let r = s.put_manifest("gone", "t", OCI_MANIFEST, &img.manifest).await;
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN", "manifest naming a deleted blob").await;

    // A non-distributable layer with `urls` need not be in the registry.
    let foreign = random_bytes(100);
    let mut v: serde_json::Value = serde_json::from_slice(&img.manifest).expect("json");
    v["layers"] = json!([{
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": sha256_digest(&foreign),
        "size": foreign.len(),
        "urls": ["https://example.com/layer.tar.gz"],
    }]);
    let m = serde_json::to_vec(&v).expect("json");
    let r = s.put_manifest("gone", "foreign", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), 201, "foreign layer with urls");
    assert_manifest_served(&s, "gone", "foreign", OCI_MANIFEST, &m).await;
}
