//! Upload sessions on disk: progress slots, torn records, restarts.

use super::*;
use bytes::Bytes;

fn body(b: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(Bytes::from_static(b))]))
}

#[test]
fn progress_slots_round_trip_and_reject_torn_records() {
    let a = Progress { seq: 7, size: 123_456, updated: 99 };
    let b = Progress { seq: 8, size: 200_000, updated: 100 };
    let mut raw = vec![0u8; 1024];
    raw[..SLOT_LEN].copy_from_slice(&b.encode());
    raw[512..512 + SLOT_LEN].copy_from_slice(&a.encode());
    assert_eq!(Progress::newest(&raw), Some(b), "highest sequence wins");
    // A torn write of the newest slot: the previous record is used.
    raw[20] ^= 0x40;
    assert_eq!(Progress::newest(&raw), Some(a));
    raw[512 + 3] = b'X';
    assert_eq!(Progress::newest(&raw), None, "no valid slot");
    assert_eq!(Progress::newest(&[]), None);
    assert_eq!(Progress::newest(&[0u8; 600]), None, "zeroed file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_keep_state_json_and_survive_a_torn_progress_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let repo: RepoName = "torn/progress".parse().expect("repo");
    let info = store.upload_start(&repo).await.expect("start");
    let session = dir.path().join("uploads").join(&info.id);
    let state_before = fs::read(session.join(STATE)).expect("state");
    assert_eq!(store.upload_append(&info.id, 0, body(b"hello ")).await.expect("append"), 6);
    assert_eq!(store.upload_append(&info.id, 6, body(b"world")).await.expect("append"), 11);
    assert_eq!(fs::read(session.join(STATE)).expect("state"), state_before, "state.json written once");
    assert_eq!(store.upload_info(&info.id).await.expect("info").size, 11);

    // Power loss tore the newest record (seq 3, slot 1): after a restart
    // the previous one (6 bytes) is the truth and the rest is cut off.
    let mut raw = fs::read(session.join(PROGRESS)).expect("progress");
    raw[512 + 17] ^= 0xff;
    fs::write(session.join(PROGRESS), &raw).expect("tear");
    let store = FsStorage::open(dir.path()).expect("reopen");
    assert_eq!(store.upload_info(&info.id).await.expect("info").size, 6);
    let r = store.upload_append(&info.id, 11, body(b"!")).await;
    assert!(matches!(r, Err(StorageError::OffsetMismatch { expected: 6, got: 11 })), "{r:?}");
    assert_eq!(store.upload_append(&info.id, 6, body(b"there")).await.expect("append"), 11);
    let d = Digest::sha256_of(b"hello there");
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), 11);
    assert_eq!(cove_core::Storage::blob_size(&store, &d).await.expect("stat"), Some(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_progress_uses_the_size_in_state_json() {
    // The layout before `progress` existed: the size lived in state.json.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let repo: RepoName = "old/layout".parse().expect("repo");
    let info = store.upload_start(&repo).await.expect("start");
    store.upload_append(&info.id, 0, body(b"abcdef")).await.expect("append");
    let session = dir.path().join("uploads").join(&info.id);
    fs::remove_file(session.join(PROGRESS)).expect("rm progress");
    fs::write(session.join(STATE), br#"{"repo":"old/layout","size":4,"started":1,"updated":2}"#).expect("state");
    let store = FsStorage::open(dir.path()).expect("reopen");
    let info2 = store.upload_info(&info.id).await.expect("info");
    assert_eq!((info2.size, info2.updated), (4, from_ms(2)));
    assert_eq!(store.upload_append(&info.id, 4, body(b"XY")).await.expect("append"), 6);
    assert_eq!(store.upload_info(&info.id).await.expect("info").size, 6);
    let d = Digest::sha256_of(b"abcdXY");
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), 6);
}
