//! `[retention]`: cache retention per upstream and tag retention per
//! repository pattern, and the settings a run uses.
//!
//! ```toml
//! [retention]
//! interval = "1h"            # time between scheduled runs (default 1h)
//!
//! [retention.upstreams."docker.io"]   # key: a host of [upstreams]
//! max_size = "20GiB"         # cache size limit, least-recently-pulled first
//! max_age = "30d"            # evict images not pulled for this long
//!
//! [[retention.tags]]         # any repository, private ones included
//! repository = "myorg/ci-*"  # pattern syntax of [[access]] rules
//! keep_last = 10             # the 10 most recently pushed tags stay
//! keep_pulled_within = "14d" # and every tag pulled within 14 days
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use cove_core::gc::GcOptions;
use cove_core::retention::{self as core_retention, RetentionOptions};
use cove_core::RepoName;
use serde::Deserialize;

use super::{parse_duration, Config};

/// `[retention]`: cache retention per upstream and tag retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Run retention on a schedule. Default: `true` on the filesystem
    /// backend, `false` on object storage (same reasoning as `[gc] enabled`:
    /// one process must own the storage).
    pub enabled: Option<bool>,
    /// Time between scheduled runs; the first runs one interval after start.
    /// Default `"1h"`.
    pub interval: String,
    /// `[retention.upstreams."HOST"]`: cache limits of one upstream.
    pub upstreams: BTreeMap<String, UpstreamRetention>,
    /// `[[retention.tags]]`: tag retention by repository pattern.
    pub tags: Vec<TagRetention>,
    /// Time between saves of the activity log (last pulls) when it
    /// changed; on object storage each save also rewrites this replica's
    /// record in the bucket (one PUT). Default `"60s"`.
    pub activity_interval: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: None,
            interval: "1h".into(),
            upstreams: BTreeMap::new(),
            tags: Vec::new(),
            activity_interval: "60s".into(),
        }
    }
}

/// `[retention.upstreams."HOST"]`: at least one of the two limits.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamRetention {
    /// Largest total size of this upstream's cache (`"20GiB"`, `"500MB"`);
    /// least-recently-pulled images are evicted until it fits.
    pub max_size: Option<String>,
    /// Images not pulled for longer than this are evicted (`"30d"`).
    pub max_age: Option<String>,
}

/// `[[retention.tags]]`: at least one of `keep_last`, `keep_pulled_within`;
/// a tag stays if either keeps it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRetention {
    /// Repository pattern, as in `[[access]]` (`myorg/**`, `myorg/ci-*`).
    pub repository: String,
    /// Keep this many most recently pushed tags per repository.
    #[serde(default)]
    pub keep_last: Option<usize>,
    /// Keep every tag pulled (or pushed) within this duration.
    #[serde(default)]
    pub keep_pulled_within: Option<String>,
}

/// Parses sizes like `20GiB`, `500MB`, `1.5G`, `1024` (bytes). `K/M/G/T`
/// and `KiB…TiB` are powers of 1024, `KB…TB` powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{s:?} is not a size like 500MB, 20GiB or 1T");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Checks `[retention]`; every problem names its key.
pub(super) fn validate(config: &Config, upstream_hosts: &[String]) -> Vec<String> {
    let r = &config.retention;
    let mut problems = Vec::new();
    match parse_duration(&r.interval) {
        Ok(d) if d.is_zero() => problems.push("retention.interval: must be longer than 0s".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("retention.interval: {e}")),
    }
    match parse_duration(&r.activity_interval) {
        Ok(d) if d < Duration::from_secs(1) => problems.push("retention.activity_interval: must be at least 1s".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("retention.activity_interval: {e}")),
    }
    for (host, u) in &r.upstreams {
        let key = format!("retention.upstreams.\"{host}\"");
        if !upstream_hosts.iter().any(|h| h == host) {
            problems.push(format!(
                "{key}: {host:?} is not a configured (enabled) upstream; configured: {}",
                if upstream_hosts.is_empty() { "none".to_owned() } else { upstream_hosts.join(", ") }
            ));
        }
        if u.max_size.is_none() && u.max_age.is_none() {
            problems.push(format!("{key}: set max_size and/or max_age"));
        }
        if let Some(s) = &u.max_size {
            if let Err(e) = parse_size(s) {
                problems.push(format!("{key}.max_size: {e}"));
            }
        }
        if let Some(s) = &u.max_age {
            if let Err(e) = parse_duration(s) {
                problems.push(format!("{key}.max_age: {e}"));
            }
        }
    }
    for (i, t) in r.tags.iter().enumerate() {
        let key = format!("retention.tags[{i}]");
        if let Err(e) = cove_auth::RepoPattern::parse(&t.repository) {
            problems.push(format!("{key}.repository: {e}"));
        }
        if t.keep_last.is_none() && t.keep_pulled_within.is_none() {
            problems.push(format!("{key}: set keep_last and/or keep_pulled_within"));
        }
        if let Some(s) = &t.keep_pulled_within {
            if let Err(e) = parse_duration(s) {
                problems.push(format!("{key}.keep_pulled_within: {e}"));
            }
        }
    }
    problems
}

/// Retention settings derived from a validated config.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    pub enabled: bool,
    pub interval: Duration,
    /// Per upstream host: (max_size bytes, max_age).
    pub upstreams: BTreeMap<String, (Option<u64>, Option<Duration>)>,
    /// Tag policies in config order: (pattern, keep_last, keep_pulled_within).
    pub tags: Vec<(cove_auth::RepoPattern, Option<usize>, Option<Duration>)>,
    /// `[gc] grace`: nothing used more recently is evicted.
    pub grace: Duration,
    /// `[gc] untagged` and `storage.upload_ttl`, for the blob sweep.
    pub gc_untagged: bool,
    pub upload_ttl: Option<Duration>,
    /// `[[prefetch]]` entries with `pin = true`: their tags are never evicted.
    pub pins: Vec<super::prefetch::PrefetchSpec>,
}

impl RetentionSettings {
    /// Reads the settings of a config that passed validation.
    pub fn from_config(config: &Config) -> RetentionSettings {
        let r = &config.retention;
        RetentionSettings {
            enabled: r.enabled.unwrap_or(!config.storage.capabilities().shared),
            interval: parse_duration(&r.interval).unwrap_or(Duration::from_secs(3600)),
            upstreams: r
                .upstreams
                .iter()
                .map(|(h, u)| {
                    let size = u.max_size.as_deref().and_then(|s| parse_size(s).ok());
                    let age = u.max_age.as_deref().and_then(|s| parse_duration(s).ok());
                    (h.clone(), (size, age))
                })
                .collect(),
            tags: r
                .tags
                .iter()
                .filter_map(|t| {
                    let p = cove_auth::RepoPattern::parse(&t.repository).ok()?;
                    Some((p, t.keep_last, t.keep_pulled_within.as_deref().and_then(|s| parse_duration(s).ok())))
                })
                .collect(),
            grace: parse_duration(&config.gc.grace).unwrap_or(Duration::from_secs(3600)),
            gc_untagged: config.gc.untagged,
            upload_ttl: parse_duration(&config.storage.upload_ttl).ok(),
            pins: super::prefetch::specs(config).into_iter().filter(|s| s.pin).collect(),
        }
    }

    /// The options of one retention run with these settings.
    pub fn options(&self, dry_run: bool) -> RetentionOptions {
        RetentionOptions {
            upstreams: self
                .upstreams
                .iter()
                .map(|(host, (max_size, max_age))| core_retention::UpstreamPolicy {
                    host: host.clone(),
                    max_size: *max_size,
                    max_age: *max_age,
                })
                .collect(),
            tags: self
                .tags
                .iter()
                .map(|(pattern, keep_last, within)| {
                    let p = pattern.clone();
                    core_retention::TagPolicy {
                        pattern: format!("{pattern:?}"),
                        matches: Box::new(move |r: &RepoName| p.matches(r)),
                        keep_last: *keep_last,
                        keep_pulled_within: *within,
                    }
                })
                .collect(),
            grace: self.grace,
            dry_run,
            free_bytes: None,
            pinned: {
                let pins = self.pins.clone();
                Box::new(move |repo: &RepoName, tag: &str| pins.iter().any(|p| p.pins(repo, tag)))
            },
            fence: None,
        }
    }

    /// The options of the blob sweep that follows a run which removed
    /// manifests (the `[gc]` grace and untagged settings, never a dry run).
    pub fn sweep_options(&self) -> GcOptions {
        GcOptions {
            grace: self.grace,
            untagged: self.gc_untagged,
            upload_ttl: self.upload_ttl,
            dry_run: false,
            fence: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_keys() {
        let c = Config::parse(
            "[retention]\ninterval = \"x\"\n[retention.upstreams.\"a.io\"]\nmax_size = \"1Q\"\n\
             [retention.upstreams.\"b.io\"]\nmax_age = \"1d\"\n[[retention.tags]]\nrepository = \"a//b\"\n",
        )
        .expect("parses");
        let p = validate(&c, &["a.io".to_owned()]).join("\n");
        for key in [
            "retention.interval",
            "retention.upstreams.\"a.io\".max_size",
            "retention.upstreams.\"b.io\": \"b.io\" is not a configured",
            "retention.tags[0].repository",
            "retention.tags[0]: set keep_last",
        ] {
            assert!(p.contains(key), "{p} names {key}");
        }
        let c = Config::parse(
            "[retention.upstreams.\"a.io\"]\nmax_size = \"2GiB\"\nmax_age = \"30d\"\n\
             [[retention.tags]]\nrepository = \"ci/*\"\nkeep_last = 3\n",
        )
        .expect("parses");
        assert!(validate(&c, &["a.io".to_owned()]).is_empty());
        let s = RetentionSettings::from_config(&c);
        assert_eq!(s.upstreams.get("a.io"), Some(&(Some(2 << 30), Some(Duration::from_secs(30 * 86400)))));
        assert_eq!(s.interval, Duration::from_secs(3600));
        assert!(s.enabled, "on by default for the filesystem backend");
        let opts = s.options(true);
        assert!((opts.tags[0].matches)(&"ci/app".parse().expect("repo")));
        assert!(!(opts.tags[0].matches)(&"ci/app/x".parse().expect("repo")));
        assert!(Config::parse("[retention]\nbogus = 1\n").expect_err("unknown key").contains("bogus"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size(" 2 G "), Ok(2 << 30));
        for bad in ["", "GiB", "12 parsecs", "-1G", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
