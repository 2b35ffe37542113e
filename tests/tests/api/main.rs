//! The OCI Distribution API, endpoint by endpoint, through the real `cove`
//! binary over HTTP: positive and negative cases, status codes, error codes
//! and headers.

#[path = "../common/mod.rs"]
mod common;

mod blobs;
mod discovery;
mod manifests;
mod robustness;
mod server;
mod uploads;

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

/// Asserts that `r` answers a finished upload (or mount) of `digest` into
/// `repo`: `Location` ends with `/v2/<repo>/blobs/<digest>` and
/// `Docker-Content-Digest` is `digest`.
fn assert_blob_location(s: &Server, r: &reqwest::Response, repo: &str, digest: &str) {
    let location = header(r, "location");
    assert!(s.resolve(&location).ends_with(&format!("/v2/{repo}/blobs/{digest}")), "Location {location:?}");
    assert_eq!(header(r, "docker-content-digest"), digest);
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
