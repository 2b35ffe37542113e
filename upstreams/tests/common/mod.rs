//! Shared test helpers, written to be copied into other crates' tests:
//!
//! - [`Distribution`]: the real CNCF distribution registry
//!   (`/usr/bin/docker-registry`) on a loopback port, optionally with
//!   `auth: token`.
//! - [`OciLayout`]: builds an OCI image layout (random gzip layer, config,
//!   manifest; or an index of platform manifests) and pushes it with skopeo.
//! - [`TestServer`]: a raw HTTP/1.1 server on loopback whose handler decides
//!   every reply, including truncated and slow bodies.
//! - [`TokenIssuer`]: a token service for distribution's `auth: token`,
//!   signing ES256 JWTs with an openssl-generated key and self-signed cert.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- ports

/// A free loopback port (bound then released; a small race is accepted).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

async fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("docker-registry exited with {status}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("docker-registry did not listen on {port} within 10 s");
}

// ---------------------------------------------------------------- distribution

/// `auth: token` settings for [`Distribution`].
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: PathBuf,
}

/// A running distribution registry; killed on drop.
pub struct Distribution {
    pub port: u16,
    pub root: PathBuf,
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// Starts `docker-registry serve` on a free loopback port with storage
    /// under `root` (a fresh tempdir when `None`).
    pub async fn start(root: Option<&Path>, token: Option<&TokenAuth>) -> Distribution {
        Distribution::start_with(root, token, None).await
    }

    /// Like [`Distribution::start`], serving HTTPS with `tls = (cert, key)`
    /// PEM files when given.
    pub async fn start_with(
        root: Option<&Path>,
        token: Option<&TokenAuth>,
        tls: Option<(&Path, &Path)>,
    ) -> Distribution {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = root.map(Path::to_path_buf).unwrap_or_else(|| dir.path().join("storage"));
        std::fs::create_dir_all(&root).expect("root dir");
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root = root.display()
        );
        if let Some((cert, key)) = tls {
            yaml.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
        }
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
        let mut child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("clone log"))
            .stderr(logf)
            .spawn()
            .expect("start /usr/bin/docker-registry (apt-get install docker-registry)");
        wait_for_port(port, &mut child, &log).await;
        Distribution { port, root, log, child, _dir: dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT` (for skopeo's `docker://` references).
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Access-log lines mentioning `needle` (e.g. `"GET /v2/library/app/blobs"`).
    pub fn access_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("HTTP/1.1\""))
            .count()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- OCI layout

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Pseudo-random bytes from a seed (xorshift; no RNG dependency).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let mut x = seed ^ nanos ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A blob as pushed: digest, media type, bytes.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// One image as written into a layout.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// An image index and its platform images.
#[derive(Clone, Debug)]
pub struct Index {
    pub index: Blob,
    pub images: Vec<Image>,
}

/// An OCI image layout directory under construction.
pub struct OciLayout {
    pub dir: PathBuf,
    refs: Vec<serde_json::Value>,
}

impl OciLayout {
    /// Creates an empty layout at `dir`.
    pub fn new(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dirs");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let l = OciLayout { dir: dir.to_path_buf(), refs: Vec::new() };
        l.write_index();
        l
    }

    fn put(&self, media_type: &str, bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), &bytes).expect("blob");
        Blob { digest, media_type: media_type.to_owned(), bytes }
    }

    fn write_index(&self) {
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": self.refs,
        });
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx).expect("json")).expect("index.json");
    }

    fn tag(&mut self, blob: &Blob, tag: &str) {
        self.refs.push(serde_json::json!({
            "mediaType": blob.media_type,
            "digest": blob.digest,
            "size": blob.bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }));
        self.write_index();
    }

    fn image_blobs(&self, layer_size: usize, arch: &str, seed: u64) -> Image {
        let raw = random_bytes(layer_size, seed);
        let diff_id = sha256(&raw);
        let layer = self.put(OCI_LAYER_GZIP, gzip(&raw));
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        });
        let config = self.put(OCI_CONFIG, serde_json::to_vec(&config).expect("json"));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.bytes.len() },
            "layers": [ { "mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.bytes.len() } ],
        });
        // Pretty-printed on purpose: byte-exactness matters, not canonical JSON.
        let manifest = self.put(OCI_MANIFEST, serde_json::to_vec_pretty(&manifest).expect("json"));
        Image { manifest, config, layers: vec![layer] }
    }

    /// Adds a single-platform image tagged `tag` with one random layer of
    /// `layer_size` uncompressed bytes.
    pub fn add_image(&mut self, tag: &str, layer_size: usize) -> Image {
        let img = self.image_blobs(layer_size, "amd64", tag.len() as u64);
        self.tag(&img.manifest.clone(), tag);
        img
    }

    /// Adds an index tagged `tag` over one image per architecture in `archs`.
    pub fn add_index(&mut self, tag: &str, archs: &[&str], layer_size: usize) -> Index {
        let images: Vec<Image> =
            archs.iter().enumerate().map(|(i, a)| self.image_blobs(layer_size, a, i as u64 + 100)).collect();
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
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        let index = self.put(OCI_INDEX, serde_json::to_vec(&index).expect("json"));
        self.tag(&index.clone(), tag);
        Index { index, images }
    }
}

/// `skopeo copy --all --preserve-digests oci:DIR:TAG docker://DEST` over
/// plain HTTP; panics with skopeo's output on failure.
pub fn skopeo_push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "-q"]);
    if let Some(c) = creds {
        cmd.arg("--dest-creds").arg(c);
    }
    let out = cmd
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy to {dest} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- raw HTTP server

/// A request as the test server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
}

impl Request {
    /// A header value by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        reqwest::Url::parse(&format!("http://x/?{q}"))
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// How the body of a [`Reply`] is sent.
#[derive(Clone, Debug)]
pub enum BodyMode {
    /// `Content-Length` and the whole body.
    Full,
    /// `Content-Length` of the whole body, but only `n` bytes, then close.
    Truncate(usize),
    /// Headers at once, then wait, then the body.
    Delay(Duration),
    /// No `Content-Length`: chunked transfer encoding, in `n`-byte chunks.
    Chunked(usize),
}

/// What the test server answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub mode: BodyMode,
    /// Wait this long before sending anything.
    pub delay_head: Duration,
}

impl Reply {
    /// A reply with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, headers: Vec::new(), body: body.into(), mode: BodyMode::Full, delay_head: Duration::ZERO }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets how the body is sent.
    pub fn mode(mut self, mode: BodyMode) -> Reply {
        self.mode = mode;
        self
    }

    /// Delays the whole response.
    pub fn delay_head(mut self, d: Duration) -> Reply {
        self.delay_head = d;
        self
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server; every reply closes its connection.
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Starts serving with `handler` on a free loopback port.
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handler: Handler = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(stream, handler, reqs).await;
                });
            }
        });
        TestServer { addr, requests, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// Number of requests whose `METHOD path` starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.requests().iter().filter(|r| format!("{} {}", r.method, r.target).starts_with(prefix)).count()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn(mut stream: TcpStream, handler: Handler, reqs: Arc<Mutex<Vec<Request>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let req = Request { method, target, headers };
    reqs.lock().expect("lock").push(req.clone());
    let reply = handler(&req);
    tokio::time::sleep(reply.delay_head).await;
    let reason = match reply.status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let chunked = matches!(reply.mode, BodyMode::Chunked(_));
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    if req.method == "HEAD" {
        return Ok(());
    }
    match reply.mode {
        BodyMode::Full => stream.write_all(&reply.body).await?,
        BodyMode::Truncate(n) => stream.write_all(&reply.body[..n.min(reply.body.len())]).await?,
        BodyMode::Delay(d) => {
            tokio::time::sleep(d).await;
            stream.write_all(&reply.body).await?;
        }
        BodyMode::Chunked(n) => {
            for c in reply.body.chunks(n.max(1)) {
                stream.write_all(format!("{:x}\r\n", c.len()).as_bytes()).await?;
                stream.write_all(c).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        }
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------- token issuer

/// A signing key and its self-signed certificate (openssl CLI).
pub struct SigningCert {
    pub key_pem: Vec<u8>,
    pub key_pem_path: PathBuf,
    pub cert_pem_path: PathBuf,
    /// The certificate's DER, base64 (standard) as `x5c` wants it.
    pub cert_der_b64: String,
    _dir: tempfile::TempDir,
}

impl SigningCert {
    /// Generates a P-256 key and a self-signed certificate for it.
    pub fn generate() -> SigningCert {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=cove-test-token-issuer",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
        let pem = std::fs::read_to_string(&cert).expect("cert");
        // The PEM body is the base64 of the DER.
        let cert_der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        SigningCert {
            key_pem: std::fs::read(&key).expect("key"),
            key_pem_path: key,
            cert_pem_path: cert,
            cert_der_b64,
            _dir: dir,
        }
    }
}

/// A token service for distribution's `auth: token`: grants whatever scope
/// is asked (if the Basic credentials match, when required).
pub struct TokenIssuer {
    pub server: TestServer,
    pub hits: Arc<AtomicUsize>,
    pub issuer: String,
    pub service: String,
}

/// The JWT claims distribution 2.8 checks.
#[derive(serde::Serialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<serde_json::Value>,
}

impl TokenIssuer {
    /// Starts an issuer; with `creds = Some((user, pass))` only requests
    /// carrying that Basic authorization get a token (others get 401).
    pub async fn start(cert: &SigningCert, creds: Option<(&str, &str)>, expires_in: u64) -> TokenIssuer {
        let issuer = "cove-test-issuer".to_owned();
        let service = "cove-test-registry".to_owned();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&cert.key_pem).expect("ec key");
        let x5c = cert.cert_der_b64.clone();
        let want = creds
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let hits = Arc::new(AtomicUsize::new(0));
        let (h, iss, svc) = (hits.clone(), issuer.clone(), service.clone());
        let counter = AtomicUsize::new(0);
        let server = TestServer::start(move |req| {
            h.fetch_add(1, Ordering::SeqCst);
            if let Some(w) = &want {
                if req.header("authorization") != Some(w.as_str()) {
                    return Reply::new(401, r#"{"details":"bad credentials"}"#)
                        .header("WWW-Authenticate", "Basic realm=\"token\"");
                }
            }
            if req.query("service").as_deref() != Some(svc.as_str()) {
                return Reply::new(400, "wrong service");
            }
            let mut access = Vec::new();
            if let Some(scope) = req.query("scope") {
                // repository:NAME:ACTIONS (NAME may hold ':' for a port).
                let (typ, rest) = scope.split_once(':').unwrap_or_default();
                let (name, actions) = rest.rsplit_once(':').unwrap_or_default();
                access.push(serde_json::json!({
                    "type": typ, "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }));
            }
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_secs();
            let claims = Claims {
                iss: iss.clone(),
                sub: "tester".into(),
                aud: svc.clone(),
                exp: now + expires_in,
                nbf: now - 5,
                iat: now,
                jti: format!("jti-{}", counter.fetch_add(1, Ordering::SeqCst)),
                access,
            };
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.x5c = Some(vec![x5c.clone()]);
            let token = jsonwebtoken::encode(&header, &claims, &key).expect("sign");
            let body = serde_json::json!({ "token": token, "expires_in": expires_in });
            Reply::new(200, serde_json::to_vec(&body).expect("json")).header("Content-Type", "application/json")
        })
        .await;
        TokenIssuer { server, hits, issuer, service }
    }

    /// The realm URL to configure in distribution.
    pub fn realm(&self) -> String {
        format!("{}/token", self.server.url())
    }

    /// distribution's `auth: token` settings for this issuer.
    pub fn auth_config(&self, cert: &SigningCert) -> TokenAuth {
        TokenAuth {
            realm: self.realm(),
            service: self.service.clone(),
            issuer: self.issuer.clone(),
            rootcertbundle: cert.cert_pem_path.clone(),
        }
    }

    /// Tokens requested so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- cove_upstreams

/// Builds the upstream `host` from a TOML snippet of its table's keys,
/// through the same path a server config takes.
pub fn upstream_from_toml(host: &str, keys: &str) -> cove_upstreams::OciUpstream {
    let text = format!("[upstreams.\"{host}\"]\n{keys}\n");
    #[derive(serde::Deserialize)]
    struct Root {
        upstreams: std::collections::BTreeMap<String, cove_upstreams::UpstreamConfig>,
    }
    let root: Root = toml::from_str(&text).expect("toml");
    let resolved = cove_upstreams::resolve_upstreams(&root.upstreams).expect("valid config");
    let r = resolved.iter().find(|r| r.host == host).expect("upstream resolved");
    cove_upstreams::OciUpstream::new(r).expect("build upstream")
}

/// Collects a blob stream; the error if it fails.
pub async fn collect(mut stream: cove_core::ByteStream) -> Result<Vec<u8>, std::io::Error> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Parses a name, tag or digest for a test.
pub fn repo(s: &str) -> cove_core::RepoName {
    s.parse().expect("repo name")
}

/// Parses a reference for a test.
pub fn reference(s: &str) -> cove_core::Reference {
    s.parse().expect("reference")
}

/// Parses a digest for a test.
pub fn digest(s: &str) -> cove_core::Digest {
    s.parse().expect("digest")
}
