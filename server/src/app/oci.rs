//! The OCI Distribution endpoints and the token endpoint: one handler per
//! route, called after the access check with the repository it resolved.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;

use cove_core::cache::CacheStatus;
use cove_core::manifest::{MAX_MANIFEST_SIZE, OCI_INDEX};
use cove_core::registry::{too_many_tags, MAX_TAGS_PER_PUSH};
use cove_core::{Algorithm, ByteStream, Digest, ErrorCode, Reference, RegistryError, RepoName, Tag};

use crate::app::access::Grant;
use crate::app::request::{content_length, parse_content_range, Query};
use crate::app::response::{
    add_warning, blob_created, json_response, manifest_too_large, page_response, set, status_response, typed_response,
    upload_accepted, CONTENT_DIGEST,
};
use crate::app::router::RepoOp;
use crate::app::uploads::{blob_too_large, capped};
use crate::app::App;
use crate::body::{self, Body};
use crate::conn::body::RequestBody;

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
const OCI_FILTERS: HeaderName = HeaderName::from_static("oci-filters-applied");
/// How a pull-through response was served: hit, miss, revalidated or stale.
const CACHE_STATUS: HeaderName = HeaderName::from_static("x-cove-cache");

impl App {
    /// `GET|HEAD /v2/`
    pub(super) fn api_base(&self) -> Response<Body> {
        json_response(StatusCode::OK, Bytes::from_static(b"{}"))
    }

    /// `GET /v2/_catalog`: the repositories the caller may pull.
    pub(super) async fn catalog(&self, query: &Query, grant: &Grant) -> Result<Response<Body>, RegistryError> {
        let (n, last) = query.page()?;
        let page = self.registry.catalog(n, last.as_deref(), |r| grant.visible_in_catalog(r)).await?;
        Ok(page_response("repositories", None, page, n))
    }

    /// `GET /token`: the Docker token endpoint for CLIs that log in with
    /// credentials and then use short-lived registry-issued tokens.
    pub(super) async fn token(
        &self,
        req: &Request<RequestBody>,
        peer: SocketAddr,
        grant: &Grant,
    ) -> Result<Response<Body>, RegistryError> {
        let t = grant.issue_token(req.uri().query().unwrap_or(""), req.headers(), peer).await?;
        let mut resp = json_response(StatusCode::OK, Bytes::from(t.to_json().to_string()));
        set(resp.headers_mut(), http::header::CACHE_CONTROL, "no-store");
        Ok(resp)
    }

    /// One operation on `repo` (`/v2/<name>/…`).
    pub(super) async fn repository(
        &self,
        op: RepoOp,
        repo: RepoName,
        req: Request<RequestBody>,
        peer: SocketAddr,
        query: &Query,
        grant: &Grant,
    ) -> Result<Response<Body>, RegistryError> {
        match op {
            RepoOp::GetManifest { reference, head } => {
                let reference = parse_reference(&reference, false)?;
                self.get_manifest(&repo, &reference, head).await
            }
            RepoOp::PutManifest { reference } => {
                let reference = parse_reference(&reference, true)?;
                let tags = parse_tag_params(query)?;
                self.put_manifest(req, &repo, &reference, &tags).await
            }
            RepoOp::DeleteManifest { reference } => {
                let reference = parse_reference(&reference, false)?;
                self.registry.delete_manifest(&repo, &reference).await?;
                Ok(status_response(StatusCode::ACCEPTED))
            }
            RepoOp::GetBlob { digest, head } => self.get_blob(req.headers(), head, &repo, &digest.parse()?).await,
            RepoOp::DeleteBlob { digest } => {
                let digest: Digest = digest.parse()?;
                self.registry.delete_blob(&repo, &digest).await?;
                Ok(status_response(StatusCode::ACCEPTED))
            }
            RepoOp::StartUpload => self.start_upload(req, peer, repo, query, grant).await,
            RepoOp::UploadStatus { id } => {
                let base = self.base_url(req.headers());
                let info = self.registry.upload_status(&repo, &id).await?;
                Ok(upload_accepted(&base, &repo, &id, info.size, StatusCode::NO_CONTENT))
            }
            RepoOp::UploadChunk { id } => self.upload_chunk(req, &repo, &id).await,
            RepoOp::FinishUpload { id } => self.finish_upload(req, &repo, &id, query).await,
            RepoOp::CancelUpload { id } => {
                self.registry.cancel_upload(&repo, &id).await?;
                self.uploads.closed(&id);
                Ok(status_response(StatusCode::NO_CONTENT))
            }
            RepoOp::ListTags => {
                let (n, last) = query.page()?;
                let page = self.registry.tags(&repo, n, last.as_deref()).await?;
                Ok(page_response("tags", Some(&repo), page, n))
            }
            RepoOp::ListReferrers { digest } => {
                let digest: Digest = digest.parse()?;
                let r = self.registry.referrers(&repo, &digest, query.get("artifactType")).await?;
                let mut resp = typed_response(StatusCode::OK, OCI_INDEX, r.body);
                if r.filtered {
                    resp.headers_mut().insert(OCI_FILTERS, HeaderValue::from_static("artifactType"));
                }
                if let Some(c) = r.cache {
                    set(resp.headers_mut(), CACHE_STATUS, c.as_str());
                }
                Ok(resp)
            }
        }
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        head: bool,
    ) -> Result<Response<Body>, RegistryError> {
        let (m, cache) = self.registry.get_manifest(repo, reference).await?;
        let cache_header = cache.map(|c| c.as_str());
        let mut resp = Response::new(if head { body::empty() } else { body::full(m.bytes.clone()) });
        let h = resp.headers_mut();
        set(h, http::header::CONTENT_TYPE, &m.media_type);
        set(h, http::header::CONTENT_LENGTH, &m.bytes.len().to_string());
        set(h, CONTENT_DIGEST, &m.digest.to_string());
        set(h, http::header::ETAG, &format!("\"{}\"", m.digest));
        if let Some(c) = cache_header {
            set(h, CACHE_STATUS, c);
        }
        if cache == Some(CacheStatus::Stale) {
            add_warning(
                h,
                &format!(
                    "{repo}:{reference} is a cached copy the upstream registry could not confirm \
                     (unreachable, failing or slow); it may be out of date"
                ),
            );
        }
        Ok(resp)
    }

    async fn put_manifest(
        &self,
        req: Request<RequestBody>,
        repo: &RepoName,
        reference: &Reference,
        tags: &[Tag],
    ) -> Result<Response<Body>, RegistryError> {
        let content_type =
            req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location_base = self.base_url(req.headers());
        if content_length(req.headers())?.is_some_and(|l| l > MAX_MANIFEST_SIZE as u64) {
            return Err(manifest_too_large());
        }
        let bytes = Limited::new(req.into_body(), MAX_MANIFEST_SIZE)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    manifest_too_large()
                } else {
                    RegistryError::new(ErrorCode::ManifestInvalid, "manifest body could not be read")
                }
            })?
            .to_bytes();
        let put = self.registry.put_manifest(repo, reference, content_type.as_deref(), bytes, tags).await?;
        let mut resp = status_response(StatusCode::CREATED);
        let h = resp.headers_mut();
        set(h, http::header::LOCATION, &format!("{location_base}/v2/{repo}/manifests/{}", put.digest));
        set(h, CONTENT_DIGEST, &put.digest.to_string());
        if let Some(subject) = &put.subject {
            set(h, OCI_SUBJECT, &subject.to_string());
        }
        // The accepted tags as one list-valued `OCI-Tag` (the same as one
        // header per tag under RFC 9110, and a hundred separate headers
        // would overflow clients that cap the header count at 100).
        if !put.tags.is_empty() {
            let list: Vec<&str> = put.tags.iter().map(Tag::as_str).collect();
            set(h, OCI_TAG, &list.join(", "));
        }
        Ok(resp)
    }

    async fn get_blob(
        &self,
        headers: &HeaderMap,
        head: bool,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Response<Body>, RegistryError> {
        let range = headers.get(http::header::RANGE).and_then(|v| v.to_str().ok()).and_then(crate::range::parse_range);
        let (b, cache) = self.registry.get_blob(repo, digest, range.as_ref(), head).await?;
        let status = if b.range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
        let (size, range) = (b.size, b.range);
        let body = if head { body::empty() } else { body::stream(b.body) };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        if let Some(len) = range.map(|r| r.len()).or(size) {
            set(h, http::header::CONTENT_LENGTH, &len.to_string());
        }
        if let Some(c) = cache {
            set(h, CACHE_STATUS, c.as_str());
        }
        set(h, http::header::CONTENT_TYPE, "application/octet-stream");
        set(h, CONTENT_DIGEST, &digest.to_string());
        set(h, http::header::ETAG, &format!("\"{digest}\""));
        set(h, http::header::ACCEPT_RANGES, "bytes");
        set(h, http::header::CACHE_CONTROL, "max-age=31536000");
        if let (Some(r), Some(size)) = (range, size) {
            set(h, http::header::CONTENT_RANGE, &format!("bytes {}-{}/{size}", r.start, r.end));
        }
        Ok(resp)
    }

    async fn start_upload(
        &self,
        req: Request<RequestBody>,
        peer: SocketAddr,
        repo: RepoName,
        query: &Query,
        grant: &Grant,
    ) -> Result<Response<Body>, RegistryError> {
        let base = self.base_url(req.headers());
        // The algorithm a chunked upload will be closed with. Sessions verify
        // against the closing digest's own algorithm whatever was declared,
        // so it is only checked here: an unknown one is refused before the
        // client streams anything.
        let algorithm = query.get("digest-algorithm").map(str::parse::<Algorithm>).transpose()?;
        if let Some(mount) = query.get("mount") {
            let digest: Digest = mount.parse()?;
            if let Some(from) = query.get("from") {
                let from = self.registry.resolve_name(from, query.get("ns"))?;
                let pull_ok = grant.may_mount_from(req.headers(), peer, &from).await;
                if pull_ok && self.registry.mount_blob(&repo, &digest, &from).await? {
                    return Ok(blob_created(&base, &repo, &digest));
                }
            }
        } else if let Some(digest) = query.get("digest") {
            let digest: Digest = digest.parse()?;
            if algorithm.is_some_and(|a| a != digest.algorithm()) {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("digest {digest} does not use the digest-algorithm given"),
                ));
            }
            let length = content_length(req.headers())?;
            self.check_blob_size(0, length)?;
            let body = body::incoming(req.into_body());
            let body = match length {
                Some(l) => cove_core::registry::exact_length(body, l),
                None => body,
            };
            let (body, hit) = self.cap_blob(0, body);
            let r = self.registry.put_blob(&repo, &digest, body, length).await;
            self.blob_result(r, &hit)?;
            return Ok(blob_created(&base, &repo, &digest));
        }
        let source = grant.client_address(req.headers(), peer);
        if let Err(e) = self.uploads.admit(&self.registry, source).await {
            self.ops.metrics.request_limited("uploads");
            return Err(e);
        }
        let info = self.registry.start_upload(&repo).await?;
        self.uploads.opened(&info.id, source);
        Ok(upload_accepted(&base, &repo, &info.id, 0, StatusCode::ACCEPTED))
    }

    async fn upload_chunk(
        &self,
        req: Request<RequestBody>,
        repo: &RepoName,
        id: &str,
    ) -> Result<Response<Body>, RegistryError> {
        let base = self.base_url(req.headers());
        let range = match req.headers().get(http::header::CONTENT_RANGE) {
            Some(v) => Some(parse_content_range(v)?),
            None => None,
        };
        let length = content_length(req.headers())?;
        let offset = match self.limits.max_blob_size {
            Some(_) => self.registry.upload_status(repo, id).await?.size,
            None => 0,
        };
        self.check_blob_size(offset, length)?;
        let (body, hit) = self.cap_blob(offset, body::incoming(req.into_body()));
        let r = self.registry.upload_chunk(repo, id, range, length, body).await;
        let size = self.blob_result(r, &hit)?;
        Ok(upload_accepted(&base, repo, id, size, StatusCode::ACCEPTED))
    }

    async fn finish_upload(
        &self,
        req: Request<RequestBody>,
        repo: &RepoName,
        id: &str,
        query: &Query,
    ) -> Result<Response<Body>, RegistryError> {
        let base = self.base_url(req.headers());
        let digest: Digest = query
            .get("digest")
            .ok_or_else(|| {
                RegistryError::new(
                    ErrorCode::DigestInvalid,
                    "the digest query parameter is required to complete an upload",
                )
            })?
            .parse()?;
        let range = match req.headers().get(http::header::CONTENT_RANGE) {
            Some(v) => Some(parse_content_range(v)?),
            None => None,
        };
        let length = content_length(req.headers())?;
        let has_body = length.is_some_and(|l| l > 0) || (length.is_none() && req.body().size_hint().exact() != Some(0));
        let offset = match self.limits.max_blob_size {
            Some(_) if has_body => self.registry.upload_status(repo, id).await?.size,
            _ => 0,
        };
        self.check_blob_size(offset, length)?;
        let mut hit = Arc::new(AtomicBool::new(false));
        let body = has_body.then(|| {
            let (b, h) = self.cap_blob(offset, body::incoming(req.into_body()));
            hit = h;
            (b, length)
        });
        let r = self.registry.finish_upload(repo, id, &digest, range, body).await;
        self.blob_result(r, &hit)?;
        self.uploads.closed(id);
        Ok(blob_created(&base, repo, &digest))
    }

    /// The scheme and host to prefix `Location` headers with: what a
    /// trusted reverse proxy says (`X-Forwarded-Proto` and
    /// `X-Forwarded-Host`, dropped from any other peer), else, when Cove
    /// terminates TLS, `https://` and the `Host` the request came to, else
    /// nothing (a relative location, resolved by the client against the URL
    /// it used). Never `server.public_url`: a client that reached Cove at
    /// another address (`127.0.0.1:5050`) must be sent back there.
    fn base_url(&self, headers: &HeaderMap) -> String {
        let get =
            |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or(v).trim());
        match (get("x-forwarded-proto"), get("x-forwarded-host").or_else(|| get("host"))) {
            (Some(proto), Some(host)) if matches!(proto, "http" | "https") && valid_host(host) => {
                format!("{proto}://{host}")
            }
            // TLS terminated here: the client reached us over https.
            (None, Some(host)) if self.tls && valid_host(host) => format!("https://{host}"),
            _ => String::new(),
        }
    }

    /// Refuses a blob that `declared` more bytes on top of `offset` would
    /// take past `server.max_blob_size`.
    fn check_blob_size(&self, offset: u64, declared: Option<u64>) -> Result<(), RegistryError> {
        match (self.limits.max_blob_size, declared) {
            (Some(max), Some(len)) if offset.saturating_add(len) > max => {
                self.ops.metrics.request_limited("max_blob_size");
                Err(blob_too_large(max))
            }
            _ => Ok(()),
        }
    }

    /// The body, failing past `server.max_blob_size` counting the `offset`
    /// already stored; the flag says the limit ended it.
    fn cap_blob(&self, offset: u64, body: ByteStream) -> (ByteStream, Arc<AtomicBool>) {
        let hit = Arc::new(AtomicBool::new(false));
        match self.limits.max_blob_size {
            Some(max) => (capped(body, max.saturating_sub(offset), hit.clone()), hit),
            None => (body, hit),
        }
    }

    /// A blob write's result, as the 413 when the size cap ended its body.
    fn blob_result<T>(&self, r: Result<T, RegistryError>, hit: &AtomicBool) -> Result<T, RegistryError> {
        match (r, self.limits.max_blob_size) {
            (Err(_), Some(max)) if hit.load(Ordering::Relaxed) => {
                self.ops.metrics.request_limited("max_blob_size");
                Err(blob_too_large(max))
            }
            (r, _) => r,
        }
    }
}

/// A manifest reference. A malformed digest is `DIGEST_INVALID`; another
/// malformed reference is a manifest nobody can have (`MANIFEST_UNKNOWN`),
/// except in a push, which is told what is wrong with it.
fn parse_reference(reference: &str, push: bool) -> Result<Reference, RegistryError> {
    match reference.parse() {
        Ok(r) => Ok(r),
        Err(e) if e.code == ErrorCode::DigestInvalid || push => Err(e),
        Err(_) => Err(RegistryError::manifest_unknown(reference)),
    }
}

/// The `tag` query parameters of a manifest push, each checked against the
/// tag grammar; one bad tag fails the whole push before anything is stored.
fn parse_tag_params(query: &Query) -> Result<Vec<Tag>, RegistryError> {
    let n = query.get_all("tag").count();
    if n > MAX_TAGS_PER_PUSH {
        return Err(too_many_tags(n));
    }
    query
        .get_all("tag")
        .map(|t| {
            t.parse::<Tag>().map_err(|e| {
                RegistryError::new(e.code, format!("tag parameter: {}; no tag or manifest was stored", e.message))
            })
        })
        .collect()
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}
