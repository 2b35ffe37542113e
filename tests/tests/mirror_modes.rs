//! The cache behind every client's mirror mode: Docker Engine's
//! `registry-mirrors` (unqualified Docker Hub names, served in Docker Hub
//! mirror mode), and podman with only the `registries.conf` drop-in written
//! by `cove mirror-config podman`. The upstreams are real distribution
//! registries; nothing can bypass Cove (there is no route to the internet,
//! and each test checks the upstream's access log and Cove's store).

mod common;
mod pull_through_support;

use std::process::Command;

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::docker::DockerEngine;
use cove_testkit::peers::podman::Podman;
use cove_testkit::peers::skopeo::skopeo_push;
use pull_through_support::{cove_config, stored_manifests, UpstreamTable};

fn mirror_config(args: &[&str], config: &std::path::Path) -> String {
    let out = Command::new(cove_bin())
        .arg("mirror-config")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run cove");
    assert!(out.status.success(), "cove mirror-config {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

async fn start_cove(config: String) -> Server {
    Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() }).await
}

/// Docker Engine with `registry-mirrors` pointing at Cove (the fragment
/// `cove mirror-config docker` prints) pulls `hello:v1`: Docker asks for
/// `/v2/library/hello/…` with no `ns`, Cove in Docker Hub mirror mode serves
/// it from its docker.io upstream and caches it under
/// `docker.io/library/hello`. A private push under a declared prefix still
/// works, and a push of an unqualified name outside it is refused with a
/// message naming the mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_pulls_docker_hub_names_through_cove() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let img = layout.add_image("v1", &[64 * 1024]);
    skopeo_push(&layout.dir, "v1", &format!("{}/library/hello:v1", dist.authority()), None);

    let mut cfg = cove_config(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }]);
    cfg.push_str("\n[mirror]\ndefault_upstream = \"docker.io\"\nprivate_prefixes = [\"myorg\"]\n");
    let cove = start_cove(cfg).await;
    let fragment = mirror_config(&["docker", "--url", &cove.base], &cove.tmp.path().join("cove.toml"));
    let daemon: serde_json::Value = serde_json::from_str(&fragment).expect("daemon.json fragment is JSON");
    assert_eq!(daemon["registry-mirrors"][0], serde_json::json!(cove.base.trim_end_matches('/')));

    let engine = DockerEngine::start(daemon);
    let out = engine.docker(&["pull", "hello:v1"]);
    assert!(
        out.status.success(),
        "docker pull through Cove failed:\n{}{}\n--- dockerd ---\n{}\n--- cove ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        engine.logs(),
        cove.logs_tail(4000)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&img.manifest.digest), "docker reports the upstream digest: {stdout}");
    // What Docker sent: unqualified names, no ns.
    let logs = cove.logs();
    assert!(logs.contains("/v2/library/hello/manifests/v1"), "Docker asked for the unqualified name:\n{logs}");
    assert!(
        dist.count("/v2/library/hello/manifests/v1") >= 1,
        "the upstream served the manifest:\n{}",
        dist.all_requests()
    );
    assert!(
        stored_manifests(&cove.data_dir, "docker.io/library/hello").contains(&img.manifest.digest),
        "Cove cached it under docker.io/library/hello"
    );
    // Cached: a second engine pulls it without a new upstream blob GET.
    let layer_gets = dist.count(&format!("/blobs/{}", img.layers[0].digest));
    let engine2 = DockerEngine::start(serde_json::json!({ "registry-mirrors": [cove.base.trim_end_matches('/')] }));
    let out = engine2.docker(&["pull", "hello:v1"]);
    assert!(out.status.success(), "second pull: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(dist.count(&format!("/blobs/{}", img.layers[0].digest)), layer_gets, "layer served from the cache");

    // Private names: under a declared prefix they are Cove's own; outside it
    // an unqualified name is Docker Hub's and pull-only.
    cove.push_image("myorg/app", "v1", 1).await;
    let r = cove.manifest("GET", "myorg/app", "v1").await;
    assert_eq!(r.status(), 200, "private repository under a declared prefix");
    let r = cove.req("POST", "/v2/someone/app/blobs/uploads/").send().await.expect("post");
    let body = assert_error(r, 403, "DENIED", "push outside the private prefixes").await;
    assert!(body.to_string().contains("mirror.private_prefixes"), "the refusal names the setting: {body}");
}

/// podman with only the drop-in from `cove mirror-config podman` as its
/// registries.conf pulls `docker.io/library/x:v1` and `ghcr.io/owner/y:v1`
/// by their own names and gets them through Cove (the origins are
/// unreachable: a success can only come from the mirror).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_the_registries_conf_drop_in() {
    let dist = Distribution::start(None, None).await;
    let work = tempfile::tempdir().expect("tmp");
    let mut layout = Layout::new(&work.path().join("src"));
    let x = layout.add_image("x1", &[32 * 1024]);
    let y = layout.add_image("y1", &[32 * 1024]);
    skopeo_push(&layout.dir, "x1", &format!("{}/library/x:v1", dist.authority()), None);
    skopeo_push(&layout.dir, "y1", &format!("{}/owner/y:v1", dist.authority()), None);
    let cove = start_cove(cove_config(&[
        UpstreamTable { host: "docker.io", url: dist.url(), extra: "" },
        UpstreamTable { host: "ghcr.io", url: dist.url(), extra: "" },
    ]))
    .await;
    let dropin = mirror_config(&["podman", "--url", &cove.base], &cove.tmp.path().join("cove.toml"));
    let authority = cove.base.trim_start_matches("http://").trim_end_matches('/');
    assert!(dropin.contains(&format!("location = \"{authority}/docker.io\"")), "{dropin}");

    let podman = Podman::new();
    std::fs::write(podman.dir.path().join("registries.conf"), &dropin).expect("write drop-in");
    for (reference, digest, upstream_path) in [
        ("docker.io/library/x:v1", &x.manifest.digest, "/v2/library/x/manifests/v1"),
        ("ghcr.io/owner/y:v1", &y.manifest.digest, "/v2/owner/y/manifests/v1"),
    ] {
        let out = podman.cmd().args(["pull", "--quiet", reference]).output().expect("podman");
        assert!(
            out.status.success(),
            "podman pull {reference}: {}\n--- cove ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            cove.logs_tail(3000)
        );
        assert!(dist.count(upstream_path) >= 1, "{reference} came from the upstream via Cove");
        let inspect =
            podman.cmd().args(["image", "inspect", "--format", "{{.Digest}}", reference]).output().expect("inspect");
        assert_eq!(String::from_utf8_lossy(&inspect.stdout).trim(), digest.as_str(), "{reference}");
    }
    assert!(stored_manifests(&cove.data_dir, "docker.io/library/x").contains(&x.manifest.digest));
    assert!(stored_manifests(&cove.data_dir, "ghcr.io/owner/y").contains(&y.manifest.digest));
    let logs = cove.logs();
    assert!(logs.contains("/v2/docker.io/library/x/manifests/v1"), "podman used the origin-path prefix:\n{logs}");
}
