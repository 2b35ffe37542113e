//! Online garbage collection: removes blobs no manifest references,
//! (optionally) untagged manifests, and expired upload sessions, while the
//! registry keeps serving.
//!
//! # Why it is safe while serving
//! Every write path goes through [`GuardedStorage`], which tells the shared
//! [`GcGuard`] about each digest it uses: a digest is *pinned* while an
//! operation that makes it reachable runs (blob write, upload commit, link,
//! manifest put, tag put) and *touched* (timestamped) when it ends; a
//! successful `blob_linked` check (what the engine does before accepting a
//! manifest) touches the digest too. A collection run starting at `t0` deletes
//! a digest only if it is
//! - not reachable from any manifest listed after `t0`,
//! - not pinned, not touched since `t0` and not touched within `grace`,
//! - not in an upstream fetch (the caller's `protect` predicate),
//! - and the process has been up for longer than `grace` (ages of digests
//!   written before the process started are unknown: a restart must not
//!   expose a blob pushed just before it).
//!
//! The check and the claim happen under one lock; a writer touching a digest
//! that is being deleted waits until the deletion finished, and then writes
//! it again. So a manifest that lands during a run either was listed by the
//! mark phase, or pinned/touched its blobs after `t0`.
//!
//! One process must own the storage for this argument to hold: several Cove
//! replicas sharing one bucket must not run GC (see `[gc] enabled`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::digest::Digest;
use crate::manifest::{parse_manifest, Descriptor};
use crate::name::{RepoName, Tag};
use crate::storage::{ByteRange, ByteStream, Storage, StorageError, StoredManifest, UploadInfo};

/// Coordination between writers and garbage collection (see the module docs).
pub struct GcGuard {
    /// Untracked digests count as touched at this instant (process start);
    /// `None` for an offline run against storage nobody else writes.
    floor: Option<Instant>,
    state: Mutex<GuardState>,
    released: tokio::sync::Notify,
    /// One collection at a time.
    run_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct GuardState {
    touched: HashMap<Digest, Instant>,
    pinned: HashMap<Digest, usize>,
    deleting: HashSet<Digest>,
}

impl GcGuard {
    /// A guard for a serving process: nothing is collected until the process
    /// has run for longer than the grace period.
    pub fn new() -> Arc<GcGuard> {
        Arc::new(GcGuard::with_floor(Some(Instant::now())))
    }

    /// A guard for an offline run (`cove gc` with the server stopped): only
    /// references decide, since nobody else writes.
    pub fn offline() -> Arc<GcGuard> {
        Arc::new(GcGuard::with_floor(None))
    }

    fn with_floor(floor: Option<Instant>) -> GcGuard {
        GcGuard {
            floor,
            state: Mutex::new(GuardState::default()),
            released: tokio::sync::Notify::new(),
            run_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `digests` until the returned value is dropped (which touches
    /// them). Waits while any of them is being deleted.
    pub async fn pin(self: &Arc<Self>, digests: Vec<Digest>) -> Pin {
        loop {
            let notified = {
                let mut st = self.lock();
                if digests.iter().all(|d| !st.deleting.contains(d)) {
                    for d in &digests {
                        *st.pinned.entry(d.clone()).or_default() += 1;
                    }
                    return Pin { guard: self.clone(), digests };
                }
                // Created under the lock: it receives the wake-up of a
                // deletion that ends right after we unlock.
                self.released.notified()
            };
            notified.await;
        }
    }

    /// Records that `digest` was used just now.
    pub fn touch(&self, digest: &Digest) {
        self.lock().touched.insert(digest.clone(), Instant::now());
    }

    /// Whether `digest` may be deleted by a run that started at `t0`.
    fn collectable(&self, st: &GuardState, digest: &Digest, t0: Instant, grace: Duration, now: Instant) -> bool {
        if st.pinned.contains_key(digest) || st.deleting.contains(digest) {
            return false;
        }
        if self.floor.is_some_and(|f| now.duration_since(f) <= grace) {
            return false;
        }
        match st.touched.get(digest) {
            Some(t) => *t < t0 && now.duration_since(*t) > grace,
            None => true,
        }
    }

    /// Claims `digest` for deletion if it is collectable; writers wait until
    /// the claim is dropped.
    fn claim(self: &Arc<Self>, digest: &Digest, t0: Instant, grace: Duration) -> Option<Claim> {
        let mut st = self.lock();
        if !self.collectable(&st, digest, t0, grace, Instant::now()) {
            return None;
        }
        st.deleting.insert(digest.clone());
        Some(Claim { guard: self.clone(), digest: digest.clone() })
    }

    /// Claims every digest of `digests` for deletion by a run that started
    /// at `t0`, or none when any is not collectable (used by retention,
    /// issue 7). Writers of them wait until the returned value is dropped.
    pub fn claim_all(self: &Arc<Self>, digests: &[Digest], t0: Instant, grace: Duration) -> Option<Claims> {
        let mut st = self.lock();
        let now = Instant::now();
        if digests.iter().any(|d| !self.collectable(&st, d, t0, grace, now)) {
            return None;
        }
        let mut unique: Vec<Digest> = digests.to_vec();
        unique.sort_by_key(|d| d.to_string());
        unique.dedup();
        for d in &unique {
            st.deleting.insert(d.clone());
        }
        Some(Claims { guard: self.clone(), digests: unique })
    }

    /// Whether `digest` would be claimed now (dry runs).
    fn would_claim(&self, digest: &Digest, t0: Instant, grace: Duration) -> bool {
        let st = self.lock();
        self.collectable(&st, digest, t0, grace, Instant::now())
    }

    /// Forgets touches that can no longer protect anything.
    fn prune(&self, grace: Duration) {
        let now = Instant::now();
        self.lock().touched.retain(|_, t| now.duration_since(*t) <= grace);
    }

    /// Holds off every other collection (and retention run, issue 7) until
    /// the returned guard is dropped; pass it to [`collect_locked`].
    pub async fn lock_runs(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.run_lock.lock().await
    }

    /// How many digests are tracked (touched or pinned), for metrics.
    pub fn tracked(&self) -> usize {
        let st = self.lock();
        st.touched.len() + st.pinned.len()
    }
}

/// Digests pinned by a write in progress; touched when dropped.
pub struct Pin {
    guard: Arc<GcGuard>,
    digests: Vec<Digest>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut st = self.guard.lock();
        for d in &self.digests {
            if let Some(n) = st.pinned.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    st.pinned.remove(d);
                }
            }
            st.touched.insert(d.clone(), now);
        }
    }
}

/// A digest being deleted; writers of it wait until this is dropped.
struct Claim {
    guard: Arc<GcGuard>,
    digest: Digest,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.guard.lock().deleting.remove(&self.digest);
        self.guard.released.notify_waiters();
    }
}

/// Digests claimed by [`GcGuard::claim_all`]; released when dropped.
pub struct Claims {
    guard: Arc<GcGuard>,
    digests: Vec<Digest>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        let mut st = self.guard.lock();
        for d in &self.digests {
            st.deleting.remove(d);
        }
        drop(st);
        self.guard.released.notify_waiters();
    }
}

/// A [`Storage`] wrapper that reports every digest a write makes reachable
/// to a [`GcGuard`]. Reads pass straight through.
pub struct GuardedStorage {
    inner: Arc<dyn Storage>,
    guard: Arc<GcGuard>,
}

impl GuardedStorage {
    /// Wraps `inner`; the same `guard` must be given to [`collect`].
    pub fn new(inner: Arc<dyn Storage>, guard: Arc<GcGuard>) -> GuardedStorage {
        GuardedStorage { inner, guard }
    }

    /// The guard shared with garbage collection.
    pub fn guard(&self) -> &Arc<GcGuard> {
        &self.guard
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
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn check(&self) -> Result<(), StorageError> {
        self.inner.check().await
    }
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        self.inner.blob_size(digest).await
    }
    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        self.inner.blob_read(digest, range).await
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
        // Waits out a deletion in progress (retention, issue 7): a reader
        // then either sees the blob gone or touches it before any claim, so
        // a blob found linked is not deleted under the read that follows.
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
        self.inner.manifest_put(repo, digest, m).await
    }
    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StorageError> {
        self.inner.manifest_get(repo, digest).await
    }
    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        self.inner.manifest_delete(repo, digest).await
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
        self.inner.tag_put(repo, tag, digest).await
    }
    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        self.inner.tag_delete(repo, tag).await
    }
    async fn tag_list(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        self.inner.tag_list(repo).await
    }
    async fn repo_list(&self) -> Result<Vec<RepoName>, StorageError> {
        self.inner.repo_list().await
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

/// What a collection run does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Nothing touched more recently than this is removed.
    pub grace: Duration,
    /// Also remove manifests that no tag, index or `subject` relation keeps.
    pub untagged: bool,
    /// Remove upload sessions idle for longer than this.
    pub upload_ttl: Option<Duration>,
    /// Report what would be removed without removing anything.
    pub dry_run: bool,
}

/// The outcome of a collection run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests: usize,
    pub blobs: usize,
    /// Bytes of the distinct blobs still referenced by manifests after the
    /// run (from the manifests' descriptors; blobs kept only because they
    /// are recent are not included).
    #[serde(default)]
    pub bytes_referenced: u64,
    /// Blobs removed (or that would be), with their sizes.
    pub blobs_removed: Vec<(String, u64)>,
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they were recent or in use.
    pub blobs_kept_recent: usize,
    /// Untagged manifests removed (`repository@digest`).
    pub manifests_removed: Vec<String>,
    /// Upload session ids removed.
    pub uploads_removed: Vec<String>,
    pub duration_ms: u64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored manifest does not parse: what it references is unknown, so
    /// nothing is removed.
    #[error("manifest {repo}@{digest} cannot be parsed ({reason}); nothing removed")]
    Unparsable { repo: RepoName, digest: Digest, reason: String },
}

struct RepoManifest {
    digest: Digest,
    /// Config and layers, with the sizes their descriptors give.
    refs_blobs: Vec<(Digest, u64)>,
    children: Vec<Digest>,
    has_subject: bool,
}

/// Runs one collection over `storage` (normally the [`GuardedStorage`] that
/// serves requests). `protect` names digests that must stay whatever their
/// references say (blobs in an upstream fetch).
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
    guard.prune(opts.grace);
    let t0 = Instant::now();
    let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };

    // Mark: every manifest of every repository, listed after t0.
    let repos = storage.repo_list().await?;
    report.repositories = repos.len();
    let mut per_repo: BTreeMap<RepoName, (Vec<RepoManifest>, HashSet<Digest>)> = BTreeMap::new();
    for repo in repos {
        let mut manifests = Vec::new();
        for digest in storage.manifest_list(&repo).await? {
            let Some(m) = storage.manifest_get(&repo, &digest).await? else {
                continue; // deleted meanwhile
            };
            let p = parse_manifest(&m.bytes, Some(&m.media_type)).map_err(|e| GcError::Unparsable {
                repo: repo.clone(),
                digest: digest.clone(),
                reason: e.message.clone(),
            })?;
            manifests.push(RepoManifest {
                refs_blobs: p.config.iter().chain(&p.layers).map(|d| (d.digest.clone(), d.size)).collect(),
                children: p.manifests.iter().map(|d| d.digest.clone()).collect(),
                has_subject: p.subject.is_some(),
                digest,
            });
        }
        let mut tagged = HashSet::new();
        for tag in storage.tag_list(&repo).await?.unwrap_or_default() {
            let Ok(tag) = tag.parse::<Tag>() else { continue };
            if let Some(d) = storage.tag_get(&repo, &tag).await? {
                tagged.insert(d);
            }
        }
        report.manifests += manifests.len();
        per_repo.insert(repo, (manifests, tagged));
    }

    // Untagged manifests: not tagged, not a child of an index in the same
    // repository, not a referrer.
    let mut removed_manifests: HashSet<(RepoName, Digest)> = HashSet::new();
    if opts.untagged {
        for (repo, (manifests, tagged)) in &per_repo {
            let children: HashSet<&Digest> = manifests.iter().flat_map(|m| &m.children).collect();
            for m in manifests {
                if tagged.contains(&m.digest) || children.contains(&m.digest) || m.has_subject {
                    continue;
                }
                let name = format!("{repo}@{}", m.digest);
                if opts.dry_run {
                    if guard.would_claim(&m.digest, t0, opts.grace) {
                        report.manifests_removed.push(name);
                        removed_manifests.insert((repo.clone(), m.digest.clone()));
                    }
                    continue;
                }
                let Some(_claim) = guard.claim(&m.digest, t0, opts.grace) else { continue };
                // A tag may have arrived since the listing.
                let retagged = tag_points_at(storage, repo, &m.digest).await?;
                if retagged {
                    continue;
                }
                if storage.manifest_delete(repo, &m.digest).await? {
                    tracing::info!(%repo, digest = %m.digest, "gc: removed untagged manifest");
                    report.manifests_removed.push(name);
                }
                removed_manifests.insert((repo.clone(), m.digest.clone()));
            }
        }
    }

    let mut referenced: HashMap<Digest, u64> = HashMap::new();
    for (repo, (manifests, _)) in &per_repo {
        for m in manifests {
            if !removed_manifests.contains(&(repo.clone(), m.digest.clone())) {
                referenced.extend(m.refs_blobs.iter().cloned());
            }
        }
    }

    // Sweep blobs.
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

    // Expired upload sessions.
    if let Some(ttl) = opts.upload_ttl {
        let now = SystemTime::now();
        for info in storage.upload_list().await? {
            if now.duration_since(info.updated).unwrap_or_default() > ttl {
                if !opts.dry_run {
                    match storage.upload_abort(&info.id).await {
                        Ok(()) | Err(StorageError::UploadUnknown) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                report.uploads_removed.push(info.id);
            }
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        dry_run = opts.dry_run,
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

async fn tag_points_at(storage: &dyn Storage, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
    for tag in storage.tag_list(repo).await?.unwrap_or_default() {
        let Ok(tag) = tag.parse::<Tag>() else { continue };
        if storage.tag_get(repo, &tag).await?.as_ref() == Some(digest) {
            return Ok(true);
        }
    }
    Ok(false)
}
