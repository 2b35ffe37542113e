//! The one place a [`RegistryError`] becomes HTTP: the status its code and
//! detail call for, the headers its detail carries (`Range`,
//! `Content-Range`, `Retry-After`, `WWW-Authenticate`) and the spec's JSON
//! body. Every error response goes through here: the registry API, the
//! token endpoint and the operations and admin endpoints.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use cove_core::{Challenge, ErrorCode, ErrorDetail, RegistryError};

use crate::body::{self, Body};

/// The status the spec pairs with `code`.
fn code_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BlobUnknown | ErrorCode::ManifestUnknown | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
        ErrorCode::BlobUploadUnknown => StatusCode::NOT_FOUND,
        ErrorCode::BlobUploadInvalid
        | ErrorCode::DigestInvalid
        | ErrorCode::ManifestBlobUnknown
        | ErrorCode::ManifestInvalid
        | ErrorCode::NameInvalid
        | ErrorCode::SizeInvalid
        | ErrorCode::PaginationInvalid
        | ErrorCode::ConfigInvalid => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Denied => StatusCode::FORBIDDEN,
        ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response status: the code's, unless the detail is one the spec pairs
/// with another status (416 for a chunk that does not continue the upload,
/// 413 for oversize content, 414 for too many `tag` parameters, 502 for an
/// upstream's invalid answer, 507 when storage is full).
pub fn status(e: &RegistryError) -> StatusCode {
    match &e.detail {
        Some(ErrorDetail::UploadOffset { .. } | ErrorDetail::ChunkRangeInvalid) => StatusCode::RANGE_NOT_SATISFIABLE,
        Some(ErrorDetail::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        Some(ErrorDetail::UpstreamInvalid) => StatusCode::BAD_GATEWAY,
        Some(ErrorDetail::TooManyTags { .. }) => StatusCode::URI_TOO_LONG,
        Some(ErrorDetail::StorageFull) => StatusCode::INSUFFICIENT_STORAGE,
        _ => code_status(e.code),
    }
}

/// The headers the error's detail carries, by canonical name.
pub fn headers(e: &RegistryError) -> Vec<(&'static str, String)> {
    match &e.detail {
        Some(ErrorDetail::UploadOffset { size }) => vec![("Range", upload_range(*size))],
        Some(ErrorDetail::UnsatisfiableRange { size }) => vec![("Content-Range", format!("bytes */{size}"))],
        Some(ErrorDetail::RetryAfter(wait)) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            vec![("Retry-After", secs.to_string())]
        }
        Some(ErrorDetail::Challenge(c)) => vec![("WWW-Authenticate", challenge_header(c))],
        _ => Vec::new(),
    }
}

/// The spec's JSON error body listing `errors`. Internal errors never leak
/// their message.
pub fn body(errors: &[RegistryError]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| {
            let message =
                if e.code == ErrorCode::Internal { "internal server error".to_owned() } else { e.message.clone() };
            let mut err = serde_json::json!({ "code": e.code.as_str(), "message": message });
            if let Some(ErrorDetail::Digest(d)) = &e.detail {
                err["detail"] = serde_json::json!({ "digest": d.to_string() });
            }
            err
        })
        .collect();
    serde_json::json!({ "errors": list })
}

/// The error response for `e` (for a `HEAD`, without the body).
pub fn response(e: &RegistryError, head: bool) -> Response<Body> {
    errors_response(std::slice::from_ref(e), head)
}

/// One response reporting several errors (status and headers of the first).
pub fn errors_response(errors: &[RegistryError], head: bool) -> Response<Body> {
    let bytes = Bytes::from(body(errors).to_string());
    let len = bytes.len();
    let mut resp = Response::new(if head { body::empty() } else { body::full(bytes) });
    let Some(first) = errors.first() else {
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return resp;
    };
    *resp.status_mut() = status(first);
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    for (name, value) in headers(first) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            h.insert(n, v);
        }
    }
    resp
}

/// The `WWW-Authenticate` value of a challenge:
/// `Bearer realm="…",service="…",scope="…",error="…"` (parts present only
/// when set) or `Basic realm="…"`.
pub fn challenge_header(c: &Challenge) -> String {
    match c {
        Challenge::Basic { realm } => format!("Basic realm=\"{realm}\""),
        Challenge::Bearer { realm, service, scopes, error } => {
            let mut v = format!("Bearer realm=\"{realm}\"");
            if let Some(s) = service {
                v.push_str(&format!(",service=\"{s}\""));
            }
            if !scopes.is_empty() {
                v.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
            }
            if let Some(e) = error {
                v.push_str(&format!(",error=\"{}\"", e.as_str()));
            }
            v
        }
    }
}

/// The `Range` value for an upload holding `size` bytes (`0-(size-1)`, and
/// `0-0` for an empty upload, as distribution does).
pub fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// The HTTP view of a [`RegistryError`], for code (and tests) outside this
/// crate that check what a client would receive.
pub trait HttpError {
    /// The response status code.
    fn http_status(&self) -> u16;
    /// The headers sent with it, by canonical name.
    fn headers(&self) -> Vec<(&'static str, String)>;
    /// The JSON body.
    fn body(&self) -> serde_json::Value;
}

impl HttpError for RegistryError {
    fn http_status(&self) -> u16 {
        status(self).as_u16()
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        headers(self)
    }

    fn body(&self) -> serde_json::Value {
        body(std::slice::from_ref(self))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cove_core::ChallengeError;

    use super::*;

    #[test]
    fn statuses_follow_code_and_detail() {
        let e = |code| RegistryError::new(code, "m");
        assert_eq!(status(&e(ErrorCode::NameUnknown)), 404);
        assert_eq!(status(&e(ErrorCode::Unauthorized)), 401);
        assert_eq!(status(&e(ErrorCode::Unavailable)), 503);
        assert_eq!(status(&e(ErrorCode::RangeInvalid)), 416);
        assert_eq!(status(&e(ErrorCode::Internal)), 500);
        assert_eq!(status(&cove_core::manifest::too_large()), 413);
        let chunk = e(ErrorCode::SizeInvalid).with_detail(ErrorDetail::UploadOffset { size: 0 });
        assert_eq!(
            (status(&chunk), headers(&chunk)),
            (StatusCode::RANGE_NOT_SATISFIABLE, vec![("Range", "0-0".into())])
        );
        let bad = e(ErrorCode::Unavailable).with_detail(ErrorDetail::UpstreamInvalid);
        assert_eq!(status(&bad), 502);
        assert_eq!(status(&cove_core::registry::too_many_tags(101)), 414);
        let wait = e(ErrorCode::TooManyRequests).with_detail(ErrorDetail::RetryAfter(Duration::from_millis(1500)));
        assert_eq!(headers(&wait), vec![("Retry-After", "2".into())]);
    }

    #[test]
    fn challenges_render_as_before() {
        let bearer = Challenge::Bearer {
            realm: "http://127.0.0.1:5000/token".into(),
            service: Some("cove".into()),
            scopes: vec!["repository:myorg/app:pull,push".into()],
            error: Some(ChallengeError::InsufficientScope),
        };
        assert_eq!(
            challenge_header(&bearer),
            "Bearer realm=\"http://127.0.0.1:5000/token\",service=\"cove\",scope=\"repository:myorg/app:pull,push\",error=\"insufficient_scope\""
        );
        assert_eq!(challenge_header(&Challenge::Basic { realm: "cove".into() }), "Basic realm=\"cove\"");
    }

    #[test]
    fn internal_messages_stay_internal() {
        let b = body(&[RegistryError::internal("disk /var/x failed")]).to_string();
        assert_eq!(b, r#"{"errors":[{"code":"UNKNOWN","message":"internal server error"}]}"#);
    }
}
