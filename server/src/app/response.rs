//! Response builders shared by the handlers.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use cove_core::registry::Page;
use cove_core::{Digest, RegistryError, RepoName};

use crate::body::{self, Body};

pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

/// All warning text one response may carry, as the spec caps it.
const MAX_WARNING_BYTES: usize = 4096;

/// Adds a `Warning: 299 - "<text>"` header, the only form the spec allows
/// (warn-code 299, warn-agent `-`, no date). `"` and `\` are escaped,
/// control characters dropped and other non-ASCII shown as `?`; a warning
/// that would take the response's warnings past 4096 bytes is not added.
/// Clients only show warnings.
pub fn add_warning(h: &mut HeaderMap, text: &str) {
    let mut quoted = String::with_capacity(text.len() + 2);
    for c in text.chars().filter(|c| !c.is_control()).map(|c| if c.is_ascii() { c } else { '?' }) {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    let value = format!("299 - \"{quoted}\"");
    let used: usize = h.get_all(http::header::WARNING).iter().map(|v| v.len()).sum();
    if used + value.len() > MAX_WARNING_BYTES {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.append(http::header::WARNING, v);
    }
}

pub fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

pub fn status_response(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

pub fn typed_response(status: StatusCode, content_type: &str, bytes: Bytes) -> Response<Body> {
    let len = bytes.len();
    let mut resp = Response::new(body::full(bytes));
    *resp.status_mut() = status;
    set(resp.headers_mut(), http::header::CONTENT_TYPE, content_type);
    set(resp.headers_mut(), http::header::CONTENT_LENGTH, &len.to_string());
    resp
}

pub fn json_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    typed_response(status, "application/json", bytes)
}

pub fn page_response(key: &str, repo: Option<&RepoName>, page: Page, n: Option<usize>) -> Response<Body> {
    let mut doc = serde_json::json!({ key: page.items });
    if let Some(repo) = repo {
        doc["name"] = serde_json::Value::String(repo.to_string());
    }
    let mut resp = json_response(StatusCode::OK, Bytes::from(doc.to_string()));
    if let (Some(last), Some(n)) = (page.next_last, n) {
        let path = match repo {
            Some(r) => format!("/v2/{r}/tags/list"),
            None => "/v2/_catalog".to_owned(),
        };
        let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
        set(resp.headers_mut(), http::header::LINK, &format!("<{path}?n={n}&last={last}>; rel=\"next\""));
    }
    resp
}

pub fn blob_created(base: &str, repo: &RepoName, digest: &Digest) -> Response<Body> {
    let mut resp = status_response(StatusCode::CREATED);
    let h = resp.headers_mut();
    set(h, http::header::LOCATION, &format!("{base}/v2/{repo}/blobs/{digest}"));
    set(h, CONTENT_DIGEST, &digest.to_string());
    resp
}

pub fn upload_accepted(base: &str, repo: &RepoName, id: &str, size: u64, status: StatusCode) -> Response<Body> {
    let mut resp = status_response(status);
    let h = resp.headers_mut();
    set(h, http::header::LOCATION, &format!("{base}/v2/{repo}/blobs/uploads/{id}"));
    set(h, http::header::RANGE, &crate::error::upload_range(size));
    set(h, UPLOAD_UUID, id);
    resp
}

/// A `text/plain` response.
pub fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from_static(s.as_bytes())));
    *resp.status_mut() = status;
    set(resp.headers_mut(), http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    resp
}

/// A JSON document (no `Content-Length`: the body is sent as it is).
pub fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    set(resp.headers_mut(), http::header::CONTENT_TYPE, "application/json");
    resp
}

pub fn method_not_allowed() -> RegistryError {
    RegistryError::unsupported("method not allowed on this endpoint")
}

pub use cove_core::manifest::too_large as manifest_too_large;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_have_the_spec_form_and_cap() {
        let mut h = HeaderMap::new();
        add_warning(&mut h, "served \"stale\"\r\n\\ ok");
        let v: Vec<&str> = h.get_all(http::header::WARNING).iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(v, [r#"299 - "served \"stale\"\\ ok""#]);
        let long = "x".repeat(1500);
        for _ in 0..5 {
            add_warning(&mut h, &long);
        }
        let total: usize = h.get_all(http::header::WARNING).iter().map(|v| v.len()).sum();
        assert!(total <= MAX_WARNING_BYTES, "{total} bytes of warnings");
        assert_eq!(h.get_all(http::header::WARNING).iter().count(), 3);
    }
}
