//! The CNCF distribution registry (`/usr/bin/docker-registry`) as a real
//! upstream, OCI layouts with real tar layers, and skopeo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, random_bytes, require_tool, sha256_digest};

/// `auth: token` settings for [`Distribution`].
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: PathBuf,
}

/// A running distribution registry with its access log in `log`; killed on
/// drop (or by [`Distribution::stop`]).
pub struct Distribution {
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// Starts `docker-registry serve` on a free loopback port with fresh
    /// storage, optionally requiring bearer tokens.
    pub async fn start(token: Option<&TokenAuth>) -> Distribution {
        let bin = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new().prefix("cove-pt-dist-").tempdir().expect("tempdir");
        let root = dir.path().join("storage");
        std::fs::create_dir_all(&root).expect("root dir");
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root = root.display()
        );
        if let Some(t) = token {
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.rootcertbundle.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("registry.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("clone log"))
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {port} within 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Distribution { port, log, child: Some(child), _dir: dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT` (for skopeo's `docker://` references).
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Access-log request lines (`"METHOD /path HTTP/1.1"`) containing
    /// `needle`, e.g. `"GET /v2/library/app/blobs/"`.
    pub fn requests(&self, needle: &str) -> Vec<String> {
        // The access log line is written when the response ends; give a
        // just-finished request a moment to appear.
        std::thread::sleep(Duration::from_millis(150));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle) && l.contains(" HTTP/1.1\""))
            .map(str::to_owned)
            .collect()
    }

    /// How many access-log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests(needle).len()
    }

    /// All request lines of the access log (for failure messages).
    pub fn all_requests(&self) -> String {
        self.requests("/v2/").join("\n")
    }

    /// Stops the registry (SIGKILL): the upstream is down from now on.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- layouts

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed tar layers: containerd unpacks them, and no compression
/// dependency is needed.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A blob as written: digest, media type, bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// One image: manifest, config, layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Image {
    /// Digests of config and layers.
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(&self.config).chain(&self.layers).map(|b| b.digest.clone()).collect()
    }
}

/// An image index and its platform images.
#[derive(Clone, Debug)]
pub struct Index {
    pub index: Blob,
    pub images: Vec<Image>,
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

    fn image_blobs(&self, layer_sizes: &[usize], arch: &str) -> Image {
        let layers: Vec<Blob> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let name = format!("layer{i}-{arch}.bin");
                let data = random_bytes(n);
                self.put(OCI_LAYER_TAR, tar(&[(&name, &data)]))
            })
            .collect();
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Cmd": ["/layer0.bin"] },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>() },
            "nonce": crate::common::random_name(""),
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
        Image { manifest, config, layers }
    }

    /// Adds a linux/amd64 image tagged `tag` with one random-content layer
    /// (a tar holding one file) per entry of `layer_sizes`.
    pub fn add_image(&mut self, tag: &str, layer_sizes: &[usize]) -> Image {
        let img = self.image_blobs(layer_sizes, "amd64");
        self.tag(&img.manifest.clone(), tag);
        img
    }

    /// Adds an index tagged `tag` over one image per architecture.
    pub fn add_index(&mut self, tag: &str, archs: &[&str], layer_sizes: &[usize]) -> Index {
        let images: Vec<Image> = archs.iter().map(|a| self.image_blobs(layer_sizes, a)).collect();
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
        Index { index, images }
    }
}

// ---------------------------------------------------------------- skopeo

/// skopeo with no user policy or credentials influencing the test.
pub fn skopeo() -> Command {
    let mut c = Command::new(require_tool("skopeo", "skopeo"));
    c.arg("--insecure-policy");
    c.env_remove("REGISTRY_AUTH_FILE");
    c.env_remove("http_proxy").env_remove("HTTP_PROXY").env_remove("https_proxy").env_remove("HTTPS_PROXY");
    c
}

/// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://DEST` over
/// plain HTTP.
pub fn skopeo_push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "-q"]);
    if let Some(c) = creds {
        cmd.arg("--dest-creds").arg(c);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{dest}"));
    crate::common::run(&mut cmd);
}

/// `skopeo copy --preserve-digests docker://SRC oci:DIR:TAG` over plain
/// HTTP (`all`: every platform of an index). Returns skopeo's output or
/// its failure message.
pub fn skopeo_pull(src: &str, dir: &Path, tag: &str, all: bool) -> Result<String, String> {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{src}")).arg(format!("oci:{}:{tag}", dir.display()));
    let out = cmd.stdin(Stdio::null()).output().expect("run skopeo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
