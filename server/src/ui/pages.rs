//! The pages, as maud templates. maud escapes every `(expression)` it
//! splices in; nothing here uses `PreEscaped` on data from clients or
//! upstreams (names, tags, annotations, labels, config values, the Host
//! header): the only pre-escaped markup is maud's own output.
//!
//! This file holds the frame every page shares, the formatting and URL
//! helpers, and the small pages (messages, login, refresh); `repos` holds
//! the repository list and a repository's page, `image` an image's page and
//! the delete confirmation.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, DOCTYPE};

use cove_core::RepoName;

use super::assets;

mod image;
mod repos;

pub use image::{confirm_delete, image_page, ImageView, PullRefs};
pub use repos::{repo_list, repo_page, ListView, RepoView};

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
