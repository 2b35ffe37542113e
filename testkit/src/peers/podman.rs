//! podman, isolated: its own storage, state, registries.conf and auth file
//! in a temp dir, as root, without cgroups or an events journal (what works
//! in a sandbox).

use std::path::PathBuf;
use std::process::Command;

use crate::util::require_tool;

/// podman with its own storage, state and auth file, as root, without
/// cgroups or an events journal (what works in this sandbox).
pub struct Podman {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Podman {
    /// A fresh, empty podman home.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Podman {
        let bin = require_tool("podman", "podman");
        let dir = tempfile::Builder::new().prefix("cove-podman-").tempdir().expect("tmp");
        std::fs::write(dir.path().join("registries.conf"), "unqualified-search-registries = []\n")
            .expect("registries.conf");
        Podman { dir, bin }
    }

    /// `<tempdir>/auth.json`, the only auth file podman reads here.
    pub fn authfile(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// `podman … SUBCOMMAND --authfile <tempdir>/auth.json`.
    pub fn auth(&self, sub: &str) -> Command {
        let mut c = self.cmd();
        c.arg(sub).arg("--authfile").arg(self.authfile());
        c
    }

    /// `podman` with the isolated root, runroot, tmpdir and registries.conf.
    pub fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env("TMPDIR", d);
        c
    }
}
