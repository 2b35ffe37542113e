//! The cache when its upstream stops answering: a TCP proxy in front of the
//! real distribution registry is switched between forwarding, accepting and
//! staying silent, never completing the handshake (a full backlog), and
//! stalling a body mid-way. Cached content must be served without waiting,
//! what is not cached must fail fast with 503, and the breaker must close
//! again once the upstream answers.

mod common;
mod pull_through_support;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::containerd::Containerd;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;
use pull_through_support::{blob_path, cache_status, cove_config, UpstreamTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORWARD: u8 = 0;
const SILENT: u8 = 1;
const BLACKHOLE: u8 = 2;
/// Forward requests, but stop relaying a response after `stall_after` bytes.
const STALL: u8 = 3;

/// A switchable TCP proxy on loopback.
struct Switch {
    addr: std::net::SocketAddr,
    mode: Arc<AtomicU8>,
    stall_after: Arc<AtomicUsize>,
    /// Connections that fill the backlog in BLACKHOLE mode.
    fillers: std::sync::Mutex<Vec<std::net::TcpStream>>,
    /// Open relays: cut at every switch, so a pooled connection cannot
    /// carry on in the previous mode.
    relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start(target: std::net::SocketAddr) -> Switch {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = sock.local_addr().expect("addr");
        // A backlog of 1, so that BLACKHOLE can fill it.
        let listener = sock.listen(1).expect("listen");
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let stall_after = Arc::new(AtomicUsize::new(usize::MAX));
        let (m, st) = (mode.clone(), stall_after.clone());
        let relays: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let open = relays.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                if m.load(Ordering::SeqCst) == BLACKHOLE {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let Ok((client, _)) = listener.accept().await else { return };
                match m.load(Ordering::SeqCst) {
                    SILENT => held.push(client),
                    BLACKHOLE => drop(client),
                    mode => {
                        let stall = if mode == STALL { st.load(Ordering::SeqCst) } else { usize::MAX };
                        let task = tokio::spawn(relay(client, target, stall));
                        open.lock().expect("lock").push(task);
                    }
                }
            }
        });
        Switch { addr, mode, stall_after, fillers: std::sync::Mutex::new(Vec::new()), relays, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        for relay in self.relays.lock().expect("lock").drain(..) {
            relay.abort();
        }
        let mut fillers = self.fillers.lock().expect("lock");
        fillers.clear();
        if mode == BLACKHOLE {
            std::thread::sleep(Duration::from_millis(60)); // the accept loop sees the mode
            for _ in 0..8 {
                match std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                    Ok(c) => fillers.push(c),
                    Err(_) => break,
                }
            }
            // Linux may still complete a handshake on the client side while the
            // accept queue is full (it drops the final ACK instead), so a
            // connection either never completes or is never served.
            assert!(!fillers.is_empty(), "the backlog is filled");
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways; the response direction stops after `stall` bytes and
/// then holds the connection open without sending anything.
async fn relay(mut client: tokio::net::TcpStream, target: std::net::SocketAddr, stall: usize) {
    let Ok(mut up) = tokio::net::TcpStream::connect(target).await else { return };
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = up.split();
    let to_up = tokio::io::copy(&mut cr, &mut uw);
    let to_client = async {
        let mut sent = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let n = n.min(stall.saturating_sub(sent));
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        // Stalled: keep the connection open, send nothing more.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    };
    tokio::select! { _ = to_up => {}, _ = to_client => {} }
}

async fn get(c: &reqwest::Client, url: &str, accept: &str) -> (reqwest::Response, Duration) {
    let t0 = Instant::now();
    let r = c.get(url).header("accept", accept).send().await.expect("request");
    (r, t0.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_never_holds_up_the_cache() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let app = layout.add_image("v1", &[64 * 1024]);
    let other = layout.add_image("other", &[32 * 1024]);
    let big = layout.add_image("big", &[8 << 20]);
    let d = dist.authority();
    skopeo_push(&layout.dir, "v1", &format!("{d}/library/app:v1"), None);
    skopeo_push(&layout.dir, "other", &format!("{d}/library/other:v1"), None);
    skopeo_push(&layout.dir, "big", &format!("{d}/library/big:v1"), None);

    let switch = Switch::start(dist.authority().parse().expect("addr")).await;
    // Default timeouts (connect 3 s, response 5 s, deadline 10 s, wait for
    // revalidation 1.5 s), except a short TTL and a short stall timeout.
    let tables =
        [UpstreamTable { host: "docker.io", url: switch.url(), extra: "tag_ttl = \"1s\"\nread_timeout = \"2s\"" }];
    let cove =
        Server::start_with(ServerOptions { config: Some(cove_config(&tables)), ..ServerOptions::default() }).await;
    let c = http_client();
    let manifest_url = |repo: &str, r: &str| cove.url(&format!("/v2/docker.io/library/{repo}/manifests/{r}"));
    let blob_url = |repo: &str, dg: &str| cove.url(&format!("/v2/docker.io/library/{repo}/blobs/{dg}"));

    // Answering: cache app:v1 whole.
    let (r, _) = get(&c, &manifest_url("app", "v1"), OCI_MANIFEST).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache_status(&r), "miss");
    for b in std::iter::once(&app.config).chain(&app.layers) {
        let (r, _) = get(&c, &blob_url("app", &b.digest), "*/*").await;
        assert_eq!(r.status(), 200);
        assert_eq!(sha256_digest(&r.bytes().await.expect("body")), b.digest);
    }

    // ---- silent: accepts, never answers
    switch.set(SILENT);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past tag_ttl
    let (r, stale_took) = get(&c, &manifest_url("app", "v1"), OCI_MANIFEST).await;
    assert_eq!(r.status(), 200, "cached tag past its TTL with the upstream silent");
    assert_eq!(cache_status(&r), "stale");
    assert_eq!(header(&r, "docker-content-digest"), app.manifest.digest);
    assert!(stale_took < Duration::from_millis(2500), "stale answer took {stale_took:?}");
    let (r, blob_took) = get(&c, &blob_url("app", &app.layers[0].digest), "*/*").await;
    assert_eq!(r.status(), 200);
    assert!(blob_took < Duration::from_millis(500), "cached blob took {blob_took:?}");
    let (r, digest_took) = get(&c, &manifest_url("app", &app.manifest.digest), OCI_MANIFEST).await;
    assert_eq!((r.status().as_u16(), cache_status(&r).as_str()), (200, "hit"));
    assert!(digest_took < Duration::from_millis(500), "manifest by digest took {digest_took:?}");

    // Not cached: a 503 with an OCI body and Retry-After, bounded by the
    // request deadline the first time, at once once the breaker is open.
    let (r, uncached_first) = get(&c, &manifest_url("other", "v1"), OCI_MANIFEST).await;
    assert_eq!(r.status(), 503, "uncached manifest with the upstream silent");
    assert!(!header(&r, "retry-after").is_empty(), "Retry-After on 503");
    let body = r.text().await.expect("body");
    assert!(body.contains("\"UNAVAILABLE\""), "{body}");
    assert!(uncached_first < Duration::from_secs(12), "first uncached answer took {uncached_first:?}");
    let (r, uncached_open) = get(&c, &manifest_url("other", "v1"), OCI_MANIFEST).await;
    assert_eq!(r.status(), 503);
    assert!(uncached_open < Duration::from_millis(300), "with the breaker open it took {uncached_open:?}");
    let (r, blob_open) = get(&c, &blob_url("other", &other.layers[0].digest), "*/*").await;
    assert_eq!(r.status(), 503, "uncached blob");
    assert!(blob_open < Duration::from_millis(300), "uncached blob took {blob_open:?}");
    let metrics = scrape(&cove).await;
    assert_eq!(metrics.get("cove_upstream_healthy{upstream=\"docker.io\"}"), Some(&0.0), "unhealthy in /metrics");

    // ---- answering again, with a new digest pushed meanwhile
    let app2 = layout.add_image("v1", &[48 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{d}/library/app:v1"), None);
    switch.set(FORWARD);
    let t0 = Instant::now();
    let recovered = loop {
        let (r, _) = get(&c, &manifest_url("app", "v1"), OCI_MANIFEST).await;
        if r.status() == 200 && header(&r, "docker-content-digest") == app2.manifest.digest {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "the new digest was not picked up within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let metrics = scrape(&cove).await;
    assert_eq!(metrics.get("cove_upstream_healthy{upstream=\"docker.io\"}"), Some(&1.0), "healthy again");
    let (r, _) = get(&c, &manifest_url("other", "v1"), OCI_MANIFEST).await;
    assert_eq!(r.status(), 200, "uncached content fetched again once the upstream answers");

    // ---- blackhole: the TCP handshake never completes
    switch.set(BLACKHOLE);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (r, bh_stale) = get(&c, &manifest_url("app", "v1"), OCI_MANIFEST).await;
    assert_eq!((r.status().as_u16(), cache_status(&r).as_str()), (200, "stale"));
    assert!(bh_stale < Duration::from_millis(2500), "stale with a blackholed upstream took {bh_stale:?}");
    let (r, bh_uncached) = get(&c, &blob_url("big", &big.layers[0].digest), "*/*").await;
    assert_eq!(r.status(), 503);
    assert!(bh_uncached < Duration::from_secs(12), "uncached with a blackholed upstream took {bh_uncached:?}");
    switch.set(FORWARD);
    let t0 = Instant::now();
    while scrape(&cove).await.get("cove_upstream_healthy{upstream=\"docker.io\"}") != Some(&1.0) {
        assert!(t0.elapsed() < Duration::from_secs(10), "breaker not closed after the blackhole");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ---- a blob that stalls mid-body: the client gets an error, nothing is
    // cached, and the next request fetches it afresh.
    switch.stall_after.store(1 << 20, Ordering::SeqCst);
    switch.set(STALL);
    let layer = &big.layers[0];
    let t0 = Instant::now();
    let r = c.get(blob_url("big", &layer.digest)).send().await.expect("request");
    let got = r.bytes().await;
    let stall_took = t0.elapsed();
    assert!(
        got.is_err() || got.as_ref().is_ok_and(|b| b.len() < layer.bytes.len()),
        "a stalled blob is not delivered whole"
    );
    assert!(stall_took < Duration::from_secs(10), "stalled download ended after {stall_took:?}");
    assert!(!blob_path(&cove.data_dir, &layer.digest).exists(), "nothing partial cached");
    switch.set(FORWARD);
    let r = c.get(blob_url("big", &layer.digest)).send().await.expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(sha256_digest(&r.bytes().await.expect("body")), layer.digest, "fresh fetch, verified");

    report(&format!(
        "offline: silent upstream: stale tag {}, cached blob {}, by digest {}; uncached 503 first {} then {} (breaker open), blob {}; \
         new digest picked up {} after it answered; blackhole: stale {}, uncached 503 {}; stalled blob failed after {}",
        ms(stale_took), ms(blob_took), ms(digest_took), ms(uncached_first), ms(uncached_open), ms(blob_open),
        ms(recovered), ms(bh_stale), ms(bh_uncached), ms(stall_took)
    ));
}

/// containerd with Cove as its first mirror and the upstream silent: a
/// cached image pulls from Cove; for one that is not cached, Cove answers
/// 503 at once and containerd moves on to its next host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_gets_cached_images_and_moves_on_for_the_rest() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let cached = layout.add_image("v1", &[64 * 1024]);
    let fresh = layout.add_image("new", &[32 * 1024]);
    let d = dist.authority();
    skopeo_push(&layout.dir, "v1", &format!("{d}/library/cached:v1"), None);
    skopeo_push(&layout.dir, "new", &format!("{d}/library/fresh:v1"), None);
    let switch = Switch::start(dist.authority().parse().expect("addr")).await;
    let tables = [UpstreamTable { host: "docker.io", url: switch.url(), extra: "tag_ttl = \"1s\"" }];
    let cove =
        Server::start_with(ServerOptions { config: Some(cove_config(&tables)), ..ServerOptions::default() }).await;

    // Cove first, then the registry itself as the last resort.
    let hosts = work.path().join("certs.d");
    std::fs::create_dir_all(hosts.join("docker.io")).expect("hosts dir");
    std::fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!("server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", dist.url(), cove.base),
    )
    .expect("hosts.toml");
    let ctd = Containerd::start();
    let out = ctd.pull(&hosts, "docker.io/library/cached:v1");
    assert!(out.status.success(), "first pull: {}", String::from_utf8_lossy(&out.stderr));
    assert!(blob_path(&cove.data_dir, &cached.layers[0].digest).is_file(), "cached in Cove");
    let rm = ctd.ctr(&["images", "rm", "--sync", "docker.io/library/cached:v1"]);
    assert!(rm.status.success());

    switch.set(SILENT);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = dist.count("/v2/library/cached/");
    let t0 = Instant::now();
    let out = ctd.pull(&hosts, "docker.io/library/cached:v1");
    let cached_took = t0.elapsed();
    assert!(out.status.success(), "cached pull with the upstream silent: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(dist.count("/v2/library/cached/"), before, "served by Cove, not the next host");

    let t0 = Instant::now();
    let out = ctd.pull(&hosts, "docker.io/library/fresh:v1");
    let fresh_took = t0.elapsed();
    assert!(
        out.status.success(),
        "uncached pull: containerd should move on to the next host: {}\n--- containerd ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        ctd.logs()
    );
    let ls = String::from_utf8_lossy(&ctd.ctr(&["images", "ls"]).stdout).into_owned();
    assert!(ls.contains(&fresh.manifest.digest), "{ls}");
    assert!(dist.count("/v2/library/fresh/manifests/v1") >= 1, "fetched from the next host");
    assert!(fresh_took < Duration::from_secs(25), "containerd moved on after {fresh_took:?}");
    report(&format!(
        "offline: containerd, upstream silent: cached image {}, uncached image via next host {}",
        ms(cached_took),
        ms(fresh_took)
    ));
}
