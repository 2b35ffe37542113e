//! The web interface (issue 15) end to end: the real `cove` binary, images
//! pushed with skopeo and over the registry API, a real distribution
//! registry as the upstream of the pull-through cache, and a real browser
//! (Debian's headless chromium, driven over WebDriver by chromedriver).
//! Screenshots of the main pages, at desktop and phone width, are written
//! to `<target>/ui-screenshots/`.
//!
//! A missing chromium, chromedriver, skopeo or docker-registry fails the
//! test with its install hint, like every other peer.

#[path = "../common/mod.rs"]
mod common;
#[path = "../pull_through_support/mod.rs"]
mod pull_through_support;
#[path = "../ui_support/mod.rs"]
mod ui_support;

mod access;
mod browse;
mod render_times;

use std::path::PathBuf;

use serde_json::json;

use common::*;
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::skopeo_push;
use pull_through_support::{start_cove, UpstreamTable};
use ui_support::{Browser, ChromeDriver};

fn screenshots() -> PathBuf {
    let d = target_dir().join("ui-screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}
