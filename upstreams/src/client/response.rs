//! Reading an upstream's answers: a status as a [`Failure`] (fatal,
//! retryable, silent, or "retry after"), transport errors, the headers Cove
//! uses (`Retry-After`, `ratelimit-*`, `Docker-Content-Digest`,
//! `Content-Type`), and bodies read under a size cap.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use cove_core::upstream::{RateLimit, UpstreamError};
use cove_core::Digest;
use futures::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, RETRY_AFTER};
use reqwest::{Response, StatusCode};

/// The outcome of one failed attempt: what to tell the caller, and whether
/// another attempt may succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Do not retry (404, 401, protocol violation).
    Fatal(UpstreamError),
    /// Transient answer (5xx, 408): retry with backoff.
    Retry(UpstreamError),
    /// No answer at all (connection failed, no response headers in time,
    /// body cut off): retry with backoff, and tell the circuit breaker.
    Silent(UpstreamError),
    /// 429 with a `Retry-After` the upstream asked us to wait.
    RetryAfter(UpstreamError, Duration),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Fatal(e)
    }
}

/// Docker Hub's `ratelimit-limit: 100;w=21600` and
/// `ratelimit-remaining: 76;w=21600` (the draft RateLimit header fields'
/// older form): both must be there and parse.
pub fn parse_rate_limit(h: &HeaderMap) -> Option<RateLimit> {
    fn parts(v: &str) -> Option<(u64, Option<Duration>)> {
        let mut it = v.split(';');
        let n = it.next()?.trim().parse().ok()?;
        let w = it
            .filter_map(|p| p.trim().strip_prefix("w="))
            .find_map(|w| w.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Some((n, w))
    }
    let (limit, w1) = parts(header_str(h, "ratelimit-limit")?)?;
    let (remaining, w2) = parts(header_str(h, "ratelimit-remaining")?)?;
    Some(RateLimit { limit, remaining, window: w2.or(w1), observed: SystemTime::now() })
}

pub(super) fn invalid(msg: &str) -> Failure {
    Failure::Fatal(UpstreamError::Invalid(msg.to_owned()))
}

/// Maps a transport error (connect, timeout, reset) to a retryable failure.
pub(crate) fn transport_failure(e: reqwest::Error) -> Failure {
    if e.is_builder() {
        return Failure::Fatal(UpstreamError::Invalid(format!("bad request: {e}")));
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Failure::Silent(UpstreamError::Unavailable(format!("{kind}: {}", error_chain(&e))))
}

/// An error and its sources on one line (reqwest's Display hides causes).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Maps a non-401 response status to success or a failure.
pub(crate) fn check_status(resp: Response) -> Result<Response, Failure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(status_failure(status, resp.headers()))
}

pub(crate) fn status_failure(status: StatusCode, headers: &HeaderMap) -> Failure {
    match status.as_u16() {
        404 => Failure::Fatal(UpstreamError::NotFound),
        401 | 403 => Failure::Fatal(UpstreamError::Unauthorized(format!("upstream answered {status}"))),
        429 => {
            let raw = header_str(headers, RETRY_AFTER.as_str());
            let wait = raw.and_then(parse_retry_after);
            // Passed on as delay-seconds: an HTTP date becomes the seconds
            // until it (rounded up), so nothing downstream parses dates.
            let retry_after = match wait {
                Some(w) if raw.is_some_and(|r| r.parse::<u64>().is_err()) => {
                    Some((w.as_secs() + u64::from(w.subsec_nanos() > 0)).to_string())
                }
                _ => raw.map(str::to_owned),
            };
            let e = UpstreamError::TooManyRequests { retry_after };
            match wait {
                Some(w) => Failure::RetryAfter(e, w),
                None => Failure::Fatal(e),
            }
        }
        408 | 500..=599 => Failure::Retry(UpstreamError::Unavailable(format!("upstream answered {status}"))),
        _ => Failure::Fatal(UpstreamError::Invalid(format!("unexpected status {status}"))),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

pub(crate) fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

pub(super) fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    header_str(h, name).and_then(|v| v.parse().ok())
}

/// The media type of a Content-Type value, without parameters.
pub(super) fn media_type(ct: &str) -> String {
    ct.split(';').next().unwrap_or(ct).trim().to_owned()
}

pub(super) fn media_type_field(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes).ok()?.media_type
}

pub(super) fn announced_digest(h: &HeaderMap) -> Result<Option<Digest>, Failure> {
    match header_str(h, "docker-content-digest") {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<Digest>().map(Some).map_err(|_| invalid("malformed Docker-Content-Digest header")),
    }
}

/// Reads a body of at most `cap` bytes. Oversize is a protocol violation;
/// a body cut short is transient.
pub(crate) async fn read_capped(resp: Response, cap: usize, what: &str) -> Result<Bytes, Failure> {
    if let Some(len) = header_u64(resp.headers(), CONTENT_LENGTH.as_str()) {
        if len > cap as u64 {
            return Err(Failure::Fatal(UpstreamError::Invalid(format!(
                "{what} is {len} bytes, more than the {cap}-byte limit"
            ))));
        }
    }
    let mut buf = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Failure::Silent(UpstreamError::Unavailable(format!("reading the {what} failed: {}", error_chain(&e))))
        })?;
        if buf.len() + chunk.len() > cap {
            return Err(Failure::Fatal(UpstreamError::Invalid(format!("{what} exceeds the {cap}-byte limit"))));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

pub(super) fn body_io_error(e: reqwest::Error) -> std::io::Error {
    let kind = if e.is_timeout() { std::io::ErrorKind::TimedOut } else { std::io::ErrorKind::UnexpectedEof };
    std::io::Error::new(kind, format!("upstream body failed: {}", error_chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).expect("date");
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn status_mapping() {
        let h = HeaderMap::new();
        let m = |s: u16| status_failure(StatusCode::from_u16(s).expect("status"), &h);
        assert!(matches!(m(404), Failure::Fatal(UpstreamError::NotFound)));
        assert!(matches!(m(401), Failure::Fatal(UpstreamError::Unauthorized(_))));
        assert!(matches!(m(403), Failure::Fatal(UpstreamError::Unauthorized(_))));
        assert!(matches!(m(500), Failure::Retry(UpstreamError::Unavailable(_))));
        assert!(matches!(m(503), Failure::Retry(UpstreamError::Unavailable(_))));
        assert!(matches!(m(400), Failure::Fatal(UpstreamError::Invalid(_))));
        assert!(matches!(m(429), Failure::Fatal(UpstreamError::TooManyRequests { retry_after: None })));
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().expect("hv"));
        match status_failure(StatusCode::TOO_MANY_REQUESTS, &h) {
            Failure::RetryAfter(UpstreamError::TooManyRequests { retry_after }, d) => {
                assert_eq!(retry_after.as_deref(), Some("3"));
                assert_eq!(d, Duration::from_secs(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rate_limit_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_rate_limit(&h), None);
        h.insert("ratelimit-limit", "100;w=21600".parse().expect("hv"));
        assert_eq!(parse_rate_limit(&h), None, "remaining missing");
        h.insert("ratelimit-remaining", "76;w=21600".parse().expect("hv"));
        let r = parse_rate_limit(&h).expect("parsed");
        assert_eq!((r.limit, r.remaining, r.window), (100, 76, Some(Duration::from_secs(21600))));
        assert!(r.current());
        h.insert("ratelimit-remaining", " 3 ".parse().expect("hv"));
        let r = parse_rate_limit(&h).expect("parsed");
        assert_eq!((r.remaining, r.window), (3, Some(Duration::from_secs(21600))), "window from the limit");
        h.insert("ratelimit-remaining", "lots".parse().expect("hv"));
        assert_eq!(parse_rate_limit(&h), None);
        let old = RateLimit {
            limit: 1,
            remaining: 0,
            window: Some(Duration::from_secs(60)),
            observed: SystemTime::now() - Duration::from_secs(61),
        };
        assert!(!old.current(), "a past window's budget is renewed");
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            media_type_field(br#"{"mediaType":"application/x","schemaVersion":2}"#).as_deref(),
            Some("application/x")
        );
        assert_eq!(media_type_field(b"not json"), None);
    }
}
