//! The shared [`Storage`] suite. Every implementation's tests call
//! [`run_all`] (or the individual checks) on a fresh, empty store, in the
//! manner of object_store's integration module: the bare drivers
//! (filesystem, object store on memory, s3s-fs and Garage) and the wrappers
//! that production puts around them (`GuardedStorage`). A failed check
//! panics with a message naming the broken contract.
//!
//! It lived in cove-core behind a `conformance` feature; it moved here so
//! that all suites and helpers are in one crate. That makes no dependency
//! cycle: this crate depends on cove-core, and cove-core's own unit tests do
//! not use the suite (its implementations live in cove-backends).

use bytes::Bytes;
use cove_core::manifest::{Descriptor, OCI_MANIFEST};
use cove_core::storage::{ByteRange, Storage, StorageError, StoredManifest};
use cove_core::{Digest, RepoName, Tag};

use crate::util::{chunked, failing, read_all, seeded_bytes};

fn repo(s: &str) -> RepoName {
    s.parse().expect("test repo name")
}

fn tag(s: &str) -> Tag {
    s.parse().expect("test tag")
}

/// Runs every check. `store` must be empty.
pub async fn run_all(store: &dyn Storage) {
    blobs(store).await;
    blob_ranges(store).await;
    blob_open(store).await;
    blob_verification(store).await;
    blob_import(store).await;
    uploads(store).await;
    upload_failures(store).await;
    manifests_and_tags(store).await;
    referrers(store).await;
    listings(store).await;
    repo_pages(store).await;
    tag_pages(store).await;
    shared_state(store).await;
    capabilities(store).await;
    store.check().await.expect("check() on a healthy store");
}

/// The store's [`Capabilities`](cove_core::storage::Capabilities) say what
/// it does: free space measured exactly when it has local capacity.
pub async fn capabilities(store: &dyn Storage) {
    let caps = store.capabilities();
    let space = store.space().await.expect("space");
    assert_eq!(space.is_some(), caps.local_space, "{}: space() {space:?} vs {caps:?}", store.kind());
}

/// Shared-state documents: put/get/replace/delete, listing one directory in
/// lexical order, invalid names refused, and no leak into repositories.
pub async fn shared_state(store: &dyn Storage) {
    assert!(store.state_list("keys").await.expect("list empty").is_empty(), "empty store lists no state");
    assert!(store.state_get("keys/b").await.expect("get absent").is_none());
    store.state_put("keys/b", Bytes::from_static(b"one")).await.expect("put");
    store.state_put("keys/a", Bytes::from_static(b"two")).await.expect("put");
    store.state_put("other/c", Bytes::from_static(b"three")).await.expect("put");
    store.state_put("keys/b", Bytes::from_static(b"replaced")).await.expect("replace");
    assert_eq!(store.state_get("keys/b").await.expect("get").as_deref(), Some(&b"replaced"[..]));
    store.state_put("other/empty", Bytes::from_static(b"full")).await.expect("put");
    store.state_put("other/empty", Bytes::new()).await.expect("replace with nothing");
    assert_eq!(store.state_get("other/empty").await.expect("get").as_deref(), Some(&b""[..]), "emptied");
    assert!(store.state_delete("other/empty").await.expect("delete"));
    assert_eq!(store.state_list("keys").await.expect("list"), vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(store.state_list("other").await.expect("list"), vec!["c".to_owned()]);
    assert!(store.state_delete("keys/a").await.expect("delete"), "deleting a document reports it was there");
    assert!(!store.state_delete("keys/a").await.expect("delete again"), "deleting it again reports it gone");
    assert!(store.state_get("keys/a").await.expect("get deleted").is_none());
    assert_eq!(store.state_list("keys").await.expect("list"), vec!["b".to_owned()], "a deleted document is not listed");
    for bad in ["../x", "keys/../../etc", "/abs", "", "Keys/A", "keys/.tmp"] {
        assert!(store.state_put(bad, Bytes::from_static(b"x")).await.is_err(), "state name {bad:?} accepted");
        assert!(store.state_get(bad).await.is_err(), "state name {bad:?} accepted by get");
        assert!(store.state_delete(bad).await.is_err(), "state name {bad:?} accepted by delete");
    }
    assert!(
        store.repo_list().await.expect("repo list").iter().all(|r| !r.as_str().contains("keys")),
        "shared state must not appear as a repository"
    );
}

/// Whole-blob writes, links, stat, delete.
pub async fn blobs(store: &dyn Storage) {
    let data = seeded_bytes(300_000, 1);
    let d = Digest::sha256_of(&data);
    assert_eq!(store.blob_size(&d).await.expect("stat"), None, "absent blob has no size");
    assert!(matches!(store.blob_read(&d, None).await, Err(StorageError::NotFound)), "absent blob read is NotFound");
    let n = store.blob_write(&d, chunked(data.clone(), 7000), Some(300_000)).await.expect("write");
    assert_eq!(n, 300_000);
    assert_eq!(store.blob_size(&d).await.expect("stat"), Some(300_000));
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec());
    // Idempotent second write.
    store.blob_write(&d, chunked(data.clone(), 65536), None).await.expect("rewrite");
    let r = repo("conf/blobs");
    assert!(!store.blob_linked(&r, &d).await.expect("linked"), "new blob is not linked");
    store.blob_link(&r, &d).await.expect("link");
    assert!(store.blob_linked(&r, &d).await.expect("linked"));
    assert!(!store.blob_linked(&repo("conf/other"), &d).await.expect("linked"), "links are per repository");
    assert!(store.blob_list().await.expect("list").contains(&d));
    assert!(store.blob_unlink(&r, &d).await.expect("unlink"));
    assert!(!store.blob_unlink(&r, &d).await.expect("unlink twice"));
    assert!(store.blob_delete(&d).await.expect("delete"));
    assert!(!store.blob_delete(&d).await.expect("delete twice"));
    assert_eq!(store.blob_size(&d).await.expect("stat"), None);
    // Empty blob.
    let e = Digest::sha256_of(b"");
    store.blob_write(&e, chunked(Bytes::new(), 1), Some(0)).await.expect("empty blob");
    assert_eq!(store.blob_size(&e).await.expect("stat"), Some(0));
    assert!(read_all(store.blob_read(&e, None).await.expect("read")).await.is_empty());
}

/// Ranged reads return exactly the requested bytes.
pub async fn blob_ranges(store: &dyn Storage) {
    let data = seeded_bytes(1_000_000, 2);
    let d = Digest::sha256_of(&data);
    store.blob_write(&d, chunked(data.clone(), 100_000), None).await.expect("write");
    for (s, e) in [(0u64, 0u64), (0, 999_999), (10, 20), (999_000, 999_999), (123_456, 654_321)] {
        let got = read_all(store.blob_read(&d, Some(ByteRange { start: s, end: e })).await.expect("range")).await;
        assert_eq!(got, data[s as usize..=e as usize].to_vec(), "range {s}-{e}");
    }
}

/// `blob_open` finds exactly the blobs `blob_linked` and `blob_size` find,
/// and reads them whole or in ranges, small (read at once on the
/// filesystem) or large, and the empty blob.
pub async fn blob_open(store: &dyn Storage) {
    let r = repo("conf/open");
    for (len, seed) in [(0usize, 0u64), (1000, 3), (256 * 1024, 4), (700_000, 5)] {
        let data = seeded_bytes(len, seed);
        let d = Digest::sha256_of(&data);
        // The empty blob may be left from an earlier check.
        store.blob_delete(&d).await.expect("delete");
        assert!(store.blob_open(&d, None, true).await.expect("open").is_none(), "absent blob of {len}");
        store.blob_write(&d, chunked(data.clone(), 50_000), None).await.expect("write");
        assert!(store.blob_open(&d, Some(&r), true).await.expect("open").is_none(), "not linked: {len}");
        let o = store.blob_open(&d, None, false).await.expect("open").expect("stored");
        assert_eq!(o.size, len as u64, "size without reading");
        store.blob_link(&r, &d).await.expect("link");
        let o = store.blob_open(&d, Some(&r), true).await.expect("open").expect("linked");
        assert_eq!(o.size, len as u64);
        assert_eq!(read_all(o.read(store, &d, None).await.expect("read")).await, data.to_vec(), "whole {len}");
        if len > 0 {
            let (s, e) = (len as u64 / 3, len as u64 - 1);
            let o = store.blob_open(&d, Some(&r), true).await.expect("open").expect("linked");
            let got = read_all(o.read(store, &d, Some(ByteRange { start: s, end: e })).await.expect("range")).await;
            assert_eq!(got, data[s as usize..=e as usize].to_vec(), "range {s}-{e} of {len}");
        }
        assert!(store.blob_open(&d, Some(&repo("conf/open-other")), true).await.expect("open").is_none());
        assert!(store.blob_unlink(&r, &d).await.expect("unlink"));
        assert!(store.blob_open(&d, Some(&r), true).await.expect("open").is_none(), "unlinked: {len}");
        assert!(store.blob_delete(&d).await.expect("delete"));
    }
}

/// Nothing is visible under a digest unless the bytes match it.
pub async fn blob_verification(store: &dyn Storage) {
    let data = seeded_bytes(50_000, 3);
    let wrong = Digest::sha256_of(b"something else");
    let r = store.blob_write(&wrong, chunked(data.clone(), 4096), None).await;
    assert!(matches!(r, Err(StorageError::DigestMismatch { .. })), "wrong digest rejected: {r:?}");
    assert_eq!(store.blob_size(&wrong).await.expect("stat"), None, "mismatched blob invisible");
    let d = Digest::sha256_of(&data);
    let r = store.blob_write(&d, failing(data.slice(..1000)), None).await;
    assert!(r.is_err(), "a failing body fails the write");
    assert_eq!(store.blob_size(&d).await.expect("stat"), None, "failed body leaves nothing visible");
    let r = store.blob_write(&d, chunked(data.clone(), 4096), Some(49_999)).await;
    assert!(r.is_err(), "size mismatch rejected");
    assert_eq!(store.blob_size(&d).await.expect("stat"), None, "size-mismatched blob invisible");
}

/// [`Storage::blob_import`]: a local file of verified bytes becomes the
/// blob (moved or copied, never changed); a wrong size is refused with
/// nothing visible; importing an existing blob succeeds. Uses a fresh
/// directory under the system temp directory, removed at the end.
pub async fn blob_import(store: &dyn Storage) {
    let dir = std::env::temp_dir().join(format!("cove-conformance-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("import dir");
    let data = seeded_bytes(1_500_000, 6);
    let d = Digest::sha256_of(&data);
    let still_intact = |p: &std::path::Path| {
        if let Ok(left) = std::fs::read(p) {
            assert_eq!(left, data.to_vec(), "blob_import changed the file it left at {}", p.display());
        }
    };
    let p = dir.join("spool-a");
    std::fs::write(&p, &data).expect("write import file");
    let r = store.blob_import(&d, &p, 1_499_999).await;
    assert!(r.is_err(), "an import whose size does not match is refused: {r:?}");
    assert_eq!(store.blob_size(&d).await.expect("stat"), None, "a refused import leaves nothing visible");
    still_intact(&p);
    std::fs::write(&p, &data).expect("rewrite import file");
    assert_eq!(store.blob_import(&d, &p, 1_500_000).await.expect("import"), 1_500_000);
    still_intact(&p);
    let _ = std::fs::remove_file(&p);
    assert_eq!(store.blob_size(&d).await.expect("stat"), Some(1_500_000), "imported blob visible");
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec(), "imported bytes");
    let got =
        read_all(store.blob_read(&d, Some(ByteRange { start: 1000, end: 1_234_566 })).await.expect("range")).await;
    assert_eq!(got, data[1000..=1_234_566].to_vec(), "ranged read of an imported blob");
    assert!(!store.blob_linked(&repo("conf/import"), &d).await.expect("linked"), "import links nothing");
    // Importing a blob that exists already succeeds and keeps it.
    let p2 = dir.join("spool-b");
    std::fs::write(&p2, &data).expect("write import file");
    assert_eq!(store.blob_import(&d, &p2, 1_500_000).await.expect("import existing"), 1_500_000);
    still_intact(&p2);
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec(), "existing blob kept");
    // The empty blob.
    let e = Digest::sha256_of(b"");
    let p3 = dir.join("spool-empty");
    std::fs::write(&p3, b"").expect("write empty import file");
    assert_eq!(store.blob_import(&e, &p3, 0).await.expect("import empty"), 0);
    assert_eq!(store.blob_size(&e).await.expect("stat"), Some(0));
    assert!(store.blob_delete(&d).await.expect("delete imported"));
    std::fs::remove_dir_all(&dir).expect("remove import dir");
}

/// Chunked uploads: append at offset, status, commit.
pub async fn uploads(store: &dyn Storage) {
    let r = repo("conf/uploads");
    let data = seeded_bytes(2_500_000, 4);
    let d = Digest::sha256_of(&data);
    let info = store.upload_start(&r).await.expect("start");
    assert!(cove_core::storage::valid_upload_id(&info.id), "id {:?} is a safe token", info.id);
    assert_eq!(info.size, 0);
    assert_eq!(info.repo, r);
    let mut off = 0u64;
    for piece in [0..1_000_000usize, 1_000_000..1_000_001, 1_000_001..2_500_000] {
        let chunk = data.slice(piece.clone());
        off = store.upload_append(&info.id, off, chunked(chunk, 64 * 1024)).await.expect("append");
        assert_eq!(off, piece.end as u64);
        assert_eq!(store.upload_info(&info.id).await.expect("info").size, off);
    }
    let r2 = store.upload_append(&info.id, 5, chunked(Bytes::from_static(b"x"), 1)).await;
    assert!(matches!(r2, Err(StorageError::OffsetMismatch { expected: 2_500_000, got: 5 })), "{r2:?}");
    assert!(store.upload_list().await.expect("list").iter().any(|u| u.id == info.id));
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), 2_500_000);
    assert_eq!(store.blob_size(&d).await.expect("stat"), Some(2_500_000));
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec());
    assert!(matches!(store.upload_info(&info.id).await, Err(StorageError::UploadUnknown)), "committed session ends");
    // Commit of an empty session.
    let info = store.upload_start(&r).await.expect("start");
    let e = Digest::sha256_of(b"");
    assert_eq!(store.upload_commit(&info.id, &e).await.expect("empty commit"), 0);
    // Abort.
    let info = store.upload_start(&r).await.expect("start");
    store.upload_append(&info.id, 0, chunked(Bytes::from_static(b"abc"), 1)).await.expect("append");
    store.upload_abort(&info.id).await.expect("abort");
    assert!(matches!(store.upload_info(&info.id).await, Err(StorageError::UploadUnknown)));
    assert!(matches!(store.upload_info("0000-not-there").await, Err(StorageError::UploadUnknown)));
}

/// Failed chunks and wrong digests leave nothing behind.
pub async fn upload_failures(store: &dyn Storage) {
    let r = repo("conf/uploads");
    let data = seeded_bytes(200_000, 5);
    let info = store.upload_start(&r).await.expect("start");
    store.upload_append(&info.id, 0, chunked(data.slice(..100_000), 10_000)).await.expect("append");
    let bad = store.upload_append(&info.id, 100_000, failing(data.slice(100_000..150_000))).await;
    assert!(bad.is_err(), "failing body fails the append");
    assert_eq!(store.upload_info(&info.id).await.expect("info").size, 100_000, "failed chunk rolled back");
    store.upload_append(&info.id, 100_000, chunked(data.slice(100_000..), 10_000)).await.expect("resume");
    let wrong = Digest::sha256_of(b"nope");
    let r2 = store.upload_commit(&info.id, &wrong).await;
    assert!(matches!(r2, Err(StorageError::DigestMismatch { .. })), "{r2:?}");
    assert_eq!(store.blob_size(&wrong).await.expect("stat"), None);
}

fn manifest_bytes(n: u32) -> Bytes {
    Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}},"layers":[],"annotations":{{"n":"{n}"}}}}"#
    ))
}

/// Manifests by digest, tags pointing at them.
pub async fn manifests_and_tags(store: &dyn Storage) {
    let r = repo("conf/manifests");
    let bytes = manifest_bytes(1);
    let d = Digest::sha256_of(&bytes);
    assert!(store.manifest_get(&r, &d).await.expect("get").is_none());
    assert_eq!(store.tag_list(&r).await.expect("tags"), None, "unknown repo has no tag list");
    let m = StoredManifest { media_type: OCI_MANIFEST.into(), bytes: bytes.clone() };
    store.manifest_put(&r, &d, &m).await.expect("put");
    let got = store.manifest_get(&r, &d).await.expect("get").expect("present");
    assert_eq!(got.bytes, bytes, "byte for byte");
    assert_eq!(got.media_type, OCI_MANIFEST);
    assert!(
        store.manifest_get(&repo("conf/elsewhere"), &d).await.expect("get").is_none(),
        "manifests are per repository"
    );
    assert_eq!(store.tag_list(&r).await.expect("tags"), Some(vec![]), "repo with manifest but no tags");
    store.tag_put(&r, &tag("v1"), &d).await.expect("tag");
    store.tag_put(&r, &tag("latest"), &d).await.expect("tag");
    assert_eq!(store.tag_get(&r, &tag("v1")).await.expect("tag get"), Some(d.clone()));
    let b2 = manifest_bytes(2);
    let d2 = Digest::sha256_of(&b2);
    store.manifest_put(&r, &d2, &StoredManifest { media_type: OCI_MANIFEST.into(), bytes: b2 }).await.expect("put");
    store.tag_put(&r, &tag("v1"), &d2).await.expect("retag");
    assert_eq!(store.tag_get(&r, &tag("v1")).await.expect("tag get"), Some(d2.clone()), "retag replaces");
    assert_eq!(store.tag_list(&r).await.expect("tags"), Some(vec!["latest".into(), "v1".into()]));
    // Tags differing only in case are distinct (also on case-insensitive filesystems).
    store.tag_put(&r, &tag("V1"), &d).await.expect("tag V1");
    assert_eq!(store.tag_get(&r, &tag("v1")).await.expect("tag get"), Some(d2.clone()), "v1 kept beside V1");
    assert_eq!(store.tag_get(&r, &tag("V1")).await.expect("tag get"), Some(d.clone()));
    assert_eq!(store.tag_list(&r).await.expect("tags"), Some(vec!["V1".into(), "latest".into(), "v1".into()]));
    assert!(store.tag_delete(&r, &tag("V1")).await.expect("del V1"));
    let mut listed = store.manifest_list(&r).await.expect("list");
    listed.sort();
    let mut want = vec![d.clone(), d2.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert!(store.tag_delete(&r, &tag("latest")).await.expect("del tag"));
    assert!(!store.tag_delete(&r, &tag("latest")).await.expect("del tag twice"));
    assert_eq!(store.tag_get(&r, &tag("latest")).await.expect("tag get"), None);
    assert!(store.manifest_delete(&r, &d).await.expect("del"));
    assert!(!store.manifest_delete(&r, &d).await.expect("del twice"));
    assert!(store.manifest_get(&r, &d).await.expect("get").is_none());
}

/// Referrer records per subject.
pub async fn referrers(store: &dyn Storage) {
    let r = repo("conf/referrers");
    let subject = Digest::sha256_of(b"subject");
    assert!(store.referrers(&r, &subject).await.expect("none").is_empty());
    let mk = |n: u32, at: &str| Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: Digest::sha256_of(&manifest_bytes(n)),
        size: manifest_bytes(n).len() as u64,
        artifact_type: Some(at.into()),
        annotations: None,
        urls: None,
        platform: None,
    };
    let a = mk(10, "application/vnd.example.sig");
    let b = mk(11, "application/vnd.example.sbom");
    store.referrer_put(&r, &subject, &a).await.expect("put");
    store.referrer_put(&r, &subject, &b).await.expect("put");
    store.referrer_put(&r, &subject, &b).await.expect("put twice");
    let mut got = store.referrers(&r, &subject).await.expect("list");
    got.sort_by(|x, y| x.digest.cmp(&y.digest));
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by(|x, y| x.digest.cmp(&y.digest));
    assert_eq!(got, want, "referrers listed once each with their descriptors");
    store.referrer_delete(&r, &subject, &a.digest).await.expect("delete");
    assert_eq!(store.referrers(&r, &subject).await.expect("list"), vec![b]);
}

/// Repository listing and lexical order.
pub async fn listings(store: &dyn Storage) {
    for name in ["list/b", "list/a/deep/er", "list/a", "list/c-d"] {
        let r = repo(name);
        let bytes = manifest_bytes(99);
        let d = Digest::sha256_of(&bytes);
        store.manifest_put(&r, &d, &StoredManifest { media_type: OCI_MANIFEST.into(), bytes }).await.expect("put");
        store.tag_put(&r, &tag("t"), &d).await.expect("tag");
    }
    let repos: Vec<String> = store.repo_list().await.expect("repos").iter().map(|r| r.to_string()).collect();
    let ours: Vec<&str> = repos.iter().map(String::as_str).filter(|r| r.starts_with("list/")).collect();
    assert_eq!(ours, ["list/a", "list/a/deep/er", "list/b", "list/c-d"], "repos nested and sorted");
    let mut sorted = repos.clone();
    sorted.sort();
    assert_eq!(repos, sorted, "repo_list is sorted");
}

/// Paged repository listing: exactly the matching slice of `repo_list` for
/// every `after` (names, names of deleted repositories, non-names) and page
/// size, across nested names whose bytewise order is not the walk order
/// (`a` < `a-b` < `a.c` < `a/b` < `a0`), skipping deleted repositories.
pub async fn repo_pages(store: &dyn Storage) {
    const NAMES: [&str; 8] = [
        "page/docker.io/library/a",
        "page/docker.io/library/a-b",
        "page/docker.io/library/a.c",
        "page/docker.io/library/a/b",
        "page/docker.io/library/a0",
        "page/docker.io/libraryz",
        "page/docker.io/libraryz/x",
        "page/z",
    ];
    let bytes = manifest_bytes(98);
    let d = Digest::sha256_of(&bytes);
    let m = StoredManifest { media_type: OCI_MANIFEST.into(), bytes };
    for name in NAMES.iter().chain(&["page/docker.io/library/gone", "page/docker.io/library/a/gone"]) {
        store.manifest_put(&repo(name), &d, &m).await.expect("put");
    }
    for gone in ["page/docker.io/library/gone", "page/docker.io/library/a/gone"] {
        assert!(store.manifest_delete(&repo(gone), &d).await.expect("delete"));
        assert!(!store.repo_exists(&repo(gone)).await.expect("exists"), "{gone}: no manifest left, not a repository");
    }
    for name in NAMES {
        assert!(store.repo_exists(&repo(name)).await.expect("exists"), "{name} exists");
    }
    // A directory on the way to repositories is not one.
    assert!(!store.repo_exists(&repo("page/docker.io")).await.expect("exists"), "a parent is not a repository");
    let all: Vec<String> = store.repo_list().await.expect("repos").iter().map(|r| r.to_string()).collect();
    let ours: Vec<&str> = all.iter().map(String::as_str).filter(|r| r.starts_with("page/")).collect();
    assert_eq!(ours, NAMES, "repo_list: nested names in bytewise order, deleted ones left out");
    let mut afters: Vec<&str> = vec!["", "a", "page", "page/", "page/docker.io/library", "page/docker.io/library/"];
    afters.extend(NAMES);
    afters.extend(["page/docker.io/library/gone", "page/docker.io/library/a/a", "page/docker.io/m", "zzz"]);
    for after in afters {
        let want: Vec<&str> = all.iter().map(String::as_str).filter(|r| *r > after).collect();
        for limit in [0, 1, 2, 3, want.len(), want.len() + 1] {
            let got: Vec<String> =
                store.repo_page(Some(after), limit).await.expect("page").iter().map(|r| r.to_string()).collect();
            assert_eq!(got, want[..limit.min(want.len())], "repo_page after {after:?}, limit {limit}");
        }
    }
    let first: Vec<String> = store.repo_page(None, 2).await.expect("page").iter().map(|r| r.to_string()).collect();
    assert_eq!(first, all[..2.min(all.len())], "repo_page without after starts at the beginning");
}

/// Paged tag listing: exactly the matching slice of `tag_list` for every
/// `after` (tags, non-tags, strings that are no tag at all) and page size;
/// an unknown repository is `None`, a known one past its last tag `Some([])`.
pub async fn tag_pages(store: &dyn Storage) {
    let r = repo("tagpage/app");
    let bytes = manifest_bytes(97);
    let d = Digest::sha256_of(&bytes);
    store.manifest_put(&r, &d, &StoredManifest { media_type: OCI_MANIFEST.into(), bytes }).await.expect("put");
    let names = ["B", "a", "a-b", "a.c", "a_d", "ab", "latest", "v1.0", "v1.0-rc1", "v10"];
    for t in names {
        store.tag_put(&r, &tag(t), &d).await.expect("tag");
    }
    let all = store.tag_list(&r).await.expect("tags").expect("known");
    let mut sorted: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    sorted.sort();
    assert_eq!(all, sorted, "tag_list sorted bytewise");
    let mut afters: Vec<&str> = names.to_vec();
    afters.extend(["", "A", "a/", "c", "v1", "zz/x", "~"]);
    for after in afters {
        let want: Vec<&str> = all.iter().map(String::as_str).filter(|t| *t > after).collect();
        for limit in [0, 1, 2, 3, want.len(), want.len() + 1] {
            let got = store.tag_page(&r, Some(after), limit).await.expect("page").expect("known repository");
            assert_eq!(got, want[..limit.min(want.len())], "tag_page after {after:?}, limit {limit}");
        }
    }
    let first = store.tag_page(&r, None, 3).await.expect("page").expect("known");
    assert_eq!(first, all[..3], "tag_page without after starts at the beginning");
    assert_eq!(store.tag_page(&repo("tagpage/none"), None, 5).await.expect("page"), None, "unknown repository");
    assert_eq!(store.tag_page(&repo("tagpage/none"), Some("a"), 5).await.expect("page"), None, "unknown repository");
}
