//! Parses `/v2/…` paths into a typed [`Endpoint`]. Repository names contain
//! slashes, so paths are parsed from the right.

/// One OCI Distribution endpoint, with its raw (not yet validated) parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: String },
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: String, digest: String },
}

impl Endpoint {
    /// Parses a request path. `None` for paths outside the API.
    pub fn parse(path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Endpoint::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Endpoint::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        if n < 3 {
            return None;
        }
        let name = |k: usize| segs[..n - k].join("/");
        if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
            let id = segs[n - 1];
            return Some(if id.is_empty() {
                Endpoint::UploadStart { name: name(3) }
            } else {
                Endpoint::Upload { name: name(3), id: id.to_owned() }
            });
        }
        if segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
            return Some(Endpoint::UploadStart { name: name(2) });
        }
        let last = percent_decode(segs[n - 1]);
        match segs[n - 2] {
            "tags" if segs[n - 1] == "list" => Some(Endpoint::Tags { name: name(2) }),
            "manifests" => Some(Endpoint::Manifest { name: name(2), reference: last }),
            "blobs" => Some(Endpoint::Blob { name: name(2), digest: last }),
            "referrers" => Some(Endpoint::Referrers { name: name(2), digest: last }),
            _ => None,
        }
    }

    /// The raw repository name, if the endpoint has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Tags { name }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Manifest { .. } => "manifest",
            Endpoint::Blob { .. } => "blob",
            Endpoint::UploadStart { .. } | Endpoint::Upload { .. } => "upload",
            Endpoint::Tags { .. } => "tags",
            Endpoint::Referrers { .. } => "referrers",
        }
    }
}

/// Decodes `%XX` escapes (e.g. `sha256%3A…`); invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<Endpoint> {
        Endpoint::parse(s)
    }

    #[test]
    fn parses_from_the_right() {
        assert_eq!(p("/v2/"), Some(Endpoint::Base));
        assert_eq!(p("/v2"), Some(Endpoint::Base));
        assert_eq!(p("/v2/_catalog"), Some(Endpoint::Catalog));
        assert_eq!(
            p("/v2/docker.io/library/nginx/manifests/latest"),
            Some(Endpoint::Manifest { name: "docker.io/library/nginx".into(), reference: "latest".into() })
        );
        assert_eq!(p("/v2/a/blobs/uploads/"), Some(Endpoint::UploadStart { name: "a".into() }));
        assert_eq!(p("/v2/a/b/blobs/uploads"), Some(Endpoint::UploadStart { name: "a/b".into() }));
        assert_eq!(p("/v2/a/blobs/uploads/abc-1"), Some(Endpoint::Upload { name: "a".into(), id: "abc-1".into() }));
        assert_eq!(
            p("/v2/a/blobs/blobs/sha256%3Aab"),
            Some(Endpoint::Blob { name: "a/blobs".into(), digest: "sha256:ab".into() })
        );
        assert_eq!(p("/v2/x/tags/list"), Some(Endpoint::Tags { name: "x".into() }));
        assert_eq!(
            p("/v2/x/y/referrers/sha256:1"),
            Some(Endpoint::Referrers { name: "x/y".into(), digest: "sha256:1".into() })
        );
        assert_eq!(p("/v2/x/manifests/"), Some(Endpoint::Manifest { name: "x".into(), reference: "".into() }));
        assert_eq!(p("/v3/x/manifests/a"), None);
        assert_eq!(p("/v2/x/other/a"), None);
        assert_eq!(p("/v2/manifests/a"), None);
        assert_eq!(percent_decode("a%3Ab%zz%4"), "a:b%zz%4");
    }
}
