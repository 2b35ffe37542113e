//! [`RepoIndex`]: every repository name in memory, for the listings that
//! need them all at once (the web interface's grouped, filtered and counted
//! list) and for catalog pages on a shared store without store requests.
//!
//! It is derived from the layout and never written anywhere, so there is
//! nothing to repair after a crash:
//! - a **sweep** walks the layout ([`Storage::repo_page`], 1,000 names per
//!   page) and replaces the set; the server sweeps in the background at
//!   start and then every [`SWEEP`] ([`SWEEP_SHARED`] on a shared store).
//!   Until the first sweep ends the index is not ready and callers walk the
//!   store as before;
//! - this process's writes update it at once: the storage wrapper
//!   ([`crate::gc::GuardedStorage`]) reports every stored manifest
//!   ([`RepoIndex::stored`]) and every deleted one ([`RepoIndex::deleted`],
//!   which asks the store whether the repository still holds a manifest);
//! - on a shared store (replicas on one bucket) every manifest or tag write
//!   is announced by a record in the shared state's `repo-changes/` before
//!   it is made ([`RepoIndex::before_write`]: no write lands that the other
//!   replicas cannot hear of), and a repository that appeared or went gets
//!   one more after it. Every replica lists that directory every [`POLL`]
//!   (one listing) and checks each new record's repository against the
//!   layout before changing its set, so a record can never make it list
//!   what is not there. Writers delete their records after [`KEEP`].
//! - the same marks tell GC and retention which repositories to list again
//!   ([`RepoIndex::take_changed`], used by
//!   [`crate::gc::inventory::Inventories`]).
//!
//! - the same marks drop the repository's cached tag list ([`tags`],
//!   served by [`RepoIndex::tags`]).
//!
//! Bound: another replica's new or vanished repository shows within
//! [`POLL`] (plus the store's own listing delay); one whose after-write
//! record was lost shows at the next sweep. Another replica's new or
//! deleted tag shows within [`POLL`] too (its record drops the cached list).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Storage, StorageError};
use crate::name::RepoName;

pub mod tags;
use tags::TagCache;
pub use tags::Tags;

/// How often the whole layout is walked again (the verification sweep) on
/// a store one process owns.
pub const SWEEP: Duration = Duration::from_secs(3600);
/// The same on a shared store, where a walk is a listing per directory
/// (100,000 repositories: some 200,000 requests) and the change records
/// already carry every replica's writes.
pub const SWEEP_SHARED: Duration = Duration::from_secs(24 * 3600);
/// How often a replica on a shared store reads the other replicas' changes.
pub const POLL: Duration = Duration::from_secs(10);
/// How long a change record stays in the shared state.
pub const KEEP: Duration = Duration::from_secs(600);
/// How long after a change record is read the write it announced may still
/// land (a manifest or tag write is a few small requests; the store's
/// request timeouts are far shorter).
pub const SETTLE: Duration = Duration::from_secs(300);
/// The shared-state directory of change records.
pub const CHANGES: &str = "repo-changes";
/// Repositories read per store request of a sweep.
const SWEEP_PAGE: usize = 1000;
/// On a shared store, cached tag lists are served only while the other
/// replicas' records were read completely this recently (a failing poll
/// would leave their changes unheard).
const TAGS_POLLED_WITHIN: Duration = Duration::from_secs(3 * POLL.as_secs());

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
    /// Recently listed repositories' tags.
    tags: TagCache,
}

#[derive(Default)]
struct State {
    /// `None` until the first sweep finished.
    names: Option<BTreeSet<RepoName>>,
    /// While a sweep runs: the changes made meanwhile, applied to its result.
    during_sweep: Option<Vec<(RepoName, bool)>>,
    /// Change records already applied (or written by this process).
    seen: HashSet<String>,
    /// Repositories written (a manifest or tag stored or deleted), each
    /// with the instant from which one listing of it settles the change.
    changed: HashMap<RepoName, Instant>,
    /// Every repository counts as changed (at start, after a failed run or
    /// when change records may have been missed).
    all_changed: bool,
    /// When the other replicas' records were last read completely.
    polled: Option<Instant>,
}

impl State {
    /// `repo` must be listed again, by a listing at or after `from`.
    fn mark(&mut self, repo: &RepoName, from: Instant) {
        let at = self.changed.entry(repo.clone()).or_insert(from);
        *at = (*at).max(from);
    }

    fn set(&mut self, repo: &RepoName, present: bool) {
        self.mark(repo, Instant::now());
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
            state: RwLock::new(State { all_changed: true, ..State::default() }),
            apply: tokio::sync::Mutex::new(()),
            replica,
            seq: AtomicU64::new(0),
            tags: TagCache::default(),
        })
    }

    /// How often this index's store is swept ([`SWEEP`], [`SWEEP_SHARED`]).
    pub fn sweep_every(&self) -> Duration {
        if self.shared {
            SWEEP_SHARED
        } else {
            SWEEP
        }
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
        drop(state);
        self.tags.changed(repo, None);
        changed
    }

    /// Before a manifest or tag of `repo` is written or deleted: on a
    /// shared store, a change record goes out first, so no write can land
    /// that the other replicas cannot hear of (the write is refused when
    /// the record cannot be written).
    pub async fn before_write(&self, storage: &dyn Storage, repo: &RepoName) -> Result<(), StorageError> {
        self.publish(storage, repo, Change::Touched).await
    }

    /// A manifest of `repo` was stored (by this process).
    pub async fn stored(&self, storage: &dyn Storage, repo: &RepoName) {
        if self.read(|n| n.contains(repo)) == Some(true) {
            self.touch(repo);
            return;
        }
        let added = {
            let _apply = self.apply.lock().await;
            self.change(repo, true)
        };
        if added {
            self.publish_hint(storage, repo, Change::Added).await;
        }
    }

    /// A tag of `repo` was stored or deleted (by this process), or a write
    /// of a tag or manifest failed (it may have landed all the same).
    pub fn tagged(&self, repo: &RepoName) {
        self.touch(repo);
    }

    fn touch(&self, repo: &RepoName) {
        self.state.write().unwrap_or_else(|e| e.into_inner()).mark(repo, Instant::now());
        self.tags.changed(repo, None);
    }

    /// The tags of `repo` in lexical order (`None`: no such repository),
    /// from memory when this repository was listed recently and nothing
    /// changed it since (see [`tags`]); otherwise one
    /// [`Storage::tag_list`], kept for the next call.
    pub async fn tags(&self, storage: &dyn Storage, repo: &RepoName) -> Result<Option<Tags>, StorageError> {
        if self.shared && !self.polled_within(TAGS_POLLED_WITHIN) {
            self.tags.clear();
            return Ok(storage.tag_list(repo).await?.map(Tags::from));
        }
        let ticket = match self.tags.get(repo) {
            Ok(tags) => return Ok(Some(tags)),
            Err(ticket) => ticket,
        };
        // Held across the listing: if this future is dropped (the request
        // was cancelled) or the listing keeps nothing, the slot goes.
        let filling = ticket.map(|t| self.tags.filling(repo, t));
        let listed = storage.tag_list(repo).await.map(|t| t.map(Tags::from));
        if let (Some(filling), Ok(Some(tags))) = (filling, &listed) {
            filling.fill(tags);
        }
        listed
    }

    /// Whether `repo`'s tags were too many to keep in memory when last
    /// listed (its pages are then read from the store one at a time).
    pub fn tags_too_big(&self, repo: &RepoName) -> bool {
        self.tags.too_big(repo)
    }

    /// Whether the other replicas' records were last read completely
    /// within `age`.
    fn polled_within(&self, age: Duration) -> bool {
        self.state.read().unwrap_or_else(|e| e.into_inner()).polled.is_some_and(|at| at.elapsed() <= age)
    }

    /// The repositories written since the last call (by this process, or by
    /// another replica whose records were read). A change is forgotten once
    /// it has been returned at or after its settling instant (for another
    /// replica's record: [`SETTLE`] after it was written, by its own
    /// clock, when the write it announced has landed or failed). `None` when every repository must
    /// count as changed: the first call, after [`RepoIndex::all_changed`],
    /// or on a shared store whose records were not read completely within
    /// [`KEEP`] / 2 (some may be gone).
    pub fn take_changed(&self) -> Option<HashSet<RepoName>> {
        let now = Instant::now();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let changed: HashSet<RepoName> = state.changed.keys().cloned().collect();
        state.changed.retain(|_, from| *from > now);
        let stale = self.shared && state.polled.is_none_or(|at| at.elapsed() > KEEP / 2);
        let all = std::mem::replace(&mut state.all_changed, false) || stale;
        (!all).then_some(changed)
    }

    /// Makes the next [`RepoIndex::take_changed`] answer "everything" (a run
    /// that took the changes failed before using them).
    pub fn all_changed(&self) {
        self.state.write().unwrap_or_else(|e| e.into_inner()).all_changed = true;
    }

    /// A manifest of `repo` was deleted (by this process): the repository
    /// leaves the set when the store holds no manifest of it any more.
    pub async fn deleted(&self, storage: &dyn Storage, repo: &RepoName) {
        let removed = {
            let _apply = self.apply.lock().await;
            self.touch(repo);
            match storage.repo_exists(repo).await {
                Ok(present) => !present && self.change(repo, false),
                Err(e) => {
                    tracing::warn!(repository = %repo, error = %e, "repository index: cannot check a deleted repository; the next sweep will");
                    false
                }
            }
        };
        if removed {
            self.publish_hint(storage, repo, Change::Removed).await;
        }
    }

    /// Walks the whole layout and replaces the set (changes made during the
    /// walk are applied on top). Returns the number of repositories.
    pub async fn sweep(&self, storage: &dyn Storage) -> Result<usize, StorageError> {
        self.state.write().unwrap_or_else(|e| e.into_inner()).during_sweep = Some(Vec::new());
        let walked = self.walk_all(storage).await;
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
        let foreign: Vec<&String> = fresh.iter().filter(|n| !self.is_own(n)).collect();
        let mut applied = 0;
        for (i, name) in foreign.iter().enumerate() {
            match self.apply_record(storage, name).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(e) => {
                    // The records not applied must not count as seen, and the
                    // marks they would have set are unknown: GC and retention
                    // list everything next time.
                    let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                    for n in &foreign[i..] {
                        state.seen.remove(n.as_str());
                    }
                    state.all_changed = true;
                    return Err(e);
                }
            }
        }
        self.state.write().unwrap_or_else(|e| e.into_inner()).polled = Some(Instant::now());
        Ok(applied)
    }

    /// Reads one other replica's record and applies it; `false` when it
    /// is gone or unreadable.
    async fn apply_record(&self, storage: &dyn Storage, name: &str) -> Result<bool, StorageError> {
        let Some(bytes) = storage.state_get(&format!("{CHANGES}/{name}")).await? else { return Ok(false) };
        let Some((change, repo)) = parse_record(&bytes) else {
            tracing::warn!(record = %name, "repository index: skipping an unreadable change record");
            return Ok(false);
        };
        // Relisted until SETTLE after the record was written (its time is
        // in its name), by when its write has landed or failed: a record
        // read late (a replica that just started) costs one relist at most.
        let settle_left = record_age(name, SystemTime::now()).map_or(SETTLE, |age| SETTLE.saturating_sub(age));
        let settled = Instant::now() + settle_left;
        self.state.write().unwrap_or_else(|e| e.into_inner()).mark(&repo, settled);
        self.tags.changed(&repo, Some(settled));
        if change == Change::Touched && self.read(|n| n.contains(&repo)) == Some(true) {
            return Ok(true);
        }
        let _apply = self.apply.lock().await;
        let present = storage.repo_exists(&repo).await?;
        self.change(&repo, present);
        Ok(true)
    }

    fn is_own(&self, record: &str) -> bool {
        record.split('-').nth(1) == Some(self.replica.as_str())
    }

    /// Writes a change record for the other replicas (on a shared store).
    async fn publish(&self, storage: &dyn Storage, repo: &RepoName, change: Change) -> Result<(), StorageError> {
        if !self.shared {
            return Ok(());
        }
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{ms:013}-{}-{seq:06}", self.replica);
        let body = format!("{}{repo}\n", change.sign());
        // Our own record needs no applying.
        self.state.write().unwrap_or_else(|e| e.into_inner()).seen.insert(name.clone());
        storage.state_put(&format!("{CHANGES}/{name}"), Bytes::from(body)).await
    }

    /// [`RepoIndex::publish`] for a change of the set, which the other
    /// replicas' listings then show within [`POLL`]; when it cannot be
    /// written they show it at their next sweep.
    async fn publish_hint(&self, storage: &dyn Storage, repo: &RepoName, change: Change) {
        if let Err(e) = self.publish(storage, repo, change).await {
            tracing::warn!(repository = %repo, error = %e, "repository index: cannot publish a change; other replicas list it at their next sweep");
        }
    }
}

/// What a change record says happened to a repository (a hint: the
/// layout decides whether it is there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Removed,
    /// A manifest or tag of a repository already there was written.
    Touched,
}

impl Change {
    fn sign(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Touched => '~',
        }
    }
}

/// Every repository, one [`SWEEP_PAGE`] at a time.
impl RepoIndex {
    /// Every name in the layout. A name the set already holds is taken
    /// from it, so the copies GC's kept listings share stay shared; the set
    /// is built in one go (full nodes: a `BTreeSet` filled one name at a
    /// time in order leaves its nodes half empty).
    async fn walk_all(&self, storage: &dyn Storage) -> Result<BTreeSet<RepoName>, StorageError> {
        let mut names = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = storage.repo_page(after.as_deref(), SWEEP_PAGE).await?;
            let done = page.len() < SWEEP_PAGE;
            after = page.last().map(|r| r.to_string());
            let known = |r: RepoName| self.read(|old| old.get(&r).cloned()).flatten().unwrap_or(r);
            names.extend(page.into_iter().map(known));
            if done {
                return Ok(names.into_iter().collect());
            }
        }
    }
}

/// A change record's body: `+name`, `-name` or `~name`.
fn parse_record(bytes: &[u8]) -> Option<(Change, RepoName)> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let change = match text.chars().next()? {
        '+' => Change::Added,
        '-' => Change::Removed,
        '~' => Change::Touched,
        _ => return None,
    };
    Some((change, text[1..].parse().ok()?))
}

/// How old a record is by the time in its name.
fn record_age(name: &str, now: SystemTime) -> Option<Duration> {
    let ms: u64 = name.split('-').next()?.parse().ok()?;
    now.duration_since(UNIX_EPOCH + Duration::from_millis(ms)).ok()
}
