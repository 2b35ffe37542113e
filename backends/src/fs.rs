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
mod pipe;
mod space;
mod uploads;

pub use space::MinFree;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cove_core::storage::{layout, Capabilities, Driver, Layout, Listing, OpenBlob};
use cove_core::{ByteRange, ByteStream, Digest, DigestHasher, StorageError};

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
    /// The path of a layout name.
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.path(&L.blob(d))
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The size of the file at `path`; `None` when there is none (or it is not
/// a regular file).
fn file_size(path: &Path) -> io::Result<Option<u64>> {
    Ok(not_found_as_none(fs::metadata(path))?.filter(|m| m.is_file()).map(|m| m.len()))
}

/// The file at `path` opened for reading, and its size; `None` as for
/// [`file_size`].
fn open_file(path: &Path) -> io::Result<Option<(fs::File, u64)>> {
    let Some(file) = not_found_as_none(fs::File::open(path))? else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    Ok(meta.is_file().then_some((file, meta.len())))
}

/// What [`open_here`] came to.
enum Here {
    /// Answered: the blob is missing (or not linked), or opened (and, when
    /// asked and small, read).
    Done(Option<OpenBlob>),
    /// A small blob the page cache does not hold whole: read it on a
    /// blocking thread.
    Read(fs::File, u64),
}

/// Opens a blob file on the calling (async) thread, and reads a small one
/// there when the page cache holds all of it ([`pipe::read_cached_at`]), so a
/// hot blob costs no trip to a blocking thread and back (nginx serves from
/// its event loop the same way). The metadata calls take microseconds when
/// the kernel's dentry cache holds the path, as it does for every blob
/// served often; only an uncached small blob's read blocks, and goes to a
/// blocking thread (on other systems than Linux, every small blob's read).
fn open_here(inner: &Inner, name: &str, requires: Option<&str>, read: bool) -> io::Result<Here> {
    if let Some(link) = requires {
        if file_size(&inner.path(link))?.is_none() {
            return Ok(Here::Done(None));
        }
    }
    let Some((file, size)) = open_file(&inner.path(name))? else {
        return Ok(Here::Done(None));
    };
    if !read || size > pipe::READ_CHUNK {
        return Ok(Here::Done(Some(OpenBlob::new(size, Some(pipe::file_reader(file, size, None))))));
    }
    Ok(match pipe::read_cached_at(&file, 0, size)? {
        Some(bytes) => Here::Done(Some(OpenBlob::new(size, Some(pipe::file_reader(file, size, Some(bytes)))))),
        None => Here::Read(file, size),
    })
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
impl Driver for FsStorage {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::FILESYSTEM
    }

    fn layout(&self) -> Layout {
        L
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

    async fn stat(&self, name: &str) -> Result<Option<u64>, StorageError> {
        let name = name.to_owned();
        self.run(move |inner| Ok(file_size(&inner.path(&name))?)).await
    }

    async fn read(&self, name: &str, range: Option<ByteRange>) -> Result<ByteStream, StorageError> {
        let name = name.to_owned();
        let (file, size) = self.run(move |inner| open_file(&inner.path(&name))?.ok_or(StorageError::NotFound)).await?;
        let (start, len) = pipe::range_in(range, size)?;
        Ok(pipe::read_stream(file, start, len))
    }

    /// One blocking call: the link's check, the open, the size and, for a
    /// blob of at most one read ([`pipe::READ_CHUNK`]) that will be read,
    /// its bytes.
    async fn open(&self, name: &str, requires: Option<&str>, read: bool) -> Result<Option<OpenBlob>, StorageError> {
        match open_here(&self.inner, name, requires, read)? {
            Here::Done(opened) => Ok(opened),
            Here::Read(file, size) => {
                let (file, bytes) = self.run(move |_| Ok(pipe::read_whole(&file, size).map(|b| (file, b))?)).await?;
                Ok(Some(OpenBlob::new(size, Some(pipe::file_reader(file, size, Some(bytes))))))
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, StorageError> {
        let name = name.to_owned();
        self.run(move |inner| Ok(atomic::read_if_exists(&inner.path(&name))?.map(Bytes::from))).await
    }

    /// Through a fsynced temp file renamed into place; an empty marker is
    /// created directly (`open(O_CREAT)` is atomic by itself) unless it
    /// replaces bytes. Shared state
    /// holds secrets (signing keys): owner-only.
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), StorageError> {
        let name = name.to_owned();
        let secret = name.starts_with(L.shared) && name.as_bytes().get(L.shared.len()) == Some(&b'/');
        self.run(move |inner| {
            let dest = inner.path(&name);
            if bytes.is_empty() {
                atomic::touch(&dest)?;
                // A marker is new, or was empty already: done. Something
                // with bytes in it is replaced below like any document.
                if fs::metadata(&dest)?.len() == 0 {
                    return Ok(());
                }
            }
            let mut tmp = TempFile::create(&inner.tmp)?;
            #[cfg(unix)]
            if secret {
                use std::os::unix::fs::PermissionsExt as _;
                if let Some(f) = tmp.file() {
                    f.set_permissions(fs::Permissions::from_mode(0o600))?;
                }
            }
            #[cfg(not(unix))]
            let _ = secret;
            io::Write::write_all(&mut tmp, &bytes)?;
            tmp.persist(&dest)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<bool, StorageError> {
        let name = name.to_owned();
        self.run(move |inner| Ok(atomic::remove_if_exists(&inner.path(&name))?)).await
    }

    /// Symbolic links are not followed, as nothing in the layout is one.
    async fn list(&self, dir: &str) -> Result<Listing, StorageError> {
        let dir = dir.to_owned();
        self.run(move |inner| {
            let mut out = Listing::default();
            let entries = match fs::read_dir(inner.path(&dir)) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                match entry.file_type() {
                    Ok(t) if t.is_dir() => out.dirs.push(name),
                    Ok(t) if t.is_file() => out.files.push(name),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
    }

    async fn walk(&self, dir: &str) -> Result<Vec<Vec<String>>, StorageError> {
        let dir = dir.to_owned();
        self.run(move |inner| walk_files(&inner.path(&dir), false)).await
    }

    async fn any_below(&self, dir: &str) -> Result<bool, StorageError> {
        let dir = dir.to_owned();
        self.run(move |inner| Ok(!walk_files(&inner.path(&dir), true)?.is_empty())).await
    }

    async fn write_verified(
        &self,
        name: &str,
        digest: &Digest,
        body: ByteStream,
        expected_size: Option<u64>,
    ) -> Result<u64, StorageError> {
        let hasher = DigestHasher::new(digest.algorithm());
        if Driver::stat(self, name).await?.is_some() {
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
        let name = name.to_owned();
        // Persist, or drop (remove) the temp file, on a blocking thread.
        self.run(move |inner| {
            let flushed = flusher.map(pipe::Flusher::finish).unwrap_or(Ok(()));
            checked?;
            flushed?;
            let tmp = writer.ok_or_else(|| StorageError::Backend("temp file lost".into()))?.inner;
            let dest = inner.path(&name);
            tmp.persist(&dest)?;
            if let Some(parent) = dest.parent() {
                atomic::sync_dir(parent)?;
            }
            Ok(size)
        })
        .await
    }

    /// Renames the file into place (copied through `tmp/` only across
    /// filesystems).
    async fn import(&self, name: &str, _digest: &Digest, path: &Path, size: u64) -> Result<u64, StorageError> {
        let (name, src) = (name.to_owned(), path.to_path_buf());
        self.run(move |inner| {
            let dest = inner.path(&name);
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
}

/// The files below `dir` as name parts relative to it (`first_only`: stop
/// at the first one found, an existence check). Missing directories, and
/// entries removed during the walk, are skipped.
fn walk_files(dir: &Path, first_only: bool) -> Result<Vec<Vec<String>>, StorageError> {
    let mut out = Vec::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(rel) = pending.pop() {
        let here = rel.iter().fold(dir.to_path_buf(), |p, c| p.join(c));
        let entries = match fs::read_dir(&here) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let mut parts = rel.clone();
            parts.push(name);
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(parts),
                Ok(t) if t.is_file() => {
                    out.push(parts);
                    if first_only {
                        return Ok(out);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod import_tests;
#[cfg(test)]
mod open_tests;
