//! [`Storage`] written once, for every [`Driver`]: blobs, links, manifests,
//! tags, referrers, the paged repository walk and shared state, each in
//! terms of the driver's named objects laid out by its [`Layout`].

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;

use super::driver::{Driver, UploadSessions};
use super::layout::{self, MANIFESTS, REPOSITORIES};
use super::{
    valid_state_name, ByteRange, ByteStream, Capabilities, OpenBlob, RepoWalk, Space, Storage, StorageError,
    StoredManifest, UploadInfo,
};
use crate::digest::Digest;
use crate::manifest::Descriptor;
use crate::name::{RepoName, Tag};

/// How many directory listings one repository page keeps in flight.
const LIST_AHEAD: usize = 16;

#[async_trait::async_trait]
impl<D: Driver> Storage for D {
    fn kind(&self) -> &'static str {
        Driver::kind(self)
    }

    fn capabilities(&self) -> Capabilities {
        Driver::capabilities(self)
    }

    async fn check(&self) -> Result<(), StorageError> {
        Driver::check(self).await
    }

    fn store_requests(&self) -> Option<super::StoreRequests> {
        Driver::store_requests(self)
    }

    async fn space(&self) -> Result<Option<Space>, StorageError> {
        Driver::space(self).await
    }

    // ---- blobs -------------------------------------------------------------

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.stat(&self.layout().blob(digest)).await
    }

    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        self.read(&self.layout().blob(digest), range).await
    }

    async fn blob_open(
        &self,
        digest: &Digest,
        linked_in: Option<&RepoName>,
        read: bool,
    ) -> Result<Option<OpenBlob>, StorageError> {
        let l = self.layout();
        let link = linked_in.map(|repo| l.link(repo, digest));
        self.open(&l.blob(digest), link.as_deref(), read).await
    }

    async fn blob_write(
        &self,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError> {
        self.write_verified(&self.layout().blob(digest), digest, body, expected_size).await
    }

    async fn blob_import(&self, digest: &Digest, path: &Path, size: u64) -> Result<u64, StorageError> {
        self.import(&self.layout().blob(digest), digest, path, size).await
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        self.delete(&self.layout().blob(digest)).await
    }

    async fn blob_list(&self) -> Result<Vec<Digest>, StorageError> {
        let l = self.layout();
        let mut out: Vec<Digest> =
            self.walk(layout::BLOBS).await?.iter().filter_map(|parts| l.blob_from_parts(parts)).collect();
        out.sort();
        Ok(out)
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        self.put(&self.layout().link(repo, digest), Bytes::new()).await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        Ok(self.stat(&self.layout().link(repo, digest)).await?.is_some() && self.blob_size(digest).await?.is_some())
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.delete(&self.layout().link(repo, digest)).await
    }

    // ---- uploads -----------------------------------------------------------

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError> {
        UploadSessions::upload_start(self, repo).await
    }

    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        UploadSessions::upload_info(self, id).await
    }

    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError> {
        UploadSessions::upload_append(self, id, offset, body).await
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError> {
        UploadSessions::upload_commit(self, id, digest).await
    }

    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        UploadSessions::upload_abort(self, id).await
    }

    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError> {
        UploadSessions::upload_list(self).await
    }

    // ---- manifests, tags, referrers ----------------------------------------

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> Result<(), StorageError> {
        let record = layout::encode_manifest(manifest)?;
        self.put(&self.layout().manifest(repo, digest), Bytes::from(record)).await
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StorageError> {
        match self.get(&self.layout().manifest(repo, digest)).await? {
            Some(raw) => layout::decode_manifest(raw, digest).map(Some),
            None => Ok(None),
        }
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.delete(&self.layout().manifest(repo, digest)).await
    }

    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<Digest>, StorageError> {
        let mut out: Vec<Digest> = self
            .walk(&self.layout().manifests(repo))
            .await?
            .iter()
            .filter_map(|parts| match parts.as_slice() {
                [alg, hex] => layout::digest_from_parts(alg, hex),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        match self.get(&self.layout().tag(repo, tag)).await? {
            Some(raw) => layout::decode_tag(&raw, repo, tag).map(Some),
            None => Ok(None),
        }
    }

    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StorageError> {
        self.put(&self.layout().tag(repo, tag), Bytes::from(layout::encode_tag(digest))).await
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        self.delete(&self.layout().tag(repo, tag)).await
    }

    async fn tag_list(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        let l = self.layout();
        let mut tags: Vec<String> =
            self.list(&l.tags(repo)).await?.files.iter().filter_map(|n| l.tag_from_name(n)).collect();
        if tags.is_empty() && !self.any_below(&l.manifests(repo)).await? {
            return Ok(None);
        }
        tags.sort();
        Ok(Some(tags))
    }

    /// Where record names sort like the tags, lists from `after` on (a store
    /// that lists in key order answers a page with one request per 1,000
    /// tags); escaped names (filesystem) do not, so the page reads the whole
    /// directory (10,000 tags: a few milliseconds).
    async fn tag_page(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let l = self.layout();
        if l.escape_tag_case {
            return Ok(self
                .tag_list(repo)
                .await?
                .map(|tags| tags.into_iter().filter(|t| after.is_none_or(|a| t.as_str() > a)).take(limit).collect()));
        }
        let dir = l.tags(repo);
        let out: Vec<String> = if limit == 0 {
            Vec::new()
        } else {
            self.list_after(&dir, after, limit).await?.iter().filter_map(|n| l.tag_from_name(n)).collect()
        };
        if out.is_empty() && !self.any_below(&dir).await? && !self.any_below(&l.manifests(repo)).await? {
            return Ok(None);
        }
        Ok(Some(out))
    }

    async fn repo_list(&self) -> Result<Vec<RepoName>, StorageError> {
        repo_page_walk(self, None, usize::MAX).await
    }

    async fn repo_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError> {
        repo_page_walk(self, after, limit).await
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StorageError> {
        self.any_below(&self.layout().manifests(repo)).await
    }

    async fn referrer_put(
        &self,
        repo: &RepoName,
        subject: &Digest,
        descriptor: &Descriptor,
    ) -> Result<(), StorageError> {
        let record = layout::encode_referrer(descriptor)?;
        self.put(&self.layout().referrer(repo, subject, &descriptor.digest), Bytes::from(record)).await
    }

    async fn referrer_delete(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<(), StorageError> {
        self.delete(&self.layout().referrer(repo, subject, referrer)).await?;
        Ok(())
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StorageError> {
        let dir = self.layout().referrers(repo, subject);
        let mut out = Vec::new();
        for name in self.list(&dir).await?.files {
            // A record deleted between list and get is simply skipped.
            let Some(raw) = self.get(&format!("{dir}/{name}")).await? else {
                continue;
            };
            match layout::decode_referrer(&raw) {
                Ok(desc) => out.push(desc),
                Err(e) => tracing::warn!(record = %name, error = %e, "skipping unreadable referrer record"),
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        out.dedup_by(|a, b| a.digest == b.digest);
        Ok(out)
    }

    // ---- shared state ------------------------------------------------------

    async fn state_put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.put(&self.layout().state(name)?, bytes).await
    }

    async fn state_get(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        self.get(&self.layout().state(name)?).await
    }

    async fn state_list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> =
            self.list(&self.layout().state(dir)?).await?.files.into_iter().filter(|n| valid_state_name(n)).collect();
        names.sort();
        Ok(names)
    }

    async fn state_delete(&self, name: &str) -> Result<bool, StorageError> {
        self.delete(&self.layout().state(name)?).await
    }
}

/// Lists one directory of `repositories/`: whether it is a repository (a
/// `_manifests` directory with a manifest below), and its child directories
/// that may be repository components.
async fn list_repo_dir<D: Driver>(
    driver: &D,
    name: String,
    wanted: bool,
) -> Result<(String, bool, Vec<String>), StorageError> {
    let dir = if name.is_empty() { REPOSITORIES.to_owned() } else { format!("{REPOSITORIES}/{name}") };
    let listed = driver.list(&dir).await?;
    let marked = listed.dirs.iter().any(|d| d == MANIFESTS);
    // Where an empty directory can stay behind (a filesystem after the last
    // manifest was deleted), the marker alone does not make a repository.
    let is_repo = marked
        && wanted
        && (!Driver::capabilities(driver).empty_dirs || driver.any_below(&format!("{dir}/{MANIFESTS}")).await?);
    // Repository components never start with `_` (markers) or `.`.
    let children = listed.dirs.into_iter().filter(|c| !c.starts_with('_') && !c.starts_with('.')).collect();
    Ok((name, is_repo, children))
}

/// One page of repositories: the [`RepoWalk`] over directory listings, one
/// per directory on the way to `after` and per directory of the page, up to
/// [`LIST_AHEAD`] of them in flight.
async fn repo_page_walk<D: Driver>(
    driver: &D,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<RepoName>, StorageError> {
    let wanted = |name: &str| !name.is_empty() && after.is_none_or(|a| name > a);
    let mut walk = RepoWalk::new(after);
    let mut listed: HashMap<String, (bool, Vec<String>)> = HashMap::new();
    let mut out = Vec::new();
    let mut requests = 0usize;
    while out.len() < limit {
        let Some(name) = walk.next_dir() else {
            break;
        };
        let (is_repo, children) = match listed.remove(&name) {
            Some(entry) => entry,
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
                    futures::future::try_join_all(batch.iter().map(|n| list_repo_dir(driver, n.clone(), wanted(n))))
                        .await?;
                walk.requeue(batch.into_iter().skip(1));
                for (n, r, c) in results {
                    listed.insert(n, (r, c));
                }
                listed.remove(&name).unwrap_or_default()
            }
        };
        if let Some(found) = walk.visit(&name, is_repo, children) {
            match found.parse::<RepoName>() {
                Ok(r) => out.push(r),
                Err(_) => tracing::warn!(name = %found, "skipping a directory with an invalid repository name"),
            }
        }
    }
    tracing::debug!(after, limit, found = out.len(), requests, "repository page listed");
    Ok(out)
}
