//! Cache retention per upstream and tag retention per repository (issue 7).
//!
//! - [`ActivityLog`]: the last pull of every manifest and the last push and
//!   pull of every tag, kept in memory (one mutex'd map insert per manifest
//!   request) and saved atomically to a small JSON file. Anything the log
//!   never saw counts as seen when a run first meets it, so a lost or new
//!   log never makes everything look ancient.
//! - [`run`]: one retention pass. The unit of cache eviction is a cached
//!   *image root* (a tagged manifest, or one pulled by digest, with the
//!   children of an index and the referrers belonging to it); its last pull
//!   is the latest over its members. Roots idle for longer than `max_age`
//!   go, then the least recently pulled until the upstream's cache fits in
//!   `max_size`. Evicting removes tags, manifests and referrer records only:
//!   blobs are left to garbage collection's sweep, which removes a blob only
//!   when nothing at all references it, so a layer shared with a private or
//!   another cached image stays.
//!
//! # Safety while serving
//! A root is never evicted while it is in use: pulled within `grace`,
//! blobs in an upstream fetch (`protect`), or (through [`GcGuard`]) any of
//! the manifests it deletes or blobs only it references written, linked or
//! read within `grace` or since the run started. The deletion holds
//! [`GcGuard`] claims on those digests, so a pull re-caching the image
//! meanwhile waits and then stores it again; a pull that got the manifest
//! just before finds the blobs in storage or fetches them again upstream.
//! Private repositories are only touched by explicit tag policies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::gc::{GcError, GcGuard};
use crate::manifest::parse_manifest;
use crate::name::{RepoName, Tag};
use crate::storage::{Storage, StorageError};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Push and pull times of one tag (Unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagTimes {
    /// Last push, or when the log first saw the tag.
    pub pushed: u64,
    /// Last pull, if any since the log knows the tag.
    pub pulled: Option<u64>,
}

impl TagTimes {
    /// The last use: the last pull, else the push (or first sighting).
    pub fn last_used(&self) -> u64 {
        self.pulled.map_or(self.pushed, |p| p.max(self.pushed))
    }
}

#[derive(Default)]
struct ActivityState {
    /// Last pull (or first sighting) of each manifest.
    manifests: HashMap<(RepoName, Digest), u64>,
    tags: HashMap<(RepoName, String), TagTimes>,
}

#[derive(Serialize, Deserialize)]
struct ActivityFile {
    version: u32,
    manifests: Vec<ManifestEntry>,
    tags: Vec<TagEntry>,
}

#[derive(Serialize, Deserialize)]
struct ManifestEntry {
    repository: String,
    digest: String,
    pulled: u64,
}

#[derive(Serialize, Deserialize)]
struct TagEntry {
    repository: String,
    tag: String,
    pushed: u64,
    #[serde(default)]
    pulled: Option<u64>,
}

/// Last pull/push times of manifests and tags (see the module docs).
pub struct ActivityLog {
    path: Option<PathBuf>,
    state: Mutex<ActivityState>,
    dirty: AtomicBool,
    /// One save at a time (temp file name is fixed).
    saving: tokio::sync::Mutex<()>,
}

impl ActivityLog {
    /// A log that is never saved (tests, offline runs).
    pub fn in_memory() -> ActivityLog {
        ActivityLog {
            path: None,
            state: Mutex::new(ActivityState::default()),
            dirty: AtomicBool::new(false),
            saving: tokio::sync::Mutex::new(()),
        }
    }

    /// Loads the log saved at `path` (none yet: empty). A file that does
    /// not parse is logged and replaced at the next save: it only holds
    /// timestamps, and unknown entries count as seen now.
    pub fn load(path: &Path) -> ActivityLog {
        let mut log = ActivityLog::in_memory();
        log.path = Some(path.to_owned());
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return log,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the activity log; starting empty");
                return log;
            }
        };
        let file: ActivityFile = match serde_json::from_slice(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "activity log does not parse; starting empty");
                return log;
            }
        };
        let st = log.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for m in file.manifests {
            if let (Ok(r), Ok(d)) = (m.repository.parse::<RepoName>(), m.digest.parse::<Digest>()) {
                st.manifests.insert((r, d), m.pulled);
            }
        }
        for t in file.tags {
            if let (Ok(r), Ok(_)) = (t.repository.parse::<RepoName>(), t.tag.parse::<Tag>()) {
                st.tags.insert((r, t.tag), TagTimes { pushed: t.pushed, pulled: t.pulled });
            }
        }
        tracing::info!(path = %path.display(), manifests = st.manifests.len(), tags = st.tags.len(), "activity log loaded");
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a pull of manifest `digest` of `repo` (through `tag` when the
    /// request named one).
    pub fn record_pull(&self, repo: &RepoName, tag: Option<&Tag>, digest: &Digest) {
        let now = now_ms();
        let mut st = self.lock();
        st.manifests.insert((repo.clone(), digest.clone()), now);
        if let Some(tag) = tag {
            st.tags
                .entry((repo.clone(), tag.as_str().to_owned()))
                .or_insert(TagTimes { pushed: now, pulled: None })
                .pulled = Some(now);
        }
        drop(st);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Records a push of `tag` in `repo`.
    pub fn record_push(&self, repo: &RepoName, tag: &Tag) {
        let now = now_ms();
        let mut st = self.lock();
        let e =
            st.tags.entry((repo.clone(), tag.as_str().to_owned())).or_insert(TagTimes { pushed: now, pulled: None });
        e.pushed = now;
        drop(st);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The last pull of a manifest, if the log knows it.
    pub fn last_pull(&self, repo: &RepoName, digest: &Digest) -> Option<u64> {
        self.lock().manifests.get(&(repo.clone(), digest.clone())).copied()
    }

    /// The times of a tag, if the log knows it.
    pub fn tag_times(&self, repo: &RepoName, tag: &str) -> Option<TagTimes> {
        self.lock().tags.get(&(repo.clone(), tag.to_owned())).copied()
    }

    /// The last pull of a manifest; an unknown one is recorded as seen at `now`.
    fn last_pull_or_seen(&self, repo: &RepoName, digest: &Digest, now: u64) -> u64 {
        let mut st = self.lock();
        let key = (repo.clone(), digest.clone());
        if let Some(t) = st.manifests.get(&key) {
            return *t;
        }
        st.manifests.insert(key, now);
        drop(st);
        self.dirty.store(true, Ordering::Relaxed);
        now
    }

    /// The times of a tag; an unknown one is recorded as pushed at `now`.
    fn tag_times_or_seen(&self, repo: &RepoName, tag: &str, now: u64) -> TagTimes {
        let mut st = self.lock();
        let key = (repo.clone(), tag.to_owned());
        if let Some(t) = st.tags.get(&key) {
            return *t;
        }
        let t = TagTimes { pushed: now, pulled: None };
        st.tags.insert(key, t);
        drop(st);
        self.dirty.store(true, Ordering::Relaxed);
        t
    }

    /// Forgets entries for manifests and tags that no longer exist.
    fn retain(&self, manifests: &HashSet<(RepoName, Digest)>, tags: &HashSet<(RepoName, String)>) {
        let mut st = self.lock();
        let before = st.manifests.len() + st.tags.len();
        st.manifests.retain(|k, _| manifests.contains(k));
        st.tags.retain(|k, _| tags.contains(k));
        if st.manifests.len() + st.tags.len() != before {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// How many manifests and tags the log holds.
    pub fn len(&self) -> (usize, usize) {
        let st = self.lock();
        (st.manifests.len(), st.tags.len())
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// Writes the log (temp file + rename) if it changed since the last
    /// save. Returns whether it wrote. A log without a path never writes.
    pub async fn save(&self) -> std::io::Result<bool> {
        let Some(path) = self.path.clone() else {
            return Ok(false);
        };
        let _one = self.saving.lock().await;
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(false);
        }
        let file = {
            let st = self.lock();
            ActivityFile {
                version: 1,
                manifests: st
                    .manifests
                    .iter()
                    .map(|((r, d), t)| ManifestEntry { repository: r.to_string(), digest: d.to_string(), pulled: *t })
                    .collect(),
                tags: st
                    .tags
                    .iter()
                    .map(|((r, tag), t)| TagEntry {
                        repository: r.to_string(),
                        tag: tag.clone(),
                        pushed: t.pushed,
                        pulled: t.pulled,
                    })
                    .collect(),
            }
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        let result = tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        if result.is_err() {
            // Try again next time.
            self.dirty.store(true, Ordering::Relaxed);
        }
        result.map(|()| true)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Sizes of committed blobs, remembered (a digest's size never changes).
#[derive(Default)]
pub struct BlobSizes {
    sizes: Mutex<HashMap<Digest, u64>>,
}

impl BlobSizes {
    /// The size of `digest` in storage; `None` if it is not stored.
    pub async fn get(&self, storage: &dyn Storage, digest: &Digest) -> Result<Option<u64>, StorageError> {
        if let Some(s) = self.sizes.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Ok(Some(*s));
        }
        let size = storage.blob_size(digest).await?;
        if let Some(s) = size {
            self.sizes.lock().unwrap_or_else(|p| p.into_inner()).insert(digest.clone(), s);
        }
        Ok(size)
    }

    fn forget(&self, digest: &Digest) {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
    }

    fn retain(&self, keep: &HashSet<Digest>) {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).retain(|d, _| keep.contains(d));
    }
}

/// Cache limits of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    /// The upstream host (first component of its cached repositories).
    pub host: String,
    pub max_size: Option<u64>,
    pub max_age: Option<Duration>,
}

/// Tag retention for the repositories a predicate selects.
pub struct TagPolicy {
    /// The pattern as configured (for reports).
    pub pattern: String,
    pub matches: Box<dyn Fn(&RepoName) -> bool + Send + Sync>,
    /// Keep this many most recently pushed tags.
    pub keep_last: Option<usize>,
    /// Keep tags pulled (or pushed) within this duration.
    pub keep_pulled_within: Option<Duration>,
}

/// What a retention run does.
pub struct RetentionOptions {
    pub upstreams: Vec<UpstreamPolicy>,
    /// The first policy whose pattern matches a repository applies to it.
    pub tags: Vec<TagPolicy>,
    /// Nothing used more recently than this is removed.
    pub grace: Duration,
    /// Report what would go; remove nothing.
    pub dry_run: bool,
}

/// One evicted (or, in a dry run, evictable) cached image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvictedImage {
    pub upstream: String,
    pub repository: String,
    /// The root manifest.
    pub digest: String,
    pub tags: Vec<String>,
    /// Manifests removed with it (the root, an index's children, referrers).
    pub manifests: usize,
    /// Bytes freed: its manifests and the blobs nothing else references.
    pub bytes: u64,
    /// Time since its last pull.
    pub idle_seconds: u64,
    /// `max_age` or `max_size`.
    pub reason: String,
}

/// Cache usage of one upstream with a policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamUsage {
    pub host: String,
    /// Cached image roots after the run.
    pub images: usize,
    /// Distinct blob bytes plus manifest bytes of the remaining images.
    pub bytes: u64,
    /// The same before the run.
    pub bytes_before: u64,
    pub max_size: Option<u64>,
    pub evicted_images: usize,
    pub evicted_bytes: u64,
}

/// The outcome of a retention run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub evicted: Vec<EvictedImage>,
    /// `repository:tag` removed by tag policies (or by eviction).
    pub tags_removed: Vec<String>,
    /// `repository@digest` of every manifest removed.
    pub manifests_removed: Vec<String>,
    /// Candidates kept because they were in use (recent pull, push, fetch).
    pub kept_in_use: usize,
    pub upstreams: Vec<UpstreamUsage>,
    /// Bytes that nothing references any more (freed by the blob sweep).
    pub bytes_freed: u64,
    pub duration_ms: u64,
}

struct Man {
    size: u64,
    blobs: Vec<Digest>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

struct RepoState {
    upstream: Option<String>,
    manifests: HashMap<Digest, Man>,
    tags: BTreeMap<String, Digest>,
}

impl RepoState {
    /// `start` and everything it keeps in this repository: an index's
    /// children (recursively) and referrers of any of them.
    fn closure(&self, start: impl IntoIterator<Item = Digest>) -> HashSet<Digest> {
        let mut referrers: HashMap<&Digest, Vec<&Digest>> = HashMap::new();
        for (d, m) in &self.manifests {
            if let Some(s) = &m.subject {
                referrers.entry(s).or_default().push(d);
            }
        }
        let mut out = HashSet::new();
        let mut todo: Vec<Digest> = start.into_iter().collect();
        while let Some(d) = todo.pop() {
            let Some(m) = self.manifests.get(&d) else { continue };
            if !out.insert(d.clone()) {
                continue;
            }
            todo.extend(m.children.iter().cloned());
            if let Some(r) = referrers.get(&d) {
                todo.extend(r.iter().map(|d| (*d).clone()));
            }
        }
        out
    }

    fn blobs_of<'a>(&'a self, members: impl IntoIterator<Item = &'a Digest>) -> HashSet<Digest> {
        members.into_iter().filter_map(|d| self.manifests.get(d)).flat_map(|m| m.blobs.iter().cloned()).collect()
    }
}

/// One cached image root with its members.
struct Root {
    repo: RepoName,
    digest: Digest,
    members: HashSet<Digest>,
    blobs: HashSet<Digest>,
    last_pull: u64,
}

/// Runs one retention pass over `storage` (the guarded storage that serves
/// requests). `upstream_of` names the upstream host of a cached repository
/// (`None`: private); `protect` names digests in an upstream fetch.
/// Deletes tags, manifests and referrer records; the caller then runs the
/// garbage collector's blob sweep when anything was removed.
pub async fn run(
    storage: &dyn Storage,
    guard: &Arc<GcGuard>,
    activity: &ActivityLog,
    sizes: &BlobSizes,
    upstream_of: &(dyn Fn(&RepoName) -> Option<String> + Send + Sync),
    protect: &(dyn Fn(&Digest) -> bool + Send + Sync),
    opts: &RetentionOptions,
) -> Result<RetentionReport, GcError> {
    let started = Instant::now();
    let t0 = Instant::now();
    let now = now_ms();
    let grace_ms = opts.grace.as_millis() as u64;
    let mut report = RetentionReport { dry_run: opts.dry_run, ..Default::default() };

    // Everything, as in GC's mark phase: references decide what is freed.
    let mut repos: BTreeMap<RepoName, RepoState> = BTreeMap::new();
    for repo in storage.repo_list().await? {
        let mut manifests = HashMap::new();
        for digest in storage.manifest_list(&repo).await? {
            let Some(m) = storage.manifest_get(&repo, &digest).await? else { continue };
            let p = parse_manifest(&m.bytes, Some(&m.media_type)).map_err(|e| GcError::Unparsable {
                repo: repo.clone(),
                digest: digest.clone(),
                reason: e.message.clone(),
            })?;
            manifests.insert(
                digest,
                Man {
                    size: m.bytes.len() as u64,
                    blobs: p.config.iter().chain(&p.layers).map(|d| d.digest.clone()).collect(),
                    children: p.manifests.iter().map(|d| d.digest.clone()).collect(),
                    subject: p.subject.map(|s| s.digest),
                },
            );
        }
        let mut tags = BTreeMap::new();
        for tag in storage.tag_list(&repo).await?.unwrap_or_default() {
            let Ok(t) = tag.parse::<Tag>() else { continue };
            if let Some(d) = storage.tag_get(&repo, &t).await? {
                tags.insert(tag, d);
            }
        }
        let upstream = upstream_of(&repo);
        repos.insert(repo, RepoState { upstream, manifests, tags });
    }

    // ---- cache retention per upstream ----
    let mut evict_plan: Vec<(Root, Eviction)> = Vec::new();
    for policy in &opts.upstreams {
        let mut roots: Vec<Root> = Vec::new();
        for (repo, st) in repos.iter().filter(|(_, s)| s.upstream.as_deref() == Some(&policy.host)) {
            let children: HashSet<&Digest> = st.manifests.values().flat_map(|m| &m.children).collect();
            let tagged: HashSet<&Digest> = st.tags.values().collect();
            for (d, m) in &st.manifests {
                let belongs_elsewhere =
                    children.contains(d) || m.subject.as_ref().is_some_and(|s| st.manifests.contains_key(s));
                if belongs_elsewhere && !tagged.contains(d) {
                    continue;
                }
                let members = st.closure([d.clone()]);
                let last_pull = members.iter().map(|m| activity.last_pull_or_seen(repo, m, now)).max().unwrap_or(now);
                roots.push(Root {
                    repo: repo.clone(),
                    digest: d.clone(),
                    blobs: st.blobs_of(&members),
                    members,
                    last_pull,
                });
            }
        }
        // Reference counts over this upstream's roots.
        let mut blob_refs: HashMap<Digest, usize> = HashMap::new();
        let mut man_refs: HashMap<(RepoName, Digest), (usize, u64)> = HashMap::new();
        for r in &roots {
            for b in &r.blobs {
                *blob_refs.entry(b.clone()).or_default() += 1;
            }
            for m in &r.members {
                let size = repos.get(&r.repo).and_then(|s| s.manifests.get(m)).map_or(0, |m| m.size);
                man_refs.entry((r.repo.clone(), m.clone())).or_insert((0, size)).0 += 1;
            }
        }
        let mut size = man_refs.values().map(|(_, s)| *s).sum::<u64>();
        for b in blob_refs.keys() {
            size += sizes.get(storage, b).await?.unwrap_or(0);
        }
        let bytes_before = size;
        roots.sort_by(|a, b| {
            a.last_pull.cmp(&b.last_pull).then_with(|| a.digest.to_string().cmp(&b.digest.to_string()))
        });
        let mut usage = UpstreamUsage {
            host: policy.host.clone(),
            images: roots.len(),
            bytes_before,
            max_size: policy.max_size,
            ..Default::default()
        };
        for root in roots {
            let idle = now.saturating_sub(root.last_pull);
            let reason = if policy.max_age.is_some_and(|a| idle > a.as_millis() as u64) {
                "max_age"
            } else if policy.max_size.is_some_and(|m| size > m) {
                "max_size"
            } else {
                continue;
            };
            if idle <= grace_ms || root.blobs.iter().any(protect) {
                report.kept_in_use += 1;
                continue;
            }
            let size_before = size;
            for b in &root.blobs {
                if let Some(n) = blob_refs.get_mut(b) {
                    *n -= 1;
                    if *n == 0 {
                        size = size.saturating_sub(sizes.get(storage, b).await?.unwrap_or(0));
                    }
                }
            }
            for m in &root.members {
                if let Some((n, s)) = man_refs.get_mut(&(root.repo.clone(), m.clone())) {
                    *n -= 1;
                    if *n == 0 {
                        size = size.saturating_sub(*s);
                    }
                }
            }
            usage.images -= 1;
            let eviction = Eviction {
                host: policy.host.clone(),
                root: root.digest.clone(),
                reason: reason.to_owned(),
                idle_ms: idle,
                planned_bytes: size_before - size,
            };
            evict_plan.push((root, eviction));
        }
        usage.bytes = size;
        report.upstreams.push(usage);
    }

    // Manifests every planned eviction removes: members no kept root needs.
    let evicted_roots: HashSet<(RepoName, Digest)> =
        evict_plan.iter().map(|(r, _)| (r.repo.clone(), r.digest.clone())).collect();
    let mut removals: Vec<Removal> = Vec::new();
    for (root, eviction) in evict_plan {
        let Some(st) = repos.get(&root.repo) else { continue };
        let kept_starts = st
            .manifests
            .keys()
            .filter(|d| !root.members.contains(*d) && !evicted_roots.contains(&(root.repo.clone(), (*d).clone())))
            .cloned();
        let still_needed =
            st.closure(kept_starts.chain(
                st.tags.values().filter(|d| !evicted_roots.contains(&(root.repo.clone(), (*d).clone()))).cloned(),
            ));
        let manifests: Vec<Digest> = root.members.iter().filter(|d| !still_needed.contains(*d)).cloned().collect();
        let tags: Vec<String> = st.tags.iter().filter(|(_, d)| **d == root.digest).map(|(t, _)| t.clone()).collect();
        removals.push(Removal { repo: root.repo.clone(), manifests, tags, evicted: Some(eviction) });
    }

    // ---- tag retention ----
    for (repo, st) in &repos {
        let Some(policy) = opts.tags.iter().find(|p| (p.matches)(repo)) else { continue };
        let mut tags: Vec<(String, Digest, TagTimes)> =
            st.tags.iter().map(|(t, d)| (t.clone(), d.clone(), activity.tag_times_or_seen(repo, t, now))).collect();
        tags.sort_by(|a, b| b.2.pushed.cmp(&a.2.pushed).then_with(|| a.0.cmp(&b.0)));
        let mut remove: Vec<(String, Digest)> = Vec::new();
        for (i, (tag, digest, times)) in tags.iter().enumerate() {
            let by_count = policy.keep_last.is_some_and(|n| i < n);
            let idle = now.saturating_sub(times.last_used());
            let by_pull = policy.keep_pulled_within.is_some_and(|w| idle <= w.as_millis() as u64);
            if by_count || by_pull {
                continue;
            }
            if idle <= grace_ms {
                report.kept_in_use += 1;
                continue;
            }
            // Already going with an evicted image.
            if removals.iter().any(|r| &r.repo == repo && r.tags.contains(tag)) {
                continue;
            }
            remove.push((tag.clone(), digest.clone()));
        }
        if remove.is_empty() {
            continue;
        }
        let removed_tags: HashSet<&String> = remove.iter().map(|(t, _)| t).collect();
        let targets: HashSet<Digest> = remove.iter().map(|(_, d)| d.clone()).collect();
        let already: HashSet<Digest> =
            removals.iter().filter(|r| &r.repo == repo).flat_map(|r| r.manifests.iter().cloned()).collect();
        // Kept: remaining tags, and manifests no removed tag pointed at.
        let starts = st
            .tags
            .iter()
            .filter(|(t, _)| !removed_tags.contains(t))
            .map(|(_, d)| d.clone())
            .chain(st.manifests.keys().filter(|d| !targets.contains(*d) && !already.contains(*d)).cloned());
        let keep = st.closure(starts);
        // One removal per target digest: its tags, then the manifests that
        // only removed tags kept.
        let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (tag, digest) in remove {
            by_digest.entry(digest).or_default().push(tag);
        }
        let mut carried: HashSet<Digest> = HashSet::new();
        for (digest, tags) in by_digest {
            let manifests: Vec<Digest> = st
                .closure([digest])
                .into_iter()
                .filter(|d| !keep.contains(d) && !already.contains(d) && carried.insert(d.clone()))
                .collect();
            removals.push(Removal { repo: repo.clone(), manifests, tags, evicted: None });
        }
    }

    // ---- bytes freed (reference-aware) ----
    let removed_set: HashSet<(RepoName, Digest)> =
        removals.iter().flat_map(|r| r.manifests.iter().map(|d| (r.repo.clone(), d.clone()))).collect();
    let mut still_referenced: HashSet<Digest> = HashSet::new();
    for (repo, st) in &repos {
        for (d, m) in &st.manifests {
            if !removed_set.contains(&(repo.clone(), d.clone())) {
                still_referenced.extend(m.blobs.iter().cloned());
            }
        }
    }
    let mut counted: HashSet<Digest> = HashSet::new();

    // ---- removal ----
    let mut removed_now: HashSet<(RepoName, Digest)> = HashSet::new();
    let mut removed_tags: HashSet<(RepoName, String)> = HashSet::new();
    for removal in removals {
        let Some(st) = repos.get(&removal.repo) else { continue };
        let blobs = st.blobs_of(&removal.manifests);
        let exclusive: Vec<Digest> = blobs.iter().filter(|b| !still_referenced.contains(*b)).cloned().collect();
        let mut bytes: u64 = removal.manifests.iter().filter_map(|d| st.manifests.get(d)).map(|m| m.size).sum();
        for b in &exclusive {
            if counted.insert(b.clone()) {
                bytes += sizes.get(storage, b).await?.unwrap_or(0);
            }
        }
        if !opts.dry_run {
            let mut claimed: Vec<Digest> = removal.manifests.clone();
            claimed.extend(exclusive.iter().cloned());
            let Some(_claims) = guard.claim_all(&claimed, t0, opts.grace) else {
                report.keep_in_use(&removal);
                continue;
            };
            // A pull since the listing keeps it.
            let pulled_recently =
                removal.manifests.iter().any(|d| {
                    activity.last_pull(&removal.repo, d).is_some_and(|t| now_ms().saturating_sub(t) <= grace_ms)
                }) || removal.tags.iter().any(|t| {
                    activity
                        .tag_times(&removal.repo, t)
                        .is_some_and(|x| now_ms().saturating_sub(x.last_used()) <= grace_ms)
                });
            if pulled_recently {
                report.keep_in_use(&removal);
                continue;
            }
            for tag in &removal.tags {
                let Ok(t) = tag.parse::<Tag>() else { continue };
                // Only if it still points where it did at the listing.
                if storage.tag_get(&removal.repo, &t).await? == st.tags.get(tag).cloned() {
                    storage.tag_delete(&removal.repo, &t).await?;
                    removed_tags.insert((removal.repo.clone(), tag.clone()));
                }
            }
            for d in &removal.manifests {
                if let Some(subject) = st.manifests.get(d).and_then(|m| m.subject.as_ref()) {
                    storage.referrer_delete(&removal.repo, subject, d).await?;
                }
                storage.manifest_delete(&removal.repo, d).await?;
                removed_now.insert((removal.repo.clone(), d.clone()));
            }
            // Links of blobs no remaining manifest of this repository uses.
            let repo_keeps: HashSet<Digest> = st
                .manifests
                .iter()
                .filter(|(d, _)| !removed_set.contains(&(removal.repo.clone(), (*d).clone())))
                .flat_map(|(_, m)| m.blobs.iter().cloned())
                .collect();
            for b in blobs.iter().filter(|b| !repo_keeps.contains(*b)) {
                storage.blob_unlink(&removal.repo, b).await?;
            }
        }
        report.bytes_freed += bytes;
        for tag in &removal.tags {
            report.tags_removed.push(format!("{}:{tag}", removal.repo));
        }
        for d in &removal.manifests {
            report.manifests_removed.push(format!("{}@{d}", removal.repo));
        }
        if let Some(Eviction { host, root: digest, reason, idle_ms: idle, .. }) = removal.evicted {
            tracing::info!(upstream = %host, repo = %removal.repo, %digest, %reason, bytes, dry_run = opts.dry_run,
                "retention: evicted cached image");
            if let Some(u) = report.upstreams.iter_mut().find(|u| u.host == host) {
                u.evicted_images += 1;
                u.evicted_bytes += bytes;
            }
            report.evicted.push(EvictedImage {
                upstream: host,
                repository: removal.repo.to_string(),
                digest: digest.to_string(),
                tags: removal.tags.clone(),
                manifests: removal.manifests.len(),
                bytes,
                idle_seconds: idle / 1000,
                reason,
            });
        } else {
            tracing::info!(repo = %removal.repo, tags = ?removal.tags, manifests = removal.manifests.len(),
                dry_run = opts.dry_run, "retention: removed tag");
        }
    }

    if !opts.dry_run {
        // Bounded memory: forget what no longer exists.
        let mut live_manifests = HashSet::new();
        let mut live_tags = HashSet::new();
        let mut live_blobs = HashSet::new();
        for (repo, st) in &repos {
            for (d, m) in &st.manifests {
                if !removed_now.contains(&(repo.clone(), d.clone())) {
                    live_manifests.insert((repo.clone(), d.clone()));
                    live_blobs.extend(m.blobs.iter().cloned());
                }
            }
            for t in st.tags.keys() {
                if !removed_tags.contains(&(repo.clone(), t.clone())) {
                    live_tags.insert((repo.clone(), t.clone()));
                }
            }
        }
        activity.retain(&live_manifests, &live_tags);
        for b in counted.iter().filter(|b| !live_blobs.contains(*b)) {
            sizes.forget(b);
        }
        sizes.retain(&live_blobs);
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        dry_run = opts.dry_run,
        evicted = report.evicted.len(),
        tags_removed = report.tags_removed.len(),
        manifests_removed = report.manifests_removed.len(),
        bytes_freed = report.bytes_freed,
        kept_in_use = report.kept_in_use,
        ms = report.duration_ms,
        "retention finished"
    );
    Ok(report)
}

struct Removal {
    repo: RepoName,
    /// Manifests to delete (after the tags).
    manifests: Vec<Digest>,
    tags: Vec<String>,
    evicted: Option<Eviction>,
}

/// A planned cache eviction.
struct Eviction {
    host: String,
    root: Digest,
    reason: String,
    idle_ms: u64,
    /// How much the upstream's cache size shrinks with it.
    planned_bytes: u64,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().expect("repo")
    }

    #[tokio::test]
    async fn activity_log_round_trip_and_atomic_save() {
        let dir = std::env::temp_dir().join(format!("cove-activity-{}", uuid::Uuid::new_v4()));
        let path = dir.join("state").join("activity.json");
        let log = ActivityLog::load(&path);
        assert!(log.is_empty());
        assert!(!log.save().await.expect("nothing to save"), "clean log writes nothing");
        let (r, d) = (repo("docker.io/library/nginx"), Digest::sha256_of(b"m"));
        let tag: Tag = "1.27".parse().expect("tag");
        log.record_push(&repo("my/app"), &tag);
        log.record_pull(&r, Some(&tag), &d);
        assert!(log.save().await.expect("save"), "dirty log writes");
        assert!(!log.save().await.expect("save"), "written once");
        assert!(!path.with_extension("json.tmp").exists(), "temp file renamed");
        let again = ActivityLog::load(&path);
        assert_eq!(again.len(), (1, 2));
        assert_eq!(again.last_pull(&r, &d), log.last_pull(&r, &d));
        let t = again.tag_times(&r, "1.27").expect("pulled tag");
        assert!(t.pulled.is_some());
        assert_eq!(again.tag_times(&repo("my/app"), "1.27").and_then(|t| t.pulled), None);
        // Unknown entries count as seen now; retain forgets the gone ones.
        let other = Digest::sha256_of(b"other");
        assert_eq!(again.last_pull_or_seen(&r, &other, 42), 42);
        assert_eq!(again.last_pull(&r, &other), Some(42));
        again.retain(&HashSet::from([(r.clone(), d.clone())]), &HashSet::new());
        assert_eq!(again.len(), (1, 0));
        // A corrupt file is replaced, not fatal.
        std::fs::write(&path, b"{not json").expect("corrupt");
        assert!(ActivityLog::load(&path).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn last_used_is_the_later_of_push_and_pull() {
        assert_eq!(TagTimes { pushed: 10, pulled: None }.last_used(), 10);
        assert_eq!(TagTimes { pushed: 10, pulled: Some(20) }.last_used(), 20);
        assert_eq!(TagTimes { pushed: 30, pulled: Some(20) }.last_used(), 30);
    }
}
