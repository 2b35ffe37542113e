//! Configuration reload end to end (issue 7): the real `cove` binary, its
//! config file rewritten by the test, then `POST /admin/reload`, `kill -HUP`
//! or `cove reload`. A valid file is applied without a restart (same PID),
//! an invalid one is rejected with the reason (response, log, metric) and
//! the old behaviour kept; a download in progress survives a reload; an
//! upstream added by reload serves pulls from a real distribution registry.

mod common;
mod pull_through_support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;

const NO_PRESETS: &str = "[upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n\
                          [upstreams.\"quay.io\"]\nenabled = false\n";

/// A config trusting only `networks` (127.0.0.0/8 lets the test in).
fn config(networks: &str, extra: &str) -> String {
    format!("[auth]\ntrusted_networks = [\"{networks}\"]\n\n{NO_PRESETS}\n{extra}")
}

fn write_config(s: &Server, text: &str) {
    std::fs::write(s.tmp.path().join("cove.toml"), text).expect("rewrite config");
}

async fn reload(s: &Server) -> (u16, serde_json::Value) {
    let r = s.req("POST", "/admin/reload").send().await.expect("POST /admin/reload");
    let status = r.status().as_u16();
    (status, r.json().await.expect("reload answers JSON"))
}

async fn v2_status(s: &Server) -> u16 {
    s.get("/v2/").await.status().as_u16()
}

async fn metric(s: &Server, name: &str) -> f64 {
    let text = s.get("/metrics").await.text().await.expect("metrics text");
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

fn alive(pid: u32) -> bool {
    Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success())
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_reload_applies_and_invalid_reload_keeps_the_old_config() {
    let s = Server::start_with(ServerOptions { config: Some(config("10.0.0.0/8", "")), ..Default::default() }).await;
    let pid = s.pid();
    assert_eq!(v2_status(&s).await, 403, "127.0.0.1 is outside the trusted networks");

    // Valid: trust loopback. Applied without restart.
    write_config(&s, &config("127.0.0.0/8", ""));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["changed"].as_array().expect("changed").iter().any(|c| c == "auth"), "{body}");
    assert_eq!(v2_status(&s).await, 200, "allowed after the reload");
    assert_eq!(s.pid(), pid);
    assert!(alive(pid), "same process");
    assert!(s.logs().contains("configuration reloaded"), "info line:\n{}", s.logs_tail(2000));
    assert!(metric(&s, "cove_config_last_reload_success_timestamp_seconds").await > 1.6e9);

    // Parse error: unknown key. Rejected; old behaviour kept.
    let before_err = metric(&s, "cove_config_reloads_total{result=\"error\"}").await;
    write_config(&s, &format!("[server]\nbogus_key = 1\n{}", config("10.0.0.0/8", "")));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"].to_string().contains("bogus_key"), "{body}");
    assert_eq!(v2_status(&s).await, 200, "old config kept");
    // Validation error: a bad duration and a half TLS pair, both named.
    write_config(&s, &config("10.0.0.0/8", "[gc]\ninterval = \"soon\"\n[server]\ntls_cert = \"/nonexistent.pem\"\n"));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 400, "{body}");
    let errors = body["errors"].to_string();
    assert!(errors.contains("gc.interval") && errors.contains("server.tls_key"), "{errors}");
    assert_eq!(v2_status(&s).await, 200, "old config kept");
    let logs = s.logs();
    assert!(logs.contains("reload rejected") && logs.contains("bogus_key") && logs.contains("gc.interval"), "{logs}");
    assert_eq!(metric(&s, "cove_config_reloads_total{result=\"error\"}").await, before_err + 2.0);
    assert_eq!(metric(&s, "cove_config_reloads_total{result=\"ok\"}").await, 1.0);

    // Keys that need a restart are reported; the rest is applied.
    write_config(&s, &config("10.0.0.0/8", "[storage]\nupload_ttl = \"2h\"\n"));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["needs_restart"].to_string().contains("storage"), "{body}");
    assert_eq!(v2_status(&s).await, 403, "auth applied along with a restart-only change");
    assert!(s.logs().contains("needs a restart"));

    // SIGHUP does the same.
    write_config(&s, &config("127.0.0.0/8", ""));
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill").success());
    wait_for("SIGHUP reload", async || v2_status(&s).await == 200).await;
    assert!(alive(pid));

    // `cove reload` calls the admin endpoint.
    write_config(&s, &config("10.0.0.0/8", ""));
    let out =
        Command::new(cove_bin()).args(["reload", "--addr", &s.addr.to_string()]).output().expect("run cove reload");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("configuration reloaded") && stdout.contains("auth"), "{stdout}");
    assert_eq!(v2_status(&s).await, 403);
    write_config(&s, "[server]\nnope = true\n");
    let out =
        Command::new(cove_bin()).args(["reload", "--addr", &s.addr.to_string()]).output().expect("run cove reload");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[tokio::test(flavor = "multi_thread")]
async fn download_in_progress_survives_reloads() {
    let s = Server::start_with(ServerOptions { config: Some(config("127.0.0.0/8", "")), ..Default::default() }).await;
    let data = random_bytes(48 << 20);
    let digest = s.push_blob("big/blob", &data).await;
    let resp = s.get(&format!("/v2/big/blob/blobs/{digest}")).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut hasher = FastSha256::new();
    let mut got = 0usize;
    let mut reloads = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body chunk");
        got += chunk.len();
        hasher.update(&chunk);
        // Mid-download: reload twice (admin endpoint and SIGHUP) and slow down.
        if reloads == 0 && got > 4 << 20 {
            write_config(&s, &config("127.0.0.0/8\", \"10.0.0.0/8", ""));
            let (status, body) = reload(&s).await;
            assert_eq!(status, 200, "{body}");
            reloads += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else if reloads == 1 && got > 20 << 20 {
            write_config(&s, &config("127.0.0.0/8", ""));
            assert!(Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().expect("kill").success());
            reloads += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(reloads, 2);
    assert_eq!(got, data.len());
    assert_eq!(hasher.finish(), digest, "blob intact across reloads");
    wait_for("SIGHUP reload logged", async || s.logs().matches("configuration reloaded").count() >= 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_adds_an_upstream() {
    let dist = Distribution::start(None, None).await;
    let layout_dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(layout_dir.path());
    let img = layout.add_image("v1", &[300_000, 5_000]);
    skopeo_push(layout_dir.path(), "v1", &format!("{}/library/app:v1", dist.authority()), None);

    let s = Server::start_with(ServerOptions { config: Some(config("127.0.0.0/8", "")), ..Default::default() }).await;
    let path = "/v2/upstream.test/library/app/manifests/v1";
    let before = s.req("GET", path).header("accept", ACCEPT_ALL).send().await.expect("GET");
    assert_eq!(before.status(), 404, "no such upstream yet");
    let pushed = dist.count("/v2/library/app/");

    let extra = format!("[upstreams.\"upstream.test\"]\nurl = \"{}\"\n", dist.url());
    write_config(&s, &config("127.0.0.0/8", &extra));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["changed"].to_string().contains("added: upstream.test"), "{body}");

    let m = s.req("GET", path).header("accept", ACCEPT_ALL).send().await.expect("GET");
    assert_eq!(m.status(), 200);
    assert_eq!(header(&m, "docker-content-digest"), img.manifest.digest);
    for layer in &img.layers {
        let b = s.get(&format!("/v2/upstream.test/library/app/blobs/{}", layer.digest)).await;
        assert_eq!(b.status(), 200);
        let bytes = b.bytes().await.expect("blob");
        assert_eq!(sha256_digest(&bytes), layer.digest);
    }
    assert!(dist.count("/v2/library/app/") > pushed, "fetched from the upstream");

    // Removing it again: the namespace is no longer routed upstream.
    write_config(&s, &config("127.0.0.0/8", ""));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["changed"].to_string().contains("removed: upstream.test"), "{body}");
    let after = s.req("GET", "/v2/upstream.test/library/other/manifests/v1").send().await.expect("GET");
    assert_eq!(after.status(), 404);
}

/// `[retention]` is reloadable: a tag policy added by reload is what the
/// next retention run applies (before the reload the same run removes nothing).
#[tokio::test]
async fn reload_applies_a_new_retention_policy() {
    let base = config("127.0.0.0/8", "[gc]\ngrace = \"1s\"\ninterval = \"1h\"\n");
    let s = Server::start_with(ServerOptions { config: Some(base.clone()), ..Default::default() }).await;
    for i in 0..3 {
        s.push_image("ci/app", &format!("t{i}"), 1).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the grace period
    let run = |s: &Server| {
        let r = s.req("POST", "/admin/retention").send();
        async move {
            let r = r.await.expect("POST /admin/retention");
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.expect("retention JSON")
        }
    };
    let before = run(&s).await;
    assert_eq!(before["tags_removed"].as_array().map(Vec::len), Some(0), "no policy yet: {before}");

    write_config(&s, &format!("{base}[[retention.tags]]\nrepository = \"ci/*\"\nkeep_last = 1\n"));
    let (status, body) = reload(&s).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["changed"].as_array().expect("changed").iter().any(|c| c == "retention"), "{body}");
    let after = run(&s).await;
    let mut removed: Vec<&str> =
        after["tags_removed"].as_array().expect("tags_removed").iter().filter_map(|t| t.as_str()).collect();
    removed.sort();
    assert_eq!(removed, ["ci/app:t0", "ci/app:t1"], "{after}");
    let tags: serde_json::Value = s.get("/v2/ci/app/tags/list").await.json().await.expect("tags");
    assert_eq!(tags["tags"], serde_json::json!(["t2"]));
}
