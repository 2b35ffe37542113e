//! Cove behind a real reverse proxy (Debian's `caddy`) on the same host,
//! the seed deployment: who gets in with the default network trust, large
//! pushes and pulls through the proxy, containerd through it as a mirror,
//! and forged forwarding headers from peers that are not trusted proxies.
//!
//! Loopback stands in for the network: 127.0.0.1 is "the LAN", and a client
//! bound to 127.0.0.2 is "the internet" where Cove's `trusted_networks` is
//! narrowed to 127.0.0.1/32.

mod common;
mod pull_through_support;

use std::time::Instant;

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::caddy::Caddy;
use cove_testkit::peers::containerd::Containerd;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::{skopeo_pull, skopeo_push};
use pull_through_support::{cove_config, UpstreamTable};

async fn status(r: reqwest::RequestBuilder) -> (u16, String) {
    let r = r.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.text().await.unwrap_or_default())
}

fn cove_with(config: &str) -> ServerOptions {
    ServerOptions { config: Some(config.to_owned()), ..ServerOptions::default() }
}

/// The default network trust behind a local Caddy: the client Caddy forwards
/// for is judged, not Caddy's loopback address; a client's own `Forwarded`
/// header cannot launder it; forged headers sent straight to Cove by a peer
/// that is not a trusted proxy only ever refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_behind_a_local_proxy_is_what_trusted_networks_judges() {
    // Defaults except that only 127.0.0.1 is "inside" (trusted_proxies default).
    let cove = Server::start_with(cove_with("[auth]\ntrusted_networks = [\"127.0.0.1/32\"]\n")).await;
    let caddy = Caddy::start(&cove.addr.to_string(), "");
    let inside = client_from("127.0.0.1");
    let outside = client_from("127.0.0.2");
    let (s, b) = status(inside.get(caddy.url("/v2/"))).await;
    assert_eq!(s, 200, "a client inside trusted_networks through Caddy: {b}");
    let (s, b) = status(inside.post(caddy.url("/v2/proxy/app/blobs/uploads/"))).await;
    assert_eq!(s, 202, "and it may push: {b}");
    for (method, path) in [("GET", "/v2/"), ("GET", "/v2/_catalog"), ("POST", "/v2/proxy/app/blobs/uploads/")] {
        let req = outside.request(method.parse().expect("method"), caddy.url(path));
        let (s, b) = status(req).await;
        assert_eq!(s, 403, "{method} {path} from outside through Caddy: {b}");
        assert!(b.contains("DENIED") && b.contains("127.0.0.2") && b.contains("auth.trusted_networks"), "{b}");
    }
    // Caddy passes a client's own `Forwarded` through untouched: it must not
    // launder the address Caddy puts in X-Forwarded-For.
    let (s, b) = status(outside.get(caddy.url("/v2/")).header("forwarded", "for=127.0.0.1")).await;
    assert_eq!(s, 403, "Forwarded from the client itself: {b}");
    // Caddy replaces a client's X-Forwarded-For with what it saw.
    let (s, b) = status(outside.get(caddy.url("/v2/")).header("x-forwarded-for", "127.0.0.1")).await;
    assert_eq!(s, 403, "X-Forwarded-For from the client itself: {b}");
    let logs = cove.logs();
    assert!(logs.contains("trusted_proxies=127.0.0.0/8, ::1/128"), "start-up log names the trusted proxies");
    drop(caddy);
    drop(cove);

    // All defaults (every private range trusted). The case: an
    // internet client's address arriving from loopback is refused, whether
    // straight from a local proxy or through a chain (Caddy trusting the
    // hop before it and appending to its X-Forwarded-For).
    let cove = Server::start().await;
    let local = client_from("127.0.0.1");
    let (s, b) = status(local.get(cove.url("/v2/")).header("x-forwarded-for", "203.0.113.9")).await;
    assert_eq!(s, 403, "X-Forwarded-For 203.0.113.9 from a local proxy: {b}");
    assert!(b.contains("203.0.113.9") && b.contains("auth.trusted_networks"), "{b}");
    let (s, b) = status(local.put(cove.url("/v2/proxy/app/manifests/v1")).header("forwarded", "for=203.0.113.9")).await;
    assert_eq!(s, 403, "Forwarded for=203.0.113.9 from a local proxy, on a push: {b}");
    let caddy = Caddy::start(&cove.addr.to_string(), "trusted_proxies 127.0.0.0/8");
    let (s, b) = status(local.get(caddy.url("/v2/")).header("x-forwarded-for", "203.0.113.9")).await;
    assert_eq!(s, 403, "203.0.113.9 forwarded by a proxy chain: {b}");
    let (s, b) = status(local.get(caddy.url("/v2/")).header("x-forwarded-for", "192.168.7.7")).await;
    assert_eq!(s, 200, "a LAN client forwarded by a proxy chain: {b}");
    let (s, b) = status(local.get(caddy.url("/v2/"))).await;
    assert_eq!(s, 200, "a local client through Caddy: {b}");
    drop(caddy);
    drop(cove);

    // A proxy on another host that is missing from trusted_proxies (here:
    // 127.0.0.2, trusted by network but not a proxy) cannot open the registry
    // by forwarding for an outsider, and a forged header from a peer that is
    // no proxy never admits anything.
    let cove = Server::start_with(cove_with("[auth]\ntrusted_proxies = [\"127.0.0.1/32\"]\n")).await;
    let other = client_from("127.0.0.2");
    let (s, b) = status(other.get(cove.url("/v2/"))).await;
    assert_eq!(s, 200, "127.0.0.2 is inside trusted_networks: {b}");
    let (s, b) = status(other.get(cove.url("/v2/")).header("x-forwarded-for", "203.0.113.9")).await;
    assert_eq!(s, 403, "forged X-Forwarded-For from a peer that is no proxy: {b}");
    assert!(b.contains("auth.trusted_proxies") && b.contains("203.0.113.9"), "the refusal says what to set: {b}");
    let (s, b) = status(other.get(cove.url("/v2/")).header("forwarded", "for=\"[2001:db8::1]:80\"")).await;
    assert_eq!(s, 403, "forged Forwarded from a peer that is no proxy: {b}");
    // X-Forwarded-Host from a peer that is no proxy does not steer Location.
    let r = other
        .post(cove.url("/v2/proxy/app/blobs/uploads/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(!loc.contains("evil.example"), "Location from an untrusted peer's X-Forwarded-Host: {loc}");
}

/// skopeo pushes and pulls a 200 MiB layer through Caddy (Location headers
/// name Caddy, not Cove's own address), and containerd pulls a cached
/// upstream image with a hosts.toml mirror that points at Caddy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_push_and_pull_through_caddy() {
    let dist = Distribution::start(None, None).await;
    let tables = [UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }];
    let cove = Server::start_with(cove_with(&cove_config(&tables))).await;
    let caddy = Caddy::start(&cove.addr.to_string(), "");
    let work = tempfile::tempdir().expect("tmp");

    // Locations come back pointing at the proxy the client used.
    let r = http_client().post(caddy.url("/v2/myorg/big/blobs/uploads/")).send().await.expect("post");
    assert_eq!(r.status(), 202);
    let loc = header(&r, "location");
    assert!(
        loc.starts_with(&format!("http://{}/v2/myorg/big/blobs/uploads/", caddy.authority()))
            || loc.starts_with("/v2/myorg/big/blobs/uploads/"),
        "Location through Caddy: {loc}"
    );
    assert!(!loc.contains(&cove.addr.to_string()), "Location must not name Cove behind the proxy: {loc}");

    let mut layout = Layout::new(&work.path().join("src"));
    let big = layout.add_image("v1", &[200 << 20]);
    let t0 = Instant::now();
    skopeo_push(&layout.dir, "v1", &format!("{}/myorg/big:v1", caddy.authority()), None);
    let pushed = t0.elapsed();
    let out = work.path().join("out");
    let t0 = Instant::now();
    let pulled = skopeo_pull(&format!("{}/myorg/big:v1", caddy.authority()), &out, "v1", false);
    let pull_time = t0.elapsed();
    assert!(pulled.is_ok(), "skopeo pull through Caddy: {pulled:?}\n--- caddy ---\n{}", caddy.logs());
    assert_eq!(oci_layout_manifest_digest(&out, "v1"), big.manifest.digest, "same manifest digest");
    let layer = &big.layers[0];
    assert_eq!(sha256_digest(&oci_layout_blob(&out, &layer.digest)), layer.digest, "200 MiB layer intact");
    assert_blobs_verified(&cove.data_dir);
    report(&format!(
        "proxy: skopeo through Caddy, 200 MiB layer: push {} ms, pull {} ms",
        pushed.as_millis(),
        pull_time.as_millis()
    ));

    // containerd, mirror mode through Caddy (`?ns=docker.io` passes through).
    let mut up = Layout::new(&work.path().join("up"));
    let app = up.add_image("v1", &[64 * 1024]);
    skopeo_push(&up.dir, "v1", &format!("{}/library/app:v1", dist.authority()), None);
    let hosts = work.path().join("certs.d");
    let dir = hosts.join("docker.io");
    std::fs::create_dir_all(&dir).expect("hosts dir");
    let dead = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"{dead}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", caddy.url("")),
    )
    .expect("hosts.toml");
    let ctd = Containerd::start();
    let out = ctd.pull(&hosts, "docker.io/library/app:v1");
    assert!(
        out.status.success(),
        "ctr pull through Caddy → Cove: {}{}\n--- caddy ---\n{}\n--- cove ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        caddy.logs(),
        cove.logs_tail(4000)
    );
    let ls = String::from_utf8_lossy(&ctd.ctr(&["images", "ls"]).stdout).into_owned();
    assert!(ls.contains(&app.manifest.digest), "containerd has upstream's digest:\n{ls}");
    assert!(dist.count("/v2/library/app/manifests/v1") >= 1, "fetched from the upstream once");
    let logs = cove.logs();
    assert!(
        logs.lines().any(|l| l.contains("/v2/library/app/manifests/v1") && l.contains("docker.io")),
        "via Cove, mirror form (?ns=docker.io):\n{logs}"
    );
}
