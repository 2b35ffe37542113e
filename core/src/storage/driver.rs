//! [`Driver`]: the small trait a storage backend implements. A driver
//! stores named objects (names from [`Layout`], `/`-separated) and upload
//! sessions; [`Storage`] — blobs, links, manifests, tags, referrers, the
//! repository walk and shared state — is written once on top of it, for
//! every driver (`impl<D: Driver> Storage for D`, in `on_driver.rs`).
//!
//! What a driver promises:
//! - [`Driver::put`] replaces an object atomically (readers see the old
//!   bytes or the new) and durably before it returns;
//! - [`Driver::write_verified`] makes an object visible only after the
//!   streamed bytes matched the digest (and size), and memory stays bounded
//!   whatever the size;
//! - listings never show a half-written object.

use std::path::Path;

use bytes::Bytes;

use super::layout::Layout;
use super::{
    file_stream, ByteRange, ByteStream, Capabilities, OpenBlob, Space, StorageError, StoreRequests, UploadInfo,
};
use crate::digest::Digest;
use crate::name::RepoName;

/// One level of a directory (or key prefix) of the layout.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Names of the objects directly in it.
    pub files: Vec<String>,
    /// Names of the directories in it (see [`Capabilities::empty_dirs`]).
    pub dirs: Vec<String>,
}

/// A storage backend (see the module docs).
#[async_trait::async_trait]
pub trait Driver: UploadSessions + 'static {
    /// A short name for logs (`filesystem`, `s3`, …).
    fn kind(&self) -> &'static str;

    /// What this store is.
    fn capabilities(&self) -> Capabilities;

    /// How this medium spells the layout.
    fn layout(&self) -> Layout;

    /// Checks that the backend is reachable and writable (readiness).
    async fn check(&self) -> Result<(), StorageError>;

    /// Free space and the floor (see [`crate::Storage::space`]); `None`
    /// without local capacity.
    async fn space(&self) -> Result<Option<Space>, StorageError> {
        Ok(None)
    }

    /// The size of object `name`, or `None`.
    async fn stat(&self, name: &str) -> Result<Option<u64>, StorageError>;

    /// Streams object `name`, or a range of it (already checked against its
    /// size by the caller where it knows it). `NotFound` if absent.
    async fn read(&self, name: &str, range: Option<ByteRange>) -> Result<ByteStream, StorageError>;

    /// The requests made to the backend so far, if the driver counts them.
    fn store_requests(&self) -> Option<StoreRequests> {
        None
    }

    /// Object `name` to read, if it exists and `requires` (a link) does
    /// too: its size and, where the driver can open it now, its reader
    /// (`read`: it will be read). The default asks [`Driver::stat`] (the
    /// bytes are then read with [`Driver::read`]).
    async fn open(&self, name: &str, requires: Option<&str>, read: bool) -> Result<Option<OpenBlob>, StorageError> {
        let _ = read;
        if let Some(link) = requires {
            if self.stat(link).await?.is_none() {
                return Ok(None);
            }
        }
        Ok(self.stat(name).await?.map(|size| OpenBlob::new(size, None)))
    }

    /// The bytes of a small object (a record), or `None`.
    async fn get(&self, name: &str) -> Result<Option<Bytes>, StorageError>;

    /// Writes a small object, atomically replacing any previous one. An
    /// empty object is a marker (a link).
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError>;

    /// Removes object `name`; returns whether it was there.
    async fn delete(&self, name: &str) -> Result<bool, StorageError>;

    /// One level of directory `dir` (empty when it does not exist), in no
    /// particular order.
    async fn list(&self, dir: &str) -> Result<Listing, StorageError>;

    /// Every object below `dir` at any depth, as its name parts relative to
    /// `dir`, in no particular order.
    async fn walk(&self, dir: &str) -> Result<Vec<Vec<String>>, StorageError>;

    /// Whether any object is below `dir`.
    async fn any_below(&self, dir: &str) -> Result<bool, StorageError> {
        Ok(!self.walk(dir).await?.is_empty())
    }

    /// At most `limit` object names directly in `dir` sorting strictly after
    /// `after`, in order. The default lists the whole directory; stores that
    /// list in key order start at `after`.
    async fn list_after(&self, dir: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StorageError> {
        let mut files = self.list(dir).await?.files;
        files.retain(|f| after.is_none_or(|a| f.as_str() > a));
        files.sort();
        files.truncate(limit);
        Ok(files)
    }

    /// Writes object `name` from a stream, visible only once the bytes
    /// matched `digest` (and `expected_size`). An object already there: the
    /// stream is consumed and the call succeeds. Returns the size.
    async fn write_verified(
        &self,
        name: &str,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError>;

    /// Makes the local file `path` (exactly the verified bytes of `digest`)
    /// object `name`, like [`crate::Storage::blob_import`]. The default
    /// streams it through [`Driver::write_verified`].
    async fn import(&self, name: &str, digest: &Digest, path: &Path, size: u64) -> Result<u64, StorageError> {
        let file = tokio::fs::File::open(path).await?;
        let body: ByteStream = Box::pin(file_stream(file));
        self.write_verified(name, digest, body, Some(size)).await
    }
}

/// Upload sessions, which each medium keeps its own way (files appended in
/// place; multipart uploads and tail objects) below `Layout::upload`; the
/// [`crate::Storage`] `upload_*` methods are these.
#[async_trait::async_trait]
pub trait UploadSessions: Send + Sync {
    /// See [`crate::Storage::upload_start`].
    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError>;
    /// See [`crate::Storage::upload_info`].
    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError>;
    /// See [`crate::Storage::upload_append`].
    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError>;
    /// See [`crate::Storage::upload_commit`] (the blob is at `Layout::blob`).
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError>;
    /// See [`crate::Storage::upload_abort`].
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError>;
    /// See [`crate::Storage::upload_list`].
    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError>;
}
