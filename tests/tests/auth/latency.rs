//! The latency overhead of htpasswd (bcrypt cost 10) with the verification
//! cache on and off, on the release binary.

use super::*;

/// The release binary when present (`COVE_BIN` first), else the test binary.
fn release_bin() -> (PathBuf, &'static str) {
    if let Some(p) = std::env::var_os("COVE_BIN") {
        return (PathBuf::from(p), "COVE_BIN");
    }
    let r = common::target_dir().join("release").join("cove");
    if r.is_file() {
        (r, "release")
    } else {
        (cove_bin(), "debug (no release build found)")
    }
}

/// Sequential HEAD requests for a blob with keep-alive; returns sorted
/// per-request latencies in microseconds.
async fn latencies(c: &reqwest::Client, url: &str, auth: Option<&str>, n: usize) -> Vec<u128> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut rb = c.head(url);
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        let t = Instant::now();
        let r = rb.send().await.expect("HEAD");
        assert_eq!(r.status(), 200, "HEAD {url}");
        out.push(t.elapsed().as_micros());
    }
    out.sort_unstable();
    out
}

fn median(v: &[u128]) -> f64 {
    v[v.len() / 2] as f64 / 1000.0
}

#[tokio::test]
async fn htpasswd_latency_overhead_with_and_without_the_cache() {
    let _g = EXCLUSIVE.write().await;
    let (bin, which) = release_bin();
    let alice = basic("alice", ALICE_PW);
    let file = format!("{}\n", bcrypt_line("alice", ALICE_PW, 10));
    const N: usize = 40;
    let mut results = Vec::new();
    for (label, cfg) in [
        ("network (no auth)", "[auth]\nkind = \"network\"\n".to_owned()),
        ("htpasswd, cache on (60s)", htpasswd_config("credential_cache_ttl = \"60s\"", "")),
        ("htpasswd, cache off (0s)", htpasswd_config("credential_cache_ttl = \"0s\"", "")),
    ] {
        let s = AuthServer::start(&bin, &cfg, &[("htpasswd", file.clone())], &[]).await;
        let auth = (!label.starts_with("network")).then_some(alice.as_str());
        let c = s.client();
        let img = Image::random(1);
        push_image(&c, auth, "myorg/bench", &img).await;
        let url = format!("{}/v2/myorg/bench/blobs/{}", s.base, sha256_digest(&img.config));
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let _ = latencies(&http, &url, auth, 3).await; // connection + warm-up
        let lat = latencies(&http, &url, auth, N).await;
        let mean = lat.iter().sum::<u128>() as f64 / lat.len() as f64 / 1000.0;
        results.push((label, median(&lat), mean, lat[lat.len() * 9 / 10] as f64 / 1000.0));
        drop(s);
    }
    // The first request of a user on a fresh server (one bcrypt verification).
    let s = AuthServer::start(&bin, &htpasswd_config("", ""), &[("htpasswd", file.clone())], &[]).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let url = format!("{}/v2/", s.base);
    let _ = http.get(&url).send().await; // connection, no credentials
    let t = Instant::now();
    assert_eq!(http.get(&url).header("authorization", &alice).send().await.expect("GET").status(), 200);
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    assert_eq!(http.get(&url).header("authorization", &alice).send().await.expect("GET").status(), 200);
    let second = t.elapsed().as_secs_f64() * 1000.0;

    // A burst of 30 concurrent requests of one user (a parallel 30-layer pull
    // with Basic credentials) on a cold cache, then again warm.
    let burst = |url: String| {
        let (http, alice) = (http.clone(), alice.clone());
        async move {
            let t = Instant::now();
            let reqs = (0..30).map(|_| {
                let (http, url, alice) = (http.clone(), url.clone(), alice.clone());
                tokio::spawn(
                    async move { http.get(&url).header("authorization", &alice).send().await.map(|r| r.status()) },
                )
            });
            for r in futures::future::join_all(reqs).await {
                assert_eq!(r.expect("task").expect("GET").as_u16(), 200);
            }
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    let s2 = AuthServer::start(&bin, &htpasswd_config("", ""), &[("htpasswd", file.clone())], &[]).await;
    let cold = burst(format!("{}/v2/", s2.base)).await;
    let warm = burst(format!("{}/v2/", s2.base)).await;
    drop(s2);

    let base = results[0].1;
    report(&format!(
        "htpasswd auth latency ({which} binary {}, bcrypt cost 10, {N} sequential HEAD blob requests, keep-alive):",
        bin.display()
    ));
    for (label, med, mean, p90) in &results {
        report(&format!(
            "  {label:<26} median {med:7.3} ms  mean {mean:7.3} ms  p90 {p90:7.3} ms  overhead vs network {:+8.3} ms",
            med - base
        ));
    }
    report(&format!("  first request of a user {first:.3} ms, the next one {second:.3} ms (cache on)"));
    report(&format!(
        "  30 concurrent requests of one user: {cold:.1} ms on a cold cache, {warm:.1} ms warm \
         (concurrent misses share one verification)"
    ));
    assert!(warm < cold, "a warm cache makes the burst cheaper: cold {cold} ms, warm {warm} ms");
    // Without single flight each of the 30 would run bcrypt (~30 x first).
    assert!(cold < 5.0 * first, "a cold burst pays about one verification: {cold:.1} ms vs first {first:.1} ms");
    let (on, off) = (results[1].1, results[2].1);
    assert!(off > on, "without the cache every request pays bcrypt: off {off} ms vs on {on} ms");
    assert!(
        off - base > 5.0 * (on - base).max(0.1),
        "the cache removes most of the bcrypt cost: on {on}, off {off}, base {base}"
    );
    assert!(first > second, "the first request pays the verification");
    assert!(on - base < 2.0, "with the cache, htpasswd adds under 2 ms per request: {:.3} ms", on - base);
}
