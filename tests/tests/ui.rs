//! The web interface (issue 15) end to end: the real `cove` binary, images
//! pushed with skopeo and over the registry API, a real distribution
//! registry as the upstream of the pull-through cache, and a real browser
//! (Debian's headless chromium, driven over WebDriver by chromedriver).
//! Screenshots of the main pages, at desktop and phone width, are written
//! to `<target>/ui-screenshots/`.
//!
//! A missing chromium, chromedriver, skopeo or docker-registry fails the
//! test with its install hint, like every other peer.

mod common;
mod pull_through_support;
mod ui_support;

use std::path::PathBuf;

use serde_json::json;

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;
use pull_through_support::{start_cove, UpstreamTable};
use ui_support::{Browser, ChromeDriver};

/// Text that would run script if a page spliced it into HTML unescaped.
const XSS: &str = r#""><img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>"#;

fn screenshots() -> PathBuf {
    let d = target_dir().join("ui-screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

/// Serves `body` as an HTML page on another loopback origin; returns its URL.
async fn attacker_page(body: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let page = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let _ = c.write_all(page.as_bytes()).await;
        }
    });
    url
}

/// A dashboard figure of the docker.io upstream.
async fn metric(b: &Browser, k: &str) -> String {
    b.text(&b.find(&format!("[data-upstream=\"docker.io\"][data-metric={k}]")).await).await
}

/// Asserts no script injected into the page ran: no global set, no dialog.
async fn assert_no_script_ran(b: &Browser, what: &str) {
    assert_eq!(b.alert_text().await, None, "{what}: an alert opened");
    let v = b.eval("return typeof window.__xss;").await;
    assert_eq!(v, json!("undefined"), "{what}: injected script ran");
    assert_eq!(b.find_all("img").await.len(), 0, "{what}: an injected <img> became an element");
}

/// Pushes `myorg/app:v1`: an image whose config labels and manifest
/// annotations carry markup, plus a referrer (an SBOM-like artifact).
async fn push_crafted_image(cove: &Server) -> (String, String, Vec<u64>) {
    let layers = vec![random_bytes(3000), random_bytes(5000)];
    let config = serde_json::to_vec(&json!({
        "architecture": "arm64", "os": "linux", "created": "2026-11-30T12:00:00Z",
        "config": {
            "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["PATH=/usr/bin", format!("EVIL={XSS}")],
            "Labels": { "org.example.evil": XSS, "org.opencontainers.image.title": "app" },
            "ExposedPorts": { "8080/tcp": {} },
        },
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| sha256_digest(l)).collect::<Vec<_>>() },
    }))
    .expect("config");
    cove.push_blob("myorg/app", &config).await;
    for l in &layers {
        cove.push_blob("myorg/app", l).await;
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
        "annotations": { "org.opencontainers.image.description": XSS },
    }))
    .expect("manifest");
    let r = cove.put_manifest("myorg/app", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201, "push myorg/app:v1");
    let digest = sha256_digest(&manifest);
    // A referrer of it: an artifact with the image as its subject.
    let empty = b"{}".to_vec();
    cove.push_blob("myorg/app", &empty).await;
    let sbom = random_bytes(700);
    cove.push_blob("myorg/app", &sbom).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": descriptor("application/vnd.oci.empty.v1+json", &empty),
        "layers": [descriptor("application/spdx+json", &sbom)],
        "subject": { "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len() },
    }))
    .expect("referrer");
    let rdigest = sha256_digest(&referrer);
    let r = cove.put_manifest("myorg/app", &rdigest, OCI_MANIFEST, &referrer).await;
    assert_eq!(r.status(), 201, "push the referrer");
    let sizes = std::iter::once(config.len() as u64).chain(layers.iter().map(|l| l.len() as u64)).collect();
    (digest, rdigest, sizes)
}

/// Under network trust: the list (private and cached), the filter with and
/// without JavaScript, a tag's digest, sizes and platforms, pull
/// references, config and annotations rendered as text, referrers, the
/// raw manifest, the dashboard against /metrics, a GC dry run, CSRF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_cached_and_private_images_under_network_trust() {
    let dist = Distribution::start(None, None).await;
    let upstream_img = Image::random(2);
    push_image_to(&dist.url(), "library/app", "1.0", &upstream_img).await;
    let cove = start_cove(&[UpstreamTable { host: "docker.io", url: dist.url(), extra: "" }]).await;
    let authority = cove.addr.to_string();

    // Private content: a crafted image over the API, an index with skopeo.
    let (app_digest, referrer_digest, app_sizes) = push_crafted_image(&cove).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(dir.path());
    let index = layout.add_index("1", &["amd64", "arm64"], &[2048, 4096]);
    skopeo_push(dir.path(), "1", &format!("{authority}/myorg/multi:1"), None);
    let multi_size: u64 = index
        .images
        .iter()
        .flat_map(|i| std::iter::once(&i.config).chain(&i.layers))
        .map(|b| b.bytes.len() as u64)
        .sum();

    // A known sequence through the cache: manifest miss then hit, a blob
    // miss then two hits.
    let m = "/v2/docker.io/library/app/manifests/1.0";
    assert_eq!(cove.get(m).await.status(), 200);
    assert_eq!(cove.get(m).await.status(), 200);
    let blob = format!("/v2/docker.io/library/app/blobs/{}", sha256_digest(&upstream_img.layers[0]));
    for _ in 0..3 {
        let r = cove.get(&blob).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.expect("blob").len(), upstream_img.layers[0].len());
    }

    let driver = ChromeDriver::start();
    let b = driver.browser(1280, 900).await;
    let shots = screenshots();

    // The list: private repositories and the cached one under its upstream.
    b.goto(&cove.url("/")).await;
    assert_eq!(b.texts("section[data-group=private] td.tags").await, ["1 tag", "1 tag"], "tag counts");
    let private = b.texts("section[data-group=private] td.wrap").await;
    assert_eq!(private, ["myorg/app", "myorg/multi"], "private group");
    let cached = b.texts("section[data-group=\"docker.io\"] td.wrap").await;
    assert_eq!(cached, ["docker.io/library/app"], "cached group");
    b.screenshot(&shots.join("repositories-desktop.png")).await;
    b.resize(390, 844).await;
    b.screenshot(&shots.join("repositories-phone.png")).await;
    b.resize(1280, 900).await;

    // The filter with JavaScript: rows narrow as one types.
    let input = b.find("input[name=q]").await;
    b.type_into(&input, "library").await;
    let shown = b.eval("return [...document.querySelectorAll('[data-name]')].filter(r => !r.classList.contains('hidden')).map(r => r.dataset.name);").await;
    assert_eq!(shown, json!(["docker.io/library/app"]), "live filter");
    // … and the form itself, which the server answers (works without JS).
    b.type_into(&input, "multi").await;
    b.click(&b.find("form.filter button[type=submit]").await).await;
    assert!(b.url().await.ends_with("/?q=multi"), "filter is a GET query: {}", b.url().await);
    assert_eq!(b.texts("td.wrap").await, ["myorg/multi"], "server-side filter");

    // A tag of the index: digest, platforms, total compressed size.
    b.goto(&cove.url("/ui/repo/myorg/multi")).await;
    let digest_link = b.find("tr[data-tag=\"1\"] a[data-digest]").await;
    assert_eq!(b.attr(&digest_link, "data-digest").await.as_deref(), Some(index.index.digest.as_str()));
    assert_eq!(b.text(&b.find("tr[data-tag=\"1\"] td.platforms").await).await, "linux/amd64, linux/arm64");
    let size = b.find("tr[data-tag=\"1\"] td.size").await;
    assert_eq!(b.attr(&size, "data-bytes").await, Some(multi_size.to_string()), "index size");
    b.click(&digest_link).await;
    assert_eq!(b.texts("#platforms td.platform").await, ["linux/amd64", "linux/arm64"]);

    // The crafted image: pull references, config, escaping, referrers, raw.
    b.goto(&cove.url("/ui/image/myorg/app?ref=v1")).await;
    assert_eq!(b.text(&b.find("#pull-podman").await).await, format!("podman pull {authority}/myorg/app:v1"));
    assert_eq!(
        b.text(&b.find("#pull-ctr").await).await,
        format!("ctr images pull --plain-http {authority}/myorg/app:v1")
    );
    assert_eq!(b.text(&b.find("#pull-k8s").await).await, format!("image: {authority}/myorg/app@{app_digest}"));
    let copy = b.find("button[data-copy=pull-podman]").await;
    assert!(!b.attr(&copy, "class").await.unwrap_or_default().contains("hidden"), "the script shows copy buttons");
    assert_eq!(b.texts(".annotation-value").await, [XSS], "annotation shown as text");
    assert!(b.texts(".label-value").await.contains(&XSS.to_owned()), "label shown as text");
    let config = b.text(&b.find("#config").await).await;
    for want in ["linux/arm64", "/bin/app", "--serve", "8080/tcp", "2026-11-30T12:00:00Z"] {
        assert!(config.contains(want), "config shows {want}: {config}");
    }
    let mut layer_sizes = Vec::new();
    for e in b.find_all("#layers td.num").await {
        layer_sizes.push(b.attr(&e, "data-bytes").await.unwrap_or_default());
    }
    assert_eq!(layer_sizes, ["3000", "5000"], "layer sizes");
    assert_eq!(b.texts("#layers td.num").await, ["3.0 kB", "5.0 kB"], "layer sizes as shown");
    let total: u64 = app_sizes.iter().sum();
    assert!(b.text(&b.find("#total-size").await).await.contains(&format!("({total} bytes)")));
    assert_no_script_ran(&b, "image page").await;
    b.screenshot(&shots.join("image-desktop.png")).await;
    b.resize(390, 844).await;
    b.screenshot(&shots.join("image-phone.png")).await;
    b.resize(1280, 900).await;
    let referrer = b.find("#referrers a").await;
    assert_eq!(b.text(&referrer).await, referrer_digest);
    b.click(&b.find("#show-raw").await).await;
    let raw: serde_json::Value = serde_json::from_str(&b.text(&b.find("#raw").await).await).expect("raw JSON");
    assert_eq!(raw["annotations"]["org.opencontainers.image.description"], json!(XSS));
    b.click(&b.find("#referrers a").await).await;
    assert!(b.text(&b.find("h1").await).await.starts_with("myorg/app"), "referrer page");
    assert!(b.text(&b.find(".kv").await).await.contains(&app_digest), "the referrer links its subject");

    // Reflected markup in a query parameter is text too.
    b.goto(&cove.url("/ui/image/myorg/app?ref=%3Cscript%3Ewindow.__xss%3D3%3C%2Fscript%3E")).await;
    assert!(b.text(&b.find(".notice").await).await.contains("<script>"), "error names the reference as text");
    assert_no_script_ran(&b, "error page").await;

    // The cached image, read from storage only: its origin reference, and
    // looking at it moves no cache counter (checked against /metrics below).
    b.goto(&cove.url("/ui/repo/docker.io/library/app")).await;
    assert_eq!(b.texts("tr[data-tag] td a").await.first().map(String::as_str), Some("1.0"));
    b.goto(&cove.url("/ui/image/docker.io/library/app?ref=1.0")).await;
    assert_eq!(b.text(&b.find("#pull-origin").await).await, "docker.io/library/app:1.0", "origin reference");
    assert_eq!(
        b.text(&b.find("#pull-podman").await).await,
        format!("podman pull {authority}/docker.io/library/app:1.0")
    );
    assert!(b.try_find("a[href^=\"/ui/delete/\"]").await.is_none(), "cached namespaces are pull-only");

    // Dark mode follows the system's preference.
    let light = b.eval("return getComputedStyle(document.body).backgroundColor;").await;
    b.cdp("Emulation.setEmulatedMedia", json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }))
        .await;
    let dark = b.eval("return getComputedStyle(document.body).backgroundColor;").await;
    assert_ne!(light, dark, "prefers-color-scheme: dark changes the colours");
    b.goto(&cove.url("/ui/image/myorg/app?ref=v1")).await;
    b.screenshot(&shots.join("image-dark.png")).await;
    b.cdp("Emulation.setEmulatedMedia", json!({ "features": [{ "name": "prefers-color-scheme", "value": "light" }] }))
        .await;

    // The dashboard shows the same numbers as /metrics.
    b.goto(&cove.url("/ui/dashboard")).await;
    let (hits, misses, stale, errors, limited) = (
        metric(&b, "hits").await,
        metric(&b, "misses").await,
        metric(&b, "stale").await,
        metric(&b, "upstream_errors").await,
        metric(&b, "rate_limited").await,
    );
    let prom = scrape(&cove).await;
    let value = |k: &str| prom.get(k).copied().unwrap_or(0.0).to_string();
    assert_eq!(hits, value("cove_cache_requests_total{upstream=\"docker.io\",result=\"hit\"}"), "hits: {prom:?}");
    assert_eq!(misses, value("cove_cache_requests_total{upstream=\"docker.io\",result=\"miss\"}"), "misses");
    assert_eq!(stale, value("cove_cache_requests_total{upstream=\"docker.io\",result=\"stale\"}"), "stale");
    assert_eq!(errors, value("cove_upstream_errors_total{upstream=\"docker.io\"}"), "upstream errors");
    assert_eq!(limited, value("cove_upstream_rate_limited_total{upstream=\"docker.io\"}"), "429s");
    let n = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("{s:?} is not a count"));
    assert_eq!(
        n(&hits) + n(&misses),
        5,
        "the known sequence is 5 cached requests (browsing added none): {hits} hits, {misses} misses"
    );
    assert!(n(&hits) >= 1 && n(&misses) >= 1, "{hits} hits, {misses} misses");
    b.find("[data-reachable=true]").await;
    b.screenshot(&shots.join("dashboard-desktop.png")).await;
    b.click(&b.find("#dry-run-gc").await).await;
    assert!(b.text(&b.find("#dry-run-summary").await).await.contains("Nothing was removed"));

    // A page of another origin posts a delete form to Cove in the same
    // browser: the session cookie (SameSite=Strict) is not sent, there is
    // no token, and Sec-Fetch-Site says cross-origin: refused.
    let evil = attacker_page(&format!(
        "<form method=post action=\"{}\"><input type=hidden name=ref value=v1>\
         <button id=go type=submit>win a prize</button></form>",
        cove.url("/ui/delete/myorg/app")
    ))
    .await;
    b.goto(&evil).await;
    b.click(&b.find("#go").await).await;
    b.wait_for_url(&cove.url("/ui/delete/myorg/app")).await;
    assert!(b.text(&b.find(".notice").await).await.contains("not sent from a Cove page"), "{}", b.source().await);
    assert_eq!(cove.manifest("GET", "myorg/app", "v1").await.status(), 200, "the cross-site form deleted nothing");
    b.quit().await;

    // CSRF: a POST needs the session's token and a same-origin page.
    let http = http_client();
    let r = http.get(cove.url("/ui/delete/myorg/app?ref=v1")).send().await.expect("confirm page");
    assert_eq!(r.status(), 200);
    let cookie = header(&r, "set-cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    let page = r.text().await.expect("page");
    let csrf =
        page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf field").to_owned();
    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let mut req = http.post(cove.url("/ui/delete/myorg/app")).header("cookie", &cookie).form(&form);
        if let Some(o) = origin {
            req = req.header("origin", o).header("sec-fetch-site", "cross-site");
        }
        req.send()
    };
    let r = post(vec![("ref", "v1".into())], None).await.expect("POST");
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = post(vec![("ref", "v1".into()), ("csrf", "forged".into())], None).await.expect("POST");
    assert_eq!(r.status(), 403, "a wrong CSRF token");
    let r = post(vec![("ref", "v1".into()), ("csrf", csrf.clone())], Some("http://evil.example")).await.expect("POST");
    assert_eq!(r.status(), 403, "cross-site, even with the token");
    assert_eq!(cove.manifest("GET", "myorg/app", "v1").await.status(), 200, "nothing was deleted");
    let r = post(vec![("ref", "v1".into()), ("csrf", csrf)], None).await.expect("POST");
    assert_eq!(r.status(), 303, "same origin with the token: deleted");
    assert_eq!(cove.manifest("GET", "myorg/app", "v1").await.status(), 404);
}

/// Under htpasswd: anonymous browsers see only the login page; a user sees
/// only what the policy lets them pull; delete works for the user allowed
/// to and is refused for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_login_catalog_filtering_and_delete() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let htpasswd = tmp.path().join("htpasswd");
    let line = |u: &str, p: &str| {
        let tool = require_tool("htpasswd", "apache2-utils");
        run(std::process::Command::new(tool).args(["-nbB", "-C", "4", u, p])).trim().to_owned()
    };
    std::fs::write(&htpasswd, format!("{}\n{}\n", line("alice", "alice-pw"), line("bob", "bob-pw"))).expect("htpasswd");
    let config = format!(
        "[auth]\nkind = \"htpasswd\"\nhtpasswd_file = \"{}\"\ndefault_policy = \"deny\"\n\
         [[access]]\nrepository = \"myorg/**\"\nactions = [\"pull\", \"push\", \"delete\"]\nusers = [\"alice\"]\n\
         [[access]]\nrepository = \"myorg/**\"\nactions = [\"pull\"]\nusers = [\"bob\"]\n\
         [[access]]\nrepository = \"secret/**\"\nactions = [\"pull\", \"push\"]\nusers = [\"alice\"]\n\
         [upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n[upstreams.\"quay.io\"]\nenabled = false\n",
        htpasswd.display()
    );
    let cove = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() }).await;
    let authority = cove.addr.to_string();
    let dir = tmp.path().join("layout");
    let mut layout = Layout::new(&dir);
    layout.add_image("v1", &[1500]);
    layout.add_image("v2", &[1600]);
    for (tag, dest) in [("v1", "myorg/app:v1"), ("v2", "myorg/app:v2"), ("v1", "secret/x:1")] {
        skopeo_push(&dir, tag, &format!("{authority}/{dest}"), Some("alice:alice-pw"));
    }

    let driver = ChromeDriver::start();
    let b = driver.browser(1280, 900).await;
    for path in ["/", "/ui/dashboard", "/ui/repo/myorg/app", "/ui/image/myorg/app?ref=v1"] {
        b.goto(&cove.url(path)).await;
        assert!(
            b.url().await.contains("/ui/login?next="),
            "{path} sends an anonymous browser to the login: {}",
            b.url().await
        );
        let source = b.source().await;
        assert!(!source.contains("myorg") || path != "/", "nothing stored is shown: {source}");
        assert!(!source.contains("secret/x"), "{path}: {source}");
        b.find("input[name=password]").await;
    }
    b.screenshot(&screenshots().join("login-desktop.png")).await;

    let login = |user: &'static str, password: &'static str| {
        let b = &b;
        let cove = &cove;
        async move {
            b.goto(&cove.url("/ui/login")).await;
            b.type_into(&b.find("input[name=username]").await, user).await;
            b.type_into(&b.find("input[name=password]").await, password).await;
            b.click(&b.find("button[type=submit]").await).await;
        }
    };
    login("bob", "wrong").await;
    assert!(b.text(&b.find("#login-error").await).await.contains("Wrong user name or password"));
    login("bob", "bob-pw").await;
    b.wait_for_url(&cove.url("/")).await;
    assert_eq!(b.url().await, cove.url("/"), "signed in, back to the list: {}", b.source().await);
    let cookie = b.cookies().await.into_iter().find(|c| c["name"] == "cove_session").expect("session cookie");
    assert_eq!((cookie["httpOnly"].clone(), cookie["sameSite"].clone()), (json!(true), json!("Strict")), "{cookie}");
    assert_eq!(b.texts("td.wrap").await, ["myorg/app"], "bob sees only what he may pull");
    b.goto(&cove.url("/ui/image/myorg/app?ref=v1")).await;
    assert!(b.try_find("a[href^=\"/ui/delete/\"]").await.is_none(), "no delete for bob");
    b.goto(&cove.url("/ui/delete/myorg/app?ref=v1")).await;
    assert!(b.text(&b.find(".notice").await).await.contains("may not delete"), "bob's confirmation is refused");
    // Even a POST with bob's own valid token is refused by the policy.
    let status = b
        .eval("return fetch('/ui/delete/myorg/app', {method: 'POST', body: new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value, ref: 'v1'})}).then(r => r.status);")
        .await;
    assert_eq!(status, json!(403), "bob's delete POST");
    b.goto(&cove.url("/ui/repo/secret/x")).await;
    assert!(
        b.text(&b.find("h1").await).await.contains("Not found"),
        "a repository bob may not pull does not exist for him"
    );
    b.goto(&cove.url("/")).await;
    b.click(&b.find("header form button").await).await;
    b.wait_for_url(&cove.url("/ui/login")).await;
    assert!(b.url().await.contains("/ui/login"), "signed out");

    login("alice", "alice-pw").await;
    b.wait_for_url(&cove.url("/")).await;
    assert_eq!(b.texts("td.wrap").await, ["myorg/app", "secret/x"], "alice sees both");
    b.goto(&cove.url("/ui/image/myorg/app?ref=v1")).await;
    b.click(&b.find("a[href^=\"/ui/delete/myorg/app?ref=v1\"]").await).await;
    b.click(&b.find("#confirm-delete").await).await;
    b.wait_for_url(&cove.url("/ui/repo/myorg/app?deleted=v1")).await;
    assert!(b.url().await.contains("/ui/repo/myorg/app"), "back at the repository: {}", b.url().await);
    let tags = b.find_all("tr[data-tag]").await;
    assert_eq!(tags.len(), 1, "one tag left");
    assert_eq!(b.attr(&tags[0], "data-tag").await.as_deref(), Some("v2"));
    let r = cove
        .req("GET", "/v2/myorg/app/manifests/v1")
        .basic_auth("alice", Some("alice-pw"))
        .header("accept", ACCEPT_ALL)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404, "the tag is gone from the API too");
    b.quit().await;
}

/// Network trust: a source outside `auth.trusted_networks` gets 403 from the
/// interface as from the API; the security headers; `[ui] enabled = false`.
#[tokio::test]
async fn untrusted_sources_are_refused_and_the_interface_can_be_turned_off() {
    let config = "[server]\nrefuse_untrusted = false\n[auth]\ntrusted_networks = [\"127.0.0.1/32\"]\n";
    let cove = Server::start_with(ServerOptions { config: Some(config.into()), ..ServerOptions::default() }).await;
    let outsider = client_from("127.0.0.2");
    for path in ["/", "/ui/dashboard", "/ui/login"] {
        let r = outsider.get(cove.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 403, "{path} from an untrusted source");
        assert!(!r.text().await.expect("body").contains("<html"), "no page for an untrusted source");
    }
    let r = outsider.post(cove.url("/ui/login")).form(&[("username", "a")]).send().await.expect("POST");
    assert_eq!(r.status(), 403);
    let r = cove.get("/").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let csp = header(&r, "content-security-policy");
    for d in
        ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"]
    {
        assert!(csp.contains(d), "CSP {csp} has {d}");
    }
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    let page = r.text().await.expect("page");
    let css = page
        .split("href=\"")
        .find(|s| s.starts_with("/ui/assets/"))
        .and_then(|s| s.split('"').next())
        .expect("css link");
    let r = cove.get(css).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "cache-control").contains("immutable"), "hashed assets are cached for long");
    assert_eq!(cove.get("/ui/assets/app.css").await.status(), 404, "only the hashed name");
    assert_eq!(cove.req("DELETE", "/ui/login").send().await.expect("DELETE").status(), 405);

    let off = Server::start_with(ServerOptions {
        config: Some("[ui]\nenabled = false\n".into()),
        ..ServerOptions::default()
    })
    .await;
    for path in ["/", "/ui/dashboard", css] {
        assert_eq!(off.get(path).await.status(), 404, "{path} with the interface off");
    }
    assert_eq!(off.get("/v2/").await.status(), 200, "the API still answers");
}

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
/// one pushed image), reported to the e2e report.
#[tokio::test]
async fn page_render_times_for_a_large_store() {
    let cove = Server::start().await;
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

/// Under OIDC: a browser signs in through the issuer's authorization-code
/// flow with PKCE (the loopback issuer checks the verifier), the ID token
/// is checked by the API's OIDC authenticator, and the user then sees what
/// the policy lets them pull.
#[tokio::test]
async fn oidc_browser_login_with_pkce() {
    use cove_testkit::oidc::{Issuer, SigningKey};
    let issuer = Issuer::start().await;
    let key = SigningKey::ec("k1");
    issuer.set_keys(vec![key.jwk()]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs();
    let push_token =
        key.sign(&json!({ "iss": issuer.url, "aud": "cove", "sub": "carol", "iat": now, "exp": now + 300 }));
    issuer.set_login(key, json!({ "sub": "carol" }));
    let config = format!(
        "[auth]\nkind = \"oidc\"\ndefault_policy = \"deny\"\n[auth.oidc]\nissuer = \"{}\"\naudience = \"cove\"\n\
         [[access]]\nrepository = \"team/**\"\nactions = [\"pull\", \"push\"]\nusers = [\"carol\"]\n\
         [upstreams.\"docker.io\"]\nenabled = false\n[upstreams.\"ghcr.io\"]\nenabled = false\n[upstreams.\"quay.io\"]\nenabled = false\n",
        issuer.url
    );
    let cove = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() }).await;
    // Push team/app:v1 with a bearer token from the same issuer.
    let img = Image::random(1);
    let http = http_client();
    for blob in std::iter::once(&img.config).chain(img.layers.iter()) {
        let r = http.post(cove.url("/v2/team/app/blobs/uploads/")).bearer_auth(&push_token).send().await.expect("POST");
        assert_eq!(r.status(), 202, "upload start");
        let url = with_query(&cove.resolve(&header(&r, "location")), &format!("digest={}", sha256_digest(blob)));
        let r = http.put(url).bearer_auth(&push_token).body(blob.clone()).send().await.expect("PUT");
        assert_eq!(r.status(), 201, "blob");
    }
    let r = http
        .put(cove.url("/v2/team/app/manifests/v1"))
        .bearer_auth(&push_token)
        .header("content-type", OCI_MANIFEST)
        .body(img.manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(r.status(), 201, "manifest");

    // A forged callback (no flow started in this browser) is refused.
    let r = http.get(cove.url("/ui/oidc/callback?code=x&state=y")).send().await.expect("GET");
    assert_eq!(r.status(), 403, "a callback without its state cookie");

    let driver = ChromeDriver::start();
    let b = driver.browser(1280, 900).await;
    b.goto(&cove.url("/ui/repo/team/app")).await;
    b.wait_for_url(&cove.url("/ui/repo/team/app")).await;
    assert_eq!(b.url().await, cove.url("/ui/repo/team/app"), "back where the browser started: {}", b.source().await);
    assert!(b.text(&b.find(".who").await).await.contains("carol"), "signed in as carol");
    assert_eq!(b.find_all("tr[data-tag]").await.len(), 1, "carol sees team/app's tag");
    assert_eq!(issuer.server.count("POST", "/token"), 1, "one code exchange");
    b.quit().await;
}
