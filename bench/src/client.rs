//! The load generator's HTTP client: hyper's pooled keep-alive client, with
//! the registry operations the workloads need. Every operation checks the
//! status code and the headers the spec requires, and pulled bytes are
//! compared with what was pushed.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::data::{Blob, Image, OCI_MANIFEST};
use crate::BenchError;

/// Request body type.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Accept header a container client sends for manifests.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// One registry as seen by the load generator.
#[derive(Clone)]
pub struct Registry {
    client: Client<HttpConnector, Body>,
    pub base: String,
    /// Prefix added to repository names (`docker.io/` for Cove's cache).
    pub prefix: String,
}

/// What a blob GET measured.
pub struct Fetched {
    pub ttfb: Duration,
    pub bytes: u64,
    pub cache: Option<String>,
}

pub(crate) fn empty() -> Body {
    Empty::new().boxed_unsync()
}

fn full(b: Bytes) -> Body {
    Full::new(b).boxed_unsync()
}

fn frames(frames: Vec<Bytes>) -> Body {
    let s = futures::stream::iter(frames.into_iter().map(|f| Ok::<_, Infallible>(Frame::data(f))));
    StreamBody::new(s).boxed_unsync()
}

fn fail(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Check(format!("{what}: {e}"))
}

impl Registry {
    /// A client for the registry at `base` (`http://ADDR`).
    pub fn new(base: String, prefix: &str) -> Registry {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).build(connector);
        Registry { client, base, prefix: prefix.to_owned() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; `headers` are added as given.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Response<Incoming>, BenchError> {
        let mut b = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(body).map_err(|e| fail("request", e))?;
        self.client.request(req).await.map_err(|e| BenchError::Http(format!("{url}: {e}")))
    }

    /// `GET /v2/`: 200 with the API version header.
    pub async fn v2(&self) -> Result<(), BenchError> {
        let resp = self.send(Method::GET, &self.url("/v2/"), &[], empty()).await?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| fail("GET /v2/ body", e))?;
        expect(parts.status, StatusCode::OK, "GET /v2/")?;
        if parts.headers.get("docker-distribution-api-version").is_none() {
            return Err(fail("GET /v2/", "no Docker-Distribution-Api-Version header"));
        }
        Ok(())
    }

    /// `HEAD` manifest by tag: returns the digest header, which must equal `want`.
    pub async fn head_manifest(&self, repo: &str, tag: &str, want: &str) -> Result<(), BenchError> {
        let url = self.url(&format!("/v2/{}{repo}/manifests/{tag}", self.prefix));
        let resp = self.send(Method::HEAD, &url, &[("accept", ACCEPT)], empty()).await?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| fail("HEAD manifest body", e))?;
        expect(parts.status, StatusCode::OK, "HEAD manifest")?;
        header_eq(&parts.headers, "docker-content-digest", want, "HEAD manifest")
    }

    /// `GET` manifest by reference; its bytes must hash to `want`.
    pub async fn get_manifest(&self, repo: &str, reference: &str, want: &str) -> Result<Bytes, BenchError> {
        let url = self.url(&format!("/v2/{}{repo}/manifests/{reference}", self.prefix));
        let resp = self.send(Method::GET, &url, &[("accept", ACCEPT)], empty()).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(|e| fail("GET manifest body", e))?.to_bytes();
        expect(parts.status, StatusCode::OK, "GET manifest")?;
        if crate::data::sha256(&bytes) != want {
            return Err(fail("GET manifest", "body does not match its digest"));
        }
        header_eq(&parts.headers, "docker-content-digest", want, "GET manifest")?;
        Ok(bytes)
    }

    /// `HEAD` blob: 200 with the right length and digest, or `Ok(false)` on 404.
    pub async fn head_blob(&self, repo: &str, blob: &Blob) -> Result<bool, BenchError> {
        let url = self.url(&format!("/v2/{}{repo}/blobs/{}", self.prefix, blob.digest));
        let resp = self.send(Method::HEAD, &url, &[], empty()).await?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| fail("HEAD blob body", e))?;
        if parts.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        expect(parts.status, StatusCode::OK, "HEAD blob")?;
        header_eq(&parts.headers, "content-length", &blob.len.to_string(), "HEAD blob")?;
        Ok(true)
    }

    /// `GET` blob; every byte is compared with `blob`.
    pub async fn get_blob(&self, repo: &str, blob: &Blob) -> Result<Fetched, BenchError> {
        let url = self.url(&format!("/v2/{}{repo}/blobs/{}", self.prefix, blob.digest));
        let start = Instant::now();
        let resp = self.send(Method::GET, &url, &[], empty()).await?;
        let ttfb = start.elapsed();
        let (parts, mut body) = resp.into_parts();
        expect(parts.status, StatusCode::OK, "GET blob")?;
        let cache = parts.headers.get("x-cove-cache").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut got = 0u64;
        let mut mismatch = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| fail("GET blob body", e))?;
            if let Ok(data) = frame.into_data() {
                if !mismatch && !blob.matches_at(got, &data) {
                    mismatch = true;
                }
                got += data.len() as u64;
            }
        }
        if mismatch || got != blob.len {
            return Err(fail(
                "GET blob",
                format!("{} bytes received, {} expected, content ok: {}", got, blob.len, !mismatch),
            ));
        }
        Ok(Fetched { ttfb, bytes: got, cache })
    }

    /// Pushes a blob with POST then one PUT carrying all bytes.
    pub async fn push_monolithic(&self, repo: &str, blob: &Blob) -> Result<(), BenchError> {
        let location = self.start_upload(repo).await?;
        let url = with_digest(&self.absolute(&location), &blob.digest);
        let len = blob.len.to_string();
        let headers = [("content-type", "application/octet-stream"), ("content-length", len.as_str())];
        let resp = self.send(Method::PUT, &url, &headers, frames(blob.frames(0, blob.len))).await?;
        self.created(resp, &blob.digest, "PUT blob").await
    }

    /// Pushes a blob with POST, PATCHes of `chunk_sizes` (cycled), and a final empty PUT.
    pub async fn push_chunked(&self, repo: &str, blob: &Blob, chunk_sizes: &[u64]) -> Result<(), BenchError> {
        let mut location = self.start_upload(repo).await?;
        let mut pos = 0u64;
        let mut i = 0;
        while pos < blob.len {
            let end = (pos + chunk_sizes[i % chunk_sizes.len()]).min(blob.len);
            i += 1;
            let range = format!("{}-{}", pos, end - 1);
            let len = (end - pos).to_string();
            let headers = [
                ("content-type", "application/octet-stream"),
                ("content-range", range.as_str()),
                ("content-length", len.as_str()),
            ];
            let resp =
                self.send(Method::PATCH, &self.absolute(&location), &headers, frames(blob.frames(pos, end))).await?;
            let (parts, body) = resp.into_parts();
            body.collect().await.map_err(|e| fail("PATCH body", e))?;
            expect(parts.status, StatusCode::ACCEPTED, "PATCH")?;
            header_eq(&parts.headers, "range", &format!("0-{}", end - 1), "PATCH")?;
            location = header(&parts.headers, "location", "PATCH")?;
            pos = end;
        }
        let url = with_digest(&self.absolute(&location), &blob.digest);
        let resp = self.send(Method::PUT, &url, &[("content-length", "0")], empty()).await?;
        self.created(resp, &blob.digest, "final PUT").await
    }

    /// Pushes an image the way container clients do: HEAD each blob, upload
    /// the missing ones, PUT the manifest by tag.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) -> Result<(), BenchError> {
        for blob in image.layers.iter().chain(std::iter::once(&image.config)) {
            if !self.head_blob(repo, blob).await? {
                self.push_monolithic(repo, blob).await?;
            }
        }
        self.put_manifest(repo, tag, image).await
    }

    /// `PUT` a manifest by tag; 201 with its digest.
    pub async fn put_manifest(&self, repo: &str, tag: &str, image: &Image) -> Result<(), BenchError> {
        let url = self.url(&format!("/v2/{}{repo}/manifests/{tag}", self.prefix));
        let len = image.manifest.len().to_string();
        let headers = [("content-type", OCI_MANIFEST), ("content-length", len.as_str())];
        let resp = self.send(Method::PUT, &url, &headers, full(image.manifest.clone())).await?;
        self.created(resp, &image.manifest_digest, "PUT manifest").await
    }

    async fn start_upload(&self, repo: &str) -> Result<String, BenchError> {
        let url = self.url(&format!("/v2/{}{repo}/blobs/uploads/", self.prefix));
        let resp = self.send(Method::POST, &url, &[("content-length", "0")], empty()).await?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| fail("POST upload body", e))?;
        expect(parts.status, StatusCode::ACCEPTED, "POST upload")?;
        header(&parts.headers, "location", "POST upload")
    }

    async fn created(&self, resp: Response<Incoming>, digest: &str, what: &str) -> Result<(), BenchError> {
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| fail(what, e))?;
        expect(parts.status, StatusCode::CREATED, what)?;
        header_eq(&parts.headers, "docker-content-digest", digest, what)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            self.url(location)
        }
    }
}

fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

fn expect(got: StatusCode, want: StatusCode, what: &str) -> Result<(), BenchError> {
    if got == want {
        Ok(())
    } else {
        Err(fail(what, format!("status {got}, expected {want}")))
    }
}

fn header(h: &HeaderMap, name: &str, what: &str) -> Result<String, BenchError> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or_else(|| fail(what, format!("no {name} header")))
}

fn header_eq(h: &HeaderMap, name: &str, want: &str, what: &str) -> Result<(), BenchError> {
    let got = header(h, name, what)?;
    if got == want {
        Ok(())
    } else {
        Err(fail(what, format!("{name} is {got}, expected {want}")))
    }
}
