//! Shared harness for the end-to-end tests: starts the real `cove` binary on
//! a free loopback port with its own data directory, and offers small helpers
//! to talk the OCI distribution protocol over raw HTTP. Content, OCI images
//! and layouts, podman and the other helpers come from cove-testkit and are
//! re-exported here, so `use common::*` brings what every test uses.
//!
//! Every test owns its server and temp directories, so tests run in parallel.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

mod checks;
mod uploads;

pub use checks::*;

#[allow(unused_imports)] // each test binary uses a different subset
pub use cove_testkit::content::{memory_of, FastSha256, Memory, Pattern};
#[allow(unused_imports)]
pub use cove_testkit::oci::*;
#[allow(unused_imports)]
pub use cove_testkit::peers::podman::Podman;
#[allow(unused_imports)]
pub use cove_testkit::util::{files_under, free_port, random_bytes, random_name, require_tool, run, sha256_digest};

#[allow(unused_imports)]
pub use cove_testkit::cove_bin::{cove_bin, target_dir};

/// Prints a measurement and appends it to `<target>/cove-e2e-report.txt`,
/// which scripts/test.sh shows at the end of a run.
pub fn report(line: &str) {
    use std::io::Write as _;
    eprintln!("{line}");
    if let Ok(mut f) =
        std::fs::OpenOptions::new().create(true).append(true).open(target_dir().join("cove-e2e-report.txt"))
    {
        let _ = writeln!(f, "{line}");
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// Options for starting a server.
#[derive(Default, Clone)]
pub struct ServerOptions {
    /// Contents of a TOML config file passed with `--config`.
    pub config: Option<String>,
    /// Pass `--listen`/`--data-dir` flags (default true). When false, the
    /// config file must provide them.
    pub no_flags: bool,
    /// Omit `--data-dir`: the server runs in the temp dir, whose `data/`
    /// is then the default data directory.
    pub omit_data_dir: bool,
    /// Extra command-line arguments after `serve`.
    pub extra_args: Vec<String>,
}

/// A running `cove serve` process. Killed (SIGKILL) on drop; when the test is
/// panicking, its stderr is printed to help diagnose the failure.
pub struct Server {
    child: Option<Child>,
    /// The listening address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The data directory (kept across [`Server::restart`]).
    pub data_dir: PathBuf,
    /// The process's stderr, captured to a file.
    pub log_path: PathBuf,
    /// Holds the data and log directories until the server is dropped.
    pub tmp: tempfile::TempDir,
    opts: ServerOptions,
    /// A client with no proxy, no redirects and a generous timeout.
    pub http: reqwest::Client,
}

/// An HTTP client for tests: no proxy (never leave loopback), no redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
}

impl Server {
    /// Starts a server with default options and a fresh data directory.
    pub async fn start() -> Server {
        Server::start_with(ServerOptions::default()).await
    }

    /// Starts a server with `opts` and a fresh data directory.
    pub async fn start_with(opts: ServerOptions) -> Server {
        let tmp = tempfile::Builder::new().prefix("cove-e2e-").tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let log_path = tmp.path().join("cove.log");
        let mut s = Server {
            child: None,
            addr: "127.0.0.1:1".parse().expect("addr"),
            base: String::new(),
            data_dir,
            log_path,
            tmp,
            opts,
            http: http_client(),
        };
        s.spawn_and_wait().await;
        s
    }

    /// Writes the config (if any) and spawns the process on a fresh port,
    /// retrying if the port was taken meanwhile; waits until `/v2/` answers.
    async fn spawn_and_wait(&mut self) {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            self.addr = SocketAddr::from(([127, 0, 0, 1], port));
            self.base = format!("http://{}", self.addr);
            let mut cmd = Command::new(cove_bin());
            cmd.arg("serve");
            if let Some(cfg) = &self.opts.config {
                let cfg = cfg
                    .replace("@LISTEN@", &self.addr.to_string())
                    .replace("@DATA@", &self.data_dir.display().to_string());
                let path = self.tmp.path().join("cove.toml");
                std::fs::write(&path, cfg).expect("write config");
                cmd.arg("--config").arg(&path);
            }
            if !self.opts.no_flags {
                cmd.arg("--listen").arg(self.addr.to_string());
                if !self.opts.omit_data_dir {
                    cmd.arg("--data-dir").arg(&self.data_dir);
                }
            }
            cmd.current_dir(self.tmp.path());
            cmd.args(&self.opts.extra_args);
            let log =
                std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open log file");
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .env("RUST_BACKTRACE", "1")
                .env_remove("http_proxy")
                .env_remove("HTTP_PROXY");
            let child = cmd.spawn().expect("spawn cove");
            self.child = Some(child);
            match self.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return,
                Err(e) => {
                    last_err = e;
                    self.kill9();
                    if !self.logs().contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("cove did not become ready: {last_err}\n--- cove stderr ---\n{}", self.logs_tail(8000));
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/v2/", self.base);
        let client = http_client();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("cove exited early with {status}"));
                }
            }
            if let Ok(r) = client.get(&url).send().await {
                // A server with authentication answers 401/403 when ready.
                if matches!(r.status().as_u16(), 200 | 401 | 403)
                    && r.headers().contains_key("docker-distribution-api-version")
                {
                    // Another test's server could own this port if ours lost a
                    // bind race: make sure our process is the one alive.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    if let Some(child) = self.child.as_mut() {
                        if let Ok(Some(status)) = child.try_wait() {
                            return Err(format!("cove exited with {status}"));
                        }
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no 200 from {url} within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the
    /// exit status (None if it had to be killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the server again on the same data directory (new port).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait().await;
    }

    /// The captured stderr so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` bytes of the captured stderr.
    pub fn logs_tail(&self, n: usize) -> String {
        let s = self.logs();
        let mut start = s.len().saturating_sub(n);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        s[start..].to_owned()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Peak and current resident set size of the server, in KiB.
    pub fn memory(&self) -> Memory {
        memory_of(self.pid())
    }

    // ---- raw HTTP helpers ---------------------------------------------------

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).header("accept", accept_for(path)).send().await.expect("GET request")
    }

    pub async fn head(&self, path: &str) -> reqwest::Response {
        self.http.head(self.url(path)).header("accept", accept_for(path)).send().await.expect("HEAD request")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http.delete(self.url(path)).send().await.expect("DELETE request")
    }

    pub fn req(&self, method: &str, path_or_url: &str) -> reqwest::RequestBuilder {
        let url = if path_or_url.starts_with("http") { path_or_url.to_owned() } else { self.url(path_or_url) };
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http.request(m, url)
    }

    /// Resolves a `Location` header (absolute or relative) to a full URL.
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            self.url(location)
        }
    }

    /// Starts an upload session for `repo`; returns its absolute URL.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/")).send().await.expect("POST upload");
        assert_eq!(r.status(), 202, "start upload for {repo}");
        self.resolve(&header(&r, "location"))
    }

    /// Pushes `data` as a blob of `repo` (POST then PUT with the whole body).
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let url = self.start_upload(repo).await;
        let r = self.put_final(&url, &digest, None, data).await;
        assert_eq!(r.status(), 201, "push blob {digest} to {repo}");
        digest
    }

    /// GET (or HEAD) a manifest with an Accept header naming every manifest
    /// type, as real clients send.
    pub async fn manifest(&self, method: &str, repo: &str, reference: &str) -> reqwest::Response {
        self.req(method, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", ACCEPT_ALL)
            .send()
            .await
            .expect("manifest request")
    }

    /// Pushes a manifest; returns the response.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> reqwest::Response {
        self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Pushes a small OCI image (config + `layers` random layers) tagged
    /// `tag`; returns the image.
    pub async fn push_image(&self, repo: &str, tag: &str, layers: usize) -> Image {
        let img = Image::random(layers);
        self.push_blob(repo, &img.config).await;
        for l in &img.layers {
            self.push_blob(repo, l).await;
        }
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &img.manifest).await;
        assert_eq!(r.status(), 201, "push manifest {repo}:{tag}");
        img
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- cove stderr (last 6000 bytes of {}) ---\n{}", self.log_path.display(), self.logs_tail(6000));
        }
    }
}

/// The Accept header a client sends for `path`: every manifest type for
/// manifest paths, anything otherwise.
pub fn accept_for(path: &str) -> &'static str {
    if path.contains("/manifests/") {
        ACCEPT_ALL
    } else {
        "*/*"
    }
}

/// A client (no proxy, no redirects) whose connections come from the
/// loopback address `source` (any 127.0.0.0/8 address works on Linux), to
/// be a peer inside or outside `trusted_networks`/`trusted_proxies`.
pub fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .local_address(source.parse::<std::net::IpAddr>().expect("source address"))
        .build()
        .expect("reqwest client")
}

/// Pushes `img` to the registry at `base` (`http://ADDR`: Cove, or a peer such
/// as distribution) as `repo:tag`, each blob as one monolithic upload
/// (POST, then PUT with the digest), then the manifest.
pub async fn push_image_to(base: &str, repo: &str, tag: &str, img: &Image) {
    let http = http_client();
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.expect("POST upload");
        assert_eq!(r.status(), 202, "{base}: upload start for {repo}");
        let loc = header(&r, "location");
        let url = if loc.starts_with("http") { loc } else { format!("{base}{loc}") };
        let r = http
            .put(with_query(&url, &format!("digest={}", sha256_digest(blob))))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .expect("PUT blob");
        assert_eq!(r.status(), 201, "{base}: blob of {repo}");
    }
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), 201, "{base}: manifest {repo}:{tag}");
}
