//! TLS termination end to end (issue 7): a CA and server certificates made
//! with the `openssl` CLI, the real `cove` binary serving https, skopeo
//! pushing and pulling through it, reqwest negotiating HTTP/2 over ALPN,
//! certificate rotation without restart, and bad pairs refused at start.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cove_testkit::certs::{der_of, make_ca, make_server_cert};
use cove_testkit::layout::Layout;
use cove_testkit::peers::skopeo::skopeo;

fn tls_client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("ca.crt")).expect("CA pem");
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .tls_info(true)
        .https_only(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A `cove serve` over TLS; killed on drop.
struct TlsCove {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for TlsCove {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- cove log ---\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn spawn_cove(dir: &Path, cert: &Path, key: &Path) -> (Child, u16, PathBuf) {
    let port = free_port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n\
         [upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n\
         [upstreams.\"quay.io\"]\nenabled = false\n",
        cert.display(),
        key.display()
    );
    let cfg_path = dir.join("cove.toml");
    std::fs::write(&cfg_path, cfg).expect("config");
    let log = dir.join("cove.log");
    let logf = std::fs::File::create(&log).expect("log");
    let child = Command::new(cove_bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("dup"))
        .stderr(logf)
        .spawn()
        .expect("spawn cove");
    (child, port, log)
}

async fn start_tls(dir: &Path, cert: &Path, key: &Path) -> TlsCove {
    let (child, port, log) = spawn_cove(dir, cert, key);
    let mut c = TlsCove { child, port, log };
    let client = tls_client(&dir.join("ca.crt"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = c.child.try_wait() {
            panic!("cove exited with {st}: {}", std::fs::read_to_string(&c.log).unwrap_or_default());
        }
        if let Ok(r) = client.get(format!("https://localhost:{}/v2/", c.port)).send().await {
            if r.status() == 200 {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "cove did not answer over https");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The certificate the server presents to a new connection (a new client:
/// an HTTP/2 connection would otherwise be reused).
async fn presented_cert(ca: &Path, port: u16) -> Vec<u8> {
    let r = tls_client(ca).get(format!("https://localhost:{port}/v2/")).send().await.expect("GET /v2/ over https");
    assert_eq!(r.status(), 200);
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("peer certificate")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_push_pull_http2_and_certificate_rotation() {
    let tmp = tempfile::Builder::new().prefix("cove-tls-").tempdir().expect("tempdir");
    let dir = tmp.path();
    make_ca(dir);
    let (cert, key) = make_server_cert(dir, "server");
    let cove = start_tls(dir, &cert, &key).await;
    let client = tls_client(&dir.join("ca.crt"));

    // HTTP/2 negotiated over ALPN; plain HTTP is not served.
    let r = client.get(format!("https://localhost:{}/v2/", cove.port)).send().await.expect("GET");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(presented_cert(&dir.join("ca.crt"), cove.port).await, der_of(&cert));
    let plain = http_client().get(format!("http://127.0.0.1:{}/v2/", cove.port)).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "plain http must not work");

    // skopeo push and pull over https, trusting the CA through --cert-dir.
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("cert dir");
    std::fs::copy(dir.join("ca.crt"), certs.join("ca.crt")).expect("copy ca");
    let layout_dir = dir.join("layout");
    let mut layout = Layout::new(&layout_dir);
    let img = layout.add_image("v1", &[2_000_000, 10_000]);
    let dest = format!("docker://localhost:{}/tls/app:v1", cove.port);
    let mut push = skopeo();
    push.args(["copy", "--preserve-digests", "-q", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:v1", layout_dir.display()))
        .arg(&dest);
    run(&mut push);
    let out_dir = dir.join("pulled");
    let mut pull = skopeo();
    pull.args(["copy", "--preserve-digests", "-q", "--src-cert-dir"])
        .arg(&certs)
        .arg(&dest)
        .arg(format!("oci:{}:v1", out_dir.display()));
    run(&mut pull);
    assert_eq!(oci_layout_manifest_digest(&out_dir, "v1"), img.manifest.digest);
    for l in &img.layers {
        assert_eq!(sha256_digest(&oci_layout_blob(&out_dir, &l.digest)), l.digest);
    }
    // The upload's Location is an absolute https URL.
    let r = client.post(format!("https://localhost:{}/v2/tls/x/blobs/uploads/", cove.port)).send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(loc.starts_with(&format!("https://localhost:{}/v2/tls/x/blobs/uploads/", cove.port)), "{loc}");

    // The admin CLI talks TLS to the server its config describes.
    for args in [&["status"][..], &["gc", "--dry-run"][..]] {
        let out = Command::new(cove_bin())
            .args(args)
            .arg("--config")
            .arg(dir.join("cove.toml"))
            .env("COVE_LOG", "warn")
            .output()
            .expect("run cove");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "cove {args:?} over TLS: {stdout}{stderr}");
        assert!(stderr.contains("ran by the server") || stdout.contains("storage filesystem"), "{stdout}{stderr}");
    }

    // Rotation: new files replace the old ones; a new connection presents
    // the new certificate without a restart.
    let (new_cert, new_key) = make_server_cert(dir, "rotated");
    let expected = der_of(&new_cert);
    assert_ne!(expected, der_of(&cert));
    std::fs::copy(&new_key, dir.join("key.tmp")).expect("stage key");
    std::fs::copy(&new_cert, dir.join("crt.tmp")).expect("stage cert");
    std::fs::rename(dir.join("crt.tmp"), &cert).expect("replace cert");
    std::fs::rename(dir.join("key.tmp"), &key).expect("replace key");
    let started = Instant::now();
    loop {
        if presented_cert(&dir.join("ca.crt"), cove.port).await == expected {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "rotated certificate not served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report(&format!("tls: rotated certificate served after {} ms", started.elapsed().as_millis()));
    let log = std::fs::read_to_string(&cove.log).unwrap_or_default();
    assert!(log.contains("TLS certificate reloaded"), "{log}");
    assert!(cove_alive(&cove), "no restart");

    // A bad new pair (key of another certificate) is refused; the current one stays.
    let (_other_cert, other_key) = make_server_cert(dir, "other");
    std::fs::copy(&other_key, &key).expect("overwrite key");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(&cove.log).unwrap_or_default();
        if log.contains("TLS certificate not reloaded") {
            assert!(log.contains("server.tls_key"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "bad pair not reported:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(presented_cert(&dir.join("ca.crt"), cove.port).await, expected, "previous certificate kept");
}

fn cove_alive(c: &TlsCove) -> bool {
    Command::new("kill").args(["-0", &c.child.id().to_string()]).status().is_ok_and(|s| s.success())
}

/// Starts cove with `cert`/`key` and expects it to exit with an error
/// containing every one of `needles`.
fn expect_start_failure(dir: &Path, cert: &Path, key: &Path, needles: &[&str]) {
    let (mut child, _port, log) = spawn_cove(dir, cert, key);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("cove started with a bad TLS pair");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{text}");
    for n in needles {
        assert!(text.contains(n), "{n:?} not in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tls_settings_are_refused_at_start() {
    let tmp = tempfile::Builder::new().prefix("cove-tls-bad-").tempdir().expect("tempdir");
    let dir = tmp.path();
    make_ca(dir);
    let (cert_a, _key_a) = make_server_cert(dir, "a");
    let (_cert_b, key_b) = make_server_cert(dir, "b");
    expect_start_failure(dir, &cert_a, &key_b, &["server.tls_key", "does not match"]);
    expect_start_failure(dir, &cert_a, &dir.join("missing.key"), &["server.tls_key", "cannot read", "missing.key"]);
    expect_start_failure(dir, &dir.join("ca.key"), &key_b, &["server.tls_cert", "no PEM certificate"]);
    // Only one of the two keys.
    let cfg = dir.join("half.toml");
    std::fs::write(&cfg, format!("[server]\ntls_cert = \"{}\"\n", cert_a.display())).expect("config");
    let out = Command::new(cove_bin()).args(["check-config", "--config"]).arg(&cfg).output().expect("check-config");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls_key: must be set with server.tls_cert"));
}
