//! Content digests (`algorithm:hex`) and a streaming hasher.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::error::{ErrorCode, RegistryError};

/// A digest algorithm Cove can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest such as `sha256:e3b0…`.
///
/// Holds only lowercase hex of the right length for a supported algorithm, so
/// its string form is always safe to use as a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// Shared: a clone (GC and retention hold many) costs no allocation.
    hex: std::sync::Arc<str>,
}

impl Digest {
    /// Builds a digest from an algorithm and hex, validating the hex.
    pub fn new(algorithm: Algorithm, hex: &str) -> Result<Self, RegistryError> {
        let valid =
            hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                format!("invalid {} hex in digest", algorithm.as_str()),
            ));
        }
        Ok(Digest { algorithm, hex: hex.into() })
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(data);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Algorithm {
    type Err = RegistryError;

    /// Parses an algorithm name (`sha256`, `sha512`); any other is
    /// `DIGEST_INVALID` (the spec's 400 for an unsupported algorithm).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(RegistryError::new(
                ErrorCode::DigestInvalid,
                "unsupported digest algorithm (sha256 and sha512 are supported)",
            )),
        }
    }
}

impl FromStr for Digest {
    type Err = RegistryError;

    /// Parses `algorithm:hex`. Unsupported algorithms and malformed hex are
    /// `DIGEST_INVALID`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| RegistryError::new(ErrorCode::DigestInvalid, "digest must be algorithm:hex"))?;
        Digest::new(alg.parse()?, hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher for one [`Algorithm`].
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex: hex.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d: Digest =
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().expect("valid");
        assert_eq!(d, Digest::sha256_of(b""));
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let e = bad.parse::<Digest>().expect_err(bad);
            assert_eq!(e.code, ErrorCode::DigestInvalid, "{bad}");
        }
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("sha256".parse::<Algorithm>().ok(), Some(Algorithm::Sha256));
        assert_eq!("sha512".parse::<Algorithm>().ok(), Some(Algorithm::Sha512));
        for bad in ["", "SHA256", "md5", "sha384", "sha512 "] {
            assert_eq!(bad.parse::<Algorithm>().expect_err(bad).code, ErrorCode::DigestInvalid, "{bad}");
        }
    }
}
