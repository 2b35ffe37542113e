//! [`DirReads`]: counts what a process opens and reads inside some
//! directories (Linux inotify), so a test can prove code does *not* walk a
//! tree, which no timing can.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// Watches directories for opens and reads of themselves and of the files
/// directly in them (inotify is not recursive: watch every level that
/// matters).
pub struct DirReads {
    inotify: Inotify,
}

impl DirReads {
    /// Starts watching `dirs`.
    pub fn watch<P: AsRef<Path>>(dirs: &[P]) -> DirReads {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify_init");
        for d in dirs {
            inotify
                .add_watch(d.as_ref(), AddWatchFlags::IN_OPEN | AddWatchFlags::IN_ACCESS)
                .unwrap_or_else(|e| panic!("watch {}: {e}", d.as_ref().display()));
        }
        DirReads { inotify }
    }

    /// Opens and reads seen since the last call (or since [`DirReads::watch`]).
    pub fn take(&self) -> usize {
        let mut n = 0;
        loop {
            match self.inotify.read_events() {
                Ok(events) if events.is_empty() => return n,
                Ok(events) => n += events.len(),
                Err(Errno::EAGAIN) => return n,
                Err(e) => panic!("read inotify events: {e}"),
            }
        }
    }
}
