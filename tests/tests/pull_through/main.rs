//! End-to-end tests of the pull-through cache (issue 3): the real `cove`
//! binary in front of real upstreams (the CNCF distribution registry, with
//! and without bearer-token auth), a registry server that misbehaves on
//! purpose, and real clients (skopeo, containerd's `ctr`).
//!
//! Upstream requests are counted in distribution's access log or by the
//! misbehaving server itself. A missing peer fails the test with its
//! install hint. Everything stays on loopback.

#[path = "../common/mod.rs"]
mod common;
#[path = "../pull_through_support/mod.rs"]
mod pull_through_support;

mod clients;
mod coalescing;
mod faults;
mod freshness;
mod routing;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;

use common::*;
use cove_testkit::fault::{self, BodyMode, Content, FaultServer, Reply};
use cove_testkit::layout::Layout;
use cove_testkit::peers::distribution::Distribution;
use cove_testkit::peers::skopeo::{skopeo_pull, skopeo_push};
use pull_through_support::{blob_path, cache_status, start_cove, stored_manifests, UpstreamTable};

fn table<'a>(host: &'a str, url: String, extra: &'a str) -> UpstreamTable<'a> {
    UpstreamTable { host, url, extra }
}

/// A request with the Accept header a real client sends for `path`.
async fn send(s: &Server, method: &str, path: &str) -> reqwest::Response {
    s.req(method, path).header("accept", accept_for(path)).send().await.expect("request to cove")
}

/// Reads a whole body; `Err` if the transfer failed.
async fn body_bytes(r: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| format!("after {} bytes: {e:?}", out.len()))?);
    }
    Ok(out)
}

/// Reads a body and checks it equals `expected` as it arrives (no copy);
/// returns (bytes read, time to first byte, total time) measured from `t0`.
async fn check_body(r: reqwest::Response, expected: &[u8], t0: Instant) -> Result<(usize, Duration, Duration), String> {
    let mut pos = 0usize;
    let mut ttfb = None;
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| format!("after {pos} bytes: {e:?}"))?;
        if ttfb.is_none() && !c.is_empty() {
            ttfb = Some(t0.elapsed());
        }
        if pos + c.len() > expected.len() || c[..] != expected[pos..pos + c.len()] {
            return Err(format!("content differs in bytes {pos}..{}", pos + c.len()));
        }
        pos += c.len();
    }
    Ok((pos, ttfb.unwrap_or_default(), t0.elapsed()))
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
