//! `[server]`: the listener, the public URL, log format, host names, TLS
//! files, and the connection and request limits ([`HttpLimits`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, parse_size};

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0:5050`.
    pub listen: String,
    /// The URL clients reach Cove at (e.g. `https://cove.example.ts.net`):
    /// the token realm (`<public_url>/token`) and containerd's `ns=` host.
    /// `Location` headers never use it: they are relative (or name the
    /// scheme and host a trusted proxy forwarded), so they work whichever
    /// address the client used. Default: none.
    pub public_url: Option<String>,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Host names Cove answers to besides `public_url`'s host: containerd's
    /// `ns=<one of these>` means Cove's own private repositories. Default none.
    pub hostnames: Vec<String>,
    /// PEM certificate chain (leaf first). Set with `tls_key`
    /// to serve HTTPS (HTTP/2 and HTTP/1.1); both files are re-read when
    /// they change. Default: none (plain HTTP).
    pub tls_cert: Option<PathBuf>,
    /// TLS: PEM private key (PKCS#8, PKCS#1 or SEC1) matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Time a client has to send a whole request head, counted from its
    /// first byte. Default `10s`.
    pub header_timeout: String,
    /// An open connection with no request in flight is closed after this.
    /// Default `60s`.
    pub idle_timeout: String,
    /// A request body that sends nothing for this long is dropped with its
    /// connection (an upload session keeps what it had). Default `60s`.
    pub body_timeout: String,
    /// Open connections at most; past it a new connection gets a minimal
    /// `503` with `Retry-After` and is closed (TLS ones are just closed).
    /// Default `1024` (keep below the open-file limit).
    pub max_connections: usize,
    /// Largest request head (request line and headers), e.g. `64KiB`;
    /// past it the answer is `431`. Default `64KiB`.
    pub max_header_size: String,
    /// After an early answer (401, 403, 404, 413, 400 before the body was
    /// read) Cove reads and discards up to this much of the body, so the
    /// client receives the answer instead of a reset. Default `32MiB`.
    pub drain_limit: String,
    /// And for this long at most. Default `10s`.
    pub drain_timeout: String,
    /// Close connections from outside `auth.trusted_networks` at accept,
    /// before reading a byte (trusted proxies and `127.0.0.1`/`::1`, which
    /// the `cove` admin commands use, excepted).
    /// `false` answers them `403 DENIED` naming the setting instead, and
    /// lets them reach `/healthz`, `/readyz` and `/metrics`. Default `true`.
    pub refuse_untrusted: bool,
    /// Upload sessions open at once, in all. Default `4096`.
    pub max_uploads: usize,
    /// Upload sessions open at once from one client address. Default `256`.
    pub max_uploads_per_source: usize,
    /// Largest blob a push may store, e.g. `20GiB`. Default: none.
    pub max_blob_size: Option<String>,
    /// This replica's name in `/metrics` (`cove_replica_info`) and
    /// `cove status`, to tell replicas on one storage apart. Default: the
    /// host name.
    pub replica: Option<String>,
}

impl ServerConfig {
    /// The replica name: `replica`, else the host name, else `cove`.
    pub fn replica_name(&self) -> String {
        self.replica.clone().filter(|r| !r.trim().is_empty()).unwrap_or_else(|| {
            let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
            if name.is_empty() {
                "cove".to_owned()
            } else {
                name
            }
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:5050".into(),
            public_url: None,
            log_format: LogFormat::Text,
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
            header_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            body_timeout: "60s".into(),
            max_connections: 1024,
            max_header_size: "64KiB".into(),
            drain_limit: "32MiB".into(),
            drain_timeout: "10s".into(),
            refuse_untrusted: true,
            max_uploads: 4096,
            max_uploads_per_source: 256,
            max_blob_size: None,
            replica: None,
        }
    }
}

/// The connection and request limits of `[server]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_header_size: usize,
    pub drain_limit: u64,
    pub drain_timeout: Duration,
    pub refuse_untrusted: bool,
    pub max_uploads: usize,
    pub max_uploads_per_source: usize,
    pub max_blob_size: Option<u64>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        let mut problems = Vec::new();
        let limits = validate_limits(&ServerConfig::default(), &mut problems);
        debug_assert!(problems.is_empty(), "{problems:?}");
        limits
    }
}

/// Parses the limits; every bad value is a problem naming its key (and the
/// default stands in for it).
pub(super) fn validate_limits(server: &ServerConfig, problems: &mut Vec<String>) -> HttpLimits {
    let mut duration = |key: &str, v: &str, default: u64| match parse_duration(v) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            problems.push(format!("server.{key}: must be more than 0s"));
            Duration::from_secs(default)
        }
        Err(e) => {
            problems.push(format!("server.{key}: {e}"));
            Duration::from_secs(default)
        }
    };
    let header_timeout = duration("header_timeout", &server.header_timeout, 10);
    let idle_timeout = duration("idle_timeout", &server.idle_timeout, 60);
    let body_timeout = duration("body_timeout", &server.body_timeout, 60);
    let drain_timeout = duration("drain_timeout", &server.drain_timeout, 10);
    let mut size = |key: &str, v: &str, min: u64| match parse_size(v) {
        Ok(n) if n >= min => Some(n),
        Ok(_) => {
            problems.push(format!("server.{key}: must be at least {min} bytes"));
            None
        }
        Err(e) => {
            problems.push(format!("server.{key}: {e}"));
            None
        }
    };
    let max_header_size = size("max_header_size", &server.max_header_size, 1024).unwrap_or(64 * 1024);
    let drain_limit = size("drain_limit", &server.drain_limit, 0).unwrap_or(32 << 20);
    let max_blob_size = server.max_blob_size.as_deref().and_then(|v| size("max_blob_size", v, 1));
    for (key, n) in [
        ("max_connections", server.max_connections),
        ("max_uploads", server.max_uploads),
        ("max_uploads_per_source", server.max_uploads_per_source),
    ] {
        if n == 0 {
            problems.push(format!("server.{key}: must be at least 1"));
        }
    }
    HttpLimits {
        header_timeout,
        idle_timeout,
        body_timeout,
        max_connections: server.max_connections.max(1),
        max_header_size: usize::try_from(max_header_size).unwrap_or(usize::MAX),
        drain_limit,
        drain_timeout,
        refuse_untrusted: server.refuse_untrusted,
        max_uploads: server.max_uploads.max(1),
        max_uploads_per_source: server.max_uploads_per_source.max(1),
        max_blob_size,
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Checks `server.listen`; `None` (and a problem) when it is no address.
pub(super) fn validate_listen(server: &ServerConfig, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match server.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems
                .push(format!("server.listen: {:?} is not an address like 0.0.0.0:5050 or [::]:5050", server.listen));
            None
        }
    }
}

/// `server.public_url` without a trailing slash; a problem when it is no
/// http(s) URL.
pub(super) fn validate_public_url(server: &ServerConfig, problems: &mut Vec<String>) -> Option<String> {
    let u = server.public_url.as_deref()?.trim_end_matches('/');
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && u.split("://").nth(1).is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace));
    if !ok {
        problems.push(format!("server.public_url: {u:?} is not an http:// or https:// URL"));
    }
    Some(u.to_owned())
}

/// `server.tls_cert` and `server.tls_key` come together and are not empty.
pub(super) fn validate_tls(server: &ServerConfig, problems: &mut Vec<String>) {
    match (&server.tls_cert, &server.tls_key) {
        (Some(_), None) => problems.push("server.tls_key: must be set with server.tls_cert".into()),
        (None, Some(_)) => problems.push("server.tls_cert: must be set with server.tls_key".into()),
        (Some(c), Some(k)) => {
            for (key, p) in [("server.tls_cert", c), ("server.tls_key", k)] {
                if p.as_os_str().is_empty() {
                    problems.push(format!("{key}: must not be empty"));
                }
            }
        }
        (None, None) => {}
    }
}

/// The host names meaning Cove itself in containerd's `ns=`:
/// `server.hostnames` (lowercased; none may be an upstream) and the host of
/// `public_url`.
pub(super) fn self_hosts(
    server: &ServerConfig,
    public_url: Option<&str>,
    upstream_hosts: &[String],
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut hosts = Vec::new();
    for (i, h) in server.hostnames.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':')) {
            problems.push(format!("server.hostnames[{i}]: {h:?} is not a host name"));
        } else if upstream_hosts.contains(&h) {
            problems.push(format!("server.hostnames[{i}]: {h:?} is also a configured upstream"));
        } else {
            hosts.push(h);
        }
    }
    if let Some(host) = public_url.and_then(url_host) {
        hosts.push(host);
    }
    hosts
}

/// The host (with port, if any) of an `http(s)://host[:port]/…` URL, lowercased.
pub(super) fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}
