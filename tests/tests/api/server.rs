//! The base endpoint, and the server itself: configuration, data layout,
//! defaults, public URL and forwarded headers, shutdown.

use super::*;

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let s = Server::start().await;
    for method in ["GET", "HEAD"] {
        let r = s.req(method, "/v2/").send().await.expect("request");
        assert_eq!(r.status(), 200, "{method} /v2/");
        assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0", "{method} /v2/");
    }
    // Without the trailing slash, clients expect the same endpoint (or a
    // redirect to it), never an error from the server.
    let r = s.get("/v2").await;
    assert!(r.status() == 200 || r.status().is_redirection(), "GET /v2 gave {}", r.status());
}

#[tokio::test]
async fn config_file_sets_listen_and_root_and_layout_matches_readme() {
    let opts = ServerOptions {
        config: Some(
            "[server]\nlisten = \"@LISTEN@\"\nlog_format = \"json\"\n\n\
             [storage]\nkind = \"filesystem\"\nroot = \"@DATA@\"\n"
                .into(),
        ),
        no_flags: true,
        ..Default::default()
    };
    let s = Server::start_with(opts).await;
    let img = s.push_image("lay/out", "t", 1).await;
    let layer_digest = sha256_digest(&img.layers[0]);
    let hex = layer_digest.trim_start_matches("sha256:");
    let blob = s.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    assert!(blob.is_file(), "blob not at {}", blob.display());
    assert_eq!(std::fs::read(&blob).expect("blob"), img.layers[0]);
    assert!(s.data_dir.join("tmp").is_dir(), "tmp/ missing");
    let repo = s.data_dir.join("repositories/lay/out");
    for sub in ["_manifests", "_tags"] {
        assert!(repo.join(sub).is_dir(), "{} missing", repo.join(sub).display());
    }
    // JSON logs: at least one request line names the path.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = s.logs();
    let json_lines: Vec<serde_json::Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!json_lines.is_empty(), "log_format = json gave no JSON lines:\n{logs}");
    let line = json_lines
        .iter()
        .find(|v| v.to_string().contains("/v2/lay/out/manifests/t"))
        .unwrap_or_else(|| panic!("no JSON request log for the manifest PUT:\n{logs}"));
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            for (k, v) in o {
                out.push(k.to_ascii_lowercase());
                keys(v, out);
            }
        }
    }
    let mut names = Vec::new();
    keys(line, &mut names);
    // The issue asks for a request id, method, path, status, bytes and duration.
    for want in ["id", "method", "path", "status", "bytes", "duration"] {
        assert!(names.iter().any(|k| k.contains(want)), "request log has no {want} field: {line}");
    }
    fn status_of(v: &serde_json::Value) -> Option<String> {
        let o = v.as_object()?;
        o.iter().find_map(|(k, v)| {
            if k.to_ascii_lowercase().contains("status") {
                Some(v.to_string().trim_matches('"').to_owned())
            } else {
                status_of(v)
            }
        })
    }
    assert_eq!(status_of(line).as_deref(), Some("201"), "request log status: {line}");
}

#[tokio::test]
async fn unknown_config_keys_are_rejected_by_name() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (cfg, key) in [
        ("[server]\nlisten = \"127.0.0.1:0\"\nbogus_key = 1\n", "bogus_key"),
        ("[storage]\nkind = \"filesystem\"\nrooot = \"/tmp/x\"\n", "rooot"),
        ("[mystery]\na = 1\n", "mystery"),
    ] {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, cfg).expect("write");
        let mut child = std::process::Command::new(cove_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("cove kept running with an unknown key {key:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(!status.success(), "unknown key {key:?} accepted");
        assert!(err.contains(key), "the error must name {key:?}: {err}");
    }
}

#[tokio::test]
async fn locations_honour_public_url_and_forwarded_headers() {
    let opts = ServerOptions {
        config: Some("[server]\npublic_url = \"https://registry.example.com\"\n".into()),
        ..Default::default()
    };
    let s = Server::start_with(opts).await;
    let r = s.req("POST", "/v2/proxied/blobs/uploads/").send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(
        loc.starts_with("/v2/proxied/blobs/uploads/")
            || loc.starts_with("https://registry.example.com/v2/proxied/blobs/uploads/"),
        "with public_url, Location is {loc:?}"
    );

    let s = Server::start().await;
    let r = s
        .req("POST", "/v2/proxied/blobs/uploads/")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "cache.example.org")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(
        loc.starts_with("/v2/proxied/blobs/uploads/")
            || loc.starts_with("https://cache.example.org/v2/proxied/blobs/uploads/"),
        "behind a proxy, Location is {loc:?}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let mut s = Server::start().await;
    s.push_image("bye", "t", 1).await;
    let status = s.terminate(Duration::from_secs(15));
    let status = status.expect("cove did not exit within 15 s of SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status}; logs:\n{}", s.logs_tail(2000));
}

#[tokio::test]
async fn default_data_dir_is_data_under_the_working_directory() {
    let s = Server::start_with(ServerOptions { omit_data_dir: true, ..Default::default() }).await;
    let data = random_bytes(500);
    let digest = s.push_blob("defaults", &data).await;
    let hex = digest.trim_start_matches("sha256:");
    let blob = s.tmp.path().join("data/blobs/sha256").join(&hex[..2]).join(hex);
    assert!(blob.is_file(), "without --data-dir the blob should be at {}", blob.display());
}

#[tokio::test]
async fn default_listen_address_is_port_5050() {
    // Only meaningful when 5050 is free here; otherwise say so loudly.
    if std::net::TcpListener::bind("0.0.0.0:5050").is_err() {
        panic!("port 5050 is in use on this machine, so `cove serve`'s default listen address cannot be tested");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = std::process::Command::new(cove_bin())
        .arg("serve")
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn cove");
    let client = http_client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ok = loop {
        if let Ok(r) = client.get("http://127.0.0.1:5050/v2/").send().await {
            break r.status() == 200 && header(&r, "docker-distribution-api-version") == "registry/2.0";
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "`cove serve` with no flags did not answer on 0.0.0.0:5050");
    assert!(tmp.path().join("data").is_dir(), "`cove serve` with no flags did not create ./data");
}
