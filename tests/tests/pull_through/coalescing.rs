//! Coalescing: one upstream GET for concurrent clients of a blob, background
//! completion, Range on cached and in-flight blobs, concurrent manifest
//! misses.

use super::*;

/// 20 concurrent GETs of one uncached 50 MiB blob make exactly one upstream
/// GET and all get the right bytes; a client hanging up does not stop the
/// fetch; Range works on cached and in-flight blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_one_upstream_get_for_20_clients_and_background_completion() {
    let big = Bytes::from(random_bytes(50 << 20));
    let second = Bytes::from(random_bytes(20 << 20));
    let third = Bytes::from(random_bytes(8 << 20));
    let content = Content::shared();
    let (d1, d2, d3) = {
        let mut c = content.lock().expect("lock");
        (c.add_blob(big.clone()), c.add_blob(second.clone()), c.add_blob(third.clone()))
    };
    let c2 = content.clone();
    let up = FaultServer::start(move |req| {
        let r = fault::serve(&c2, req);
        match (req.method.as_str(), r.status, r.body.len()) {
            // Slow enough that every client arrives while the fetch runs.
            ("GET", 200, n) if n > (1 << 20) => {
                r.mode(BodyMode::Throttle { chunk: 1 << 20, every: Duration::from_millis(60) })
            }
            _ => r,
        }
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;

    let t0 = Instant::now();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let (http, url, big) =
                (cove.http.clone(), cove.url(&format!("/v2/docker.io/library/big/blobs/{d1}")), big.clone());
            tokio::spawn(async move {
                let r = http.get(url).send().await.expect("GET");
                let status = (r.status().as_u16(), cache_status(&r));
                (status, check_body(r, &big, Instant::now()).await)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        let (status, body) = c.await.expect("client task");
        let (n, _, _) = body.unwrap_or_else(|e| panic!("a coalesced client got wrong bytes: {e}"));
        assert_eq!((status.0, n), (200, big.len()));
        statuses.push(status.1);
    }
    let took = t0.elapsed();
    assert_eq!(up.count("GET", &d1), 1, "20 concurrent clients → exactly one upstream GET:\n{}", up.log());
    report(&format!(
        "pull-through: 20 concurrent GETs of one uncached 50 MiB blob: {} upstream GET, all 20 verified in {} (X-Cove-Cache: {} miss, {} hit)",
        up.count("GET", &d1),
        ms(took),
        statuses.iter().filter(|s| *s == "miss").count(),
        statuses.iter().filter(|s| *s == "hit").count()
    ));
    wait_until("the 50 MiB blob is committed", Duration::from_secs(10), || blob_path(&cove.data_dir, &d1).is_file())
        .await;

    // Range on a cached blob.
    let r = cove
        .req("GET", &format!("/v2/docker.io/library/big/blobs/{d1}"))
        .header("range", "bytes=1000000-1999999")
        .send()
        .await
        .expect("range");
    assert_eq!((r.status().as_u16(), cache_status(&r)), (206, "hit".to_owned()));
    assert_eq!(header(&r, "content-range"), format!("bytes 1000000-1999999/{}", big.len()));
    assert_eq!(r.bytes().await.expect("range body").as_ref(), &big[1_000_000..2_000_000]);

    // A client hangs up after the first bytes: the fetch completes anyway.
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/big/blobs/{d2}")).await;
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let first = s.next().await.expect("a first chunk").expect("chunk");
    assert_eq!(first.as_ref(), &second[..first.len()]);
    drop(s);
    wait_until("the abandoned blob is committed in the background", Duration::from_secs(15), || {
        blob_path(&cove.data_dir, &d2).is_file()
    })
    .await;
    let r = send(&cove, "GET", &format!("/v2/docker.io/library/big/blobs/{d2}")).await;
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "hit".to_owned()), "after a disconnect");
    check_body(r, &second, Instant::now()).await.expect("abandoned blob content");
    assert_eq!(up.count("GET", &d2), 1, "{}", up.log());

    // Range on an in-flight blob: a full reader starts the fetch, ranged
    // readers join it.
    let full = {
        let (http, url, third) =
            (cove.http.clone(), cove.url(&format!("/v2/docker.io/library/big/blobs/{d3}")), third.clone());
        tokio::spawn(async move {
            let r = http.get(url).send().await.expect("GET");
            check_body(r, &third, Instant::now()).await
        })
    };
    wait_until("the fetch of the third blob started", Duration::from_secs(5), || up.count("GET", &d3) == 1).await;
    for (a, b) in [(0usize, 99usize), (5 << 20, (5 << 20) + 4095), (third.len() - 10, third.len() - 1)] {
        let r = cove
            .req("GET", &format!("/v2/docker.io/library/big/blobs/{d3}"))
            .header("range", format!("bytes={a}-{b}"))
            .send()
            .await
            .expect("range");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("range body");
        // The upstream announced the size, so Cove can answer the range.
        assert_eq!(status, 206, "range {a}-{b} on an in-flight blob");
        assert_eq!(body.as_ref(), &third[a..=b], "in-flight range {a}-{b}");
    }
    full.await.expect("task").expect("full reader of the in-flight blob");
    assert_eq!(up.count("GET", &d3), 1, "ranged readers joined the one fetch:\n{}", up.log());
}

/// 20 concurrent pulls of one uncached tag (and of one uncached manifest
/// digest) cost one upstream round trip, not 20: Docker Hub counts manifest
/// GETs against the pull limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_concurrent_manifest_misses() {
    let (img, other) = (Image::random(1), Image::random(1));
    let content = Content::shared();
    {
        let mut c = content.lock().expect("lock");
        c.add_image("v1", &img);
        c.add_image("o1", &other);
    }
    let c2 = content.clone();
    let up = FaultServer::start(move |req| {
        let r = fault::serve(&c2, req);
        // A slow upstream: every client arrives while the first is waiting.
        if req.path().contains("/manifests/") {
            r.delay(Duration::from_millis(300))
        } else {
            r
        }
    })
    .await;
    let cove = start_cove(&[table("docker.io", up.url(), "")]).await;
    for (path, digest) in [
        ("/v2/docker.io/library/app/manifests/v1".to_owned(), img.digest.clone()),
        (format!("/v2/docker.io/library/other/manifests/{}", other.digest), other.digest.clone()),
    ] {
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let req = cove.req("GET", &path).header("accept", ACCEPT_ALL);
                tokio::spawn(async move {
                    let r = req.send().await.expect("GET");
                    (r.status().as_u16(), header(&r, "docker-content-digest"))
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.await.expect("task"), (200, digest.clone()), "{path}");
        }
    }
    let (heads, gets) = (up.count("HEAD", "/manifests/"), up.count("GET", "/manifests/"));
    assert_eq!(
        (heads, gets),
        (1, 2),
        "20 concurrent tag pulls → 1 HEAD + 1 GET; 20 concurrent digest pulls → 1 GET:\n{}",
        up.log()
    );
}
