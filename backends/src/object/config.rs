//! [`ObjectStorageConfig`]: the `[storage]` settings of an object store, with
//! pure validation (every problem reported with its key) before any I/O.

use std::fmt;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::multipart::MultipartStore;
use object_store::ObjectStore;
use serde::Deserialize;

/// Smallest multipart part S3 accepts (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest multipart part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Default part size: client chunks are coalesced up to this before upload.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;

/// Which object-store service to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// Amazon S3 and S3-compatible servers (Garage, MinIO, Ceph RGW, …).
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
}

impl ObjectKind {
    /// The name used in `[storage] kind = …` and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::S3 => "s3",
            ObjectKind::Gcs => "gcs",
            ObjectKind::Azure => "azure",
        }
    }
}

/// The `[storage]` table for `kind = "s3" | "gcs" | "azure"`.
///
/// Absent credentials fall back to the service's environment variables
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`/…,
/// `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCESS_KEY`, …).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStorageConfig {
    /// `s3`, `gcs` or `azure`.
    pub kind: ObjectKind,
    /// Bucket name (S3, GCS).
    #[serde(default)]
    pub bucket: Option<String>,
    /// S3 endpoint URL for S3-compatible servers (`http://127.0.0.1:3900`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3 region; defaults to `us-east-1` (`garage` for nothing special: any
    /// string the server accepts).
    #[serde(default)]
    pub region: Option<String>,
    /// S3 access key id; from `AWS_ACCESS_KEY_ID` when absent.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// S3 secret key; from `AWS_SECRET_ACCESS_KEY` when absent. Never logged.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints (local servers). Default false.
    #[serde(default)]
    pub allow_http: bool,
    /// Virtual-hosted-style addressing (`bucket.host`). Default: false when
    /// an endpoint is set (path style, what S3-compatible servers expect),
    /// true for AWS itself.
    #[serde(default)]
    pub virtual_hosted_style: Option<bool>,
    /// Key prefix inside the bucket/container (`cove/` → `cove/blobs/…`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Multipart part size in bytes (5 MiB ..= 5 GiB); default 8 MiB.
    #[serde(default)]
    pub part_size: Option<u64>,
    /// GCS service-account JSON file; from `GOOGLE_SERVICE_ACCOUNT` when absent.
    #[serde(default)]
    pub service_account_path: Option<String>,
    /// Azure storage account.
    #[serde(default)]
    pub account: Option<String>,
    /// Azure container.
    #[serde(default)]
    pub container: Option<String>,
    /// Azure access key; from `AZURE_STORAGE_ACCESS_KEY` when absent. Never logged.
    #[serde(default)]
    pub access_key: Option<String>,
}

impl fmt::Debug for ObjectStorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ObjectStorageConfig")
            .field("kind", &self.kind)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("service_account_path", &self.service_account_path)
            .field("account", &self.account)
            .field("container", &self.container)
            .field("access_key", &redact(&self.access_key))
            .finish()
    }
}

/// One invalid or missing setting, named by its key (`storage.bucket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The full key, e.g. `storage.bucket`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why an object store could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ObjectConfigError {
    /// The settings are invalid; every problem is listed.
    #[error("invalid object storage settings: {}", join(.0))]
    Invalid(Vec<ConfigProblem>),
    /// The object_store client refused to build (reported by the crate).
    #[error("cannot build the {kind} client: {message}")]
    Build {
        /// `s3`, `gcs` or `azure`.
        kind: &'static str,
        /// The client's reason.
        message: String,
    },
}

fn join(p: &[ConfigProblem]) -> String {
    p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
}

/// A built client: the store and its multipart API.
pub(crate) struct BuiltStore {
    pub store: Arc<dyn ObjectStore>,
    pub multipart: Option<Arc<dyn MultipartStore>>,
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ObjectStorageConfig {
    /// Checks the settings without any I/O; returns every problem found,
    /// each named `<section>.<key>` (pass `"storage"` as `section`).
    pub fn validate(&self, section: &str) -> Result<(), Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut bad =
            |key: &str, message: String| problems.push(ConfigProblem { key: format!("{section}.{key}"), message });
        let kind = self.kind.as_str();
        let s3_only: [(&str, bool); 7] = [
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("virtual_hosted_style", self.virtual_hosted_style.is_some()),
            ("allow_http", self.allow_http),
            ("bucket", self.bucket.is_some()),
        ];
        let gcs_only = [("service_account_path", self.service_account_path.is_some())];
        let azure_only = [
            ("account", self.account.is_some()),
            ("container", self.container.is_some()),
            ("access_key", self.access_key.is_some()),
        ];
        let mut not_for = |list: &[(&str, bool)], allowed: &[&str]| {
            for (key, set) in list {
                if *set && !allowed.contains(key) {
                    bad(key, format!("is not a setting of kind = \"{kind}\""));
                }
            }
        };
        match self.kind {
            ObjectKind::S3 => {
                not_for(&gcs_only, &[]);
                not_for(&azure_only, &[]);
            }
            ObjectKind::Gcs => {
                not_for(&s3_only, &["bucket"]);
                not_for(&azure_only, &[]);
            }
            ObjectKind::Azure => {
                // allow_http and endpoint also apply to Azure (Azurite).
                not_for(&s3_only, &["endpoint", "allow_http"]);
                not_for(&gcs_only, &[]);
            }
        }
        match self.kind {
            ObjectKind::S3 | ObjectKind::Gcs => match nonempty(&self.bucket) {
                None => bad("bucket", "is required".into()),
                Some(b) if !valid_bucket(b) => {
                    bad("bucket", "must be 3-63 characters of a-z, 0-9, '.', '-' and '_'".into())
                }
                Some(_) => {}
            },
            ObjectKind::Azure => {
                if nonempty(&self.account).is_none() {
                    bad("account", "is required".into());
                }
                if nonempty(&self.container).is_none() {
                    bad("container", "is required".into());
                }
            }
        }
        if let Some(ep) = &self.endpoint {
            let ep = ep.trim();
            if let Some(rest) = ep.strip_prefix("http://") {
                if !self.allow_http {
                    bad("allow_http", "must be true to use a plain http:// endpoint".into());
                }
                if rest.is_empty() {
                    bad("endpoint", "has no host".into());
                }
            } else if let Some(rest) = ep.strip_prefix("https://") {
                if rest.is_empty() {
                    bad("endpoint", "has no host".into());
                }
            } else {
                bad("endpoint", "must be an http:// or https:// URL".into());
            }
        }
        if self.kind == ObjectKind::S3 {
            if let Some(r) = &self.region {
                if r.trim().is_empty() {
                    bad("region", "must not be empty".into());
                }
            }
            match (nonempty(&self.access_key_id), nonempty(&self.secret_access_key)) {
                (Some(_), None) => bad("secret_access_key", "is required when access_key_id is set".into()),
                (None, Some(_)) => bad("access_key_id", "is required when secret_access_key is set".into()),
                _ => {}
            }
        }
        if let Some(p) = &self.prefix {
            if normalized_prefix(p).is_none() {
                bad("prefix", "must be '/'-separated segments of [A-Za-z0-9._-], none '.' or '..'".into());
            }
        }
        if let Some(ps) = self.part_size {
            if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&ps) {
                bad("part_size", format!("must be between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} (5 GiB)"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The validated prefix (`a/b`), or empty.
    pub(crate) fn prefix(&self) -> String {
        self.prefix.as_deref().and_then(normalized_prefix).unwrap_or_default()
    }

    /// Builds the client (no network I/O happens here).
    pub(crate) fn build(&self) -> Result<BuiltStore, ObjectConfigError> {
        let kind = self.kind.as_str();
        let fail = |e: object_store::Error| ObjectConfigError::Build { kind, message: e.to_string() };
        match self.kind {
            ObjectKind::S3 => {
                let mut b = AmazonS3Builder::from_env()
                    .with_client_options(client_options())
                    .with_bucket_name(nonempty(&self.bucket).unwrap_or_default())
                    .with_allow_http(self.allow_http);
                if let Some(r) = nonempty(&self.region) {
                    b = b.with_region(r);
                } else if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    b = b.with_region("us-east-1");
                }
                if let Some(ep) = nonempty(&self.endpoint) {
                    b = b
                        .with_endpoint(ep)
                        .with_virtual_hosted_style_request(self.virtual_hosted_style.unwrap_or(false));
                } else if let Some(v) = self.virtual_hosted_style {
                    b = b.with_virtual_hosted_style_request(v);
                }
                if let (Some(id), Some(secret)) = (nonempty(&self.access_key_id), nonempty(&self.secret_access_key)) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                let s3 = Arc::new(b.build().map_err(fail)?);
                Ok(BuiltStore { store: s3.clone(), multipart: Some(s3) })
            }
            ObjectKind::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_client_options(client_options())
                    .with_bucket_name(nonempty(&self.bucket).unwrap_or_default());
                if let Some(p) = nonempty(&self.service_account_path) {
                    b = b.with_service_account_path(p);
                }
                let gcs = Arc::new(b.build().map_err(fail)?);
                Ok(BuiltStore { store: gcs.clone(), multipart: Some(gcs) })
            }
            ObjectKind::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_client_options(client_options())
                    .with_account(nonempty(&self.account).unwrap_or_default())
                    .with_container_name(nonempty(&self.container).unwrap_or_default())
                    .with_allow_http(self.allow_http);
                if let Some(k) = nonempty(&self.access_key) {
                    b = b.with_access_key(k);
                }
                if let Some(ep) = nonempty(&self.endpoint) {
                    b = b.with_endpoint(ep.to_owned());
                }
                let az = Arc::new(b.build().map_err(fail)?);
                Ok(BuiltStore { store: az.clone(), multipart: Some(az) })
            }
        }
    }
}

/// No overall request timeout (object_store's default of 30 s would cut off
/// streaming reads of large blobs); connecting still times out after 5 s.
fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new().with_timeout_disabled().with_connect_timeout(std::time::Duration::from_secs(5))
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b".-_".contains(&c))
}

/// `"/a/b/"` → `Some("a/b")`; `None` for unsafe segments.
fn normalized_prefix(p: &str) -> Option<String> {
    let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    let ok = segs
        .iter()
        .all(|s| *s != "." && *s != ".." && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)));
    ok.then(|| segs.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ObjectStorageConfig {
        toml::from_str(s).expect("parses")
    }

    #[test]
    fn reports_every_problem_by_key() {
        let c = parse(
            r#"kind = "s3"
               endpoint = "http://127.0.0.1:9000"
               access_key_id = "AK"
               prefix = "../x"
               part_size = 1024"#,
        );
        let keys: Vec<String> = c.validate("storage").expect_err("invalid").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "storage.bucket",
                "storage.allow_http",
                "storage.secret_access_key",
                "storage.prefix",
                "storage.part_size"
            ]
        );
    }

    #[test]
    fn accepts_a_local_s3_and_redacts_secrets() {
        let c = parse(
            r#"kind = "s3"
               bucket = "cove"
               endpoint = "http://127.0.0.1:9000"
               allow_http = true
               access_key_id = "AK"
               secret_access_key = "very-secret"
               prefix = "/reg/"
            "#,
        );
        c.validate("storage").expect("valid");
        assert_eq!(c.prefix(), "reg");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        c.build().expect("builds without I/O");
    }

    #[test]
    fn rejects_unknown_and_foreign_keys() {
        assert!(toml::from_str::<ObjectStorageConfig>("kind = \"s3\"\nbucket = \"b\"\nbogus = 1").is_err());
        let c = parse("kind = \"gcs\"\nbucket = \"bkt\"\nregion = \"x\"\naccount = \"a\"");
        let keys: Vec<String> = c.validate("storage").expect_err("invalid").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["storage.region", "storage.account"]);
        let c = parse("kind = \"azure\"");
        let keys: Vec<String> = c.validate("storage").expect_err("invalid").into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["storage.account", "storage.container"]);
    }
}
