//! A misbehaving upstream: 5xx retried, 429, truncated and wrong-digest
//! blobs never committed, slow bodies streamed.

use super::*;

/// A fault server holding one image `library/app:v1`, with `fault` deciding
/// first (None: behave).
async fn fault_upstream(
    img: &Image,
    fault: impl Fn(&fault::Request) -> Option<Reply> + Send + Sync + 'static,
) -> FaultServer {
    let content = Content::shared();
    content.lock().expect("lock").add_image("v1", img);
    FaultServer::start(move |req| fault(req).unwrap_or_else(|| fault::serve(&content, req))).await
}

/// 5xx answers are retried: the client sees only the success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_5xx_then_success_is_retried() {
    let img = Image::random(2);
    let layer = img.layers[0].clone();
    let layer_digest = sha256_digest(&layer);
    let (n_head, n_blob) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, b, ld) = (n_head.clone(), n_blob.clone(), layer_digest.clone());
    let up = fault_upstream(&img, move |req| {
        if req.method == "HEAD" && req.path().ends_with("/manifests/v1") && h.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(Reply::error(503, "UNAVAILABLE"));
        }
        if req.method == "GET" && fault::blob_of(req) == Some(ld.as_str()) && b.fetch_add(1, Ordering::SeqCst) < 2 {
            return Some(Reply::error(502, "UNKNOWN"));
        }
        None
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;

    let r = send(&cove, "GET", "/v2/docker.io/library/app/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()), "log:\n{}", up.log());
    assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice());
    assert_eq!(up.count("HEAD", "/manifests/v1"), 2, "503 then a retried HEAD:\n{}", up.log());

    let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{layer_digest}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("blob").as_ref(), layer.as_slice());
    assert_eq!(up.count("GET", &layer_digest), 3, "two 502s then success:\n{}", up.log());
    wait_until("the blob is committed", Duration::from_secs(5), || blob_path(&cove.data_dir, &layer_digest).is_file())
        .await;
    assert_blobs_verified(&cove.data_dir);
}

/// 429 with nothing cached: TOOMANYREQUESTS with the upstream's
/// Retry-After, at once (not after waiting it out); with a cached copy:
/// served stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_429_is_toomanyrequests_with_retry_after_or_stale() {
    let img = Image::random(1);
    let limited = Arc::new(AtomicBool::new(true));
    let l = limited.clone();
    let up = fault_upstream(&img, move |req| {
        let api = req.path().contains("/manifests/") || req.path().contains("/blobs/");
        (api && l.load(Ordering::SeqCst)).then(|| Reply::error(429, "TOOMANYREQUESTS").header("Retry-After", "120"))
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "tag_ttl = \"1s\"")]).await;
    let layer = sha256_digest(&img.layers[0]);
    for path in
        ["/v2/docker.io/library/app/manifests/v1".to_owned(), format!("/v2/docker.io/library/app/blobs/{layer}")]
    {
        let t0 = Instant::now();
        let r = send(&cove, "GET", &path).await;
        let took = t0.elapsed();
        let retry_after = header(&r, "retry-after");
        assert_error(r, 429, "TOOMANYREQUESTS", &path).await;
        assert_eq!(retry_after, "120", "{path}: Retry-After passed on");
        assert!(took < Duration::from_secs(3), "{path}: took {took:?}");
    }
    assert!(stored_manifests(&cove.data_dir, "docker.io/library/app").is_empty());
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty());

    // Cache library/cached while the limit is lifted, then hit the limit.
    limited.store(false, Ordering::SeqCst);
    let r = send(&cove, "GET", "/v2/docker.io/library/cached/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert!(r.headers().get("warning").is_none(), "a fresh copy carries no warning");
    limited.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = send(&cove, "GET", "/v2/docker.io/library/cached/manifests/v1").await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "stale".to_owned()), "429 with a cached copy");
    // The spec's Warning form: warn-code 299, warn-agent "-", no date.
    let warnings: Vec<String> =
        r.headers().get_all("warning").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    assert_eq!(warnings.len(), 1, "one warning on a stale copy: {warnings:?}");
    assert!(
        warnings[0].starts_with("299 - \"docker.io/library/cached:v1 is a cached copy") && warnings[0].ends_with('"'),
        "Warning {:?}",
        warnings[0]
    );
    assert_eq!(r.bytes().await.expect("body").as_ref(), img.manifest.as_slice());
    // Each 429 is counted (manifest, blob, then the revalidation).
    let status: serde_json::Value = send(&cove, "GET", "/admin/status").await.json().await.expect("status JSON");
    let up = status["upstreams"].as_array().and_then(|a| a.iter().find(|u| u["host"] == "docker.io")).cloned();
    let up = up.expect("docker.io in status");
    assert_eq!(up["rate_limited"], 3, "{up}");
    assert!(up["last_error"].as_str().is_some_and(|e| e.contains("rate limit")), "{up}");
}

/// A truncated upstream body: the client's transfer fails, nothing is
/// committed, and the next request fetches again and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_truncated_blob_is_never_committed() {
    let layer = random_bytes(3 << 20);
    let img = Image::from_layers(vec![layer.clone()]);
    let d = sha256_digest(&layer);
    let n = Arc::new(AtomicUsize::new(0));
    let (n2, d2, layer2) = (n.clone(), d.clone(), Bytes::from(layer.clone()));
    let up = fault_upstream(&img, move |req| {
        if req.method == "GET" && fault::blob_of(req) == Some(d2.as_str()) && n2.fetch_add(1, Ordering::SeqCst) == 0 {
            return Some(fault::blob_reply(&layer2, &d2).mode(BodyMode::Truncate(1 << 20)));
        }
        None
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;
    let path = format!("/v2/docker.io/library/app/blobs/{d}");
    let r = send(&cove, "GET", &path).await;
    let got = body_bytes(r).await;
    assert!(got.as_ref().map_or(true, |b| b.len() < layer.len()), "a truncated upstream body was served whole");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blob_path(&cove.data_dir, &d).exists(), "truncated blob committed");
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty());
    assert!(files_under(&cove.data_dir.join("spool")).is_empty(), "spool file left behind");

    let r = send(&cove, "GET", &path).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()), "fetched again");
    assert_eq!(body_bytes(r).await.expect("second transfer").len(), layer.len());
    assert_eq!(up.count("GET", &d), 2, "{}", up.log());
    wait_until("the blob is committed", Duration::from_secs(5), || blob_path(&cove.data_dir, &d).is_file()).await;
    assert_eq!(std::fs::read(blob_path(&cove.data_dir, &d)).expect("read"), layer);
}

/// Bytes that do not match the digest: never cached, never delivered as a
/// complete response; manifests likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrong_digest_is_never_cached_or_served_whole() {
    let layer = random_bytes(2 << 20);
    let img = Image::from_layers(vec![layer.clone()]);
    let d = sha256_digest(&layer);
    let (d2, mdigest) = (d.clone(), img.digest.clone());
    let bad_manifest = {
        let mut m = img.manifest.clone();
        m.push(b'\n');
        m
    };
    let up = fault_upstream(&img, move |req| {
        if fault::blob_of(req) == Some(d2.as_str()) {
            let mut wrong = random_bytes(2 << 20);
            wrong[0] ^= 1;
            return Some(Reply::new(200, wrong).header("Docker-Content-Digest", d2.clone()));
        }
        if req.path().contains("/library/bad/manifests/") {
            // HEAD says mdigest; the GET sends other bytes under that digest.
            return Some(
                Reply::new(200, bad_manifest.clone())
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Docker-Content-Digest", mdigest.clone()),
            );
        }
        None
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;
    for _ in 0..2 {
        let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{d}")).await;
        if r.status() == 200 {
            let got = body_bytes(r).await;
            assert!(got.as_ref().map_or(true, |b| b.len() < layer.len()), "a wrong-digest body was delivered whole");
        } else {
            assert!(r.status().as_u16() >= 500 && r.status() != 500, "status {}", r.status());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!blob_path(&cove.data_dir, &d).exists(), "wrong-digest blob committed");
    }
    assert_eq!(up.count("GET", &d), 2, "a failed verification is not remembered as a hit:\n{}", up.log());
    assert!(files_under(&cove.data_dir.join("blobs")).is_empty());

    for path in [
        "/v2/docker.io/library/bad/manifests/v1".to_owned(),
        format!("/v2/docker.io/library/bad/manifests/{}", img.digest),
    ] {
        let r = send(&cove, "GET", &path).await;
        let status = r.status().as_u16();
        assert!((502..=504).contains(&status), "{path}: wrong-digest manifest gave {status}");
    }
    assert!(stored_manifests(&cove.data_dir, "docker.io/library/bad").is_empty(), "bad manifest stored");
}

/// A slow upstream body is streamed: the first byte reaches the client about
/// when it leaves the upstream, long before the body ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_slow_body_is_streamed_to_the_client() {
    let layer = random_bytes(4 << 20);
    let img = Image::from_layers(vec![layer.clone()]);
    let d = sha256_digest(&layer);
    let (d2, layer2) = (d.clone(), Bytes::from(layer.clone()));
    let up = fault_upstream(&img, move |req| {
        (req.method == "GET" && fault::blob_of(req) == Some(d2.as_str())).then(|| {
            fault::blob_reply(&layer2, &d2)
                .mode(BodyMode::Throttle { chunk: 256 << 10, every: Duration::from_millis(200) })
        })
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;

    // Direct, for comparison.
    let t0 = Instant::now();
    let r = http_client().get(format!("{}/v2/library/app/blobs/{d}", up.url())).send().await.expect("direct");
    let (_, direct_ttfb, direct_total) = check_body(r, &layer, t0).await.expect("direct body");

    let t0 = Instant::now();
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/app/blobs/{d}")).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert_eq!(header(&r, "content-length"), layer.len().to_string());
    let (n, ttfb, total) = check_body(r, &layer, t0).await.expect("body through cove");
    assert_eq!(n, layer.len());
    report(&format!(
        "pull-through: slow upstream (4 MiB at 1.25 MiB/s): TTFB direct {} / through Cove {}; total direct {} / through Cove {}",
        ms(direct_ttfb),
        ms(ttfb),
        ms(direct_total),
        ms(total)
    ));
    assert!(total >= Duration::from_secs(2), "the upstream body takes ~3 s, got {total:?}");
    assert!(ttfb < Duration::from_secs(1), "time to first byte {ttfb:?}: Cove waited for the body");
    wait_until("the blob is committed", Duration::from_secs(5), || blob_path(&cove.data_dir, &d).is_file()).await;
}
