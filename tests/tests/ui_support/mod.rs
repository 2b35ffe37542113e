//! A real browser for the web interface tests: Debian's `chromium`, headless,
//! driven over the W3C WebDriver protocol through `chromedriver`
//! (chromium-driver). The protocol is a few JSON requests, so this speaks it
//! with the reqwest client the tests already have rather than pulling in a
//! WebDriver crate and its dependency tree. A missing chromium or
//! chromedriver fails the test with its install hint, like every peer.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use cove_testkit::util::{free_port, require_tool, wait_listening};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver; killed on drop.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver on a free loopback port.
    pub fn start() -> ChromeDriver {
        let bin = require_tool("chromedriver", "chromium-driver");
        require_tool("chromium", "chromium");
        let dir = tempfile::Builder::new().prefix("cove-chromedriver-").tempdir().expect("tempdir");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let mut child = Command::new(bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_listening(port, &mut child, "chromedriver", Some(&log), Duration::from_secs(20));
        ChromeDriver { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// Opens a headless browser session (its own profile, no proxy) with a
    /// window of `width`×`height`.
    pub async fn browser(&self, width: u32, height: u32) -> Browser {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("client");
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": require_tool("chromium", "chromium").display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-proxy-server", "--no-first-run", "--disable-extensions",
                         format!("--window-size={width},{height}"), "--hide-scrollbars"],
            },
            "unhandledPromptBehavior": "ignore",
        } } });
        let r: Value = http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("json");
        let id = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {r}")).to_owned();
        let b = Browser { http, base: format!("{}/session/{id}", self.url) };
        b.resize(width, height).await;
        b
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
}

/// An element found on the page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("WebDriver request");
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.expect("WebDriver JSON");
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(v["value"].clone())
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Sets the window size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height })).await;
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (up to 5 s) until the current URL is `url` (a form's answer
    /// has loaded); the caller asserts what it then sees.
    pub async fn wait_for_url(&self, url: &str) {
        for _ in 0..100 {
            if self.url().await == url {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's source as the browser holds it.
    pub async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let v = self
            .call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css })))
            .await
            .ok()?;
        v[ELEMENT].as_str().map(|s| Element(s.to_owned()))
    }

    /// The first element matching `css`; panics when there is none.
    pub async fn find(&self, css: &str) -> Element {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!("no element {css:?} on {} :\n{}", self.url().await, self.source().await),
        }
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.post("/elements", json!({ "using": "css selector", "value": css })).await;
        v.as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned()))).collect())
            .unwrap_or_default()
    }

    /// The rendered text of `e`.
    pub async fn text(&self, e: &Element) -> String {
        self.get(&format!("/element/{}/text", e.0)).await.as_str().unwrap_or_default().to_owned()
    }

    /// The texts of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.find_all(css).await {
            out.push(self.text(&e).await);
        }
        out
    }

    /// An attribute of `e`.
    pub async fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.get(&format!("/element/{}/attribute/{name}", e.0)).await.as_str().map(str::to_owned)
    }

    /// Clicks `e`, which must load a new page (a link or a form's submit
    /// button), and waits until that page has loaded: the old document is
    /// marked first, so a page that merely looks the same is not mistaken
    /// for the answer.
    pub async fn click(&self, e: &Element) {
        self.eval("window.__coveOldPage = true; return true;").await;
        self.post(&format!("/element/{}/click", e.0), json!({})).await;
        let probe = json!({ "script": "return window.__coveOldPage === undefined && document.readyState === 'complete';", "args": [] });
        for _ in 0..200 {
            if let Ok(v) = self.call(reqwest::Method::POST, "/execute/sync", Some(probe.clone())).await {
                if v == json!(true) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the click loaded no new page within 5 s (at {})", self.url().await);
    }

    /// Types `text` into `e`.
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.post(&format!("/element/{}/clear", e.0), json!({})).await;
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text })).await;
    }

    /// Runs `script` in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// The text of an open alert/confirm/prompt dialog, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.call(reqwest::Method::GET, "/alert/text", None).await.ok().and_then(|v| v.as_str().map(str::to_owned))
    }

    /// Runs a Chrome DevTools Protocol command (e.g. media emulation).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params })).await
    }

    /// Forgets every cookie (a fresh anonymous browser).
    pub async fn clear_cookies(&self) {
        self.call(reqwest::Method::DELETE, "/cookie", None).await.expect("delete cookies");
    }

    /// Every cookie the browser holds for the current page, as JSON.
    pub async fn cookies(&self) -> Vec<Value> {
        self.get("/cookie").await.as_array().cloned().unwrap_or_default()
    }

    /// A PNG screenshot of the viewport, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap_or_default()).expect("PNG");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session (closes the browser).
    pub async fn quit(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}
