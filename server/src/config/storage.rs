//! `[storage]`: the backend and its settings (filesystem by default).

use std::path::PathBuf;
use std::time::Duration;

use cove_backends::object::ObjectStorageConfig;
use serde::Deserialize;

use super::parse_duration;

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

/// Checks `[storage]`; returns `storage.upload_ttl` when it parses.
pub(super) fn validate(storage: &StorageConfig, problems: &mut Vec<String>) -> Option<Duration> {
    let upload_ttl = match parse_duration(&storage.upload_ttl) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!("storage.upload_ttl: {e}"));
            None
        }
    };
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
