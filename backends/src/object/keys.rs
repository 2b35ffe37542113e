//! Keys inside the bucket: the shared [`Layout::OBJECT`] below an optional
//! prefix, plus the names of an upload session's own objects (see the module
//! doc of `object`). Every key is built from validated values only.

use cove_core::storage::Layout;
use cove_core::Digest;
use object_store::path::Path;

/// The layout in a bucket.
const L: Layout = Layout::OBJECT;

/// Builds keys under an optional prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    root: Path,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys { root: Path::from(prefix) }
    }

    /// The key of a layout name (`/`-separated, relative to the prefix).
    pub fn at(&self, rel: &str) -> Path {
        rel.split('/').filter(|s| !s.is_empty()).fold(self.root.clone(), |p, part| p.join(part))
    }

    /// The parts of `path` below `base`, if it is below.
    pub fn rel(&self, base: &Path, path: &Path) -> Option<Vec<String>> {
        path.prefix_match(base).map(|it| it.map(|p| p.as_ref().to_owned()).collect())
    }

    pub fn blob(&self, d: &Digest) -> Path {
        self.at(&L.blob(d))
    }

    /// Every object of one upload session lives below this.
    pub fn upload_dir(&self, id: &str) -> Path {
        self.at(&L.upload(id))
    }

    pub fn upload_session(&self, id: &str) -> Path {
        self.upload_dir(id).join("session.json")
    }

    /// The multipart target: the assembled upload before it is copied
    /// under its digest.
    pub fn upload_data(&self, id: &str) -> Path {
        self.upload_dir(id).join("data")
    }

    pub fn upload_tail(&self, id: &str, name: &str) -> Path {
        self.upload_dir(id).join("tail").join(name)
    }

    pub fn check(&self, id: &str) -> Path {
        self.at(&format!("_check/{id}"))
    }
}
