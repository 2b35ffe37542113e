//! A private containerd daemon (its own root, state and sockets in a temp
//! directory, CRI disabled) and `ctr` against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{no_proxy, require_tool, still_running, wait_ready};

/// A running containerd; killed on drop.
pub struct Containerd {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd and waits until `ctr version` answers.
    pub fn start() -> Containerd {
        let bin = require_tool("containerd", "containerd");
        require_tool("ctr", "containerd");
        // Short path: unix socket paths are limited to ~100 bytes.
        let dir = tempfile::Builder::new().prefix("ctd-").tempdir_in("/tmp").expect("tempdir");
        let d = dir.path();
        let socket = d.join("c.sock");
        let config = format!(
            "version = 2\n\
             root = \"{root}\"\n\
             state = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  level = \"info\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
        );
        let cfg = d.join("config.toml");
        std::fs::write(&cfg, config).expect("write containerd config");
        let log = d.join("containerd.log");
        let logf = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&cfg).stdin(Stdio::null()).stdout(logf.try_clone().expect("dup")).stderr(logf);
        let child = no_proxy(&mut cmd).spawn().expect("spawn containerd");
        let mut c = Containerd { child: Some(child), socket, log, dir };
        let waited = wait_ready(Duration::from_secs(20), Duration::from_millis(100), || {
            still_running(c.child.as_mut())?;
            Ok(c.socket.exists() && c.ctr(&["version"]).status.success())
        });
        if let Err(why) = waited {
            panic!("containerd {why}:\n{}", c.logs());
        }
        c
    }

    /// Runs `ctr -a SOCKET args…`.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(&self.socket).args(args).stdin(Stdio::null());
        no_proxy(&mut cmd).output().expect("run ctr")
    }

    /// `ctr images pull --snapshotter native --hosts-dir DIR REF`.
    pub fn pull(&self, hosts_dir: &Path, reference: &str) -> std::process::Output {
        let hosts = hosts_dir.display().to_string();
        self.ctr(&["images", "pull", "--snapshotter", "native", "--hosts-dir", &hosts, reference])
    }

    /// containerd's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
