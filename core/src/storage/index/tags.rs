//! [`TagCache`]: the tags of recently listed repositories, in memory, so a
//! `tags/list` page or the web interface's tag counts cost no store
//! request (on object storage a listing is a bucket request; on s3s-fs
//! some 200 ms for 500 tags).
//!
//! An entry is the whole sorted tag list of one repository, read from the
//! layout by one [`Storage::tag_list`]. It is dropped whenever the
//! [`super::RepoIndex`] hears of a change to that repository (this
//! process's tag and manifest writes, and on a shared store the other
//! replicas' change records), and a listing that started before such a
//! change is not kept (each fill holds a ticket that the change takes
//! away). Another replica's write may land up to [`super::SETTLE`] after
//! its record was written, so a repository with such a record is listed
//! from the store until then. Entries also expire after [`TTL`] (a bound on
//! what nothing announced, e.g. an offline command run beside the server),
//! and the least recently used go when the cache outgrows [`BUDGET`]. A
//! repository whose list is too large to keep is remembered as such
//! ([`TagCache::too_big`]), so its pages are read from the store one at a
//! time, as without the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::name::RepoName;

/// The most memory the cached tag lists take (their strings, counted with
/// their allocation overhead).
pub const BUDGET: usize = 4 << 20;
/// How long a cached listing is served.
pub const TTL: Duration = Duration::from_secs(60);
/// Slots past which settled marks are dropped when another is added.
const PRUNE_AT: usize = 4096;
/// What a tag costs beyond its bytes: the `String` and its allocation.
const PER_TAG: usize = std::mem::size_of::<String>() + 16;

/// A repository's sorted tags, shared by every page served from them.
pub type Tags = Arc<[String]>;

/// See the module docs.
#[derive(Default)]
pub struct TagCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    slots: HashMap<RepoName, Slot>,
    /// The bytes of the `Ready` slots.
    bytes: usize,
    /// Ticks for fill tickets and recency.
    tick: u64,
}

enum Slot {
    /// A listing is being read; kept only if this ticket is still here.
    Filling(u64),
    Ready {
        tags: Tags,
        at: Instant,
        used: u64,
        cost: usize,
    },
    /// Listed from the store until then (another replica's write may still
    /// land).
    Unsettled(Instant),
    /// Its list is larger than an entry may be: pages are read from the
    /// store one at a time (until the repository changes).
    TooBig,
}

/// A listing's claim to be kept ([`TagCache::fill`]).
pub struct Ticket(u64);

/// A [`Ticket`] held while its listing runs: dropped unfilled (the listing
/// failed, found no repository, or its request was cancelled), it gives
/// its slot up, so no slot outlives the listing that made it.
pub struct Filling<'a> {
    cache: &'a TagCache,
    repo: &'a RepoName,
    ticket: Option<Ticket>,
}

impl Filling<'_> {
    /// Keeps `tags` ([`TagCache::fill`]).
    pub fn fill(mut self, tags: &Tags) {
        if let Some(ticket) = self.ticket.take() {
            self.cache.fill(self.repo, ticket, tags);
        }
    }
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.cache.abandon(self.repo, ticket);
        }
    }
}

impl TagCache {
    /// The cached tags of `repo`, if fresh; otherwise a ticket to fill the
    /// entry with a listing read from now on (`None`: do not keep it).
    pub fn get(&self, repo: &RepoName) -> Result<Tags, Option<Ticket>> {
        let now = Instant::now();
        let mut state = self.lock();
        state.tick += 1;
        let tick = state.tick;
        match state.slots.get_mut(repo) {
            Some(Slot::Ready { tags, at, used, .. }) if now.duration_since(*at) < TTL => {
                *used = tick;
                return Ok(tags.clone());
            }
            Some(Slot::Unsettled(until)) if *until > now => return Err(None),
            Some(Slot::TooBig) => return Err(None),
            // Another listing is under way; this one may replace it.
            _ => {}
        }
        state.remove(repo);
        state.slots.insert(repo.clone(), Slot::Filling(tick));
        Err(Some(Ticket(tick)))
    }

    /// `ticket`, held for the listing of `repo` (see [`Filling`]).
    pub fn filling<'a>(&'a self, repo: &'a RepoName, ticket: Ticket) -> Filling<'a> {
        Filling { cache: self, repo, ticket: Some(ticket) }
    }

    /// Keeps `tags`, listed under `ticket`, unless a change came since.
    pub fn fill(&self, repo: &RepoName, ticket: Ticket, tags: &Tags) {
        let cost = tags.iter().map(|t| t.len() + PER_TAG).sum::<usize>();
        let mut state = self.lock();
        if !matches!(state.slots.get(repo), Some(Slot::Filling(t)) if *t == ticket.0) {
            return;
        }
        if cost > BUDGET / 4 {
            state.slots.insert(repo.clone(), Slot::TooBig);
            return;
        }
        state.bytes += cost;
        let used = ticket.0;
        state.slots.insert(repo.clone(), Slot::Ready { tags: tags.clone(), at: Instant::now(), used, cost });
        if state.bytes > BUDGET {
            state.evict(BUDGET * 3 / 4);
        }
    }

    /// The listing under `ticket` found nothing to keep (no such
    /// repository, or it failed): its slot goes, so names that were
    /// never there take no memory.
    pub fn abandon(&self, repo: &RepoName, ticket: Ticket) {
        let mut state = self.lock();
        if matches!(state.slots.get(repo), Some(Slot::Filling(t)) if *t == ticket.0) {
            state.slots.remove(repo);
        }
    }

    /// `repo` changed: its entry (or a listing under way) is dropped, and
    /// until `unsettled_until` (when given and later than now) it is not
    /// cached again.
    pub fn changed(&self, repo: &RepoName, unsettled_until: Option<Instant>) {
        let mut state = self.lock();
        // A later change does not shorten an earlier one's wait.
        let waiting = match state.slots.get(repo) {
            Some(Slot::Unsettled(until)) => Some(*until),
            _ => None,
        };
        state.remove(repo);
        if let Some(until) = unsettled_until.max(waiting).filter(|u| *u > Instant::now()) {
            state.slots.insert(repo.clone(), Slot::Unsettled(until));
            if state.slots.len() > PRUNE_AT {
                state.evict(BUDGET);
            }
        }
    }

    /// Whether `repo`'s last listing was too large to keep (its pages are
    /// better read from the store, one listing from a start key each).
    pub fn too_big(&self, repo: &RepoName) -> bool {
        matches!(self.lock().slots.get(repo), Some(Slot::TooBig))
    }

    /// Drops every entry (changes may have been missed).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.slots.clear();
        state.bytes = 0;
    }

    /// The bytes the cached lists take (for tests and status).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn remove(&mut self, repo: &RepoName) {
        if let Some(Slot::Ready { cost, .. }) = self.slots.remove(repo) {
            self.bytes -= cost;
        }
    }

    /// Drops every settled `Unsettled` mark, and the least recently used
    /// lists until at most `to` bytes are left.
    fn evict(&mut self, to: usize) {
        let now = Instant::now();
        self.slots.retain(|_, s| !matches!(s, Slot::Unsettled(until) if *until <= now));
        let mut ready: Vec<(u64, RepoName)> = self
            .slots
            .iter()
            .filter_map(|(r, s)| match s {
                Slot::Ready { used, .. } => Some((*used, r.clone())),
                _ => None,
            })
            .collect();
        ready.sort_unstable_by_key(|(used, _)| *used);
        for (_, repo) in ready {
            if self.bytes <= to {
                break;
            }
            self.remove(&repo);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().expect("repository name")
    }

    fn tags(n: usize) -> Tags {
        (0..n).map(|i| format!("t{i:05}")).collect()
    }

    fn filled(c: &TagCache, r: &RepoName, t: &Tags) {
        let Err(Some(ticket)) = c.get(r) else { panic!("expected a ticket") };
        c.fill(r, ticket, t);
    }

    #[test]
    fn a_filled_entry_is_served_until_a_change() {
        let c = TagCache::default();
        let r = repo("a/b");
        let t = tags(3);
        filled(&c, &r, &t);
        assert_eq!(c.get(&r).ok().as_deref(), Some(&t[..]));
        c.changed(&r, None);
        assert!(matches!(c.get(&r), Err(Some(_))));
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn a_listing_that_crossed_a_change_is_not_kept() {
        let c = TagCache::default();
        let r = repo("a/b");
        let Err(Some(ticket)) = c.get(&r) else { panic!("expected a ticket") };
        c.changed(&r, None);
        c.fill(&r, ticket, &tags(2));
        assert!(c.get(&r).is_err(), "the stale listing must not be served");
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn an_unknown_repository_takes_no_slot() {
        let c = TagCache::default();
        for i in 0..100 {
            let r = repo(&format!("no/such{i}"));
            let Err(Some(ticket)) = c.get(&r) else { panic!("expected a ticket") };
            c.abandon(&r, ticket);
        }
        assert_eq!(c.lock().slots.len(), 0);
    }

    #[test]
    fn a_listing_dropped_unfilled_gives_its_slot_up() {
        let c = TagCache::default();
        let r = repo("a/b");
        let Err(Some(ticket)) = c.get(&r) else { panic!("expected a ticket") };
        drop(c.filling(&r, ticket));
        assert_eq!(c.lock().slots.len(), 0, "a cancelled listing leaves no slot");
        let Err(Some(ticket)) = c.get(&r) else { panic!("expected a ticket") };
        c.filling(&r, ticket).fill(&tags(2));
        assert!(c.get(&r).is_ok());
    }

    #[test]
    fn an_unsettled_repository_is_not_cached_until_it_settles() {
        let c = TagCache::default();
        let r = repo("a/b");
        c.changed(&r, Some(Instant::now() + Duration::from_secs(60)));
        assert!(matches!(c.get(&r), Err(None)));
        c.changed(&r, None);
        assert!(matches!(c.get(&r), Err(None)), "a write of this process does not end the wait");
        let c = TagCache::default();
        c.changed(&r, Some(Instant::now() - Duration::from_secs(1)));
        assert!(matches!(c.get(&r), Err(Some(_))));
    }

    #[test]
    fn the_least_recently_used_lists_go_past_the_budget() {
        let c = TagCache::default();
        // Each list takes a little over a tenth of the budget.
        let per = BUDGET / 10 / (7 + PER_TAG) + 1;
        let big = tags(per);
        let names: Vec<RepoName> = (0..12).map(|i| repo(&format!("r/{i:02}"))).collect();
        for r in &names {
            filled(&c, r, &big);
            // r/00 stays in use.
            assert!(c.get(&names[0]).is_ok());
        }
        assert!(c.bytes() <= BUDGET);
        assert!(c.get(&names[0]).is_ok(), "the list in use stays");
        assert!(c.get(&names[1]).is_err(), "the oldest unused list went");
        assert!(c.get(&names[11]).is_ok(), "the newest stays");
    }

    #[test]
    fn a_list_too_big_for_the_cache_is_not_kept() {
        let c = TagCache::default();
        let r = repo("a/b");
        filled(&c, &r, &tags(BUDGET / 4 / PER_TAG + 1));
        assert!(matches!(c.get(&r), Err(None)), "not kept, and no ticket to fill it again");
        assert!(c.too_big(&r));
        assert_eq!(c.bytes(), 0);
        c.changed(&r, None);
        assert!(!c.too_big(&r), "a change lists it again");
        assert!(matches!(c.get(&r), Err(Some(_))));
    }
}
