//! [`ActivityLog`]: the last pull of every manifest and the last push and
//! pull of every tag, kept in memory (one mutex'd map insert per manifest
//! request) and saved atomically to a small JSON file. Anything the log
//! never saw counts as seen when a run first meets it, so a lost or new log
//! never makes everything look ancient.
//!
//! Replicas on one storage each keep their own log and publish it as a
//! document of the same JSON shape ([`ActivityLog::to_json`]); the replica
//! that runs retention merges every replica's document into its log first
//! ([`ActivityLog::merge_json`], the latest time wins), so a pull through
//! any replica counts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::name::{RepoName, Tag};

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
    /// When it was written (Unix ms); absent in files of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    written_ms: Option<u64>,
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
    /// Raised by every change (for other sinks than the file).
    generation: AtomicU64,
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
            generation: AtomicU64::new(0),
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

    /// Notes a change: the file and the other sinks are behind.
    fn mark(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// A number every change raises: a sink that wrote the log at
    /// generation `g` is up to date while this is still `g`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
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
        self.mark();
    }

    /// Records a push of `tag` in `repo`.
    pub fn record_push(&self, repo: &RepoName, tag: &Tag) {
        let now = now_ms();
        let mut st = self.lock();
        let e =
            st.tags.entry((repo.clone(), tag.as_str().to_owned())).or_insert(TagTimes { pushed: now, pulled: None });
        e.pushed = now;
        drop(st);
        self.mark();
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
    pub(super) fn last_pull_or_seen(&self, repo: &RepoName, digest: &Digest, now: u64) -> u64 {
        let mut st = self.lock();
        let key = (repo.clone(), digest.clone());
        if let Some(t) = st.manifests.get(&key) {
            return *t;
        }
        st.manifests.insert(key, now);
        drop(st);
        self.mark();
        now
    }

    /// The times of a tag; an unknown one is recorded as pushed at `now`.
    pub(super) fn tag_times_or_seen(&self, repo: &RepoName, tag: &str, now: u64) -> TagTimes {
        let mut st = self.lock();
        let key = (repo.clone(), tag.to_owned());
        if let Some(t) = st.tags.get(&key) {
            return *t;
        }
        let t = TagTimes { pushed: now, pulled: None };
        st.tags.insert(key, t);
        drop(st);
        self.mark();
        t
    }

    /// Forgets entries for manifests and tags that no longer exist.
    pub(super) fn retain(&self, manifests: &HashSet<(RepoName, Digest)>, tags: &HashSet<(RepoName, String)>) {
        let mut st = self.lock();
        let before = st.manifests.len() + st.tags.len();
        st.manifests.retain(|k, _| manifests.contains(k));
        st.tags.retain(|k, _| tags.contains(k));
        if st.manifests.len() + st.tags.len() != before {
            self.mark();
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
        let bytes = self.to_json();
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

    /// The whole log as JSON (the file's format).
    pub fn to_json(&self) -> Vec<u8> {
        let file = {
            let st = self.lock();
            ActivityFile {
                version: 1,
                written_ms: Some(now_ms()),
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
        serde_json::to_vec(&file).unwrap_or_default()
    }

    /// Merges a log in the [`ActivityLog::to_json`] format (another
    /// replica's): for every manifest and tag the later time wins. Returns
    /// how many entries changed; an unreadable document changes nothing.
    pub fn merge_json(&self, bytes: &[u8]) -> Result<usize, serde_json::Error> {
        let file: ActivityFile = serde_json::from_slice(bytes)?;
        let mut changed = 0;
        let mut st = self.lock();
        for m in file.manifests {
            let (Ok(r), Ok(d)) = (m.repository.parse::<RepoName>(), m.digest.parse::<Digest>()) else { continue };
            let e = st.manifests.entry((r, d)).or_insert(0);
            if m.pulled > *e {
                *e = m.pulled;
                changed += 1;
            }
        }
        for t in file.tags {
            let (Ok(r), Ok(_)) = (t.repository.parse::<RepoName>(), t.tag.parse::<Tag>()) else { continue };
            let e = st.tags.entry((r, t.tag)).or_insert(TagTimes { pushed: 0, pulled: None });
            let merged = TagTimes { pushed: e.pushed.max(t.pushed), pulled: e.pulled.max(t.pulled) };
            if merged != *e {
                *e = merged;
                changed += 1;
            }
        }
        drop(st);
        if changed > 0 {
            self.mark();
        }
        Ok(changed)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

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
    fn merging_another_replicas_log_keeps_the_latest_times() {
        let (r, d, d2) = (repo("docker.io/library/nginx"), Digest::sha256_of(b"m"), Digest::sha256_of(b"m2"));
        let tag: Tag = "1.27".parse().expect("tag");
        let ours = ActivityLog::in_memory();
        ours.record_pull(&r, Some(&tag), &d);
        let ta = ours.last_pull(&r, &d).expect("recorded");
        let generation = ours.generation();
        let theirs = serde_json::json!({
            "version": 1,
            "manifests": [
                {"repository": r.to_string(), "digest": d.to_string(), "pulled": ta - 1000},
                {"repository": r.to_string(), "digest": d2.to_string(), "pulled": ta + 5000},
                {"repository": "NOT A NAME", "digest": d2.to_string(), "pulled": 1},
            ],
            "tags": [{"repository": r.to_string(), "tag": "1.27", "pushed": 1, "pulled": ta + 5000}],
        });
        let bytes = serde_json::to_vec(&theirs).expect("json");
        assert_eq!(ours.merge_json(&bytes).expect("merge"), 2, "the newer manifest and the tag");
        assert_eq!(ours.last_pull(&r, &d), Some(ta), "ours was later");
        assert_eq!(ours.last_pull(&r, &d2), Some(ta + 5000), "theirs only");
        let t = ours.tag_times(&r, "1.27").expect("tag");
        assert_eq!((t.pushed, t.pulled), (ta, Some(ta + 5000)));
        assert!(ours.generation() > generation, "a merge that changed something is a change");
        assert_eq!(ours.merge_json(&bytes).expect("merge"), 0, "idempotent");
        assert!(ours.merge_json(b"{nope").is_err());
        // Our own document merges into a fresh log (a restart with no local file).
        let fresh = ActivityLog::in_memory();
        assert_eq!(fresh.merge_json(&ours.to_json()).expect("merge"), 3);
        assert_eq!(fresh.len(), ours.len());
    }

    #[test]
    fn last_used_is_the_later_of_push_and_pull() {
        assert_eq!(TagTimes { pushed: 10, pulled: None }.last_used(), 10);
        assert_eq!(TagTimes { pushed: 10, pulled: Some(20) }.last_used(), 20);
        assert_eq!(TagTimes { pushed: 30, pulled: Some(20) }.last_used(), 30);
    }
}
