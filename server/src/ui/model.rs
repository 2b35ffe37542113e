//! What the pages show, read from storage only: the interface never asks an
//! upstream (so looking at a cached image neither counts as a pull nor
//! moves the cache's counters) and never buffers more than a manifest or a
//! small config blob.

use std::collections::BTreeMap;

use futures::StreamExt as _;

use cove_core::manifest::{parse_manifest, Descriptor};
use cove_core::retention::ActivityLog;
use cove_core::{Digest, Reference, Registry, RegistryError, RepoName, Storage, Tag};

/// The largest config blob read for display.
const MAX_CONFIG: usize = 1024 * 1024;

/// One repository in the list.
pub struct RepoEntry {
    pub name: RepoName,
    /// The upstream host of a cached repository; `None` for a private one.
    pub upstream: Option<String>,
    /// How many tags it has (read for the entries of the page shown).
    pub tags: Option<usize>,
}

/// The repositories `visible` admits, grouped: private first, then cached
/// ones by upstream host, each in name order. `pick` is given how many there
/// are and answers which of them to return (a page); returns those and the
/// count. Read from the in-memory index once it is ready (no store
/// request), else from a walk of the store.
pub async fn repositories(
    registry: &Registry,
    visible: impl Fn(&RepoName) -> bool,
    pick: impl Fn(usize) -> std::ops::Range<usize>,
) -> Result<(Vec<RepoEntry>, usize), RegistryError> {
    let is_cached = |name: &RepoName| registry.cache().is_some_and(|c| c.is_cached(name));
    let select = |names: &mut dyn Iterator<Item = &RepoName>| {
        let mut admitted: Vec<(bool, &RepoName)> = names.filter(|n| visible(n)).map(|n| (is_cached(n), n)).collect();
        // Stable: names stay in order within each group, and a cached name
        // starts with its upstream host, so name order groups by upstream.
        admitted.sort_by_key(|(cached, _)| *cached);
        let total = admitted.len();
        let range = pick(total);
        let entries = admitted
            .into_iter()
            .skip(range.start)
            .take(range.len())
            .map(|(cached, name)| RepoEntry {
                name: name.clone(),
                upstream: cached.then(|| name.first_component().to_owned()),
                tags: None,
            })
            .collect();
        (entries, total)
    };
    let indexed = registry.repo_index().and_then(|index| index.read(|names| select(&mut names.iter())));
    match indexed {
        Some(found) => Ok(found),
        None => Ok(select(&mut registry.storage().repo_list().await?.iter())),
    }
}

/// One tag of a repository, as its row shows it.
pub struct TagRow {
    pub tag: String,
    pub digest: Option<Digest>,
    pub media_type: String,
    /// `os/arch[/variant]` of each platform (an index's children, or the
    /// image's config).
    pub platforms: Vec<String>,
    /// Compressed size: config + layers (every locally held platform for
    /// an index).
    pub size: Option<u64>,
    /// Last push or first caching (Unix ms), from the activity log.
    pub pushed: Option<u64>,
    pub pulled: Option<u64>,
}

/// Reads the row of `repo:tag`.
pub async fn tag_row(storage: &dyn Storage, activity: Option<&ActivityLog>, repo: &RepoName, tag: &str) -> TagRow {
    let times = activity.and_then(|a| a.tag_times(repo, tag));
    let mut row = TagRow {
        tag: tag.to_owned(),
        digest: None,
        media_type: String::new(),
        platforms: Vec::new(),
        size: None,
        pushed: times.map(|t| t.pushed),
        pulled: times.and_then(|t| t.pulled),
    };
    let Ok(t) = tag.parse::<Tag>() else { return row };
    let Ok(Some(digest)) = storage.tag_get(repo, &t).await else { return row };
    row.digest = Some(digest.clone());
    if let Some(img) = image(storage, repo, &Reference::Digest(digest)).await.ok().flatten() {
        row.media_type = img.media_type.clone();
        row.platforms = img.platforms();
        row.size = img.total_size;
    }
    row
}

/// A platform of an index, with the child manifest it names.
pub struct Platform {
    pub descriptor: Descriptor,
    pub name: String,
}

/// An image's config, the parts people look for.
#[derive(Default)]
pub struct ImageConfig {
    pub platform: Option<String>,
    pub created: Option<String>,
    pub author: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<String>,
}

/// A manifest or index and what it refers to.
pub struct Image {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub raw: bytes::Bytes,
    /// Index children (empty for an image manifest).
    pub children: Vec<Platform>,
    pub config_descriptor: Option<Descriptor>,
    /// `None` when the config blob is not held (or not JSON).
    pub config: Option<ImageConfig>,
    pub layers: Vec<Descriptor>,
    pub annotations: BTreeMap<String, String>,
    pub subject: Option<Descriptor>,
    pub referrers: Vec<Descriptor>,
    pub total_size: Option<u64>,
}

impl Image {
    /// Whether this is an index (manifest list).
    pub fn is_index(&self) -> bool {
        !self.children.is_empty() || self.config_descriptor.is_none()
    }

    /// Platform names: an index's children, or the config's own.
    pub fn platforms(&self) -> Vec<String> {
        if self.is_index() {
            self.children.iter().map(|c| c.name.clone()).collect()
        } else {
            self.config.as_ref().and_then(|c| c.platform.clone()).into_iter().collect()
        }
    }
}

/// Reads `repo@reference` from storage: `Ok(None)` when it is not held.
pub async fn image(
    storage: &dyn Storage,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<Image>, RegistryError> {
    let digest = match reference {
        Reference::Digest(d) => d.clone(),
        Reference::Tag(t) => match storage.tag_get(repo, t).await? {
            Some(d) => d,
            None => return Ok(None),
        },
    };
    let Some(stored) = storage.manifest_get(repo, &digest).await? else {
        return Ok(None);
    };
    let parsed = parse_manifest(&stored.bytes, Some(&stored.media_type))?;
    let children: Vec<Platform> = parsed
        .manifests
        .iter()
        .map(|d| Platform { name: platform_name(d.platform.as_ref()), descriptor: d.clone() })
        .collect();
    let config = match &parsed.config {
        Some(c) => read_config(storage, &c.digest).await,
        None => None,
    };
    let total_size = if parsed.is_index() {
        let mut sum = 0u64;
        let mut any = false;
        for c in &parsed.manifests {
            if let Ok(Some(m)) = storage.manifest_get(repo, &c.digest).await {
                if let Ok(p) = parse_manifest(&m.bytes, Some(&m.media_type)) {
                    sum += p.config.iter().chain(p.layers.iter()).map(|d| d.size).sum::<u64>();
                    any = true;
                }
            }
        }
        any.then_some(sum)
    } else {
        Some(parsed.config.iter().chain(parsed.layers.iter()).map(|d| d.size).sum())
    };
    let referrers = storage.referrers(repo, &digest).await.unwrap_or_default();
    Ok(Some(Image {
        digest,
        media_type: parsed.media_type.clone(),
        artifact_type: parsed.artifact_type.clone(),
        raw: stored.bytes,
        children,
        config_descriptor: parsed.config.clone(),
        config,
        layers: parsed.layers.clone(),
        annotations: parsed.annotations.clone().unwrap_or_default(),
        subject: parsed.subject.clone(),
        referrers,
        total_size,
    }))
}

/// `os/arch[/variant]` of an index entry's platform.
pub fn platform_name(p: Option<&serde_json::Value>) -> String {
    let Some(p) = p else { return "unknown".into() };
    let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let mut name = format!("{}/{}", s("os"), s("architecture"));
    if !s("variant").is_empty() {
        name.push('/');
        name.push_str(s("variant"));
    }
    name
}

/// Reads and parses a config blob of at most [`MAX_CONFIG`] bytes.
async fn read_config(storage: &dyn Storage, digest: &Digest) -> Option<ImageConfig> {
    match storage.blob_size(digest).await {
        Ok(Some(n)) if n as usize <= MAX_CONFIG => {}
        _ => return None,
    }
    let mut stream = storage.blob_read(digest, None).await.ok()?;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.ok()?);
        if buf.len() > MAX_CONFIG {
            return None;
        }
    }
    parse_config(&buf)
}

/// The displayable parts of an OCI/Docker image config.
pub fn parse_config(bytes: &[u8]) -> Option<ImageConfig> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if !v.is_object() {
        return None;
    }
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let list = |v: Option<&serde_json::Value>| {
        v.and_then(|x| x.as_array()).map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
    };
    let c = v.get("config").cloned().unwrap_or(serde_json::Value::Null);
    let platform = match (s(&v, "os"), s(&v, "architecture")) {
        (Some(os), Some(arch)) => Some(match s(&v, "variant") {
            Some(var) if !var.is_empty() => format!("{os}/{arch}/{var}"),
            _ => format!("{os}/{arch}"),
        }),
        _ => None,
    };
    let labels = c
        .get("Labels")
        .and_then(|l| l.as_object())
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default();
    let ports =
        c.get("ExposedPorts").and_then(|p| p.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    Some(ImageConfig {
        platform,
        created: s(&v, "created"),
        author: s(&v, "author"),
        entrypoint: list(c.get("Entrypoint")),
        cmd: list(c.get("Cmd")),
        workdir: s(&c, "WorkingDir").filter(|w| !w.is_empty()),
        user: s(&c, "User").filter(|u| !u.is_empty()),
        env: list(c.get("Env")).unwrap_or_default(),
        labels,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_are_read() {
        let cfg = br#"{"architecture":"arm64","os":"linux","variant":"v8","created":"2026-01-02T03:04:05Z",
            "config":{"Entrypoint":["/bin/app"],"Cmd":["--serve"],"Env":["A=1"],"Labels":{"x":"<b>"},
            "ExposedPorts":{"8080/tcp":{}},"WorkingDir":"/srv"}}"#;
        let c = parse_config(cfg).expect("config");
        assert_eq!(c.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(c.entrypoint, Some(vec!["/bin/app".to_owned()]));
        assert_eq!(c.cmd, Some(vec!["--serve".to_owned()]));
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.labels.get("x").map(String::as_str), Some("<b>"));
        assert_eq!(c.ports, ["8080/tcp"]);
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert!(parse_config(b"[1]").is_none());
        assert!(parse_config(b"not json").is_none());
        let p = serde_json::json!({"os": "linux", "architecture": "amd64"});
        assert_eq!(platform_name(Some(&p)), "linux/amd64");
        assert_eq!(platform_name(None), "unknown");
    }
}
