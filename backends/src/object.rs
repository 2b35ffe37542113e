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
mod counting;
mod keys;
mod upload;

use std::sync::Arc;

use bytes::Bytes;
use cove_core::storage::{Capabilities, Driver, Layout, Listing};
use cove_core::{ByteRange, ByteStream, Digest, StorageError};
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
    /// Requests made through `store` and `multipart`.
    counts: Arc<counting::Counts>,
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
        let counts = Arc::new(counting::Counts::default());
        let store: Arc<dyn ObjectStore> = Arc::new(counting::Counting::new(store, counts.clone()));
        let multipart =
            multipart.map(|m| Arc::new(counting::Counting::new(m, counts.clone())) as Arc<dyn MultipartStore>);
        ObjectStorage {
            store,
            multipart,
            counts,
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
}

/// Whether `name` is a key part that sorts as itself (no percent-encoding),
/// so a listing may start at it.
fn plain_key_part(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

#[async_trait::async_trait]
impl Driver for ObjectStorage {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::OBJECT
    }

    fn store_requests(&self) -> Option<cove_core::storage::StoreRequests> {
        Some(self.counts.snapshot())
    }

    fn layout(&self) -> Layout {
        L
    }

    async fn check(&self) -> Result<(), StorageError> {
        let p = self.keys.check(&uuid::Uuid::new_v4().to_string());
        self.put_bytes(&p, Bytes::from_static(b"ok")).await?;
        self.store.delete(&p).await.map_err(map_err)
    }

    async fn stat(&self, name: &str) -> Result<Option<u64>, StorageError> {
        self.head_size(&self.keys.at(name)).await
    }

    async fn read(&self, name: &str, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        let opts = GetOptions { range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)), ..Default::default() };
        let got = self.store.get_opts(&self.keys.at(name), opts).await.map_err(map_err)?;
        Ok(Box::pin(got.into_stream().map_err(|e| std::io::Error::other(e.to_string()))))
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        self.get_bytes(&self.keys.at(name)).await
    }

    /// One PUT of one object: atomic, last writer wins.
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put_bytes(&self.keys.at(name), bytes).await
    }

    async fn delete(&self, name: &str) -> Result<bool, StorageError> {
        self.delete_existing(&self.keys.at(name)).await
    }

    /// One delimiter listing.
    async fn list(&self, dir: &str) -> Result<Listing, StorageError> {
        let listed = self.store.list_with_delimiter(Some(&self.keys.at(dir))).await.map_err(map_err)?;
        let name = |p: &Path| p.filename().map(str::to_owned);
        Ok(Listing {
            files: listed.objects.iter().filter_map(|m| name(&m.location)).collect(),
            dirs: listed.common_prefixes.iter().filter_map(name).collect(),
        })
    }

    async fn walk(&self, dir: &str) -> Result<Vec<Vec<String>>, StorageError> {
        self.list_rel(&self.keys.at(dir)).await
    }

    /// One listing request, stopped at the first object.
    async fn any_below(&self, dir: &str) -> Result<bool, StorageError> {
        match self.store.list(Some(&self.keys.at(dir))).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(map_err(e)),
        }
    }

    /// Lists from the key of `after` on (the store lists keys in order), so
    /// a page costs one listing request per 1,000 names it returns.
    async fn list_after(&self, dir: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StorageError> {
        let base = self.keys.at(dir);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Any other `after` (not a plain key part) lists from the start.
        let offset = after.filter(|a| plain_key_part(a)).map(|a| base.clone().join(a));
        let mut listed = match &offset {
            Some(o) => self.store.list_with_offset(Some(&base), o),
            None => self.store.list(Some(&base)),
        };
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(map_err)?;
            let Some(Ok([n])) = self.keys.rel(&base, &meta.location).map(<[String; 1]>::try_from) else {
                continue;
            };
            if after.is_none_or(|a| n.as_str() > a) {
                out.push(n);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn write_verified(
        &self,
        name: &str,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError> {
        self.write_blob(self.keys.at(name), digest, body, expected_size).await
    }
}
