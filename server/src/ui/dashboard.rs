//! The cache dashboard: the `/admin/status` document (`crate::status`,
//! the same code `cove status` prints and whose counters `/metrics`
//! exports), rendered as HTML.

use maud::{html, Markup};
use serde_json::Value;

use super::pages::size;

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A number with a `data-metric` name the tests (and scrapers of the page)
/// can find.
fn stat(upstream: &str, key: &str, label: &str, value: String) -> Markup {
    html! {
        div.stat {
            div.k { (label) }
            div.v data-upstream=(upstream) data-metric=(key) { (value) }
        }
    }
}

/// The width class (`w0` … `w100`) of a bar at `used / limit`.
fn bar_class(used: u64, limit: u64) -> String {
    let pct = used.saturating_mul(100).checked_div(limit).unwrap_or(0).min(100);
    format!("bar w{}", pct / 10 * 10)
}

/// Renders the dashboard from the status document; `dry_run` says whether
/// the GC and retention dry-run buttons are shown (with `csrf`).
pub fn dashboard(status: &Value, dry_run: bool, csrf: &str) -> Markup {
    let empty = Vec::new();
    let upstreams = status.get("upstreams").and_then(Value::as_array).unwrap_or(&empty);
    let space = status.get("storage_space").unwrap_or(&Value::Null);
    let uptime = std::time::Duration::from_secs(u(status, "uptime_seconds"));
    html! {
        h1 { "Cache" }
        p.sub {
            "Storage: " strong { (s(status, "storage").unwrap_or("?")) }
            " · up " (humantime::format_duration(uptime))
        }
        h2 { "Upstreams" }
        @if upstreams.is_empty() { div.panel { p.empty { "No upstream is configured: this Cove is a private registry only." } } }
        @for up in upstreams {
            @let host = s(up, "host").unwrap_or("?");
            section.panel.upstream data-host=(host) {
                h3 {
                    span { (host) }
                    @if up.get("reachable").and_then(Value::as_bool).unwrap_or(false) {
                        span.badge.ok data-reachable="true" { "reachable" @if let Some(ms) = up.get("probe_ms").and_then(Value::as_u64) { " · " (ms) " ms" } }
                    } @else {
                        span.badge.bad data-reachable="false" title=(s(up, "probe_error").unwrap_or("")) { "unreachable" }
                    }
                }
                div.grid {
                    (stat(host, "hit_rate", "Hit rate", match up.get("hit_rate").and_then(Value::as_f64) {
                        Some(r) => format!("{:.0}%", r * 100.0),
                        None => "—".into(),
                    }))
                    (stat(host, "hits", "Hits", u(up, "hits").to_string()))
                    (stat(host, "misses", "Misses", u(up, "misses").to_string()))
                    (stat(host, "revalidated", "Revalidated", u(up, "revalidated").to_string()))
                    (stat(host, "stale", "Stale", u(up, "stale").to_string()))
                    (stat(host, "upstream_errors", "Upstream errors", u(up, "upstream_errors").to_string()))
                    (stat(host, "rate_limited", "429 answers", u(up, "rate_limited").to_string()))
                    (stat(host, "bytes_saved", "Bytes saved", size(u(up, "bytes_saved"))))
                    (stat(host, "bytes_fetched", "Bytes fetched", size(u(up, "bytes_fetched"))))
                }
                div.pad {
                    @match up.get("cache_bytes").and_then(Value::as_u64) {
                        Some(bytes) => {
                            @let max = up.get("max_size").and_then(Value::as_u64);
                            div {
                                "Cache size " strong { (size(bytes)) }
                                " in " (u(up, "cached_images")) " images"
                                @if let Some(m) = max { " of " (size(m)) " allowed (retention.max_size)" } @else { " (no size limit)" }
                            }
                            @if let Some(m) = max { div class=(bar_class(bytes, m)) { span {} } }
                        }
                        None => { span.muted { "Cache size: measured by the first retention run." } }
                    }
                    @if let Some(e) = s(up, "last_error") {
                        div.notice.error { "Last error" @if let Some(at) = s(up, "last_error_at") { " (" (at) ")" } ": " (e) }
                    }
                    @if let Some(since) = s(up, "unhealthy_since") {
                        div.notice.error { "Not answering since " (since) }
                    }
                }
            }
        }
        h2 { "Storage" }
        div.panel {
            div.grid {
                @if space.is_object() && space.get("total").is_some() {
                    @let total = u(space, "total");
                    @let avail = u(space, "available");
                    div.stat {
                        div.k { "Disk used" }
                        div.v { (size(total.saturating_sub(avail))) " / " (size(total)) }
                        div class=(bar_class(total.saturating_sub(avail), total)) { span {} }
                    }
                    div.stat { div.k { "Free" } div.v { (size(avail)) } @if space.get("low").and_then(Value::as_bool).unwrap_or(false) { span.badge.bad { "below storage.min_free" } } }
                    div.stat { div.k { "storage.min_free" } div.v { (size(u(space, "min_free"))) } }
                } @else {
                    div.stat { div.k { "Disk" } div.v { "—" } }
                }
                div.stat { div.k { "Writes refused (full)" } div.v data-metric="storage_full_total" { (u(status, "storage_full_total")) } }
            }
        }
        h2 { "Garbage collection and retention" }
        div.panel {
            dl.kv {
                dt { "Last GC" }
                dd #last-gc {
                    @match status.get("last_gc") {
                        Some(g) if g.get("ok").and_then(Value::as_bool) == Some(true) => {
                            (u(g, "blobs_removed")) " blobs removed, " (size(u(g, "bytes_freed"))) " freed, "
                            (u(g, "manifests_removed")) " manifests, " (u(g, "uploads_removed")) " uploads; "
                            (u(g, "blobs")) " blobs kept (" (u(g, "duration_ms")) " ms)"
                        }
                        Some(g) if g.get("ok").is_some() => { span.badge.bad { "failed" } " " (s(g, "error").unwrap_or("")) }
                        _ => { span.muted { "none since start" } }
                    }
                }
                dt { "Last retention" }
                dd #last-retention {
                    @match status.get("last_retention") {
                        Some(r) if r.get("ok").and_then(Value::as_bool) == Some(true) => {
                            (s(r, "at").unwrap_or("")) ": " (u(r, "evicted_images")) " images evicted, "
                            (u(r, "tags_removed")) " tags and " (u(r, "manifests_removed")) " manifests removed, "
                            (size(u(r, "bytes_freed"))) " freed"
                        }
                        Some(r) if r.get("ok").is_some() => { span.badge.bad { "failed" } " " (s(r, "error").unwrap_or("")) }
                        _ => { span.muted { "none since start" } }
                    }
                }
                @if let Some(a) = status.get("activity_log") {
                    dt { "Activity log" } dd { (u(a, "manifests")) " manifests, " (u(a, "tags")) " tags tracked" }
                }
            }
            @if dry_run {
                div.pad.actions {
                    form.inline method="post" action="/ui/dry-run" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="kind" value="gc";
                        button #dry-run-gc type="submit" { "GC dry run" }
                    }
                    form.inline method="post" action="/ui/dry-run" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="kind" value="retention";
                        button #dry-run-retention type="submit" { "Retention dry run" }
                    }
                    span.muted { "Shows what a run would remove; removes nothing." }
                }
            }
        }
    }
}

/// What a dry run would remove (only lines naming repositories `visible`
/// admits are listed).
pub fn dry_run_result(kind: &str, report: &Value, visible: impl Fn(&str) -> bool) -> Markup {
    let list = |k: &str| -> Vec<String> {
        report
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| match x {
                        Value::String(s) => Some(s.clone()),
                        Value::Array(pair) => pair.first().and_then(Value::as_str).map(str::to_owned),
                        Value::Object(o) => o.get("repository").and_then(Value::as_str).map(|r| {
                            let digest = o.get("digest").and_then(Value::as_str).unwrap_or_default();
                            let why = o.get("reason").and_then(Value::as_str).unwrap_or_default();
                            format!("{r}@{digest} ({why})")
                        }),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let repo_of = |line: &str| line.split(['@', ':']).next().unwrap_or(line).to_owned();
    let sections: Vec<(&str, Vec<String>)> = match kind {
        "gc" => vec![
            ("Blobs", list("blobs_removed")),
            ("Manifests", list("manifests_removed")),
            ("Upload sessions", list("uploads_removed")),
        ],
        _ => vec![
            ("Evicted images", list("evicted")),
            ("Tags", list("tags_removed")),
            ("Manifests", list("manifests_removed")),
        ],
    };
    html! {
        div.crumbs { a href="/ui/dashboard" { "Cache" } }
        h1 { @if kind == "gc" { "Garbage collection" } @else { "Retention" } " dry run" }
        p.sub #dry-run-summary {
            "Would free " strong { (size(u(report, "bytes_freed"))) } ". Nothing was removed."
        }
        @for (title, items) in &sections {
            @let shown: Vec<&String> = items.iter().filter(|l| *title == "Blobs" || *title == "Upload sessions" || visible(&repo_of(l))).collect();
            div.panel {
                h3 { (title) span.badge { (shown.len()) } }
                @if shown.is_empty() { p.empty { "Nothing." } }
                @else { table { tbody { @for l in shown { tr { td.mono.wrap { (l) } } } } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_shows_status_numbers_escaped() {
        let status = serde_json::json!({
            "uptime_seconds": 5, "storage": "filesystem", "storage_full_total": 0,
            "upstreams": [{"host": "up.test", "reachable": true, "probe_ms": 3, "hits": 7, "misses": 2,
                "revalidated": 1, "stale": 0, "upstream_errors": 4, "rate_limited": 3, "bytes_saved": 2000,
                "bytes_fetched": 10, "hit_rate": 0.8, "last_error": "<script>x</script>", "cache_bytes": 50, "max_size": 100,
                "cached_images": 2}],
            "last_gc": null, "last_retention": null,
        });
        let page = dashboard(&status, true, "tok").into_string();
        for (k, v) in
            [("hits", "7"), ("misses", "2"), ("rate_limited", "3"), ("upstream_errors", "4"), ("hit_rate", "80%")]
        {
            assert!(page.contains(&format!("data-metric=\"{k}\">{v}<")), "{k} = {v} in {page}");
        }
        assert!(page.contains("bar w50"));
        assert!(!page.contains("<script>x"), "errors from upstreams are escaped");
        assert!(page.contains("dry-run-gc"));
        assert!(!dashboard(&status, false, "tok").into_string().contains("dry-run-gc"));
    }

    #[test]
    fn dry_run_lists_only_visible_repositories() {
        let report = serde_json::json!({"tags_removed": ["a/x:1", "secret/y:2"], "manifests_removed": [], "evicted": [], "bytes_freed": 0});
        let page = dry_run_result("retention", &report, |r| r == "a/x").into_string();
        assert!(page.contains("a/x:1") && !page.contains("secret/y"), "{page}");
    }
}
