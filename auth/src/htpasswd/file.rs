//! Parsing an htpasswd file: `user:hash` lines, only bcrypt and SHA-crypt
//! hashes accepted; every bad line reported by number and user, never by
//! its hash.

use std::collections::HashMap;

/// A supported password hash.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Hash {
    Bcrypt(String),
    ShaCrypt(String),
}

/// Parsed htpasswd content: user → hash.
#[derive(Clone, Default)]
pub struct HtpasswdUsers {
    pub(super) users: HashMap<String, Hash>,
}

impl std::fmt::Debug for HtpasswdUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtpasswdUsers").field("users", &self.users.len()).finish()
    }
}

impl HtpasswdUsers {
    /// Parses htpasswd text; every bad line is reported (by line number and
    /// user, never the hash).
    pub fn parse(text: &str) -> Result<HtpasswdUsers, Vec<String>> {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {n}: expected user:hash"));
                continue;
            };
            if user.is_empty() {
                problems.push(format!("line {n}: empty user name"));
                continue;
            }
            match classify(hash) {
                Ok(h) => {
                    if users.insert(user.to_owned(), h).is_some() {
                        problems.push(format!("line {n}: user {user:?} appears more than once"));
                    }
                }
                Err(why) => problems.push(format!("line {n}: user {user:?}: {why}")),
            }
        }
        if problems.is_empty() {
            Ok(HtpasswdUsers { users })
        } else {
            Err(problems)
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True if the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn classify(hash: &str) -> Result<Hash, String> {
    const REGEN: &str = "regenerate it with `htpasswd -B` (bcrypt) or `openssl passwd -6` (SHA-512-crypt)";
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        // $2x$cc$ + 53 characters of salt and hash.
        let cost_ok = hash.get(4..6).and_then(|c| c.parse::<u32>().ok()).is_some_and(|c| (4..=31).contains(&c));
        if hash.len() == 60 && cost_ok && hash.as_bytes()[6] == b'$' {
            return Ok(Hash::Bcrypt(hash.to_owned()));
        }
        return Err(format!("malformed bcrypt hash; {REGEN}"));
    }
    if hash.starts_with("$5$") || hash.starts_with("$6$") {
        if sha_crypt::PasswordHashRef::new(hash).is_ok() && hash.split('$').count() >= 4 {
            return Ok(Hash::ShaCrypt(hash.to_owned()));
        }
        return Err(format!("malformed SHA-crypt hash; {REGEN}"));
    }
    let scheme = if hash.starts_with("$apr1$") {
        "Apache MD5 ($apr1$)"
    } else if hash.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if hash.starts_with("{SHA}") {
        "unsalted SHA-1 ({SHA})"
    } else if hash.len() == 13 && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/') {
        "DES crypt"
    } else {
        "plaintext or an unknown scheme"
    };
    Err(format!("{scheme} is refused as too weak; {REGEN}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_weak_schemes_naming_user_and_line() {
        let text = "# comment\n\
            good:$2y$05$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234\n\
            md5:$apr1$abc$defghijklmnopqrstuvwx.\n\
            sha1:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
            des:abJnggxhB/yWI\n\
            plain:hunter2\n";
        let problems = HtpasswdUsers::parse(text).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("line 3") && problems[0].contains("\"md5\"") && problems[0].contains("$apr1$"));
        assert!(problems[1].contains("line 4") && problems[1].contains("{SHA}"));
        assert!(problems[2].contains("line 5") && problems[2].contains("DES"));
        assert!(problems[3].contains("line 6") && problems[3].contains("plaintext"));
        assert!(problems.iter().all(|p| !p.contains("hunter2")));
    }
}
