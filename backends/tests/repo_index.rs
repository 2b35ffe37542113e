//! The in-memory repository index (`cove_core::storage::index`): two
//! replicas on one object store, each writing through its own
//! `GuardedStorage` with its own index, and one process on the filesystem.

use std::sync::Arc;

use bytes::Bytes;
use cove_backends::fs::FsStorage;
use cove_backends::object::ObjectStorage;
use cove_core::gc::{GcGuard, GuardedStorage};
use cove_core::manifest::OCI_MANIFEST;
use cove_core::storage::index::CHANGES;
use cove_core::storage::{RepoIndex, StoredManifest};
use cove_core::{Digest, RepoName, Storage};
use object_store::memory::InMemory;
use object_store::ObjectStore;

fn repo(s: &str) -> RepoName {
    s.parse().expect("repo name")
}

fn manifest(n: u32) -> (Digest, StoredManifest) {
    let bytes = Bytes::from(format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[],"n":{n}}}"#));
    (Digest::sha256_of(&bytes), StoredManifest { media_type: OCI_MANIFEST.into(), bytes })
}

/// One replica: the raw store, the guarded one its writes go through, its index.
struct Replica {
    raw: Arc<dyn Storage>,
    guarded: GuardedStorage,
    index: Arc<RepoIndex>,
}

fn replica(raw: Arc<dyn Storage>) -> Replica {
    let index = RepoIndex::new(raw.capabilities().shared);
    let guarded = GuardedStorage::new(raw.clone(), GcGuard::new()).with_index(index.clone());
    Replica { raw, guarded, index }
}

fn names(index: &RepoIndex) -> Vec<String> {
    index.read(|n| n.iter().map(|r| r.to_string()).collect()).expect("ready")
}

fn two_replicas() -> (Replica, Replica) {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let a: Arc<dyn Storage> = Arc::new(ObjectStorage::new(mem.clone(), None, "bucket"));
    let b: Arc<dyn Storage> = Arc::new(ObjectStorage::new(mem, None, "bucket"));
    (replica(a), replica(b))
}

#[tokio::test]
async fn replicas_see_each_others_new_and_deleted_repositories_after_a_poll() {
    let (a, b) = two_replicas();
    let (d, m) = manifest(1);
    a.guarded.manifest_put(&repo("before/sweep"), &d, &m).await.expect("put");
    assert!(!a.index.is_ready(), "not ready before the first sweep");
    assert_eq!(a.index.page(None, 10), None, "no page before the first sweep");
    assert_eq!(a.index.sweep(a.raw.as_ref()).await.expect("sweep"), 1);
    assert_eq!(b.index.sweep(b.raw.as_ref()).await.expect("sweep"), 1);

    // A's push shows in A's index at once, in B's after B's next poll.
    a.guarded.manifest_put(&repo("team/app"), &d, &m).await.expect("put");
    assert_eq!(names(&a.index), ["before/sweep", "team/app"]);
    assert_eq!(names(&b.index), ["before/sweep"], "B has not polled yet");
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 2, "the record of each new repository");
    assert_eq!(names(&b.index), ["before/sweep", "team/app"]);
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 0, "a record is applied once");
    assert_eq!(a.index.poll(a.raw.as_ref()).await.expect("poll"), 0, "a replica skips its own records");

    // A second manifest in a known repository publishes nothing.
    let listed = a.raw.state_list(CHANGES).await.expect("list").len();
    let (d2, m2) = manifest(2);
    a.guarded.manifest_put(&repo("team/app"), &d2, &m2).await.expect("put");
    assert_eq!(a.raw.state_list(CHANGES).await.expect("list").len(), listed, "no record for a known repository");

    // Deleting one of two manifests keeps the repository; the last removes it.
    assert!(a.guarded.manifest_delete(&repo("team/app"), &d).await.expect("delete"));
    assert_eq!(names(&a.index), ["before/sweep", "team/app"], "one manifest left");
    assert!(a.guarded.manifest_delete(&repo("team/app"), &d2).await.expect("delete"));
    assert_eq!(names(&a.index), ["before/sweep"], "no manifest left");
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 1);
    assert_eq!(names(&b.index), ["before/sweep"], "B saw the deletion");
}

#[tokio::test]
async fn a_record_never_lists_what_the_layout_does_not_hold_and_a_lost_one_waits_for_the_sweep() {
    let (a, b) = two_replicas();
    b.index.sweep(b.raw.as_ref()).await.expect("sweep");
    // A record naming a repository with no manifest (a write that failed
    // after its record, or a forged record): the layout decides.
    a.raw
        .state_put(&format!("{CHANGES}/0000000000001-deadbeef-000000"), Bytes::from_static(b"+ghost/repo\n"))
        .await
        .expect("put record");
    a.raw
        .state_put(&format!("{CHANGES}/0000000000002-deadbeef-000001"), Bytes::from_static(b"not a record"))
        .await
        .expect("put record");
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 1, "one readable record checked");
    assert_eq!(names(&b.index), Vec::<String>::new(), "nothing listed that is not there");

    // A write whose record was lost (written past the index: a crash
    // between the manifest and its record) shows at the next sweep.
    let (d, m) = manifest(3);
    a.raw.manifest_put(&repo("lost/record"), &d, &m).await.expect("put");
    b.index.poll(b.raw.as_ref()).await.expect("poll");
    assert_eq!(names(&b.index), Vec::<String>::new());
    assert_eq!(b.index.sweep(b.raw.as_ref()).await.expect("sweep"), 1);
    assert_eq!(names(&b.index), ["lost/record"]);
}

#[tokio::test]
async fn pages_match_the_store_walk_at_every_boundary() {
    let (a, _) = two_replicas();
    let (d, m) = manifest(4);
    let mut all = vec![
        "a".to_owned(),
        "a-b".to_owned(),
        "a.c".to_owned(),
        "a/b".to_owned(),
        "a0".to_owned(),
        "docker.io/library/nginx".to_owned(),
    ];
    all.extend((0..40).map(|i| format!("org/repo{i:02}")));
    for n in &all {
        a.raw.manifest_put(&repo(n), &d, &m).await.expect("put");
    }
    a.index.sweep(a.raw.as_ref()).await.expect("sweep");
    let mut afters: Vec<Option<&str>> = vec![None, Some(""), Some("a/"), Some("org/repo"), Some("zzz")];
    afters.extend(all.iter().map(|s| Some(s.as_str())));
    for after in afters {
        for limit in [1, 2, 7, 100] {
            let walked = a.raw.repo_page(after, limit).await.expect("walk");
            assert_eq!(a.index.page(after, limit), Some(walked), "after {after:?} limit {limit}");
        }
    }
}

#[tokio::test]
async fn on_a_filesystem_the_index_publishes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw: Arc<dyn Storage> = Arc::new(FsStorage::open(dir.path().to_path_buf()).expect("open"));
    let r = replica(raw);
    r.index.sweep(r.raw.as_ref()).await.expect("sweep");
    let (d, m) = manifest(5);
    r.guarded.manifest_put(&repo("local/app"), &d, &m).await.expect("put");
    assert_eq!(names(&r.index), ["local/app"]);
    assert!(r.raw.state_list(CHANGES).await.expect("list").is_empty(), "no change records on a filesystem");
    assert!(r.guarded.manifest_delete(&repo("local/app"), &d).await.expect("delete"));
    assert_eq!(names(&r.index), Vec::<String>::new());
}
