//! Browsing under network trust: the list, the filter, image pages, pull
//! references, crafted configs and annotations rendered as text (no script
//! runs), referrers, the dashboard, a GC dry run, CSRF.

use super::*;

/// Text that would run script if a page spliced it into HTML unescaped.
const XSS: &str = r#""><img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>"#;

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
