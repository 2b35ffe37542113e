//! Page render times of a large store, reported to the e2e report.

use super::*;

/// Copies a directory tree (a repository's files in the filesystem layout).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// Round trips of `GET path` on loopback (server time plus a local round
/// trip), `n` times: (p50, p99) in milliseconds.
async fn page_times(s: &Server, path: &str, n: usize) -> (f64, f64) {
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let start = std::time::Instant::now();
        let r = s.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.expect("page");
        t.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    t.sort_by(f64::total_cmp);
    (t[n / 2], t[(n * 99 / 100).min(n - 1)])
}

/// Page render times of a store with 10,000 repositories and a repository
/// with 2,000 tags (written straight into the filesystem layout, copies of
/// one pushed image, then a restart), reported to the e2e report.
#[tokio::test]
async fn page_render_times_for_a_large_store() {
    let mut cove = Server::start().await;
    cove.push_image("seed/app", "v1", 2).await;
    let repos = cove.data_dir.join("repositories");
    let seed = repos.join("seed").join("app");
    let started = std::time::Instant::now();
    for i in 0..10_000 {
        copy_tree(&seed, &repos.join(format!("team{:02}", i % 100)).join(format!("app{i:05}")));
    }
    let tag = std::fs::read(seed.join("_tags").join("v1")).expect("tag file");
    for i in 0..2000 {
        std::fs::write(seed.join("_tags").join(format!("t{i:04}")), &tag).expect("tag");
    }
    eprintln!("wrote 10,000 repositories and 2,000 tags in {:?}", started.elapsed());
    // Written past the server: a restart sweeps them into the repository
    // index (as for any store that exists at start).
    cove.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cove.logs().matches("repository index swept").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "no index sweep after restart:\n{}", cove.logs_tail(3000));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The API's catalog walks the same storage listing: the reference.
    let (c50, c99) = page_times(&cove, "/v2/_catalog?n=100", 5).await;
    let (p50, p99) = page_times(&cove, "/", 10).await;
    let (f50, f99) = page_times(&cove, "/?q=app0999", 5).await;
    let (l50, l99) = page_times(&cove, "/?page=100", 5).await;
    let (t50, t99) = page_times(&cove, "/ui/repo/seed/app", 20).await;
    let (i50, i99) = page_times(&cove, "/ui/image/seed/app?ref=t1999", 20).await;
    let r = cove.get("/?page=100").await.text().await.expect("page");
    assert!(r.contains("Page 100 of 101"), "10,001 repositories in pages of 100");
    report(&format!(
        "ui: 10,000 repositories: list p50 {p50:.1} ms p99 {p99:.1} ms, filtered p50 {f50:.1} ms p99 {f99:.1} ms, \
         page 100 p50 {l50:.1} ms p99 {l99:.1} ms; 2,001-tag repository page (50 rows) p50 {t50:.1} ms p99 {t99:.1} ms; \
         image page p50 {i50:.1} ms p99 {i99:.1} ms (GET /v2/_catalog?n=100 on the same store: p50 {c50:.1} ms p99 {c99:.1} ms)"
    ));
}
