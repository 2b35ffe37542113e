//! Small blocking helpers: temp files in `tmp/`, atomic replace by rename,
//! directory fsync. All of these run on blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written in `tmp/`. Removed on drop unless persisted, so an
/// abandoned write (error, cancelled request) leaves nothing behind.
pub(crate) struct TempFile {
    file: Option<File>,
    path: PathBuf,
}

impl TempFile {
    /// Creates a new, uniquely named, empty temp file in `tmp_dir`.
    pub(crate) fn create(tmp_dir: &Path) -> io::Result<TempFile> {
        let path = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let file = OpenOptions::new().write(true).read(true).create_new(true).open(&path)?;
        Ok(TempFile { file: Some(file), path })
    }

    /// The open file (to set its permissions before it is persisted).
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Flushes the data to disk and renames the file to `dest` (creating its
    /// parent directories). The rename is atomic: readers see the old `dest`
    /// or the whole new one.
    pub(crate) fn persist(self, dest: &Path) -> io::Result<()> {
        self.persist_with(dest, true)
    }

    /// [`TempFile::persist`], optionally without the fsync (the rename is
    /// still atomic for readers and for a process crash, not a power loss).
    pub(crate) fn persist_with(mut self, dest: &Path, fsync: bool) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            if fsync {
                f.sync_all()?;
            }
        }
        rename_into(&self.path, dest)?;
        // Renamed: nothing left to clean up.
        self.path = PathBuf::new();
        Ok(())
    }
}

impl super::pipe::FileSink for TempFile {
    fn as_file(&self) -> Option<&File> {
        self.file.as_ref()
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("temp file already closed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("temp file already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if !self.path.as_os_str().is_empty() {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove temp file");
                }
            }
        }
    }
}

/// Renames `from` to `to`, creating `to`'s parent directories if missing.
pub(crate) fn rename_into(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(from, to)
        }
        other => other,
    }
}

/// Makes the file at `src` durable and moves it to `dest` atomically
/// (creating `dest`'s parent directories). Renames when `src` is on the same
/// filesystem; across filesystems copies it to a temp file in `tmp_dir`
/// first and renames that, leaving `src` in place. Readers see no `dest` or
/// the whole file, never a part.
pub(crate) fn import_file(src: &Path, tmp_dir: &Path, dest: &Path) -> io::Result<()> {
    File::open(src)?.sync_all()?;
    match rename_into(src, dest) {
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            tracing::debug!(src = %src.display(), "import across filesystems: copying");
            let mut from = File::open(src)?;
            let mut tmp = TempFile::create(tmp_dir)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = io::Read::read(&mut from, &mut buf)?;
                if n == 0 {
                    break;
                }
                tmp.write_all(&buf[..n])?;
            }
            tmp.persist(dest)
        }
        other => other,
    }
}

/// Writes `parts` to `dest` atomically: temp file in `tmp_dir`, fsync, rename.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut tmp = TempFile::create(tmp_dir)?;
    for p in parts {
        tmp.write_all(p)?;
    }
    tmp.persist(dest)
}

/// Makes a rename or create inside `dir` durable. A no-op where directories
/// cannot be opened as files.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates an empty file at `path` if absent (creating parent directories).
/// Creating an empty file is atomic by itself: no temp file is needed.
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    let open = || OpenOptions::new().write(true).create(true).truncate(false).open(path);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            open().map(drop)
        }
        other => other.map(drop),
    }
}

/// Removes a file; `Ok(false)` if it did not exist.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a whole file; `Ok(None)` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names of the entries of `dir` (empty if it does not exist), unsorted.
/// Names that are not UTF-8 are skipped: Cove never writes such names.
pub(crate) fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        if let Ok(name) = entry?.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}
