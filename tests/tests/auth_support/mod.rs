//! Helpers for the authentication end-to-end tests (tests/tests/auth/): a server
//! launcher that accepts any answer from `/v2/` as "ready" (with auth on,
//! `/v2/` is 401 or 403), HTTP clients bound to a chosen loopback source
//! address, `WWW-Authenticate` parsing, htpasswd files made with the real
//! `htpasswd`/`openssl` tools, a loopback OIDC issuer and a secret scan of
//! the server log.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, require_tool, run};

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// A `cove serve` process with an auth config. Killed on drop; its log is
/// printed when the test panics.
pub struct AuthServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub log_path: PathBuf,
    /// Holds the data dir, the config and any files the config names (`@DIR@`).
    pub tmp: tempfile::TempDir,
}

impl AuthServer {
    /// Starts `bin serve --config` with `config`, where `@LISTEN@` is the
    /// address, `@DATA@` the data directory and `@DIR@` the server's temp
    /// directory (into which `files` are written first). `env` is added to
    /// the process environment (e.g. `COVE_LOG`).
    pub async fn start(bin: &Path, config: &str, files: &[(&str, String)], env: &[(&str, &str)]) -> AuthServer {
        let tmp = tempfile::Builder::new().prefix("cove-auth-e2e-").tempdir().expect("tempdir");
        for (name, content) in files {
            std::fs::write(tmp.path().join(name), content).expect("write server file");
        }
        let log_path = tmp.path().join("cove.log");
        let data = tmp.path().join("data");
        let mut last = String::new();
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let cfg = config
                .replace("@LISTEN@", &addr.to_string())
                .replace("@DATA@", &data.display().to_string())
                .replace("@DIR@", &tmp.path().display().to_string());
            let cfg_path = tmp.path().join("cove.toml");
            std::fs::write(&cfg_path, cfg).expect("write config");
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
            let mut cmd = Command::new(bin);
            cmd.arg("serve")
                .arg("--config")
                .arg(&cfg_path)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(&data)
                .current_dir(tmp.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log)
                .env_remove("http_proxy")
                .env_remove("HTTP_PROXY")
                .env_remove("COVE_LOG");
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn cove");
            let base = format!("http://{addr}");
            match wait_ready(&mut child, &base).await {
                Ok(()) => return AuthServer { child: Some(child), addr, base, log_path, tmp },
                Err(e) => {
                    last = e;
                    let _ = child.kill();
                    let _ = child.wait();
                    let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if !logs.contains("in use") {
                        panic!("cove did not start: {last}\n--- log ---\n{logs}");
                    }
                }
            }
        }
        panic!("cove did not start: {last}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A client of this server from `127.0.0.1`.
    pub fn client(&self) -> Client {
        Client::new(&self.base, None)
    }

    /// A client of this server from another loopback source address.
    pub fn client_from(&self, source: &str) -> Client {
        Client::new(&self.base, Some(source.parse().expect("source address")))
    }

    /// `host:port` as image references want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let logs = self.logs();
            let start = logs.len().saturating_sub(6000);
            let start = (start..logs.len()).find(|i| logs.is_char_boundary(*i)).unwrap_or(logs.len());
            eprintln!("--- cove log (tail) ---\n{}", &logs[start..]);
        }
    }
}

/// Waits until `base/v2/` gives any HTTP answer (401/403 included) while
/// `child` is alive.
async fn wait_ready(child: &mut Child, base: &str) -> Result<(), String> {
    let client = client_from(None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("cove exited early with {st}"));
        }
        if client.get(format!("{base}/v2/")).send().await.is_ok() {
            // Another process could own the port if ours lost a bind race.
            tokio::time::sleep(Duration::from_millis(30)).await;
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("cove exited with {st}"));
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("no answer from /v2/ within 30s".into());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// A reqwest client with no proxy and no redirects, optionally bound to a
/// local source address (any 127.0.0.0/8 address works on Linux loopback).
pub fn client_from(source: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120));
    if let Some(ip) = source {
        b = b.local_address(ip);
    }
    b.build().expect("reqwest client")
}

/// A response reduced to what the tests look at.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    }

    /// The codes of the OCI error body (empty when the body is not one).
    pub fn codes(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        v["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["code"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The first error message.
    pub fn message(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        v["errors"][0]["message"].as_str().unwrap_or("").to_owned()
    }
}

/// Talks to one server from one source address.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, source: Option<IpAddr>) -> Client {
        Client { base: base.to_owned(), http: client_from(source) }
    }

    /// Sends `method path` with optional `Authorization`, extra headers and body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Resp {
        let url = if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) };
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, url);
        if let Some(a) = authorization {
            rb = rb.header("authorization", a);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some((b, ct)) = body {
            rb = rb.header("content-type", ct).body(b);
        }
        let r = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        Resp { status, headers, body }
    }

    /// GET with an Accept header for every manifest type.
    pub async fn get(&self, path: &str, authorization: Option<&str>) -> Resp {
        self.send("GET", path, authorization, &[("accept", crate::common::ACCEPT_ALL)], None).await
    }
}

pub use cove_testkit::util::basic;

// ---------------------------------------------------------------------------
// WWW-Authenticate
// ---------------------------------------------------------------------------

/// A parsed challenge: scheme and parameters (quoted values unquoted; commas
/// inside quotes, as in `scope="repository:a:pull,push"`, kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

/// Parses one challenge (`Bearer realm="…",service="…",scope="…"`).
pub fn parse_challenge(h: &str) -> Challenge {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            assert!(closed, "unterminated quoted value in challenge {h:?}");
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val);
    }
    Challenge { scheme: scheme.to_owned(), params }
}

// ---------------------------------------------------------------------------
// htpasswd files from the real tools
// ---------------------------------------------------------------------------

/// An htpasswd line for `user` with a bcrypt hash of `cost`, made by
/// `htpasswd -nbB` (apache2-utils).
pub fn bcrypt_line(user: &str, password: &str, cost: u32) -> String {
    let tool = require_tool("htpasswd", "apache2-utils");
    let out = run(Command::new(tool).args(["-nbB", "-C", &cost.to_string(), user, password]));
    let line = out.lines().next().unwrap_or_default().trim().to_owned();
    assert!(line.starts_with(&format!("{user}:$2")), "htpasswd -B output {line:?}");
    line
}

/// An htpasswd line with a SHA-crypt hash (`$5$` for 256, `$6$` for 512)
/// made by `openssl passwd`.
pub fn sha_crypt_line(user: &str, password: &str, bits: u32) -> String {
    let flag = if bits == 256 { "-5" } else { "-6" };
    let out = run(Command::new(require_tool("openssl", "openssl")).args(["passwd", flag, password]));
    let hash = out.trim();
    assert!(hash.starts_with(if bits == 256 { "$5$" } else { "$6$" }), "openssl passwd output {hash:?}");
    format!("{user}:{hash}")
}

// The loopback OIDC issuer, its keys and forged tokens are cove-testkit's.
pub use cove_testkit::oidc::{hs256_token, unsigned_token, Issuer, SigningKey};

/// Seconds since the epoch.
pub use cove_testkit::util::now_secs as now;

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// Asserts that none of `secrets` (passwords, tokens, whole `Authorization`
/// values and their base64 parts) appears in `text`.
pub fn assert_no_secrets(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        if s.len() < 6 {
            continue;
        }
        assert!(!text.contains(s.as_str()), "{what} contains a secret ({}…, {} chars)", &s[..4.min(s.len())], s.len());
        // JWTs: their signature part alone is secret enough.
        if let Some(sig) = s.rsplit('.').next().filter(|p| p.len() >= 20 && s.matches('.').count() == 2) {
            assert!(!text.contains(sig), "{what} contains a token signature");
        }
    }
}
