//! The object backend on object_store's in-memory store (with multipart):
//! the shared conformance suite and the object-specific checks.

use std::sync::Arc;

use cove_backends::object::ObjectStorage;
use cove_core::Storage;
use cove_testkit::faulty_store::FaultyStore;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::ObjectStore;

fn pair(prefix: &str) -> (ObjectStorage, ObjectStorage, Arc<dyn MultipartStore>) {
    let mem = Arc::new(InMemory::new());
    let store: Arc<dyn ObjectStore> = mem.clone();
    let mp: Arc<dyn MultipartStore> = mem;
    let a = ObjectStorage::new(store.clone(), Some(mp.clone()), prefix).with_part_size(5 << 20);
    let b = ObjectStorage::new(store, Some(mp.clone()), prefix).with_part_size(5 << 20);
    (a, b, mp)
}

#[tokio::test]
async fn conformance_in_memory() {
    let (a, _, _) = pair("");
    cove_testkit::suites::storage::run_all(&a).await;
}

#[tokio::test]
async fn conformance_in_memory_with_prefix() {
    let (a, _, _) = pair("some/prefix");
    cove_testkit::suites::storage::run_all(&a).await;
    let outside: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(a.object_store().list(None)).await.expect("list");
    assert!(outside.iter().all(|m| m.location.as_ref().starts_with("some/prefix/")), "every key is under the prefix");
}

#[tokio::test]
async fn object_checks_in_memory() {
    let (a, b, mp) = pair("pfx");
    cove_testkit::suites::object::run_object_checks(&a, &b, &mp, "pfx").await;
}

#[tokio::test]
async fn without_multipart_small_uploads_work_and_large_ones_say_unsupported() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let s = ObjectStorage::new(store, None, "").with_part_size(5 << 20);
    cove_testkit::suites::storage::run_all(&s).await;
    let r: cove_core::RepoName = "obj/nomp".parse().expect("repo");
    let info = s.upload_start(&r).await.expect("start");
    let big = cove_testkit::util::seeded_bytes(6 << 20, 1);
    let res = s.upload_append(&info.id, 0, cove_testkit::util::chunked(big, 1 << 20)).await;
    assert!(matches!(res, Err(cove_core::StorageError::NotSupported(_))), "{res:?}");
    assert_eq!(s.upload_info(&info.id).await.expect("info").size, 0);
}

/// A chunked upload above the copy limit is streamed into place at commit
/// (no server-side copy is attempted) and reads back whole; one at or under
/// the limit is copied.
#[tokio::test]
async fn chunked_upload_above_the_copy_limit_is_streamed_not_copied() {
    let mem = Arc::new(InMemory::new());
    // Server-side copies always fail, as S3's CopyObject does above 5 GiB.
    let no_copy = FaultyStore::new(mem.clone());
    no_copy.refuse_copies();
    let store: Arc<dyn ObjectStore> = no_copy.clone();
    let mp: Arc<dyn MultipartStore> = mem;
    let s = ObjectStorage::new(store, Some(mp), "").with_part_size(5 << 20).with_copy_limit(8 << 20);
    let repo: cove_core::RepoName = "obj/big".parse().expect("repo");
    let data = cove_testkit::util::seeded_bytes(12 << 20, 7);
    let digest = cove_core::Digest::sha256_of(&data);
    let info = s.upload_start(&repo).await.expect("start");
    let n = s.upload_append(&info.id, 0, cove_testkit::util::chunked(data.clone(), 1 << 20)).await.expect("append");
    assert_eq!(n, data.len() as u64);
    assert_eq!(s.upload_commit(&info.id, &digest).await.expect("commit"), data.len() as u64);
    assert_eq!(no_copy.copies(), 0, "no server-side copy above the limit");
    let mut body = s.blob_read(&digest, None).await.expect("read");
    let mut got = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut body).await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(cove_core::Digest::sha256_of(&got), digest, "the blob reads back whole");
    assert!(s.upload_info(&info.id).await.is_err(), "the session is gone");
    let left: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(s.object_store().list(None)).await.expect("list");
    assert!(left.iter().all(|m| !m.location.as_ref().starts_with("uploads/")), "nothing left under uploads/: {left:?}");

    // Under the limit the copy is used (and here fails, as the store says).
    let small = cove_testkit::util::seeded_bytes(6 << 20, 8);
    let info = s.upload_start(&repo).await.expect("start");
    s.upload_append(&info.id, 0, cove_testkit::util::chunked(small.clone(), 1 << 20)).await.expect("append");
    let res = s.upload_commit(&info.id, &cove_core::Digest::sha256_of(&small)).await;
    assert!(res.is_err(), "{res:?}");
    assert_eq!(no_copy.copies(), 1, "copied server-side under the limit");
}
