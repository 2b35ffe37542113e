//! The object backend against a real S3 server, s3s-fs (enforces the 5 MiB
//! minimum part size), started by the test on a free loopback port.
//! Needs /opt/cove-peers/bin/s3s-fs (scripts/peers/install-s3s-fs.sh) or
//! `COVE_PEERS_BIN`.

use std::sync::Arc;

use cove_testkit::peers::s3::S3Peer;
use object_store::multipart::MultipartStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    let s = peer.storage("");
    cove_core::Storage::check(&s).await.expect("check");
    cove_testkit::suites::storage::run_all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_checks_on_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    let a = peer.storage("reg");
    let b = peer.storage("reg");
    let mp: Arc<dyn MultipartStore> = Arc::new(peer.raw_s3());
    cove_testkit::suites::object::run_object_checks(&a, &b, &mp, "reg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_rejects_undersized_parts() {
    // Guards the premise of the coalescing test: if the server accepted
    // small parts, that test would prove nothing.
    use object_store::path::Path;
    use object_store::PutPayload;
    let peer = S3Peer::s3s_fs();
    let s3 = peer.raw_s3();
    let p = Path::from("probe/small-parts");
    let id = s3.create_multipart(&p).await.expect("create");
    let a = s3.put_part(&p, &id, 0, PutPayload::from_static(b"tiny")).await.expect("part 0");
    let b = s3.put_part(&p, &id, 1, PutPayload::from_static(b"tiny")).await.expect("part 1");
    let done = s3.complete_multipart(&p, &id, vec![a, b]).await;
    assert!(done.is_err(), "s3s-fs must reject a 4-byte non-last part");
}
