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

/// Measurement, not a check of behaviour (run with `--ignored --nocapture`):
/// the time of a full repository walk and of one catalog-sized page (first
/// and middle) on s3s-fs with `COVE_SCALE_REPOS` repositories (default 2000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; takes about a minute"]
async fn repository_pages_at_scale() {
    use cove_core::storage::StoredManifest;
    use futures::StreamExt;
    use std::time::Instant;

    let n: usize = std::env::var("COVE_SCALE_REPOS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let peer = S3Peer::s3s_fs();
    let s = peer.storage("");
    let bytes = bytes::Bytes::from_static(b"{}");
    let d = cove_core::Digest::sha256_of(&bytes);
    let m = StoredManifest { media_type: cove_core::manifest::OCI_MANIFEST.into(), bytes };
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (s, d, m) = (&s, &d, &m);
            async move {
                let r: cove_core::RepoName = format!("org{:02}/repo{i:06}", i % 100).parse().expect("name");
                cove_core::Storage::manifest_put(s, &r, d, m).await.expect("put");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    eprintln!("wrote {n} repositories in {:?}", t.elapsed());
    let t = Instant::now();
    let all = cove_core::Storage::repo_list(&s).await.expect("list");
    eprintln!("repo_list (every repository): {:?}", t.elapsed());
    assert_eq!(all.len(), n);
    let mid = all[n / 2].to_string();
    // One delimiter listing of the top level and of one organisation: s3s-fs
    // scans the whole subtree below a prefix for each (S3 does not).
    let raw = peer.raw_s3();
    for dir in ["repositories", "repositories/org00"] {
        let t = Instant::now();
        object_store::ObjectStore::list_with_delimiter(&raw, Some(&dir.into())).await.expect("list");
        eprintln!("one delimiter listing of {dir}/: {:?}", t.elapsed());
    }
    for (label, after, left) in [("first", None, n), ("middle", Some(mid.as_str()), n - n / 2 - 1)] {
        for limit in [101, 1001] {
            let t = Instant::now();
            let page = cove_core::Storage::repo_page(&s, after, limit).await.expect("page");
            eprintln!("repo_page {label} limit {limit}: {:?}", t.elapsed());
            assert_eq!(page.len(), limit.min(left));
        }
    }
}
