//! The key layout inside the bucket (see the module doc of `object`). Every
//! key is built from validated values only (digests, repository names, tags,
//! upload ids), never from raw client input.

use cove_core::{Algorithm, Digest, RepoName, Tag};
use object_store::path::Path;

/// Builds keys under an optional prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: Path,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys { root: Path::from(prefix) }
    }

    fn join(&self, rel: &str) -> Path {
        let mut p = self.root.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The parts of `path` below `base`, if it is below.
    pub fn rel(&self, base: &Path, path: &Path) -> Option<Vec<String>> {
        path.prefix_match(base).map(|it| it.map(|p| p.as_ref().to_owned()).collect())
    }

    pub fn blobs_root(&self) -> Path {
        self.join("blobs")
    }

    pub fn blob(&self, d: &Digest) -> Path {
        self.join(&format!("blobs/{}/{}", d.algorithm().as_str(), d.hex()))
    }

    pub fn uploads_root(&self) -> Path {
        self.join("uploads")
    }

    /// Every object of one upload session lives below this.
    pub fn upload_dir(&self, id: &str) -> Path {
        self.join(&format!("uploads/{id}"))
    }

    pub fn upload_session(&self, id: &str) -> Path {
        self.join(&format!("uploads/{id}/session.json"))
    }

    /// The multipart target: the assembled upload before it is copied
    /// under its digest.
    pub fn upload_data(&self, id: &str) -> Path {
        self.join(&format!("uploads/{id}/data"))
    }

    pub fn upload_tail(&self, id: &str, name: &str) -> Path {
        self.join(&format!("uploads/{id}/tail/{name}"))
    }

    pub fn repositories_root(&self) -> Path {
        self.join("repositories")
    }

    fn repo(&self, repo: &RepoName, rest: &str) -> Path {
        self.join(&format!("repositories/{}/{rest}", repo.as_str()))
    }

    pub fn manifests_dir(&self, repo: &RepoName) -> Path {
        self.repo(repo, "_manifests")
    }

    pub fn manifest(&self, repo: &RepoName, d: &Digest) -> Path {
        self.repo(repo, &format!("_manifests/{}/{}", d.algorithm().as_str(), d.hex()))
    }

    pub fn tags_dir(&self, repo: &RepoName) -> Path {
        self.repo(repo, "_tags")
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Path {
        self.repo(repo, &format!("_tags/{}", tag.as_str()))
    }

    pub fn link(&self, repo: &RepoName, d: &Digest) -> Path {
        self.repo(repo, &format!("_links/{}/{}", d.algorithm().as_str(), d.hex()))
    }

    pub fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> Path {
        self.repo(repo, &format!("_referrers/{}/{}", subject.algorithm().as_str(), subject.hex()))
    }

    /// One referrer record. The referrer is named by its algorithm and the
    /// first 32 hex digits (128 bits) of its digest, keeping keys short
    /// enough for filesystem-backed servers (s3s-fs fails above ~164
    /// bytes); the object holds the full descriptor.
    pub fn referrer(&self, repo: &RepoName, subject: &Digest, referrer: &Digest) -> Path {
        let short = referrer.hex().get(..32).unwrap_or(referrer.hex());
        self.repo(
            repo,
            &format!(
                "_referrers/{}/{}/{}-{short}",
                subject.algorithm().as_str(),
                subject.hex(),
                referrer.algorithm().as_str(),
            ),
        )
    }

    /// A shared-state document or directory (name already validated).
    pub fn state(&self, name: &str) -> Path {
        self.join(&format!("_shared/{name}"))
    }

    pub fn check(&self, id: &str) -> Path {
        self.join(&format!("_check/{id}"))
    }
}

/// Parses `[<alg>, <hex>]` key parts back into a digest.
pub(crate) fn digest_from_parts(alg: &str, hex: &str) -> Option<Digest> {
    let alg = match alg {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        _ => return None,
    };
    Digest::new(alg, hex).ok()
}
