//! [`Layout`]: the OCI storage layout, written once for every backend. The
//! names of blobs, manifests, tags, links, referrer records, upload session
//! directories and shared-state documents relative to a store's root, the
//! encoding of the small records kept there, and the way back from a listed
//! name to a digest or a tag. The filesystem backend joins these names to
//! its root directory, the object backend to its key prefix; both follow the
//! same tree, with the few differences each medium needs spelled out as the
//! fields of [`Layout::FILESYSTEM`] and [`Layout::OBJECT`]:
//!
//! ```text
//! blobs/<alg>/<hex>                                  (object)
//! blobs/<alg>/<first 2 hex>/<hex>                    (filesystem: keeps directories small)
//! uploads/<id>/…                                     upload sessions (each backend's own files)
//! repositories/<repo>/_manifests/<alg>/<hex>         "<media type>\n<exact manifest bytes>"
//! repositories/<repo>/_tags/<tag>                    "<alg>:<hex>" of the tagged manifest
//!                                                    (filesystem: upper-case letters escaped)
//! repositories/<repo>/_links/<alg>/<hex>             empty: <repo> may serve that blob
//! repositories/<repo>/_referrers/<alg>/<subject hex>/<alg>-<hex>
//!                                                    descriptor JSON of a referrer of the subject
//!                                                    (object: the referrer's hex cut to 32 digits)
//! shared/<name>  (filesystem), _shared/<name>  (object)
//!                                                    shared-state documents
//! ```
//!
//! `<repo>` is the repository name, its `/`-separated components nested.
//! Repository name components never start with `_`, so the `_manifests`
//! markers cannot collide with a nested repository. Every name is built from
//! validated values only (digests, repository names, tags, upload ids,
//! shared-state names), never from raw client input.

use bytes::Bytes;

use super::{valid_state_name, StorageError, StoredManifest};
use crate::digest::{Algorithm, Digest};
use crate::manifest::Descriptor;
use crate::name::{RepoName, Tag};

/// The directory of committed blobs.
pub const BLOBS: &str = "blobs";
/// The directory of upload sessions.
pub const UPLOADS: &str = "uploads";
/// The directory of repositories.
pub const REPOSITORIES: &str = "repositories";
/// The marker directory of a repository's manifests (a repository is a
/// directory that holds one with at least one manifest).
pub const MANIFESTS: &str = "_manifests";
const TAGS: &str = "_tags";
const LINKS: &str = "_links";
const REFERRERS: &str = "_referrers";

/// How one medium spells the layout (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Blobs sit below a directory named by their first two hex digits.
    pub blob_fan_out: bool,
    /// Upper-case letters of tags are written as `^` + the lower-case
    /// letter, so that tags differing only in case stay distinct on
    /// case-insensitive filesystems (macOS by default). `^` cannot occur in
    /// a tag.
    pub escape_tag_case: bool,
    /// Referrer records are named by the first 32 hex digits (128 bits) of
    /// the referrer's digest, keeping keys short enough for filesystem-backed
    /// object servers (s3s-fs fails above ~164 bytes); the record holds the
    /// full descriptor.
    pub short_referrer_names: bool,
    /// The directory of shared-state documents.
    pub shared: &'static str,
}

impl Layout {
    /// The layout on a local filesystem.
    pub const FILESYSTEM: Layout =
        Layout { blob_fan_out: true, escape_tag_case: true, short_referrer_names: false, shared: "shared" };

    /// The layout in an object store's bucket.
    pub const OBJECT: Layout =
        Layout { blob_fan_out: false, escape_tag_case: false, short_referrer_names: true, shared: "_shared" };

    /// A committed blob.
    pub fn blob(&self, d: &Digest) -> String {
        let (alg, hex) = (d.algorithm().as_str(), d.hex());
        match hex.get(..2).filter(|_| self.blob_fan_out) {
            Some(fan) => format!("{BLOBS}/{alg}/{fan}/{hex}"),
            None => format!("{BLOBS}/{alg}/{hex}"),
        }
    }

    /// The digest of a blob listed below [`BLOBS`] as its name parts
    /// (`[alg, hex]`, or `[alg, fan, hex]` with the fan-out); `None` for
    /// anything that is not a blob of this layout.
    pub fn blob_from_parts<S: AsRef<str>>(&self, parts: &[S]) -> Option<Digest> {
        match (parts, self.blob_fan_out) {
            ([alg, fan, hex], true) if hex.as_ref().starts_with(fan.as_ref()) && fan.as_ref().len() == 2 => {
                digest_from_parts(alg.as_ref(), hex.as_ref())
            }
            ([alg, hex], false) => digest_from_parts(alg.as_ref(), hex.as_ref()),
            _ => None,
        }
    }

    /// The directory of one upload session (`id` already validated).
    pub fn upload(&self, id: &str) -> String {
        format!("{UPLOADS}/{id}")
    }

    /// A repository's directory.
    pub fn repo(&self, repo: &RepoName) -> String {
        format!("{REPOSITORIES}/{}", repo.as_str())
    }

    /// The directory of a repository's manifests.
    pub fn manifests(&self, repo: &RepoName) -> String {
        format!("{}/{MANIFESTS}", self.repo(repo))
    }

    /// One stored manifest.
    pub fn manifest(&self, repo: &RepoName, d: &Digest) -> String {
        format!("{}/{}/{}", self.manifests(repo), d.algorithm().as_str(), d.hex())
    }

    /// The directory of a repository's tags.
    pub fn tags(&self, repo: &RepoName) -> String {
        format!("{}/{TAGS}", self.repo(repo))
    }

    /// One tag record.
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> String {
        format!("{}/{}", self.tags(repo), self.tag_name(tag))
    }

    /// The name of a tag's record inside [`Layout::tags`].
    pub fn tag_name(&self, tag: &Tag) -> String {
        if !self.escape_tag_case {
            return tag.as_str().to_owned();
        }
        let mut out = String::with_capacity(tag.as_str().len() + 4);
        for c in tag.as_str().chars() {
            if c.is_ascii_uppercase() {
                out.push('^');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The tag a record listed in [`Layout::tags`] is named for; `None` for
    /// anything that is not a valid tag.
    pub fn tag_from_name(&self, name: &str) -> Option<String> {
        let tag = if self.escape_tag_case {
            let mut out = String::with_capacity(name.len());
            let mut upper = false;
            for c in name.chars() {
                if c == '^' {
                    upper = true;
                } else if upper {
                    out.push(c.to_ascii_uppercase());
                    upper = false;
                } else {
                    out.push(c);
                }
            }
            out
        } else {
            name.to_owned()
        };
        tag.parse::<Tag>().is_ok().then_some(tag)
    }

    /// The link that lets `repo` serve blob `d`.
    pub fn link(&self, repo: &RepoName, d: &Digest) -> String {
        format!("{}/{LINKS}/{}/{}", self.repo(repo), d.algorithm().as_str(), d.hex())
    }

    /// The directory of the referrer records of `subject`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> String {
        format!("{}/{REFERRERS}/{}/{}", self.repo(repo), subject.algorithm().as_str(), subject.hex())
    }

    /// One referrer record.
    pub fn referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> String {
        format!("{}/{}", self.referrers(repo, subject), self.referrer_name(referrer))
    }

    /// The name of a referrer's record inside [`Layout::referrers`]:
    /// `<alg>-<hex>`, which sorts like the digests themselves (shortened
    /// with [`Layout::short_referrer_names`]).
    pub fn referrer_name(&self, d: &Digest) -> String {
        let hex = if self.short_referrer_names { d.hex().get(..32).unwrap_or(d.hex()) } else { d.hex() };
        format!("{}-{hex}", d.algorithm().as_str())
    }

    /// The referrer a record is named for, where names hold whole digests.
    pub fn referrer_from_name(&self, name: &str) -> Option<Digest> {
        let (alg, hex) = name.split_once('-')?;
        digest_from_parts(alg, hex)
    }

    /// A shared-state document or directory; `name` must be a valid state
    /// name ([`valid_state_name`]).
    pub fn state(&self, name: &str) -> Result<String, StorageError> {
        if !valid_state_name(name) {
            return Err(StorageError::Backend(format!("invalid shared-state name {name:?}")));
        }
        Ok(format!("{}/{name}", self.shared))
    }
}

/// Parses `<alg>` and `<hex>` name parts back into a digest.
pub fn digest_from_parts(alg: &str, hex: &str) -> Option<Digest> {
    let alg = match alg {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return None,
    };
    Digest::new(alg, hex).ok()
}

/// A stored manifest record: the media type, a newline, the exact bytes.
pub fn encode_manifest(m: &StoredManifest) -> Result<Vec<u8>, StorageError> {
    if m.media_type.contains(['\n', '\r']) {
        return Err(StorageError::Backend("manifest media type contains a line break".into()));
    }
    let mut body = Vec::with_capacity(m.media_type.len() + 1 + m.bytes.len());
    body.extend_from_slice(m.media_type.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(&m.bytes);
    Ok(body)
}

/// The inverse of [`encode_manifest`]; `d` names the manifest in errors.
pub fn decode_manifest(raw: Bytes, d: &Digest) -> Result<StoredManifest, StorageError> {
    let corrupt = || StorageError::Backend(format!("stored manifest {d} is corrupt"));
    let nl = raw.iter().position(|b| *b == b'\n').ok_or_else(corrupt)?;
    let media_type = std::str::from_utf8(&raw[..nl]).map_err(|_| corrupt())?.to_owned();
    Ok(StoredManifest { media_type, bytes: raw.slice(nl + 1..) })
}

/// A tag record: the digest it points at.
pub fn encode_tag(d: &Digest) -> String {
    d.to_string()
}

/// The inverse of [`encode_tag`]; `repo` and `tag` name it in errors.
pub fn decode_tag(raw: &[u8], repo: &RepoName, tag: &Tag) -> Result<Digest, StorageError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse::<Digest>().ok())
        .ok_or_else(|| StorageError::Backend(format!("tag record of {repo}:{tag} is corrupt")))
}

/// A referrer record: the referrer's descriptor as JSON.
pub fn encode_referrer(desc: &Descriptor) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(desc).map_err(|e| StorageError::Backend(format!("encoding a referrer record: {e}")))
}

/// The inverse of [`encode_referrer`].
pub fn decode_referrer(raw: &[u8]) -> Result<Descriptor, StorageError> {
    serde_json::from_slice(raw).map_err(|e| StorageError::Backend(format!("corrupt referrer record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(byte: &str) -> Digest {
        Digest::sha256_of(byte.as_bytes())
    }

    #[test]
    fn filesystem_and_object_names() {
        let (repo, digest) = ("library/nginx".parse::<RepoName>().expect("repo"), d("x"));
        let hex = digest.hex().to_owned();
        assert_eq!(Layout::FILESYSTEM.blob(&digest), format!("blobs/sha256/{}/{hex}", &hex[..2]));
        assert_eq!(Layout::OBJECT.blob(&digest), format!("blobs/sha256/{hex}"));
        assert_eq!(
            Layout::FILESYSTEM.manifest(&repo, &digest),
            format!("repositories/library/nginx/_manifests/sha256/{hex}")
        );
        assert_eq!(Layout::OBJECT.link(&repo, &digest), format!("repositories/library/nginx/_links/sha256/{hex}"));
        assert_eq!(
            Layout::OBJECT.referrer(&repo, &digest, &digest),
            format!("repositories/library/nginx/_referrers/sha256/{hex}/sha256-{}", &hex[..32])
        );
        assert_eq!(Layout::FILESYSTEM.referrer_name(&digest), format!("sha256-{hex}"));
        assert_eq!(Layout::FILESYSTEM.state("keys/a").expect("state"), "shared/keys/a");
        assert_eq!(Layout::OBJECT.state("keys/a").expect("state"), "_shared/keys/a");
        assert!(Layout::OBJECT.state("../x").is_err());
    }

    #[test]
    fn listed_names_parse_back() {
        let digest = d("y");
        for layout in [Layout::FILESYSTEM, Layout::OBJECT] {
            let name = layout.blob(&digest);
            let parts: Vec<&str> = name.split('/').skip(1).collect();
            assert_eq!(layout.blob_from_parts(&parts), Some(digest.clone()), "{layout:?}");
        }
        let hex = digest.hex().to_owned();
        let hex = hex.as_str();
        assert_eq!(Layout::FILESYSTEM.blob_from_parts(&["sha256", "zz", hex]), None, "wrong fan-out directory");
        assert_eq!(Layout::OBJECT.blob_from_parts(&["sha256", &hex[..2], hex]), None);
        assert_eq!(Layout::FILESYSTEM.referrer_from_name(&Layout::FILESYSTEM.referrer_name(&digest)), Some(digest));
        assert_eq!(Layout::FILESYSTEM.blob_from_parts(&["md5", &hex[..2], hex]), None);
    }

    #[test]
    fn tags_escape_case_on_the_filesystem_only() {
        let tag = "V1.0-Beta".parse::<Tag>().expect("tag");
        assert_eq!(Layout::FILESYSTEM.tag_name(&tag), "^v1.0-^beta");
        assert_eq!(Layout::OBJECT.tag_name(&tag), "V1.0-Beta");
        for layout in [Layout::FILESYSTEM, Layout::OBJECT] {
            assert_eq!(layout.tag_from_name(&layout.tag_name(&tag)).as_deref(), Some("V1.0-Beta"));
        }
        assert_eq!(Layout::OBJECT.tag_from_name("no/slash"), None, "not a tag");
    }

    #[test]
    fn records_round_trip_and_corrupt_ones_are_errors() {
        let m = StoredManifest { media_type: "application/vnd.oci.image.manifest.v1+json".into(), bytes: "{}".into() };
        let digest = d("m");
        let raw = encode_manifest(&m).expect("encode");
        let back = decode_manifest(Bytes::from(raw), &digest).expect("decode");
        assert_eq!((back.media_type, back.bytes), (m.media_type, m.bytes));
        assert!(decode_manifest(Bytes::from_static(b"no newline"), &digest).is_err());
        assert!(encode_manifest(&StoredManifest { media_type: "a\nb".into(), bytes: Bytes::new() }).is_err());
        let (repo, tag) = ("r".parse::<RepoName>().expect("repo"), "t".parse::<Tag>().expect("tag"));
        assert_eq!(decode_tag(encode_tag(&digest).as_bytes(), &repo, &tag).expect("tag"), digest);
        assert!(decode_tag(b"sha256:zz", &repo, &tag).is_err());
    }
}
