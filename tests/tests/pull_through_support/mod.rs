//! Cove-side helpers for the pull-through cache tests
//! (tests/tests/pull_through/, retention/, reload.rs): Cove's config
//! for a set of upstreams, and where the cache lands on disk. The peers
//! themselves (distribution, the fault registry, the token issuer,
//! containerd, skopeo) are in cove-testkit.
#![allow(dead_code)]

use crate::common::{Server, ServerOptions};

/// One `[upstreams."HOST"]` table of a Cove config.
pub struct UpstreamTable<'a> {
    pub host: &'a str,
    pub url: String,
    /// Extra `key = value` lines for the table (`tag_ttl = "2s"`).
    pub extra: &'a str,
}

/// The presets Cove enables unless told otherwise; any not configured by a
/// test is disabled so nothing can reach the internet.
const PRESETS: [&str; 3] = ["docker.io", "ghcr.io", "quay.io"];

/// Cove's config text for `tables`; `cove.test` is Cove's own host name.
pub fn cove_config(tables: &[UpstreamTable<'_>]) -> String {
    let mut cfg = String::from("[server]\nhostnames = [\"cove.test\"]\n");
    for t in tables {
        cfg.push_str(&format!("\n[upstreams.\"{}\"]\nurl = \"{}\"\n{}\n", t.host, t.url, t.extra));
    }
    for p in PRESETS {
        if !tables.iter().any(|t| t.host == p) {
            cfg.push_str(&format!("\n[upstreams.\"{p}\"]\nenabled = false\n"));
        }
    }
    cfg
}

/// Starts Cove with `tables` as its upstreams.
pub async fn start_cove(tables: &[UpstreamTable<'_>]) -> Server {
    Server::start_with(ServerOptions { config: Some(cove_config(tables)), ..ServerOptions::default() }).await
}

/// The `X-Cove-Cache` header of a response ("" when absent).
pub fn cache_status(r: &reqwest::Response) -> String {
    crate::common::header(r, "x-cove-cache")
}

/// `<data>/blobs/sha256/xx/hex` for `digest`.
pub fn blob_path(data: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

/// `<data>/repositories/<repo>/_manifests/sha256/hex` for `digest`.
pub fn manifest_path(data: &std::path::Path, repo: &str, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    let mut p = data.join("repositories");
    p.extend(repo.split('/'));
    p.join("_manifests").join("sha256").join(hex)
}

/// Digests of the manifests Cove stored for `repo`.
pub fn stored_manifests(data: &std::path::Path, repo: &str) -> Vec<String> {
    let mut p = data.join("repositories");
    p.extend(repo.split('/'));
    let mut v: Vec<String> = crate::common::files_under(&p.join("_manifests"))
        .iter()
        .filter_map(|f| f.file_name().and_then(|n| n.to_str()).map(|n| format!("sha256:{n}")))
        .collect();
    v.sort();
    v
}
