//! Configuration: a TOML file whose every key has a documented default, so
//! `cove serve` runs with no file at all. Unknown keys are errors naming the
//! key. Validation is pure (no I/O) and reports every problem with its path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cove_auth::{AccessRule, AuthConfig};
use cove_backends::object::ObjectStorageConfig;
use cove_upstreams::{resolve_upstreams, ResolvedUpstream, UpstreamConfig};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    /// `[upstreams."HOST"]` tables: the pull-through cache's upstreams,
    /// merged over the docker.io, ghcr.io and quay.io presets.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// `[auth]`: who may reach Cove (network trust by default).
    pub auth: AuthConfig,
    /// `[[access]]` rules by repository pattern.
    pub access: Vec<AccessRule>,
    // ---- operations (issue 7): see crate::ops for keys and defaults ----
    /// `[gc]`: online garbage collection.
    pub gc: crate::ops::GcConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: crate::ops::MetricsConfig,
    /// `[retention]`: cache retention per upstream, tag retention per
    /// repository pattern (see crate::retention).
    pub retention: crate::retention::RetentionConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0:5050`.
    pub listen: String,
    /// The URL clients reach Cove at (e.g. `https://cove.example.ts.net`),
    /// used for absolute `Location` headers. Default: none (relative
    /// locations, or `X-Forwarded-Proto`/`X-Forwarded-Host` when a proxy sends them).
    pub public_url: Option<String>,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Host names Cove answers to besides `public_url`'s host: containerd's
    /// `ns=<one of these>` means Cove's own private repositories. Default none.
    pub hostnames: Vec<String>,
    /// TLS (issue 7): PEM certificate chain (leaf first). Set with `tls_key`
    /// to serve HTTPS (HTTP/2 and HTTP/1.1); both files are re-read when
    /// they change. Default: none (plain HTTP).
    pub tls_cert: Option<PathBuf>,
    /// TLS: PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:5050".into(),
            public_url: None,
            log_format: LogFormat::Text,
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[storage]`
///
/// `kind`, `root` and `upload_ttl` apply to every backend; the object-store
/// kinds take the keys of [`ObjectStorageConfig`] (bucket, endpoint, …) in
/// the same table.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Backend: `filesystem` (default), `s3`, `gcs` or `azure`.
    pub kind: StorageKind,
    /// Data directory: all data for `filesystem`; for object stores, only
    /// local scratch space (in-flight upstream downloads). Default `./data`.
    pub root: PathBuf,
    /// Upload sessions idle for longer than this are removed. Default `24h`.
    pub upload_ttl: String,
    /// The object-store settings when `kind` is `s3`, `gcs` or `azure`.
    pub object: Option<ObjectStorageConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            root: PathBuf::from("./data"),
            upload_ttl: "24h".into(),
            object: None,
        }
    }
}

impl StorageConfig {
    /// A short description for logs: `filesystem ./data`, `s3 bucket cove`.
    pub fn describe(&self) -> String {
        match &self.object {
            Some(o) => {
                format!("{} {}", o.kind.as_str(), o.bucket.as_deref().or(o.container.as_deref()).unwrap_or("(unnamed)"))
            }
            None => format!("filesystem {}", self.root.display()),
        }
    }
}

impl<'de> Deserialize<'de> for StorageConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let mut cfg = StorageConfig::default();
        if let Some(v) = table.remove("root") {
            cfg.root = PathBuf::from(v.as_str().ok_or_else(|| D::Error::custom("storage.root must be a string"))?);
        }
        if let Some(v) = table.remove("upload_ttl") {
            cfg.upload_ttl = v
                .as_str()
                .ok_or_else(|| D::Error::custom("storage.upload_ttl must be a string like \"24h\""))?
                .to_owned();
        }
        let kind = match table.get("kind") {
            None => "filesystem",
            Some(v) => v.as_str().ok_or_else(|| D::Error::custom("storage.kind must be a string"))?,
        };
        match kind {
            "filesystem" => {
                table.remove("kind");
                if let Some(key) = table.keys().next() {
                    return Err(D::Error::custom(format!(
                        "unknown key storage.{key} for kind = \"filesystem\" (expected kind, root, upload_ttl)"
                    )));
                }
            }
            "s3" | "gcs" | "azure" => {
                cfg.kind = StorageKind::Object;
                let object: ObjectStorageConfig =
                    table.try_into().map_err(|e| D::Error::custom(format!("in [storage]: {e}")))?;
                cfg.object = Some(object);
            }
            other => {
                return Err(D::Error::custom(format!(
                    "storage.kind = {other:?} is not one of \"filesystem\", \"s3\", \"gcs\", \"azure\""
                )))
            }
        }
        Ok(cfg)
    }
}

/// Storage backend kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Filesystem,
    /// `s3`, `gcs` or `azure`: see [`StorageConfig::object`].
    Object,
}

/// A configuration that failed to load or validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Values derived from a validated [`Config`].
#[derive(Debug, Clone)]
pub struct Validated {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub upload_ttl: Duration,
    /// Enabled upstreams, presets merged with the user's tables.
    pub upstreams: Vec<ResolvedUpstream>,
    /// Host names meaning Cove itself in containerd's `ns=`.
    pub self_hosts: Vec<String>,
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses TOML text; unknown keys are errors naming the key.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every value, reporting all problems with their key paths.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let mut problems = Vec::new();
        let listen = match self.server.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                problems.push(format!(
                    "server.listen: {:?} is not an address like 0.0.0.0:5050 or [::]:5050",
                    self.server.listen
                ));
                None
            }
        };
        let public_url = match &self.server.public_url {
            Some(u) => {
                let u = u.trim_end_matches('/');
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && u.split("://").nth(1).is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace));
                if !ok {
                    problems.push(format!("server.public_url: {u:?} is not an http:// or https:// URL"));
                }
                Some(u.to_owned())
            }
            None => None,
        };
        let upload_ttl = match parse_duration(&self.storage.upload_ttl) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("storage.upload_ttl: {e}"));
                None
            }
        };
        if self.storage.root.as_os_str().is_empty() {
            problems.push("storage.root: must not be empty".into());
        }
        if let Some(object) = &self.storage.object {
            if let Err(found) = object.validate("storage") {
                problems.extend(found.iter().map(|p| p.to_string()));
            }
        }
        let upstreams = resolve_upstreams(&self.upstreams).unwrap_or_else(|errors| {
            problems.extend(errors.iter().map(|e| e.to_string()));
            Vec::new()
        });
        problems.extend(cove_auth::config::validate(&self.auth, &self.access).iter().map(|p| p.to_string()));
        problems.extend(crate::ops::validate(self)); // operations (issue 7): [gc], [metrics]
        let upstream_hosts: Vec<String> = upstreams.iter().map(|u| u.host.clone()).collect();
        problems.extend(crate::retention::validate(self, &upstream_hosts)); // issue 7: [retention]
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => problems.push("server.tls_key: must be set with server.tls_cert".into()),
            (None, Some(_)) => problems.push("server.tls_cert: must be set with server.tls_key".into()),
            (Some(c), Some(k)) => {
                for (key, p) in [("server.tls_cert", c), ("server.tls_key", k)] {
                    if p.as_os_str().is_empty() {
                        problems.push(format!("{key}: must not be empty"));
                    }
                }
            }
            (None, None) => {}
        }
        let mut self_hosts = Vec::new();
        for (i, h) in self.server.hostnames.iter().enumerate() {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')) {
                problems.push(format!("server.hostnames[{i}]: {h:?} is not a host name"));
            } else if upstreams.iter().any(|u| u.host == h) {
                problems.push(format!("server.hostnames[{i}]: {h:?} is also a configured upstream"));
            } else {
                self_hosts.push(h);
            }
        }
        if let Some(host) = public_url.as_deref().and_then(url_host) {
            self_hosts.push(host);
        }
        match (listen, upload_ttl) {
            (Some(listen), Some(upload_ttl)) if problems.is_empty() => {
                Ok(Validated { listen, public_url, upload_ttl, upstreams, self_hosts })
            }
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

/// Parses durations like `90s`, `5m`, `24h`, `7d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 24h or 7d ({e})"))
}

/// The host (with port, if any) of an `http(s)://host[:port]/…` URL, lowercased.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse("").expect("empty config");
        let v = c.validate().expect("defaults valid");
        assert_eq!(v.listen.port(), 5050);
        assert_eq!(v.upload_ttl, Duration::from_secs(86400));
        let e = Config::parse("[server]\nlisten = \"x\"\nbogus = 1\n").expect_err("unknown key");
        assert!(e.contains("bogus"), "{e}");
        let c = Config::parse(
            "[server]\nlisten = \"nope\"\npublic_url = \"ftp://x\"\n[storage]\nupload_ttl = \"5 parsecs\"",
        )
        .expect("parses");
        let e = c.validate().expect_err("invalid").to_string();
        for key in ["server.listen", "server.public_url", "storage.upload_ttl"] {
            assert!(e.contains(key), "{e} names {key}");
        }
        let c = Config::parse("[upstreams.\"registry.k8s.io\"]\ntag_ttl = \"1m\"\n").expect("parses");
        let e = c.validate().expect_err("new upstream without url").to_string();
        assert!(e.contains("upstreams.\"registry.k8s.io\""), "{e} names the upstream");
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 parsecs").is_err());
        let c = Config::parse(
            "[storage]\nkind = \"s3\"\nbucket = \"cove\"\nendpoint = \"http://127.0.0.1:9\"\nallow_http = true\nupload_ttl = \"1h\"\n",
        )
        .expect("s3 storage parses");
        assert_eq!(c.storage.kind, StorageKind::Object);
        assert_eq!(c.storage.describe(), "s3 cove");
        c.validate().expect("s3 config valid");
        let e = Config::parse("[storage]\nbucket = \"b\"\n").expect_err("bucket on filesystem");
        assert!(e.contains("storage.bucket"), "{e}");
        let e = Config::parse("[storage]\nkind = \"s3\"\nbukket = \"b\"\n").expect_err("typo");
        assert!(e.contains("bukket"), "{e}");
        let e = Config::parse("[storage]\nkind = \"floppy\"\n").expect_err("kind");
        assert!(e.contains("floppy"), "{e}");
        let c = Config::parse("[storage]\nkind = \"s3\"\n").expect("parses");
        let e = c.validate().expect_err("no bucket").to_string();
        assert!(e.contains("storage.bucket"), "{e}");
        assert_eq!(url_host("https://Cove.example:5050/x").as_deref(), Some("cove.example:5050"));
    }
}
