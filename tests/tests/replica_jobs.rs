//! Garbage collection and retention with several replicas on one bucket
//! (issue 20), end to end with the real binary on s3s-fs and Garage:
//! - a retention run on one replica keeps an image pulled only through
//!   another within `max_age` (the replicas' activity records are merged)
//!   and evicts one pulled nowhere;
//! - with GC and retention scheduled on both, only the holder of the
//!   maintenance lease runs (on-demand runs at once on both: one runs, the
//!   other is refused naming the holder; scheduled runs in the logs); the
//!   other takes over after the holder is killed (kill -9) once the lease
//!   expired, and a holder paused (SIGSTOP) past its lease does not act
//!   when it wakes.
//!
//! Short timings: `gc.lease_ttl = "3s"`, `gc.lease_settle = "200ms"`,
//! `retention.activity_interval = "1s"`.

mod common;
mod pull_through_support;

use std::time::{Duration, Instant};

use common::*;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::s3::S3Peer;
use pull_through_support::{cache_status, cove_config, UpstreamTable};

const HOST: &str = "upstream.test";
const TTL: Duration = Duration::from_secs(3);

/// A replica named `name` on `peer`'s bucket with `upstream` as
/// `upstream.test` and `extra` appended.
async fn replica(peer: &S3Peer, name: &str, upstream: &str, extra: &str) -> Server {
    let mut cfg = cove_config(&[UpstreamTable { host: HOST, url: upstream.to_owned(), extra: "tag_ttl = \"1h\"" }])
        .replacen("[server]\n", &format!("[server]\nreplica = \"{name}\"\n"), 1);
    cfg.push_str(&format!(
        r#"
[storage]
kind = "s3"
root = "@DATA@"
bucket = "{bucket}"
endpoint = "{endpoint}"
region = "{region}"
access_key_id = "{ak}"
secret_access_key = "{sk}"
allow_http = true
prefix = "jobs"
{extra}
"#,
        bucket = peer.bucket,
        endpoint = peer.endpoint,
        region = peer.region,
        ak = peer.access_key,
        sk = peer.secret_key,
    ));
    Server::start_with(ServerOptions { config: Some(cfg), ..Default::default() }).await
}

async fn status(s: &Server) -> serde_json::Value {
    json(s.get("/admin/status").await).await
}

/// Pulls `repo:tag` and its blobs through `s`; returns the manifest's cache status.
async fn pull(s: &Server, repo: &str, img: &Image) -> String {
    let r = s.manifest("GET", repo, "v1").await;
    assert_eq!(r.status(), 200, "manifest {repo}");
    let st = cache_status(&r);
    assert_eq!(&r.bytes().await.expect("body")[..], &img.manifest[..]);
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let d = sha256_digest(blob);
        let got = s.get(&format!("/v2/{repo}/blobs/{d}")).await.bytes().await.expect("blob");
        assert_eq!(sha256_digest(&got), d, "blob of {repo}");
    }
    st
}

/// Waits until a manifest pull of `repo` through `s` is a cache hit (the
/// blobs of a miss are committed just after they went out).
async fn wait_hit(s: &Server, repo: &str, img: &Image) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blobs_cached = futures::future::join_all(
            std::iter::once(&img.config)
                .chain(img.layers.iter())
                .map(|b| async move { cache_status(&s.get(&format!("/v2/{repo}/blobs/{}", sha256_digest(b))).await) }),
        )
        .await;
        if blobs_cached.iter().all(|c| c == "hit") {
            return;
        }
        assert!(Instant::now() < deadline, "{repo} not cached: {blobs_cached:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn evicted(report: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = report["evicted"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["repository"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    v.sort();
    v
}

// ------------------------------------------------------------ activity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_counts_pulls_through_every_replica_on_s3s_fs() {
    retention_counts_pulls_through_every_replica(&S3Peer::s3s_fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_counts_pulls_through_every_replica_on_garage() {
    retention_counts_pulls_through_every_replica(&S3Peer::garage()).await;
}

/// Both images cached through A; `keep` pulled again only through B after
/// `max_age` passed; A's run must see B's pull (its own log says `keep`
/// is as idle as `gone`).
async fn retention_counts_pulls_through_every_replica(peer: &S3Peer) {
    let dist = Distribution::start(None, None).await;
    let (keep, gone) = (Image::random(1), Image::random(1));
    push_image_to(&dist.url(), "lib/keep", "v1", &keep).await;
    push_image_to(&dist.url(), "lib/gone", "v1", &gone).await;
    let common = "[gc]\ngrace = \"1s\"\nenabled = false\nlease_ttl = \"3s\"\nlease_settle = \"200ms\"\n\
                  [retention]\ninterval = \"1h\"\nactivity_interval = \"1s\"\n\
                  [retention.upstreams.\"upstream.test\"]\nmax_age = \"4s\"\n";
    let a = replica(peer, "a", &dist.url(), common).await;
    let b = replica(peer, "b", &dist.url(), &common.replace("[retention]\n", "[retention]\nenabled = false\n")).await;
    let (rk, rg) = (format!("{HOST}/lib/keep"), format!("{HOST}/lib/gone"));
    assert_eq!(pull(&a, &rk, &keep).await, "miss");
    assert_eq!(pull(&a, &rg, &gone).await, "miss");
    wait_hit(&a, &rk, &keep).await;
    wait_hit(&a, &rg, &gone).await;
    tokio::time::sleep(Duration::from_millis(4300)).await;
    // Past max_age for A; B pulls `keep` (from the bucket) and saves its
    // activity record within a second.
    let served = pull(&b, &rk, &keep).await;
    assert!(served == "hit" || served == "revalidated", "B serves the image A cached: {served}");
    tokio::time::sleep(Duration::from_millis(1600)).await;

    let r = a.req("POST", "/admin/retention").send().await.expect("retention");
    assert_eq!(r.status(), 200, "A runs retention");
    let report = json(r).await;
    assert_eq!(evicted(&report), vec![rg.clone()], "only the image pulled nowhere: {report}");
    assert_eq!(pull(&a, &rk, &keep).await, "hit", "kept, still cached");
    assert_eq!(cache_status(&b.manifest("GET", &rg, "v1").await), "miss", "evicted for B too: fetched again");
    // A (retention not scheduled: it does not contend) took the lease for
    // the run and gave it back at once.
    let st = status(&a).await;
    assert_eq!(st["lease"]["last_holder"], "a", "A ran under the lease: {st}");
    assert_eq!((st["lease"]["active"].as_bool(), st["lease"]["contending"].as_bool()), (Some(false), Some(false)));
    assert_eq!(status(&b).await["lease"]["epoch"], st["lease"]["epoch"], "B sees the same record");
}

// ------------------------------------------------------------ the lease

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_among_replicas_and_takeover_on_s3s_fs() {
    one_runner_and_takeover(&S3Peer::s3s_fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_among_replicas_and_takeover_on_garage() {
    one_runner_and_takeover(&S3Peer::garage()).await;
}

const SCHEDULED: &str = "[gc]\nenabled = true\ninterval = \"1s\"\ngrace = \"1s\"\nlease_ttl = \"3s\"\n\
                         lease_settle = \"200ms\"\n[retention]\nenabled = true\ninterval = \"1h\"\n\
                         activity_interval = \"1s\"\n";

/// Which of `servers` hold the lease, by their own status.
async fn holders(servers: &[&Server]) -> Vec<bool> {
    let mut v = Vec::new();
    for s in servers {
        v.push(status(s).await["lease"]["held_here"] == true);
    }
    v
}

/// Waits until exactly one of `servers` holds the lease; returns its index.
async fn wait_one_holder(servers: &[&Server], within: Duration) -> usize {
    let t = Instant::now();
    loop {
        let h = holders(servers).await;
        if h.iter().filter(|x| **x).count() == 1 {
            return h.iter().position(|x| *x).unwrap_or(0);
        }
        assert!(t.elapsed() < within, "no single holder after {within:?}: {h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(s: &Server, path: &str) -> (u16, String) {
    let r = s.req("POST", path).send().await.expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn one_runner_and_takeover(peer: &S3Peer) {
    let dist = Distribution::start(None, None).await;
    let url = dist.url();
    let (a, b) = tokio::join!(replica(peer, "a", &url, SCHEDULED), replica(peer, "b", &url, SCHEDULED));
    let (mut a, mut b) = (a, b);
    let first = wait_one_holder(&[&a, &b], Duration::from_secs(5)).await;
    let names = ["a", "b"];
    let (holder, other) = (names[first], names[1 - first]);
    for s in [&a, &b] {
        let st = status(s).await;
        assert_eq!(st["lease"]["holder"], holder, "both see the same holder: {st}");
    }

    // On demand on both at once: one runs, the other is refused naming the holder.
    for path in ["/admin/gc", "/admin/retention"] {
        let ((sa, ta), (sb, tb)) = tokio::join!(post(&a, path), post(&b, path));
        let (ok, refused) = if first == 0 { ((sa, &ta), (sb, &tb)) } else { ((sb, &tb), (sa, &ta)) };
        assert_eq!(ok.0, 200, "{path} on the holder {holder}: {}", ok.1);
        assert_eq!(refused.0, 503, "{path} on {other}: {}", refused.1);
        assert!(refused.1.contains(&format!("held by replica {holder}")), "{path}: {}", refused.1);
    }
    // Scheduled GC (every second): only the holder ran any.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (lh, lo) = if first == 0 { (a.logs(), b.logs()) } else { (b.logs(), a.logs()) };
    assert!(lh.matches("garbage collection finished").count() >= 3, "holder ran on schedule and on demand");
    assert_eq!(lo.matches("garbage collection finished").count(), 0, "the other never swept:\n{lo}");
    let (mh, mo) = if first == 0 { (scrape(&a).await, scrape(&b).await) } else { (scrape(&b).await, scrape(&a).await) };
    assert_eq!(mh.get("cove_lease_held").copied(), Some(1.0));
    assert_eq!(mo.get("cove_lease_held").copied(), Some(0.0));
    let epoch = status(&a).await["lease"]["epoch"].as_u64().expect("epoch");

    // The holder dies: the other takes over once the lease expired.
    let (dead, survivor) = if first == 0 { (&mut a, &b) } else { (&mut b, &a) };
    dead.kill9();
    let killed = Instant::now();
    while !holders(&[survivor]).await[0] {
        assert!(killed.elapsed() < TTL * 3, "no takeover within {:?}", TTL * 3);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let took = killed.elapsed();
    report(&format!(
        "takeover after kill -9 of the holder: {:.2} s (lease_ttl 3 s, settle 200 ms)",
        took.as_secs_f64()
    ));
    assert!(took >= TTL - TTL / 4 - Duration::from_millis(100), "not before the lease expired: {took:?}");
    let st = status(survivor).await;
    assert_eq!(st["lease"]["holder"], other, "{st}");
    assert!(st["lease"]["epoch"].as_u64().expect("epoch") > epoch, "a new epoch: {st}");
    assert_eq!(post(survivor, "/admin/gc").await.0, 200, "the survivor runs GC now");
    // The dead replica comes back: it does not take the lease from the living one.
    dead.restart().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(holders(&[dead, survivor]).await, vec![false, true]);
    let (code, body) = post(dead, "/admin/gc").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&format!("held by replica {other}")), "{body}");

    // The holder is paused (SIGSTOP) past its lease: the other takes over,
    // and the woken one refuses to act on its stale lease.
    let paused_pid = survivor.pid();
    let (woken, taker) = (survivor, &*dead);
    let stop = std::process::Command::new("kill").args(["-STOP", &paused_pid.to_string()]).status().expect("kill");
    assert!(stop.success());
    let t = Instant::now();
    while !holders(&[taker]).await[0] {
        assert!(t.elapsed() < TTL * 3, "no takeover from the paused holder");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cont = std::process::Command::new("kill").args(["-CONT", &paused_pid.to_string()]).status().expect("kill");
    assert!(cont.success());
    let before = woken.logs().matches("garbage collection finished").count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(holders(&[woken, taker]).await, vec![false, true], "the woken replica does not hold it");
    assert_eq!(
        woken.logs().matches("garbage collection finished").count(),
        before,
        "the woken replica ran no GC on its stale lease"
    );
    assert!(woken.logs().contains("lease lost"), "it noticed: {}", woken.logs_tail(3000));
}
