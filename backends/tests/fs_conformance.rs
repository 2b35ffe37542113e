//! The shared Storage conformance suite on a fresh FsStorage.

use cove_backends::FsStorage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_storage_passes_conformance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    cove_testkit::suites::storage::run_all(&store).await;
    // Nothing is left behind in tmp/ by any of the checks.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).expect("tmp").collect();
    assert!(leftovers.is_empty(), "tmp/ not empty: {leftovers:?}");
}
