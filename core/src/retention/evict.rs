//! Carrying out a retention plan: each [`Removal`] claims its manifests and
//! the blobs only it references from the [`GcGuard`](crate::gc::GcGuard),
//! checks nobody pulled them since the listing, and deletes tags, referrer
//! records, manifests and repository links. Blobs themselves are left to
//! the garbage collector's sweep.

use std::collections::HashSet;

use super::activity::now_ms;
use super::plan::{Eviction, Listed, Removal};
use super::{EvictedImage, RetentionReport, RetentionRun};
use crate::digest::Digest;
use crate::gc::inventory::RepoInventory;
use crate::gc::GcError;
use crate::name::{RepoName, Tag};

/// What the removals actually deleted (so the caches can forget it).
#[derive(Default)]
pub(super) struct Removed {
    pub(super) manifests: HashSet<(RepoName, Digest)>,
    pub(super) tags: HashSet<(RepoName, String)>,
    /// Blobs whose bytes were counted as freed.
    pub(super) counted_blobs: HashSet<Digest>,
}

impl RetentionRun<'_> {
    /// Carries out (or, in a dry run, reports) every removal.
    pub(super) async fn remove_all(
        &self,
        repos: &Listed<'_>,
        removals: Vec<Removal>,
        report: &mut RetentionReport,
    ) -> Result<Removed, GcError> {
        // Reference-aware bytes: a blob is freed only if no manifest outside
        // every removal references it.
        let removed_set: HashSet<(RepoName, Digest)> =
            removals.iter().flat_map(|r| r.manifests.iter().map(|d| (r.repo.clone(), d.clone()))).collect();
        let mut still_referenced: HashSet<Digest> = HashSet::new();
        for (repo, listed) in repos.iter() {
            for m in listed.manifests() {
                if !removed_set.contains(&(repo.clone(), m.digest().clone())) {
                    still_referenced.extend(m.blob_digests().cloned());
                }
            }
        }
        let mut removed = Removed::default();
        for removal in removals {
            let Some(listed) = repos.get(&removal.repo) else { continue };
            let blobs = listed.blobs_of(&removal.manifests);
            let exclusive: Vec<Digest> = blobs.iter().filter(|b| !still_referenced.contains(*b)).cloned().collect();
            let mut bytes: u64 = removal.manifests.iter().filter_map(|d| listed.manifest(d)).map(|m| m.size()).sum();
            for b in &exclusive {
                if removed.counted_blobs.insert(b.clone()) {
                    bytes += self.sizes.get(self.storage, b).await?.unwrap_or(0);
                }
            }
            if !self.opts.dry_run
                && !self.delete(listed, &removal, &blobs, &exclusive, &removed_set, &mut removed).await?
            {
                report.keep_in_use(&removal);
                continue;
            }
            report.record(removal, bytes, self.opts.dry_run);
        }
        Ok(removed)
    }

    /// Deletes one removal under claims on its manifests and exclusive
    /// blobs. `false`: it turned out to be in use and stays.
    async fn delete(
        &self,
        listed: &RepoInventory,
        removal: &Removal,
        blobs: &HashSet<Digest>,
        exclusive: &[Digest],
        removed_set: &HashSet<(RepoName, Digest)>,
        removed: &mut Removed,
    ) -> Result<bool, GcError> {
        let storage = self.storage;
        let repo = &removal.repo;
        crate::lease::FenceRef::check_opt(self.opts.fence.as_ref()).await.map_err(GcError::Fenced)?;
        let mut claimed: Vec<Digest> = removal.manifests.clone();
        claimed.extend(exclusive.iter().cloned());
        let Some(_claims) = self.guard.claim_all(&claimed, self.t0, self.opts.grace) else {
            return Ok(false);
        };
        if self.pulled_since_listing(removal) {
            return Ok(false);
        }
        for tag in &removal.tags {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            // Only if it still points where it did at the listing.
            if storage.tag_get(repo, &t).await? == listed.tag(tag).cloned() {
                storage.tag_delete(repo, &t).await?;
                removed.tags.insert((repo.clone(), tag.clone()));
            }
        }
        for d in &removal.manifests {
            if let Some(subject) = listed.manifest(d).and_then(|m| m.subject()) {
                storage.referrer_delete(repo, subject, d).await?;
            }
            storage.manifest_delete(repo, d).await?;
            removed.manifests.insert((repo.clone(), d.clone()));
        }
        // Links of blobs no remaining manifest of this repository uses.
        let repo_keeps: HashSet<Digest> = listed
            .manifests()
            .filter(|m| !removed_set.contains(&(repo.clone(), m.digest().clone())))
            .flat_map(|m| m.blob_digests().cloned())
            .collect();
        for b in blobs.iter().filter(|b| !repo_keeps.contains(*b)) {
            storage.blob_unlink(repo, b).await?;
        }
        Ok(true)
    }

    /// Whether a manifest or tag of `removal` was used within the grace
    /// period, judged now (a pull since the listing keeps it).
    fn pulled_since_listing(&self, removal: &Removal) -> bool {
        let recent = |t: u64| now_ms().saturating_sub(t) <= self.grace_ms;
        removal.manifests.iter().any(|d| self.activity.last_pull(&removal.repo, d).is_some_and(recent))
            || removal
                .tags
                .iter()
                .any(|t| self.activity.tag_times(&removal.repo, t).is_some_and(|x| recent(x.last_used())))
    }

    /// Bounded memory: the activity log and the size cache forget what no
    /// longer exists after the removals.
    pub(super) fn forget_removed(&self, repos: &Listed<'_>, removed: &Removed) {
        let mut live_manifests = HashSet::new();
        let mut live_tags = HashSet::new();
        let mut live_blobs = HashSet::new();
        for (repo, listed) in repos.iter() {
            for m in listed.manifests() {
                let d = m.digest();
                if !removed.manifests.contains(&(repo.clone(), d.clone())) {
                    live_manifests.insert((repo.clone(), d.clone()));
                    live_blobs.extend(m.blob_digests().cloned());
                }
            }
            for (t, _) in listed.tags() {
                if !removed.tags.contains(&(repo.clone(), t.to_owned())) {
                    live_tags.insert((repo.clone(), t.to_owned()));
                }
            }
        }
        self.activity.retain(&live_manifests, &live_tags);
        for b in removed.counted_blobs.iter().filter(|b| !live_blobs.contains(*b)) {
            self.sizes.forget(b);
        }
        self.sizes.retain(&live_blobs);
    }
}

impl RetentionReport {
    /// A planned removal found in use at the last moment: it stays.
    fn keep_in_use(&mut self, removal: &Removal) {
        self.kept_in_use += 1;
        if let Some(e) = &removal.evicted {
            if let Some(u) = self.upstreams.iter_mut().find(|u| u.host == e.host) {
                u.images += 1;
                u.bytes += e.planned_bytes;
            }
        }
    }

    /// Reports a removal carried out (or, in a dry run, planned) that
    /// frees `bytes`.
    fn record(&mut self, removal: Removal, bytes: u64, dry_run: bool) {
        self.bytes_freed += bytes;
        for tag in &removal.tags {
            self.tags_removed.push(format!("{}:{tag}", removal.repo));
        }
        for d in &removal.manifests {
            self.manifests_removed.push(format!("{}@{d}", removal.repo));
        }
        if let Some(Eviction { host, root: digest, reason, idle_ms: idle, .. }) = removal.evicted {
            tracing::info!(upstream = %host, repo = %removal.repo, %digest, %reason, bytes, dry_run,
                "retention: evicted cached image");
            if let Some(u) = self.upstreams.iter_mut().find(|u| u.host == host) {
                u.evicted_images += 1;
                u.evicted_bytes += bytes;
            }
            self.evicted.push(EvictedImage {
                upstream: host,
                repository: removal.repo.to_string(),
                digest: digest.to_string(),
                tags: removal.tags,
                manifests: removal.manifests.len(),
                bytes,
                idle_seconds: idle / 1000,
                reason,
            });
        } else {
            tracing::info!(repo = %removal.repo, tags = ?removal.tags, manifests = removal.manifests.len(),
                dry_run, "retention: removed tag");
        }
    }
}
