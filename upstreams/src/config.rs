//! Upstream configuration: one table per origin host, merged over the
//! built-in presets.
//!
//! ```toml
//! [upstreams."docker.io"]
//! url = "https://registry-1.docker.io"   # preset default
//! tag_ttl = "5m"
//! credentials_file = "/etc/cove/dockerhub.cred"
//!
//! [upstreams."registry.k8s.io"]          # a new upstream
//! url = "https://registry.k8s.io"
//!
//! [upstreams."quay.io"]
//! enabled = false                         # removes the preset
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Deserializer};

/// The built-in upstreams: origin host → registry URL. Enabled with default
/// settings unless the configuration says otherwise.
pub const PRESETS: &[(&str, &str)] =
    &[("docker.io", "https://registry-1.docker.io"), ("ghcr.io", "https://ghcr.io"), ("quay.io", "https://quay.io")];

/// The most retries a configuration may ask for.
pub const MAX_RETRIES: u32 = 10;

/// One upstream's settings, as written under `[upstreams."HOST"]`.
///
/// Every field is optional in TOML; the defaults are documented per field.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the registry (`https://registry-1.docker.io`). Required
    /// for a host without a preset; for a preset, replaces its URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `false` removes the upstream (also a preset). Default `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a tag resolved from this upstream is served from cache
    /// before it is revalidated. Humantime string, default `"5m"`.
    #[serde(default = "default_tag_ttl", deserialize_with = "de_duration")]
    pub tag_ttl: Duration,
    /// How long a client waits for the revalidation of a cached tag past
    /// `tag_ttl` before it is served the cached manifest (marked `stale`;
    /// the revalidation finishes in the background). Default `"1500ms"`.
    #[serde(default = "default_revalidate_wait", deserialize_with = "de_duration")]
    pub revalidate_wait: Duration,
    /// User name for the registry's token service or Basic auth.
    #[serde(default)]
    pub username: Option<String>,
    /// Password or access token; never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding `username:password` on its first non-empty,
    /// non-`#` line (the password may contain `:`). Read when the upstream
    /// is built; exclusive with `username`/`password`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Verify the registry's TLS certificate. Default `true`.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// Time allowed to open a connection (TCP and TLS). Default `"3s"`.
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Time allowed from sending a request to its response headers.
    /// Default `"5s"`.
    #[serde(default = "default_response_timeout", deserialize_with = "de_duration")]
    pub response_timeout: Duration,
    /// Time allowed between two reads of a response body (not a total
    /// limit, so large blobs stream as long as bytes keep coming); a blob
    /// download that stalls longer fails. Default `"30s"`.
    #[serde(default = "default_read_timeout", deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Time allowed for all attempts of one request (token, retries,
    /// backoff, up to the response headers; a manifest's body too), so
    /// retries never multiply the timeouts. Default `"10s"`.
    #[serde(default = "default_request_deadline", deserialize_with = "de_duration")]
    pub request_deadline: Duration,
    /// Retries of an idempotent request after a transient failure (5xx,
    /// connect error, timeout). Default `3`, at most [`MAX_RETRIES`].
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// When the upstream's `ratelimit-remaining` (Docker Hub's pull limit
    /// headers) falls below this, cached tags are served without
    /// revalidation (marked `stale`) and prefetching pauses, so the pulls
    /// left go to images not cached yet. Default `10`; `0` turns it off.
    #[serde(default = "default_ratelimit_floor")]
    pub ratelimit_floor: u64,
}

fn default_true() -> bool {
    true
}
fn default_tag_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_revalidate_wait() -> Duration {
    Duration::from_millis(1500)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_request_deadline() -> Duration {
    Duration::from_secs(10)
}
fn default_retries() -> u32 {
    3
}
fn default_ratelimit_floor() -> u64 {
    10
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("invalid duration {s:?} ({e}); use e.g. \"30s\", \"5m\", \"1h\""))
    })
}

impl Default for UpstreamConfig {
    /// All defaults, no URL.
    fn default() -> Self {
        UpstreamConfig {
            url: None,
            enabled: true,
            tag_ttl: default_tag_ttl(),
            revalidate_wait: default_revalidate_wait(),
            username: None,
            password: None,
            credentials_file: None,
            tls_verify: true,
            connect_timeout: default_connect_timeout(),
            response_timeout: default_response_timeout(),
            read_timeout: default_read_timeout(),
            request_deadline: default_request_deadline(),
            retries: default_retries(),
            ratelimit_floor: default_ratelimit_floor(),
        }
    }
}

impl UpstreamConfig {
    /// Defaults with the given URL (how tests point an upstream at a local
    /// registry).
    pub fn with_url(url: impl Into<String>) -> Self {
        UpstreamConfig { url: Some(url.into()), ..UpstreamConfig::default() }
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .field("tag_ttl", &self.tag_ttl)
            .field("revalidate_wait", &self.revalidate_wait)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("credentials_file", &self.credentials_file)
            .field("tls_verify", &self.tls_verify)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("request_deadline", &self.request_deadline)
            .field("retries", &self.retries)
            .field("ratelimit_floor", &self.ratelimit_floor)
            .finish()
    }
}

pub use cove_core::Secret;

/// A user name and password for an upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (not secret, may be logged).
    pub username: String,
    /// The password or access token.
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &self.password).finish()
    }
}

/// A configuration problem, with the TOML path of the offending key
/// (`upstreams."docker.io".url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted TOML path of the key.
    pub path: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// The TOML path of `key` in the table of upstream `host`.
pub fn key_path(host: &str, key: &str) -> String {
    if key.is_empty() {
        format!("upstreams.\"{host}\"")
    } else {
        format!("upstreams.\"{host}\".{key}")
    }
}

/// An enabled upstream after merging and validation: ready to build.
#[derive(Debug, Clone)]
pub struct ResolvedUpstream {
    /// Origin host, the key of its table (`docker.io`).
    pub host: String,
    /// Parsed base URL (http or https, no credentials, query or fragment).
    pub url: Url,
    /// The merged settings (`config.url` equals `url`).
    pub config: UpstreamConfig,
}

/// The built-in presets as configurations (each with its URL set).
pub fn presets() -> BTreeMap<String, UpstreamConfig> {
    PRESETS.iter().map(|(host, url)| ((*host).to_owned(), UpstreamConfig::with_url(*url))).collect()
}

/// Merges the user's `[upstreams."HOST"]` tables over the presets and
/// validates the result without I/O.
///
/// Presets need no table; a table for a preset host keeps the preset URL
/// unless it sets `url`; a table for another host adds an upstream (then
/// `url` is required); `enabled = false` removes one. Returns the enabled
/// upstreams sorted by host, or every problem found.
pub fn resolve_upstreams(user: &BTreeMap<String, UpstreamConfig>) -> Result<Vec<ResolvedUpstream>, Vec<ConfigError>> {
    let mut merged = presets();
    for (host, cfg) in user {
        let preset_url = merged.get(host).and_then(|p| p.url.clone());
        let mut cfg = cfg.clone();
        if cfg.url.is_none() {
            cfg.url = preset_url;
        }
        merged.insert(host.clone(), cfg);
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (host, cfg) in merged {
        if !cfg.enabled {
            continue;
        }
        match validate(&host, &cfg) {
            Ok(url) => out.push(ResolvedUpstream { host, url, config: cfg }),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Whether `host` is a valid origin host key: lowercase DNS labels
/// (letters, digits, `-`), separated by `.`, optionally `:port`.
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    port_ok && labels_ok
}

/// Validates one merged upstream; returns its parsed URL or every problem.
pub fn validate(host: &str, cfg: &UpstreamConfig) -> Result<Url, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut err = |key: &str, message: String| errors.push(ConfigError { path: key_path(host, key), message });
    if !valid_host(host) {
        err(
            "",
            "the key must be an origin host name such as \"registry.k8s.io\" \
             (lowercase letters, digits, '-' and '.', optional :port)"
                .to_owned(),
        );
    }
    let mut url = None;
    match &cfg.url {
        None => {
            err("url", "required for an upstream without a preset (e.g. \"https://registry.example.com\")".to_owned())
        }
        Some(s) => match Url::parse(s) {
            Err(e) => err("url", format!("invalid URL {s:?}: {e}")),
            Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
                err("url", format!("scheme must be http or https, not {:?}", u.scheme()))
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                err("url", "must not contain credentials; use username/password or credentials_file".to_owned())
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                err("url", "must not have a query or fragment".to_owned())
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => err("url", "must name a host".to_owned()),
            Ok(u) => url = Some(u),
        },
    }
    match (&cfg.username, &cfg.password) {
        (Some(u), Some(_)) if u.is_empty() => err("username", "must not be empty".to_owned()),
        (Some(_), None) => err("password", "required when username is set".to_owned()),
        (None, Some(_)) => err("username", "required when password is set".to_owned()),
        _ => {}
    }
    if cfg.credentials_file.is_some() && (cfg.username.is_some() || cfg.password.is_some()) {
        err("credentials_file", "set either credentials_file or username/password, not both".to_owned());
    }
    if cfg.connect_timeout.is_zero() {
        err("connect_timeout", "must be greater than zero".to_owned());
    }
    if cfg.read_timeout.is_zero() {
        err("read_timeout", "must be greater than zero".to_owned());
    }
    if cfg.response_timeout.is_zero() {
        err("response_timeout", "must be greater than zero".to_owned());
    }
    if cfg.request_deadline < cfg.response_timeout {
        err(
            "request_deadline",
            format!(
                "must be at least response_timeout ({:?}), or no request could get an answer",
                cfg.response_timeout
            ),
        );
    }
    if cfg.retries > MAX_RETRIES {
        err("retries", format!("at most {MAX_RETRIES}"));
    }
    match url {
        Some(u) if errors.is_empty() => Ok(u),
        _ => Err(errors),
    }
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
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Root {
        #[serde(default)]
        upstreams: BTreeMap<String, UpstreamConfig>,
    }

    fn parse(s: &str) -> BTreeMap<String, UpstreamConfig> {
        toml::from_str::<Root>(s).expect("toml").upstreams
    }

    fn hosts(v: &[ResolvedUpstream]) -> Vec<&str> {
        v.iter().map(|u| u.host.as_str()).collect()
    }

    #[test]
    fn presets_need_no_config() {
        let r = resolve_upstreams(&BTreeMap::new()).expect("valid");
        assert_eq!(hosts(&r), ["docker.io", "ghcr.io", "quay.io"]);
        assert_eq!(r[0].url.as_str(), "https://registry-1.docker.io/");
        let c = &r[0].config;
        assert_eq!(c.tag_ttl, Duration::from_secs(300));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.response_timeout, Duration::from_secs(5));
        assert_eq!(c.read_timeout, Duration::from_secs(30));
        assert_eq!(c.request_deadline, Duration::from_secs(10));
        assert_eq!(c.retries, 3);
        assert!(c.tls_verify && c.enabled);
    }

    #[test]
    fn merge_override_add_remove() {
        let r = resolve_upstreams(&parse(
            r#"
            [upstreams."docker.io"]
            url = "http://127.0.0.1:5000"
            tag_ttl = "30s"
            [upstreams."ghcr.io"]
            tag_ttl = "1h 30m"
            retries = 0
            [upstreams."quay.io"]
            enabled = false
            [upstreams."registry.k8s.io"]
            url = "https://registry.k8s.io"
            tls_verify = false
            connect_timeout = "2s"
            read_timeout = "500ms"
            "#,
        ))
        .expect("valid");
        assert_eq!(hosts(&r), ["docker.io", "ghcr.io", "registry.k8s.io"]);
        assert_eq!(r[0].url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(r[0].config.tag_ttl, Duration::from_secs(30));
        assert_eq!(r[1].url.as_str(), "https://ghcr.io/");
        assert_eq!(r[1].config.tag_ttl, Duration::from_secs(5400));
        assert_eq!(r[1].config.retries, 0);
        assert!(!r[2].config.tls_verify);
        assert_eq!(r[2].config.connect_timeout, Duration::from_secs(2));
        assert_eq!(r[2].config.read_timeout, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        let e = toml::from_str::<Root>("[upstreams.\"docker.io\"]\nurll = \"x\"\n").err().expect("unknown field");
        assert!(e.to_string().contains("urll"), "{e}");
        let e = toml::from_str::<Root>("[upstreams.\"docker.io\"]\ntag_ttl = \"five\"\n").err().expect("bad duration");
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errs = resolve_upstreams(&parse(
            r#"
            [upstreams."docker.io"]
            url = "ftp://x"
            retries = 99
            [upstreams."example.com"]
            username = "u"
            [upstreams."Bad_Host"]
            url = "https://x"
            [upstreams."quay.io"]
            url = "https://user:pw@quay.io"
            [upstreams."b.example"]
            url = "https://b.example"
            username = "u"
            password = "p"
            credentials_file = "/x"
            read_timeout = "0s"
            "#,
        ))
        .expect_err("invalid");
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            r#"upstreams."docker.io".url"#,
            r#"upstreams."docker.io".retries"#,
            r#"upstreams."example.com".url"#,
            r#"upstreams."example.com".password"#,
            r#"upstreams."Bad_Host""#,
            r#"upstreams."quay.io".url"#,
            r#"upstreams."b.example".credentials_file"#,
            r#"upstreams."b.example".read_timeout"#,
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        assert_eq!(paths.len(), 8, "{errs:?}");
        // The credentials in the URL are not echoed.
        assert!(errs.iter().all(|e| !e.to_string().contains("pw")), "{errs:?}");
    }

    #[test]
    fn host_keys() {
        for ok in ["docker.io", "localhost", "registry.k8s.io", "localhost:5000", "a-b.c"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "Docker.io", "a..b", "-a.b", "a_b", "a:0", "a:x", "a/b", ":80"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = parse("[upstreams.\"docker.io\"]\nusername = \"me\"\npassword = \"hunter2\"\n");
        let shown = format!("{:?}", c);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("me"));
        let r = resolve_upstreams(&c).expect("valid");
        let cred = r[0].credentials().expect("ok").expect("some");
        assert_eq!(cred.password.expose(), "hunter2");
        assert!(!format!("{cred:?} {}", cred.password).contains("hunter2"));
    }

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
