//! [`RepoIndex`]: every repository name in memory, for the listings that
//! need them all at once (the web interface's grouped, filtered and counted
//! list) and for catalog pages on a shared store without store requests.
//!
//! It is derived from the layout and never written anywhere, so there is
//! nothing to repair after a crash:
//! - a **sweep** walks the layout ([`Storage::repo_page`], 1,000 names per
//!   page) and replaces the set; the server sweeps in the background at
//!   start and then every [`SWEEP`]. Until the first sweep ends the index
//!   is not ready and callers walk the store as before;
//! - this process's writes update it at once: the storage wrapper
//!   ([`crate::gc::GuardedStorage`]) reports every stored manifest
//!   ([`RepoIndex::stored`]) and every deleted one ([`RepoIndex::deleted`],
//!   which asks the store whether the repository still holds a manifest);
//! - on a shared store (replicas on one bucket) a repository that appears
//!   or disappears (not every push: only a change of the set) is also
//!   published as a record in the shared state's `repo-changes/`. Every
//!   replica lists that directory every [`POLL`] (one listing) and checks
//!   each new record's repository against the layout before changing its
//!   set, so a record can never make it list what is not there. Writers
//!   delete their records after [`KEEP`].
//!
//! Bound: another replica's new or vanished repository shows within
//! [`POLL`] (plus the store's own listing delay); a change whose record was
//! lost (a crash between the write and the record) within [`SWEEP`].

use std::collections::{BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Storage, StorageError};
use crate::name::RepoName;

/// How often the whole layout is walked again (the verification sweep).
pub const SWEEP: Duration = Duration::from_secs(3600);
/// How often a replica on a shared store reads the other replicas' changes.
pub const POLL: Duration = Duration::from_secs(10);
/// How long a change record stays in the shared state.
pub const KEEP: Duration = Duration::from_secs(600);
/// The shared-state directory of change records.
pub const CHANGES: &str = "repo-changes";
/// Repositories read per store request of a sweep.
const SWEEP_PAGE: usize = 1000;

/// The repository names (see the module docs).
pub struct RepoIndex {
    shared: bool,
    state: RwLock<State>,
    /// Serialises "check the store, then change the set", so a stored
    /// manifest's insert and a deletion's check cannot cross.
    apply: tokio::sync::Mutex<()>,
    /// This process's record names: `<ms>-<replica>-<seq>`.
    replica: String,
    seq: AtomicU64,
}

#[derive(Default)]
struct State {
    /// `None` until the first sweep finished.
    names: Option<BTreeSet<RepoName>>,
    /// While a sweep runs: the changes made meanwhile, applied to its result.
    during_sweep: Option<Vec<(RepoName, bool)>>,
    /// Change records already applied (or written by this process).
    seen: HashSet<String>,
}

impl State {
    fn set(&mut self, repo: &RepoName, present: bool) {
        if let Some(log) = &mut self.during_sweep {
            log.push((repo.clone(), present));
        }
        if let Some(names) = &mut self.names {
            if present {
                names.insert(repo.clone());
            } else {
                names.remove(repo);
            }
        }
    }
}

impl RepoIndex {
    /// An empty, not yet ready index; `shared` when replicas may write the
    /// same store ([`super::Capabilities::shared`]).
    pub fn new(shared: bool) -> Arc<RepoIndex> {
        let replica = format!("{:08x}", uuid::Uuid::new_v4().as_fields().0);
        Arc::new(RepoIndex {
            shared,
            state: RwLock::default(),
            apply: tokio::sync::Mutex::new(()),
            replica,
            seq: AtomicU64::new(0),
        })
    }

    /// Whether the first sweep has finished.
    pub fn is_ready(&self) -> bool {
        self.read(|_| ()).is_some()
    }

    /// Runs `f` over the names in lexical order; `None` while not ready.
    pub fn read<R>(&self, f: impl FnOnce(&BTreeSet<RepoName>) -> R) -> Option<R> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.names.as_ref().map(f)
    }

    /// At most `limit` names after `after`, in order (a catalog page);
    /// `None` while not ready.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Option<Vec<RepoName>> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.read(|names| names.range::<str, _>((from, Bound::Unbounded)).take(limit).cloned().collect())
    }

    /// Sets whether `repo` is there; returns whether that changed the set
    /// (while not ready: whether it is news since the sweep began).
    fn change(&self, repo: &RepoName, present: bool) -> bool {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let changed = match (&state.names, &state.during_sweep) {
            (Some(names), _) => names.contains(repo) != present,
            (None, Some(log)) => log.iter().rev().find(|(r, _)| r == repo).map(|(_, p)| *p) != Some(present),
            (None, None) => true,
        };
        state.set(repo, present);
        changed
    }

    /// A manifest of `repo` was stored (by this process).
    pub async fn stored(&self, storage: &dyn Storage, repo: &RepoName) {
        if self.read(|n| n.contains(repo)) == Some(true) {
            return;
        }
        let changed = {
            let _apply = self.apply.lock().await;
            self.change(repo, true)
        };
        if changed {
            self.publish(storage, repo, true).await;
        }
    }

    /// A manifest of `repo` was deleted (by this process): the repository
    /// leaves the set when the store holds no manifest of it any more.
    pub async fn deleted(&self, storage: &dyn Storage, repo: &RepoName) {
        let changed = {
            let _apply = self.apply.lock().await;
            match storage.repo_exists(repo).await {
                Ok(true) => false,
                Ok(false) => self.change(repo, false),
                Err(e) => {
                    tracing::warn!(repository = %repo, error = %e, "repository index: cannot check a deleted repository; the next sweep will");
                    false
                }
            }
        };
        if changed {
            self.publish(storage, repo, false).await;
        }
    }

    /// Walks the whole layout and replaces the set (changes made during the
    /// walk are applied on top). Returns the number of repositories.
    pub async fn sweep(&self, storage: &dyn Storage) -> Result<usize, StorageError> {
        self.state.write().unwrap_or_else(|e| e.into_inner()).during_sweep = Some(Vec::new());
        let walked = walk_all(storage).await;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let log = state.during_sweep.take().unwrap_or_default();
        let mut names = walked?;
        for (repo, present) in log {
            if present {
                names.insert(repo);
            } else {
                names.remove(&repo);
            }
        }
        let n = names.len();
        state.names = Some(names);
        Ok(n)
    }

    /// Reads the other replicas' change records (one listing), checks each
    /// new one's repository against the layout and updates the set; deletes
    /// this replica's records older than [`KEEP`]. Returns how many records
    /// were applied. Does nothing on a store that is not shared.
    pub async fn poll(&self, storage: &dyn Storage) -> Result<usize, StorageError> {
        if !self.shared {
            return Ok(0);
        }
        let now = SystemTime::now();
        let listed = storage.state_list(CHANGES).await?;
        let fresh: Vec<String> = {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            // A record no longer listed needs no remembering.
            state.seen.retain(|name| listed.contains(name));
            listed.iter().filter(|n| state.seen.insert((*n).clone())).cloned().collect()
        };
        for name in listed.iter().filter(|n| self.is_own(n)) {
            if record_age(name, now).is_some_and(|age| age > KEEP) {
                if let Err(e) = storage.state_delete(&format!("{CHANGES}/{name}")).await {
                    tracing::debug!(record = %name, error = %e, "repository index: cannot delete an old change record");
                }
            }
        }
        let mut applied = 0;
        for name in fresh.iter().filter(|n| !self.is_own(n)) {
            let Some(bytes) = storage.state_get(&format!("{CHANGES}/{name}")).await? else { continue };
            let Some(repo) = parse_record(&bytes) else {
                tracing::warn!(record = %name, "repository index: skipping an unreadable change record");
                continue;
            };
            let _apply = self.apply.lock().await;
            let present = storage.repo_exists(&repo).await?;
            self.change(&repo, present);
            applied += 1;
        }
        Ok(applied)
    }

    fn is_own(&self, record: &str) -> bool {
        record.split('-').nth(1) == Some(self.replica.as_str())
    }

    /// Publishes a change of the set to the other replicas.
    async fn publish(&self, storage: &dyn Storage, repo: &RepoName, present: bool) {
        if !self.shared {
            return;
        }
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{ms:013}-{}-{seq:06}", self.replica);
        let body = format!("{}{repo}\n", if present { '+' } else { '-' });
        if let Err(e) = storage.state_put(&format!("{CHANGES}/{name}"), Bytes::from(body)).await {
            tracing::warn!(repository = %repo, error = %e, "repository index: cannot publish a change; other replicas see it at their next sweep");
        }
        // Our own record needs no applying.
        self.state.write().unwrap_or_else(|e| e.into_inner()).seen.insert(name);
    }
}

/// Every repository, one [`SWEEP_PAGE`] at a time.
async fn walk_all(storage: &dyn Storage) -> Result<BTreeSet<RepoName>, StorageError> {
    let mut names = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = storage.repo_page(after.as_deref(), SWEEP_PAGE).await?;
        let done = page.len() < SWEEP_PAGE;
        after = page.last().map(|r| r.to_string());
        names.extend(page);
        if done {
            return Ok(names);
        }
    }
}

/// The repository a change record names (its body is `+name` or `-name`;
/// the sign is a hint, the layout decides).
fn parse_record(bytes: &[u8]) -> Option<RepoName> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    text.strip_prefix(['+', '-'])?.parse().ok()
}

/// How old a record is by the time in its name.
fn record_age(name: &str, now: SystemTime) -> Option<Duration> {
    let ms: u64 = name.split('-').next()?.parse().ok()?;
    now.duration_since(UNIX_EPOCH + Duration::from_millis(ms)).ok()
}
