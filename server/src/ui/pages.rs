//! The pages, as maud templates. maud escapes every `(expression)` it
//! splices in; nothing here uses `PreEscaped` on data from clients or
//! upstreams (names, tags, annotations, labels, config values, the Host
//! header): the only pre-escaped markup is maud's own output.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, DOCTYPE};

use cove_core::manifest::Descriptor;
use cove_core::RepoName;

use super::assets;
use super::model::{Image, RepoEntry, TagRow};

/// What every page's frame needs.
pub struct Frame<'a> {
    pub title: &'a str,
    /// Which navigation entry is current (`repos`, `dashboard`, none).
    pub nav: &'a str,
    /// Who is logged in (`None`: anonymous), and the CSRF token for logout.
    pub user: Option<&'a str>,
    pub csrf: &'a str,
    /// Whether this server has logins at all.
    pub logins: bool,
}

/// The page frame: header, navigation, content, footer.
pub fn layout(f: &Frame<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (f.title) " · Cove" }
                link rel="stylesheet" href=(assets::css_path());
                script src=(assets::js_path()) defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Cove" }
                    nav.main {
                        a href="/" class=[(f.nav == "repos").then_some("active")] { "Repositories" }
                        a href="/ui/dashboard" class=[(f.nav == "dashboard").then_some("active")] { "Cache" }
                    }
                    @if f.logins {
                        div.who {
                            @if let Some(u) = f.user {
                                span { "Signed in as " strong { (u) } }
                                form.inline method="post" action="/ui/logout" {
                                    input type="hidden" name="csrf" value=(f.csrf);
                                    button.small type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main { (content) }
                footer { "Cove · OCI registry and pull-through cache" }
            }
        }
    }
}

/// Bytes as `1.5 MB` (SI units, as registries show layer sizes).
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Unix milliseconds as `2026-12-02 15:04:05 UTC`.
pub fn time_ms(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").replace('Z', " UTC")
}

/// `sha256:0123456789ab` (12 hex digits) for tables.
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.to_owned(),
    }
}

/// A short name for a media type (`OCI index`, `Docker manifest`).
pub fn media_label(mt: &str) -> &str {
    match mt {
        cove_core::manifest::OCI_MANIFEST => "OCI manifest",
        cove_core::manifest::OCI_INDEX => "OCI index",
        cove_core::manifest::DOCKER_MANIFEST => "Docker manifest",
        cove_core::manifest::DOCKER_LIST => "Docker manifest list",
        "" => "—",
        other => other,
    }
}

/// A query string value, percent-encoded.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The URL of a repository's page.
pub fn repo_url(repo: &RepoName) -> String {
    format!("/ui/repo/{repo}")
}

/// The URL of an image's page (`reference` a tag or digest).
pub fn image_url(repo: &RepoName, reference: &str) -> String {
    format!("/ui/image/{repo}?ref={}", q(reference))
}

/// The repository list page's state.
pub struct ListView<'a> {
    pub entries: &'a [RepoEntry],
    pub filter: &'a str,
    pub page: usize,
    pub pages: usize,
    pub total: usize,
}

/// `/`: private repositories, then cached ones grouped by upstream.
pub fn repo_list(v: &ListView<'_>) -> Markup {
    let mut groups: Vec<(Option<&str>, Vec<&RepoEntry>)> = Vec::new();
    for e in v.entries {
        let key = e.upstream.as_deref();
        match groups.last_mut() {
            Some((k, list)) if *k == key => list.push(e),
            _ => groups.push((key, vec![e])),
        }
    }
    html! {
        h1 { "Repositories" }
        p.sub { (v.total) " repositories" @if !v.filter.is_empty() { " matching " code { (v.filter) } } }
        form.filter method="get" action="/" role="search" {
            input type="search" name="q" value=(v.filter) placeholder="Filter by name…" aria-label="Filter repositories" data-filter;
            button type="submit" { "Filter" }
        }
        @if v.entries.is_empty() {
            div.panel { p.empty { "No repositories" @if !v.filter.is_empty() { " match this filter" } "." } }
        }
        @for (upstream, list) in &groups {
            section.panel data-group=(upstream.unwrap_or("private")) {
                h3 {
                    @match upstream {
                        None => span { "Private" },
                        Some(h) => span { "Cached from " (h) },
                    }
                    span.badge { (list.len()) }
                }
                table {
                    tbody {
                        @for e in list {
                            tr data-name=(e.name.as_str()) {
                                td.wrap { a href=(repo_url(&e.name)) { (e.name.as_str()) } }
                                td.num.muted.tags {
                                    @if let Some(n) = e.tags { (n) @if n == 1 { " tag" } @else { " tags" } }
                                }
                                td.num {
                                    @if e.upstream.is_some() { span.badge.accent { "cached" } } @else { span.badge { "private" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        (pager("/", &[("q", v.filter)], v.page, v.pages))
    }
}

/// Previous/next links keeping `params`.
fn pager(path: &str, params: &[(&str, &str)], page: usize, pages: usize) -> Markup {
    let link = |p: usize| {
        let mut s = format!("{path}?");
        for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
            s.push_str(&format!("{k}={}&", q(v)));
        }
        s.push_str(&format!("page={p}"));
        s
    };
    html! {
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if page > 1 { a rel="prev" href=(link(page - 1)) { "← Previous" } }
                span { "Page " (page) " of " (pages) }
                @if page < pages { a rel="next" href=(link(page + 1)) { "Next →" } }
            }
        }
    }
}

/// The repository page's state.
pub struct RepoView<'a> {
    pub repo: &'a RepoName,
    pub upstream: Option<&'a str>,
    pub rows: &'a [TagRow],
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    /// Manifests held (tagged or not; an index's platforms count too).
    pub manifests: usize,
}

/// `/ui/repo/<name>`: its tags.
pub fn repo_page(v: &RepoView<'_>) -> Markup {
    html! {
        div.crumbs { a href="/" { "Repositories" } " / " (v.repo.as_str()) }
        h1 { (v.repo.as_str()) }
        p.sub {
            @match v.upstream {
                Some(h) => { "Cached from " strong { (h) } " · " }
                None => { "Private repository · " }
            }
            (v.total) " tags"
            " · " (v.manifests) " manifests"
        }
        div.panel {
            @if v.rows.is_empty() {
                p.empty { "No tags." }
            } @else {
                table {
                    thead { tr {
                        th { "Tag" } th { "Digest" } th.hide-narrow { "Type" } th { "Platforms" } th.num { "Size" }
                        th.hide-narrow { @if v.upstream.is_some() { "First cached" } @else { "Pushed" } }
                        th.hide-narrow { "Last pulled" }
                    } }
                    tbody {
                        @for r in v.rows {
                            tr data-tag=(r.tag) {
                                td { a href=(image_url(v.repo, &r.tag)) { (r.tag) } }
                                td.mono {
                                    @if let Some(d) = &r.digest {
                                        a href=(image_url(v.repo, d.to_string().as_str())) title=(d.to_string().as_str()) data-digest=(d.to_string().as_str()) { (short_digest(d.to_string().as_str())) }
                                    } @else { "—" }
                                }
                                td.hide-narrow { span.badge { (media_label(&r.media_type)) } }
                                td.platforms { (r.platforms.join(", ")) }
                                td.num.size data-bytes=[r.size] { @if let Some(s) = r.size { (size(s)) } @else { "—" } }
                                td.hide-narrow { @if let Some(t) = r.pushed { (time_ms(t)) } @else { "—" } }
                                td.hide-narrow { @if let Some(t) = r.pulled { (time_ms(t)) } @else { span.muted { "never" } } }
                            }
                        }
                    }
                }
            }
            (pager(&repo_url(v.repo), &[], v.page, v.pages))
        }
    }
}

/// Copy-ready pull references for one image.
pub struct PullRefs {
    /// `HOST/repo:tag` (or `@digest`) through Cove.
    pub by_tag: Option<String>,
    pub by_digest: String,
    /// `ctr` needs `--plain-http` when Cove is reached over http.
    pub plain_http: bool,
    /// The origin reference a cached image stands for.
    pub origin: Option<String>,
}

/// The image page's state.
pub struct ImageView<'a> {
    pub repo: &'a RepoName,
    pub reference: &'a str,
    pub image: &'a Image,
    pub pull: &'a PullRefs,
    pub raw: bool,
    /// The identity may delete this manifest (and the tag).
    pub can_delete: bool,
}

fn kv_list(items: &[String]) -> Markup {
    html! { @for (i, x) in items.iter().enumerate() { @if i > 0 { " " } code { (x) } } }
}

fn copy_row(id: &str, label: &str, text: &str) -> Markup {
    html! {
        div.row {
            span.label { (label) }
            code id=(id) { (text) }
            button.small.hidden type="button" data-copy=(id) { "Copy" }
        }
    }
}

fn descriptor_rows(repo: &RepoName, list: &[Descriptor], link: bool) -> Markup {
    html! {
        @for d in list {
            tr {
                td.mono.wrap {
                    @if link { a href=(image_url(repo, d.digest.to_string().as_str())) { (d.digest.to_string().as_str()) } }
                    @else { (d.digest.to_string().as_str()) }
                }
                td.hide-narrow { (d.artifact_type.as_deref().unwrap_or(&d.media_type)) }
                td.num data-bytes=(d.size) { (size(d.size)) }
            }
        }
    }
}

/// `/ui/image/<name>?ref=…`: a manifest or an index.
pub fn image_page(v: &ImageView<'_>) -> Markup {
    let img = v.image;
    let by_tag = v.reference != img.digest.to_string();
    html! {
        div.crumbs {
            a href="/" { "Repositories" } " / " a href=(repo_url(v.repo)) { (v.repo.as_str()) } " / " (v.reference)
        }
        h1 { (v.repo.as_str()) @if by_tag { ":" (v.reference) } }
        p.sub.mono { (img.digest.to_string().as_str()) }
        div.panel {
            h3 { "Pull" }
            div.pull {
                @let r = v.pull.by_tag.as_deref().unwrap_or(&v.pull.by_digest);
                (copy_row("pull-podman", "podman / docker", &format!("podman pull {r}")))
                (copy_row("pull-ctr", "containerd", &format!("ctr images pull {}{r}", if v.pull.plain_http { "--plain-http " } else { "" })))
                (copy_row("pull-k8s", "Kubernetes", &format!("image: {}", v.pull.by_digest)))
                @if let Some(o) = &v.pull.origin { (copy_row("pull-origin", "origin", o)) }
            }
        }
        div.panel {
            h3 { "Manifest" span.badge { (media_label(&img.media_type)) } }
            dl.kv {
                dt { "Digest" } dd.mono { (img.digest.to_string().as_str()) }
                dt { "Media type" } dd { (img.media_type) }
                @if let Some(at) = &img.artifact_type { dt { "Artifact type" } dd { (at) } }
                @if let Some(s) = img.total_size { dt { "Compressed size" } dd #total-size { (size(s)) " (" (s) " bytes)" } }
                @if let Some(s) = &img.subject {
                    dt { "Subject" } dd.mono { a href=(image_url(v.repo, s.digest.to_string().as_str())) { (s.digest.to_string().as_str()) } }
                }
            }
        }
        @if !img.children.is_empty() {
            div.panel #platforms {
                h3 { "Platforms" span.badge { (img.children.len()) } }
                table {
                    thead { tr { th { "Platform" } th { "Digest" } th.num { "Manifest size" } } }
                    tbody {
                        @for c in &img.children {
                            tr {
                                td.platform { (c.name) }
                                td.mono.wrap { a href=(image_url(v.repo, c.descriptor.digest.to_string().as_str())) { (c.descriptor.digest.to_string().as_str()) } }
                                td.num { (size(c.descriptor.size)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(cd) = &img.config_descriptor {
            div.panel #config {
                h3 { "Config" span.badge.mono { (short_digest(cd.digest.to_string().as_str())) } }
                @match &img.config {
                    None => p.empty { "The config blob is not held here." },
                    Some(c) => dl.kv {
                        @if let Some(p) = &c.platform { dt { "Platform" } dd { (p) } }
                        @if let Some(x) = &c.created { dt { "Created" } dd { (x) } }
                        @if let Some(x) = &c.author { dt { "Author" } dd { (x) } }
                        @if let Some(x) = &c.entrypoint { dt { "Entrypoint" } dd { (kv_list(x)) } }
                        @if let Some(x) = &c.cmd { dt { "Cmd" } dd { (kv_list(x)) } }
                        @if let Some(x) = &c.workdir { dt { "Working dir" } dd { code { (x) } } }
                        @if let Some(x) = &c.user { dt { "User" } dd { code { (x) } } }
                        @if !c.ports.is_empty() { dt { "Exposed ports" } dd { (kv_list(&c.ports)) } }
                        @if !c.env.is_empty() { dt { "Environment" } dd { @for e in &c.env { div { code { (e) } } } } }
                        @if !c.labels.is_empty() {
                            dt { "Labels" }
                            dd.labels { @for (k, val) in &c.labels { div { code { (k) } " = " span.label-value { (val) } } } }
                        }
                    },
                }
            }
        }
        @if !img.layers.is_empty() {
            div.panel #layers {
                h3 { "Layers" span.badge { (img.layers.len()) } }
                table {
                    thead { tr { th { "Digest" } th.hide-narrow { "Media type" } th.num { "Size" } } }
                    tbody { (descriptor_rows(v.repo, &img.layers, false)) }
                }
            }
        }
        @if !img.annotations.is_empty() {
            div.panel #annotations {
                h3 { "Annotations" }
                table { tbody {
                    @for (k, val) in &img.annotations { tr { td.mono.wrap { (k) } td.wrap.annotation-value { (val) } } }
                } }
            }
        }
        div.panel #referrers {
            h3 { "Referrers" span.badge { (img.referrers.len()) } }
            @if img.referrers.is_empty() {
                p.empty { "No signatures, SBOMs or attestations refer to this manifest." }
            } @else {
                table {
                    thead { tr { th { "Digest" } th.hide-narrow { "Artifact type" } th.num { "Size" } } }
                    tbody { (descriptor_rows(v.repo, &img.referrers, true)) }
                }
            }
        }
        div.panel {
            h3 {
                "Raw manifest"
                @if v.raw { a href=(image_url(v.repo, v.reference)) { "Hide" } }
                @else { a #show-raw href={ (image_url(v.repo, v.reference)) "&raw=1" } { "Show" } }
            }
            @if v.raw { pre.raw #raw { (pretty(&img.raw)) } }
        }
        @if v.can_delete {
            div.panel {
                h3 { "Delete" }
                div.pad.actions {
                    @if by_tag {
                        a.button href={ "/ui/delete/" (v.repo.as_str()) "?ref=" (q(v.reference)) } { "Delete tag " (v.reference) }
                    }
                    a.button href={ "/ui/delete/" (v.repo.as_str()) "?ref=" (q(img.digest.to_string().as_str())) } { "Delete manifest" }
                }
            }
        }
    }
}

/// Pretty-printed JSON (or the bytes as text when they are not JSON).
fn pretty(raw: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
}

/// The delete confirmation.
pub fn confirm_delete(repo: &RepoName, reference: &str, csrf: &str, tags_too: &[String]) -> Markup {
    let is_digest = reference.contains(':');
    html! {
        div.crumbs { a href="/" { "Repositories" } " / " a href=(repo_url(repo)) { (repo.as_str()) } }
        h1 { "Delete " @if is_digest { "manifest" } @else { "tag" } }
        div.panel {
            div.pad {
                p {
                    "This removes " code { (repo.as_str()) @if is_digest { "@" } @else { ":" } (reference) }
                    @if is_digest && !tags_too.is_empty() { " and the tags pointing at it (" (tags_too.join(", ")) ")" }
                    ". Blobs nothing else uses are freed by the next garbage collection."
                }
                form.actions method="post" action={ "/ui/delete/" (repo.as_str()) } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="ref" value=(reference);
                    button.danger #confirm-delete type="submit" { "Delete" }
                    a.button href=(image_url(repo, reference)) { "Cancel" }
                }
            }
        }
    }
}

/// A short message page (errors, results).
pub fn message(title: &str, text: &str, error: bool) -> Markup {
    html! {
        h1 { (title) }
        div.notice.error[error] { (text) }
        p { a href="/" { "Back to the repositories" } }
    }
}

/// A page that moves on to the local path `to` (validated by the caller).
pub fn refresh(to: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content={ "0;url=" (to) };
                title { "Signed in · Cove" }
                link rel="stylesheet" href=(assets::css_path());
            }
            body { main { p { "Signed in. " a #continue href=(to) { "Continue" } } } }
        }
    }
}

/// The login form.
pub fn login(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    html! {
        div.login {
            div.panel {
                h3 { "Sign in to Cove" }
                form method="post" action="/ui/login" {
                    @if let Some(e) = error { div.notice.error #login-error { (e) } }
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label { "User name" input type="text" name="username" autocomplete="username" required autofocus; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button.primary type="submit" { "Sign in" }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_escaped() {
        let evil = r#""><img src=x onerror=alert(1)><script>window.pwned=1</script>"#;
        let page = message(evil, evil, true).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;") && page.contains("&quot;&gt;&lt;img"), "{page}");
        let login = login(evil, evil, Some(evil)).into_string();
        assert!(!login.contains("<script>") && !login.contains("<img"), "{login}");
        assert!(login.contains("value=\"&quot;&gt;&lt;img"), "attribute values are escaped: {login}");
    }

    #[test]
    fn layout_links_hashed_assets_and_no_inline_code() {
        let f = Frame { title: "t", nav: "repos", user: Some("a<b"), csrf: "tok", logins: true };
        let page = layout(&f, html! { p { "x" } }).into_string();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains(assets::css_path()) && page.contains(assets::js_path()));
        assert!(page.contains("a&lt;b"));
        assert!(!page.contains("style=") && !page.contains("onclick") && !page.contains("<style"), "{page}");
        assert_eq!(page.matches("<script").count(), 1, "one external script, no inline ones: {page}");
    }

    #[test]
    fn formatting() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_500_000), "1.5 MB");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(time_ms(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(q("a b&c"), "a+b%26c");
    }
}
