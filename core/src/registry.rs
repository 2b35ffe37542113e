//! The registry engine: OCI Distribution semantics implemented once on top of
//! the plugin traits. The HTTP server parses requests into typed values and
//! calls these methods; everything here is free of HTTP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;

use crate::cache::{CacheStatus, CachedRepo, PullThrough, Route, UpstreamRoute};
use crate::digest::{Digest, DigestHasher};
use crate::error::{ErrorCode, ErrorDetail, RegistryError, Result};
use crate::manifest::{parse_manifest, Descriptor, OCI_INDEX};
use crate::name::{Reference, RepoName, Tag};
use crate::range::RangeRequest;
use crate::storage::{ByteRange, ByteStream, Storage, StoredManifest, UploadInfo};

/// A manifest ready to be sent.
#[derive(Debug, Clone)]
pub struct ManifestResponse {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// How a pull-through response was served (`None` for private repositories).
pub type Cache = Option<CacheStatus>;

/// A blob (or a range of it) ready to be sent.
pub struct BlobResponse {
    /// Size of the whole blob (`None` while an upstream fetch of unknown
    /// length is in flight).
    pub size: Option<u64>,
    /// The range being sent, if the request asked for one.
    pub range: Option<ByteRange>,
    pub body: ByteStream,
}

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PutManifestResult {
    pub digest: Digest,
    /// The manifest's `subject`, sent back as `OCI-Subject`.
    pub subject: Option<Digest>,
}

/// One page of a sorted list (tags or repositories).
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<String>,
    /// The last item returned, when more items follow (for the `Link` header).
    pub next_last: Option<String>,
}

/// The result of a referrers query.
#[derive(Debug, Clone)]
pub struct ReferrersResponse {
    /// The image index body.
    pub body: Bytes,
    /// Whether an `artifactType` filter was applied.
    pub filtered: bool,
}

/// The registry engine.
#[derive(Clone)]
pub struct Registry {
    storage: Arc<dyn Storage>,
    cache: Option<Arc<PullThrough>>,
    /// Pull/push times that retention judges idleness by; shared by clones,
    /// set once.
    activity: Arc<std::sync::OnceLock<Arc<crate::retention::ActivityLog>>>,
}

impl Registry {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Registry { storage, cache: None, activity: Arc::default() }
    }

    /// Starts recording manifest pulls and tag pushes in `log` (for
    /// retention). Only the first call has an effect.
    pub fn set_activity(&self, log: Arc<crate::retention::ActivityLog>) {
        let _ = self.activity.set(log);
    }

    /// The activity log, once set.
    pub fn activity(&self) -> Option<&Arc<crate::retention::ActivityLog>> {
        self.activity.get()
    }

    fn record_pull(&self, repo: &RepoName, reference: &Reference, digest: &Digest) {
        if let Some(log) = self.activity.get() {
            let tag = match reference {
                Reference::Tag(t) => Some(t),
                Reference::Digest(_) => None,
            };
            log.record_pull(repo, tag, digest);
        }
    }

    /// Adds the pull-through cache for the configured upstreams.
    pub fn with_cache(mut self, cache: PullThrough) -> Self {
        self.cache = Some(Arc::new(cache));
        self
    }

    pub fn cache(&self) -> Option<&Arc<PullThrough>> {
        self.cache.as_ref()
    }

    /// Maps a path name and containerd's optional `ns` query parameter to the
    /// repository Cove stores it under.
    pub fn resolve_name(&self, name: &str, ns: Option<&str>) -> Result<RepoName> {
        match &self.cache {
            Some(c) => c.resolve_name(name, ns),
            None => name.parse(),
        }
    }

    fn cached_route(&self, repo: &RepoName) -> Option<(&PullThrough, UpstreamRoute, RepoName)> {
        let cache = self.cache.as_deref()?;
        match cache.route(repo) {
            Route::Cached { route, remote } => Some((cache, route, remote)),
            Route::Private => None,
        }
    }

    /// Writes into an upstream's namespace are refused: it mirrors upstream.
    fn ensure_writable(&self, repo: &RepoName) -> Result<()> {
        if let Some((_, route, _)) = self.cached_route(repo) {
            return Err(RegistryError::denied(format!(
                "{repo} is in the pull-through cache of {}; it is read-only (push to a name outside {}/ instead)",
                route.host, route.host
            )));
        }
        Ok(())
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    // ---- manifests ---------------------------------------------------------

    /// Resolves a reference to a stored manifest.
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<(ManifestResponse, Cache)> {
        if let Some((cache, route, remote)) = self.cached_route(repo) {
            let at = CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo };
            let (m, status) = match cache.manifest(at, reference).await {
                // Storage said "not found" mid-way: retention evicted the
                // manifest between two steps. Once more: it is now
                // fetched from upstream again.
                Err(e) if e.code == ErrorCode::BlobUnknown && self.activity.get().is_some() => {
                    tracing::debug!(%repo, %reference, error = %e, "cached manifest vanished mid-request; retrying");
                    cache.manifest(at, reference).await?
                }
                other => other?,
            };
            self.record_pull(repo, reference, &m.digest);
            return Ok((m, Some(status)));
        }
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                self.storage.tag_get(repo, t).await?.ok_or_else(|| RegistryError::manifest_unknown(reference))?
            }
        };
        let stored = self
            .storage
            .manifest_get(repo, &digest)
            .await?
            .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
        self.record_pull(repo, reference, &digest);
        Ok((ManifestResponse { digest, media_type: stored.media_type, bytes: stored.bytes }, None))
    }

    /// Validates and stores a manifest, tagging it when `reference` is a tag.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<PutManifestResult> {
        self.ensure_writable(repo)?;
        let parsed = parse_manifest(&bytes, content_type)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let mut h = DigestHasher::new(expected.algorithm());
                h.update(&bytes);
                let actual = h.finish();
                if &actual != expected {
                    return Err(RegistryError::new(
                        ErrorCode::DigestInvalid,
                        format!("manifest digest is {actual}, not {expected} as given in the URL"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256_of(&bytes),
        };
        for blob in parsed.required_blobs() {
            if !self.storage.blob_linked(repo, &blob.digest).await? {
                return Err(manifest_blob_unknown(&blob.digest, "blob"));
            }
        }
        for child in &parsed.manifests {
            if self.storage.manifest_get(repo, &child.digest).await?.is_none() {
                return Err(manifest_blob_unknown(&child.digest, "manifest"));
            }
        }
        let size = bytes.len() as u64;
        let stored = StoredManifest { media_type: parsed.media_type.clone(), bytes };
        self.storage.manifest_put(repo, &digest, &stored).await?;
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            let descriptor = parsed.referrer_descriptor(&digest, size);
            self.storage.referrer_put(repo, subject, &descriptor).await?;
        }
        if let Reference::Tag(tag) = reference {
            self.storage.tag_put(repo, tag, &digest).await?;
            if let Some(log) = self.activity.get() {
                log.record_push(repo, tag);
            }
        }
        Ok(PutManifestResult { digest, subject })
    }

    /// Deletes a tag (by tag) or a manifest and every tag pointing at it (by
    /// digest).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<()> {
        self.ensure_writable(repo)?;
        match reference {
            Reference::Tag(tag) => {
                if !self.storage.tag_delete(repo, tag).await? {
                    return Err(RegistryError::manifest_unknown(reference));
                }
            }
            Reference::Digest(digest) => {
                let stored = self
                    .storage
                    .manifest_get(repo, digest)
                    .await?
                    .ok_or_else(|| RegistryError::manifest_unknown(reference))?;
                for tag in self.storage.tag_list(repo).await?.unwrap_or_default() {
                    let Ok(tag) = tag.parse::<Tag>() else {
                        continue;
                    };
                    if self.storage.tag_get(repo, &tag).await?.as_ref() == Some(digest) {
                        self.storage.tag_delete(repo, &tag).await?;
                    }
                }
                if let Ok(parsed) = parse_manifest(&stored.bytes, Some(&stored.media_type)) {
                    if let Some(subject) = parsed.subject {
                        self.storage.referrer_delete(repo, &subject.digest, digest).await?;
                    }
                }
                self.storage.manifest_delete(repo, digest).await?;
            }
        }
        Ok(())
    }

    // ---- blobs -------------------------------------------------------------

    /// The size of a blob `repo` may serve (private repositories).
    async fn private_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if !self.storage.blob_linked(repo, digest).await? {
            return Err(RegistryError::blob_unknown(digest));
        }
        self.storage.blob_size(digest).await?.ok_or_else(|| RegistryError::blob_unknown(digest))
    }

    /// Serves a blob, or the part `range` asks for; for a `HEAD`
    /// (`head = true`) the body is empty.
    pub async fn get_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<&RangeRequest>,
        head: bool,
    ) -> Result<(BlobResponse, Cache)> {
        if let Some((cache, route, remote)) = self.cached_route(repo) {
            let at = CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo };
            let (b, status) = cache.blob(at, digest, range, head).await?;
            return Ok((b, Some(status)));
        }
        let size = self.private_blob_size(repo, digest).await?;
        let range = crate::range::resolve(range, size)?;
        let body: ByteStream = if head {
            Box::pin(futures::stream::empty())
        } else {
            self.storage.blob_read(digest, range).await.map_err(|e| match e {
                crate::storage::StorageError::NotFound => RegistryError::blob_unknown(digest),
                e => e.into(),
            })?
        };
        Ok((BlobResponse { size: Some(size), range, body }, None))
    }

    /// Removes a blob from a repository.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.ensure_writable(repo)?;
        if !self.storage.blob_unlink(repo, digest).await? {
            return Err(RegistryError::blob_unknown(digest));
        }
        Ok(())
    }

    /// Links a blob that `from` holds into `repo`. Returns `false` when `from`
    /// does not hold it (the caller then starts a normal upload).
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool> {
        self.ensure_writable(repo)?;
        if !self.storage.blob_linked(from, digest).await? {
            return Ok(false);
        }
        self.storage.blob_link(repo, digest).await?;
        Ok(true)
    }

    // ---- uploads -----------------------------------------------------------

    /// A whole blob in one request (`POST ?digest=` with a body).
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        length: Option<u64>,
    ) -> Result<u64> {
        self.ensure_writable(repo)?;
        let size = self.storage.blob_write(digest, body, length).await?;
        self.storage.blob_link(repo, digest).await?;
        Ok(size)
    }

    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadInfo> {
        self.ensure_writable(repo)?;
        Ok(self.storage.upload_start(repo).await?)
    }

    /// The state of an upload of `repo`.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadInfo> {
        if !crate::storage::valid_upload_id(id) {
            return Err(RegistryError::upload_unknown());
        }
        let info = self.storage.upload_info(id).await?;
        if &info.repo != repo {
            return Err(RegistryError::upload_unknown());
        }
        Ok(info)
    }

    /// Appends a chunk. `range` is the parsed `Content-Range` (start, end
    /// inclusive) when the client sent one; the chunk must start at the
    /// current size (else [`ErrorDetail::UploadOffset`]). `length` is the
    /// declared Content-Length.
    pub async fn upload_chunk(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<u64> {
        let info = self.upload_status(repo, id).await?;
        let mut expected = length;
        if let Some((start, end)) = range {
            if start != info.size || end < start {
                return Err(crate::storage::StorageError::OffsetMismatch { expected: info.size, got: start }.into());
            }
            let len = end - start + 1;
            if length.is_some_and(|l| l != len) {
                return Err(RegistryError::new(ErrorCode::SizeInvalid, "Content-Length does not match Content-Range")
                    .with_detail(ErrorDetail::UploadOffset { size: info.size }));
            }
            expected = Some(len);
        }
        let body = match expected {
            Some(len) => exact_length(body, len),
            None => body,
        };
        Ok(self.storage.upload_append(id, info.size, body).await?)
    }

    /// Completes an upload with an optional final chunk, verifying `digest`.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        body: Option<(ByteStream, Option<u64>)>,
    ) -> Result<u64> {
        let info = self.upload_status(repo, id).await?;
        if let Some((body, length)) = body {
            let body = match length {
                Some(len) => exact_length(body, len),
                None => body,
            };
            self.storage.upload_append(id, info.size, body).await?;
        }
        let size = self.storage.upload_commit(id, digest).await?;
        self.storage.blob_link(repo, digest).await?;
        Ok(size)
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.upload_status(repo, id).await?;
        Ok(self.storage.upload_abort(id).await?)
    }

    /// Aborts sessions idle for longer than `max_idle`. Returns how many.
    pub async fn expire_uploads(&self, max_idle: Duration) -> Result<usize> {
        let now = SystemTime::now();
        let mut n = 0;
        for info in self.storage.upload_list().await? {
            let idle = now.duration_since(info.updated).unwrap_or_default();
            if idle > max_idle {
                self.storage.upload_abort(&info.id).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    // ---- discovery ---------------------------------------------------------

    pub async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        if let Some((cache, route, remote)) = self.cached_route(repo) {
            let tags = cache.tags(CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo }).await?;
            return Ok(paginate(tags, n, last));
        }
        let tags = self
            .storage
            .tag_list(repo)
            .await?
            .ok_or_else(|| RegistryError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known")))?;
        Ok(paginate(tags, n, last))
    }

    /// One page of the repositories for which `visible` holds.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: impl Fn(&RepoName) -> bool,
    ) -> Result<Page> {
        let repos = self.storage.repo_list().await?.into_iter().filter(|r| visible(r)).map(|r| r.to_string()).collect();
        Ok(paginate(repos, n, last))
    }

    /// The referrers of `subject` as an image index, optionally filtered by
    /// artifact type. An unknown subject has an empty index.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersResponse> {
        let mut list = self.storage.referrers(repo, subject).await?;
        if let Some(at) = artifact_type {
            list.retain(|d| d.artifact_type.as_deref() == Some(at));
        }
        Ok(ReferrersResponse { body: referrers_index(&list), filtered: artifact_type.is_some() })
    }
}

fn manifest_blob_unknown(digest: &Digest, what: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestBlobUnknown,
        format!("manifest references {what} {digest}, which is not in this repository"),
    )
    .with_detail(ErrorDetail::Digest(digest.clone()))
}

fn referrers_index(list: &[Descriptor]) -> Bytes {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": list,
    });
    Bytes::from(index.to_string())
}

/// Takes the page after `last` of at most `n` items from a sorted list.
pub fn paginate(items: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(last) => items.partition_point(|i| i.as_str() <= last),
        None => 0,
    };
    let rest = &items[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    let page: Vec<String> = rest[..take].to_vec();
    let next_last = if take < rest.len() { page.last().cloned() } else { None };
    Page { items: page, next_last }
}

/// Wraps a body so that it fails unless it yields exactly `len` bytes.
pub fn exact_length(body: ByteStream, len: u64) -> ByteStream {
    let mut seen = 0u64;
    let mut done = false;
    let checked = body.map(Some).chain(futures::stream::once(async { None })).filter_map(move |item| {
        let out = match item {
            Some(Ok(chunk)) => {
                seen += chunk.len() as u64;
                if seen > len {
                    done = true;
                    Some(Err(std::io::Error::other(format!("body is longer than the declared {len} bytes"))))
                } else {
                    Some(Ok(chunk))
                }
            }
            Some(Err(e)) => Some(Err(e)),
            None if !done && seen != len => {
                Some(Err(std::io::Error::other(format!("body has {seen} bytes, {len} were declared"))))
            }
            None => None,
        };
        futures::future::ready(out)
    });
    Box::pin(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let items: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = paginate(items.clone(), Some(2), None);
        assert_eq!(p.items, ["a", "b"]);
        assert_eq!(p.next_last.as_deref(), Some("b"));
        let p = paginate(items.clone(), Some(2), Some("b"));
        assert_eq!(p.items, ["c", "d"]);
        assert_eq!(p.next_last, None);
        assert!(paginate(items.clone(), Some(0), None).items.is_empty());
        assert_eq!(paginate(items, None, Some("bb")).items, ["c", "d"]);
    }
}
