//! The shared Storage suite on `GuardedStorage`, the GC wrapper production
//! puts around every store (server/src/app.rs), over each driver: the
//! filesystem, the object backend on object_store's in-memory store, and the
//! same without multipart. A wrapper that dropped, reordered or changed an
//! argument, or refused a write it should pass through, fails here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cove_backends::object::ObjectStorage;
use cove_backends::FsStorage;
use cove_core::gc::{GcGuard, GuardedStorage};
use cove_core::Storage;
use cove_testkit::suites::storage::run_all;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::ObjectStore;

/// `inner` behind a serving-process guard, as the server wires it.
fn guarded(inner: Arc<dyn Storage>) -> (GuardedStorage, Arc<GcGuard>) {
    let guard = GcGuard::new();
    (GuardedStorage::new(inner, guard.clone()), guard)
}

/// After the suite every write has ended: nothing is still pinned (a leaked
/// pin would keep blobs from collection forever), and the suite's digests
/// were touched, i.e. the guard saw the writes.
async fn guard_is_quiet_and_saw_writes(store: &GuardedStorage, guard: &Arc<GcGuard>) {
    assert!(guard.tracked() > 0, "the guard was told about the suite's writes");
    let blobs = store.blob_list().await.expect("blob list");
    assert!(!blobs.is_empty(), "the suite leaves blobs behind to look at");
    for d in &blobs {
        let claim = guard.claim_all(std::slice::from_ref(d), Instant::now(), Duration::ZERO);
        assert!(claim.is_some(), "{d} is still pinned after every write ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_fs_storage_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, guard) = guarded(Arc::new(FsStorage::open(dir.path()).expect("open")));
    run_all(&store).await;
    guard_is_quiet_and_saw_writes(&store, &guard).await;
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).expect("tmp").collect();
    assert!(leftovers.is_empty(), "tmp/ not empty: {leftovers:?}");
}

#[tokio::test]
async fn guarded_object_storage_in_memory_passes_the_suite() {
    let mem = Arc::new(InMemory::new());
    let store: Arc<dyn ObjectStore> = mem.clone();
    let mp: Arc<dyn MultipartStore> = mem;
    let inner = ObjectStorage::new(store, Some(mp), "guarded").with_part_size(5 << 20);
    let (store, guard) = guarded(Arc::new(inner));
    run_all(&store).await;
    guard_is_quiet_and_saw_writes(&store, &guard).await;
}

#[tokio::test]
async fn guarded_object_storage_without_multipart_passes_the_suite() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let inner = ObjectStorage::new(store, None, "").with_part_size(5 << 20);
    let (store, guard) = guarded(Arc::new(inner));
    run_all(&store).await;
    guard_is_quiet_and_saw_writes(&store, &guard).await;
}
