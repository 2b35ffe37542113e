//! A full disk, against the real binary with its data on a small tmpfs
//! (`mount -t tmpfs -o size=64m`; needs root: skipped with a message when
//! the mount fails):
//!
//! - a push that fills the disk gets `507` with the OCI body, its upload's
//!   space is given back at once, earlier blobs stay intact and the server
//!   goes on serving (and accepting pushes that fit);
//! - `storage.min_free` refuses pushes with the same `507` before the disk
//!   is full, and `/readyz` and `/admin/status` report the low free space;
//! - a pull-through miss bigger than the free space (the CNCF distribution
//!   registry as upstream) is delivered whole and verified, and not cached;
//!   two concurrent misses that fit one by one but not together fill the
//!   disk mid-spool and are both delivered whole.

mod common;
mod pull_through_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use cove_testkit::content::Pattern;
use cove_testkit::peers::distribution::Distribution;
use pull_through_support::{blob_path, cache_status, cove_config, UpstreamTable};

const MIB: u64 = 1 << 20;

/// A tmpfs mounted on a temp directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB, or says why not and returns `None`.
    fn mount(mib: u64) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("cove-tmpfs-").tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a {mib} MiB tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes as `df` reports them.
    fn available(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(self.path()).output().expect("df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df output: {text}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Cove with its data on `fs` and `min_free`, `upstreams` and `extra`
/// config text.
async fn start_on(fs: &Tmpfs, min_free: &str, upstreams: &[UpstreamTable<'_>], extra: &str) -> (Server, PathBuf) {
    let data = fs.path().join("data");
    let config = format!(
        "{}\n[storage]\nroot = \"{}\"\nmin_free = \"{min_free}\"\n{extra}",
        cove_config(upstreams),
        data.display()
    );
    let server =
        Server::start_with(ServerOptions { config: Some(config), omit_data_dir: true, ..Default::default() }).await;
    (server, data)
}

fn abs(base: &str, loc: &str) -> String {
    if loc.starts_with("http") {
        loc.to_owned()
    } else {
        format!("{base}{loc}")
    }
}

/// How a chunked push ended.
#[derive(Debug)]
enum Pushed {
    Done(String),
    /// The status and JSON body of the refused chunk, its upload URL, and
    /// how many bytes were accepted before.
    Refused {
        status: u16,
        body: serde_json::Value,
        upload: String,
        accepted: u64,
    },
}

/// Pushes `pattern` to `base` as `repo` in 1 MiB PATCH chunks (small enough
/// that a refused chunk's unread rest fits in the socket buffers, so the
/// client reads the answer), then the closing PUT.
async fn push_chunked(http: &reqwest::Client, base: &str, repo: &str, pattern: &Pattern) -> Pushed {
    let r = http.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.expect("POST");
    let status = r.status().as_u16();
    if status != 202 {
        let body = json(r).await;
        return Pushed::Refused { status, body, upload: String::new(), accepted: 0 };
    }
    let mut loc = abs(base, &header(&r, "location"));
    let upload = loc.clone();
    for i in 0..pattern.chunks() {
        let chunk = pattern.chunk(i);
        let start = i * Pattern::CHUNK as u64;
        let end = start + chunk.len() as u64 - 1;
        let r = http
            .patch(&loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{end}"))
            .body(chunk)
            .send()
            .await
            .expect("PATCH");
        let status = r.status().as_u16();
        if status != 202 {
            let body = json(r).await;
            return Pushed::Refused { status, body, upload, accepted: start };
        }
        loc = abs(base, &header(&r, "location"));
    }
    let digest = pattern.digest();
    let r = http.put(with_query(&loc, &format!("digest={digest}"))).send().await.expect("PUT");
    let status = r.status().as_u16();
    if status != 201 {
        let body = json(r).await;
        return Pushed::Refused { status, body, upload, accepted: pattern.total };
    }
    Pushed::Done(digest)
}

/// Checks a 507 body: `UNAVAILABLE`, saying storage is full.
fn assert_storage_full(status: u16, body: &serde_json::Value) {
    assert_eq!(status, 507, "{body}");
    let e = &body["errors"][0];
    assert_eq!(e["code"], "UNAVAILABLE", "{body}");
    assert!(e["message"].as_str().unwrap_or("").contains("storage is full"), "{body}");
}

async fn get_verified(server: &Server, repo: &str, pattern: &Pattern, digest: &str) {
    let r = server.http.get(server.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.expect("GET blob");
    assert_eq!(r.status(), 200, "GET {repo}@{digest}");
    assert_eq!(verify_stream_equals(r, pattern, 0).await, pattern.total, "{repo}@{digest} whole");
}

async fn metric(server: &Server, name: &str) -> f64 {
    let text = server.http.get(server.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn ready_text(server: &Server) -> (u16, String) {
    let r = server.http.get(server.url("/readyz")).send().await.expect("readyz");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_fills_the_disk_is_507_and_gives_the_space_back() {
    let Some(fs) = Tmpfs::mount(64) else { return };
    let (server, _data) = start_on(&fs, "0", &[], "").await;
    let small = Pattern::new(MIB + 123);
    let medium = Pattern::new(10 * MIB);
    let small_d = match push_chunked(&server.http, &server.base, "team/small", &small).await {
        Pushed::Done(d) => d,
        other => panic!("small push: {other:?}"),
    };
    let medium_d = match push_chunked(&server.http, &server.base, "team/medium", &medium).await {
        Pushed::Done(d) => d,
        other => panic!("medium push: {other:?}"),
    };
    let before = fs.available();

    let big = Pattern::new(100 * MIB);
    let t0 = std::time::Instant::now();
    let (status, body, upload, accepted) = match push_chunked(&server.http, &server.base, "team/big", &big).await {
        Pushed::Refused { status, body, upload, accepted } => (status, body, upload, accepted),
        Pushed::Done(_) => panic!("a 100 MiB push onto a 64 MiB disk succeeded"),
    };
    assert_storage_full(status, &body);
    let after = fs.available();
    report(&format!(
        "disk full: 100 MiB push onto a 64 MiB tmpfs (≈{} MiB free): 507 after {} MiB accepted ({} ms); free space {} MiB before, {} MiB after the 507",
        before / MIB,
        accepted / MIB,
        t0.elapsed().as_millis(),
        before / MIB,
        after / MIB
    ));
    // The refused upload's bytes were given back at once, its session ended.
    assert!(after + 2 * MIB >= before, "space not given back: {before} free before, {after} after");
    let r = server.http.get(&upload).send().await.expect("GET upload");
    assert_eq!(r.status(), 404, "the refused session is gone");
    // Earlier blobs intact, the server still serving and accepting pushes.
    get_verified(&server, "team/small", &small, &small_d).await;
    get_verified(&server, "team/medium", &medium, &medium_d).await;
    let again = Pattern::new(2 * MIB);
    match push_chunked(&server.http, &server.base, "team/again", &again).await {
        Pushed::Done(d) => get_verified(&server, "team/again", &again, &d).await,
        other => panic!("a push that fits after the 507: {other:?}"),
    }
    assert_eq!(ready_text(&server).await.0, 200);
    assert!(metric(&server, "cove_storage_full_total").await >= 1.0);
    assert!(server.logs().contains("storage is full: write refused with 507"), "warn log line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_free_refuses_pushes_before_the_disk_is_full_and_readyz_says_so() {
    let Some(fs) = Tmpfs::mount(64) else { return };
    let (server, _data) = start_on(&fs, "40MiB", &[], "").await;
    let ok = Pattern::new(8 * MIB);
    match push_chunked(&server.http, &server.base, "team/ok", &ok).await {
        Pushed::Done(_) => {}
        other => panic!("a push above the floor: {other:?}"),
    }
    let big = Pattern::new(30 * MIB);
    let (status, body, accepted) = match push_chunked(&server.http, &server.base, "team/big", &big).await {
        Pushed::Refused { status, body, accepted, .. } => (status, body, accepted),
        Pushed::Done(_) => panic!("a push through the 40 MiB floor succeeded"),
    };
    assert_storage_full(status, &body);
    let free = fs.available();
    assert!(free > 30 * MIB, "refused by the floor, not by a full disk: {free} bytes free");
    report(&format!(
        "min_free 40MiB on a 64 MiB tmpfs: a 30 MiB push refused with 507 after {} MiB, {} MiB still free",
        accepted / MIB,
        free / MIB
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await; // the cached measurement expires
    assert_eq!(ready_text(&server).await, (200, "ready\n".to_owned()), "space given back: above the floor again");

    // Fill the disk to below the floor from outside Cove.
    let filler = fs.path().join("filler");
    let n = (fs.available() - 30 * MIB) as usize;
    std::fs::write(&filler, vec![1u8; n]).expect("filler");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the cached measurement expires
    let (status, text) = ready_text(&server).await;
    assert_eq!(status, 200, "pulls still served: {text}");
    assert!(text.contains("low free space") && text.contains("min_free"), "{text}");
    let st = json(server.http.get(server.url("/admin/status")).send().await.expect("status")).await;
    assert_eq!(st["storage_space"]["low"], true, "{st}");
    assert_eq!(st["storage_space"]["min_free"], 40 * MIB, "{st}");
    let r = server.http.post(server.url("/v2/team/x/blobs/uploads/")).send().await.expect("POST");
    let status = r.status().as_u16();
    assert_storage_full(status, &json(r).await);
    std::fs::remove_file(&filler).expect("rm filler");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ready_text(&server).await, (200, "ready\n".to_owned()));
}

/// Pushes `pattern` to distribution as `repo`.
async fn push_upstream(dist: &Distribution, repo: &str, pattern: &Pattern) -> String {
    match push_chunked(&http_client(), &dist.url(), repo, pattern).await {
        Pushed::Done(d) => d,
        other => panic!("push to distribution: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_misses_without_room_are_delivered_whole_and_not_cached() {
    let Some(fs) = Tmpfs::mount(64) else { return };
    let dist = Distribution::start(None, None).await;
    let big = Pattern::new(100 * MIB);
    let big_d = push_upstream(&dist, "library/big", &big).await;
    let a = Pattern::new(40 * MIB);
    let a_d = push_upstream(&dist, "library/a", &a).await;
    let b = Pattern::new(40 * MIB);
    let b_d = push_upstream(&dist, "library/b", &b).await;
    let table = UpstreamTable { host: "docker.io", url: dist.url(), extra: "" };
    let (server, data) = start_on(&fs, "0", &[table], "").await;

    // Bigger than the whole disk: relayed from the start.
    let t0 = std::time::Instant::now();
    let r = server.http.get(server.url(&format!("/v2/docker.io/library/big/blobs/{big_d}"))).send().await.expect("GET");
    assert_eq!((r.status().as_u16(), cache_status(&r)), (200, "miss".to_owned()));
    assert_eq!(verify_stream_equals(r, &big, 0).await, big.total, "the 100 MiB miss arrived whole");
    let whole = t0.elapsed();
    assert!(!blob_path(&data, &big_d).exists(), "not cached");

    // Two misses of 40 MiB each fit alone but not together: the disk fills
    // mid-spool and the rest is relayed. Both arrive whole.
    let get = |repo: &'static str, d: String| {
        let (http, url) = (server.http.clone(), server.url(&format!("/v2/docker.io/library/{repo}/blobs/{d}")));
        async move { http.get(url).send().await.expect("GET") }
    };
    let (ra, rb) = tokio::join!(get("a", a_d.clone()), get("b", b_d.clone()));
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    let (na, nb) = tokio::join!(verify_stream_equals(ra, &a, 0), verify_stream_equals(rb, &b, 0));
    assert_eq!((na, nb), (a.total, b.total), "both concurrent misses arrived whole");
    let cached = [&a_d, &b_d].iter().filter(|d| blob_path(&data, d).exists()).count();
    assert!(cached <= 1, "two 40 MiB blobs cannot both be cached on 64 MiB");
    let uncached = metric(&server, "cove_cache_uncached_misses_total").await;
    assert!(uncached >= 2.0, "uncached misses counted: {uncached}");
    report(&format!(
        "disk full: a 100 MiB pull-through miss on a 64 MiB tmpfs delivered whole and verified in {} ms, not cached; \
         two concurrent 40 MiB misses both whole, {cached} of them cached; cove_cache_uncached_misses_total {uncached}",
        whole.as_millis()
    ));
    let logs = server.logs();
    let relays: Vec<&str> = logs.lines().filter(|l| l.contains("no room to spool the blob")).collect();
    // One for the 100 MiB miss, one per concurrent miss not cached.
    assert_eq!(relays.len(), 1 + 2 - cached, "a warn line per relayed miss: {relays:?}");
    assert!(
        relays.iter().any(|l| !l.contains("spooled=0")),
        "a miss that ran out of room mid-spool (relayed from a non-zero offset): {relays:?}"
    );
    // The spool was given back: nothing left in flight on the disk.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spool: Vec<_> = std::fs::read_dir(data.join("spool")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(spool.is_empty(), "spool files left: {spool:?}");
}

/// Pulls `repo:v1` and its blobs through Cove, verified.
async fn pull_image(s: &Server, repo: &str, img: &Image) {
    let r = s.manifest("GET", repo, "v1").await;
    assert_eq!(r.status(), 200, "manifest of {repo}");
    assert_eq!(&r.bytes().await.expect("body")[..], &img.manifest[..]);
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let d = sha256_digest(blob);
        let r = s.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status(), 200, "blob of {repo}");
        assert_eq!(sha256_digest(&r.bytes().await.expect("blob")), d);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_min_free_retention_evicts_the_least_recently_pulled_cached_image_never_a_private_one() {
    let Some(fs) = Tmpfs::mount(64) else { return };
    let dist = Distribution::start(None, None).await;
    let imgs: Vec<Image> = (0..3).map(|_| Image::from_layers(vec![random_bytes(6 * MIB as usize)])).collect();
    for (i, img) in imgs.iter().enumerate() {
        push_image_to(&dist.url(), &format!("lib/c{i}"), "v1", img).await;
    }
    let table = UpstreamTable { host: "upstream.test", url: dist.url(), extra: "tag_ttl = \"1h\"" };
    let extra = "[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n[retention]\ninterval = \"1h\"\n";
    let (s, data) = start_on(&fs, "20MiB", &[table], extra).await;
    let repo = |i: usize| format!("upstream.test/lib/c{i}");
    for (i, img) in imgs.iter().enumerate() {
        pull_image(&s, &repo(i), img).await;
    }
    for img in &imgs {
        let p = blob_path(&data, &sha256_digest(&img.layers[0]));
        for _ in 0..200 {
            if p.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(p.exists(), "cached: {}", p.display());
    }
    // A private image, pushed before the cached ones are pulled again.
    let private = Image::from_layers(vec![random_bytes(6 * MIB as usize)]);
    s.push_blob("team/app", &private.config).await;
    s.push_blob("team/app", &private.layers[0]).await;
    assert_eq!(s.put_manifest("team/app", "v1", OCI_MANIFEST, &private.manifest).await.status(), 201);
    // c1 is pulled least recently.
    for i in [1usize, 2, 0] {
        assert_eq!(s.manifest("GET", &repo(i), "v1").await.status(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Leave 3 MiB less than the 20 MiB floor.
    let filler = fs.path().join("filler");
    let n = (fs.available() - 17 * MIB) as usize;
    std::fs::write(&filler, vec![1u8; n]).expect("filler");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(ready_text(&s).await.1.contains("low free space"));
    let r = s.req("POST", "/admin/retention").send().await.expect("retention");
    assert_eq!(r.status(), 200);
    let report = json(r).await;
    let evicted: Vec<(String, String)> = report["evicted"]
        .as_array()
        .expect("evicted")
        .iter()
        .map(|e| (e["repository"].as_str().unwrap_or("").to_owned(), e["reason"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        evicted,
        vec![(repo(1), "min_free".to_owned())],
        "only the least recently pulled cached image: {report}"
    );
    assert!(!blob_path(&data, &sha256_digest(&imgs[1].layers[0])).exists(), "its layer swept");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let free = fs.available();
    assert!(free >= 20 * MIB, "back above the floor: {free}");
    assert_eq!(ready_text(&s).await, (200, "ready\n".to_owned()));
    report_line(free);
    // The private image and the other cached ones are intact.
    pull_image(&s, "team/app", &private).await;
    pull_image(&s, &repo(0), &imgs[0]).await;
    pull_image(&s, &repo(2), &imgs[2]).await;
}

fn report_line(free: u64) {
    report(&format!(
        "min_free 20MiB, 3 MiB short: retention evicted the least recently pulled cached image (6 MiB) and nothing else; {} MiB free after, private image intact",
        free / MIB
    ));
}
