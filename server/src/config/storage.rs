//! `[storage]`: the backend and its settings (filesystem by default).

use std::path::PathBuf;
use std::time::Duration;

use cove_backends::object::ObjectStorageConfig;
use serde::Deserialize;

use super::parse_duration;
use cove_backends::fs::MinFree;
use cove_core::storage::Capabilities;

/// The default floor: 1 GiB or 5% of the disk, whichever is smaller.
pub const DEFAULT_MIN_FREE: MinFree = MinFree::LesserOf(1 << 30, 5.0);

/// Parses `storage.min_free`: a size (`"2GiB"`, `"500MB"`, `"0"`) or a
/// percentage of the disk (`"5%"`, `"0.5%"`, at most 100).
pub fn parse_min_free(s: &str) -> Result<MinFree, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let bad = || format!("{s:?} is not a percentage from 0% to 100%");
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&v) {
            return Err(bad());
        }
        return Ok(MinFree::Percent(v));
    }
    super::retention::parse_size(t).map(MinFree::Bytes).map_err(|e| format!("{e}, or a percentage like 5%"))
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
    /// Free-space floor of the filesystem backend (`"2GiB"`, `"5%"`):
    /// below it pushes are refused with `507` and retention evicts cached
    /// images. Default (`None`): 1 GiB or 5% of the disk, whichever is
    /// smaller; `"0"` turns it off.
    pub min_free: Option<String>,
    /// The object-store settings when `kind` is `s3`, `gcs` or `azure`.
    pub object: Option<ObjectStorageConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            root: PathBuf::from("./data"),
            upload_ttl: "24h".into(),
            min_free: None,
            object: None,
        }
    }
}

impl StorageConfig {
    /// A short description for logs: `filesystem ./data`, `s3 bucket cove`.
    /// The free-space floor (`storage.min_free`, or the default). Only
    /// meaningful once validated.
    pub fn min_free(&self) -> MinFree {
        match self.min_free.as_deref().map(parse_min_free) {
            Some(Ok(m)) => m,
            _ => DEFAULT_MIN_FREE,
        }
    }

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
        if let Some(v) = table.remove("min_free") {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                _ => {
                    return Err(D::Error::custom(
                        "storage.min_free must be a size like \"2GiB\" or a percentage like \"5%\"",
                    ))
                }
            };
            cfg.min_free = Some(text);
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
                        "unknown key storage.{key} for kind = \"filesystem\" (expected kind, root, upload_ttl, min_free)"
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

impl StorageConfig {
    /// What the configured store will be, for the defaults decided before
    /// it is opened (the opened store answers the same:
    /// [`cove_core::Storage::capabilities`]).
    pub fn capabilities(&self) -> Capabilities {
        match self.kind {
            StorageKind::Filesystem => Capabilities::FILESYSTEM,
            StorageKind::Object => Capabilities::OBJECT,
        }
    }
}

/// Checks `[storage]`; returns `storage.upload_ttl` when it parses.
pub(super) fn validate(storage: &StorageConfig, problems: &mut Vec<String>) -> Option<Duration> {
    let upload_ttl = match parse_duration(&storage.upload_ttl) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!("storage.upload_ttl: {e}"));
            None
        }
    };
    if let Some(m) = &storage.min_free {
        if storage.object.is_some() {
            problems
                .push("storage.min_free: applies to the filesystem backend only (object stores have no floor)".into());
        } else if let Err(e) = parse_min_free(m) {
            problems.push(format!("storage.min_free: {e}"));
        }
    }
    if storage.root.as_os_str().is_empty() {
        problems.push("storage.root: must not be empty".into());
    }
    if let Some(object) = &storage.object {
        if let Err(found) = object.validate("storage") {
            problems.extend(found.iter().map(|p| p.to_string()));
        }
    }
    upload_ttl
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_core::Storage;

    /// The defaults decided from the config match the store once opened.
    #[test]
    fn configured_capabilities_are_the_opened_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = cove_backends::FsStorage::open(dir.path()).expect("fs");
        assert_eq!(StorageConfig::default().capabilities(), fs.capabilities());
        assert!(!fs.capabilities().shared && fs.capabilities().local_space);
        let object = StorageConfig { kind: StorageKind::Object, ..StorageConfig::default() };
        assert_eq!(object.capabilities(), cove_core::storage::Capabilities::OBJECT, "as ObjectStorage answers");
    }

    #[test]
    fn min_free_sizes_and_percentages() {
        assert_eq!(parse_min_free("2GiB"), Ok(MinFree::Bytes(2 << 30)));
        assert_eq!(parse_min_free("500MB"), Ok(MinFree::Bytes(500_000_000)));
        assert_eq!(parse_min_free("0"), Ok(MinFree::Bytes(0)));
        assert_eq!(parse_min_free(" 5% "), Ok(MinFree::Percent(5.0)));
        assert_eq!(parse_min_free("0.5%"), Ok(MinFree::Percent(0.5)));
        for bad in ["", "%", "-1%", "101%", "5 %%", "lots", "-3GiB", "1e400%"] {
            assert!(parse_min_free(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn min_free_default_is_the_smaller_of_1gib_and_5_percent() {
        let cfg = StorageConfig::default();
        assert_eq!(cfg.min_free(), DEFAULT_MIN_FREE);
        assert_eq!(cfg.min_free().bytes(10 << 30), (10u64 << 30) / 20, "5% of a 10 GiB disk");
        assert_eq!(cfg.min_free().bytes(100 << 30), 1 << 30, "1 GiB of a 100 GiB disk");
    }

    #[test]
    fn min_free_in_toml() {
        let cfg: StorageConfig = toml::from_str("min_free = \"3%\"").expect("parse");
        assert_eq!(cfg.min_free(), MinFree::Percent(3.0));
        let cfg: StorageConfig = toml::from_str("min_free = 1024").expect("integer bytes");
        assert_eq!(cfg.min_free(), MinFree::Bytes(1024));
        assert!(toml::from_str::<StorageConfig>("min_free = true").is_err());
        let mut problems = Vec::new();
        let cfg: StorageConfig = toml::from_str("min_free = \"lots\"").expect("parse");
        validate(&cfg, &mut problems);
        assert!(problems.iter().any(|p| p.starts_with("storage.min_free:")), "{problems:?}");
    }
}
