//! Object-backend checks beyond the [`crate::suites::storage`] suite, for
//! every store the object backend runs on (memory, s3s-fs, Garage). Each
//! takes two `ObjectStorage` instances on the same bucket ("replicas")
//! where it matters, and the raw multipart API to prove aborted uploads are
//! gone.

use std::sync::Arc;

use bytes::Bytes;
use cove_backends::object::ObjectStorage;
use cove_core::storage::StoredManifest;
use cove_core::{Algorithm, Digest, DigestHasher, Storage, StorageError, Tag};
use futures::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::util::{chunked, read_all, repo, seeded_bytes};

/// Objects under `<prefix>/<rel>` in the raw store.
pub async fn keys_under(store: &Arc<dyn ObjectStore>, prefix: &str, rel: &str) -> Vec<String> {
    let p = Path::from(format!("{prefix}/{rel}"));
    let metas: Vec<_> = store.list(Some(&p)).try_collect().await.expect("list raw store");
    metas.into_iter().map(|m| m.location.to_string()).collect()
}

/// Many sub-5 MiB PATCH chunks are coalesced into valid parts (s3s-fs
/// rejects undersized parts), the blob is invisible before commit, and the
/// committed bytes are exact.
pub async fn coalesces_small_chunks(s: &ObjectStorage, prefix: &str) {
    let r = repo("obj/coalesce");
    let body = seeded_bytes(13 * 1024 * 1024 + 12_345, 7);
    let d = Digest::sha256_of(&body);
    let info = s.upload_start(&r).await.expect("start");
    let mut off = 0u64;
    for piece in body.chunks(700 * 1024) {
        let piece = body.slice_ref(piece);
        off = s.upload_append(&info.id, off, chunked(piece, 64 * 1024)).await.expect("append small chunk");
        assert_eq!(s.upload_info(&info.id).await.expect("info").size, off);
    }
    assert_eq!(off, body.len() as u64);
    assert_eq!(s.blob_size(&d).await.expect("stat"), None, "invisible before commit");
    let staged = keys_under(s.object_store(), prefix, "blobs").await;
    assert!(staged.is_empty(), "nothing under blobs/ before commit: {staged:?}");
    assert_eq!(s.upload_commit(&info.id, &d).await.expect("commit"), body.len() as u64);
    assert_eq!(read_all(s.blob_read(&d, None).await.expect("read")).await, body.to_vec(), "committed bytes exact");
    let left = keys_under(s.object_store(), prefix, &format!("uploads/{}", info.id)).await;
    assert!(left.is_empty(), "commit removes session objects: {left:?}");

    // A multi-part session with a wrong digest ends and publishes nothing.
    let info = s.upload_start(&r).await.expect("start");
    let body = seeded_bytes(6 * 1024 * 1024, 8);
    s.upload_append(&info.id, 0, chunked(body.clone(), 1 << 20)).await.expect("append");
    let wrong = Digest::sha256_of(b"not it");
    let res = s.upload_commit(&info.id, &wrong).await;
    assert!(matches!(res, Err(StorageError::DigestMismatch { .. })), "{res:?}");
    assert_eq!(s.blob_size(&wrong).await.expect("stat"), None);
    assert!(matches!(s.upload_info(&info.id).await, Err(StorageError::UploadUnknown)));
}

/// A chunked upload started on replica `a` continues and commits on `b`.
pub async fn upload_continues_on_another_replica(a: &ObjectStorage, b: &ObjectStorage) {
    let r = repo("obj/replicas");
    let body = seeded_bytes(11 * 1024 * 1024 + 3, 9);
    let d = Digest::sha256_of(&body);
    let info = a.upload_start(&r).await.expect("start on A");
    let cut1 = 3 * 1024 * 1024;
    let cut2 = 7 * 1024 * 1024 + 11;
    let off = a.upload_append(&info.id, 0, chunked(body.slice(..cut1), 256 * 1024)).await.expect("append on A");
    let seen = b.upload_info(&info.id).await.expect("B sees the session");
    assert_eq!(seen.size, off);
    assert_eq!(seen.repo, r);
    assert!(b.upload_list().await.expect("list").iter().any(|u| u.id == info.id), "B lists the session");
    let off = b.upload_append(&info.id, off, chunked(body.slice(cut1..cut2), 512 * 1024)).await.expect("append on B");
    let off = a.upload_append(&info.id, off, chunked(body.slice(cut2..), 1 << 20)).await.expect("append on A again");
    assert_eq!(off, body.len() as u64);
    assert_eq!(b.upload_commit(&info.id, &d).await.expect("commit on B"), body.len() as u64);
    assert_eq!(a.blob_size(&d).await.expect("stat on A"), Some(body.len() as u64));
    assert_eq!(read_all(a.blob_read(&d, None).await.expect("read on A")).await, body.to_vec());
}

/// Concurrent tag writes from two replicas end with one consistent value.
pub async fn concurrent_tag_writes_are_consistent(a: &ObjectStorage, b: &ObjectStorage) {
    let r = repo("obj/tags");
    let t: Tag = "race".parse().expect("tag");
    let mut digests = Vec::new();
    for (n, s) in [(1, a), (2, b)] {
        let bytes = Bytes::from(format!(r#"{{"schemaVersion":2,"n":{n}}}"#));
        let d = Digest::sha256_of(&bytes);
        s.manifest_put(
            &r,
            &d,
            &StoredManifest { media_type: "application/vnd.oci.image.manifest.v1+json".into(), bytes },
        )
        .await
        .expect("manifest");
        digests.push(d);
    }
    for _ in 0..10 {
        let (x, y) = tokio::join!(a.tag_put(&r, &t, &digests[0]), b.tag_put(&r, &t, &digests[1]));
        x.expect("tag on A");
        y.expect("tag on B");
        let ga = a.tag_get(&r, &t).await.expect("get on A").expect("tagged");
        let gb = b.tag_get(&r, &t).await.expect("get on B").expect("tagged");
        assert_eq!(ga, gb, "replicas agree");
        assert!(digests.contains(&ga), "tag holds one of the written values");
    }
    assert_eq!(a.tag_list(&r).await.expect("tags"), Some(vec!["race".to_owned()]));
}

/// An aborted upload leaves no objects and its multipart upload is gone.
pub async fn abort_leaves_no_parts(s: &ObjectStorage, multipart: &Arc<dyn MultipartStore>, prefix: &str) {
    let r = repo("obj/abort");
    let info = s.upload_start(&r).await.expect("start");
    let body = seeded_bytes(6 * 1024 * 1024 + 100, 11);
    s.upload_append(&info.id, 0, chunked(body, 1 << 20)).await.expect("append");
    let session_key = Path::from(format!("{prefix}/uploads/{}/session.json", info.id));
    let raw = s
        .object_store()
        .get(&session_key)
        .await
        .expect("session object in the bucket")
        .bytes()
        .await
        .expect("session bytes");
    let session: serde_json::Value = serde_json::from_slice(&raw).expect("session json");
    let upload_id = session["multipart"]["upload_id"].as_str().expect("a multipart upload was started").to_owned();
    assert_eq!(session["multipart"]["parts"].as_array().map(Vec::len), Some(1), "one full part uploaded: {session}");
    assert!(
        !keys_under(s.object_store(), prefix, &format!("uploads/{}/tail", info.id)).await.is_empty(),
        "the sub-part tail is in the bucket"
    );
    s.upload_abort(&info.id).await.expect("abort");
    let left = keys_under(s.object_store(), prefix, &format!("uploads/{}", info.id)).await;
    assert!(left.is_empty(), "abort removes every object: {left:?}");
    let data_key = Path::from(format!("{prefix}/uploads/{}/data", info.id));
    let late = multipart.put_part(&data_key, &upload_id, 3, PutPayload::from_static(b"late")).await;
    assert!(late.is_err(), "the multipart upload was aborted");
    assert!(matches!(s.upload_info(&info.id).await, Err(StorageError::UploadUnknown)));
}

/// A sha512 commit digest is verified by re-reading the staged bytes.
pub async fn sha512_commit(s: &ObjectStorage) {
    let r = repo("obj/sha512");
    for len in [100_000usize, 6 * 1024 * 1024 + 5] {
        let body = seeded_bytes(len, 13);
        let mut h = DigestHasher::new(Algorithm::Sha512);
        h.update(&body);
        let d = h.finish();
        let info = s.upload_start(&r).await.expect("start");
        s.upload_append(&info.id, 0, chunked(body.clone(), 1 << 20)).await.expect("append");
        assert_eq!(s.upload_commit(&info.id, &d).await.expect("commit"), len as u64);
        assert_eq!(read_all(s.blob_read(&d, None).await.expect("read")).await, body.to_vec());
    }
}

/// A whole-blob write larger than a part (multipart onto the blob key)
/// with a wrong digest publishes nothing; with the right one, exact bytes.
pub async fn large_blob_write(s: &ObjectStorage) {
    let body = seeded_bytes(12 * 1024 * 1024 + 7, 17);
    let wrong = Digest::sha256_of(b"wrong");
    let res = s.blob_write(&wrong, chunked(body.clone(), 1 << 20), None).await;
    assert!(matches!(res, Err(StorageError::DigestMismatch { .. })), "{res:?}");
    assert_eq!(s.blob_size(&wrong).await.expect("stat"), None);
    let d = Digest::sha256_of(&body);
    assert_eq!(
        s.blob_write(&d, chunked(body.clone(), 300_000), Some(body.len() as u64)).await.expect("write"),
        body.len() as u64
    );
    assert_eq!(read_all(s.blob_read(&d, None).await.expect("read")).await, body.to_vec());
}

/// Runs every object-specific check on two replicas of one bucket.
pub async fn run_object_checks(
    a: &ObjectStorage,
    b: &ObjectStorage,
    multipart: &Arc<dyn MultipartStore>,
    prefix: &str,
) {
    coalesces_small_chunks(a, prefix).await;
    upload_continues_on_another_replica(a, b).await;
    concurrent_tag_writes_are_consistent(a, b).await;
    abort_leaves_no_parts(a, multipart, prefix).await;
    sha512_commit(a).await;
    large_blob_write(a).await;
}
