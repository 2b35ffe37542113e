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

#[cfg(unix)]
#[tokio::test]
async fn shared_state_files_are_owner_only() {
    use cove_core::Storage as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    store.state_put("keys/0123456789abcdef", bytes::Bytes::from_static(b"secret")).await.expect("put");
    let meta = std::fs::metadata(dir.path().join("shared/keys/0123456789abcdef")).expect("state file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "a signing key readable by others");
}
