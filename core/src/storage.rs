//! The [`Storage`] plugin trait: content-addressed blobs, resumable upload
//! sessions, per-repository manifests, tags and referrers.

use std::path::Path;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::name::{RepoName, Tag};

pub mod driver;
pub mod index;
pub mod layout;
mod on_driver;
mod walk;
pub use driver::{Driver, Listing, UploadSessions};
pub use index::RepoIndex;
pub use layout::Layout;
pub use walk::RepoWalk;

/// A stream of bytes; an `Err` item ends the stream with a failure.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// An inclusive byte range `start..=end` already checked against a blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Requests a store made to its backend since it was opened, by kind:
/// what a run costs on an object store, whose provider bills per request.
/// A listing counts once however many pages it came in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreRequests {
    pub get: u64,
    pub head: u64,
    pub put: u64,
    pub delete: u64,
    pub list: u64,
    pub copy: u64,
    /// Multipart creations, parts, completions and aborts.
    pub multipart: u64,
}

impl StoreRequests {
    /// Every request, of all kinds.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }

    /// The requests made after `earlier` was taken.
    pub fn since(&self, earlier: &StoreRequests) -> StoreRequests {
        StoreRequests {
            get: self.get.saturating_sub(earlier.get),
            head: self.head.saturating_sub(earlier.head),
            put: self.put.saturating_sub(earlier.put),
            delete: self.delete.saturating_sub(earlier.delete),
            list: self.list.saturating_sub(earlier.list),
            copy: self.copy.saturating_sub(earlier.copy),
            multipart: self.multipart.saturating_sub(earlier.multipart),
        }
    }

    /// (kind, count) pairs, for metrics.
    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("get", self.get),
            ("head", self.head),
            ("put", self.put),
            ("delete", self.delete),
            ("list", self.list),
            ("copy", self.copy),
            ("multipart", self.multipart),
        ]
    }
}

/// Reads an opened blob's bytes, or a range of it (checked against its size).
pub type BlobReader = Box<dyn FnOnce(Option<ByteRange>) -> ByteStream + Send>;

/// A blob found by [`Storage::blob_open`]: its size and, on a store that
/// opened it already (a file), the reader holding it.
pub struct OpenBlob {
    pub size: u64,
    reader: Option<BlobReader>,
}

impl OpenBlob {
    /// A blob of `size` bytes; `reader`, if the store holds it open.
    pub fn new(size: u64, reader: Option<BlobReader>) -> OpenBlob {
        OpenBlob { size, reader }
    }

    /// Its bytes in `range` (checked against [`OpenBlob::size`]): from the
    /// open reader, else read from `storage`.
    pub async fn read(
        self,
        storage: &dyn Storage,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        match self.reader {
            Some(reader) => Ok(reader(range)),
            None => storage.blob_read(digest, range).await,
        }
    }
}

impl std::fmt::Debug for OpenBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBlob").field("size", &self.size).field("open", &self.reader.is_some()).finish()
    }
}

/// What a store is, for the decisions that depend on it (made in one
/// place instead of asking which backend it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Several processes (replicas) may serve from this store at once: an
    /// object store's bucket. A filesystem root belongs to one process.
    /// Decides whether GC and retention run by default (one owner: yes;
    /// replicas: opted in, one at a time under the lease), whether the
    /// activity log is shared through the store, and how long a lease claim
    /// settles.
    pub shared: bool,
    /// The store has local capacity to measure ([`Storage::space`]), hence a
    /// free-space floor.
    pub local_space: bool,
    /// A directory can remain with nothing below it (a filesystem); in an
    /// object store a prefix exists only while objects are below it.
    pub empty_dirs: bool,
}

impl Capabilities {
    /// A local filesystem.
    pub const FILESYSTEM: Capabilities = Capabilities { shared: false, local_space: true, empty_dirs: true };
    /// An object store's bucket.
    pub const OBJECT: Capabilities = Capabilities { shared: true, local_space: false, empty_dirs: false };
}

/// What a storage backend can fail with. Variants are named by meaning;
/// backends map their private errors into them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("upload session is not known")]
    UploadUnknown,
    #[error("content digest {actual} does not match {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("chunk offset {got} does not match upload size {expected}")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("content length {actual} does not match {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    /// The incoming body failed (client disconnect, upstream truncation).
    #[error("body stream failed: {0}")]
    BodyError(String),
    #[error("not supported by this backend: {0}")]
    NotSupported(&'static str),
    /// No room for the write: the filesystem is full (`ENOSPC`, `EDQUOT`)
    /// or its free space is below the configured `min_free` floor.
    #[error("storage is full: {0}")]
    Full(String),
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("backend error: {0}")]
    Backend(String),
}

impl From<std::io::Error> for StorageError {
    /// A full disk or an exceeded quota becomes [`StorageError::Full`]
    /// (the client is told so); anything else stays an I/O error.
    fn from(e: std::io::Error) -> Self {
        if is_storage_full(&e) {
            StorageError::Full(e.to_string())
        } else {
            StorageError::Io(e)
        }
    }
}

/// Whether an I/O error means "no space left" (`ENOSPC`) or "quota
/// exceeded" (`EDQUOT`), on Linux and macOS alike.
pub fn is_storage_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || e.get_ref().is_some_and(|inner| inner.is::<BelowFloor>())
}

/// The error a write fails with when free space is below the `min_free`
/// floor before the disk is actually full (wrapped in an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{available} bytes free, below the storage.min_free floor of {floor} bytes")]
pub struct BelowFloor {
    pub available: u64,
    pub floor: u64,
}

/// Free space where a backend keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Space {
    /// Bytes an unprivileged writer can still use.
    pub available: u64,
    /// Size of the filesystem.
    pub total: u64,
    /// The `min_free` floor in bytes: below it pushes are refused.
    pub floor: u64,
}

impl Space {
    /// Whether free space is below the floor.
    pub fn low(&self) -> bool {
        self.available < self.floor
    }

    /// How many bytes must be freed to get back above the floor.
    pub fn shortfall(&self) -> u64 {
        self.floor.saturating_sub(self.available)
    }
}

/// A manifest as stored: its exact bytes and media type.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// State of an upload session.
#[derive(Debug, Clone)]
pub struct UploadInfo {
    /// Opaque session id: `[0-9a-f-]`, at most 64 characters.
    pub id: String,
    pub repo: RepoName,
    /// Bytes received so far.
    pub size: u64,
    pub started: SystemTime,
    /// Last time a chunk was appended (or the session started).
    pub updated: SystemTime,
}

/// Storage for a registry.
///
/// # Contract
/// - Blobs are content addressed and shared by all repositories; a blob is
///   visible under a digest only after its bytes were verified against it.
///   [`Storage::blob_link`] records that a repository may serve a blob.
/// - Every write that makes something visible (blob commit, manifest, tag,
///   link) is atomic: readers see the old state or the new, never a part;
///   a crash at any moment leaves no partial object visible.
/// - Upload sessions persist across restarts; `upload_append` at an offset
///   other than the current size fails with [`StorageError::OffsetMismatch`].
/// - Streams are never buffered whole: memory stays bounded by a chunk size.
/// - Lists (tags, repositories, referrers) are returned in lexical order.
/// - Operations a backend cannot do return [`StorageError::NotSupported`],
///   never silently succeed.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// A short name for logs (`filesystem`, `s3`, …).
    fn kind(&self) -> &'static str;

    /// What this store is (see [`Capabilities`]).
    fn capabilities(&self) -> Capabilities;

    /// Checks that the backend is reachable and writable (readiness).
    async fn check(&self) -> Result<(), StorageError>;

    /// The requests made to the backend so far, on a store that counts them
    /// (object stores); `None` on a filesystem.
    fn store_requests(&self) -> Option<StoreRequests> {
        None
    }

    /// Free space where the data lives and the floor below which writes are
    /// refused (measured at most about once a second). `None`: the backend
    /// has no local capacity to measure (object stores), hence no floor.
    async fn space(&self) -> Result<Option<Space>, StorageError>;

    // ---- blobs -------------------------------------------------------------

    /// The size of a committed blob, or `None`.
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError>;

    /// Streams a committed blob, or a range of it. `NotFound` if absent.
    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream, StorageError>;

    /// A committed blob to serve: `None` if absent or, with `linked_in`,
    /// not linked into that repository ([`Storage::blob_linked`]). `read`:
    /// its bytes will be read (a store may read a small blob at once). On
    /// the filesystem this is one trip to a blocking thread that checks the
    /// link, opens the file and learns its size, where `blob_linked`,
    /// `blob_size` and `blob_read` take three.
    async fn blob_open(
        &self,
        digest: &Digest,
        linked_in: Option<&RepoName>,
        read: bool,
    ) -> Result<Option<OpenBlob>, StorageError>;

    /// Writes a whole blob from a stream, verifying it against `digest` (and
    /// `expected_size` when given) before it becomes visible. Returns its size.
    /// Writing a blob that already exists consumes the stream and succeeds.
    async fn blob_write(
        &self,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError>;

    /// Makes the local file at `path`, which holds exactly the already
    /// verified bytes of `digest` (`size` of them), the blob `digest`,
    /// atomically like [`Storage::blob_write`]. The backend may move the file
    /// away (the caller removes `path` afterwards only if it is still there)
    /// and must not change it otherwise; a blob that already exists is
    /// success. Returns the blob size. The default streams the file through
    /// [`Storage::blob_write`] (one local read, verified again); backends on
    /// a local filesystem rename it into place instead.
    async fn blob_import(&self, digest: &Digest, path: &Path, size: u64) -> Result<u64, StorageError> {
        let file = tokio::fs::File::open(path).await?;
        let body: ByteStream = Box::pin(file_stream(file));
        self.blob_write(digest, body, Some(size)).await
    }

    /// Removes a committed blob. Returns whether it existed.
    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StorageError>;

    /// Every committed blob digest (for garbage collection and copying).
    async fn blob_list(&self) -> Result<Vec<Digest>, StorageError>;

    /// Records that `repo` may serve blob `digest`.
    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError>;

    /// Whether `repo` may serve blob `digest` (linked and still committed).
    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError>;

    /// Removes the link of `digest` from `repo`. Returns whether it existed.
    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError>;

    // ---- uploads -----------------------------------------------------------

    /// Starts an upload session for `repo`.
    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError>;

    /// The state of a session; `UploadUnknown` if absent.
    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError>;

    /// Appends `body` at `offset` (which must equal the current size).
    /// Returns the new size. A failed body leaves the session at its old size.
    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError>;

    /// Verifies the session's bytes against `digest`, makes them the blob
    /// `digest`, and ends the session. On mismatch the session is ended and
    /// nothing becomes visible. Returns the blob size.
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError>;

    /// Ends a session and discards its bytes.
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError>;

    /// All sessions (for expiry).
    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError>;

    // ---- manifests, tags, referrers ----------------------------------------

    /// Stores manifest bytes for `repo` under `digest` (already verified by
    /// the caller).
    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> Result<(), StorageError>;

    /// The manifest `digest` of `repo`, or `None`.
    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StorageError>;

    /// Removes the manifest `digest` from `repo`. Returns whether it existed.
    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError>;

    /// Every manifest digest of `repo`.
    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<Digest>, StorageError>;

    /// The digest a tag points at, or `None`.
    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError>;

    /// Points `tag` at `digest` (atomically replacing any previous target).
    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StorageError>;

    /// Removes a tag. Returns whether it existed.
    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError>;

    /// The tags of `repo` in lexical order; `None` if the repository is unknown.
    async fn tag_list(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError>;

    /// At most `limit` tags of `repo` sorting strictly after `after`, in
    /// lexical order (one page of [`Storage::tag_list`]); `None` if the
    /// repository is unknown.
    async fn tag_page(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StorageError>;

    /// Every repository holding at least one manifest, in lexical order.
    async fn repo_list(&self) -> Result<Vec<RepoName>, StorageError>;

    /// At most `limit` repositories holding at least one manifest whose names
    /// sort strictly after `after`, in lexical order: one page of
    /// [`Storage::repo_list`], at a cost proportional to the page rather than
    /// to the number of repositories.
    async fn repo_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError>;

    /// Whether `repo` holds at least one manifest (is listed by
    /// [`Storage::repo_list`]).
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StorageError>;

    /// Records that manifest `referrer` (described by `descriptor`) has
    /// `subject` as its subject.
    async fn referrer_put(
        &self,
        repo: &RepoName,
        subject: &Digest,
        descriptor: &Descriptor,
    ) -> Result<(), StorageError>;

    /// Removes a referrer record.
    async fn referrer_delete(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<(), StorageError>;

    /// The descriptors of manifests whose subject is `subject`, by digest order.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StorageError>;

    // ---- shared state ------------------------------------------------------

    /// Writes the small document `name` (see [`valid_state_name`]) of the
    /// state replicas share (token signing keys, …), atomically replacing
    /// any previous one: readers see the old bytes or the new, never a mix.
    /// It lives under a reserved prefix that no repository can reach.
    async fn state_put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        let _ = (name, bytes);
        Err(StorageError::NotSupported("shared state"))
    }

    /// The shared-state document `name`, or `None`.
    async fn state_get(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        let _ = name;
        Err(StorageError::NotSupported("shared state"))
    }

    /// The names of the documents directly in the shared-state directory
    /// `dir` (the last component only), in lexical order; empty if none.
    async fn state_list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let _ = dir;
        Err(StorageError::NotSupported("shared state"))
    }

    /// Removes the shared-state document `name`; returns whether it was
    /// there. Removing one that is gone is not an error.
    async fn state_delete(&self, name: &str) -> Result<bool, StorageError> {
        let _ = name;
        Err(StorageError::NotSupported("shared state"))
    }
}

/// Validates an upload session id before it is used as a path or key.
pub fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase() || b == b'-')
}

/// Validates a shared-state name (a document name or a directory) before it
/// is used as a path or key: 1-4 `/`-separated components of 1-64
/// characters `[a-z0-9._-]`, none starting with `.`.
pub fn valid_state_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() <= 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 64
                && !p.starts_with('.')
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

/// Reads a file as a [`ByteStream`] in 1 MiB chunks (bounded memory).
fn file_stream(file: tokio::fs::File) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
    futures::stream::try_unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        while buf.len() < buf.capacity() {
            if file.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some((buf.freeze(), file)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_plain_relative_paths() {
        for ok in ["keys", "keys/0123abcd", "a/b.c/d_e-f"] {
            assert!(valid_state_name(ok), "{ok}");
        }
        for bad in ["", "/keys", "keys/", "keys//a", "..", "keys/../x", ".hidden", "Keys", "a/b/c/d/e", "a b"] {
            assert!(!valid_state_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn space_below_the_floor_and_the_bytes_retention_must_free() {
        let s = Space { available: 30, total: 100, floor: 40 };
        assert!(s.low());
        assert_eq!(s.shortfall(), 10);
        let s = Space { available: 40, total: 100, floor: 40 };
        assert!(!s.low(), "exactly at the floor is not low");
        assert_eq!(s.shortfall(), 0);
        assert_eq!(Space { available: 0, total: 100, floor: 0 }.shortfall(), 0);
    }

    #[test]
    fn full_disks_and_quotas_map_to_full() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(matches!(StorageError::from(full), StorageError::Full(_)));
        let quota = std::io::Error::from(std::io::ErrorKind::QuotaExceeded);
        assert!(matches!(StorageError::from(quota), StorageError::Full(_)));
        #[cfg(unix)]
        {
            // ENOSPC is 28 on Linux and macOS.
            assert!(matches!(StorageError::from(std::io::Error::from_raw_os_error(28)), StorageError::Full(_)));
        }
        let floor = std::io::Error::other(BelowFloor { available: 1, floor: 2 });
        assert!(matches!(StorageError::from(floor), StorageError::Full(_)));
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(StorageError::from(other), StorageError::Io(_)));
    }
}
