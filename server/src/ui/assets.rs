//! The interface's static assets: one stylesheet and one small script,
//! embedded in the binary and served under names carrying a hash of their
//! content, so browsers may cache them for a year and a new build is never
//! shadowed by an old copy.

use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// One embedded file.
pub struct Asset {
    /// `/ui/assets/app.<hash>.css`
    pub path: String,
    pub content_type: &'static str,
    pub body: &'static str,
}

fn hashed(stem: &str, ext: &str, body: &str) -> String {
    let h = hex::encode(Sha256::digest(body.as_bytes()));
    format!("/ui/assets/{stem}.{}.{ext}", &h[..16])
}

fn all() -> &'static [Asset; 2] {
    static ASSETS: OnceLock<[Asset; 2]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        [
            Asset { path: hashed("app", "css", CSS), content_type: "text/css; charset=utf-8", body: CSS },
            Asset { path: hashed("app", "js", JS), content_type: "text/javascript; charset=utf-8", body: JS },
        ]
    })
}

/// The stylesheet's URL path.
pub fn css_path() -> &'static str {
    &all()[0].path
}

/// The script's URL path.
pub fn js_path() -> &'static str {
    &all()[1].path
}

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<&'static Asset> {
    all().iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_content_hashed_names() {
        assert!(css_path().starts_with("/ui/assets/app.") && css_path().ends_with(".css"));
        assert!(find(css_path()).is_some_and(|a| a.body.contains("prefers-color-scheme")));
        assert!(find(js_path()).is_some_and(|a| a.content_type.starts_with("text/javascript")));
        assert!(find("/ui/assets/app.css").is_none(), "only the hashed name is served");
    }
}
