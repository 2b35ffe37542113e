//! Opening a blob on the async thread ([`open_here`]): a small blob the
//! page cache holds is read there, one it does not is read on a blocking
//! thread, and either way its bytes come back exactly.

use super::*;
use cove_core::{RepoName, Storage};
use futures::TryStreamExt;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn stored(store: &FsStorage, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let body: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::copy_from_slice(bytes))]));
    store.blob_write(&d, body, Some(bytes.len() as u64)).await.expect("write");
    d
}

async fn read_back(store: &FsStorage, d: &Digest) -> Vec<u8> {
    let opened = store.blob_open(d, None, true).await.expect("open").expect("present");
    let size = opened.size;
    let body = opened.read(store, d, None).await.expect("read");
    let chunks: Vec<Bytes> = body.try_collect().await.expect("stream");
    assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>() as u64, size);
    chunks.concat()
}

/// The bytes `start..=end` of a stored blob, read through its open reader.
async fn read_range(store: &FsStorage, d: &Digest, start: u64, end: u64) -> Vec<u8> {
    let opened = store.blob_open(d, None, true).await.expect("open").expect("present");
    let body = opened.read(store, d, Some(ByteRange { start, end })).await.expect("read");
    let chunks: Vec<Bytes> = body.try_collect().await.expect("stream");
    chunks.concat()
}

#[tokio::test]
async fn small_and_large_blobs_read_back_exactly_cached_or_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path().to_path_buf()).expect("open");
    for len in [0, 1, 117 * 1024, pipe::READ_CHUNK as usize, pipe::READ_CHUNK as usize + 1, 3_000_000] {
        let bytes = data(len);
        let d = stored(&store, &bytes).await;
        assert_eq!(read_back(&store, &d).await, bytes, "{len} bytes, just written");
        // Out of the page cache (where the filesystem drops clean pages
        // on request): the read must not be served from nowhere.
        let file = fs::File::open(store.inner.blob_path(&d)).expect("blob file");
        file.sync_all().expect("sync");
        #[cfg(target_os = "linux")]
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        if len as u64 <= pipe::READ_CHUNK {
            let here = open_here(&store.inner, &L.blob(&d), None, true).expect("open here");
            match (pipe::read_cached_at(&file, 0, len as u64).expect("read cached"), here) {
                (Some(b), Here::Done(Some(o))) => {
                    assert_eq!(&b[..], &bytes[..]);
                    assert_eq!(o.size, len as u64);
                }
                (None, Here::Read(_, size)) => assert_eq!(size, len as u64),
                (Some(_), _) | (None, _) => {
                    // The page cache changed between the two calls (the
                    // first read may bring pages back): nothing to compare.
                }
            }
        }
        assert_eq!(read_back(&store, &d).await, bytes, "{len} bytes, after dropping cached pages");
        // A range across a chunk boundary, from the page cache and, once
        // dropped again, from the disk.
        if len as u64 > pipe::READ_CHUNK + 10 {
            let (start, end) = (pipe::READ_CHUNK - 10, len as u64 - 3);
            let want = &bytes[start as usize..=end as usize];
            assert_eq!(read_range(&store, &d, start, end).await, want, "{len} bytes, range, cached");
            #[cfg(target_os = "linux")]
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
            assert_eq!(read_range(&store, &d, start, end).await, want, "{len} bytes, range, not cached");
        }
    }
}

#[tokio::test]
async fn a_missing_blob_or_link_opens_as_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path().to_path_buf()).expect("open");
    let d = stored(&store, b"linked nowhere").await;
    let absent = Digest::sha256_of(b"never stored");
    assert!(store.blob_open(&absent, None, true).await.expect("open").is_none());
    let repo: RepoName = "some/repo".parse().expect("name");
    assert!(store.blob_open(&d, Some(&repo), true).await.expect("open").is_none(), "not linked in the repository");
    store.blob_link(&repo, &d).await.expect("link");
    assert!(store.blob_open(&d, Some(&repo), false).await.expect("open").is_some());
}
