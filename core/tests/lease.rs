//! The maintenance lease ([`cove_core::lease`]) on the filesystem driver,
//! which, like Garage, offers no conditional writes: contenders at once,
//! expiry and takeover, a holder whose renew time lapsed, growing epochs,
//! the keeper, a claim too slow to count (and its writer taking the lease
//! over it), and a fenced garbage collection.

use std::sync::Arc;
use std::time::Duration;

use cove_core::gc::{self, GcError, GcGuard, GcOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cove_core::lease::{Fence, FenceRef, Lease, LeaseError, LeaseKeeper, LeaseStore, LeaseTiming, RECLAIM_AFTER};
use cove_core::StorageError;
use cove_core::{Digest, Storage};

fn store() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = cove_backends::FsStorage::open(dir.path()).expect("fs storage");
    (dir, Arc::new(s))
}

fn timing(ttl_ms: u64, settle_ms: u64) -> LeaseTiming {
    LeaseTiming { ttl: Duration::from_millis(ttl_ms), settle: Duration::from_millis(settle_ms) }
}

/// A store whose next `slow_puts` writes take `delay` (a loaded disk).
struct SlowStore {
    inner: Arc<dyn Storage>,
    slow_puts: AtomicU64,
    delay: Duration,
}

#[async_trait::async_trait]
impl LeaseStore for SlowStore {
    async fn get(&self, name: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        self.inner.state_get(name).await
    }

    async fn put(&self, name: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        if self.slow_puts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.state_put(name, bytes).await
    }
}

fn slow(s: &Arc<dyn Storage>, slow_puts: u64) -> SlowStore {
    SlowStore { inner: s.clone(), slow_puts: AtomicU64::new(slow_puts), delay: Duration::from_millis(80) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contenders_at_once_exactly_one_wins() {
    let (_d, s) = store();
    for round in 0..15u64 {
        let name = format!("leases/round-{round}");
        let contenders: Vec<Arc<Lease>> =
            (0..3).map(|i| Lease::new(s.clone(), &name, &format!("r{i}"), timing(5000, 150))).collect();
        let tasks: Vec<_> = contenders
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let l = l.clone();
                // Starts spread over the settle time, and all at once.
                let delay = Duration::from_millis((round * 37 + i as u64 * 53) % 150 * (round % 2));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    l.try_acquire().await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                Ok(h) => winners.push(h),
                Err(LeaseError::Busy { .. }) | Err(LeaseError::Lost(_)) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner");
        let record = contenders[0].read().await.expect("read").expect("record");
        assert_eq!(record.epoch, winners[0].epoch(), "round {round}: the record is the winner's claim");
        winners[0].check().await.expect("the winner may act");
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_a_higher_epoch() {
    let (_d, s) = store();
    let a = Lease::new(s.clone(), "leases/m", "a", timing(600, 50));
    let b = Lease::new(s.clone(), "leases/m", "b", timing(600, 50));
    let ha = a.try_acquire().await.expect("a takes the free lease");
    assert_eq!(ha.epoch(), 1);
    match b.try_acquire().await {
        Err(LeaseError::Busy { holder, epoch, remaining_ms }) => {
            assert_eq!((holder.as_str(), epoch), ("a", 1));
            assert!(remaining_ms <= 600, "{remaining_ms}");
        }
        other => panic!("b while a holds: {other:?}"),
    }
    // a dies (no renew); once the ttl passed b takes over.
    tokio::time::sleep(Duration::from_millis(650)).await;
    let hb = b.try_acquire().await.expect("b takes the expired lease");
    assert_eq!(hb.epoch(), 2, "epoch raised");
    assert!(ha.check().await.is_err(), "a may not act any more");
    assert!(ha.renew().await.is_err(), "nor renew");
    assert_eq!(b.read().await.expect("read").expect("record").holder, "b", "a's failed renew wrote nothing");
    hb.check().await.expect("b acts");
}

#[tokio::test]
async fn a_holder_whose_renew_time_lapsed_refuses_to_act() {
    let (_d, s) = store();
    let a = Lease::new(s.clone(), "leases/m", "a", timing(400, 50));
    let ha = a.try_acquire().await.expect("acquire");
    ha.check().await.expect("fresh hold acts");
    // Paused (SIGSTOP) past ttl - margin: the record still names a and is
    // not even expired, but a's own clock says it must stop.
    tokio::time::sleep(Duration::from_millis(310)).await;
    let r = a.read().await.expect("read").expect("record");
    assert!(!r.expired_at(cove_core::retention::now_ms()), "still unexpired in the store");
    assert!(matches!(ha.check().await, Err(LeaseError::Lost(_))), "refuses to act");
    assert!(matches!(ha.renew().await, Err(LeaseError::Lost(_))), "a lapsed hold is not renewed");
    assert!(Fence::check(&ha).await.is_err());
    // It must acquire again like anyone, after the expiry.
    assert!(matches!(a.try_acquire().await, Err(LeaseError::Busy { .. })));
    tokio::time::sleep(Duration::from_millis(120)).await;
    let again = a.try_acquire().await.expect("re-acquired after expiry");
    assert_eq!(again.epoch(), 2);
}

#[tokio::test]
async fn renewing_keeps_the_lease_and_releasing_frees_it_at_once() {
    let (_d, s) = store();
    let a = Lease::new(s.clone(), "leases/m", "a", timing(400, 50));
    let b = Lease::new(s.clone(), "leases/m", "b", timing(400, 50));
    let ha = a.try_acquire().await.expect("acquire");
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ha.renew().await.expect("renew");
        ha.check().await.expect("acts");
        assert!(matches!(b.try_acquire().await, Err(LeaseError::Busy { .. })), "renewed lease stays a's");
    }
    ha.release().await.expect("release");
    assert!(ha.check().await.is_err(), "released: no more acting");
    let hb = b.try_acquire().await.expect("free at once after release");
    assert_eq!(hb.epoch(), 2);
}

/// A claim whose write took longer than the settle time does not count;
/// its record keeps every other replica out until it expires, but its
/// writer may claim over it after RECLAIM_AFTER (not before).
#[tokio::test]
async fn a_too_slow_claim_is_claimed_over_by_its_writer_only() {
    let (_d, s) = store();
    let a = Lease::new(slow(&s, 1), "leases/m", "a", timing(60_000, 50));
    let b = Lease::new(s.clone(), "leases/m", "b", timing(60_000, 50));
    assert!(matches!(a.try_acquire().await, Err(LeaseError::Lost(_))), "an 80 ms write with a 50 ms settle");
    let lost = Instant::now();
    let record = a.read().await.expect("read").expect("the slow claim is in the store");
    assert_eq!((record.holder.as_str(), record.epoch), ("a", 1));
    match a.try_acquire().await {
        Err(LeaseError::Busy { remaining_ms, .. }) => {
            assert!(remaining_ms <= RECLAIM_AFTER.as_millis() as u64, "a waits for RECLAIM_AFTER: {remaining_ms}")
        }
        other => panic!("a right after its slow claim: {other:?}"),
    }
    assert!(a.own_slow_claim_wait().await.is_some(), "a knows the record is its own slow claim");
    assert!(b.own_slow_claim_wait().await.is_none(), "b does not");
    tokio::time::sleep(RECLAIM_AFTER.saturating_sub(lost.elapsed()) + Duration::from_millis(20)).await;
    assert!(matches!(b.try_acquire().await, Err(LeaseError::Busy { .. })), "b waits for the expiry");
    let ha = a.try_acquire().await.expect("a claims over its own slow claim");
    assert_eq!(ha.epoch(), 2, "a new epoch");
    ha.check().await.expect("a acts");
    assert!(a.own_slow_claim_wait().await.is_none(), "the slow claim is forgotten once a holds");
}

/// An on-demand run whose attempt was too slow waits and takes the lease;
/// a graceful shutdown frees a slow claim for the next replica.
#[tokio::test]
async fn the_keeper_recovers_from_a_slow_claim_and_releases_one() {
    let (_d, s) = store();
    let ka = LeaseKeeper::new(Lease::new(slow(&s, 1), "leases/m", "a", timing(60_000, 50)), false);
    let started = Instant::now();
    let h = ka.hold().await.expect("on demand: the second attempt counts");
    assert!(started.elapsed() >= RECLAIM_AFTER, "waited for RECLAIM_AFTER: {:?}", started.elapsed());
    assert_eq!(h.epoch(), 2);
    ka.done(&h).await;

    let kb = LeaseKeeper::new(Lease::new(slow(&s, 1), "leases/m", "b", timing(60_000, 50)), true);
    let kc = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "c", timing(60_000, 50)), true);
    kb.tick().await;
    assert!(!kb.held().0, "b's slow claim does not count");
    assert!(matches!(kc.hold().await, Err(LeaseError::Busy { .. })), "and keeps c out");
    // The release waits until RECLAIM_AFTER has passed (another holder may
    // still act before), then frees the lease.
    let releasing = Instant::now();
    kb.release().await;
    assert!(releasing.elapsed() >= RECLAIM_AFTER - Duration::from_millis(300), "{:?}", releasing.elapsed());
    let hc = kc.hold().await.expect("c takes the lease once b released its slow claim");
    assert_eq!(hc.epoch(), 4);
}

/// A claim cut off before it was read back (its task aborted, as at
/// shutdown) leaves a record in the store; its writer still knows it as its
/// own, so the release frees it and nobody waits for the ttl.
#[tokio::test]
async fn a_claim_cut_off_mid_settle_is_released() {
    let (_d, s) = store();
    let ka = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "a", timing(60_000, 400)), true);
    let task = ka.spawn();
    let lease = Lease::new(s.clone(), "leases/m", "reader", timing(60_000, 400));
    let written = Instant::now();
    while lease.read().await.expect("read").is_none() {
        assert!(written.elapsed() < Duration::from_secs(2), "the claim is written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(!ka.held().0, "cut off before it counted");
    ka.release().await;
    let kb = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "b", timing(60_000, 50)), false);
    let hb = kb.hold().await.expect("free once the cut-off claim was released, not after the 60 s ttl");
    assert_eq!(hb.epoch(), 2);
}

/// A release while the keeper is half-way through a claim waits for it and
/// gives back what it took; the keeper takes nothing after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_during_a_claim_frees_the_lease_for_good() {
    let (_d, s) = store();
    let ka = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "a", timing(800, 200)), true);
    let task = ka.spawn();
    tokio::time::sleep(Duration::from_millis(50)).await;
    ka.release().await;
    assert!(!ka.held().0, "released");
    assert!(matches!(ka.hold().await, Err(LeaseError::Lost(_))), "no on-demand hold after the release");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!ka.held().0, "the keeper's schedule takes nothing after the release");
    let kb = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "b", timing(800, 50)), false);
    kb.hold().await.expect("free at once");
    task.abort();
}

#[tokio::test]
async fn epochs_only_grow() {
    let (_d, s) = store();
    let leases: Vec<Arc<Lease>> =
        ["a", "b", "c"].iter().map(|h| Lease::new(s.clone(), "leases/m", h, timing(400, 50))).collect();
    let mut last = 0;
    for i in 0..9 {
        let h = leases[i % 3].try_acquire().await.expect("acquire");
        assert!(h.epoch() > last, "epoch {} after {last}", h.epoch());
        last = h.epoch();
        h.release().await.expect("release");
    }
    assert_eq!(last, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_have_one_holder_and_the_survivor_takes_over() {
    let (_d, s) = store();
    let t = timing(800, 50);
    let ka = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "a", t), true);
    let kb = LeaseKeeper::new(Lease::new(s.clone(), "leases/m", "b", t), true);
    let (ta, tb) = (ka.spawn(), kb.spawn());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (a_held, b_held) = (ka.held().0, kb.held().0);
    assert!(a_held ^ b_held, "exactly one holds: a {a_held}, b {b_held}");
    let (holder, survivor, dead_task, live_task) = if a_held { (ka, kb, ta, tb) } else { (kb, ka, tb, ta) };
    let epoch = holder.held().1;
    assert!(matches!(survivor.hold().await, Err(LeaseError::Busy { .. })), "on demand on the other: busy");
    // The holder dies (its keeper stops renewing).
    dead_task.abort();
    let died = std::time::Instant::now();
    while !survivor.held().0 {
        assert!(died.elapsed() < Duration::from_secs(3), "no takeover");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = died.elapsed();
    assert!(took >= Duration::from_millis(500), "not before the expiry: {took:?}");
    assert!(survivor.held().1 > epoch, "higher epoch");
    let st = survivor.status().await.expect("status");
    assert!(st.held_here && st.active);
    live_task.abort();
}

/// A GC run whose fence fails deletes nothing; with a valid fence it sweeps.
#[tokio::test]
async fn a_fenced_gc_stops_before_deleting() {
    let (_d, s) = store();
    let data = b"unreferenced".to_vec();
    let digest = Digest::sha256_of(&data);
    let body: cove_core::ByteStream = Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(data))]));
    s.blob_write(&digest, body, None).await.expect("blob");
    let lease = Lease::new(s.clone(), "leases/m", "a", timing(300, 50));
    let stale = Arc::new(lease.try_acquire().await.expect("acquire"));
    tokio::time::sleep(Duration::from_millis(240)).await;
    let opts = |h: &Arc<cove_core::lease::Hold>| GcOptions {
        grace: Duration::ZERO,
        untagged: false,
        upload_ttl: None,
        dry_run: false,
        fence: Some(FenceRef(h.clone() as Arc<dyn Fence>)),
    };
    let guard = GcGuard::offline();
    let r = gc::collect(s.as_ref(), &guard, &|_| false, &opts(&stale)).await;
    assert!(matches!(r, Err(GcError::Fenced(_))), "{r:?}");
    assert_eq!(s.blob_size(&digest).await.expect("size"), Some(12), "nothing deleted");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = Arc::new(lease.try_acquire().await.expect("acquire again"));
    let r = gc::collect(s.as_ref(), &guard, &|_| false, &opts(&fresh)).await.expect("gc");
    assert_eq!(r.blobs_removed.len(), 1);
    assert_eq!(s.blob_size(&digest).await.expect("size"), None);
}
