//! Starting the registries (and nginx, the static-file reference) and
//! reading their CPU time and memory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// Which registry a server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cove,
    Distribution,
    /// nginx serving Cove's blob files straight from disk (`sendfile on`):
    /// the physical reference for blob GETs, not a registry.
    Nginx,
}

impl Kind {
    /// Short name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cove => "cove",
            Kind::Distribution => "distribution",
            Kind::Nginx => "nginx",
        }
    }
}

/// Paths of the server binaries.
#[derive(Clone)]
pub struct Binaries {
    pub cove: PathBuf,
    pub registry: PathBuf,
    /// nginx, when installed: the blob GET reference.
    pub nginx: Option<PathBuf>,
    /// skopeo, when installed: the real client of the skopeo rows.
    pub skopeo: Option<PathBuf>,
    /// s3s-fs, when installed: the S3 server of the object-storage scale rows.
    pub s3s_fs: Option<PathBuf>,
}

/// A running registry process.
pub struct Server {
    pub pid: u32,
    pub addr: SocketAddr,
    /// Its stdout and stderr (distribution's access log is there).
    pub log: PathBuf,
    child: Child,
}

impl Server {
    /// Starts `kind` with its storage in `dir` (created), its config and log
    /// next to it, and waits until `GET /v2/` answers 200. Returns the server
    /// and the time from spawn to the first 200.
    /// For [`Kind::Nginx`], `cove_extra` is the Cove storage directory whose
    /// blob files it serves.
    pub fn start(kind: Kind, bins: &Binaries, dir: &Path, cove_extra: &str) -> Result<(Server, Duration), BenchError> {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let addr = free_port()?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = match kind {
            Kind::Nginx => {
                let bin = bins.nginx.as_ref().ok_or_else(|| BenchError::Setup("nginx is not installed".into()))?;
                let config = dir.join("nginx.conf");
                std::fs::write(&config, nginx_config(Path::new(cove_extra), dir, addr))?;
                std::fs::create_dir_all(dir.join("tmp"))?;
                let mut c = Command::new(bin);
                c.arg("-p").arg(dir).arg("-c").arg(&config).arg("-e").arg(dir.join("error.log"));
                c
            }
            Kind::Cove => {
                let config = dir.join("cove.toml");
                std::fs::write(&config, cove_extra)?;
                let mut c = Command::new(&bins.cove);
                c.arg("serve").arg("--listen").arg(addr.to_string()).arg("--data-dir").arg(&storage);
                c.arg("--config").arg(&config);
                c
            }
            Kind::Distribution => {
                let config = dir.join("config.yml");
                std::fs::write(&config, distribution_config(&storage, addr))?;
                let mut c = Command::new(&bins.registry);
                c.arg("serve").arg(&config);
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let start = Instant::now();
        let child = cmd.spawn().map_err(|e| BenchError::Setup(format!("cannot start {}: {e}", kind.name())))?;
        let pid = child.id();
        let mut server = Server { pid, addr, log: log_path, child };
        let deadline = start + Duration::from_secs(60);
        loop {
            if probe_v2(addr) {
                return Ok((server, start.elapsed()));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(BenchError::Setup(format!(
                    "{} exited during start-up ({status}); see {}",
                    kind.name(),
                    dir.join("server.log").display()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(format!("{} did not answer /v2/ within 60 s", kind.name())));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process (SIGKILL: both keep their data consistent on disk).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The distribution config: filesystem storage, in-memory blob descriptor
/// cache and access log as in Debian's default `config.yml`.
fn distribution_config(storage: &Path, addr: SocketAddr) -> String {
    format!(
        "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  \
         filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        storage.display()
    )
}

/// nginx as the physical reference: one process (so its CPU and RSS are one
/// pid's), `sendfile on`, no access log, serving `GET /v2/<repo>/blobs/sha256:<hex>`
/// from Cove's filesystem layout (`blobs/sha256/<2 hex>/<hex>`) under
/// `cove_storage`; `GET /v2/` answers 200 so the start-up probe works.
fn nginx_config(cove_storage: &Path, dir: &Path, addr: SocketAddr) -> String {
    let blobs = cove_storage.join("blobs").join("sha256");
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n\
           client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
           uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
           server {{\n    listen {addr};\n\
             location = /v2/ {{ return 200 '{{}}'; }}\n\
             location ~ \"^/v2/.+/blobs/sha256:(([0-9a-f]{{2}})[0-9a-f]{{62}})$\" {{\n\
               default_type application/octet-stream;\n      alias {}/$2/$1;\n    }}\n  }}\n}}\n",
        blobs.display()
    )
}

/// A loopback address with a port nobody listens on right now.
pub fn free_port() -> Result<SocketAddr, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// One `GET /v2/` on a fresh connection: true on a 200.
fn probe_v2(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    if cfg!(target_os = "linux") {
        proc_stat_cpu(&format!("/proc/{pid}/stat"))
    } else {
        ps_fields(pid).map(|(_, cpu)| cpu)
    }
}

/// CPU seconds the calling thread has used so far (Linux only).
pub fn thread_cpu_seconds() -> Option<f64> {
    if cfg!(target_os = "linux") {
        proc_stat_cpu("/proc/thread-self/stat")
    } else {
        None
    }
}

/// utime + stime of a `/proc/…/stat` file, in seconds.
fn proc_stat_cpu(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Current resident set in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    if cfg!(target_os = "linux") {
        status_kib(pid, "VmRSS:")
    } else {
        ps_fields(pid).map(|(rss, _)| rss)
    }
}

/// Anonymous resident memory in KiB (heap, stacks; Linux only): the part of
/// the RSS that is the process's own, beside the file-backed pages of its
/// binary and libraries that the kernel maps on first touch.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    if cfg!(target_os = "linux") {
        status_kib(pid, "RssAnon:")
    } else {
        None
    }
}

/// Peak resident set in KiB since the last [`reset_peak`] (Linux); elsewhere
/// the current RSS.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    if cfg!(target_os = "linux") {
        status_kib(pid, "VmHWM:")
    } else {
        rss_kib(pid)
    }
}

/// Resets the peak RSS counter of `pid` (Linux `clear_refs`); no-op elsewhere.
pub fn reset_peak(pid: u32) {
    if cfg!(target_os = "linux") {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// `ps` fallback (macOS): RSS in KiB and CPU seconds.
fn ps_fields(pid: u32) -> Option<(u64, f64)> {
    let out = Command::new("ps").args(["-o", "rss=", "-o", "time=", "-p", &pid.to_string()]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let rss = it.next()?.parse().ok()?;
    let time = it.next()?;
    // [[dd-]hh:]mm:ss.cc
    let (days, clock) = match time.split_once('-') {
        Some((d, c)) => (d.parse::<f64>().ok()?, c),
        None => (0.0, time),
    };
    let mut secs = 0.0;
    for part in clock.split(':') {
        secs = secs * 60.0 + part.parse::<f64>().ok()?;
    }
    Some((rss, days * 86400.0 + secs))
}

/// CPU and peak memory of one server over one measured run.
pub struct Meter {
    pid: u32,
    cpu0: Option<f64>,
}

/// What a [`Meter`] saw.
pub struct Usage {
    pub cpu_secs: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

impl Meter {
    /// Resets the peak RSS and reads the CPU time.
    pub fn start(pid: u32) -> Meter {
        reset_peak(pid);
        Meter { pid, cpu0: cpu_seconds(pid) }
    }

    /// CPU used since [`Meter::start`] and the peak RSS meanwhile.
    pub fn finish(&self) -> Usage {
        let cpu = match (self.cpu0, cpu_seconds(self.pid)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        Usage { cpu_secs: cpu, peak_rss_mib: peak_rss_kib(self.pid).map(|k| k as f64 / 1024.0) }
    }
}
