//! Which upstream a repository belongs to: cached names live under their
//! origin host (`docker.io/library/nginx`), and containerd's `ns=` names
//! the host for a mirror request.
//!
//! In Docker Hub mirror mode ([`NameRules::default_upstream`]) a name with
//! neither an upstream prefix nor an upstream `ns=` (what Docker Engine's
//! `registry-mirrors` sends: `/v2/library/nginx/…`) belongs to that
//! upstream, unless its first component is one of the declared
//! [`NameRules::private_prefixes`]. The rule depends on the name alone,
//! never on what storage holds, so a private push cannot shadow an upstream
//! image: outside the private prefixes such a name is the upstream's, and
//! cached namespaces are pull-only.

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
    /// Below this many remaining pulls (the upstream's `ratelimit-remaining`)
    /// cached tags are not revalidated and nothing is prefetched, so the
    /// rest of the budget goes to images not cached yet; 0 turns it off.
    pub ratelimit_floor: u64,
}

/// How request names map to stored names, besides the upstream prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameRules {
    /// Host names that mean Cove itself in containerd's `ns=`.
    pub self_hosts: Vec<String>,
    /// Docker Hub mirror mode: the upstream host that owns names with no
    /// upstream prefix and no upstream `ns=` (off when `None`).
    pub default_upstream: Option<String>,
    /// In that mode, the first name components that stay private.
    pub private_prefixes: Vec<String>,
}

impl NameRules {
    pub(super) fn normalized(mut self) -> Self {
        for h in self.self_hosts.iter_mut().chain(self.default_upstream.iter_mut()) {
            *h = h.to_ascii_lowercase();
        }
        self
    }
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
        // Read under the lock, not cloned: this runs on every repository request.
        let rules = self.names.read().unwrap_or_else(|p| p.into_inner());
        let full = match ns.map(|n| n.trim().to_ascii_lowercase()) {
            None => self.unqualified(repo, &rules)?,
            Some(ns) if rules.self_hosts.contains(&ns) => self.unqualified(repo, &rules)?,
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

    /// A name that no `ns=` qualified: its own, unless Docker Hub mirror
    /// mode gives it to the default upstream.
    fn unqualified(&self, repo: RepoName, rules: &NameRules) -> Result<RepoName> {
        let Some(default) = &rules.default_upstream else {
            return Ok(repo);
        };
        let first = repo.first_component();
        if self.route_for_host(first).is_some() || rules.private_prefixes.iter().any(|p| p == first) {
            return Ok(repo);
        }
        repo.with_prefix(default)
    }

    /// Replaces the naming rules (config reload).
    pub fn set_name_rules(&self, rules: NameRules) {
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = rules.normalized();
    }

    /// The naming rules in force.
    pub fn name_rules(&self) -> NameRules {
        self.names.read().unwrap_or_else(|p| p.into_inner()).clone()
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
