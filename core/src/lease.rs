//! [`Lease`]: one holder at a time for a job that several replicas on one
//! storage could run (garbage collection and retention), kept in the
//! storage's shared state ([`Storage::state_put`]/[`Storage::state_get`])
//! without conditional writes, which some stores ignore (Garage).
//!
//! The record ([`LeaseRecord`]) names the holder (replica name, for
//! people), a random `nonce` (the claim's identity: two replicas may share a
//! name), an `epoch` that every new claim raises (the fencing token), and
//! the wall-clock expiry.
//!
//! # Acquiring
//! Read the record; if it is unexpired and not ours, the lease is busy.
//! Otherwise write a claim (epoch + 1, expiry now + ttl), wait `settle`,
//! read back: the claim is ours only if the record still carries our nonce
//! **and** the time from the first read to the end of our write was shorter
//! than `settle`. Why exactly one of two contenders A, B wins: say A's write
//! landed first and A read its own claim back, at least `settle` after its
//! write. If B also won, B's write landed after A's read-back, so more than
//! `settle` after A's write; B's first read came less than `settle` before
//! the end of B's write, hence after A's write, so B saw A's unexpired
//! claim and gave up. (This needs read-after-write consistency, which S3,
//! GCS, Azure and Garage give, and clocks in sync within the margin.)
//!
//! # Holding
//! A [`Hold`] renews every `ttl / 4` (read: still ours? then write a new
//! expiry). Its safety rests on the local monotonic clock, not on the
//! store: it acts only while the time since the start of its last
//! successful renew is under `ttl - margin` (`margin = ttl / 4`), since
//! any other replica may take over once `ttl` has passed after that renew.
//! A holder that was paused (SIGSTOP, a long GC pause, a frozen VM) and
//! wakes after that bound refuses to act, does not renew, and must acquire
//! again like anyone else. [`Hold::check`] is what every destructive step
//! calls: the local bound each time, and the record in the store (still
//! our nonce and epoch) at most every [`RECHECK`].
//!
//! # A claim that was too slow
//! A claim whose read + write took `settle` or longer does not count, but
//! its record stays in the store, unexpired for `ttl`. Left alone it would
//! keep everyone, its writer included, out for a whole `ttl` (a minute by
//! default) after one slow disk write. Its writer remembers it and may
//! claim over it (or release it) once [`RECLAIM_AFTER`] has passed since
//! it read the record back: the only replica that could have believed it
//! held the lease then is one whose claim our record overwrote, whose
//! read-back came before our write landed; it reads the record again at
//! its next [`Hold::check`] after [`RECHECK`] and stops, and the second
//! `RECHECK` covers a step it had already begun. Nobody else may claim
//! over the record before it expires. A claim whose attempt was dropped
//! before it was read back (shutdown, a client that hung up) is
//! remembered the same way.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::retention::now_ms;
use crate::storage::{Storage, StorageError};

mod keeper;
pub use keeper::{LeaseKeeper, LeaseStatus};

/// The most time between two reads of the record by [`Hold::check`].
pub const RECHECK: Duration = Duration::from_secs(1);

/// How long after reading back its own too-slow claim a replica may claim
/// over it (see the module docs).
pub const RECLAIM_AFTER: Duration = Duration::from_secs(2 * RECHECK.as_secs());

/// Where a lease record lives: the two shared-state calls of [`Storage`]
/// (every storage is one), and a seam for tests.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync {
    /// The document `name`, if any.
    async fn get(&self, name: &str) -> Result<Option<Bytes>, StorageError>;
    /// Replaces the document `name`.
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError>;
}

#[async_trait::async_trait]
impl LeaseStore for Arc<dyn Storage> {
    async fn get(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        self.state_get(name).await
    }

    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        self.state_put(name, bytes).await
    }
}

/// Timing of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a claim or renew is valid for the other replicas.
    pub ttl: Duration,
    /// The wait between writing a claim and reading it back; also the
    /// longest a claim's read + write may take.
    pub settle: Duration,
}

impl LeaseTiming {
    /// The holder acts only while the time since its last renew is under `ttl - margin`.
    pub fn margin(&self) -> Duration {
        self.ttl / 4
    }

    /// Time between renews.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    fn act_within(&self) -> Duration {
        self.ttl.saturating_sub(self.margin())
    }
}

/// The stored record of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder's replica name (for people; not unique).
    pub holder: String,
    /// Raised by every new claim: the fencing token.
    pub epoch: u64,
    /// The claim's random identity.
    pub nonce: String,
    /// Wall-clock expiry, Unix milliseconds.
    pub expires_ms: u64,
    /// Last claim or renew, Unix milliseconds.
    pub renewed_ms: u64,
}

impl LeaseRecord {
    /// Whether the lease is free at `now_ms` (Unix milliseconds).
    pub fn expired_at(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// Why a lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("lease record in storage: {0}")]
    Storage(#[from] StorageError),
    /// Another replica holds it.
    #[error("held by replica {holder} (epoch {epoch}) for another {remaining_ms} ms")]
    Busy { holder: String, epoch: u64, remaining_ms: u64 },
    /// Our claim or hold is gone (taken over, or our renew time lapsed).
    #[error("lease lost: {0}")]
    Lost(String),
}

/// A named lease in `store`'s shared state, contended for as `holder`.
pub struct Lease {
    store: Box<dyn LeaseStore>,
    name: String,
    holder: String,
    timing: LeaseTiming,
    /// Our last claim that did not count (too slow, or given up before it
    /// was read back), while its record may still be in the store: its
    /// nonce, and when we wrote or read it back.
    slow_claim: Mutex<Option<(String, Instant)>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("name", &self.name).field("holder", &self.holder).finish_non_exhaustive()
    }
}

impl Lease {
    /// The lease kept in the shared-state document `name` (a valid state
    /// name, e.g. `leases/maintenance`).
    pub fn new(store: impl LeaseStore + 'static, name: &str, holder: &str, timing: LeaseTiming) -> Arc<Lease> {
        Arc::new(Lease {
            store: Box::new(store),
            name: name.to_owned(),
            holder: holder.to_owned(),
            timing,
            slow_claim: Mutex::new(None),
        })
    }

    fn slow_claim(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        self.slow_claim.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers our claim `nonce` that did not count, read back now.
    fn remember_slow_claim(&self, nonce: &str) {
        *self.slow_claim() = Some((nonce.to_owned(), Instant::now()));
    }

    /// Whether `record` is our own too-slow claim, and if so how long until
    /// we may claim over it (zero: now).
    fn own_slow_claim(&self, record: &LeaseRecord) -> Option<Duration> {
        let slow = self.slow_claim();
        let (nonce, read_back) = slow.as_ref()?;
        (*nonce == record.nonce).then(|| RECLAIM_AFTER.saturating_sub(read_back.elapsed()))
    }

    /// When the record in the store is our own too-slow claim: how long
    /// until we may claim over it. `None` when it is not (or cannot be read).
    pub async fn own_slow_claim_wait(&self) -> Option<Duration> {
        let record = self.read().await.ok()??;
        if record.expired_at(now_ms()) {
            return None;
        }
        self.own_slow_claim(&record)
    }

    /// Frees the lease if the record is still our own too-slow claim and
    /// [`RECLAIM_AFTER`] has passed (graceful shutdown: the next replica
    /// need not wait for its expiry).
    pub async fn release_slow_claim(&self) -> Result<(), LeaseError> {
        let Some(mut record) = self.read().await? else {
            return Ok(());
        };
        if record.expired_at(now_ms()) || self.own_slow_claim(&record) != Some(Duration::ZERO) {
            return Ok(());
        }
        record.expires_ms = now_ms();
        self.write(&record).await?;
        *self.slow_claim() = None;
        tracing::info!(lease = %self.name, epoch = record.epoch, "released our claim that was too slow to count");
        Ok(())
    }

    /// The timing this lease was built with.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// The replica name claims are made as.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The record as stored; `None` if there is none or it does not parse
    /// (a claim then starts again at epoch 1).
    pub async fn read(&self) -> Result<Option<LeaseRecord>, StorageError> {
        let Some(raw) = self.store.get(&self.name).await? else {
            return Ok(None);
        };
        match serde_json::from_slice(&raw) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "unreadable lease record; treating the lease as free");
                Ok(None)
            }
        }
    }

    async fn write(&self, record: &LeaseRecord) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StorageError::Backend(format!("encoding a lease: {e}")))?;
        self.store.put(&self.name, Bytes::from(bytes)).await
    }

    /// Tries to take the lease (see the module docs). Takes about `settle`
    /// when the lease is free; answers at once when it is busy.
    pub async fn try_acquire(self: &Arc<Self>) -> Result<Hold, LeaseError> {
        let started = Instant::now();
        let current = self.read().await?;
        let now = now_ms();
        if let Some(r) = current.as_ref().filter(|r| !r.expired_at(now)) {
            let remaining_ms = match self.own_slow_claim(r) {
                // Our own claim that did not count: ours to claim over.
                Some(Duration::ZERO) => None,
                Some(wait) => Some(wait.as_millis() as u64),
                None => Some(r.expires_ms.saturating_sub(now)),
            };
            if let Some(remaining_ms) = remaining_ms {
                return Err(LeaseError::Busy { holder: r.holder.clone(), epoch: r.epoch, remaining_ms });
            }
        }
        let epoch = current.as_ref().map_or(0, |r| r.epoch) + 1;
        let claim = LeaseRecord {
            holder: self.holder.clone(),
            epoch,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            expires_ms: now + self.timing.ttl.as_millis() as u64,
            renewed_ms: now,
        };
        // Remembered until it counts: if this attempt is dropped before
        // (shutdown, a client gone), the record it leaves is known to be
        // ours, to claim over or release after RECLAIM_AFTER rather than
        // blocking everyone, us included, for the whole ttl.
        self.remember_slow_claim(&claim.nonce);
        self.write(&claim).await?;
        self.remember_slow_claim(&claim.nonce);
        let claim_took = started.elapsed();
        tokio::time::sleep(self.timing.settle).await;
        let back = self.read().await?;
        if back.as_ref().map(|r| &r.nonce) != Some(&claim.nonce) {
            let r = back.unwrap_or_else(|| claim.clone());
            return Err(LeaseError::Busy {
                holder: r.holder,
                epoch: r.epoch,
                remaining_ms: r.expires_ms.saturating_sub(now_ms()),
            });
        }
        if claim_took >= self.timing.settle {
            // Another claim may have been read back as the winner before
            // ours landed: ours cannot count (see the module docs). Its
            // record blocks the lease until it expires, or until we claim
            // over it after RECLAIM_AFTER.
            self.remember_slow_claim(&claim.nonce);
            return Err(LeaseError::Lost(format!(
                "the claim took {} ms to read and write, not under the settle time of {} ms",
                claim_took.as_millis(),
                self.timing.settle.as_millis()
            )));
        }
        if started.elapsed() >= self.timing.act_within() {
            self.remember_slow_claim(&claim.nonce);
            return Err(LeaseError::Lost("the claim took longer than the lease may be acted on".into()));
        }
        *self.slow_claim() = None;
        tracing::info!(lease = %self.name, holder = %self.holder, epoch, "lease acquired");
        Ok(Hold {
            lease: self.clone(),
            epoch,
            nonce: claim.nonce,
            state: Mutex::new(HoldState { renewed: started, checked: Instant::now(), lost: None }),
        })
    }
}

/// A lease this process holds (see the module docs).
pub struct Hold {
    lease: Arc<Lease>,
    epoch: u64,
    nonce: String,
    state: Mutex<HoldState>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").field("lease", &self.lease.name).field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

struct HoldState {
    /// Start of the last successful claim or renew (local monotonic clock).
    renewed: Instant,
    /// Last time the record was read and found ours.
    checked: Instant,
    /// Why the hold ended, once it did.
    lost: Option<String>,
}

impl Hold {
    /// The claim's epoch (fencing token).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The lease held.
    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lose(&self, why: String) -> LeaseError {
        let mut st = self.lock();
        if st.lost.is_none() {
            tracing::warn!(lease = %self.lease.name, epoch = self.epoch, reason = %why, "lease lost");
            st.lost = Some(why.clone());
        }
        LeaseError::Lost(st.lost.clone().unwrap_or(why))
    }

    /// The local bound alone (no store request): the hold is not lost and
    /// the last renew started less than `ttl - margin` ago.
    pub fn check_local(&self) -> Result<(), LeaseError> {
        let st = self.lock();
        if let Some(why) = &st.lost {
            return Err(LeaseError::Lost(why.clone()));
        }
        let since = st.renewed.elapsed();
        drop(st);
        if since >= self.lease.timing.act_within() {
            return Err(self.lose(format!(
                "{} ms since the last renew, not under ttl - margin ({} ms)",
                since.as_millis(),
                self.lease.timing.act_within().as_millis()
            )));
        }
        Ok(())
    }

    /// Whether the hold may still act, by the local bound alone.
    pub fn is_valid(&self) -> bool {
        self.check_local().is_ok()
    }

    fn is_ours(&self, r: &LeaseRecord) -> bool {
        r.nonce == self.nonce && r.epoch == self.epoch
    }

    /// Before a destructive step: the local bound, then (at most every
    /// [`RECHECK`]) the record in the store must still be our claim.
    pub async fn check(&self) -> Result<(), LeaseError> {
        self.check_local()?;
        if self.lock().checked.elapsed() < RECHECK {
            return Ok(());
        }
        let record = self.lease.read().await?;
        if !record.as_ref().is_some_and(|r| self.is_ours(r)) {
            let by = record.map_or_else(|| "nobody".to_owned(), |r| format!("{} (epoch {})", r.holder, r.epoch));
            return Err(self.lose(format!("the record now names {by}")));
        }
        self.lock().checked = Instant::now();
        // The read may have taken long: judge the local bound again.
        self.check_local()
    }

    /// Extends the lease by `ttl`, if it is still ours and its renew time
    /// has not lapsed (a lapsed hold is lost for good).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        self.check_local()?;
        let started = Instant::now();
        let record = self.lease.read().await?;
        let Some(mut r) = record.filter(|r| self.is_ours(r)) else {
            return Err(self.lose("taken over by another replica".into()));
        };
        // The read may have been slow: never extend a hold that lapsed meanwhile.
        self.check_local()?;
        let now = now_ms();
        r.renewed_ms = now;
        r.expires_ms = now + self.lease.timing.ttl.as_millis() as u64;
        self.lease.write(&r).await?;
        let mut st = self.lock();
        st.renewed = started;
        st.checked = Instant::now();
        Ok(())
    }

    /// Gives the lease up at once (others need not wait for the expiry), if
    /// it is still ours.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let was_valid = self.check_local().is_ok();
        let _ = self.lose("released".into());
        if !was_valid {
            return Ok(());
        }
        if let Some(mut r) = self.lease.read().await?.filter(|r| self.is_ours(r)) {
            r.expires_ms = now_ms();
            self.lease.write(&r).await?;
            tracing::info!(lease = %self.lease.name, epoch = self.epoch, "lease released");
        }
        Ok(())
    }
}

/// What a destructive run asks before each step: may I still act?
#[async_trait::async_trait]
pub trait Fence: Send + Sync {
    /// `Err(why)` when the run must stop at once.
    async fn check(&self) -> Result<(), String>;
}

#[async_trait::async_trait]
impl Fence for Hold {
    async fn check(&self) -> Result<(), String> {
        Hold::check(self).await.map_err(|e| e.to_string())
    }
}

/// A shared [`Fence`], for run options (`Debug` and `Clone`).
#[derive(Clone)]
pub struct FenceRef(pub Arc<dyn Fence>);

impl std::fmt::Debug for FenceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fence")
    }
}

impl FenceRef {
    /// Checks the fence, if any.
    pub async fn check_opt(fence: Option<&FenceRef>) -> Result<(), String> {
        match fence {
            Some(f) => f.0.check().await,
            None => Ok(()),
        }
    }
}
