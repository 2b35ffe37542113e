//! Resumable upload sessions: `uploads/<id>/data`, `state.json` and
//! `progress`.
//!
//! `state.json` (repository, start time; written once, fsynced) plus
//! `progress` (the acknowledged size) are the truth: `data` may hold extra
//! bytes past that size after a crash or a failed chunk, and they are cut
//! off before the next append or at commit. The running SHA-256 of the
//! first `size` bytes is kept in memory so commit need not re-read; after a
//! restart (or for a sha512 digest) commit re-hashes `data`.
//!
//! `progress` is overwritten in place by every append instead of replacing
//! `state.json` by rename: on ext4 a rename that replaces a file waits for a
//! journal commit in flight, and the background flush of `data` (an
//! fdatasync) forces one about every 32 MiB, so a rename per chunk stalled
//! each 8–16 MiB PATCH for 10–50 ms (chunked pushes ran at half the speed of
//! monolithic ones). An in-place write of an existing block does not wait.
//! It holds two checksummed slots written alternately, so a torn write
//! (power loss) leaves the previous record readable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cove_core::digest::Algorithm;
use cove_core::storage::{valid_upload_id, UploadInfo, UploadSessions};
use cove_core::{ByteStream, Digest, DigestHasher, RepoName, StorageError};
use serde::{Deserialize, Serialize};

use super::{atomic, pipe, verify, FsStorage, Inner, SessionMem};

/// Name of the session state file.
pub(super) const STATE: &str = "state.json";
const DATA: &str = "data";
/// Name of the acknowledged-size record (see the module documentation).
const PROGRESS: &str = "progress";
/// Distance between the two slots of `progress` (separate disk sectors).
const SLOT_SPACING: u64 = 512;
/// Length of one slot: magic, sequence, size, updated, checksum.
const SLOT_LEN: usize = 40;
const SLOT_MAGIC: &[u8; 8] = b"coveup01";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    repo: String,
    size: u64,
    /// Unix milliseconds.
    started: u64,
    /// Unix milliseconds.
    updated: u64,
    /// Sequence number of the `progress` record `size` came from (0: none).
    #[serde(skip)]
    seq: u64,
}

/// An acknowledged-size record of `progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    seq: u64,
    size: u64,
    updated: u64,
}

/// FNV-1a, 64 bits: detects a torn or unwritten slot.
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Progress {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut out = [0u8; SLOT_LEN];
        out[..8].copy_from_slice(SLOT_MAGIC);
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.size.to_le_bytes());
        out[24..32].copy_from_slice(&self.updated.to_le_bytes());
        let sum = fnv64(&out[..32]);
        out[32..].copy_from_slice(&sum.to_le_bytes());
        out
    }

    fn decode(slot: &[u8]) -> Option<Progress> {
        let slot = slot.get(..SLOT_LEN)?;
        let word = |i: usize| slot.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        if &slot[..8] != SLOT_MAGIC || word(32)? != fnv64(&slot[..32]) {
            return None;
        }
        let p = Progress { seq: word(8)?, size: word(16)?, updated: word(24)? };
        (p.seq > 0).then_some(p)
    }

    /// The newest valid record of a `progress` file's contents.
    fn newest(raw: &[u8]) -> Option<Progress> {
        let spacing = usize::try_from(SLOT_SPACING).ok()?;
        [0, spacing].iter().filter_map(|off| raw.get(*off..).and_then(Progress::decode)).max_by_key(|p| p.seq)
    }
}

/// Writes `p` into its slot of the `progress` file in `dir` (creating the
/// file if needed), in place and without fsync.
fn write_progress(dir: &Path, p: Progress) -> io::Result<()> {
    let f = OpenOptions::new().write(true).create(true).truncate(false).open(dir.join(PROGRESS))?;
    let off = (p.seq % 2) * SLOT_SPACING;
    let rec = p.encode();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&rec, off)
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let mut f = f;
        f.seek(SeekFrom::Start(off))?;
        f.write_all(&rec)
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl State {
    fn info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        let repo: RepoName =
            self.repo.parse().map_err(|_| StorageError::Backend(format!("upload {id} has a corrupt state")))?;
        Ok(UploadInfo {
            id: id.to_owned(),
            repo,
            size: self.size,
            started: from_ms(self.started),
            updated: from_ms(self.updated),
        })
    }
}

impl Inner {
    /// The directory of session `id`; `UploadUnknown` unless `id` is a
    /// well-formed session id (so it is safe as a path component).
    fn session_dir(&self, id: &str) -> Result<std::path::PathBuf, StorageError> {
        if !valid_upload_id(id) {
            return Err(StorageError::UploadUnknown);
        }
        Ok(self.uploads.join(id))
    }

    fn read_state(&self, dir: &Path) -> Result<State, StorageError> {
        let raw = atomic::read_if_exists(&dir.join(STATE))?.ok_or(StorageError::UploadUnknown)?;
        match serde_json::from_slice::<State>(&raw) {
            Ok(mut state) => {
                // No (valid) record: a session from before `progress`
                // existed, or one whose record was lost with a power loss.
                let progress = atomic::read_if_exists(&dir.join(PROGRESS))?.and_then(|p| Progress::newest(&p));
                if let Some(p) = progress {
                    (state.size, state.updated, state.seq) = (p.size, p.updated, p.seq);
                }
                Ok(state)
            }
            Err(e) => {
                // Only a power loss can do this (state is replaced by
                // rename): the session cannot be trusted, so it ends.
                tracing::warn!(upload = %dir.display(), error = %e, "unreadable upload state; dropping the session");
                match fs::remove_dir_all(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
                Err(StorageError::UploadUnknown)
            }
        }
    }

    /// The state of a session whose `data` holds at least `size` bytes. A
    /// session whose data went missing or shrank (power loss before the
    /// data reached the disk) cannot be resumed: it is removed and reported
    /// unknown, so the client starts over.
    fn read_checked_state(&self, dir: &Path) -> Result<State, StorageError> {
        let state = self.read_state(dir)?;
        let len = match fs::metadata(dir.join(DATA)) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if len.is_none_or(|l| l < state.size) {
            tracing::warn!(
                upload = %dir.display(),
                recorded = state.size,
                on_disk = ?len,
                "upload data shorter than recorded; dropping the session"
            );
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            return Err(StorageError::UploadUnknown);
        }
        Ok(state)
    }

    /// Writes `state.json` atomically and durably (once, at the start).
    fn write_state(&self, dir: &Path, state: &State) -> Result<(), StorageError> {
        let json =
            serde_json::to_vec(state).map_err(|e| StorageError::Backend(format!("encoding upload state: {e}")))?;
        Ok(atomic::write_atomic(&self.tmp, &dir.join(STATE), &[&json])?)
    }

    fn session_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<SessionMem>> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(id.to_owned()).or_default())
    }

    fn forget_session(&self, id: &str) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }
}

/// Opens a session's data file for appending at `size`, cutting off any
/// bytes past it.
fn open_data_at(path: &Path, size: u64) -> io::Result<File> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    if len < size {
        return Err(io::Error::other(format!(
            "upload data {} holds {len} bytes, fewer than the recorded {size}",
            path.display()
        )));
    }
    if len > size {
        f.set_len(size)?;
    }
    f.seek(SeekFrom::Start(size))?;
    Ok(f)
}

#[async_trait::async_trait]
impl UploadSessions for FsStorage {
    async fn upload_start(&self, repo: &RepoName) -> Result<UploadInfo, StorageError> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let state = State { repo: repo.to_string(), size: 0, started: now, updated: now, seq: 0 };
        let (id2, st) = (id.clone(), state.clone());
        self.run(move |inner| {
            inner.space.reserve(0)?;
            let dir = inner.session_dir(&id2)?;
            fs::create_dir(&dir)?;
            File::create(dir.join(DATA))?;
            // Created now so appends only overwrite it in place.
            write_progress(&dir, Progress { seq: 1, size: 0, updated: now })?;
            // state.json last (fsynced, which also commits the creations
            // above): its presence is what makes the session exist.
            inner.write_state(&dir, &st)
        })
        .await?;
        *self.inner.session_lock(&id).lock().await =
            SessionMem { hashed: Some((0, DigestHasher::new(Algorithm::Sha256))), flusher: pipe::Flusher::default() };
        state.info(&id)
    }

    async fn upload_info(&self, id: &str) -> Result<UploadInfo, StorageError> {
        let id = id.to_owned();
        self.run(move |inner| {
            let dir = inner.session_dir(&id)?;
            inner.read_state(&dir)?.info(&id)
        })
        .await
    }

    async fn upload_list(&self) -> Result<Vec<UploadInfo>, StorageError> {
        self.run(|inner| {
            let mut ids = atomic::list_names(&inner.uploads)?;
            ids.sort();
            let mut out = Vec::new();
            for id in ids {
                let Ok(dir) = inner.session_dir(&id) else {
                    continue;
                };
                match inner.read_state(&dir).and_then(|s| s.info(&id)) {
                    Ok(info) => out.push(info),
                    Err(StorageError::UploadUnknown) => {} // ended meanwhile
                    Err(e) => tracing::warn!(upload = %id, error = %e, "skipping upload session"),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn upload_append(&self, id: &str, offset: u64, body: ByteStream) -> Result<u64, StorageError> {
        let dir = self.inner.session_dir(id)?;
        let lock = self.inner.session_lock(id);
        let guard = lock.lock_owned().await;
        let d = dir.clone();
        let state = match self.run(move |inner| inner.read_checked_state(&d)).await {
            Err(StorageError::UploadUnknown) => {
                drop(guard);
                self.inner.forget_session(id);
                return Err(StorageError::UploadUnknown);
            }
            other => other?,
        };
        if offset != state.size {
            return Err(StorageError::OffsetMismatch { expected: state.size, got: offset });
        }
        let old = state.size;
        // Keep hashing only if the in-memory hasher covers exactly `old` bytes.
        let hasher = match &guard.hashed {
            Some((n, h)) if *n == old => Some(h.clone()),
            _ if old == 0 => Some(DigestHasher::new(Algorithm::Sha256)),
            _ => None,
        };
        let data = dir.join(DATA);
        let gauge = self.inner.space.clone();
        let open = move || Ok(super::space::Floored::new(open_data_at(&data, old)?, gauge));
        let out = pipe::pump(body, hasher, Some(open), guard, None).await;
        // Finish (or roll back) on a blocking thread still holding the lock,
        // so a cancelled request cannot interleave with the next append.
        self.run(move |_| {
            let Some(mut guard) = out.token else {
                return Err(StorageError::Backend("upload writer failed".into()));
            };
            if let Err(e) = out.result {
                if matches!(&e, StorageError::Io(ie) if ie.kind() == io::ErrorKind::NotFound) {
                    return Err(StorageError::UploadUnknown); // committed meanwhile
                }
                if let Some(f) = &out.writer {
                    if let Err(te) = f.inner.set_len(old) {
                        tracing::warn!(error = %te, "could not roll back upload data; the next append will");
                    }
                }
                return Err(e);
            }
            if out.size == 0 {
                return Ok(old);
            }
            // No fsync of `data` or `progress` here (`data` is flushed in
            // the background and at commit): after a power loss the record
            // may be older (the client resumes from the `Range` it is told;
            // the blob is verified at commit anyway), or `data` may be
            // shorter than it, and the session is then dropped as unknown.
            let new_size = old + out.size;
            write_progress(&dir, Progress { seq: state.seq + 1, size: new_size, updated: now_ms() })?;
            guard.hashed = out.hasher.map(|h| (new_size, h));
            Ok(new_size)
        })
        .await
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<u64, StorageError> {
        let dir = self.inner.session_dir(id)?;
        let lock = self.inner.session_lock(id);
        let mut guard = lock.lock_owned().await;
        let mem = guard.hashed.take();
        let flusher = std::mem::take(&mut guard.flusher);
        let d = digest.clone();
        let result = self
            .run(move |inner| {
                let state = inner.read_checked_state(&dir)?;
                let end = || match fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                // A failed background flush means the bytes may not be on
                // disk (and a later fsync may not report it): end the session.
                if let Err(e) = flusher.finish() {
                    end()?;
                    return Err(StorageError::from(e));
                }
                let size = state.size;
                let data = dir.join(DATA);
                let f = match OpenOptions::new().read(true).write(true).open(&data) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::UploadUnknown),
                    Err(e) => return Err(e.into()),
                };
                if f.metadata()?.len() > size {
                    f.set_len(size)?;
                }
                let hasher = match mem {
                    Some((n, h)) if n == size && h.algorithm() == d.algorithm() => h,
                    _ => {
                        tracing::debug!(upload = %dir.display(), "re-hashing upload data at commit");
                        pipe::hash_file(&f, size, DigestHasher::new(d.algorithm()))?
                    }
                };
                if let Err(e) = verify(size, Some(hasher), &d, None) {
                    drop(f);
                    end()?;
                    return Err(e);
                }
                f.sync_all()?;
                drop(f);
                let dest = inner.blob_path(&d);
                atomic::rename_into(&data, &dest)?;
                if let Some(parent) = dest.parent() {
                    atomic::sync_dir(parent)?;
                }
                end()?;
                Ok(size)
            })
            .await;
        match &result {
            // The session is over (or was never there).
            Ok(_) | Err(StorageError::UploadUnknown | StorageError::DigestMismatch { .. }) => {
                drop(guard);
                self.inner.forget_session(id);
            }
            Err(_) => {}
        }
        result
    }

    async fn upload_abort(&self, id: &str) -> Result<(), StorageError> {
        let dir = self.inner.session_dir(id)?;
        let lock = self.inner.session_lock(id);
        let guard = lock.lock_owned().await;
        let result = self
            .run(move |_| {
                if !dir.join(STATE).exists() {
                    return Err(StorageError::UploadUnknown);
                }
                // Remove the state first: a crash midway leaves a directory
                // without state.json, which open() removes.
                atomic::remove_if_exists(&dir.join(STATE))?;
                match fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
            .await;
        drop(guard);
        self.inner.forget_session(id);
        result
    }
}

#[cfg(test)]
mod tests;
