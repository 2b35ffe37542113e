//! Process-wide allocator tuning, made once at the start of `main`.
//!
//! glibc's malloc gives threads that allocate at the same moment arenas of
//! their own, up to eight per core. Cove's blob reads and writes run on
//! tokio's blocking threads, each allocating and freeing 256 KiB–1 MiB
//! buffers, so under load every such thread ends up with an arena holding
//! freed buffers it keeps: the bench's 32 clients GETting 160 MiB blobs
//! drove the peak RSS to 85–88 MiB, and to 42–43 MiB with two arenas, at
//! the same throughput (issue 12). `MALLOC_ARENA_MAX` in the environment
//! still decides when set. Other C libraries and macOS keep their defaults.

/// Arenas glibc's malloc may create (its default: 8 × cores).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Limits glibc's arenas to [`ARENAS`] unless `MALLOC_ARENA_MAX` is set.
/// Call before any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a parameter of the allocator; it takes no
    // pointers and is called here before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Nothing to tune outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
