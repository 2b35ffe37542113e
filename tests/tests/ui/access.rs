//! Who may use the interface: htpasswd logins and catalog filtering,
//! untrusted sources and `[ui] enabled = false`, OIDC sign-in with PKCE.

use super::*;

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
