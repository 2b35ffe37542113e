//! `[gc]`: online garbage collection, and the settings a run uses.

use std::time::Duration;

use cove_core::gc::GcOptions;
use serde::Deserialize;

use super::{parse_duration, Config, StorageKind};

/// `[gc]`: online garbage collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Run garbage collection on a schedule. Default: `true` on the
    /// filesystem backend, `false` on object storage, where several replicas
    /// may share the bucket and one replica cannot see another's in-flight
    /// pushes. Enable it on exactly one replica (or when only one runs).
    pub enabled: Option<bool>,
    /// Time between scheduled runs. Default `"24h"`.
    pub interval: String,
    /// Nothing written or linked more recently than this is removed (and
    /// nothing at all during the first `grace` after start). Default `"1h"`.
    pub grace: String,
    /// Also remove manifests that no tag, index or `subject` keeps (pushes by
    /// digest that were never tagged). Default `false`.
    pub untagged: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { enabled: None, interval: "24h".into(), grace: "1h".into(), untagged: false }
    }
}

/// Checks the `[gc]` section; every problem names its key.
pub(super) fn validate(gc: &GcConfig) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value) in [("gc.interval", &gc.interval), ("gc.grace", &gc.grace)] {
        if let Err(e) = parse_duration(value) {
            problems.push(format!("{key}: {e}"));
        }
    }
    if parse_duration(&gc.interval).is_ok_and(|d| d.is_zero()) {
        problems.push("gc.interval: must be longer than 0s".into());
    }
    problems
}

/// GC settings derived from a validated config.
#[derive(Debug, Clone)]
pub struct GcSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub grace: Duration,
    pub untagged: bool,
    pub upload_ttl: Option<Duration>,
}

impl GcSettings {
    /// Reads the settings of a config that passed validation.
    pub fn from_config(config: &Config) -> GcSettings {
        GcSettings {
            enabled: config.gc.enabled.unwrap_or(config.storage.kind == StorageKind::Filesystem),
            interval: parse_duration(&config.gc.interval).unwrap_or(Duration::from_secs(86400)),
            grace: parse_duration(&config.gc.grace).unwrap_or(Duration::from_secs(3600)),
            untagged: config.gc.untagged,
            upload_ttl: parse_duration(&config.storage.upload_ttl).ok(),
        }
    }

    /// The options of one collection with these settings.
    pub fn options(&self, dry_run: bool) -> GcOptions {
        GcOptions { grace: self.grace, untagged: self.untagged, upload_ttl: self.upload_ttl, dry_run }
    }
}
