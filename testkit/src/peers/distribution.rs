//! The CNCF distribution registry (`docker-registry`) as a real peer: on a
//! free loopback port, its storage in a temp dir (or one the test names, so
//! two runs can share content), optionally with `auth: token` and HTTPS, its
//! access log on to count requests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{free_port, require_tool, wait_listening};

/// `auth: token` settings for [`Distribution`] (see [`crate::token`]).
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
    /// The storage root directory.
    pub root: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// Starts `docker-registry serve` on a free loopback port with storage
    /// under `root` (a fresh temp dir when `None`), requiring bearer tokens
    /// when `token` is given.
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
        let bin = require_tool("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new().prefix("cove-dist-").tempdir().expect("tempdir");
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
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("clone log"))
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        wait_listening(port, &mut child, "docker-registry", Some(&log), Duration::from_secs(15));
        Distribution { port, root, log, child: Some(child), _dir: dir }
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
