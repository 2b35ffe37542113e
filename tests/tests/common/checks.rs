//! Checks of responses (headers, JSON, OCI errors, streamed bytes), the
//! blobs on disk, metrics scraping, the `cove` CLI, request logs and tokens.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use super::*;

/// Appends a query string to a URL that may already have one.
pub fn with_query(url: &str, q: &str) -> String {
    if url.contains('?') {
        format!("{url}&{q}")
    } else {
        format!("{url}?{q}")
    }
}

/// A response header as a string ("" when absent).
pub fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// Reads a response as JSON, panicking with the body when it is not.
pub async fn json(r: reqwest::Response) -> serde_json::Value {
    let status = r.status();
    let text = r.text().await.expect("response body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"))
}

/// Asserts an OCI error response: `status`, JSON error body whose first
/// error has `code`, a non-empty message. Returns the body.
pub async fn assert_error(r: reqwest::Response, status: u16, code: &str, what: &str) -> serde_json::Value {
    let got = r.status().as_u16();
    let ct = header(&r, "content-type");
    let text = r.text().await.expect("error body");
    assert_eq!(got, status, "{what}: status (body {text:?})");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {text:?}"));
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("{what}: no errors array in {text}"));
    assert!(!errors.is_empty(), "{what}: empty errors array");
    let codes: Vec<&str> = errors.iter().filter_map(|e| e["code"].as_str()).collect();
    assert!(codes.contains(&code), "{what}: expected code {code}, got {codes:?} in {text}");
    assert!(errors.iter().all(|e| e["message"].is_string()), "{what}: every error needs a message: {text}");
    assert!(ct.starts_with("application/json"), "{what}: error Content-Type is {ct:?}");
    v
}

/// Reads a response body and checks it equals `pattern[start..end)`, chunk
/// by chunk, without holding it; returns the number of bytes read.
pub async fn verify_stream_equals(resp: reqwest::Response, pattern: &Pattern, start: u64) -> u64 {
    pattern.verify(resp.bytes_stream(), start).await
}

/// Checks that every file under `<data>/blobs/sha256` is named by its
/// content's digest; returns how many there are.
pub fn assert_blobs_verified(data_dir: &Path) -> usize {
    let files = files_under(&data_dir.join("blobs"));
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("file name");
        let mut h = Sha256::new();
        let mut file = std::fs::File::open(f).expect("open blob");
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).expect("read blob");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        assert_eq!(hex::encode(h.finalize()), name, "{} is not a complete, verified blob", f.display());
        let parent = f.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
        assert_eq!(parent, Some(&name[..2]), "{} not under its 2-hex prefix", f.display());
    }
    files.len()
}

/// Parses Prometheus text into `name{labels}` → value (labels as printed).
pub fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// `GET /metrics`, checked and parsed with [`parse_metrics`].
pub async fn scrape(s: &Server) -> std::collections::HashMap<String, f64> {
    let r = s.get("/metrics").await;
    assert_eq!(r.status(), 200, "/metrics");
    assert!(header(&r, "content-type").starts_with("text/plain"), "content type");
    parse_metrics(&r.text().await.expect("metrics body"))
}

/// Runs `cove ARGS` (quiet logs); returns (success, stdout, stderr).
pub fn cove(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cove_bin()).args(args).env("COVE_LOG", "warn").output().expect("run cove");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The request lines of a Cove log as (method, path, status, auth scheme).
pub fn request_log(logs: &str) -> Vec<(String, String, u16, String)> {
    let field = |line: &str, k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    };
    logs.lines()
        .filter(|l| l.contains(" request") && l.contains("path="))
        .map(|l| (field(l, "method"), field(l, "path"), field(l, "status").parse().unwrap_or(0), field(l, "auth")))
        .collect()
}

/// `GET /token` on `s` with a password, for pull+push on `repo`: the token.
pub async fn password_token(s: &Server, user: &str, password: &str, repo: &str) -> String {
    let r = s
        .http
        .get(s.url(&format!("/token?service=cove&scope=repository:{repo}:pull,push")))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("GET /token");
    assert_eq!(r.status(), 200, "{}: /token for {user}", s.base);
    json(r).await["token"].as_str().expect("token").to_owned()
}

/// The `kid` header of a JWT.
pub fn jwt_kid(token: &str) -> String {
    use base64::Engine as _;
    let head = token.split('.').next().expect("jwt header");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).expect("base64 header");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json header");
    v["kid"].as_str().expect("kid").to_owned()
}
