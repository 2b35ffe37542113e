//! An image's page (pull references, platforms, layers, config, labels,
//! annotations, referrers, the raw manifest) and the confirmation before a
//! delete.

use maud::{html, Markup};

use cove_core::manifest::Descriptor;
use cove_core::RepoName;

use super::{image_url, media_label, q, repo_url, short_digest, size};
use crate::ui::model::Image;

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
