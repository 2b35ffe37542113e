//! Range header syntax: a blob read's `Range` (RFC 9110 byte ranges) and an
//! upload chunk's `Content-Range`. Parsed here into typed values; what they
//! mean against a blob or an upload is the registry engine's business.

use cove_core::{ErrorCode, ErrorDetail, RangeRequest, RegistryError};

/// Parses a `Range` header value. `bytes=a-b`, `bytes=a-` and `bytes=-n`
/// are honoured; other units and multi-range requests are ignored (`None`:
/// the whole blob is sent, as RFC 9110 allows). A malformed byte range is
/// [`RangeRequest::Malformed`] (unsatisfiable).
pub fn parse_range(header: &str) -> Option<RangeRequest> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let malformed = || RangeRequest::Malformed(spec.to_owned());
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Some(malformed());
    };
    let number = |s: &str| -> Result<Option<u64>, ()> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().map(Some).map_err(|_| ())
        } else {
            Err(())
        }
    };
    Some(match (number(a), number(b)) {
        (Ok(Some(start)), Ok(end)) => RangeRequest::From { start, end },
        (Ok(None), Ok(Some(len))) => RangeRequest::Suffix(len),
        _ => malformed(),
    })
}

/// Parses a chunk's `Content-Range`: `start-end`, also accepting the
/// `bytes start-end/total` and `bytes=start-end` forms some clients send.
pub fn parse_content_range(v: &http::HeaderValue) -> Result<(u64, u64), RegistryError> {
    let bad = || {
        RegistryError::new(ErrorCode::BlobUploadInvalid, "Content-Range must be <start>-<end>")
            .with_detail(ErrorDetail::ChunkRangeInvalid)
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes").map(|r| r.trim_start_matches(['=', ' '])).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use cove_core::storage::ByteRange;

    use super::*;
    use crate::error::HttpError;

    #[test]
    fn ranges() {
        let r = |h: &str| parse_range(h).map(|r| r.resolve(100)).transpose();
        assert_eq!(r("bytes=0-9").ok().flatten(), Some(ByteRange { start: 0, end: 9 }));
        assert_eq!(r("bytes=90-").ok().flatten(), Some(ByteRange { start: 90, end: 99 }));
        assert_eq!(r("bytes=-10").ok().flatten(), Some(ByteRange { start: 90, end: 99 }));
        assert_eq!(r("bytes=50-500").ok().flatten(), Some(ByteRange { start: 50, end: 99 }));
        assert_eq!(r("items=0-1").ok().flatten(), None);
        assert_eq!(r("bytes=0-1,5-6").ok().flatten(), None);
        for bad in ["bytes=100-", "bytes=5-2", "bytes=x-1", "bytes=-0", "bytes=-", "bytes=1"] {
            assert_eq!(r(bad).expect_err(bad).http_status(), 416, "{bad}");
        }
        assert!(parse_range("bytes=0-0").map(|r| r.resolve(0)).transpose().is_err());
    }

    #[test]
    fn content_ranges() {
        let v = |s: &'static str| parse_content_range(&http::HeaderValue::from_static(s));
        assert_eq!(v("0-9").ok(), Some((0, 9)));
        assert_eq!(v("bytes 10-19/100").ok(), Some((10, 19)));
        assert_eq!(v("bytes=20-29").ok(), Some((20, 29)));
        assert_eq!(v("9-1").expect_err("backwards").http_status(), 416);
    }
}
