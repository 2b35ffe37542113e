//! skopeo push and pull through Cove on s3s-fs, and start-up errors of
//! `[storage]` settings.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_through_cove_on_s3s_fs() {
    let peer = S3Peer::s3s_fs();
    let a = replica(&peer).await;
    let b = replica(&peer).await;
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    // One layer spans several 5 MiB parts, one is far below a part.
    let img = Image::from_layers(vec![random_bytes(12 * MIB + 4321), random_bytes(3000)]);
    write_oci_layout(&src, &img, "v1");

    skopeo_push(&src, "v1", &format!("{}/s3/app:v1", a.addr), None);
    // Pulled back out through the other replica: identical digests and bytes.
    let dst = work.path().join("dst");
    run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{}/s3/app:v1", b.addr),
        &format!("oci:{}:back", dst.display()),
    ]));
    assert_eq!(oci_layout_manifest_digest(&dst, "back"), img.digest, "manifest digest changed on the round trip");
    // Each replica counts the bucket requests it made, by kind (/metrics).
    let (pushed, pulled) = (storage_requests(&a).await, storage_requests(&b).await);
    for op in ["put", "multipart", "head"] {
        assert!(pushed.get(op).copied().unwrap_or(0.0) >= 1.0, "replica a made {op} requests: {pushed:?}");
    }
    assert!(pulled.get("get").copied().unwrap_or(0.0) >= 3.0, "manifest, config, layers read: {pulled:?}");
    assert_eq!(pulled.get("multipart").copied().unwrap_or(0.0), 0.0, "a pull uploads nothing: {pulled:?}");
    assert_eq!(oci_layout_blob(&dst, &img.digest), img.manifest);
    assert_eq!(oci_layout_blob(&dst, &sha256_digest(&img.config)), img.config);
    for l in &img.layers {
        assert!(oci_layout_blob(&dst, &sha256_digest(l)) == *l, "layer {} differs", sha256_digest(l));
    }
    // A Cove on another prefix of the same bucket is a separate registry.
    let other =
        Server::start_with(ServerOptions { config: Some(s3_config(&peer, "other")), ..Default::default() }).await;
    assert_eq!(json(other.get("/v2/_catalog").await).await["repositories"], serde_json::json!([]));
    assert_eq!(other.manifest("HEAD", "s3/app", "v1").await.status(), 404, "prefixes are isolated");
    let out = run(skopeo().args(["inspect", "--tls-verify=false", &format!("docker://{}/s3/app:v1", b.addr)]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
    assert_eq!(v["Digest"], serde_json::json!(img.digest), "inspect: {v}");
    // The bytes are in the bucket, not in either replica's scratch dir.
    assert!(bucket_has(&peer, &blob_key(&sha256_digest(&img.layers[0]))).await, "layer not in the bucket");
    for s in [&a, &b] {
        assert!(
            !files_under(&s.data_dir).iter().any(|f| f.metadata().is_ok_and(|m| m.len() >= MIB as u64)),
            "{}: blob bytes stored in the local data dir",
            s.base
        );
    }
}

/// `cove_storage_requests_total` of `s` by kind (`op` label).
async fn storage_requests(s: &Server) -> std::collections::BTreeMap<String, f64> {
    let text = s.get("/metrics").await.text().await.expect("metrics text");
    text.lines()
        .filter_map(|l| l.strip_prefix("cove_storage_requests_total{op=\""))
        .filter_map(|l| {
            let (op, rest) = l.split_once('"')?;
            Some((op.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Runs `cove serve` with `config`; asserts it exits non-zero within 20 s
/// and returns its stderr.
fn serve_must_fail(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("cove.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(cove_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cove");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "cove kept running with an unusable [storage]:\n{config}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!status.success(), "cove exited successfully with:\n{config}");
    stderr
}

#[tokio::test]
async fn bad_object_storage_settings_stop_start_up_naming_the_key() {
    let peer = S3Peer::s3s_fs();
    let good = s3_config(&peer, PREFIX).replace("root = \"@DATA@\"\n", "");
    let with = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} not in the config");
        good.replace(from, to)
    };
    let bucket_line = format!("bucket = \"{}\"\n", peer.bucket);
    let endpoint_line = format!("endpoint = \"{}\"\n", peer.endpoint);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (with(&bucket_line, ""), vec!["storage.bucket"]),
        (with(&endpoint_line, "endpoint = \"ftp://127.0.0.1:9\"\n"), vec!["storage.endpoint"]),
        (with(&endpoint_line, "endpoint = \"127.0.0.1:9000\"\n"), vec!["storage.endpoint"]),
        (with("allow_http = true\n", ""), vec!["storage.allow_http"]),
        (with("part_size = 5242880\n", "part_size = 1024\n"), vec!["storage.part_size"]),
        (with("secret_access_key", "#secret_access_key"), vec!["storage.secret_access_key"]),
        (with(&bucket_line, "bukket = \"cove\"\n"), vec!["bukket"]),
        (with("prefix = \"reg\"", "prefix = \"../up\""), vec!["storage.prefix"]),
        // Every problem is reported at once.
        (
            with(&bucket_line, "").replace("part_size = 5242880", "part_size = 1"),
            vec!["storage.bucket", "storage.part_size"],
        ),
    ];
    for (config, keys) in &cases {
        let stderr = serve_must_fail(config);
        for key in keys {
            assert!(stderr.contains(key), "stderr does not name {key}:\n{stderr}\nconfig:\n{config}");
        }
    }
    // And the good config does start.
    let s = Server::start_with(ServerOptions { config: Some(s3_config(&peer, PREFIX)), ..Default::default() }).await;
    assert_eq!(s.get("/v2/").await.status(), 200);
}

/// Settings that are well formed but unusable (nothing listens at the
/// endpoint, wrong credentials, a bucket that does not exist): Cove must
/// stop at start-up naming the settings, not start serving 500s. The missing
/// bucket runs on Garage: s3s-fs creates buckets on first write.
#[tokio::test]
async fn unusable_object_storage_stops_start_up() {
    let peer = S3Peer::s3s_fs();
    let good = s3_config(&peer, PREFIX).replace("root = \"@DATA@\"\n", "");
    let closed = good.replace(&peer.endpoint, &format!("http://127.0.0.1:{}", free_port()));
    let stderr = serve_must_fail(&closed);
    assert!(stderr.contains("storage.endpoint"), "nothing listens at the endpoint: stderr does not name it:\n{stderr}");
    let wrong = good.replace(&peer.secret_key, "wrong-secret");
    assert_ne!(wrong, good);
    let stderr = serve_must_fail(&wrong);
    assert!(stderr.contains("storage.secret_access_key"), "wrong credentials: stderr does not name them:\n{stderr}");

    let garage = S3Peer::garage();
    let good = s3_config(&garage, PREFIX).replace("root = \"@DATA@\"\n", "");
    let missing = good.replace(&format!("bucket = \"{}\"", garage.bucket), "bucket = \"no-such-bucket\"");
    assert_ne!(missing, good);
    let stderr = serve_must_fail(&missing);
    assert!(stderr.contains("storage.bucket"), "missing bucket: stderr does not name it:\n{stderr}");
    // The same settings with the real bucket start.
    let s = Server::start_with(ServerOptions { config: Some(s3_config(&garage, PREFIX)), ..Default::default() }).await;
    assert_eq!(s.get("/v2/").await.status(), 200);
}
