//! [`ObjectStorage`]: a [`Storage`] on an object store (S3 and S3-compatible
//! servers, GCS, Azure) through the `object_store` crate. Cove stays
//! stateless on top of it, so several replicas can share one bucket.
//!
//! # Key layout
//! [`Layout::OBJECT`] (written once, in `cove_core::storage::layout`) below
//! an optional prefix (`prefix = "cove"` → `cove/blobs/…`): `blobs/<alg>/<hex>`,
//! `repositories/<repo>/…` (referrer records named by the first 32 hex digits
//! of the referrer: s3s-fs's key limit), `_shared/<name>` (one PUT each).
//! This backend adds:
//! ```text
//! uploads/<id>/session.json                       upload session: repo, times, size, SHA-256
//!                                                 state, multipart upload id + part ids, tail list
//! uploads/<id>/tail/<offset>-<rand>               acknowledged bytes not yet in a full part
//! uploads/<id>/data                               multipart target, copied to blobs/ at commit
//! _check/<uuid>                                   readiness probe, deleted right away
//! ```
//!
//! # Streaming and verification
//! Bytes are buffered only up to the part size (default 8 MiB, at least the
//! 5 MiB S3 requires of every part but the last), with at most two parts in
//! flight, so memory stays flat whatever the blob size. Whole-blob writes
//! ([`Storage::blob_write`], digest known up front) go to a multipart upload
//! on the blob key that is completed only after the digest and size match;
//! otherwise it is aborted, so nothing is visible before verification.
//! A crashed process can leave an incomplete (invisible) multipart upload
//! there: configure the bucket's `AbortIncompleteMultipartUpload` lifecycle.
//! [`Storage::blob_import`] (the pull-through cache's verified spool file)
//! keeps the trait's default: the local file is streamed through that same
//! whole-blob write (one local read, verified again; no rename is possible).
//!
//! # Upload sessions across replicas
//! Everything about a chunked upload is in the bucket, so any replica can
//! continue it, also after restarts. The running SHA-256 is persisted as
//! sha2's serialized hasher state after each chunk, so commit needs no
//! re-read (a `sha512` commit digest re-reads the staged object once).
//! PATCH chunks of any size are coalesced: bytes short of a part are stored
//! as tail objects and merged into the next part once a part's worth exists.
//! Commit completes the multipart upload onto `uploads/<id>/data`, checks
//! its size, and server-side copies it to `blobs/…` (on AWS S3 a single
//! CopyObject is limited to 5 GiB). `upload_abort` aborts the multipart
//! upload and deletes every object of the session.
//! Appends to one session are expected one at a time (OCI chunks are
//! sequential); two replicas appending to the same session at once are not
//! serialized (the offset check catches all but simultaneous appends).
//!
//! # Concurrent writers
//! Blobs, manifests, links and referrer records are content addressed:
//! concurrent writers write identical bytes, so any order is correct. A tag
//! is one object written with a single PUT, which S3 and compatibles apply
//! atomically: concurrent tag writes end with one of the written values
//! (last writer wins), never a mix. No correctness depends on conditional
//! writes (Garage ignores `If-None-Match`); `PutMode::Create` is used only
//! where a store that honours it gains an extra guarantee (session ids).

mod config;
mod keys;
mod upload;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cove_core::manifest::Descriptor;
use cove_core::storage::layout::{self, Layout};
use cove_core::storage::{RepoWalk, StoredManifest, UploadInfo};
use cove_core::{ByteRange, ByteStream, Digest, RepoName, Storage, StorageError, Tag};
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

pub use config::{ConfigProblem, ObjectConfigError, ObjectKind, ObjectStorageConfig, DEFAULT_PART_SIZE, MIN_PART_SIZE};

/// The largest object S3's CopyObject copies in one request (5 GiB).
pub const S3_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
use keys::Keys;

/// The layout in a bucket (see [`Layout`]).
const L: Layout = Layout::OBJECT;

/// A [`Storage`] on an `object_store` bucket (see the module doc for the key
/// layout and the guarantees with several replicas).
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    keys: Keys,
    part_size: u64,
    kind: &'static str,
    /// Largest object a committed upload is copied server-side; larger ones
    /// are streamed into place (S3's CopyObject stops at 5 GiB).
    copy_limit: u64,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &self.store.to_string())
            .field("part_size", &self.part_size)
            .finish()
    }
}

pub(crate) fn map_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        object_store::Error::NotSupported { .. } => {
            StorageError::NotSupported("operation not supported by the object store")
        }
        other => StorageError::Backend(other.to_string()),
    }
}

impl ObjectStorage {
    /// Wraps a store (e.g. `InMemory` in tests). `multipart` enables chunked
    /// uploads larger than one part; `prefix` is prepended to every key.
    pub fn new(store: Arc<dyn ObjectStore>, multipart: Option<Arc<dyn MultipartStore>>, prefix: &str) -> Self {
        ObjectStorage {
            store,
            multipart,
            keys: Keys::new(prefix),
            part_size: DEFAULT_PART_SIZE,
            kind: "object",
            copy_limit: u64::MAX,
        }
    }

    /// Validates `cfg` purely (every problem named `storage.<key>`), then
    /// builds the client. No network I/O: call [`Storage::check`] for that.
    pub fn from_config(cfg: &ObjectStorageConfig) -> Result<Self, ObjectConfigError> {
        cfg.validate("storage").map_err(ObjectConfigError::Invalid)?;
        let built = cfg.build()?;
        let mut s = ObjectStorage::new(built.store, built.multipart, &cfg.prefix());
        s.kind = cfg.kind.as_str();
        if cfg.kind == ObjectKind::S3 {
            // CopyObject copies at most 5 GiB; larger objects need a
            // multipart copy, which object_store does not offer.
            s.copy_limit = S3_COPY_LIMIT;
        }
        if let Some(p) = cfg.part_size {
            s.part_size = p;
        }
        Ok(s)
    }

    /// Objects larger than `bytes` are streamed into place at upload commit
    /// instead of copied server-side. Default: 5 GiB for `s3` (the
    /// CopyObject limit), unlimited for other stores.
    pub fn with_copy_limit(mut self, bytes: u64) -> Self {
        self.copy_limit = bytes;
        self
    }

    /// Sets the multipart part size, clamped to at least 5 MiB.
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The underlying store (for tools and tests that inspect the bucket).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    async fn head_size(&self, p: &Path) -> Result<Option<u64>, StorageError> {
        match self.store.head(p).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn get_bytes(&self, p: &Path) -> Result<Option<Bytes>, StorageError> {
        match self.store.get(p).await {
            Ok(g) => Ok(Some(g.bytes().await.map_err(map_err)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn put_bytes(&self, p: &Path, b: impl Into<Bytes>) -> Result<(), StorageError> {
        self.store.put(p, PutPayload::from(b.into())).await.map_err(map_err)?;
        Ok(())
    }

    /// Deletes `p` if present; returns whether it existed.
    async fn delete_existing(&self, p: &Path) -> Result<bool, StorageError> {
        if self.head_size(p).await?.is_none() {
            return Ok(false);
        }
        match self.store.delete(p).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn delete_quietly(&self, p: &Path) {
        match self.store.delete(p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(key = %p, error = %e, "delete failed"),
        }
    }

    /// Key parts below `base` of every object under it.
    async fn list_rel(&self, base: &Path) -> Result<Vec<Vec<String>>, StorageError> {
        let metas: Vec<_> = self.store.list(Some(base)).try_collect().await.map_err(map_err)?;
        Ok(metas.iter().filter_map(|m| self.keys.rel(base, &m.location)).collect())
    }

    async fn any_under(&self, base: &Path) -> Result<bool, StorageError> {
        match self.store.list(Some(base)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(map_err(e)),
        }
    }

    /// The directory of repository-style name `name` (`""`: the root).
    fn repo_dir_path(&self, name: &str) -> Path {
        name.split('/').filter(|c| !c.is_empty()).fold(self.keys.at(layout::REPOSITORIES), |p, c| p.join(c))
    }

    /// Lists one directory of `repositories/` (one delimiter listing):
    /// whether it holds manifests, and its child directories that may be
    /// repository components.
    async fn list_repo_dir(&self, name: String) -> Result<(String, bool, Vec<String>), StorageError> {
        let listed = self.store.list_with_delimiter(Some(&self.repo_dir_path(&name))).await.map_err(map_err)?;
        let mut has_manifests = false;
        let mut children = Vec::new();
        for child in listed.common_prefixes {
            match child.filename() {
                Some(layout::MANIFESTS) => has_manifests = true,
                Some(last) if !last.starts_with('_') => children.push(last.to_owned()),
                _ => {}
            }
        }
        Ok((name, has_manifests, children))
    }

    /// One page of repositories: the [`RepoWalk`] over delimiter listings,
    /// one request per directory on the way to `after` and per directory of
    /// the page, up to [`LIST_AHEAD`] of them in flight.
    async fn repo_page_walk(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError> {
        let mut walk = RepoWalk::new(after);
        let mut listed: HashMap<String, (bool, Vec<String>)> = HashMap::new();
        let mut out = Vec::new();
        let mut requests = 0usize;
        while out.len() < limit {
            let Some(name) = walk.next_dir() else {
                break;
            };
            let (has_manifests, children) = match listed.remove(&name) {
                Some(l) => l,
                None => {
                    // List the next few pending directories along with this
                    // one; they stay pending and are visited in order.
                    let mut batch = vec![name.clone()];
                    while batch.len() < LIST_AHEAD.min(limit.saturating_sub(out.len()).saturating_add(1)) {
                        match walk.next_dir() {
                            Some(n) => batch.push(n),
                            None => break,
                        }
                    }
                    requests += batch.len();
                    let results =
                        futures::future::try_join_all(batch.iter().map(|n| self.list_repo_dir(n.clone()))).await?;
                    walk.requeue(batch.into_iter().skip(1));
                    for (n, m, c) in results {
                        listed.insert(n, (m, c));
                    }
                    listed.remove(&name).unwrap_or_default()
                }
            };
            if let Some(found) = walk.visit(&name, has_manifests, children) {
                if let Ok(r) = found.parse::<RepoName>() {
                    out.push(r);
                }
            }
        }
        tracing::debug!(after, limit, found = out.len(), requests, "repository page listed");
        Ok(out)
    }
}

/// How many directory listings one page keeps in flight.
const LIST_AHEAD: usize = 16;

#[async_trait::async_trait]
impl Storage for ObjectStorage {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn capabilities(&self) -> cove_core::storage::Capabilities {
        cove_core::storage::Capabilities::OBJECT
    }

    async fn state_put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        // One PUT of one object: atomic, last writer wins.
        self.put_bytes(&self.keys.state(name)?, bytes).await
    }

    async fn state_get(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        self.get_bytes(&self.keys.state(name)?).await
    }

    async fn state_delete(&self, name: &str) -> Result<bool, StorageError> {
        self.delete_existing(&self.keys.state(name)?).await
    }

    async fn state_list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .list_rel(&self.keys.state(dir)?)
            .await?
            .into_iter()
            .filter_map(|p| match <[String; 1]>::try_from(p) {
                Ok([n]) if cove_core::storage::valid_state_name(&n) => Some(n),
                _ => None,
            })
            .collect();
        names.sort();
        Ok(names)
    }

    async fn check(&self) -> Result<(), StorageError> {
        let p = self.keys.check(&uuid::Uuid::new_v4().to_string());
        self.put_bytes(&p, Bytes::from_static(b"ok")).await?;
        self.store.delete(&p).await.map_err(map_err)
    }

    /// Object stores have no local capacity to measure: no floor.
    async fn space(&self) -> Result<Option<cove_core::storage::Space>, StorageError> {
        Ok(None)
    }

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.head_size(&self.keys.blob(digest)).await
    }

    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        let opts = GetOptions { range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)), ..Default::default() };
        let got = self.store.get_opts(&self.keys.blob(digest), opts).await.map_err(map_err)?;
        Ok(Box::pin(got.into_stream().map_err(|e| std::io::Error::other(e.to_string()))))
    }

    async fn blob_write(
        &self,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError> {
        self.write_blob(digest, body, expected_size).await
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        self.delete_existing(&self.keys.blob(digest)).await
    }

    async fn blob_list(&self) -> Result<Vec<Digest>, StorageError> {
        let mut out: Vec<Digest> =
            self.list_rel(&self.keys.at(layout::BLOBS)).await?.iter().filter_map(|p| L.blob_from_parts(p)).collect();
        out.sort();
        Ok(out)
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        self.put_bytes(&self.keys.link(repo, digest), Bytes::new()).await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        Ok(self.head_size(&self.keys.link(repo, digest)).await?.is_some() && self.blob_size(digest).await?.is_some())
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.delete_existing(&self.keys.link(repo, digest)).await
    }

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError> {
        self.start_session(repo).await
    }

    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        self.session_info(id).await
    }

    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError> {
        self.append(id, offset, body).await
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError> {
        self.commit(id, digest).await
    }

    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        self.abort(id).await
    }

    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError> {
        self.sessions().await
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> Result<(), StorageError> {
        self.put_bytes(&self.keys.manifest(repo, digest), layout::encode_manifest(manifest)?).await
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StorageError> {
        let Some(raw) = self.get_bytes(&self.keys.manifest(repo, digest)).await? else {
            return Ok(None);
        };
        layout::decode_manifest(raw, digest).map(Some)
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.delete_existing(&self.keys.manifest(repo, digest)).await
    }

    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<Digest>, StorageError> {
        let mut out: Vec<Digest> = self
            .list_rel(&self.keys.at(&L.manifests(repo)))
            .await?
            .iter()
            .filter_map(|p| match p.as_slice() {
                [alg, hex] => layout::digest_from_parts(alg, hex),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        let Some(raw) = self.get_bytes(&self.keys.tag(repo, tag)).await? else {
            return Ok(None);
        };
        layout::decode_tag(&raw, repo, tag).map(Some)
    }

    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StorageError> {
        // One PUT of one object: atomic, last writer wins.
        self.put_bytes(&self.keys.tag(repo, tag), layout::encode_tag(digest)).await
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        self.delete_existing(&self.keys.tag(repo, tag)).await
    }

    async fn tag_list(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        let mut tags: Vec<String> = self
            .list_rel(&self.keys.at(&L.tags(repo)))
            .await?
            .into_iter()
            .filter_map(|p| match <[String; 1]>::try_from(p) {
                Ok([t]) => L.tag_from_name(&t),
                Err(_) => None,
            })
            .collect();
        if tags.is_empty() && !self.any_under(&self.keys.at(&L.manifests(repo))).await? {
            return Ok(None);
        }
        tags.sort();
        Ok(Some(tags))
    }

    /// Lists from the key of `after` on (the store lists keys in order), so
    /// a page costs one listing request per 1,000 tags it returns.
    async fn tag_page(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let dir = self.keys.at(&L.tags(repo));
        let mut out = Vec::new();
        if limit > 0 {
            // Keys are built from validated tags only; any other `after`
            // (not a tag, so no key) lists from the start.
            let offset = after.and_then(|a| a.parse::<Tag>().ok()).map(|t| self.keys.tag(repo, &t));
            let mut listed = match &offset {
                Some(o) => self.store.list_with_offset(Some(&dir), o),
                None => self.store.list(Some(&dir)),
            };
            while let Some(meta) = listed.next().await {
                let meta = meta.map_err(map_err)?;
                let Some(Ok([t])) = self.keys.rel(&dir, &meta.location).map(<[String; 1]>::try_from) else {
                    continue;
                };
                if after.is_none_or(|a| t.as_str() > a) {
                    out.push(t);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        if out.is_empty() && !self.any_under(&dir).await? && !self.any_under(&self.keys.at(&L.manifests(repo))).await? {
            return Ok(None);
        }
        Ok(Some(out))
    }

    async fn repo_list(&self) -> Result<Vec<RepoName>, StorageError> {
        self.repo_page_walk(None, usize::MAX).await
    }

    async fn repo_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError> {
        self.repo_page_walk(after, limit).await
    }

    async fn referrer_put(
        &self,
        repo: &RepoName,
        subject: &Digest,
        descriptor: &Descriptor,
    ) -> Result<(), StorageError> {
        let body = layout::encode_referrer(descriptor)?;
        self.put_bytes(&self.keys.referrer(repo, subject, &descriptor.digest), body).await
    }

    async fn referrer_delete(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<(), StorageError> {
        self.delete_quietly(&self.keys.referrer(repo, subject, referrer)).await;
        Ok(())
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StorageError> {
        let dir = self.keys.at(&L.referrers(repo, subject));
        let metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await.map_err(map_err)?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            // A record deleted between list and get is simply skipped.
            if let Some(raw) = self.get_bytes(&m.location).await? {
                out.push(layout::decode_referrer(&raw)?);
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out.dedup_by(|a, b| a.digest == b.digest);
        Ok(out)
    }
}
