//! Retention and GC racing concurrent pulls of cached images and pushes of
//! private ones.

use super::*;

/// Retention (evicting everything idle, max_size = 1 byte) and GC run over
/// and over while clients pull cached images and push private ones sharing
/// layers with them; every pull succeeds with verified digests, and at the
/// end everything pulls back complete.
#[tokio::test]
async fn retention_and_gc_race_pulls_and_pushes() {
    let dist = Distribution::start(None, None).await;
    let base_layer = random_bytes(32 * 1024);
    let mut cached = Vec::new();
    for i in 0..6 {
        let img = Image::from_layers(vec![base_layer.clone(), random_bytes(16 * 1024 + i * 512)]);
        push_image_to(&dist.url(), &format!("lib/r{i}"), "v1", &img).await;
        cached.push((format!("{HOST}/lib/r{i}"), img));
    }
    let s = Arc::new(
        start(
            &dist,
            "\n[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[retention.upstreams.\"upstream.test\"]\nmax_size = \"1\"\n",
        )
        .await,
    );
    let cached = Arc::new(cached);
    let stop = Arc::new(AtomicBool::new(false));
    let (runs, evicted, gc_runs) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ret_task = {
        let (s, stop, runs, evicted) = (s.clone(), stop.clone(), runs.clone(), evicted.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let v = retention(&s, false).await;
                evicted.fetch_add(v["evicted"].as_array().map_or(0, |a| a.len()), Ordering::Relaxed);
                runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let gc_task = {
        let (s, stop, gc_runs) = (s.clone(), stop.clone(), gc_runs.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(s.req("POST", "/admin/gc").send().await.expect("gc").status(), 200);
                gc_runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(45)).await;
            }
        })
    };
    let mut pullers = Vec::new();
    for w in 0..3usize {
        let (s, cached) = (s.clone(), cached.clone());
        pullers.push(tokio::spawn(async move {
            let mut n = 0;
            for i in 0..14usize {
                let (repo, img) = &cached[(w * 5 + i * 7) % cached.len()];
                let reference = if i % 3 == 0 { img.digest.clone() } else { "v1".to_owned() };
                pull(&s, repo, &reference, img).await;
                n += 1;
                // Some pauses are longer than the grace period: evictable.
                tokio::time::sleep(Duration::from_millis(if i % 4 == 3 { 1300 } else { 60 })).await;
            }
            n
        }));
    }
    let mut pushers = Vec::new();
    for w in 0..2usize {
        let s = s.clone();
        let base_layer = base_layer.clone();
        pushers.push(tokio::spawn(async move {
            let mut pushed: Vec<(String, String, Image)> = Vec::new();
            for i in 0..10usize {
                let repo = format!("private/w{w}");
                let tag = format!("t{i}");
                let layers = vec![base_layer.clone(), random_bytes(4096 + i)];
                let img = Image::from_layers(layers);
                for blob in blobs_of(&img) {
                    let d = sha256_digest(blob);
                    if s.head(&format!("/v2/{repo}/blobs/{d}")).await.status() != 200 || i % 2 == 0 {
                        s.push_blob(&repo, blob).await;
                    }
                }
                let r = s.put_manifest(&repo, &tag, OCI_MANIFEST, &img.manifest).await;
                assert_eq!(r.status(), 201, "push {repo}:{tag}: {}", r.text().await.unwrap_or_default());
                if let Some((prepo, ptag, pimg)) = pushed.get(i / 2) {
                    pull(&s, prepo, ptag, pimg).await;
                }
                pushed.push((repo, tag, img));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            pushed
        }));
    }
    let mut pulls = 0;
    for p in pullers {
        pulls += p.await.expect("puller");
    }
    let mut private = Vec::new();
    for p in pushers {
        private.extend(p.await.expect("pusher"));
    }
    stop.store(true, Ordering::Relaxed);
    ret_task.await.expect("retention task");
    gc_task.await.expect("gc task");
    // Settle, run both once more, then pull everything back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    retention(&s, false).await;
    assert_eq!(s.req("POST", "/admin/gc").send().await.expect("gc").status(), 200);
    for (repo, tag, img) in &private {
        pull(&s, repo, tag, img).await;
    }
    for (repo, img) in cached.iter() {
        pull(&s, repo, "v1", img).await;
    }
    let (runs, evicted, gc_runs) =
        (runs.load(Ordering::Relaxed), evicted.load(Ordering::Relaxed), gc_runs.load(Ordering::Relaxed));
    report(&format!(
        "retention race: {pulls} cached pulls, {} private images, {runs} retention runs ({evicted} evictions), {gc_runs} gc runs",
        private.len()
    ));
    assert!(runs >= 10, "retention ran repeatedly ({runs})");
    assert!(evicted >= 3, "images were evicted during the race ({evicted})");
    assert!(s.logs().contains("retention finished"), "runs logged");
}
