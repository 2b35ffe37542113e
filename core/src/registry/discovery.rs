//! Listing operations of the engine: tags, the catalog, referrers.

use bytes::Bytes;

use super::{paginate, Page, ReferrersResponse, Registry};
use crate::cache::CachedRepo;
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::manifest::{Descriptor, OCI_INDEX};
use crate::name::RepoName;

impl Registry {
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
