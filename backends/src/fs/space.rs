//! Free space of the data directory and the `min_free` floor.
//!
//! `statvfs` (through `rustix`, the same call on Linux and macOS) is asked
//! at most once a second, or sooner once 256 MiB were written since the
//! last answer; in between the free space is the last answer minus what
//! Cove wrote since, so checking it per written batch costs no syscall.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cove_core::storage::{BelowFloor, Space};

/// How long a measurement is trusted.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Measure again after this many bytes written since the last measurement.
const RESAMPLE_AFTER: u64 = 256 * 1024 * 1024;

/// The free-space floor: a size, or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// Percent of the filesystem's size, `0.0..=100.0`.
    Percent(f64),
    /// The smaller of a size and a percentage (Cove's default: 1 GiB or
    /// 5%, so a small disk is not refused most of its space).
    LesserOf(u64, f64),
}

impl MinFree {
    /// The floor in bytes on a filesystem of `total` bytes.
    pub fn bytes(&self, total: u64) -> u64 {
        match *self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => ((total as f64) * p.clamp(0.0, 100.0) / 100.0) as u64,
            MinFree::LesserOf(b, p) => b.min(MinFree::Percent(p).bytes(total)),
        }
    }
}

impl Default for MinFree {
    fn default() -> Self {
        MinFree::Bytes(0)
    }
}

struct Sample {
    at: Instant,
    space: Space,
    /// Bytes written through [`SpaceGauge::reserve`] since `at`.
    written: u64,
}

/// Free space of one directory's filesystem, measured lazily.
pub(crate) struct SpaceGauge {
    dir: PathBuf,
    min_free: MinFree,
    sample: Mutex<Option<Sample>>,
}

impl SpaceGauge {
    pub(crate) fn new(dir: PathBuf, min_free: MinFree) -> SpaceGauge {
        SpaceGauge { dir, min_free, sample: Mutex::new(None) }
    }

    fn measure(&self) -> io::Result<Space> {
        let st = rustix::fs::statvfs(&self.dir).map_err(io::Error::from)?;
        let unit = st.f_frsize.max(1);
        let total = st.f_blocks.saturating_mul(unit);
        let available = st.f_bavail.saturating_mul(unit);
        Ok(Space { available, total, floor: self.min_free.bytes(total) })
    }

    /// The current free space (cached; blocking: call on a blocking thread).
    pub(crate) fn space(&self) -> io::Result<Space> {
        self.estimate(0)
    }

    /// The estimated free space after `n` more bytes are written, counting
    /// them as written.
    fn estimate(&self, n: u64) -> io::Result<Space> {
        let mut guard = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        let stale = guard.as_ref().is_none_or(|s| s.at.elapsed() > FRESH_FOR || s.written >= RESAMPLE_AFTER);
        if stale {
            *guard = Some(Sample { at: Instant::now(), space: self.measure()?, written: 0 });
        }
        let s = guard.as_mut().ok_or_else(|| io::Error::other("no space sample"))?;
        s.written = s.written.saturating_add(n);
        Ok(Space { available: s.space.available.saturating_sub(s.written), ..s.space })
    }

    /// Accounts for writing `n` bytes: fails with [`BelowFloor`] (an
    /// `io::Error` that maps to `StorageError::Full`) when free space would
    /// drop below the floor. Without a floor it does nothing.
    pub(crate) fn reserve(&self, n: u64) -> io::Result<()> {
        if self.min_free == MinFree::Bytes(0) {
            return Ok(());
        }
        let s = self.estimate(n)?;
        if s.available < s.floor {
            return Err(io::Error::other(BelowFloor { available: s.available, floor: s.floor }));
        }
        Ok(())
    }
}

/// A writer that asks the [`SpaceGauge`] before every write.
pub(crate) struct Floored<W> {
    pub(crate) inner: W,
    gauge: std::sync::Arc<SpaceGauge>,
}

impl<W> Floored<W> {
    pub(crate) fn new(inner: W, gauge: std::sync::Arc<SpaceGauge>) -> Self {
        Floored { inner, gauge }
    }
}

impl<W: io::Write> io::Write for Floored<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.gauge.reserve(buf.len() as u64)?;
        self.inner.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.gauge.reserve(buf.len() as u64)?;
        self.inner.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: super::pipe::FileSink> super::pipe::FileSink for Floored<W> {
    fn as_file(&self) -> Option<&std::fs::File> {
        self.inner.as_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_in_bytes_and_percent() {
        assert_eq!(MinFree::Bytes(5).bytes(1000), 5);
        assert_eq!(MinFree::Percent(5.0).bytes(1000), 50);
        assert_eq!(MinFree::Percent(150.0).bytes(1000), 1000);
        assert_eq!(MinFree::LesserOf(30, 5.0).bytes(1000), 30);
        assert_eq!(MinFree::LesserOf(300, 5.0).bytes(1000), 50);
    }

    #[test]
    fn measures_the_directory_and_refuses_below_the_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = SpaceGauge::new(dir.path().to_path_buf(), MinFree::Bytes(0));
        let s = open.space().expect("statvfs");
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert!(open.reserve(u64::MAX / 2).is_ok(), "no floor: nothing refused");
        let floored = SpaceGauge::new(dir.path().to_path_buf(), MinFree::Percent(100.0));
        let e = floored.reserve(1).expect_err("a floor of the whole disk refuses");
        assert!(cove_core::storage::is_storage_full(&e), "{e}");
        assert!(matches!(cove_core::StorageError::from(e), cove_core::StorageError::Full(_)));
        // Written bytes count against the cached measurement.
        let g = SpaceGauge::new(dir.path().to_path_buf(), MinFree::Bytes(1));
        let before = g.space().expect("space").available;
        g.reserve(1000).expect("room");
        assert_eq!(g.space().expect("space").available, before.saturating_sub(1000));
    }
}
