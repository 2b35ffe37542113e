//! Listing operations of the engine: tags, the catalog, referrers.

use bytes::Bytes;

use super::{paginate, Page, ReferrersResponse, Registry};
use crate::cache::CachedRepo;
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::name::RepoName;
use crate::storage::index::Tags;

/// The most repositories one store read of a catalog page asks for.
pub const CATALOG_READ_MAX: usize = 4096;

impl Registry {
    pub async fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        if let Some((cache, route, remote)) = self.cached_route(repo) {
            let tags = cache.tags(CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo }).await?;
            return Ok(paginate(&tags, n, last));
        }
        let unknown = || RegistryError::new(ErrorCode::NameUnknown, format!("repository {repo} is not known"));
        let cached = self.repo_index.as_ref().is_some_and(|i| !i.tags_too_big(repo));
        match n {
            // With `n` and no tag cache (or a list too large for it), one
            // page and one more tag (to tell whether more follow) read from
            // the store.
            Some(n) if !cached => {
                let tags = self.storage.tag_page(repo, last, n.saturating_add(1)).await?.ok_or_else(unknown)?;
                Ok(paginate(&tags, Some(n), None))
            }
            _ => Ok(paginate(&self.tag_list(repo).await?.ok_or_else(unknown)?, n, last)),
        }
    }

    /// Every tag of a repository of this registry's own store, in lexical
    /// order (`None`: no such repository): from the repository index's tag
    /// cache when there is one ([`crate::storage::RepoIndex::tags`]), else
    /// one store listing.
    pub async fn tag_list(&self, repo: &RepoName) -> Result<Option<Tags>> {
        Ok(match &self.repo_index {
            Some(index) => index.tags(self.storage.as_ref(), repo).await?,
            None => self.storage.tag_list(repo).await?.map(Tags::from),
        })
    }

    /// One page of the repositories for which `visible` holds. With `n`, the
    /// store is read one page at a time ([`crate::Storage::repo_page`]): one
    /// more entry than asked tells whether more follow, and when `visible`
    /// hides entries the next reads double in size (up to
    /// [`CATALOG_READ_MAX`]), so a page costs the entries it shows plus
    /// those hidden between them, never the whole store.
    pub async fn catalog(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        visible: impl Fn(&RepoName) -> bool,
    ) -> Result<Page> {
        let Some(n) = n else {
            let repos: Vec<String> =
                self.storage.repo_list().await?.into_iter().filter(|r| visible(r)).map(|r| r.to_string()).collect();
            return Ok(paginate(&repos, None, last));
        };
        let want = n.saturating_add(1);
        let mut found = Vec::new();
        let mut after = last.map(str::to_owned);
        let mut read = want;
        loop {
            let got = self.repo_page(after.as_deref(), read).await?;
            let exhausted = got.len() < read;
            if let Some(l) = got.last() {
                after = Some(l.to_string());
            }
            found.extend(got.iter().filter(|r| visible(r)).map(|r| r.to_string()));
            if found.len() >= want || exhausted {
                break;
            }
            read = read.saturating_mul(2).min(CATALOG_READ_MAX).max(want - found.len());
        }
        // Every entry found sorts after `last` already.
        Ok(paginate(&found, Some(n), None))
    }

    /// One page of repository names: from the in-memory index once it is
    /// ready (no store request; exact for this process's writes, other
    /// replicas' changes show within [`crate::storage::index::POLL`]), else
    /// from the store's ordered walk of the layout.
    async fn repo_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>> {
        if let Some(page) = self.repo_index.as_ref().and_then(|i| i.page(after, limit)) {
            return Ok(page);
        }
        Ok(self.storage.repo_page(after, limit).await?)
    }

    /// The referrers of `subject` as an image index, optionally filtered by
    /// artifact type. An unknown subject has an empty index. In a cached
    /// repository the list is upstream's (see [`crate::cache::referrers`]),
    /// filtered here.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersResponse> {
        let (mut list, cache) = match self.cached_route(repo) {
            Some((cache, route, remote)) => {
                let at = CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo };
                let (list, status) = cache.referrers(at, subject).await?;
                (list, Some(status))
            }
            None => (self.storage.referrers(repo, subject).await?, None),
        };
        if let Some(at) = artifact_type {
            list.retain(|d| d.artifact_type.as_deref() == Some(at));
        }
        Ok(ReferrersResponse { body: referrers_index(&list), filtered: artifact_type.is_some(), cache })
    }
}

fn referrers_index(list: &[Descriptor]) -> Bytes {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": list,
    });
    Bytes::from(index.to_string())
}
