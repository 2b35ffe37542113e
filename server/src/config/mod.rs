//! Configuration: a TOML file whose every key has a documented default, so
//! `cove serve` runs with no file at all. Unknown keys are errors naming the
//! key. Validation is pure (no I/O) and reports every problem with its path.
//!
//! Every section lives in a submodule of its own; this module imports
//! nothing from the rest of the server, so the layers above depend on it and
//! never the other way round.

mod gc;
mod metrics;
mod mirror;
pub mod prefetch;
mod retention;
mod server;
mod storage;
mod ui;

pub use cove_backends::fs::MinFree;
pub use gc::{lease_timing, GcConfig, GcSettings};
pub use metrics::MetricsConfig;
pub use mirror::MirrorConfig;
pub use retention::{parse_size, RetentionConfig, RetentionSettings, TagRetention, UpstreamRetention};
pub use server::{HttpLimits, LogFormat, ServerConfig};
pub use storage::{parse_min_free, StorageConfig, StorageKind, DEFAULT_MIN_FREE};
pub use ui::UiConfig;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cove_auth::{AccessRule, AuthConfig};
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
    /// `[gc]`: online garbage collection.
    pub gc: GcConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[retention]`: cache retention per upstream, tag retention per
    /// repository pattern.
    pub retention: RetentionConfig,
    /// `[mirror]`: Docker Hub mirror mode for unqualified names.
    pub mirror: MirrorConfig,
    /// `[[prefetch]]`: images kept warm in the cache.
    pub prefetch: Vec<prefetch::PrefetchEntry>,
    /// `[ui]`: the web interface.
    pub ui: UiConfig,
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
    /// `[server]` connection and request limits.
    pub http: HttpLimits,
    pub upload_ttl: Duration,
    /// Enabled upstreams, presets merged with the user's tables.
    pub upstreams: Vec<ResolvedUpstream>,
    /// Host names meaning Cove itself in containerd's `ns=`.
    pub self_hosts: Vec<String>,
    /// `[mirror]`: the upstream owning unqualified names, if any, and the
    /// private prefixes kept from it.
    pub default_upstream: Option<String>,
    pub private_prefixes: Vec<String>,
    /// `[[prefetch]]` entries.
    pub prefetch: Vec<prefetch::PrefetchSpec>,
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
        let listen = server::validate_listen(&self.server, &mut problems);
        let public_url = server::validate_public_url(&self.server, &mut problems);
        let http = server::validate_limits(&self.server, &mut problems);
        let upload_ttl = storage::validate(&self.storage, &mut problems);
        let upstreams = resolve_upstreams(&self.upstreams).unwrap_or_else(|errors| {
            problems.extend(errors.iter().map(|e| e.to_string()));
            Vec::new()
        });
        problems.extend(cove_auth::config::validate(&self.auth, &self.access).iter().map(|p| p.to_string()));
        problems.extend(gc::validate(&self.gc));
        problems.extend(ui::validate(&self.ui));
        let upstream_hosts: Vec<String> = upstreams.iter().map(|u| u.host.clone()).collect();
        problems.extend(retention::validate(self, &upstream_hosts));
        server::validate_tls(&self.server, &mut problems);
        let self_hosts = server::self_hosts(&self.server, public_url.as_deref(), &upstream_hosts, &mut problems);
        let (default_upstream, private_prefixes) = mirror::validate(&self.mirror, &upstream_hosts, &mut problems);
        let prefetch = prefetch::validate(&self.prefetch, &upstream_hosts, &mut problems);
        match (listen, upload_ttl) {
            (Some(listen), Some(upload_ttl)) if problems.is_empty() => Ok(Validated {
                listen,
                public_url,
                http,
                upload_ttl,
                upstreams,
                self_hosts,
                default_upstream,
                private_prefixes,
                prefetch,
            }),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

impl Validated {
    /// How the cache reads names without an upstream prefix.
    pub fn name_rules(&self) -> cove_core::cache::NameRules {
        cove_core::cache::NameRules {
            self_hosts: self.self_hosts.clone(),
            default_upstream: self.default_upstream.clone(),
            private_prefixes: self.private_prefixes.clone(),
        }
    }

    /// The hosts of the enabled upstreams, in configuration order.
    pub fn upstream_hosts(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.host.clone()).collect()
    }
}

/// Parses durations like `90s`, `5m`, `24h`, `7d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 24h or 7d ({e})"))
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
        assert_eq!(server::url_host("https://Cove.example:5050/x").as_deref(), Some("cove.example:5050"));
        let c = Config::parse("[ui]\nenabled = false\nsession_ttl = \"10s\"\n").expect("ui parses");
        assert!(!c.ui.enabled);
        let e = c.validate().expect_err("session too short").to_string();
        assert!(e.contains("ui.session_ttl"), "{e}");
        assert!(Config::parse("").expect("empty").ui.enabled, "the UI is on by default");
    }
}
