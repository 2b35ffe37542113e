//! `[server]`: the listener, the public URL, log format, host names and TLS files.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0:5050`.
    pub listen: String,
    /// The URL clients reach Cove at (e.g. `https://cove.example.ts.net`),
    /// used for absolute `Location` headers. Default: none (relative
    /// locations, or `X-Forwarded-Proto`/`X-Forwarded-Host` when a proxy sends them).
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
        }
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
