//! OCI content for tests: media types, small images held in memory (pushed
//! over HTTP by the e2e tests), and reading and writing OCI image layouts on
//! disk for skopeo. [`crate::layout`] builds multi-image layouts with real
//! tar layers.

use std::path::Path;

use crate::util::{random_bytes, random_name, sha256_digest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed tar layers: containerd unpacks them, and no compression
/// dependency is needed.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// An Accept header naming every manifest media type.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// A small OCI image held in memory: config, layers and its manifest bytes.
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// An OCI image with `layers` random layers of 1–64 KiB and a valid config.
    pub fn random(layers: usize) -> Image {
        let layers: Vec<Vec<u8>> = (0..layers).map(|i| random_bytes(1024 + (i * 7919 % 64) * 1024)).collect();
        Image::from_layers(layers)
    }

    pub fn from_layers(layers: Vec<Vec<u8>>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [],
            "nonce": random_name(""),
        }))
        .expect("config json");
        let manifest = oci_manifest(&config, &layers, None, None);
        let digest = sha256_digest(&manifest);
        Image { config, layers, manifest, digest }
    }
}

/// A descriptor JSON value.
pub fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": sha256_digest(data),
        "size": data.len(),
    })
}

/// OCI image manifest bytes for `config` and `layers`, with an optional
/// `subject` descriptor and `artifactType`.
pub fn oci_manifest(
    config: &[u8],
    layers: &[Vec<u8>],
    subject: Option<serde_json::Value>,
    artifact_type: Option<&str>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["subject"] = s;
    }
    if let Some(a) = artifact_type {
        m["artifactType"] = serde_json::Value::String(a.to_owned());
    }
    serde_json::to_vec_pretty(&m).expect("manifest json")
}

/// Writes `img` as an OCI image layout at `dir` with `ref_name` as its
/// `org.opencontainers.image.ref.name` annotation.
pub fn write_oci_layout(dir: &Path, img: &Image, ref_name: &str) {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("create layout");
    let write_blob = |data: &[u8]| {
        let d = sha256_digest(data);
        let hex = d.trim_start_matches("sha256:");
        std::fs::write(blobs.join(hex), data).expect("write blob");
    };
    write_blob(&img.config);
    for l in &img.layers {
        write_blob(l);
    }
    write_blob(&img.manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write oci-layout");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": img.digest,
            "size": img.manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": ref_name },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("index json")).expect("write index.json");
}

/// Reads an OCI layout's index.json and returns the manifest digest tagged
/// `ref_name` (or the only one, if `ref_name` is empty).
pub fn oci_layout_manifest_digest(dir: &Path, ref_name: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    let manifests = index["manifests"].as_array().expect("manifests array");
    let m = manifests
        .iter()
        .find(|m| {
            ref_name.is_empty() || m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(ref_name)
        })
        .unwrap_or_else(|| panic!("no manifest {ref_name:?} in {index}"));
    m["digest"].as_str().expect("digest").to_owned()
}

/// Reads a blob from an OCI layout.
pub fn oci_layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').expect("digest");
    std::fs::read(dir.join("blobs").join(alg).join(hex)).expect("read layout blob")
}
