//! The in-memory repository index (`cove_core::storage::index`): two
//! replicas on one object store, each writing through its own
//! `GuardedStorage` with its own index, and one process on the filesystem.

use std::sync::Arc;

use bytes::Bytes;
use cove_backends::fs::FsStorage;
use cove_backends::object::ObjectStorage;
use cove_core::gc::{collect, GcGuard, GcOptions, GcReport, GuardedStorage};
use cove_core::manifest::OCI_MANIFEST;
use cove_core::storage::index::CHANGES;
use cove_core::storage::{RepoIndex, StoredManifest};
use cove_core::{Digest, RepoName, Storage};
use cove_testkit::faulty_store::FaultyStore;
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
    guard: Arc<GcGuard>,
}

fn replica(raw: Arc<dyn Storage>) -> Replica {
    let index = RepoIndex::new(raw.capabilities().shared);
    // Offline guard: only references decide (no grace), so a dry run says
    // exactly which blobs nothing references.
    let guard = GcGuard::offline();
    let guarded = GuardedStorage::new(raw.clone(), guard.clone()).with_index(index.clone());
    Replica { raw, guarded, index, guard }
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
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 4, "each write's record and each new repository's");
    assert_eq!(names(&b.index), ["before/sweep", "team/app"]);
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 0, "a record is applied once");
    assert_eq!(a.index.poll(a.raw.as_ref()).await.expect("poll"), 0, "a replica skips its own records");

    // Every write announces itself first (one record), a new repository
    // once more after the write (the set changed).
    let listed = a.raw.state_list(CHANGES).await.expect("list").len();
    let (d2, m2) = manifest(2);
    a.guarded.manifest_put(&repo("team/app"), &d2, &m2).await.expect("put");
    assert_eq!(a.raw.state_list(CHANGES).await.expect("list").len(), listed + 1, "one record for a known repository");

    // Deleting one of two manifests keeps the repository; the last removes it.
    assert!(a.guarded.manifest_delete(&repo("team/app"), &d).await.expect("delete"));
    assert_eq!(names(&a.index), ["before/sweep", "team/app"], "one manifest left");
    assert!(a.guarded.manifest_delete(&repo("team/app"), &d2).await.expect("delete"));
    assert_eq!(names(&a.index), ["before/sweep"], "no manifest left");
    assert_eq!(b.index.poll(b.raw.as_ref()).await.expect("poll"), 4, "put, two deletes, the removal");
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

/// An image manifest whose config and one layer are `blobs`.
fn image_of(blobs: [&Digest; 2]) -> (Digest, StoredManifest) {
    let d = |x: &Digest| format!(r#"{{"mediaType":"application/octet-stream","digest":"{x}","size":4}}"#);
    let bytes = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        d(blobs[0]),
        d(blobs[1])
    ));
    (Digest::sha256_of(&bytes), StoredManifest { media_type: OCI_MANIFEST.into(), bytes })
}

async fn blob(s: &dyn Storage, n: u8) -> Digest {
    let bytes = Bytes::from(vec![n; 4]);
    let d = Digest::sha256_of(&bytes);
    let body: cove_core::ByteStream = Box::pin(futures::stream::iter([Ok::<_, std::io::Error>(bytes)]));
    s.blob_write(&d, body, Some(4)).await.expect("blob");
    d
}

async fn dry_gc(r: &Replica) -> GcReport {
    let opts =
        GcOptions { grace: std::time::Duration::ZERO, untagged: false, upload_ttl: None, dry_run: true, fence: None };
    collect(&r.guarded, &r.guard, &|_| false, &opts).await.expect("gc")
}

fn removable(report: &GcReport) -> Vec<String> {
    let mut v: Vec<String> = report.blobs_removed.iter().map(|(d, _)| d.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn gc_lists_only_what_changed_and_stays_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = replica(Arc::new(FsStorage::open(dir.path().to_path_buf()).expect("open")));
    let (b1, b2, b3, cfg) =
        (blob(&r.guarded, 1).await, blob(&r.guarded, 2).await, blob(&r.guarded, 3).await, blob(&r.guarded, 9).await);
    let (m1, s1) = image_of([&cfg, &b1]);
    let (m2, s2) = image_of([&cfg, &b2]);
    r.guarded.manifest_put(&repo("gc/one"), &m1, &s1).await.expect("put");
    r.guarded.manifest_put(&repo("gc/two"), &m2, &s2).await.expect("put");

    let first = dry_gc(&r).await;
    assert!(first.full_listing, "the first run lists everything");
    assert_eq!((first.repositories, first.repositories_listed), (2, 2));
    assert_eq!(removable(&first), [b3.to_string()]);

    let quiet = dry_gc(&r).await;
    assert!(!quiet.full_listing);
    assert_eq!((quiet.repositories, quiet.repositories_listed), (2, 0), "nothing changed, nothing listed");
    assert_eq!(removable(&quiet), [b3.to_string()], "same answer from the kept listing");

    // A new repository referencing b3: listed, and b3 is kept.
    let (m3, s3) = image_of([&cfg, &b3]);
    r.guarded.manifest_put(&repo("gc/three"), &m3, &s3).await.expect("put");
    let after_push = dry_gc(&r).await;
    assert_eq!((after_push.repositories, after_push.repositories_listed), (3, 1));
    assert!(removable(&after_push).is_empty(), "b3 is referenced now: {after_push:?}");

    // Deleting gc/one's only manifest frees b1.
    assert!(r.guarded.manifest_delete(&repo("gc/one"), &m1).await.expect("delete"));
    let after_delete = dry_gc(&r).await;
    assert_eq!((after_delete.repositories, after_delete.repositories_listed), (2, 1));
    assert_eq!(removable(&after_delete), [b1.to_string()]);

    // A failed run's changes are not lost: the next one lists everything.
    r.index.all_changed();
    let full = dry_gc(&r).await;
    assert!(full.full_listing);
    assert_eq!(removable(&full), [b1.to_string()]);
}

#[tokio::test]
async fn gc_on_one_replica_hears_of_the_other_replicas_writes() {
    let (a, b) = two_replicas();
    let (b1, cfg) = (blob(&a.guarded, 1).await, blob(&a.guarded, 9).await);
    let first = dry_gc(&a).await;
    assert!(first.full_listing);
    assert_eq!(removable(&first).len(), 2, "nothing references either blob yet");
    // B pushes a manifest referencing them; A's next run reads B's record
    // (A polls first) and lists that repository.
    let (m, st) = image_of([&cfg, &b1]);
    b.guarded.manifest_put(&repo("other/replica"), &m, &st).await.expect("put");
    let next = dry_gc(&a).await;
    assert!(!next.full_listing, "{next:?}");
    assert_eq!((next.repositories, next.repositories_listed), (1, 1));
    assert!(removable(&next).is_empty(), "B's manifest keeps both blobs: {next:?}");
    // The record keeps the repository relisted until it settled (another
    // run still lists it).
    assert_eq!(dry_gc(&a).await.repositories_listed, 1, "relisted until SETTLE has passed");
}

#[tokio::test]
async fn a_poll_that_fails_part_way_makes_the_next_gc_list_everything() {
    let mem = Arc::new(InMemory::new());
    let flaky = FaultyStore::new(mem.clone());
    let a = replica(Arc::new(ObjectStorage::new(mem, None, "bucket")));
    let b = replica(Arc::new(ObjectStorage::new(flaky.clone() as Arc<dyn ObjectStore>, None, "bucket")));
    let (b1, cfg) = (blob(&a.guarded, 1).await, blob(&a.guarded, 9).await);
    assert!(dry_gc(&b).await.full_listing, "B's first run lists everything");
    // A pushes; B's background poll fails reading A's records.
    let (m, st) = image_of([&cfg, &b1]);
    a.guarded.manifest_put(&repo("while/failing"), &m, &st).await.expect("put");
    flaky.fail_gets_containing(Some(CHANGES));
    assert!(b.index.poll(b.raw.as_ref()).await.is_err(), "the injected failure surfaces");
    flaky.fail_gets_containing(None);
    // The next run cannot trust its kept listing: it lists everything and
    // keeps the blobs A's manifest references.
    let next = dry_gc(&b).await;
    assert!(next.full_listing, "{next:?}");
    assert!(removable(&next).is_empty(), "A's manifest keeps both blobs: {next:?}");
}

/// Where each name's text lives, in name order.
fn name_addresses(index: &RepoIndex) -> Vec<usize> {
    index.read(|n| n.iter().map(|r| r.as_str().as_ptr() as usize).collect()).expect("ready")
}

#[tokio::test]
async fn a_sweep_keeps_the_names_it_already_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = replica(Arc::new(FsStorage::open(dir.path().to_path_buf()).expect("open")));
    let (d, m) = manifest(5);
    for n in ["keep/one", "keep/two"] {
        r.raw.manifest_put(&repo(n), &d, &m).await.expect("put");
    }
    r.index.sweep(r.raw.as_ref()).await.expect("sweep");
    let before = name_addresses(&r.index);
    r.raw.manifest_put(&repo("keep/three"), &d, &m).await.expect("put");
    r.index.sweep(r.raw.as_ref()).await.expect("sweep");
    assert_eq!(names(&r.index), ["keep/one", "keep/three", "keep/two"]);
    let after = name_addresses(&r.index);
    // GC's kept listings share these texts: a sweep must not replace them
    // with copies.
    assert_eq!((after[0], after[2]), (before[0], before[1]), "the known names are the same allocations");
}

/// On an object store, each GC run reports the store requests it made: the
/// first (full) listing reads every repository; a run after nothing changed
/// makes the same few requests whatever the store's size; a push adds the
/// listing of one repository.
#[tokio::test]
async fn gc_reports_store_requests_that_grow_with_change_not_size() {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let raw: Arc<dyn Storage> = Arc::new(ObjectStorage::new(mem, None, "bucket"));
    assert_eq!(raw.store_requests().map(|r| r.total()), Some(0), "counted from the start");
    let r = replica(raw);
    let (b1, cfg) = (blob(&r.guarded, 1).await, blob(&r.guarded, 9).await);
    let (m, st) = image_of([&cfg, &b1]);
    for i in 0..40 {
        r.guarded.manifest_put(&repo(&format!("many/r{i:02}")), &m, &st).await.expect("put");
    }
    let requests = |g: &GcReport| g.store_requests.expect("an object store counts its requests");
    let first = dry_gc(&r).await;
    assert!(first.full_listing);
    let quiet = dry_gc(&r).await;
    let (full, quiet_n) = (requests(&first), requests(&quiet));
    assert!(full.total() >= 80, "40 repositories read at least twice each: {full:?}");
    assert!(quiet_n.total() < 12, "nothing changed: a few listings whatever the size: {quiet_n:?}");
    assert_eq!(quiet_n.put + quiet_n.delete, 0, "a dry run writes nothing: {quiet_n:?}");
    r.guarded.manifest_put(&repo("many/new"), &m, &st).await.expect("put");
    let after_push = requests(&dry_gc(&r).await);
    assert!(
        after_push.total() > quiet_n.total() && after_push.total() < quiet_n.total() + 12,
        "one more repository listed: {after_push:?} after {quiet_n:?}"
    );
    // The filesystem counts nothing.
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = replica(Arc::new(FsStorage::open(dir.path().to_path_buf()).expect("open")));
    assert_eq!(dry_gc(&fs).await.store_requests, None);
}

/// Another replica's record is relisted until SETTLE after it was written
/// (the time in its name), not after it was read: a replica that starts
/// and reads older records does not relist their repositories after its
/// first, full listing, while a fresh record keeps its repository relisted.
#[tokio::test]
async fn an_old_record_read_late_is_not_relisted() {
    let (a, b) = two_replicas();
    let (b1, cfg) = (blob(a.raw.as_ref(), 1).await, blob(a.raw.as_ref(), 9).await);
    let (d, m) = image_of([&cfg, &b1]);
    for name in ["old/write", "fresh/write"] {
        a.raw.manifest_put(&repo(name), &d, &m).await.expect("put");
    }
    let ms = |ago: std::time::Duration| {
        (std::time::SystemTime::now() - ago).duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis()
    };
    let old = ms(cove_core::storage::index::SETTLE + std::time::Duration::from_secs(60));
    let fresh = ms(std::time::Duration::ZERO);
    for (at, seq, body) in [(old, 0, "~old/write\n"), (fresh, 1, "~fresh/write\n")] {
        let record = format!("{CHANGES}/{at:013}-otherreplica-{seq:06}");
        a.raw.state_put(&record, Bytes::from(body)).await.expect("record");
    }
    b.index.sweep(b.raw.as_ref()).await.expect("sweep");
    let first = dry_gc(&b).await;
    assert!(first.full_listing);
    assert_eq!(first.repositories_listed, 2, "the first run lists everything");
    for run in ["second", "third"] {
        let next = dry_gc(&b).await;
        assert_eq!(next.repositories_listed, 1, "{run} run: only the fresh record's repository: {next:?}");
    }
}

/// Tag lists are served from memory once listed: a write through this
/// replica drops its repository's list at once; another replica's write
/// shows after this replica reads its record (within `POLL`), and until
/// that write has surely landed (`SETTLE`) the list is read from the store.
/// On a shared store nothing is served from memory before the other
/// replicas' records were read.
#[tokio::test]
async fn tag_lists_come_from_memory_until_a_write_or_another_replicas_record() {
    let (a, b) = two_replicas();
    let r = repo("app/web");
    let (d, m) = manifest(1);
    let tag = |t: &str| t.parse::<cove_core::Tag>().expect("tag");
    a.guarded.manifest_put(&r, &d, &m).await.expect("put");
    a.guarded.tag_put(&r, &tag("v1"), &d).await.expect("tag");
    let requests = |x: &Replica| x.raw.store_requests().expect("counted").total();
    let tags = |x: &Replica| {
        let (index, raw, r) = (x.index.clone(), x.raw.clone(), r.clone());
        async move { index.tags(raw.as_ref(), &r).await.expect("list").expect("known").to_vec() }
    };
    for _ in 0..2 {
        let before = requests(&a);
        assert_eq!(tags(&a).await, ["v1"]);
        assert!(requests(&a) > before, "not polled yet: listed from the store");
    }
    a.index.poll(a.raw.as_ref()).await.expect("poll");
    b.index.poll(b.raw.as_ref()).await.expect("poll");
    assert_eq!(tags(&a).await, ["v1"]);
    let before = requests(&a);
    assert_eq!(tags(&a).await, ["v1"]);
    assert_eq!(requests(&a), before, "served from memory");

    a.guarded.tag_put(&r, &tag("v2"), &d).await.expect("tag");
    assert_eq!(tags(&a).await, ["v1", "v2"], "this replica's write shows at once");
    a.guarded.tag_delete(&r, &tag("v1")).await.expect("untag");
    assert_eq!(tags(&a).await, ["v2"]);
    assert!(a.index.tags(a.raw.as_ref(), &repo("no/such")).await.expect("list").is_none());

    // On the other replica, A's records keep the repository listed from
    // the store (the writes they announced may still land).
    for _ in 0..2 {
        let before = requests(&b);
        assert_eq!(tags(&b).await, ["v2"]);
        assert!(requests(&b) > before, "announced writes not yet settled: listed from the store");
    }

    // A repository written with no record (as long ago) is cached by B
    // until A's next record for it is read.
    let old = repo("app/old");
    a.raw.manifest_put(&old, &d, &m).await.expect("put");
    a.raw.tag_put(&old, &tag("v1"), &d).await.expect("tag");
    let old_tags = |x: &Replica| {
        let (index, raw, r) = (x.index.clone(), x.raw.clone(), old.clone());
        async move { index.tags(raw.as_ref(), &r).await.expect("list").expect("known").to_vec() }
    };
    assert_eq!(old_tags(&b).await, ["v1"]);
    let before = requests(&b);
    assert_eq!(old_tags(&b).await, ["v1"]);
    assert_eq!(requests(&b), before, "served from memory");
    a.guarded.tag_put(&old, &tag("v2"), &d).await.expect("tag");
    assert_eq!(old_tags(&b).await, ["v1"], "the other replica's write is not heard of yet");
    b.index.poll(b.raw.as_ref()).await.expect("poll");
    assert_eq!(old_tags(&b).await, ["v1", "v2"], "heard of by its record");
    let before = requests(&b);
    assert_eq!(old_tags(&b).await, ["v1", "v2"]);
    assert!(requests(&b) > before, "until the write surely landed, listed from the store");
}
