//! The router's behaviour seen from outside, under a real authenticator:
//! a path that exists but not for this method is answered 405 with `Allow`
//! before authentication (the client learns nothing about access from it),
//! an unknown path is 404, and the same paths with the right method are
//! then subject to authentication as usual.

#[allow(unused_imports)] // this binary uses two of its helpers
mod auth_support;
mod common;

use auth_support::{bcrypt_line, AuthServer};
use common::cove_bin;

const CONFIG: &str = "[auth]\nkind = \"htpasswd\"\nhtpasswd_file = \"@DIR@/htpasswd\"\n\n\
                      [[access]]\nrepository = \"**\"\nactions = [\"pull\", \"push\"]\nusers = [\"alice\"]\n";

async fn status_allow_code(c: &reqwest::Client, method: &str, url: &str) -> (u16, Option<String>, String) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = c.request(m, url).send().await.expect("request");
    let status = r.status().as_u16();
    let allow = r.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = r.text().await.unwrap_or_default();
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, allow, code)
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_before_auth_and_unknown_paths_404() {
    let line = bcrypt_line("alice", "alice-secret", 4);
    let s = AuthServer::start(&cove_bin(), CONFIG, &[("htpasswd", line)], &[]).await;
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", s.base);

    // A known path with a method it does not have: 405, the methods it has,
    // and no challenge, although no credentials were sent.
    for (method, path, allow) in [
        ("PUT", "/v2/", "GET, HEAD"),
        ("DELETE", "/v2/_catalog", "GET"),
        ("POST", "/v2/myorg/app/manifests/v1", "GET, HEAD, PUT, DELETE"),
        ("PATCH", "/v2/myorg/app/tags/list", "GET"),
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
    ] {
        let (status, got_allow, code) = status_allow_code(&c, method, &url(path)).await;
        assert_eq!(status, 405, "{method} {path}");
        assert_eq!(got_allow.as_deref(), Some(allow), "{method} {path}: Allow");
        assert_eq!(code, "UNSUPPORTED", "{method} {path}: error code");
    }

    // Paths that name nothing: 404, for admin paths too.
    for path in ["/v3/", "/nothing", "/admin/nope", "/v2/myorg/app/nothing/here"] {
        let (status, allow, code) = status_allow_code(&c, "GET", &url(path)).await;
        assert_eq!(status, 404, "GET {path}");
        assert_eq!(allow, None, "GET {path}: no Allow on a 404");
        assert_eq!(code, "NAME_UNKNOWN", "GET {path}");
    }

    // The right method on the same paths: authentication applies.
    let r = c.get(url("/v2/myorg/app/manifests/v1")).send().await.expect("GET");
    assert_eq!(r.status(), 401, "GET manifest without credentials");
    assert!(r.headers().contains_key("www-authenticate"), "401 carries a challenge");
    let r =
        c.get(url("/v2/myorg/app/manifests/v1")).basic_auth("alice", Some("alice-secret")).send().await.expect("GET");
    assert_eq!(r.status(), 404, "GET an absent manifest as alice");
    let r = c.get(url("/healthz")).send().await.expect("GET /healthz");
    assert_eq!(r.status(), 200, "health needs no credentials");
}
