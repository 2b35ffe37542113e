//! Byte ranges a client asks for, before the blob's size is known. The
//! server parses the request's header syntax; resolving against the size
//! happens here, where the size is known.

use std::fmt;

use crate::error::{ErrorCode, ErrorDetail, RegistryError, Result};
use crate::storage::ByteRange;

/// One requested byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// From `start` to `end` inclusive (`None`: to the last byte).
    From { start: u64, end: Option<u64> },
    /// The last `len` bytes.
    Suffix(u64),
    /// A byte range that names no bytes whatever the size (`x-1`, `-`):
    /// unsatisfiable. Holds what the client sent, for the message.
    Malformed(String),
}

impl fmt::Display for RangeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeRequest::From { start, end: Some(end) } => write!(f, "{start}-{end}"),
            RangeRequest::From { start, end: None } => write!(f, "{start}-"),
            RangeRequest::Suffix(len) => write!(f, "-{len}"),
            RangeRequest::Malformed(spec) => f.write_str(spec),
        }
    }
}

impl RangeRequest {
    /// The bytes of a blob of `size` bytes this asks for; an end past the
    /// blob is clamped. A range naming no byte of it is `RANGE_INVALID`
    /// with [`ErrorDetail::UnsatisfiableRange`].
    pub fn resolve(&self, size: u64) -> Result<ByteRange> {
        let unsatisfiable = || {
            RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("range {:?} cannot be satisfied for {size} bytes", self.to_string()),
            )
            .with_detail(ErrorDetail::UnsatisfiableRange { size })
        };
        match *self {
            RangeRequest::From { start, end } => {
                if start >= size {
                    return Err(unsatisfiable());
                }
                let end = end.unwrap_or(size - 1).min(size - 1);
                if end < start {
                    return Err(unsatisfiable());
                }
                Ok(ByteRange { start, end })
            }
            RangeRequest::Suffix(len) => {
                if len == 0 || size == 0 {
                    return Err(unsatisfiable());
                }
                Ok(ByteRange { start: size.saturating_sub(len), end: size - 1 })
            }
            RangeRequest::Malformed(_) => Err(unsatisfiable()),
        }
    }
}

/// Resolves an optional range request against a blob of `size` bytes.
pub fn resolve(range: Option<&RangeRequest>, size: u64) -> Result<Option<ByteRange>> {
    range.map(|r| r.resolve(size)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving_against_the_size() {
        let from = |start, end| RangeRequest::From { start, end };
        assert_eq!(from(0, Some(9)).resolve(100).ok(), Some(ByteRange { start: 0, end: 9 }));
        assert_eq!(from(90, None).resolve(100).ok(), Some(ByteRange { start: 90, end: 99 }));
        assert_eq!(RangeRequest::Suffix(10).resolve(100).ok(), Some(ByteRange { start: 90, end: 99 }));
        assert_eq!(from(50, Some(500)).resolve(100).ok(), Some(ByteRange { start: 50, end: 99 }));
        for bad in [from(100, None), from(5, Some(2)), RangeRequest::Suffix(0), RangeRequest::Malformed("x-1".into())] {
            let e = bad.resolve(100).expect_err("unsatisfiable");
            assert_eq!(
                (e.code, e.detail),
                (ErrorCode::RangeInvalid, Some(ErrorDetail::UnsatisfiableRange { size: 100 }))
            );
        }
        assert!(from(0, Some(0)).resolve(0).is_err());
        assert_eq!(from(5, Some(2)).to_string(), "5-2");
    }
}
