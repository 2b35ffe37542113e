//! The object backend on object_store's in-memory store (with multipart):
//! the shared conformance suite and the object-specific checks.

mod object_support;

use std::sync::Arc;

use cove_backends::object::ObjectStorage;
use cove_core::Storage;
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
    cove_core::conformance::run_all(&a).await;
}

#[tokio::test]
async fn conformance_in_memory_with_prefix() {
    let (a, _, _) = pair("some/prefix");
    cove_core::conformance::run_all(&a).await;
    let outside: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(a.object_store().list(None)).await.expect("list");
    assert!(outside.iter().all(|m| m.location.as_ref().starts_with("some/prefix/")), "every key is under the prefix");
}

#[tokio::test]
async fn object_checks_in_memory() {
    let (a, b, mp) = pair("pfx");
    object_support::checks::run_object_checks(&a, &b, &mp, "pfx").await;
}

#[tokio::test]
async fn without_multipart_small_uploads_work_and_large_ones_say_unsupported() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let s = ObjectStorage::new(store, None, "").with_part_size(5 << 20);
    cove_core::conformance::run_all(&s).await;
    let r: cove_core::RepoName = "obj/nomp".parse().expect("repo");
    let info = s.upload_start(&r).await.expect("start");
    let big = object_support::checks::data(6 << 20, 1);
    let res = s.upload_append(&info.id, 0, cove_core::conformance::chunked(big, 1 << 20)).await;
    assert!(matches!(res, Err(cove_core::StorageError::NotSupported(_))), "{res:?}");
    assert_eq!(s.upload_info(&info.id).await.expect("info").size, 0);
}
