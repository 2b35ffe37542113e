//! An upstream's credentials: `username`/`password` from its table, or
//! the first `username:password` line of its `credentials_file` (with a
//! warning when the file is readable by group or others).

use std::path::Path;

use super::{key_path, ConfigError, ResolvedUpstream, Secret};

/// A user name and password for an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (not secret, may be logged).
    pub username: String,
    /// The password or access token.
    pub password: Secret,
}

impl ResolvedUpstream {
    /// The upstream's credentials: inline, or read from `credentials_file`.
    /// Errors name the config key.
    pub fn credentials(&self) -> Result<Option<Credentials>, ConfigError> {
        let cfg = &self.config;
        if let Some(path) = &cfg.credentials_file {
            return read_credentials_file(path)
                .map(Some)
                .map_err(|message| ConfigError { path: key_path(&self.host, "credentials_file"), message });
        }
        Ok(match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Some(Credentials { username: u.clone(), password: p.clone() }),
            _ => None,
        })
    }
}

/// Reads `username:password` from the first non-empty, non-comment line.
fn read_credentials_file(path: &Path) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    warn_if_shared(path);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("{} holds no username:password line", path.display()))?;
    match line.split_once(':') {
        Some((u, p)) if !u.is_empty() && !p.is_empty() => {
            Ok(Credentials { username: u.to_owned(), password: Secret::new(p) })
        }
        _ => Err(format!("{}: expected a line username:password (neither empty)", path.display())),
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "credentials file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use reqwest::Url;

    use super::*;
    use crate::config::UpstreamConfig;

    #[test]
    fn credentials_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cred");
        std::fs::write(&path, "# docker hub\n\n  bob:pa:ss:word  \n").expect("write");
        let mut cfg = UpstreamConfig::with_url("https://x.example");
        cfg.credentials_file = Some(path.clone());
        let r = ResolvedUpstream {
            host: "x.example".into(),
            url: Url::parse("https://x.example").expect("url"),
            config: cfg.clone(),
        };
        let c = r.credentials().expect("ok").expect("some");
        assert_eq!(c.username, "bob");
        assert_eq!(c.password.expose(), "pa:ss:word");

        std::fs::write(&path, "nocolon\n").expect("write");
        let e = r.credentials().expect_err("bad");
        assert_eq!(e.path, r#"upstreams."x.example".credentials_file"#);

        let missing = ResolvedUpstream {
            config: UpstreamConfig { credentials_file: Some(dir.path().join("missing")), ..cfg },
            ..r
        };
        assert!(missing.credentials().is_err());
    }
}
