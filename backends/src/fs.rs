//! The filesystem [`Storage`]: everything lives under one root directory.
//!
//! # Layout
//! [`Layout::FILESYSTEM`] (written once, in `cove_core::storage::layout`)
//! below the root: `blobs/<alg>/<first 2 hex>/<hex>`, `repositories/<repo>/…`
//! with `<repo>`'s components as nested directories, `shared/<name>`. This
//! backend adds its own working files:
//!
//! ```text
//! <root>/
//!   tmp/<random>                                files being written; emptied at open
//!   uploads/<id>/data                           bytes an upload session received so far
//!   uploads/<id>/state.json                     {"repo", "size", "started", "updated"}
//!                                               (times in Unix milliseconds), written once
//!   uploads/<id>/progress                       acknowledged size, overwritten in place by
//!                                               each append (two checksummed slots)
//! ```
//!
//! Upload ids are random UUIDv4 strings; ids from clients are validated
//! before they touch a path.
//!
//! # Guarantees
//! - Every write that makes something visible (blob, manifest, tag, referrer,
//!   upload state) goes to a temp file in `tmp/` (same filesystem), is
//!   fsynced and renamed into place; blob commits also fsync the parent
//!   directory. A crash leaves at most files in `tmp/` (removed at the next
//!   open) or extra bytes at the end of an upload's `data` beyond the size in
//!   `progress` (cut off by the next append or commit). Links are empty
//!   files, created atomically by `open(O_CREAT)`.
//! - Pushed bytes are hashed while they stream in; a blob is renamed into
//!   `blobs/` only if its digest (and expected size) matched. A committed
//!   upload's `data` file is renamed into `blobs/` without being copied.
//!   [`Storage::blob_import`] (the pull-through cache's verified spool file)
//!   fsyncs the file and renames it into `blobs/`; only across filesystems
//!   is it copied (through `tmp/`).
//! - Memory stays flat: bodies move in ~1 MiB batches through bounded queues
//!   to one hashing and one writing blocking thread; reads use 256 KiB
//!   positional reads with one read ahead.
//! - Opening does not scan `repositories/` (start-up time does not grow with
//!   the number of repositories); it empties `tmp/` and drops upload
//!   directories that never got a `state.json`.
//! - One process owns a root: `tmp/` is emptied at open, so two processes
//!   must not share a root.
//! - Tags are file names: on a case-insensitive filesystem (macOS default)
//!   tags differing only in case share one file.

mod atomic;
mod meta;
mod pipe;
mod space;
mod uploads;

pub use space::MinFree;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cove_core::manifest::Descriptor;
use cove_core::storage::{layout, Layout, StoredManifest, UploadInfo};
use cove_core::{ByteRange, ByteStream, Digest, DigestHasher, RepoName, Storage, StorageError, Tag};

use atomic::TempFile;

/// The in-memory part of an upload session.
#[derive(Default)]
struct SessionMem {
    /// The SHA-256 state of the bytes received so far and how many there
    /// were (`None` after a restart).
    hashed: Option<(u64, DigestHasher)>,
    /// Background flushing of `data`, kept across appends.
    flusher: pipe::Flusher,
}

impl pipe::HasFlusher for tokio::sync::OwnedMutexGuard<SessionMem> {
    fn flusher(&mut self) -> &mut pipe::Flusher {
        &mut self.flusher
    }
}

/// A [`Storage`] on a local (or network) filesystem. See the module
/// documentation for the layout and guarantees.
#[derive(Clone)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    uploads: PathBuf,
    repos: PathBuf,
    /// Per-session lock and running hasher; serialises appends and commits.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<SessionMem>>>>,
    /// Free space of the root's filesystem and the `min_free` floor.
    space: Arc<space::SpaceGauge>,
}

impl std::fmt::Debug for FsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStorage").field("root", &self.inner.root).finish()
    }
}

impl FsStorage {
    /// Opens (creating if needed) a store rooted at `root`: creates the
    /// layout and removes temp files a previous process left. Does not scan
    /// repositories, so it is fast whatever the store holds.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStorage, StorageError> {
        FsStorage::open_with_floor(root, MinFree::default())
    }

    /// [`FsStorage::open`] with a free-space floor: writes (pushes, whole
    /// blobs, new upload sessions) that would leave less than `min_free`
    /// free fail with [`StorageError::Full`] before the disk is full.
    pub fn open_with_floor(root: impl Into<PathBuf>, min_free: MinFree) -> Result<FsStorage, StorageError> {
        let root = root.into();
        let inner = Inner {
            space: Arc::new(space::SpaceGauge::new(root.clone(), min_free)),
            blobs: root.join(layout::BLOBS),
            tmp: root.join("tmp"),
            uploads: root.join(layout::UPLOADS),
            repos: root.join(layout::REPOSITORIES),
            root,
            sessions: Mutex::new(HashMap::new()),
        };
        for dir in [&inner.blobs, &inner.tmp, &inner.uploads, &inner.repos] {
            fs::create_dir_all(dir)?;
        }
        let mut removed = 0usize;
        for name in atomic::list_names(&inner.tmp)? {
            let p = inner.tmp.join(&name);
            let r = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A session whose start was interrupted has no state.json: drop it.
        for name in atomic::list_names(&inner.uploads)? {
            let dir = inner.uploads.join(&name);
            if !dir.join(uploads::STATE).exists() {
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed leftover temp files");
        }
        Ok(FsStorage { inner: Arc::new(inner) })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking filesystem work on a blocking thread.
    async fn run<R, F>(&self, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Inner) -> Result<R, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?
    }
}

/// The layout on disk (see [`Layout`]).
const L: Layout = Layout::FILESYSTEM;

impl Inner {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.path(&L.blob(d))
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.path(&L.repo(repo))
    }

    fn manifest_path(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.path(&L.manifest(repo, d))
    }

    fn tag_path(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.path(&L.tag(repo, tag))
    }

    fn link_path(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.path(&L.link(repo, d))
    }

    fn referrer_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.path(&L.referrers(repo, subject))
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks a written body's size and digest against what was expected.
fn verify(
    size: u64,
    hasher: Option<DigestHasher>,
    digest: &Digest,
    expected_size: Option<u64>,
) -> Result<(), StorageError> {
    if let Some(expected) = expected_size.filter(|e| *e != size) {
        return Err(StorageError::SizeMismatch { expected, actual: size });
    }
    let actual = hasher.ok_or_else(|| StorageError::Backend("hasher lost".into()))?.finish();
    if actual != *digest {
        return Err(StorageError::DigestMismatch { expected: digest.clone(), actual });
    }
    Ok(())
}

#[async_trait::async_trait]
impl Storage for FsStorage {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    fn capabilities(&self) -> cove_core::storage::Capabilities {
        cove_core::storage::Capabilities::FILESYSTEM
    }

    async fn state_put(&self, name: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        let path = L.state(name)?;
        self.run(move |inner| {
            // Shared state holds secrets (signing keys): owner-only.
            let mut tmp = TempFile::create(&inner.tmp)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                if let Some(f) = tmp.file() {
                    f.set_permissions(fs::Permissions::from_mode(0o600))?;
                }
            }
            io::Write::write_all(&mut tmp, &bytes)?;
            tmp.persist(&inner.path(&path))?;
            Ok(())
        })
        .await
    }

    async fn state_get(&self, name: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        let path = L.state(name)?;
        self.run(move |inner| Ok(atomic::read_if_exists(&inner.path(&path))?.map(bytes::Bytes::from))).await
    }

    async fn state_delete(&self, name: &str) -> Result<bool, StorageError> {
        let path = L.state(name)?;
        self.run(move |inner| Ok(atomic::remove_if_exists(&inner.path(&path))?)).await
    }

    async fn state_list(&self, dir: &str) -> Result<Vec<String>, StorageError> {
        let path = L.state(dir)?;
        self.run(move |inner| {
            let dir = inner.path(&path);
            let mut names: Vec<String> = atomic::list_names(&dir)?
                .into_iter()
                .filter(|n| cove_core::storage::valid_state_name(n) && dir.join(n).is_file())
                .collect();
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.run(|inner| {
            for dir in [&inner.blobs, &inner.uploads, &inner.repos] {
                if !fs::metadata(dir)?.is_dir() {
                    return Err(StorageError::Backend(format!("{} is not a directory", dir.display())));
                }
            }
            let mut t = TempFile::create(&inner.tmp)?;
            io::Write::write_all(&mut t, b"ok")?;
            drop(t);
            Ok(())
        })
        .await
    }

    async fn space(&self) -> Result<Option<cove_core::storage::Space>, StorageError> {
        self.run(|inner| Ok(Some(inner.space.space()?))).await
    }

    // ---- blobs -------------------------------------------------------------

    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, StorageError> {
        let d = digest.clone();
        self.run(move |inner| {
            Ok(not_found_as_none(fs::metadata(inner.blob_path(&d)))?.filter(|m| m.is_file()).map(|m| m.len()))
        })
        .await
    }

    async fn blob_read(&self, digest: &Digest, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        let d = digest.clone();
        let (file, size) = self
            .run(move |inner| {
                let f = not_found_as_none(fs::File::open(inner.blob_path(&d)))?.ok_or(StorageError::NotFound)?;
                let size = f.metadata()?.len();
                Ok((f, size))
            })
            .await?;
        let (start, len) = match range {
            None => (0, size),
            Some(r) if r.end < size && r.start <= r.end => (r.start, r.len()),
            Some(r) => {
                return Err(StorageError::Backend(format!("range {}-{} outside blob of {size} bytes", r.start, r.end)))
            }
        };
        Ok(pipe::read_stream(file, start, len))
    }

    async fn blob_write(
        &self,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError> {
        let hasher = DigestHasher::new(digest.algorithm());
        if self.blob_size(digest).await?.is_some() {
            // Already stored: verify the body without writing it again.
            let out = pipe::pump(
                body,
                Some(hasher),
                None::<fn() -> io::Result<io::Sink>>,
                pipe::Flusher::default(),
                expected_size,
            )
            .await;
            out.result?;
            verify(out.size, out.hasher, digest, expected_size)?;
            return Ok(out.size);
        }
        let (tmp, gauge) = (self.inner.tmp.clone(), self.inner.space.clone());
        let out = pipe::pump(
            body,
            Some(hasher),
            Some(move || {
                gauge.reserve(0)?;
                Ok(space::Floored::new(TempFile::create(&tmp)?, gauge))
            }),
            pipe::Flusher::default(),
            expected_size,
        )
        .await;
        let size = out.size;
        let checked = out.result.and_then(|()| verify(size, out.hasher, digest, expected_size));
        let (writer, flusher) = (out.writer, out.token);
        let d = digest.clone();
        // Persist, or drop (remove) the temp file, on a blocking thread.
        self.run(move |inner| {
            let flushed = flusher.map(pipe::Flusher::finish).unwrap_or(Ok(()));
            checked?;
            flushed?;
            let tmp = writer.ok_or_else(|| StorageError::Backend("temp file lost".into()))?.inner;
            let dest = inner.blob_path(&d);
            tmp.persist(&dest)?;
            if let Some(parent) = dest.parent() {
                atomic::sync_dir(parent)?;
            }
            Ok(size)
        })
        .await
    }

    async fn blob_import(&self, digest: &Digest, path: &Path, size: u64) -> Result<u64, StorageError> {
        let (d, src) = (digest.clone(), path.to_path_buf());
        self.run(move |inner| {
            let dest = inner.blob_path(&d);
            if let Some(m) = not_found_as_none(fs::metadata(&dest))?.filter(|m| m.is_file()) {
                // Already stored (content addressed): nothing to do.
                return Ok(m.len());
            }
            let actual = fs::metadata(&src)?.len();
            if actual != size {
                return Err(StorageError::SizeMismatch { expected: size, actual });
            }
            atomic::import_file(&src, &inner.tmp, &dest)?;
            if let Some(parent) = dest.parent() {
                atomic::sync_dir(parent)?;
            }
            Ok(size)
        })
        .await
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StorageError> {
        let d = digest.clone();
        self.run(move |inner| Ok(atomic::remove_if_exists(&inner.blob_path(&d))?)).await
    }

    async fn blob_list(&self) -> Result<Vec<Digest>, StorageError> {
        self.run(|inner| {
            let mut out = Vec::new();
            for alg in atomic::list_names(&inner.blobs)? {
                let alg_dir = inner.blobs.join(&alg);
                for fan in atomic::list_names(&alg_dir)? {
                    for hex in atomic::list_names(&alg_dir.join(&fan))? {
                        out.extend(L.blob_from_parts(&[&alg, &fan, &hex]));
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StorageError> {
        let (r, d) = (repo.clone(), digest.clone());
        self.run(move |inner| Ok(atomic::touch(&inner.link_path(&r, &d))?)).await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        let (r, d) = (repo.clone(), digest.clone());
        self.run(move |inner| {
            let linked = not_found_as_none(fs::metadata(inner.link_path(&r, &d)))?.is_some();
            Ok(linked && not_found_as_none(fs::metadata(inner.blob_path(&d)))?.is_some())
        })
        .await
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        let (r, d) = (repo.clone(), digest.clone());
        self.run(move |inner| Ok(atomic::remove_if_exists(&inner.link_path(&r, &d))?)).await
    }

    // ---- uploads -----------------------------------------------------------

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError> {
        self.start_session(repo).await
    }

    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        self.session_info(id).await
    }

    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError> {
        self.append_session(id, offset, body).await
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError> {
        self.commit_session(id, digest).await
    }

    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        self.abort_session(id).await
    }

    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError> {
        self.list_sessions().await
    }

    // ---- manifests, tags, referrers ----------------------------------------

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> Result<(), StorageError> {
        self.put_manifest(repo, digest, manifest).await
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StorageError> {
        self.get_manifest(repo, digest).await
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StorageError> {
        let (r, d) = (repo.clone(), digest.clone());
        self.run(move |inner| Ok(atomic::remove_if_exists(&inner.manifest_path(&r, &d))?)).await
    }

    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<Digest>, StorageError> {
        let r = repo.clone();
        self.run(move |inner| meta::manifest_digests(&inner.repo_dir(&r), false)).await
    }

    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StorageError> {
        self.get_tag(repo, tag).await
    }

    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StorageError> {
        let (r, t, d) = (repo.clone(), tag.clone(), layout::encode_tag(digest));
        self.run(move |inner| Ok(atomic::write_atomic(&inner.tmp, &inner.tag_path(&r, &t), &[d.as_bytes()])?)).await
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StorageError> {
        let (r, t) = (repo.clone(), tag.clone());
        self.run(move |inner| Ok(atomic::remove_if_exists(&inner.tag_path(&r, &t))?)).await
    }

    async fn tag_list(&self, repo: &RepoName) -> Result<Option<Vec<String>>, StorageError> {
        self.list_tags(repo).await
    }

    /// The directory holds the tags unordered, so a page reads them all
    /// (10,000 tags: a few milliseconds).
    async fn tag_page(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<String>>, StorageError> {
        Ok(self
            .list_tags(repo)
            .await?
            .map(|tags| tags.into_iter().filter(|t| after.is_none_or(|a| t.as_str() > a)).take(limit).collect()))
    }

    async fn repo_list(&self) -> Result<Vec<RepoName>, StorageError> {
        self.run(|inner| meta::repo_page(&inner.repos, None, usize::MAX)).await
    }

    async fn repo_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<RepoName>, StorageError> {
        let after = after.map(str::to_owned);
        self.run(move |inner| meta::repo_page(&inner.repos, after.as_deref(), limit)).await
    }

    async fn referrer_put(
        &self,
        repo: &RepoName,
        subject: &Digest,
        descriptor: &Descriptor,
    ) -> Result<(), StorageError> {
        self.put_referrer(repo, subject, descriptor).await
    }

    async fn referrer_delete(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Result<(), StorageError> {
        let (r, s, d) = (repo.clone(), subject.clone(), referrer.clone());
        self.run(move |inner| {
            let path = inner.referrer_dir(&r, &s).join(L.referrer_name(&d));
            atomic::remove_if_exists(&path)?;
            Ok(())
        })
        .await
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StorageError> {
        self.list_referrers(repo, subject).await
    }
}

#[cfg(test)]
mod import_tests {
    use super::*;

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
}
