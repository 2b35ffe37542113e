//! The repository list (filter, pages) and a repository's page (its tags
//! with size, platforms and last pull, in pages).

use maud::{html, Markup};

use cove_core::RepoName;

use super::{image_url, media_label, q, repo_url, short_digest, size, time_ms};
use crate::ui::model::{RepoEntry, TagRow};

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
