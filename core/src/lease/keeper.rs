//! [`LeaseKeeper`]: keeps this replica's hold of one [`Lease`] over time.
//! A replica that *contends* (it runs the job on a schedule) takes the
//! lease when it is free and renews it while it lives, so one replica is
//! the runner until it dies or is paused; runs asked for on demand use the
//! hold, or try once to acquire it and, on a replica that does not
//! contend, give it back afterwards. An on-demand run whose attempt met
//! this replica's own claim that was too slow to count (see
//! [`super::RECLAIM_AFTER`]) waits for it and tries again, twice at most.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Hold, Lease, LeaseError, LeaseRecord, RECLAIM_AFTER};
use crate::retention::now_ms;

/// The lease as one replica sees it (`/admin/status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseStatus {
    /// The record in the store (`None`: never taken, or unreadable).
    pub record: Option<LeaseRecord>,
    /// Whether the record is unexpired now.
    pub active: bool,
    /// Whether this replica holds it (and may act on it).
    pub held_here: bool,
    /// Whether this replica contends for it.
    pub contending: bool,
    /// Times this replica acquired it, and lost it (taken over or lapsed).
    pub acquired_total: u64,
    pub lost_total: u64,
}

/// Keeps the hold of one lease (see the module docs).
pub struct LeaseKeeper {
    lease: Arc<Lease>,
    /// The current hold; the async lock makes acquires and renews one at a time.
    hold: tokio::sync::Mutex<Option<Arc<Hold>>>,
    /// Whether a hold is in place (for cheap reads without the async lock).
    held: AtomicBool,
    epoch: AtomicU64,
    contend: AtomicBool,
    /// Set by [`LeaseKeeper::release`]: no more acquiring (shutdown).
    closed: AtomicBool,
    acquired: AtomicU64,
    lost: AtomicU64,
}

impl LeaseKeeper {
    /// A keeper of `lease`; `contend`: take and keep it whenever it is free.
    pub fn new(lease: Arc<Lease>, contend: bool) -> Arc<LeaseKeeper> {
        Arc::new(LeaseKeeper {
            lease,
            hold: tokio::sync::Mutex::new(None),
            held: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            contend: AtomicBool::new(contend),
            closed: AtomicBool::new(false),
            acquired: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        })
    }

    /// The lease kept.
    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// Changes whether this replica contends (config reload).
    pub fn set_contend(&self, contend: bool) {
        self.contend.store(contend, Ordering::Relaxed);
    }

    /// Whether this replica contends.
    pub fn contends(&self) -> bool {
        self.contend.load(Ordering::Relaxed)
    }

    /// Whether this replica holds the lease now, and its epoch (no store request).
    pub fn held(&self) -> (bool, u64) {
        (self.held.load(Ordering::Relaxed), self.epoch.load(Ordering::Relaxed))
    }

    /// How often this replica acquired and lost the lease.
    pub fn counts(&self) -> (u64, u64) {
        (self.acquired.load(Ordering::Relaxed), self.lost.load(Ordering::Relaxed))
    }

    /// Drops `slot`'s hold if it can no longer act; returns the valid one.
    fn valid(&self, slot: &mut Option<Arc<Hold>>) -> Option<Arc<Hold>> {
        if let Some(h) = slot.as_ref() {
            if h.is_valid() {
                return Some(h.clone());
            }
            *slot = None;
            self.held.store(false, Ordering::Relaxed);
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        None
    }

    async fn acquire_into(&self, slot: &mut Option<Arc<Hold>>) -> Result<Arc<Hold>, LeaseError> {
        match self.lease.try_acquire().await {
            Ok(h) => {
                let h = Arc::new(h);
                self.epoch.store(h.epoch(), Ordering::Relaxed);
                self.held.store(true, Ordering::Relaxed);
                self.acquired.fetch_add(1, Ordering::Relaxed);
                *slot = Some(h.clone());
                Ok(h)
            }
            Err(e) => Err(e),
        }
    }

    /// The hold a run acts under: the current one while valid, else an
    /// attempt to acquire (about `settle` when free; at once when another
    /// replica holds it; a few seconds at most when the record is our own
    /// claim that was too slow to count).
    pub async fn hold(&self) -> Result<Arc<Hold>, LeaseError> {
        let mut slot = self.hold.lock().await;
        if let Some(h) = self.valid(&mut slot) {
            return Ok(h);
        }
        if self.closed.load(Ordering::Relaxed) {
            return Err(LeaseError::Lost("this replica is shutting down".into()));
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match self.acquire_into(&mut slot).await {
                Ok(h) => return Ok(h),
                Err(e @ LeaseError::Storage(_)) => return Err(e),
                Err(e) => e,
            };
            match self.lease.own_slow_claim_wait().await {
                Some(wait) if attempts < 3 => tokio::time::sleep(wait + Duration::from_millis(10)).await,
                _ => return Err(err),
            }
        }
    }

    /// After a run on `hold`: a replica that does not contend gives the
    /// lease back at once.
    pub async fn done(&self, hold: &Arc<Hold>) {
        if self.contends() {
            return;
        }
        let mut slot = self.hold.lock().await;
        if slot.as_ref().is_some_and(|h| Arc::ptr_eq(h, hold)) {
            *slot = None;
            self.held.store(false, Ordering::Relaxed);
            if let Err(e) = hold.release().await {
                tracing::warn!(error = %e, "cannot release the lease; it expires by itself");
            }
        }
    }

    /// One step of the schedule: renew the hold, or (contending) try to
    /// take a free lease. Returns how long to wait before the next step.
    pub async fn tick(&self) -> Duration {
        let every = self.lease.timing().renew_every();
        let mut slot = self.hold.lock().await;
        if let Some(h) = self.valid(&mut slot) {
            match h.renew().await {
                Ok(()) => {}
                Err(LeaseError::Storage(e)) => {
                    tracing::warn!(error = %e, "cannot renew the lease; trying again");
                }
                Err(_) => {
                    self.valid(&mut slot);
                }
            }
            return every;
        }
        if !self.contends() || self.closed.load(Ordering::Relaxed) {
            return every;
        }
        match self.acquire_into(&mut slot).await {
            Ok(_) => every,
            Err(LeaseError::Busy { remaining_ms, .. }) => {
                // Try right after it expires (its holder may be dead), or
                // once our own too-slow claim may be claimed over.
                every.min(Duration::from_millis(remaining_ms + 20))
            }
            Err(LeaseError::Lost(why)) => {
                tracing::warn!(reason = %why, "our claim of the lease did not count; trying again");
                every.min(RECLAIM_AFTER + Duration::from_millis(20))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the lease");
                every
            }
        }
    }

    /// Runs [`LeaseKeeper::tick`] for ever.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let keeper = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = keeper.tick().await;
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// Gives the lease back if held, or our own claim that did not count,
    /// waiting (at most [`RECLAIM_AFTER`]) until that may be released, and
    /// acquires no more (graceful shutdown: the next process need not wait
    /// for the expiry). An attempt in flight is waited for, not cut off:
    /// call this before stopping the task of [`LeaseKeeper::spawn`].
    pub async fn release(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let mut slot = self.hold.lock().await;
        let released = match slot.take() {
            Some(h) => {
                self.held.store(false, Ordering::Relaxed);
                h.release().await
            }
            None => {
                if let Some(wait) = self.lease.own_slow_claim_wait().await {
                    tokio::time::sleep(wait + Duration::from_millis(10)).await;
                }
                self.lease.release_slow_claim().await
            }
        };
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot release the lease; it expires by itself");
        }
    }

    /// The lease as seen now (one read of the record).
    pub async fn status(&self) -> Result<LeaseStatus, LeaseError> {
        let record = self.lease.read().await?;
        let active = record.as_ref().is_some_and(|r| !r.expired_at(now_ms()));
        let held_here = {
            let slot = self.hold.try_lock().ok();
            match slot {
                Some(s) => s.as_ref().is_some_and(|h| h.is_valid()),
                None => self.held.load(Ordering::Relaxed),
            }
        };
        let (acquired_total, lost_total) = self.counts();
        Ok(LeaseStatus { record, active, held_here, contending: self.contends(), acquired_total, lost_total })
    }
}
