//! [`GuardedStorage`]: the [`Storage`] wrapper through which every write
//! tells the [`GcGuard`] what it makes reachable, and the [`RepoIndex`]
//! which repositories exist.

use std::sync::Arc;

use super::GcGuard;
use crate::digest::Digest;
use crate::manifest::{parse_manifest, Descriptor};
use crate::name::{RepoName, Tag};
use crate::storage::{ByteRange, ByteStream, RepoIndex, Storage, StorageError, StoredManifest, UploadInfo};

/// A [`Storage`] wrapper that reports every digest a write makes reachable
/// to a [`GcGuard`]. Reads pass straight through.
pub struct GuardedStorage {
    inner: Arc<dyn Storage>,
    guard: Arc<GcGuard>,
    index: Option<Arc<RepoIndex>>,
}

impl GuardedStorage {
    /// Wraps `inner`; the same `guard` must be given to [`collect`](super::collect).
    pub fn new(inner: Arc<dyn Storage>, guard: Arc<GcGuard>) -> GuardedStorage {
        GuardedStorage { inner, guard, index: None }
    }

    /// Also keeps `index` up to date with every manifest and tag stored or
    /// deleted; GC and retention then relist only the repositories it says
    /// changed (see [`super::inventory::Inventories`]).
    pub fn with_index(mut self, index: Arc<RepoIndex>) -> GuardedStorage {
        self.guard.set_index(index.clone());
        self.index = Some(index);
        self
    }

    /// The guard shared with garbage collection.
    pub fn guard(&self) -> &Arc<GcGuard> {
        &self.guard
    }
}

impl GuardedStorage {
    /// Before a manifest or tag write: the index's change record (see
    /// [`RepoIndex::before_write`]).
    async fn announce(&self, repo: &RepoName) -> Result<(), StorageError> {
        match &self.index {
            Some(index) => index.before_write(self.inner.as_ref(), repo).await,
            None => Ok(()),
        }
    }
}

/// Digests a manifest makes reachable: config, layers and child manifests.
fn manifest_refs(bytes: &[u8], media_type: &str) -> Vec<Digest> {
    match parse_manifest(bytes, Some(media_type)) {
        Ok(p) => p.config.iter().chain(&p.layers).chain(&p.manifests).map(|d| d.digest.clone()).collect(),
        Err(_) => Vec::new(),
    }
}

#[async_trait::async_trait]
impl Storage for GuardedStorage {
    async fn state_put(&self, name: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        self.inner.state_put(name, bytes).await
    }
    async fn state_get(&self, name: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        self.inner.state_get(name).await
    }
    async fn state_list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        self.inner.state_list(dir).await
    }
    async fn state_delete(&self, name: &str) -> Result<bool, StorageError> {
        self.inner.state_delete(name).await
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> crate::storage::Capabilities {
        self.inner.capabilities()
    }
    async fn check(&self) -> Result<(), StorageError> {
        self.inner.check().await
    }
    fn store_requests(&self) -> Option<crate::storage::StoreRequests> {
        self.inner.store_requests()
    }
    async fn space(&self) -> Result<Option<crate::storage::Space>, StorageError> {
        self.inner.space().await
    }
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.inner.blob_size(digest).await
    }
    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        self.inner.blob_read(digest, range).await
    }
    async fn blob_open(
        &self,
        digest: &Digest,
        linked_in: Option<&RepoName>,
        read: bool,
    ) -> Result<Option<crate::storage::OpenBlob>, StorageError> {
        let Some(repo) = linked_in else {
            return self.inner.blob_open(digest, None, read).await;
        };
        // As for `blob_linked`: a blob found linked is not deleted under the
        // read that follows (and a file opened stays readable regardless).
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        let opened = self.inner.blob_open(digest, Some(repo), read).await?;
        if opened.is_some() {
            self.guard.touch(digest);
        }
        Ok(opened)
    }
    async fn blob_write(&self, digest: &Digest, body: ByteStream, size: Option<u64>) -> Result<u64, StorageError> {
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        self.inner.blob_write(digest, body, size).await
    }
    async fn blob_import(&self, digest: &Digest, path: &std::path::Path, size: u64) -> Result<u64, StorageError> {
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        self.inner.blob_import(digest, path, size).await
    }
    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        self.inner.blob_delete(digest).await
    }
    async fn blob_list(&self) -> Result<Vec<Digest>, StorageError> {
        self.inner.blob_list().await
    }
    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        self.inner.blob_link(repo, digest).await
    }
    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        // Waits out a deletion in progress (retention deletes blobs that are
        // still linked): a reader then either sees the blob gone or touches
        // it before any claim, so a blob found linked is not deleted under
        // the read that follows.
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        let linked = self.inner.blob_linked(repo, digest).await?;
        if linked {
            // The engine checks links right before storing a manifest that
            // needs them: keep them for at least `grace` from here.
            self.guard.touch(digest);
        }
        Ok(linked)
    }
    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.inner.blob_unlink(repo, digest).await
    }
    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError> {
        self.inner.upload_start(repo).await
    }
    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        self.inner.upload_info(id).await
    }
    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError> {
        self.inner.upload_append(id, offset, body).await
    }
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError> {
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        self.inner.upload_commit(id, digest).await
    }
    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        self.inner.upload_abort(id).await
    }
    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError> {
        self.inner.upload_list().await
    }
    async fn manifest_put(&self, repo: &RepoName, digest: &Digest, m: &StoredManifest) -> Result<(), StorageError> {
        let mut digests = manifest_refs(&m.bytes, &m.media_type);
        digests.push(digest.clone());
        let _pin = self.guard.pin(digests).await;
        self.announce(repo).await?;
        let put = self.inner.manifest_put(repo, digest, m).await;
        if let Some(index) = &self.index {
            match &put {
                Ok(()) => index.stored(self.inner.as_ref(), repo).await,
                // It may have landed: whatever lists it reads it again.
                Err(_) => index.tagged(repo),
            }
        }
        put
    }
    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StorageError> {
        self.inner.manifest_get(repo, digest).await
    }
    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.announce(repo).await?;
        let deleted = self.inner.manifest_delete(repo, digest).await;
        if let Some(index) = &self.index {
            match deleted {
                Ok(true) => index.deleted(self.inner.as_ref(), repo).await,
                Ok(false) => {}
                Err(_) => index.tagged(repo),
            }
        }
        deleted
    }
    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<Digest>, StorageError> {
        self.inner.manifest_list(repo).await
    }
    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        self.inner.tag_get(repo, tag).await
    }
    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StorageError> {
        let _pin = self.guard.pin(vec![digest.clone()]).await;
        // GC may have removed an untagged manifest while this waited.
        if self.inner.manifest_get(repo, digest).await?.is_none() {
            return Err(StorageError::NotFound);
        }
        self.announce(repo).await?;
        let put = self.inner.tag_put(repo, tag, digest).await;
        if let Some(index) = &self.index {
            // Also after a failure: the tag may have been written.
            index.tagged(repo);
        }
        put
    }
    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        self.announce(repo).await?;
        let deleted = self.inner.tag_delete(repo, tag).await;
        if let Some(index) = &self.index {
            // Deleted, or failed (it may have been deleted all the same).
            if !matches!(deleted, Ok(false)) {
                index.tagged(repo);
            }
        }
        deleted
    }
    async fn tag_list(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        self.inner.tag_list(repo).await
    }
    async fn tag_page(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StorageError> {
        self.inner.tag_page(repo, after, limit).await
    }
    async fn repo_list(&self) -> Result<Vec<RepoName>, StorageError> {
        self.inner.repo_list().await
    }
    async fn repo_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError> {
        self.inner.repo_page(after, limit).await
    }
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StorageError> {
        self.inner.repo_exists(repo).await
    }
    async fn referrer_put(&self, repo: &RepoName, subject: &Digest, d: &Descriptor) -> Result<(), StorageError> {
        let _pin = self.guard.pin(vec![d.digest.clone()]).await;
        self.inner.referrer_put(repo, subject, d).await
    }
    async fn referrer_delete(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<(), StorageError> {
        self.inner.referrer_delete(repo, subject, referrer).await
    }
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StorageError> {
        self.inner.referrers(repo, subject).await
    }
}
