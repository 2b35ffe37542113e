//! `[gc]`: online garbage collection, and the settings a run uses.

use std::time::Duration;

use cove_core::gc::GcOptions;
use serde::Deserialize;

use super::{parse_duration, Config};

/// `[gc]`: online garbage collection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Run garbage collection on a schedule. Default: `true` on the
    /// filesystem backend, `false` on object storage, where several replicas
    /// may share the bucket and one replica cannot see another's in-flight
    /// pushes. Runs of all replicas are one at a time (the maintenance
    /// lease), but enable it only when nobody pushes through another
    /// replica meanwhile (or when only one runs).
    pub enabled: Option<bool>,
    /// Time between scheduled runs. Default `"24h"`.
    pub interval: String,
    /// Nothing written or linked more recently than this is removed (and
    /// nothing at all during the first `grace` after start). Default `"1h"`.
    pub grace: String,
    /// Also remove manifests that no tag, index or `subject` keeps (pushes by
    /// digest that were never tagged). Default `false`.
    pub untagged: bool,
    /// How long the maintenance lease (one GC or retention runner among the
    /// replicas of one storage) stays valid without a renew; the holder
    /// renews every quarter of it. Another replica takes over this long
    /// after the holder died. Default `"60s"`.
    pub lease_ttl: String,
    /// The wait between writing a claim of the lease and reading it back.
    /// Default `"2s"` on object storage, `"100ms"` on the filesystem.
    pub lease_settle: Option<String>,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            enabled: None,
            interval: "24h".into(),
            grace: "1h".into(),
            untagged: false,
            lease_ttl: "60s".into(),
            lease_settle: None,
        }
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
    let ttl = parse_duration(&gc.lease_ttl);
    match &ttl {
        Ok(d) if *d < Duration::from_secs(1) => problems.push("gc.lease_ttl: must be at least 1s".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("gc.lease_ttl: {e}")),
    }
    if let Some(settle) = &gc.lease_settle {
        match (parse_duration(settle), &ttl) {
            (Err(e), _) => problems.push(format!("gc.lease_settle: {e}")),
            (Ok(s), Ok(t)) if s.is_zero() || s >= *t / 4 => problems
                .push("gc.lease_settle: must be longer than 0s and shorter than a quarter of gc.lease_ttl".into()),
            _ => {}
        }
    }
    problems
}

/// The maintenance lease's timing from a validated config.
pub fn lease_timing(config: &Config) -> cove_core::lease::LeaseTiming {
    // A shared store's writes may take long to become visible to all;
    // a local filesystem's are visible at once.
    let shared = config.storage.capabilities().shared;
    let default_settle = if shared { Duration::from_secs(2) } else { Duration::from_millis(100) };
    cove_core::lease::LeaseTiming {
        ttl: parse_duration(&config.gc.lease_ttl).unwrap_or(Duration::from_secs(60)),
        settle: config.gc.lease_settle.as_deref().and_then(|s| parse_duration(s).ok()).unwrap_or(default_settle),
    }
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
            enabled: config.gc.enabled.unwrap_or(!config.storage.capabilities().shared),
            interval: parse_duration(&config.gc.interval).unwrap_or(Duration::from_secs(86400)),
            grace: parse_duration(&config.gc.grace).unwrap_or(Duration::from_secs(3600)),
            untagged: config.gc.untagged,
            upload_ttl: parse_duration(&config.storage.upload_ttl).ok(),
        }
    }

    /// The options of one collection with these settings.
    pub fn options(&self, dry_run: bool) -> GcOptions {
        GcOptions { grace: self.grace, untagged: self.untagged, upload_ttl: self.upload_ttl, dry_run, fence: None }
    }
}
