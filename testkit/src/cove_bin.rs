//! Locating the `cove` binary that integration tests run: `$COVE_BIN`, else
//! a build in the target directory newer than the sources, else one built on
//! demand. Shared by the end-to-end tests and the benchmark smoke test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The `cove` binary under test: `$COVE_BIN`, else `<target>/release/cove` or
/// `<target>/debug/cove` when newer than the sources, else one built
/// on demand (in a separate target dir, so a running `cargo test` holding the
/// main target dir's lock cannot deadlock the build).
pub fn cove_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(find_or_build_cove).clone()
}

fn find_or_build_cove() -> PathBuf {
    if let Some(p) = std::env::var_os("COVE_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "COVE_BIN={} does not exist", p.display());
        return p;
    }
    let target_dir = target_dir();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let newest_source = newest_mtime(&workspace);
    for candidate in [
        target_dir.join("release").join("cove"),
        target_dir.join("debug").join("cove"),
        target_dir.join("cove-tests-build").join("debug").join("cove"),
    ] {
        if let Ok(meta) = candidate.metadata() {
            if meta.modified().is_ok_and(|m| m >= newest_source) {
                return candidate;
            }
        }
    }
    let build_dir = target_dir.join("cove-tests-build");
    eprintln!(
        "cove binary missing or older than the sources: building it into {} \
         (set COVE_BIN to skip this)",
        build_dir.display()
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "cove-server", "--bin", "cove"])
        .env("CARGO_TARGET_DIR", &build_dir)
        .current_dir(&workspace)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p cove-server failed");
    let bin = build_dir.join("debug").join("cove");
    assert!(bin.is_file(), "{} not built", bin.display());
    bin
}

/// The cargo target directory this test binary was built into
/// (`<target>/<profile>/deps/<test-binary>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Newest modification time of the Rust sources and manifests of the crates
/// the binary is built from.
fn newest_mtime(workspace: &Path) -> SystemTime {
    fn walk(dir: &Path, newest: &mut SystemTime) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                walk(&path, newest);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "toml" || e == "lock") {
                if let Ok(m) = meta.modified() {
                    *newest = (*newest).max(m);
                }
            }
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    for krate in ["core", "backends", "auth", "upstreams", "server"] {
        walk(&workspace.join(krate), &mut newest);
    }
    for f in ["Cargo.toml", "Cargo.lock"] {
        if let Ok(m) = workspace.join(f).metadata().and_then(|m| m.modified()) {
            newest = newest.max(m);
        }
    }
    newest
}
