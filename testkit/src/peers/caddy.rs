//! Caddy (Debian's `caddy`) as the reverse proxy of the seed deployment and
//! of the replicas recipe: plain HTTP on a free loopback port, no admin API,
//! in front of one Cove or of several with round-robin load balancing and
//! active health checks on `/readyz` (the README's recipe).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{free_port, require_tool};

/// A running Caddy on `127.0.0.1:PORT`; killed on drop.
pub struct Caddy {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Caddy {
    /// Caddy proxying to one upstream (`127.0.0.1:PORT`). `extra` are extra
    /// `reverse_proxy` subdirectives.
    pub fn start(upstream: &str, extra: &str) -> Caddy {
        Caddy::start_with(free_port(), &[upstream.to_owned()], extra)
    }

    /// Caddy balancing round-robin over `upstreams`, taking a replica out
    /// while its `GET /readyz` fails (checked every second) and retrying a
    /// request on another replica when one refuses the connection. `port`
    /// is chosen beforehand (the replicas' `public_url` names it).
    pub fn round_robin(port: u16, upstreams: &[String]) -> Caddy {
        Caddy::start_with(
            port,
            upstreams,
            "lb_policy round_robin\n    lb_try_duration 5s\n    health_uri /readyz\n    health_interval 1s\n    health_timeout 2s",
        )
    }

    fn start_with(port: u16, upstreams: &[String], extra: &str) -> Caddy {
        let bin = require_tool("caddy", "caddy");
        let dir = tempfile::Builder::new().prefix("caddy-").tempdir().expect("tempdir");
        // What large pushes and pulls need: no request buffering (Caddy
        // streams by default), immediate response flushing, no body limit
        // (none by default) and no read timeout on long uploads.
        let caddyfile = format!(
            "{{\n  admin off\n  auto_https off\n}}\n\
             http://127.0.0.1:{port} {{\n  bind 127.0.0.1\n  reverse_proxy {} {{\n    flush_interval -1\n    {extra}\n  }}\n}}\n",
            upstreams.join(" ")
        );
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, caddyfile).expect("Caddyfile");
        let log = dir.path().join("caddy.log");
        let logf = std::fs::File::create(&log).expect("caddy log");
        let child = Command::new(&bin)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup"))
            .stderr(logf)
            .spawn()
            .expect("spawn caddy");
        let mut c = Caddy { child: Some(child), port, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(st))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                panic!("caddy exited with {st}:\n{}", c.logs());
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return c;
            }
            assert!(Instant::now() < deadline, "caddy not listening within 20 s:\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops Caddy now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority())
    }

    /// What Caddy logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.kill();
    }
}
