//! The coordination between writers and garbage collection: writers pin
//! and touch digests, a run claims the digests it deletes (see the
//! [module docs](super) for why that makes collection safe while serving).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::digest::Digest;

/// Coordination between writers and garbage collection (see the module docs).
pub struct GcGuard {
    /// Untracked digests count as touched at this instant (process start);
    /// `None` for an offline run against storage nobody else writes.
    floor: Option<Instant>,
    state: Mutex<GuardState>,
    released: tokio::sync::Notify,
    /// One collection at a time.
    pub(super) run_lock: tokio::sync::Mutex<()>,
    /// What the writes changed, when the storage reports it
    /// ([`super::GuardedStorage::with_index`]).
    index: std::sync::OnceLock<Arc<crate::storage::RepoIndex>>,
    /// The mark phase's listings, kept between runs.
    pub(crate) inventories: super::inventory::Inventories,
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
            index: std::sync::OnceLock::new(),
            inventories: super::inventory::Inventories::default(),
        }
    }

    /// Reports writes to `index` (set once, by the storage wrapper).
    pub(super) fn set_index(&self, index: Arc<crate::storage::RepoIndex>) {
        let _ = self.index.set(index);
    }

    /// The index the writes report to, if any.
    pub(crate) fn index(&self) -> Option<&Arc<crate::storage::RepoIndex>> {
        self.index.get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins `digests` until the returned value is dropped (which touches
    /// them). Waits while any of them is being deleted.
    pub async fn pin(self: &Arc<Self>, digests: Vec<Digest>) -> PinnedDigests {
        loop {
            let notified = {
                let mut st = self.lock();
                if digests.iter().all(|d| !st.deleting.contains(d)) {
                    for d in &digests {
                        *st.pinned.entry(d.clone()).or_default() += 1;
                    }
                    return PinnedDigests { guard: self.clone(), digests };
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
    pub(super) fn claim(self: &Arc<Self>, digest: &Digest, t0: Instant, grace: Duration) -> Option<DeletionClaim> {
        let mut st = self.lock();
        if !self.collectable(&st, digest, t0, grace, Instant::now()) {
            return None;
        }
        st.deleting.insert(digest.clone());
        Some(DeletionClaim { guard: self.clone(), digest: digest.clone() })
    }

    /// Claims every digest of `digests` for deletion by a run that started
    /// at `t0`, or none when any is not collectable (retention removes an
    /// image's manifests and blobs together or not at all). Writers of them
    /// wait until the returned value is dropped.
    pub fn claim_all(self: &Arc<Self>, digests: &[Digest], t0: Instant, grace: Duration) -> Option<DeletionClaims> {
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
        Some(DeletionClaims { guard: self.clone(), digests: unique })
    }

    /// Whether `digest` would be claimed now (dry runs).
    pub(super) fn would_claim(&self, digest: &Digest, t0: Instant, grace: Duration) -> bool {
        let st = self.lock();
        self.collectable(&st, digest, t0, grace, Instant::now())
    }

    /// Forgets touches that can no longer protect anything.
    pub(super) fn prune(&self, grace: Duration) {
        let now = Instant::now();
        self.lock().touched.retain(|_, t| now.duration_since(*t) <= grace);
    }

    /// Holds off every other collection and retention run until the
    /// returned guard is dropped (both delete on the strength of one listing);
    /// pass it to [`collect_locked`](super::collect_locked).
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
pub struct PinnedDigests {
    guard: Arc<GcGuard>,
    digests: Vec<Digest>,
}

impl Drop for PinnedDigests {
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
pub(super) struct DeletionClaim {
    guard: Arc<GcGuard>,
    digest: Digest,
}

impl Drop for DeletionClaim {
    fn drop(&mut self) {
        self.guard.lock().deleting.remove(&self.digest);
        self.guard.released.notify_waiters();
    }
}

/// Digests claimed by [`GcGuard::claim_all`]; released when dropped.
pub struct DeletionClaims {
    guard: Arc<GcGuard>,
    digests: Vec<Digest>,
}

impl Drop for DeletionClaims {
    fn drop(&mut self) {
        let mut st = self.guard.lock();
        for d in &self.digests {
            st.deleting.remove(d);
        }
        drop(st);
        self.guard.released.notify_waiters();
    }
}
