//! Parsing the `Authorization` header into credentials whose `Debug` never
//! shows a secret.

use std::fmt;

use base64::Engine;
use cove_core::{ErrorCode, RegistryError};

/// Credentials from an `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name (not secret, but never logged with the password).
        user: String,
        /// The password. Redacted in `Debug`.
        password: Secret,
    },
    /// `Bearer <token>`.
    Bearer(Secret),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

pub use cove_core::Secret;

/// The largest `Authorization` header accepted (OIDC tokens can be a few KiB).
pub const MAX_AUTHORIZATION_LEN: usize = 16 * 1024;

impl Credentials {
    /// Parses an `Authorization` header value. Unknown schemes and malformed
    /// values are `UNAUTHORIZED` errors that never echo the header.
    pub fn parse(header: &str) -> Result<Credentials, RegistryError> {
        if header.len() > MAX_AUTHORIZATION_LEN {
            return Err(malformed("Authorization header is too long"));
        }
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').ok_or_else(|| malformed("malformed Authorization header"))?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| malformed("malformed Basic credentials (not base64)"))?;
            let text = String::from_utf8(raw).map_err(|_| malformed("malformed Basic credentials (not UTF-8)"))?;
            let (user, password) =
                text.split_once(':').ok_or_else(|| malformed("malformed Basic credentials (no ':')"))?;
            if user.is_empty() {
                return Err(malformed("Basic credentials have an empty user name"));
            }
            Ok(Credentials::Basic { user: user.to_owned(), password: Secret::new(password) })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(malformed("malformed Bearer token"));
            }
            Ok(Credentials::Bearer(Secret::new(rest)))
        } else {
            Err(malformed("unsupported Authorization scheme"))
        }
    }
}

fn malformed(msg: &str) -> RegistryError {
    RegistryError::new(ErrorCode::Unauthorized, msg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let c = Credentials::parse("Basic YWxpY2U6czNjcjN0").unwrap();
        let d = format!("{c:?}");
        assert!(d.contains("alice") && !d.contains("s3cr3t"), "{d}");
        let c = Credentials::parse("Bearer abc.def.ghi").unwrap();
        assert!(!format!("{c:?}").contains("abc"));
    }

    #[test]
    fn malformed_is_unauthorized() {
        for h in ["Basic", "Basic !!!", "Digest x", "Bearer ", "Basic Zm9v"] {
            let e = Credentials::parse(h).unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthorized, "{h}");
        }
    }
}
