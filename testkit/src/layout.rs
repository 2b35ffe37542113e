//! OCI image layouts on disk with several images and indexes, whose layers
//! are real tar archives (so containerd can unpack them), for skopeo to push
//! into a registry.

use std::path::{Path, PathBuf};

use crate::oci::{OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use crate::util::{random_bytes, random_name, sha256_digest};

/// A blob as written: digest, media type, bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// One image: manifest, config, layers.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl LayoutImage {
    /// Digests of config and layers.
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(&self.config).chain(&self.layers).map(|b| b.digest.clone()).collect()
    }
}

/// An image index and its platform images.
#[derive(Clone, Debug)]
pub struct LayoutIndex {
    pub index: Blob,
    pub images: Vec<LayoutImage>,
}

/// A tar archive (ustar) holding `files`: what a real layer is, so that
/// containerd can unpack it.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{:0width$o}\0", v, width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        assert!(name.len() < 100, "tar name too long");
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let chk = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(chk.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// An OCI image layout directory under construction.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<serde_json::Value>,
}

impl Layout {
    /// Creates an empty layout at `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let l = Layout { dir: dir.to_path_buf(), refs: Vec::new() };
        l.write_index();
        l
    }

    fn put(&self, media_type: &str, bytes: Vec<u8>) -> Blob {
        let digest = sha256_digest(&bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), &bytes).expect("blob");
        Blob { digest, media_type: media_type.to_owned(), bytes }
    }

    fn write_index(&self) {
        let idx = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs });
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx).expect("json")).expect("index.json");
    }

    fn tag(&mut self, blob: &Blob, tag: &str) {
        self.refs.retain(|r| r["annotations"]["org.opencontainers.image.ref.name"] != tag);
        self.refs.push(serde_json::json!({
            "mediaType": blob.media_type,
            "digest": blob.digest,
            "size": blob.bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }));
        self.write_index();
    }

    fn image_blobs(&self, layer_sizes: &[usize], arch: &str) -> LayoutImage {
        let layers: Vec<Blob> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let name = format!("layer{i}-{arch}.bin");
                let data = random_bytes(n);
                self.put(OCI_LAYER, tar(&[(&name, &data)]))
            })
            .collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Cmd": ["/layer0.bin"] },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>() },
            "nonce": random_name(""),
        });
        let config = self.put(OCI_CONFIG, serde_json::to_vec(&config).expect("json"));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.bytes.len() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type, "digest": l.digest, "size": l.bytes.len(),
            })).collect::<Vec<_>>(),
        });
        // Pretty-printed on purpose: byte-exactness matters, not canonical JSON.
        let manifest = self.put(OCI_MANIFEST, serde_json::to_vec_pretty(&manifest).expect("json"));
        LayoutImage { manifest, config, layers }
    }

    /// Adds a linux/amd64 image tagged `tag` with one random-content layer
    /// (a tar holding one file) per entry of `layer_sizes`.
    pub fn add_image(&mut self, tag: &str, layer_sizes: &[usize]) -> LayoutImage {
        let img = self.image_blobs(layer_sizes, "amd64");
        self.tag(&img.manifest.clone(), tag);
        img
    }

    /// Adds an index tagged `tag` over one image per architecture.
    pub fn add_index(&mut self, tag: &str, archs: &[&str], layer_sizes: &[usize]) -> LayoutIndex {
        let images: Vec<LayoutImage> = archs.iter().map(|a| self.image_blobs(layer_sizes, a)).collect();
        let manifests: Vec<_> = images
            .iter()
            .zip(archs)
            .map(|(img, arch)| {
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": img.manifest.digest,
                    "size": img.manifest.bytes.len(),
                    "platform": { "architecture": arch, "os": "linux" },
                })
            })
            .collect();
        let index = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        let index = self.put(OCI_INDEX, serde_json::to_vec(&index).expect("json"));
        self.tag(&index.clone(), tag);
        LayoutIndex { index, images }
    }
}
