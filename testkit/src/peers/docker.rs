//! A private Docker Engine (`dockerd` from Debian's `docker.io`), as root,
//! with its own data root, exec root, pid file and socket in a temp dir, no
//! iptables and no bridge, on the `vfs` storage driver; and `docker`
//! against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{no_proxy, require_tool, still_running, wait_ready};

/// A running dockerd; killed on drop.
pub struct DockerEngine {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
    cli: PathBuf,
    pub dir: tempfile::TempDir,
}

impl DockerEngine {
    /// Starts dockerd with `daemon_json` (merged over the isolation settings)
    /// and waits until `docker version` answers.
    pub fn start(daemon_json: serde_json::Value) -> DockerEngine {
        let bin = require_tool("dockerd", "docker.io");
        // Debian's client; a different `docker` may come first on PATH.
        let cli = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            require_tool("docker", "docker.io")
        };
        // Short path: unix socket paths are limited to ~100 bytes.
        let dir = tempfile::Builder::new().prefix("dkr-").tempdir_in("/tmp").expect("tempdir");
        let d = dir.path();
        let socket = d.join("d.sock");
        let mut cfg = serde_json::json!({
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "bridge": "none",
            "storage-driver": "vfs",
            "data-root": d.join("data"),
            "exec-root": d.join("exec"),
            "pidfile": d.join("docker.pid"),
            "hosts": [format!("unix://{}", socket.display())],
        });
        if let (Some(base), serde_json::Value::Object(extra)) = (cfg.as_object_mut(), daemon_json) {
            base.extend(extra);
        }
        let cfg_path = d.join("daemon.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("daemon.json");
        let log = d.join("dockerd.log");
        let logf = std::fs::File::create(&log).expect("log");
        let mut cmd = Command::new(bin);
        cmd.arg("--config-file")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup"))
            .stderr(logf);
        let child = no_proxy(&mut cmd).spawn().expect("spawn dockerd");
        let mut e = DockerEngine { child: Some(child), socket, log, cli, dir };
        let waited = wait_ready(Duration::from_secs(60), Duration::from_millis(200), || {
            still_running(e.child.as_mut())?;
            Ok(e.socket.exists() && e.docker(&["version"]).status.success())
        });
        if let Err(why) = waited {
            panic!("dockerd {why}:\n{}", e.logs());
        }
        e
    }

    /// Runs `docker args…` against this engine.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(&self.cli);
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("cli"));
        no_proxy(&mut c).output().expect("run docker")
    }

    /// The daemon's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM lets dockerd stop its containerd child; kill if it lingers.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
