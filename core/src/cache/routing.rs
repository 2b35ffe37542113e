//! Which upstream a repository belongs to: cached names live under their
//! origin host (`docker.io/library/nginx`), and containerd's `ns=` names
//! the host for a mirror request.

use std::sync::Arc;
use std::time::Duration;

use super::PullThrough;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::name::RepoName;
use crate::upstream::Upstream;

/// One configured upstream and its cache policy.
#[derive(Clone)]
pub struct UpstreamRoute {
    /// The origin host and first path component of its cached names.
    pub host: String,
    pub upstream: Arc<dyn Upstream>,
    /// How long a tag is served without revalidation.
    pub tag_ttl: Duration,
    /// How long a client waits for the revalidation of a cached tag past
    /// its TTL before it gets the cached manifest marked stale (the
    /// revalidation goes on in the background).
    pub revalidate_wait: Duration,
}

/// Where a repository's content comes from. The route is a snapshot: a
/// request keeps the upstream it started with across a config reload.
pub enum Route {
    Private,
    Cached { route: UpstreamRoute, remote: RepoName },
}

impl PullThrough {
    fn route_for_host(&self, host: &str) -> Option<UpstreamRoute> {
        self.routes.read().unwrap_or_else(|p| p.into_inner()).iter().find(|r| r.host == host).cloned()
    }

    /// Maps a path name and containerd's optional `ns` to the repository name
    /// Cove stores it under. Docker Hub names are normalised
    /// (`docker.io/nginx` is `docker.io/library/nginx`).
    pub fn resolve_name(&self, name: &str, ns: Option<&str>) -> Result<RepoName> {
        let repo: RepoName = name.parse()?;
        let full = match ns.map(|n| n.trim().to_ascii_lowercase()) {
            None => repo,
            Some(ns) if self.self_hosts.read().unwrap_or_else(|p| p.into_inner()).contains(&ns) => repo,
            Some(ns) if self.route_for_host(&ns).is_some() => repo.with_prefix(&ns)?,
            Some(ns) => {
                return Err(RegistryError::new(
                    ErrorCode::NameUnknown,
                    format!("ns={ns} is not a configured upstream (add [upstreams.\"{ns}\"] to the config); Cove is not an open proxy"),
                ))
            }
        };
        Ok(normalize_docker_hub(full))
    }

    /// Where `repo`'s content comes from.
    pub fn route(&self, repo: &RepoName) -> Route {
        let host = repo.first_component();
        match (self.route_for_host(host), repo.strip_first_component()) {
            (Some(route), Some(remote)) => Route::Cached { route, remote },
            _ => Route::Private,
        }
    }

    /// Whether `repo` lies in an upstream's namespace.
    pub fn is_cached(&self, repo: &RepoName) -> bool {
        matches!(self.route(repo), Route::Cached { .. })
    }
}

/// Docker Hub's official images live under `library/`.
fn normalize_docker_hub(repo: RepoName) -> RepoName {
    if repo.first_component() == "docker.io" && repo.components().count() == 2 {
        if let Some(rest) = repo.strip_first_component() {
            if let Ok(r) = format!("docker.io/library/{rest}").parse() {
                return r;
            }
        }
    }
    repo
}
