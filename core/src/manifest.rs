//! Manifest media types, descriptors and validation. Manifests are kept as
//! the exact bytes the client sent; parsing only validates and extracts the
//! references.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Manifest media types Cove stores and serves.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The largest manifest accepted (4 MiB, as distribution and the spec's
/// guidance).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
    // schema 1 marker
    fs_layers: Option<serde_json::Value>,
}

/// What a manifest refers to, extracted by [`parse_manifest`].
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// Config descriptor (image manifests).
    pub config: Option<Descriptor>,
    /// Layers (image manifests).
    pub layers: Vec<Descriptor>,
    /// Child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// Blobs this manifest requires in its repository: config and layers,
    /// except non-distributable layers that carry their own `urls`.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter().filter(|d| d.urls.as_ref().is_none_or(|u| u.is_empty())))
    }

    /// The descriptor listed for this manifest in a referrers response.
    pub fn referrer_descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        let artifact_type = self.artifact_type.clone().or_else(|| self.config.as_ref().map(|c| c.media_type.clone()));
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.clone(),
            size,
            artifact_type,
            annotations: self.annotations.clone(),
            urls: None,
            platform: None,
        }
    }
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, message)
}

/// A manifest over [`MAX_MANIFEST_SIZE`]: `MANIFEST_INVALID`, too large.
pub fn too_large() -> RegistryError {
    invalid(format!("manifest is larger than the {MAX_MANIFEST_SIZE} byte limit"))
        .with_detail(crate::error::ErrorDetail::TooLarge { limit: MAX_MANIFEST_SIZE as u64 })
}

/// Parses and validates manifest bytes sent with `content_type` (the request's
/// Content-Type, if any). Returns the effective media type and references.
///
/// Schema 1 and unknown media types are `MANIFEST_INVALID`; a Content-Type
/// that contradicts the manifest's own `mediaType` is `MANIFEST_INVALID`.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, RegistryError> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(too_large());
    }
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    if matches!(content_type, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) {
        return Err(schema1());
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("manifest is not a valid JSON manifest: {e}")))?;
    if raw.fs_layers.is_some() || matches!(raw.media_type.as_deref(), Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)) {
        return Err(schema1());
    }
    match &raw.schema_version {
        Some(v) if v.as_i64() == Some(2) => {}
        _ => return Err(invalid("schemaVersion must be 2")),
    }
    if let (Some(ct), Some(mt)) = (content_type, raw.media_type.as_deref()) {
        if ct != mt {
            return Err(invalid(format!("Content-Type {ct} does not match the manifest's mediaType {mt}")));
        }
    }
    let media_type = match content_type.or(raw.media_type.as_deref()) {
        Some(mt) => mt.to_owned(),
        // OCI allows mediaType to be absent: tell an index from a manifest by shape.
        None if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        None if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        None => return Err(invalid("manifest has no mediaType and no recognisable shape")),
    };
    if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(invalid(format!(
            "unsupported manifest media type {media_type}; supported: {}",
            MANIFEST_MEDIA_TYPES.join(", ")
        )));
    }
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let parsed = if is_index {
        let manifests = raw.manifests.ok_or_else(|| invalid("image index has no manifests array"))?;
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(invalid("image index must not have config or layers"));
        }
        ParsedManifest {
            media_type,
            artifact_type: raw.artifact_type,
            config: None,
            layers: Vec::new(),
            manifests,
            subject: raw.subject,
            annotations: raw.annotations,
        }
    } else {
        let config = raw.config.ok_or_else(|| invalid("image manifest has no config"))?;
        let layers = raw.layers.ok_or_else(|| invalid("image manifest has no layers array"))?;
        if raw.manifests.is_some() {
            return Err(invalid("image manifest must not have manifests"));
        }
        ParsedManifest {
            media_type,
            artifact_type: raw.artifact_type,
            config: Some(config),
            layers,
            manifests: Vec::new(),
            subject: raw.subject,
            annotations: raw.annotations,
        }
    };
    Ok(parsed)
}

fn schema1() -> RegistryError {
    invalid("Docker schema 1 manifests are not supported; push with a current client (schema 2 or OCI)")
}

/// Whether `media_type` is one Cove serves as a manifest.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    MANIFEST_MEDIA_TYPES.contains(&media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":2}},"layers":[]{extra}}}"#
        )
    }

    #[test]
    fn accepts_and_rejects() {
        let m = parse_manifest(image("").as_bytes(), Some(OCI_MANIFEST)).expect("valid");
        assert_eq!(m.required_blobs().count(), 1);
        assert!(!m.is_index());
        parse_manifest(image("").as_bytes(), None).expect("no content type");
        let e = parse_manifest(image("").as_bytes(), Some(DOCKER_MANIFEST)).expect_err("mismatch");
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
        let e = parse_manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).expect_err("schema1");
        assert!(e.message.contains("schema 1"));
        parse_manifest(b"not json", None).expect_err("garbage");
        parse_manifest(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None).expect_err("unknown type");
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        // The server answers 413 for this detail (tested there).
        let e = parse_manifest(&big, None).expect_err("big");
        assert_eq!(e.detail, Some(crate::error::ErrorDetail::TooLarge { limit: MAX_MANIFEST_SIZE as u64 }));
        let bad_digest = image("").replace(CFG, "sha256:1234");
        parse_manifest(bad_digest.as_bytes(), None).expect_err("bad digest");
    }
}
