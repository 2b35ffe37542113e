//! The object backend against Garage (a real distributed S3-compatible store,
//! single node, sqlite, replication_factor = 1) started by the test on free
//! loopback ports. Garage ignores conditional writes and accepts undersized
//! parts, so these runs show correctness does not depend on either.
//! Needs /opt/cove-peers/bin/garage (scripts/peers/install-garage.sh) or
//! `COVE_PEERS_BIN`.

use std::sync::Arc;

use cove_testkit::peers::s3::S3Peer;
use object_store::multipart::MultipartStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_garage() {
    let peer = S3Peer::garage();
    let s = peer.storage("");
    cove_core::Storage::check(&s).await.expect("check");
    cove_testkit::suites::storage::run_all(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_checks_on_garage() {
    let peer = S3Peer::garage();
    let a = peer.storage("reg");
    let b = peer.storage("reg");
    let mp: Arc<dyn MultipartStore> = Arc::new(peer.raw_s3());
    cove_testkit::suites::object::run_object_checks(&a, &b, &mp, "reg").await;
}
