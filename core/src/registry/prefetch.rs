//! Keep-warm: pulling images into the cache before anyone asks for them
//! (`[[prefetch]]` entries on a schedule, `cove prefetch REF…`). A
//! prefetched image is fetched exactly as a client's pull would fetch it
//! (manifests through the cache's tag policy, blobs through the
//! single-flight spool), so it is an ordinary cached image. Prefetching
//! pauses while an upstream's rate-limit headroom is below its floor.

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Registry;
use crate::cache::CachedRepo;
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::manifest::{parse_manifest, Descriptor};
use crate::name::{Reference, RepoName};

/// A platform of a multi-platform index: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => {
                Ok(Platform { os: (*os).to_owned(), architecture: (*arch).to_owned(), variant: None })
            }
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => {
                Ok(Platform { os: (*os).to_owned(), architecture: (*arch).to_owned(), variant: Some((*v).to_owned()) })
            }
            _ => Err(format!("{s:?} is not a platform; use os/architecture[/variant], e.g. linux/arm64/v8")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Whether an index entry's `platform` is this one (a variant asked for
    /// must match; none asked for matches any).
    fn matches(&self, platform: Option<&serde_json::Value>) -> bool {
        let Some(p) = platform else { return false };
        let field = |k: &str| p.get(k).and_then(|v| v.as_str());
        field("os") == Some(self.os.as_str())
            && field("architecture") == Some(self.architecture.as_str())
            && self.variant.as_deref().is_none_or(|v| field("variant") == Some(v))
    }
}

/// Which manifests of a repository to prefetch.
pub enum PrefetchTarget {
    /// One tag or digest.
    Reference(Reference),
    /// Every upstream tag the predicate accepts (a tag pattern).
    Tags(Box<dyn Fn(&str) -> bool + Send + Sync>),
}

/// One prefetch: a cached repository, what of it, which platforms of an
/// index (all when empty).
pub struct PrefetchRequest {
    pub repo: RepoName,
    pub target: PrefetchTarget,
    pub platforms: Vec<Platform>,
}

/// What a prefetch reports as it goes (one JSON line each on the admin API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PrefetchEvent {
    /// A manifest resolved (`cache`: how it was served).
    Manifest { repository: String, reference: String, digest: String, cache: String },
    /// A blob: fetched from upstream now, or already cached.
    Blob { digest: String, size: u64, fetched: bool },
    /// Something failed; the prefetch goes on with the rest.
    Error { repository: String, reference: String, message: String },
    /// Stopped: the upstream's rate-limit headroom is below its floor.
    Paused { upstream: String, reason: String },
}

/// The outcome of one or more prefetches.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Root manifests (tags or digests) resolved.
    pub images: u64,
    /// Manifests resolved, platform manifests included.
    pub manifests: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
    /// Blobs already cached.
    pub blobs_cached: u64,
    pub errors: u64,
    /// Stopped early for rate-limit headroom.
    pub paused: bool,
}

impl PrefetchReport {
    /// Adds `other`'s counts to this one.
    pub fn add(&mut self, other: &PrefetchReport) {
        self.images += other.images;
        self.manifests += other.manifests;
        self.blobs_fetched += other.blobs_fetched;
        self.bytes_fetched += other.bytes_fetched;
        self.blobs_cached += other.blobs_cached;
        self.errors += other.errors;
        self.paused |= other.paused;
    }
}

/// Where progress goes.
pub type Progress<'a> = &'a (dyn Fn(PrefetchEvent) + Send + Sync);

impl Registry {
    /// Pulls what `req` names into the cache; failures are reported as
    /// events and counted, never returned. `Err` only for a repository that
    /// is not in an upstream's namespace.
    pub async fn prefetch(&self, req: &PrefetchRequest, progress: Progress<'_>) -> Result<PrefetchReport> {
        let Some((cache, route, remote)) = self.cached_route(&req.repo) else {
            return Err(RegistryError::new(
                ErrorCode::NameInvalid,
                format!("{} is not in an upstream's namespace: only cached images can be prefetched", req.repo),
            ));
        };
        let mut report = PrefetchReport::default();
        let references: Vec<Reference> = match &req.target {
            PrefetchTarget::Reference(r) => vec![r.clone()],
            PrefetchTarget::Tags(accept) => {
                if cache.low_headroom(&route) {
                    return Ok(paused(&route.host, progress));
                }
                let at = CachedRepo { storage: &self.storage, route: &route, remote: &remote, repo: &req.repo };
                match cache.tags(at).await {
                    Ok(tags) => {
                        tags.iter().filter(|t| accept(t)).filter_map(|t| t.parse().ok()).map(Reference::Tag).collect()
                    }
                    Err(e) => {
                        report.errors += 1;
                        progress(PrefetchEvent::Error {
                            repository: req.repo.to_string(),
                            reference: "(tag list)".into(),
                            message: e.message,
                        });
                        return Ok(report);
                    }
                }
            }
        };
        for reference in references {
            if cache.low_headroom(&route) {
                report.add(&paused(&route.host, progress));
                break;
            }
            self.prefetch_one(&req.repo, &reference, &req.platforms, &mut report, progress).await;
        }
        Ok(report)
    }

    /// One root manifest: it, the platform manifests of an index that
    /// `platforms` selects, and their blobs.
    async fn prefetch_one(
        &self,
        repo: &RepoName,
        reference: &Reference,
        platforms: &[Platform],
        report: &mut PrefetchReport,
        progress: Progress<'_>,
    ) {
        let fail = |report: &mut PrefetchReport, reference: &str, e: &RegistryError| {
            report.errors += 1;
            tracing::warn!(%repo, reference, error = %e.message, "prefetch failed");
            progress(PrefetchEvent::Error {
                repository: repo.to_string(),
                reference: reference.to_owned(),
                message: e.message.clone(),
            });
        };
        let mut todo: Vec<(Reference, bool)> = vec![(reference.clone(), true)];
        while let Some((r, root)) = todo.pop() {
            let (m, cache) = match self.get_manifest(repo, &r).await {
                Ok(x) => x,
                Err(e) => {
                    fail(report, &r.to_string(), &e);
                    continue;
                }
            };
            report.manifests += 1;
            report.images += u64::from(root);
            progress(PrefetchEvent::Manifest {
                repository: repo.to_string(),
                reference: r.to_string(),
                digest: m.digest.to_string(),
                cache: cache.map_or("private", |c| c.as_str()).to_owned(),
            });
            let parsed = match parse_manifest(&m.bytes, Some(&m.media_type)) {
                Ok(p) => p,
                Err(e) => {
                    fail(report, &r.to_string(), &e);
                    continue;
                }
            };
            if parsed.is_index() {
                let wanted =
                    |d: &Descriptor| platforms.is_empty() || platforms.iter().any(|p| p.matches(d.platform.as_ref()));
                for child in parsed.manifests.iter().filter(|d| wanted(d)) {
                    todo.push((Reference::Digest(child.digest.clone()), false));
                }
                continue;
            }
            for blob in parsed.required_blobs() {
                if let Err(e) = self.prefetch_blob(repo, &blob.digest, report, progress).await {
                    fail(report, &blob.digest.to_string(), &e);
                }
            }
        }
    }

    /// Fetches one blob into the cache unless it is there already.
    async fn prefetch_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        report: &mut PrefetchReport,
        progress: Progress<'_>,
    ) -> Result<()> {
        if self.storage.blob_linked(repo, digest).await? {
            let size = self.storage.blob_size(digest).await?.unwrap_or(0);
            report.blobs_cached += 1;
            progress(PrefetchEvent::Blob { digest: digest.to_string(), size, fetched: false });
            return Ok(());
        }
        let (mut b, _) = self.get_blob(repo, digest, None, false).await?;
        let mut size = 0u64;
        while let Some(chunk) = b.body.next().await {
            let chunk = chunk.map_err(|e| RegistryError::new(ErrorCode::Unavailable, format!("blob {digest}: {e}")))?;
            size += chunk.len() as u64;
        }
        // The fetch commits the blob just after its last byte went out:
        // wait for that, so a finished prefetch means a cached image.
        if let Some(cache) = &self.cache {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while cache.is_fetching(digest) && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        report.blobs_fetched += 1;
        report.bytes_fetched += size;
        progress(PrefetchEvent::Blob { digest: digest.to_string(), size, fetched: true });
        Ok(())
    }
}

fn paused(host: &str, progress: Progress<'_>) -> PrefetchReport {
    tracing::info!(upstream = %host, "prefetch paused: rate-limit headroom below ratelimit_floor");
    progress(PrefetchEvent::Paused {
        upstream: host.to_owned(),
        reason: format!("rate-limit headroom of {host} is below upstreams.\"{host}\".ratelimit_floor"),
    });
    PrefetchReport { paused: true, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p: Platform = "linux/arm64/v8".parse().expect("platform");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.matches(Some(&serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"}))));
        assert!(!p.matches(Some(&serde_json::json!({"os": "linux", "architecture": "arm64"}))));
        let any_variant: Platform = "linux/arm64".parse().expect("platform");
        assert!(
            any_variant.matches(Some(&serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})))
        );
        assert!(!any_variant.matches(Some(&serde_json::json!({"os": "linux", "architecture": "amd64"}))));
        assert!(!any_variant.matches(None));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }
}
