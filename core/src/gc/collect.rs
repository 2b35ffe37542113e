//! One collection run: list everything (mark), remove untagged manifests
//! when asked, sweep blobs nothing references, expire upload sessions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::inventory::{RepoInventory, Repos};
use super::{GcError, GcGuard, GcOptions, GcReport};
use crate::digest::Digest;
use crate::name::{RepoName, Tag};
use crate::storage::{Storage, StorageError};

/// Runs one collection over `storage` (normally the
/// [`GuardedStorage`](super::GuardedStorage) that serves requests).
/// `protect` names digests that must stay whatever their references say
/// (blobs in an upstream fetch).
pub async fn collect(
    storage: &dyn Storage,
    guard: &Arc<GcGuard>,
    protect: &(dyn Fn(&Digest) -> bool + Send + Sync),
    opts: &GcOptions,
) -> Result<GcReport, GcError> {
    let running = guard.run_lock.lock().await;
    collect_locked(storage, guard, protect, opts, &running).await
}

/// [`collect`] for a caller already holding [`GcGuard::lock_runs`] (retention
/// runs its blob sweep inside its own exclusive run).
pub async fn collect_locked(
    storage: &dyn Storage,
    guard: &Arc<GcGuard>,
    protect: &(dyn Fn(&Digest) -> bool + Send + Sync),
    opts: &GcOptions,
    _running: &tokio::sync::MutexGuard<'_, ()>,
) -> Result<GcReport, GcError> {
    let started = Instant::now();
    let requests_before = storage.store_requests();
    guard.prune(opts.grace);
    let run = Collection { storage, guard, opts, t0: Instant::now() };
    let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };

    // Mark: every manifest of every repository, as listed after t0 (those
    // unchanged since the last run: as listed then; see `Inventories`).
    let listing = guard.inventories.list(storage, guard.index().map(|i| i.as_ref())).await?;
    report.repositories = listing.repos.len();
    report.repositories_listed = listing.relisted;
    report.full_listing = listing.full;
    report.manifests = listing.repos.values().map(RepoInventory::manifest_count).sum();
    let listed = listing.repos;
    let removed = if opts.untagged { run.remove_untagged(&listed, &mut report).await? } else { HashSet::new() };
    let mut referenced: HashMap<Digest, u64> = HashMap::new();
    for (repo, inv) in listed.iter() {
        for m in inv.manifests() {
            if !removed.contains(&(repo.clone(), m.digest().clone())) {
                referenced.extend(m.blobs().map(|(d, size)| (d.clone(), size)));
            }
        }
    }
    run.sweep_blobs(&referenced, protect, &mut report).await?;
    if let Some(ttl) = opts.upload_ttl {
        run.expire_uploads(ttl, &mut report).await?;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.store_requests = storage.store_requests().zip(requests_before).map(|(now, before)| now.since(&before));
    tracing::info!(
        dry_run = opts.dry_run,
        store_requests = report.store_requests.map(|r| r.total()),
        blobs_removed = report.blobs_removed.len(),
        bytes_freed = report.bytes_freed,
        manifests_removed = report.manifests_removed.len(),
        uploads_removed = report.uploads_removed.len(),
        kept_recent = report.blobs_kept_recent,
        ms = report.duration_ms,
        "garbage collection finished"
    );
    Ok(report)
}

/// One run's fixed inputs.
struct Collection<'a> {
    storage: &'a dyn Storage,
    guard: &'a Arc<GcGuard>,
    opts: &'a GcOptions,
    /// When the run started: digests touched since then stay.
    t0: Instant,
}

impl Collection<'_> {
    /// Before each deletion: the run's fence (its lease) must still hold.
    async fn fence(&self) -> Result<(), GcError> {
        crate::lease::FenceRef::check_opt(self.opts.fence.as_ref()).await.map_err(GcError::Fenced)
    }

    /// Removes manifests that are not tagged, not a child of an index in
    /// the same repository and not a referrer. Returns those removed (or,
    /// in a dry run, that would be).
    async fn remove_untagged(
        &self,
        listed: &Repos,
        report: &mut GcReport,
    ) -> Result<HashSet<(RepoName, Digest)>, GcError> {
        let (storage, guard, opts, t0) = (self.storage, self.guard, self.opts, self.t0);
        let mut removed = HashSet::new();
        for (repo, inv) in listed {
            let children = inv.children();
            let tagged: HashSet<&Digest> = inv.tagged().collect();
            for m in inv.manifests() {
                let digest = m.digest();
                if tagged.contains(digest) || children.contains(digest) || m.subject().is_some() {
                    continue;
                }
                let name = format!("{repo}@{digest}");
                if opts.dry_run {
                    if guard.would_claim(digest, t0, opts.grace) {
                        report.manifests_removed.push(name);
                        removed.insert((repo.clone(), digest.clone()));
                    }
                    continue;
                }
                self.fence().await?;
                let Some(_claim) = guard.claim(digest, t0, opts.grace) else { continue };
                // A tag may have arrived since the listing.
                if tag_points_at(storage, repo, digest).await? {
                    continue;
                }
                if storage.manifest_delete(repo, digest).await? {
                    tracing::info!(%repo, %digest, "gc: removed untagged manifest");
                    report.manifests_removed.push(name);
                }
                removed.insert((repo.clone(), digest.clone()));
            }
        }
        Ok(removed)
    }

    /// Deletes every blob that is neither `referenced` nor protected nor in
    /// use.
    async fn sweep_blobs(
        &self,
        referenced: &HashMap<Digest, u64>,
        protect: &(dyn Fn(&Digest) -> bool + Send + Sync),
        report: &mut GcReport,
    ) -> Result<(), GcError> {
        let (storage, guard, opts, t0) = (self.storage, self.guard, self.opts, self.t0);
        let blobs = storage.blob_list().await?;
        report.blobs = blobs.len();
        for digest in blobs {
            if let Some(size) = referenced.get(&digest) {
                report.bytes_referenced += size;
                continue;
            }
            if protect(&digest) {
                report.blobs_kept_recent += 1;
                continue;
            }
            if opts.dry_run {
                if guard.would_claim(&digest, t0, opts.grace) {
                    let size = storage.blob_size(&digest).await?.unwrap_or(0);
                    report.bytes_freed += size;
                    report.blobs_removed.push((digest.to_string(), size));
                } else {
                    report.blobs_kept_recent += 1;
                }
                continue;
            }
            self.fence().await?;
            let Some(_claim) = guard.claim(&digest, t0, opts.grace) else {
                report.blobs_kept_recent += 1;
                continue;
            };
            let size = storage.blob_size(&digest).await?.unwrap_or(0);
            if storage.blob_delete(&digest).await? {
                tracing::debug!(%digest, bytes = size, "gc: removed unreferenced blob");
                report.bytes_freed += size;
                report.blobs_removed.push((digest.to_string(), size));
            }
        }
        Ok(())
    }

    /// Aborts upload sessions idle for longer than `ttl`.
    async fn expire_uploads(&self, ttl: std::time::Duration, report: &mut GcReport) -> Result<(), GcError> {
        let now = SystemTime::now();
        for info in self.storage.upload_list().await? {
            if now.duration_since(info.updated).unwrap_or_default() > ttl {
                if !self.opts.dry_run {
                    self.fence().await?;
                    match self.storage.upload_abort(&info.id).await {
                        Ok(()) | Err(StorageError::UploadUnknown) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                report.uploads_removed.push(info.id);
            }
        }
        Ok(())
    }
}

async fn tag_points_at(storage: &dyn Storage, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
    for tag in storage.tag_list(repo).await?.unwrap_or_default() {
        let Ok(tag) = tag.parse::<Tag>() else { continue };
        if storage.tag_get(repo, &tag).await?.as_ref() == Some(digest) {
            return Ok(true);
        }
    }
    Ok(false)
}
