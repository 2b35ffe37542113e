//! The server as an operator sees it: configuration errors, upload expiry,
//! Location headers behind a proxy, logs, graceful shutdown, and
//! `cove mirror-config`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn cove(args: &[&str]) -> std::process::Output {
    Command::new(cove_bin()).args(args).output().expect("run cove")
}

#[test]
fn config_errors_name_the_key_and_stop_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("[server]\nlisten = \"127.0.0.1:0\"\nlistne = \"x\"\n", "listne"),
        ("[storage]\nkind = \"floppy\"\n", "floppy"),
        ("[server]\nlisten = \"not-an-address\"\n", "server.listen"),
        ("[storage]\nupload_ttl = \"soon\"\n", "storage.upload_ttl"),
        ("[upstreams.\"registry.k8s.io\"]\ntag_ttl = \"1m\"\n", "upstreams.\"registry.k8s.io\""),
        ("[upstreams.\"docker.io\"]\nurl = \"ftp://x\"\n", "upstreams.\"docker.io\".url"),
    ];
    for (text, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let out = cove(&[
            "serve",
            "--config",
            path.to_str().expect("utf8"),
            "--data-dir",
            dir.path().join("d").to_str().expect("utf8"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} must not start");
        assert!(err.contains(key), "error for {text:?} names {key}: {err}");
        let check = cove(&["check-config", "--config", path.to_str().expect("utf8")]);
        assert!(!check.status.success(), "check-config rejects {text:?}");
    }
}

#[tokio::test]
async fn idle_upload_sessions_expire() {
    let s = Server::start_with(ServerOptions {
        config: Some("[storage]\nupload_ttl = \"2s\"\n".into()),
        ..Default::default()
    })
    .await;
    let loc = s.start_upload("ops/expiry").await;
    let url = s.resolve(&loc);
    let r = s
        .req("PATCH", &url)
        .header("Content-Range", "0-2")
        .header("Content-Length", "3")
        .body("abc")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 202);
    assert_eq!(s.req("GET", &url).send().await.expect("status").status(), 204, "fresh session is alive");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = s.req("GET", &url).send().await.expect("status").status();
        if st == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "session not expired after 15 s (ttl 2 s)");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let r = s.req("GET", &url).send().await.expect("status");
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN", "expired session").await;
    let uploads = std::fs::read_dir(s.data_dir.join("uploads")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(uploads, 0, "expired session's files are removed");
}

#[tokio::test]
async fn locations_honour_public_url_and_forwarded_headers() {
    let s = Server::start().await;
    let r = s.req("POST", &s.url("/v2/ops/loc/blobs/uploads/")).send().await.expect("post");
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/ops/loc/blobs/uploads/"), "relative by default: {loc}");
    let r = s
        .req("POST", &s.url("/v2/ops/loc/blobs/uploads/"))
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "cove.example.net")
        .send()
        .await
        .expect("post");
    let loc = header(&r, "location");
    assert!(loc.starts_with("https://cove.example.net/v2/ops/loc/blobs/uploads/"), "behind a proxy: {loc}");
    drop(s);

    let s = Server::start_with(ServerOptions {
        config: Some("[server]\npublic_url = \"https://registry.lan/\"\n".into()),
        ..Default::default()
    })
    .await;
    // public_url is the token realm's, never a Location's (issue 13): the
    // client that reached 127.0.0.1 is sent back there, relatively.
    let digest = sha256_digest(b"hello");
    let r = s
        .req("POST", &s.url(&format!("/v2/ops/loc/blobs/uploads/?digest={digest}")))
        .body(&b"hello"[..])
        .send()
        .await
        .expect("monolithic push");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/ops/loc/blobs/{digest}"));
    let r = s
        .req("POST", &s.url("/v2/ops/loc/blobs/uploads/"))
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .expect("post");
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/ops/loc/blobs/uploads/"), "no public_url, no X-Forwarded-Host without a proto: {loc}");
    let r = s
        .req("POST", &s.url(&format!("/v2/ops/loc2/blobs/uploads/?mount={digest}&from=ops/loc")))
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), 201);
    assert_eq!(header(&r, "location"), format!("/v2/ops/loc2/blobs/{digest}"));
}

#[tokio::test]
async fn logs_carry_request_ids_and_json_is_json() {
    let s = Server::start_with(ServerOptions {
        config: Some("[server]\nlog_format = \"json\"\n".into()),
        ..Default::default()
    })
    .await;
    let r = s.get("/v2/ops/logs/manifests/missing").await;
    let id = header(&r, "x-request-id");
    assert!(!id.is_empty(), "responses carry X-Request-Id");
    assert_eq!(r.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.logs();
    let line = logs.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("request {id} logged:\n{logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("JSON log line ({e}): {line}"));
    let fields = &v["fields"];
    assert_eq!(fields["status"], 404, "{line}");
    assert_eq!(fields["method"], "GET", "{line}");
    assert_eq!(fields["path"], "/v2/ops/logs/manifests/missing", "{line}");
    assert!(fields["duration_ms"].is_string() || fields["duration_ms"].is_number(), "{line}");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut s = Server::start().await;
    let loc = s.start_upload("ops/term").await;
    let url = s.resolve(&loc);
    // A slow chunked PATCH is in flight when SIGTERM arrives.
    let (tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(rx);
    let http = s.http.clone();
    let patch = tokio::spawn(async move { http.patch(&url).body(body).send().await.map(|r| r.status().as_u16()) });
    let mut tx = tx;
    use futures::SinkExt;
    tx.send(Ok(bytes::Bytes::from_static(b"first"))).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = s.pid();
    let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(bytes::Bytes::from_static(b"second"))).await.expect("send after SIGTERM");
    drop(tx);
    let status = patch.await.expect("join").expect("in-flight request completes");
    assert_eq!(status, 202, "the in-flight request finished normally");
    let exit = s.terminate(Duration::from_secs(20)).expect("exited");
    assert!(exit.success(), "graceful exit status: {exit:?}");
    assert!(std::net::TcpStream::connect(s.addr).is_err(), "no longer listening");
}

#[test]
fn mirror_config_prints_containerd_hosts_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[server]\nhostnames = [\"cove.lan\"]\n[upstreams.\"registry.k8s.io\"]\nurl = \"https://registry.k8s.io\"\n",
    )
    .expect("write");
    let out_dir = dir.path().join("certs.d");
    let out = cove(&[
        "mirror-config",
        "containerd",
        "--url",
        "http://cove.lan:5050",
        "--config",
        cfg.to_str().expect("utf8"),
        "--out-dir",
        out_dir.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for host in ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "cove.lan"] {
        let text =
            std::fs::read_to_string(out_dir.join(host).join("hosts.toml")).unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(text.contains("[host.\"http://cove.lan:5050\"]"), "{host}: {text}");
        assert!(text.contains("server = "), "{host}: {text}");
    }
    let out = cove(&["mirror-config", "containerd", "--url", "cove.lan:5050"]);
    assert!(!out.status.success(), "a URL without a scheme is refused");
}
