//! Blob operations of the engine: serving (through the cache for upstream
//! namespaces), deleting, mounting, and the upload state machine.

use std::time::{Duration, SystemTime};

use super::{exact_length, BlobResponse, Cache, Registry};
use crate::cache::CachedRepo;
use crate::digest::Digest;
use crate::error::{ErrorCode, ErrorDetail, RegistryError, Result};
use crate::name::RepoName;
use crate::range::RangeRequest;
use crate::storage::{ByteStream, OpenBlob, UploadInfo};

impl Registry {
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
        let opened = self.storage.blob_open(digest, Some(repo), !head).await?;
        let opened = opened.ok_or_else(|| RegistryError::blob_unknown(digest))?;
        Ok((serve_opened(self.storage.as_ref(), digest, opened, range, head).await?, None))
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

    // Uploads.

    /// A whole blob in one request (`POST ?digest=` with a body).
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        length: Option<u64>,
    ) -> Result<u64> {
        self.ensure_writable(repo)?;
        let size = self.full_checked(repo, None, self.storage.blob_write(digest, body, length).await).await?;
        self.storage.blob_link(repo, digest).await?;
        Ok(size)
    }

    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadInfo> {
        self.ensure_writable(repo)?;
        self.full_checked(repo, None, self.storage.upload_start(repo).await).await
    }

    /// Passes `r` on as a registry error; a storage-full failure is also
    /// counted and logged, and ends `upload` (its space is given back).
    pub(super) async fn full_checked<T>(
        &self,
        repo: &RepoName,
        upload: Option<&str>,
        r: std::result::Result<T, crate::storage::StorageError>,
    ) -> Result<T> {
        match r {
            Ok(v) => Ok(v),
            Err(crate::storage::StorageError::Full(why)) => {
                self.storage_full(repo, upload, &why).await;
                Err(RegistryError::storage_full(why))
            }
            Err(e) => Err(e.into()),
        }
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
        let body = chunk_body(info.size, range, length, body)?;
        self.full_checked(repo, Some(id), self.storage.upload_append(id, info.size, body).await).await
    }

    /// Completes an upload with an optional final chunk, verifying `digest`.
    /// The final chunk's `Content-Range` (`range`) is held to the same rule
    /// as a `PATCH`: it must start at the session's current size, else the
    /// answer is [`ErrorDetail::UploadOffset`] (416 with the `Range` held)
    /// and the session stays as it was, so the client can ask for the
    /// status and resume.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<(u64, u64)>,
        body: Option<(ByteStream, Option<u64>)>,
    ) -> Result<u64> {
        let info = self.upload_status(repo, id).await?;
        match body {
            Some((body, length)) => {
                let body = chunk_body(info.size, range, length, body)?;
                self.full_checked(repo, Some(id), self.storage.upload_append(id, info.size, body).await).await?;
            }
            // A range names at least one byte: a final chunk without any
            // cannot be it.
            None if range.is_some() => {
                return Err(RegistryError::new(ErrorCode::SizeInvalid, "Content-Range names bytes the body lacks")
                    .with_detail(ErrorDetail::UploadOffset { size: info.size }))
            }
            None => {}
        }
        let size = self.full_checked(repo, Some(id), self.storage.upload_commit(id, digest).await).await?;
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
}

/// Checks a chunk's declared range against the session's `size` and wraps
/// the body so that it must hold exactly the declared number of bytes.
/// Nothing is written here: a refused chunk leaves the session untouched.
fn chunk_body(size: u64, range: Option<(u64, u64)>, length: Option<u64>, body: ByteStream) -> Result<ByteStream> {
    let mut expected = length;
    if let Some((start, end)) = range {
        if start != size || end < start {
            return Err(crate::storage::StorageError::OffsetMismatch { expected: size, got: start }.into());
        }
        let len = end - start + 1;
        if length.is_some_and(|l| l != len) {
            return Err(RegistryError::new(ErrorCode::SizeInvalid, "Content-Length does not match Content-Range")
                .with_detail(ErrorDetail::UploadOffset { size }));
        }
        expected = Some(len);
    }
    Ok(match expected {
        Some(len) => exact_length(body, len),
        None => body,
    })
}

/// The response for a stored blob `opened` (found by
/// [`crate::storage::Storage::blob_open`]): the part `range` asks for, an
/// empty body for a `HEAD`.
pub(crate) async fn serve_opened(
    storage: &dyn crate::storage::Storage,
    digest: &Digest,
    opened: OpenBlob,
    range: Option<&RangeRequest>,
    head: bool,
) -> Result<BlobResponse> {
    let size = opened.size;
    let range = crate::range::resolve(range, size)?;
    let body: ByteStream = if head {
        Box::pin(futures::stream::empty())
    } else {
        opened.read(storage, digest, range).await.map_err(|e| match e {
            crate::storage::StorageError::NotFound => RegistryError::blob_unknown(digest),
            e => e.into(),
        })?
    };
    Ok(BlobResponse { size: Some(size), range, body })
}
