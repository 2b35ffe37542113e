//! Filesystem-specific behaviour: crash leftovers, restarts, concurrency,
//! nothing visible after a failed write, fast start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cove_backends::FsStorage;
use cove_core::digest::Algorithm;
use cove_core::storage::StoredManifest;
use cove_core::{Digest, DigestHasher, Storage, StorageError, Tag};

use cove_testkit::util::{chunked, failing, files_under, read_all, repo, seeded_bytes, stalling};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_write_is_invisible_and_cleaned_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(5 * 1024 * 1024, 1);
    let d = Digest::sha256_of(&data);
    // A write that stalls after 3 MiB: its bytes sit in tmp/ only.
    let store2 = store.clone();
    let d2 = d.clone();
    let task =
        tokio::spawn(
            async move { store2.blob_write(&d2, stalling(data.slice(..3 * 1024 * 1024), 64 * 1024), None).await },
        );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tmp_bytes: u64 = files_under(&dir.path().join("tmp"))
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        if tmp_bytes >= 2 * 1024 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "write never reached tmp/");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.blob_size(&d).await.expect("stat"), None);
    assert!(files_under(&dir.path().join("blobs")).is_empty(), "nothing in blobs/");
    assert!(store.blob_list().await.expect("list").is_empty());

    // A crash also leaves files the process never got to clean up.
    std::fs::write(dir.path().join("tmp").join("leftover"), b"partial").expect("write");
    // "Kill" the writer without letting it clean up, then reopen.
    std::mem::forget(task);
    let reopened = FsStorage::open(dir.path()).expect("reopen");
    assert!(files_under(&dir.path().join("tmp")).is_empty(), "tmp/ emptied at open");
    assert_eq!(reopened.blob_size(&d).await.expect("stat"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_write_removes_its_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(3 * 1024 * 1024, 2);
    let d = Digest::sha256_of(&data);
    let r =
        tokio::time::timeout(Duration::from_millis(300), store.blob_write(&d, stalling(data, 64 * 1024), None)).await;
    assert!(r.is_err(), "stalled write timed out");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files_under(&dir.path().join("tmp")).is_empty() {
        assert!(Instant::now() < deadline, "temp file of a dropped write removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.blob_size(&d).await.expect("stat"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_leaves_nothing_in_blobs_or_tmp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    // One small (single batch) and one large (threaded pipeline) body.
    for len in [10_000usize, 3 * 1024 * 1024 + 17] {
        let data = seeded_bytes(len, len as u64);
        let wrong = Digest::sha256_of(b"not this");
        let r = store.blob_write(&wrong, chunked(data.clone(), 16 * 1024), None).await;
        assert!(matches!(r, Err(StorageError::DigestMismatch { .. })), "{r:?}");
        let right = Digest::sha256_of(&data);
        let r = store.blob_write(&right, chunked(data.clone(), 16 * 1024), Some(len as u64 + 1)).await;
        assert!(matches!(r, Err(StorageError::SizeMismatch { .. })), "{r:?}");
        let r = store.blob_write(&right, chunked(data.clone(), 16 * 1024), Some(len as u64 - 1)).await;
        assert!(matches!(r, Err(StorageError::SizeMismatch { .. })), "{r:?}");
        let r = store.blob_write(&right, failing(data.clone()), None).await;
        assert!(matches!(r, Err(StorageError::BodyError(_))), "body failure is BodyError: {r:?}");
        assert!(files_under(&dir.path().join("blobs")).is_empty(), "blobs/ empty");
        assert!(files_under(&dir.path().join("tmp")).is_empty(), "tmp/ empty");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_blob_rewrite_still_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(100_000, 3);
    let d = Digest::sha256_of(&data);
    store.blob_write(&d, chunked(data.clone(), 4096), None).await.expect("write");
    let other = seeded_bytes(100_000, 4);
    let r = store.blob_write(&d, chunked(other, 4096), None).await;
    assert!(matches!(r, Err(StorageError::DigestMismatch { .. })), "{r:?}");
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec(), "stored blob untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_restart_and_rehashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = repo("restart/me");
    let data = seeded_bytes(3 * 1024 * 1024 + 5, 5);
    let d = Digest::sha256_of(&data);
    let id = {
        let store = FsStorage::open(dir.path()).expect("open");
        let info = store.upload_start(&r).await.expect("start");
        let n = store.upload_append(&info.id, 0, chunked(data.slice(..1_500_000), 32 * 1024)).await.expect("append");
        assert_eq!(n, 1_500_000);
        info.id
    };
    let store = FsStorage::open(dir.path()).expect("reopen");
    let info = store.upload_info(&id).await.expect("info after restart");
    assert_eq!(info.size, 1_500_000);
    assert_eq!(info.repo, r);
    assert!(store.upload_list().await.expect("list").iter().any(|u| u.id == id));
    let n = store
        .upload_append(&id, 1_500_000, chunked(data.slice(1_500_000..), 100_000))
        .await
        .expect("append after restart");
    assert_eq!(n, data.len() as u64);
    // A third process commits: no hasher in memory at all.
    drop(store);
    let store = FsStorage::open(dir.path()).expect("reopen again");
    assert_eq!(store.upload_commit(&id, &d).await.expect("commit"), data.len() as u64);
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec());
    assert!(files_under(&dir.path().join("uploads")).is_empty(), "session removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha512_commit_rehashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(2_000_000, 6);
    let mut h = DigestHasher::new(Algorithm::Sha512);
    h.update(&data);
    let d = h.finish();
    let info = store.upload_start(&repo("five/twelve")).await.expect("start");
    store.upload_append(&info.id, 0, chunked(data.clone(), 50_000)).await.expect("append");
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), 2_000_000);
    assert_eq!(store.blob_size(&d).await.expect("stat"), Some(2_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_bytes_after_crash_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = repo("crash/extra");
    let data = seeded_bytes(2_000_000, 7);
    let d = Digest::sha256_of(&data);
    for restart in [false, true] {
        let mut store = FsStorage::open(dir.path()).expect("open");
        let info = store.upload_start(&r).await.expect("start");
        store.upload_append(&info.id, 0, chunked(data.slice(..1_000_000), 10_000)).await.expect("append");
        // A crash mid-append leaves bytes past the recorded size.
        let data_file = dir.path().join("uploads").join(&info.id).join("data");
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&data_file).expect("data file");
            f.write_all(&seeded_bytes(123_457, 99)).expect("garbage");
        }
        if restart {
            store = FsStorage::open(dir.path()).expect("reopen");
        }
        assert_eq!(store.upload_info(&info.id).await.expect("info").size, 1_000_000);
        let n = store
            .upload_append(&info.id, 1_000_000, chunked(data.slice(1_000_000..), 10_000))
            .await
            .expect("append after crash");
        assert_eq!(n, 2_000_000);
        assert_eq!(std::fs::metadata(&data_file).expect("meta").len(), 2_000_000);
        // Garbage again, then commit directly: commit cuts it off too.
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&data_file).expect("data file");
            f.write_all(b"trailing junk").expect("garbage");
        }
        assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), 2_000_000);
        assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec(), "restart={restart}");
        assert!(store.blob_delete(&d).await.expect("delete"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_with_lost_data_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let r = repo("power/loss");
    for commit in [false, true] {
        let info = store.upload_start(&r).await.expect("start");
        store.upload_append(&info.id, 0, chunked(seeded_bytes(100_000, 13), 10_000)).await.expect("append");
        // Power loss before the data reached the disk: data shorter than state.
        let session = dir.path().join("uploads").join(&info.id);
        std::fs::OpenOptions::new()
            .write(true)
            .open(session.join("data"))
            .expect("data")
            .set_len(40_000)
            .expect("shrink");
        let r2 = if commit {
            store.upload_commit(&info.id, &Digest::sha256_of(b"x")).await.map(|_| ())
        } else {
            store.upload_append(&info.id, 100_000, chunked(Bytes::from_static(b"y"), 1)).await.map(|_| ())
        };
        assert!(matches!(r2, Err(StorageError::UploadUnknown)), "{r2:?}");
        assert!(!session.exists(), "broken session removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_chunk_rolls_back_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(6 * 1024 * 1024, 8);
    let d = Digest::sha256_of(&data);
    let info = store.upload_start(&repo("roll/back")).await.expect("start");
    store.upload_append(&info.id, 0, chunked(data.slice(..1_000_000), 64 * 1024)).await.expect("append");
    // Several MiB reach the writer thread before the body fails.
    let r = store.upload_append(&info.id, 1_000_000, failing(data.slice(1_000_000..5_000_000))).await;
    assert!(matches!(r, Err(StorageError::BodyError(_))), "{r:?}");
    let data_file = dir.path().join("uploads").join(&info.id).join("data");
    assert_eq!(std::fs::metadata(&data_file).expect("meta").len(), 1_000_000);
    assert_eq!(store.upload_info(&info.id).await.expect("info").size, 1_000_000);
    store.upload_append(&info.id, 1_000_000, chunked(data.slice(1_000_000..), 64 * 1024)).await.expect("resume");
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_append_then_resume_is_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(4 * 1024 * 1024, 9);
    let d = Digest::sha256_of(&data);
    let info = store.upload_start(&repo("cancel/append")).await.expect("start");
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        store.upload_append(&info.id, 0, stalling(data.slice(..3 * 1024 * 1024), 64 * 1024)),
    )
    .await;
    assert!(r.is_err(), "stalled append timed out");
    assert_eq!(store.upload_info(&info.id).await.expect("info").size, 0);
    store.upload_append(&info.id, 0, chunked(data.clone(), 64 * 1024)).await.expect("append after cancel");
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_to_one_session_are_serialised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FsStorage::open(dir.path()).expect("open"));
    let info = store.upload_start(&repo("conc/append")).await.expect("start");
    let chunks: Vec<Bytes> = (0..8).map(|i| seeded_bytes(700_000, 100 + i)).collect();
    let mut tasks = Vec::new();
    for c in &chunks {
        let (s, id, c) = (Arc::clone(&store), info.id.clone(), c.clone());
        tasks
            .push(tokio::spawn(async move { s.upload_append(&id, 0, chunked(c.clone(), 16 * 1024)).await.map(|_| c) }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            Ok(c) => winners.push(c),
            Err(StorageError::OffsetMismatch { expected: 700_000, got: 0 }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one append at offset 0 wins");
    let d = Digest::sha256_of(&winners[0]);
    assert_eq!(store.upload_commit(&info.id, &d).await.expect("commit"), 700_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_of_one_blob_and_tag_updates_end_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FsStorage::open(dir.path()).expect("open"));
    let data = seeded_bytes(3 * 1024 * 1024, 10);
    let d = Digest::sha256_of(&data);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (s, d, data) = (Arc::clone(&store), d.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            s.blob_write(&d, chunked(data, 8192 * (i + 1)), Some(3 * 1024 * 1024)).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("write"), 3 * 1024 * 1024);
    }
    assert_eq!(read_all(store.blob_read(&d, None).await.expect("read")).await, data.to_vec());

    let r = repo("conc/tags");
    let tag: Tag = "latest".parse().expect("tag");
    let mut digests = Vec::new();
    for i in 0..16u32 {
        let bytes = Bytes::from(format!("{{\"n\":{i}}}"));
        let md = Digest::sha256_of(&bytes);
        store
            .manifest_put(&r, &md, &StoredManifest { media_type: cove_core::manifest::OCI_MANIFEST.into(), bytes })
            .await
            .expect("manifest");
        digests.push(md);
    }
    let mut tasks = Vec::new();
    for md in digests.clone() {
        let (s, r, t) = (Arc::clone(&store), r.clone(), tag.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.tag_put(&r, &t, &md).await?;
                // Readers never see a torn tag.
                s.tag_get(&r, &t).await?.ok_or(StorageError::NotFound)?;
            }
            Ok::<_, StorageError>(())
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("tag updates");
    }
    let now = store.tag_get(&r, &tag).await.expect("get").expect("tagged");
    assert!(digests.contains(&now));
    assert_eq!(store.tag_list(&r).await.expect("list"), Some(vec!["latest".to_owned()]));
    assert!(files_under(&dir.path().join("tmp")).is_empty(), "tmp/ empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_upload_ids_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    // A file a traversal would reach.
    std::fs::write(dir.path().join("state.json"), br#"{"repo":"a","size":0,"started":0,"updated":0}"#).expect("bait");
    for bad in ["..", "../..", "", "ABC", "a/b", "x.json", &"a".repeat(65)] {
        assert!(matches!(store.upload_info(bad).await, Err(StorageError::UploadUnknown)), "{bad:?}");
        assert!(matches!(
            store.upload_append(bad, 0, chunked(Bytes::from_static(b"x"), 1)).await,
            Err(StorageError::UploadUnknown)
        ));
        assert!(matches!(store.upload_commit(bad, &Digest::sha256_of(b"x")).await, Err(StorageError::UploadUnknown)));
        assert!(matches!(store.upload_abort(bad).await, Err(StorageError::UploadUnknown)));
    }
    assert!(dir.path().join("state.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stream_in_bounded_chunks() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let data = seeded_bytes(5 * 1024 * 1024 + 3, 11);
    let d = Digest::sha256_of(&data);
    store.blob_write(&d, chunked(data.clone(), 1 << 20), None).await.expect("write");
    let mut s = store.blob_read(&d, None).await.expect("read");
    let (mut total, mut biggest, mut hasher) = (0usize, 0usize, DigestHasher::new(Algorithm::Sha256));
    while let Some(c) = s.next().await {
        let c = c.expect("chunk");
        total += c.len();
        biggest = biggest.max(c.len());
        hasher.update(&c);
    }
    assert_eq!(total, data.len());
    assert_eq!(hasher.finish(), d);
    assert!(biggest <= 1024 * 1024, "chunks are bounded, got {biggest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_list_and_repo_list_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path()).expect("open");
    let r = repo("only/blobs");
    let b = seeded_bytes(10, 12);
    let bd = Digest::sha256_of(&b);
    store.blob_write(&bd, chunked(b, 10), None).await.expect("blob");
    store.blob_link(&r, &bd).await.expect("link");
    assert_eq!(store.tag_list(&r).await.expect("tags"), None, "no manifest: unknown");
    assert!(store.repo_list().await.expect("repos").is_empty());
    let m = Bytes::from_static(b"{}");
    let md = Digest::sha256_of(&m);
    let sm = StoredManifest { media_type: cove_core::manifest::OCI_MANIFEST.into(), bytes: m };
    store.manifest_put(&r, &md, &sm).await.expect("manifest");
    assert_eq!(store.tag_list(&r).await.expect("tags"), Some(vec![]));
    assert_eq!(store.repo_list().await.expect("repos"), vec![r.clone()]);
    assert!(store.manifest_delete(&r, &md).await.expect("delete"));
    assert_eq!(store.tag_list(&r).await.expect("tags"), None);
    assert!(store.repo_list().await.expect("repos").is_empty());
}

/// Creates `n` repositories (in 100 organisations) with one manifest each,
/// then times `open` while counting the opens and reads it makes inside
/// `repositories/` and each organisation directory (Linux inotify; `None`
/// elsewhere), and checks the walk `repo_list` does is both seen by that
/// count and finds them all. Returns (time, reads during open).
fn open_with_repositories(n: usize) -> (Duration, Option<usize>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repos = dir.path().join("repositories");
    for i in 0..n {
        let m = repos.join(format!("org{}/repo{i}", i % 100)).join("_manifests/sha256");
        std::fs::create_dir_all(&m).expect("mkdir");
        std::fs::write(m.join(format!("{:064x}", i)), b"x\n{}").expect("manifest");
    }
    #[cfg(target_os = "linux")]
    let watch = {
        let mut watched = vec![repos.clone()];
        watched.extend((0..n.min(100)).map(|o| repos.join(format!("org{o}"))));
        cove_testkit::fswatch::DirReads::watch(&watched)
    };
    let t = Instant::now();
    let store = FsStorage::open(dir.path()).expect("open");
    let took = t.elapsed();
    #[cfg(target_os = "linux")]
    let reads = Some(watch.take());
    #[cfg(not(target_os = "linux"))]
    let reads = None;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let found = rt.block_on(store.repo_list()).expect("repos").len();
    assert_eq!(found, n, "the repositories are there");
    #[cfg(target_os = "linux")]
    assert!(watch.take() >= n.min(100), "the count sees a walk of the tree (repo_list reads every organisation)");
    (took, reads)
}

/// `open` must not walk `repositories/`: it is the one tree that grows with
/// use, so start-up would grow with it. The read count catches any walk
/// (however fast the directories are cached); the time bound is the
/// user-visible promise.
#[test]
fn open_does_not_scan_repositories() {
    let (took, reads) = open_with_repositories(1_000);
    if let Some(reads) = reads {
        assert_eq!(reads, 0, "open read the repositories tree ({reads} opens and reads)");
    }
    assert!(took < Duration::from_millis(100), "open took {took:?}");
}

/// The full-size start-up check (slow to set up and tear down on some
/// filesystems): `cargo test -p cove-backends --test fs_behaviour -- --ignored`.
#[test]
#[ignore]
fn open_is_fast_with_ten_thousand_repositories() {
    let (took, reads) = open_with_repositories(10_000);
    eprintln!("open with 10,000 repositories: {took:?}");
    assert_eq!(reads.unwrap_or(0), 0, "open read the repositories tree");
    assert!(took < Duration::from_millis(100), "open took {took:?}");
}
