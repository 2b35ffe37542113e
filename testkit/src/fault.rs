//! The misbehaving registry: a raw HTTP/1.1 server on loopback whose handler
//! decides every reply, including truncated, throttled, delayed and chunked
//! bodies. [`Content`] and [`serve`] make it speak just enough of the
//! distribution protocol (manifests by tag and digest, blobs; GET and HEAD),
//! so a handler can answer well and misbehave only where a test says so:
//! any status, `Retry-After`, truncated bodies, wrong bytes, slow bodies.
//! Every request is recorded; bodies are sent from shared `Bytes`, so 50 MiB
//! blobs cost one copy. Every reply closes its connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::oci::OCI_MANIFEST;
use crate::util::sha256_digest;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Lowercased header names.
    pub headers: HashMap<String, String>,
    /// The body (read up to `Content-Length`, at most 64 KiB).
    pub body: Vec<u8>,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }

    /// A header by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// A query parameter (percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.target.split_once('?')?.1;
        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

/// How a reply's body is sent.
#[derive(Clone, Debug)]
pub enum BodyMode {
    /// All of it.
    Full,
    /// `Content-Length` of the whole body but only the first `n` bytes, then
    /// the connection closes.
    Truncate(usize),
    /// `chunk` bytes at a time with `every` between chunks (the first chunk
    /// right after the headers).
    Throttle { chunk: usize, every: Duration },
    /// Headers at once, then wait, then the whole body.
    Delay(Duration),
    /// No `Content-Length`: chunked transfer encoding, in `n`-byte chunks.
    Chunked(usize),
}

/// A reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub mode: BodyMode,
    /// Wait this long before sending anything.
    pub delay: Duration,
}

impl Reply {
    /// `status` with `body`, sent whole.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply { status, headers: Vec::new(), body: body.into(), mode: BodyMode::Full, delay: Duration::ZERO }
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

    /// Delays the whole reply.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// An OCI error reply.
    pub fn error(status: u16, code: &str) -> Reply {
        let body = serde_json::json!({ "errors": [{ "code": code, "message": code }] }).to_string();
        Reply::new(status, body).header("Content-Type", "application/json")
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// The server; stops accepting when dropped.
pub struct FaultServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    /// Starts serving with `handler` deciding every reply.
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handler: Handler = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (handler, reqs) = (handler.clone(), reqs.clone());
                tokio::spawn(async move {
                    let _ = serve_conn(stream, handler, reqs).await;
                });
            }
        });
        FaultServer { addr, requests, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// Requests whose `METHOD target` starts with `prefix`
    /// (`"GET /v2/a/b/manifests/"`).
    pub fn count_prefix(&self, prefix: &str) -> usize {
        self.requests().iter().filter(|r| format!("{} {}", r.method, r.target).starts_with(prefix)).count()
    }

    /// Requests with `method` whose path contains `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.requests().iter().filter(|r| r.method == method && r.path().contains(needle)).count()
    }

    /// Every request as `METHOD target` lines (for failure messages).
    pub fn log(&self) -> String {
        self.requests().iter().map(|r| format!("{} {}", r.method, r.target)).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for FaultServer {
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
    let headers: HashMap<String, String> = headers;
    let want = headers.get("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0).min(64 * 1024);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < want {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    body.truncate(want);
    let req = Request { method, target, headers, body };
    reqs.lock().expect("lock").push(req.clone());
    let reply = handler(&req);
    tokio::time::sleep(reply.delay).await;
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
    if matches!(reply.mode, BodyMode::Chunked(_)) {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    if req.method != "HEAD" {
        match reply.mode {
            BodyMode::Full => stream.write_all(&reply.body).await?,
            BodyMode::Truncate(n) => stream.write_all(&reply.body[..n.min(reply.body.len())]).await?,
            BodyMode::Throttle { chunk, every } => {
                for (i, c) in reply.body.chunks(chunk.max(1)).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    stream.write_all(c).await?;
                    stream.flush().await?;
                }
            }
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
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------- content

/// What the well-behaved part of the server holds: manifests (by digest,
/// with tags) and blobs. Shared and mutable, so a test can retag.
#[derive(Default)]
pub struct Content {
    manifests: HashMap<String, (String, Bytes)>,
    tags: HashMap<String, String>,
    blobs: HashMap<String, Bytes>,
}

/// Shared [`Content`].
pub type SharedContent = Arc<Mutex<Content>>;

impl Content {
    /// A new, empty, shared store.
    pub fn shared() -> SharedContent {
        Arc::new(Mutex::new(Content::default()))
    }

    /// Adds a blob; returns its digest.
    pub fn add_blob(&mut self, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let d = sha256_digest(&bytes);
        self.blobs.insert(d.clone(), bytes);
        d
    }

    /// Adds a manifest; returns its digest.
    pub fn add_manifest(&mut self, media_type: &str, bytes: impl Into<Bytes>) -> String {
        let bytes = bytes.into();
        let d = sha256_digest(&bytes);
        self.manifests.insert(d.clone(), (media_type.to_owned(), bytes));
        d
    }

    /// Points `tag` at the manifest `digest`.
    pub fn tag(&mut self, tag: &str, digest: &str) {
        self.tags.insert(tag.to_owned(), digest.to_owned());
    }

    /// Adds an image (config, layers, OCI manifest) tagged `tag`; returns the
    /// manifest digest.
    pub fn add_image(&mut self, tag: &str, img: &crate::oci::Image) -> String {
        self.add_blob(img.config.clone());
        for l in &img.layers {
            self.add_blob(l.clone());
        }
        self.manifests.insert(img.digest.clone(), (OCI_MANIFEST.to_owned(), Bytes::from(img.manifest.clone())));
        self.tags.insert(tag.to_owned(), img.digest.clone());
        img.digest.clone()
    }
}

/// The well-behaved answer to `req` from `content` (any repository name).
pub fn serve(content: &SharedContent, req: &Request) -> Reply {
    let c = content.lock().expect("lock");
    let path = req.path();
    if path == "/v2/" || path == "/v2" {
        return Reply::new(200, "{}").header("Content-Type", "application/json");
    }
    if let Some((_, reference)) = path.rsplit_once("/manifests/") {
        let digest =
            if reference.starts_with("sha256:") { Some(reference.to_owned()) } else { c.tags.get(reference).cloned() };
        return match digest.and_then(|d| c.manifests.get(&d).map(|m| (d, m.clone()))) {
            Some((d, (mt, bytes))) => {
                Reply::new(200, bytes).header("Content-Type", mt).header("Docker-Content-Digest", d)
            }
            None => Reply::error(404, "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_, digest)) = path.rsplit_once("/blobs/") {
        return match c.blobs.get(digest) {
            Some(b) => Reply::new(200, b.clone())
                .header("Content-Type", "application/octet-stream")
                .header("Docker-Content-Digest", digest),
            None => Reply::error(404, "BLOB_UNKNOWN"),
        };
    }
    Reply::error(404, "NAME_UNKNOWN")
}

/// The blob digest a request path names, if it is a blob request.
pub fn blob_of(req: &Request) -> Option<&str> {
    req.path().rsplit_once("/blobs/").map(|(_, d)| d)
}

/// A well-behaved blob reply for `bytes` (to which a fault can be applied).
pub fn blob_reply(bytes: &Bytes, digest: &str) -> Reply {
    Reply::new(200, bytes.clone())
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest)
}
