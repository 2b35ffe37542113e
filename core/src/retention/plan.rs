//! Planning a retention run: which cached images each upstream's limits
//! evict, and which tags the tag policies remove, as [`Removal`]s that
//! [`super::evict`] carries out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::activity::TagTimes;
use super::{RetentionReport, RetentionRun, UpstreamPolicy, UpstreamUsage};
use crate::digest::Digest;
use crate::gc::inventory::{RepoInventory, Repos};
use crate::gc::{GcError, GcGuard};
use crate::name::RepoName;
use crate::storage::Storage;

/// Every repository as listed, with the upstream each caches (`None`:
/// private): the run's listing itself, not a copy of it (a map of 100,000
/// repositories is several MiB).
pub(super) struct Listed<'a> {
    listed: Arc<Repos>,
    upstream_of: &'a (dyn Fn(&RepoName) -> Option<String> + Send + Sync),
}

impl Listed<'_> {
    /// Every repository in name order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&RepoName, &RepoInventory)> {
        self.listed.iter()
    }

    pub(super) fn get(&self, repo: &RepoName) -> Option<&RepoInventory> {
        self.listed.get(repo)
    }

    /// The upstream `repo` caches (`None`: private).
    pub(super) fn upstream(&self, repo: &RepoName) -> Option<String> {
        (self.upstream_of)(repo)
    }
}

/// Every repository, as in GC's mark phase (and through the same kept
/// listings, [`crate::gc::inventory::Inventories`]): references decide
/// what is freed.
pub(super) async fn list_repositories<'a>(
    storage: &dyn Storage,
    guard: &GcGuard,
    upstream_of: &'a (dyn Fn(&RepoName) -> Option<String> + Send + Sync),
) -> Result<Listed<'a>, GcError> {
    let listing = guard.inventories.list(storage, guard.index().map(|i| i.as_ref())).await?;
    Ok(Listed { listed: listing.repos, upstream_of })
}

/// One cached image: a root manifest (tagged, or pulled by digest) with the
/// children of an index and the referrers belonging to it. Its last pull is
/// the latest over its members.
pub(super) struct CachedImage {
    pub(super) repo: RepoName,
    pub(super) digest: Digest,
    pub(super) members: HashSet<Digest>,
    pub(super) blobs: HashSet<Digest>,
    pub(super) last_pull: u64,
    /// A pinned tag points at it: counted, never evicted.
    pub(super) pinned: bool,
}

/// A planned cache eviction.
pub(super) struct Eviction {
    pub(super) host: String,
    pub(super) root: Digest,
    pub(super) reason: String,
    pub(super) idle_ms: u64,
    /// How much the upstream's cache size shrinks with it.
    pub(super) planned_bytes: u64,
}

/// What one step of the run deletes from one repository.
pub(super) struct Removal {
    pub(super) repo: RepoName,
    /// Manifests to delete (after the tags).
    pub(super) manifests: Vec<Digest>,
    pub(super) tags: Vec<String>,
    /// Set when the removal evicts a cached image.
    pub(super) evicted: Option<Eviction>,
}

/// How many of an upstream's cached images reference each blob and
/// manifest: an item's bytes are freed when its last image goes.
struct ReferenceCounts {
    blobs: HashMap<Digest, usize>,
    /// (count, manifest size) by (repository, manifest).
    manifests: HashMap<(RepoName, Digest), (usize, u64)>,
}

impl ReferenceCounts {
    fn of(repos: &Listed<'_>, images: &[CachedImage]) -> ReferenceCounts {
        ReferenceCounts::of_refs(repos, &images.iter().collect::<Vec<_>>())
    }

    fn of_refs(repos: &Listed<'_>, images: &[&CachedImage]) -> ReferenceCounts {
        let mut counts = ReferenceCounts { blobs: HashMap::new(), manifests: HashMap::new() };
        for image in images {
            for b in &image.blobs {
                *counts.blobs.entry(b.clone()).or_default() += 1;
            }
            for m in &image.members {
                let size = repos.get(&image.repo).and_then(|l| l.manifest(m)).map_or(0, |m| m.size());
                counts.manifests.entry((image.repo.clone(), m.clone())).or_insert((0, size)).0 += 1;
            }
        }
        counts
    }

    /// Distinct manifest and blob bytes of all the images.
    async fn total_bytes(&self, run: &RetentionRun<'_>) -> Result<u64, GcError> {
        let mut size = self.manifests.values().map(|(_, s)| *s).sum::<u64>();
        for b in self.blobs.keys() {
            size += run.sizes.get(run.storage, b).await?.unwrap_or(0);
        }
        Ok(size)
    }

    /// Drops `image`'s references, taking what only it held off `size`.
    async fn release(&mut self, image: &CachedImage, size: &mut u64, run: &RetentionRun<'_>) -> Result<(), GcError> {
        for b in &image.blobs {
            if let Some(n) = self.blobs.get_mut(b) {
                *n -= 1;
                if *n == 0 {
                    *size = size.saturating_sub(run.sizes.get(run.storage, b).await?.unwrap_or(0));
                }
            }
        }
        for m in &image.members {
            if let Some((n, s)) = self.manifests.get_mut(&(image.repo.clone(), m.clone())) {
                *n -= 1;
                if *n == 0 {
                    *size = size.saturating_sub(*s);
                }
            }
        }
        Ok(())
    }
}

impl RetentionRun<'_> {
    /// The cached images of upstream `host`, least recently pulled first.
    fn cached_images(&self, repos: &Listed<'_>, host: &str) -> Vec<CachedImage> {
        let mut images = Vec::new();
        for (repo, listed) in repos.iter().filter(|(r, _)| repos.upstream(r).as_deref() == Some(host)) {
            let children = listed.children();
            let tagged: HashSet<&Digest> = listed.tagged().collect();
            for m in listed.manifests() {
                let d = m.digest();
                let belongs_elsewhere =
                    children.contains(d) || m.subject().is_some_and(|s| listed.contains_manifest(s));
                if belongs_elsewhere && !tagged.contains(d) {
                    continue;
                }
                let members = listed.closure([d.clone()]);
                let last_pull = members
                    .iter()
                    .map(|m| self.activity.last_pull_or_seen(repo, m, self.now))
                    .max()
                    .unwrap_or(self.now);
                let pinned = listed.tags().any(|(t, td)| td == d && (self.opts.pinned)(repo, t));
                images.push(CachedImage {
                    repo: repo.clone(),
                    digest: d.clone(),
                    blobs: listed.blobs_of(&members),
                    members,
                    last_pull,
                    pinned,
                });
            }
        }
        images.sort_by(|a, b| {
            a.last_pull.cmp(&b.last_pull).then_with(|| a.digest.to_string().cmp(&b.digest.to_string()))
        });
        images
    }

    /// Applies one upstream's limits: images idle for longer than
    /// `max_age` go, then the least recently pulled until the cache fits in
    /// `max_size`; images in use stay. Adds the upstream's usage to
    /// `report` and returns the planned evictions.
    pub(super) async fn plan_upstream(
        &self,
        repos: &Listed<'_>,
        policy: &UpstreamPolicy,
        report: &mut RetentionReport,
    ) -> Result<Vec<(CachedImage, Eviction)>, GcError> {
        let images = self.cached_images(repos, &policy.host);
        let mut refs = ReferenceCounts::of(repos, &images);
        let mut size = refs.total_bytes(self).await?;
        let mut usage = UpstreamUsage {
            host: policy.host.clone(),
            images: images.len(),
            bytes_before: size,
            max_size: policy.max_size,
            ..Default::default()
        };
        let mut planned = Vec::new();
        for image in images {
            if image.pinned {
                continue;
            }
            let idle = self.now.saturating_sub(image.last_pull);
            let reason = if policy.max_age.is_some_and(|a| idle > a.as_millis() as u64) {
                "max_age"
            } else if policy.max_size.is_some_and(|m| size > m) {
                "max_size"
            } else {
                continue;
            };
            if idle <= self.grace_ms || image.blobs.iter().any(self.protect) {
                report.kept_in_use += 1;
                continue;
            }
            let size_before = size;
            refs.release(&image, &mut size, self).await?;
            usage.images -= 1;
            let eviction = Eviction {
                host: policy.host.clone(),
                root: image.digest.clone(),
                reason: reason.to_owned(),
                idle_ms: idle,
                planned_bytes: size_before - size,
            };
            planned.push((image, eviction));
        }
        usage.bytes = size;
        report.upstreams.push(usage);
        Ok(planned)
    }

    /// Plans evictions that free `need` bytes to get storage back above its
    /// floor: the least recently pulled cached images of every upstream
    /// (not already planned, not in use) go until their bytes add up.
    /// Only cached images are candidates: private images are never evicted.
    pub(super) async fn plan_free_space(
        &self,
        repos: &Listed<'_>,
        already: &[(CachedImage, Eviction)],
        need: u64,
        report: &mut RetentionReport,
    ) -> Result<Vec<(CachedImage, Eviction)>, GcError> {
        let planned: HashSet<(&RepoName, &Digest)> = already.iter().map(|(i, _)| (&i.repo, &i.digest)).collect();
        let hosts: BTreeSet<String> = repos.iter().filter_map(|(r, _)| repos.upstream(r)).collect();
        let mut images: Vec<(String, CachedImage)> = Vec::new();
        for host in &hosts {
            for image in self.cached_images(repos, host) {
                if !planned.contains(&(&image.repo, &image.digest)) {
                    images.push((host.clone(), image));
                }
            }
        }
        let order = free_space_order(images.iter().map(|(_, i)| (i.last_pull, i.digest.to_string())).collect());
        let mut slots: Vec<Option<(String, CachedImage)>> = images.into_iter().map(Some).collect();
        let all: Vec<&CachedImage> = slots.iter().flatten().map(|(_, i)| i).collect();
        let mut refs = ReferenceCounts::of_refs(repos, &all);
        let mut size = refs.total_bytes(self).await?;
        let mut freed = 0u64;
        let mut out = Vec::new();
        for idx in order {
            if freed >= need {
                break;
            }
            let Some((host, image)) = slots.get_mut(idx).and_then(Option::take) else { continue };
            if image.pinned {
                continue;
            }
            let idle = self.now.saturating_sub(image.last_pull);
            if idle <= self.grace_ms || image.blobs.iter().any(self.protect) {
                report.kept_in_use += 1;
                continue;
            }
            let before = size;
            refs.release(&image, &mut size, self).await?;
            freed += before - size;
            if let Some(u) = report.upstreams.iter_mut().find(|u| u.host == host) {
                u.images = u.images.saturating_sub(1);
                u.bytes = u.bytes.saturating_sub(before - size);
            }
            let eviction = Eviction {
                host,
                root: image.digest.clone(),
                reason: "min_free".to_owned(),
                idle_ms: idle,
                planned_bytes: before - size,
            };
            out.push((image, eviction));
        }
        if freed < need {
            tracing::warn!(need, freed, "retention cannot free enough cached images to get above storage.min_free");
        }
        Ok(out)
    }

    /// Adds the tag policies' removals to `removals`: per repository, the
    /// first matching policy keeps its newest and recently used tags; the
    /// others go with the manifests only they kept.
    pub(super) fn plan_tag_removals(
        &self,
        repos: &Listed<'_>,
        removals: &mut Vec<Removal>,
        report: &mut RetentionReport,
    ) {
        for (repo, listed) in repos.iter() {
            let Some(policy) = self.opts.tags.iter().find(|p| (p.matches)(repo)) else { continue };
            let mut tags: Vec<(String, Digest, TagTimes)> = listed
                .tags()
                .map(|(t, d)| (t.to_owned(), d.clone(), self.activity.tag_times_or_seen(repo, t, self.now)))
                .collect();
            tags.sort_by(|a, b| b.2.pushed.cmp(&a.2.pushed).then_with(|| a.0.cmp(&b.0)));
            let mut remove: Vec<(String, Digest)> = Vec::new();
            for (i, (tag, digest, times)) in tags.iter().enumerate() {
                let by_count = policy.keep_last.is_some_and(|n| i < n);
                let idle = self.now.saturating_sub(times.last_used());
                let by_pull = policy.keep_pulled_within.is_some_and(|w| idle <= w.as_millis() as u64);
                if by_count || by_pull {
                    continue;
                }
                if idle <= self.grace_ms {
                    report.kept_in_use += 1;
                    continue;
                }
                // Already going with an evicted image.
                if removals.iter().any(|r| &r.repo == repo && r.tags.contains(tag)) {
                    continue;
                }
                remove.push((tag.clone(), digest.clone()));
            }
            if !remove.is_empty() {
                removals.extend(tag_removals(repo, listed, remove, removals));
            }
        }
    }
}

/// The order in which free-space eviction considers images, given each
/// one's (last pull, digest): least recently pulled first, ties by digest.
/// Returns indices into the input.
pub(super) fn free_space_order(keys: Vec<(u64, String)>) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|a, b| keys[*a].cmp(&keys[*b]));
    idx
}

/// What the planned evictions delete: each image's members that no kept
/// image needs, and the tags pointing at its root.
pub(super) fn eviction_removals(repos: &Listed<'_>, planned: Vec<(CachedImage, Eviction)>) -> Vec<Removal> {
    let evicted_roots: HashSet<(RepoName, Digest)> =
        planned.iter().map(|(r, _)| (r.repo.clone(), r.digest.clone())).collect();
    let is_evicted_root = |repo: &RepoName, d: &Digest| evicted_roots.contains(&(repo.clone(), d.clone()));
    let mut removals = Vec::new();
    for (image, eviction) in planned {
        let Some(listed) = repos.get(&image.repo) else { continue };
        let kept_starts = listed
            .manifest_digests()
            .filter(|d| !image.members.contains(*d) && !is_evicted_root(&image.repo, d))
            .cloned();
        let kept_tags = listed.tagged().filter(|d| !is_evicted_root(&image.repo, d)).cloned();
        let still_needed = listed.closure(kept_starts.chain(kept_tags));
        let manifests: Vec<Digest> = image.members.iter().filter(|d| !still_needed.contains(*d)).cloned().collect();
        let tags: Vec<String> = listed.tags().filter(|(_, d)| **d == image.digest).map(|(t, _)| t.to_owned()).collect();
        removals.push(Removal { repo: image.repo.clone(), manifests, tags, evicted: Some(eviction) });
    }
    removals
}

/// One removal per digest the `remove`d tags of `repo` pointed at: its
/// tags, then the manifests that only removed tags kept (and that no
/// earlier removal already takes).
fn tag_removals(
    repo: &RepoName,
    listed: &RepoInventory,
    remove: Vec<(String, Digest)>,
    earlier: &[Removal],
) -> Vec<Removal> {
    let removed_tags: HashSet<&str> = remove.iter().map(|(t, _)| t.as_str()).collect();
    let targets: HashSet<Digest> = remove.iter().map(|(_, d)| d.clone()).collect();
    let already: HashSet<Digest> =
        earlier.iter().filter(|r| &r.repo == repo).flat_map(|r| r.manifests.iter().cloned()).collect();
    // Kept: remaining tags, and manifests no removed tag pointed at.
    let starts = listed
        .tags()
        .filter(|(t, _)| !removed_tags.contains(*t))
        .map(|(_, d)| d.clone())
        .chain(listed.manifest_digests().filter(|d| !targets.contains(*d) && !already.contains(*d)).cloned());
    let keep = listed.closure(starts);
    let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for (tag, digest) in &remove {
        by_digest.entry(digest.clone()).or_default().push(tag.clone());
    }
    let mut carried: HashSet<Digest> = HashSet::new();
    by_digest
        .into_iter()
        .map(|(digest, tags)| {
            let manifests: Vec<Digest> = listed
                .closure([digest])
                .into_iter()
                .filter(|d| !keep.contains(d) && !already.contains(d) && carried.insert(d.clone()))
                .collect();
            Removal { repo: repo.clone(), manifests, tags, evicted: None }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::free_space_order;

    #[test]
    fn free_space_eviction_takes_the_least_recently_pulled_first() {
        let keys = vec![(300, "c".to_owned()), (100, "b".to_owned()), (200, "a".to_owned()), (100, "a".to_owned())];
        assert_eq!(free_space_order(keys), vec![3, 1, 2, 0]);
        assert!(free_space_order(Vec::new()).is_empty());
    }
}
