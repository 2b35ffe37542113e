//! Repository names, tags and references, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};

/// Maximum length of a repository name, as distribution enforces.
pub const MAX_NAME_LEN: usize = 255;

/// A repository name following the OCI grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
///
/// A valid name has no empty, `.` or `..` component and no character outside
/// `[a-z0-9._/-]`, so it is safe to map onto a path.
///
/// The text is shared: a clone (the repository index, GC's kept listings
/// and the catalog hold every name) costs no allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(std::sync::Arc<str>);

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path components of the name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The first component (e.g. `docker.io` in `docker.io/library/nginx`).
    pub fn first_component(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The name without its first component, if it has more than one.
    pub fn strip_first_component(&self) -> Option<RepoName> {
        self.0.split_once('/').map(|(_, rest)| RepoName(rest.into()))
    }

    /// `prefix/self`, validated.
    pub fn with_prefix(&self, prefix: &str) -> Result<RepoName, RegistryError> {
        format!("{prefix}/{}", self.0).parse()
    }
}

fn valid_component(c: &str) -> bool {
    // alnum runs separated by one of: ".", "_", "__", or one-or-more "-".
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for RepoName {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(RegistryError::new(
                ErrorCode::NameInvalid,
                format!(
                    "invalid repository name {:?}: lowercase letters, digits and . _ - separators, \
                     components joined by /, at most {MAX_NAME_LEN} characters",
                    truncate(s, 300)
                ),
            ));
        }
        Ok(RepoName(s.into()))
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Names order exactly as their text does (the derived `Ord` compares the
/// one `str`), so sets of names can be searched by `&str`.
impl std::borrow::Borrow<str> for RepoName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`. Never `.` or `..`, never holds
/// `/`, so it is safe as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(RegistryError::new(ErrorCode::ManifestInvalid, format!("invalid tag {:?}", truncate(s, 200))));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = RegistryError;

    /// A string containing `:` is a digest (tags cannot hold `:`), else a tag.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/nginx", "docker.io/library/nginx", "a-b__c.d/e--f", "0/1"] {
            ok.parse::<RepoName>().expect(ok);
        }
        let long = "a".repeat(256);
        for bad in
            ["", "A", "a/", "/a", "a//b", "a/../b", "..", ".a", "a_", "a___b", "a.-b", "a b", "a%2fb", long.as_str()]
        {
            let e = bad.parse::<RepoName>().expect_err(bad);
            assert_eq!(e.code, ErrorCode::NameInvalid);
        }
    }

    #[test]
    fn a_cloned_name_shares_its_text() {
        let a: RepoName = "org/repo".parse().expect("valid");
        let b = a.clone();
        assert_eq!(a, b);
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr(), "no second copy of the text");
        let other: RepoName = "org/repo".parse().expect("valid");
        assert_eq!(a.cmp(&other), std::cmp::Ordering::Equal, "compared by text");
    }

    #[test]
    fn tags_and_refs() {
        for ok in ["latest", "v1.0", "_x", "A-b.c_d"] {
            ok.parse::<Tag>().expect(ok);
        }
        for bad in ["", ".x", "-x", "a/b", "..", &"a".repeat(129)] {
            bad.parse::<Tag>().expect_err(bad);
        }
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert_eq!("sha256:zz".parse::<Reference>().expect_err("bad").code, ErrorCode::DigestInvalid);
    }
}
