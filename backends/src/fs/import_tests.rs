//! Importing a verified spool file: renamed into place, not copied.

use super::*;
use cove_core::Storage;

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A spool beside the blobs is renamed into place (not copied): a handle
/// opened before the import still reads it, and nothing is left in tmp/.
#[tokio::test]
async fn import_on_the_same_filesystem_renames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStorage::open(dir.path().join("store")).expect("open");
    let spool_dir = dir.path().join("store").join("spool");
    fs::create_dir_all(&spool_dir).expect("spool dir");
    let bytes = data(3_000_000);
    let d = Digest::sha256_of(&bytes);
    let spool = spool_dir.join("x");
    fs::write(&spool, &bytes).expect("spool");
    let reader = fs::File::open(&spool).expect("open spool");
    assert_eq!(store.blob_import(&d, &spool, bytes.len() as u64).await.expect("import"), 3_000_000);
    assert!(!spool.exists(), "the spool file was moved, not copied");
    let blob = store.inner.blob_path(&d);
    assert_eq!(fs::read(&blob).expect("blob"), bytes);
    let mut again = Vec::new();
    io::Read::read_to_end(&mut &reader, &mut again).expect("read through the old handle");
    assert_eq!(again, bytes, "a reader's handle survives the rename");
    assert!(atomic::list_names(&dir.path().join("store").join("tmp")).expect("tmp").is_empty());
}

/// Across filesystems (/dev/shm is tmpfs on Linux) the file is copied
/// through tmp/ and left where it was. Skipped where no second
/// filesystem is at hand.
#[cfg(unix)]
#[tokio::test]
async fn import_across_filesystems_copies() {
    use std::os::unix::fs::MetadataExt;
    let shm = Path::new("/dev/shm");
    let dir = tempfile::tempdir().expect("tempdir");
    let other = match fs::metadata(shm) {
        Ok(m) if m.is_dir() && m.dev() != fs::metadata(dir.path()).expect("stat").dev() => {
            tempfile::tempdir_in(shm).expect("tempdir in /dev/shm")
        }
        _ => {
            eprintln!("no second filesystem at /dev/shm: cross-device import not tested here");
            return;
        }
    };
    let store = FsStorage::open(dir.path()).expect("open");
    let bytes = data(2_500_000);
    let d = Digest::sha256_of(&bytes);
    let spool = other.path().join("x");
    fs::write(&spool, &bytes).expect("spool");
    assert_eq!(store.blob_import(&d, &spool, bytes.len() as u64).await.expect("import"), 2_500_000);
    assert_eq!(fs::read(store.inner.blob_path(&d)).expect("blob"), bytes);
    assert_eq!(fs::read(&spool).expect("source left in place"), bytes);
    assert!(atomic::list_names(&dir.path().join("tmp")).expect("tmp").is_empty(), "no temp file left");
}
