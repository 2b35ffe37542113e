//! `[[prefetch]]`: images Cove keeps warm in its cache, pulled at start and
//! on a schedule.
//!
//! ```toml
//! [[prefetch]]
//! image = "docker.io/library/alpine:3.20"   # a tag or @sha256:… digest
//! platforms = ["linux/amd64", "linux/arm64"] # of an index; default: all
//! pin = true                                 # never evicted by retention
//! interval = "6h"                            # default 6h
//!
//! [[prefetch]]
//! repository = "docker.io/library/nginx"     # every upstream tag that
//! tags = "1.27*"                             # matches (`*`, `?`)
//! ```

use std::time::Duration;

use cove_core::registry::prefetch::Platform;
use cove_core::{Reference, RepoName};
use serde::Deserialize;

use super::parse_duration;

/// One `[[prefetch]]` entry: `image`, or `repository` with `tags`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchEntry {
    /// An image reference in an upstream's namespace
    /// (`docker.io/library/alpine:3.20`, `ghcr.io/o/app@sha256:…`; no tag
    /// means `latest`).
    #[serde(default)]
    pub image: Option<String>,
    /// A cached repository whose upstream tags matching `tags` are pulled.
    #[serde(default)]
    pub repository: Option<String>,
    /// Tag pattern for `repository`: `*` any run of characters, `?` one.
    #[serde(default)]
    pub tags: Option<String>,
    /// Platforms of a multi-platform index (`os/arch[/variant]`); empty
    /// means every platform.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Exempt the prefetched tags from cache retention.
    #[serde(default)]
    pub pin: bool,
    /// Time between pulls. Default `"6h"`.
    #[serde(default = "default_interval")]
    pub interval: String,
}

fn default_interval() -> String {
    "6h".into()
}

/// What an entry names, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefetchWhat {
    Reference(Reference),
    /// A tag pattern.
    Tags(String),
}

/// A validated `[[prefetch]]` entry.
#[derive(Debug, Clone)]
pub struct PrefetchSpec {
    pub repo: RepoName,
    pub what: PrefetchWhat,
    pub platforms: Vec<Platform>,
    pub pin: bool,
    pub interval: Duration,
}

impl PrefetchSpec {
    /// Whether the tag `tag` of `repo` is one this entry pins.
    pub fn pins(&self, repo: &RepoName, tag: &str) -> bool {
        self.pin
            && *repo == self.repo
            && match &self.what {
                PrefetchWhat::Reference(Reference::Tag(t)) => t.as_str() == tag,
                PrefetchWhat::Reference(Reference::Digest(_)) => false,
                PrefetchWhat::Tags(p) => glob_match(p, tag),
            }
    }
}

/// Splits `name[:tag|@digest]` (no tag: `latest`), normalising Docker
/// Hub's official images (`docker.io/alpine` is `docker.io/library/alpine`).
pub fn parse_image_ref(s: &str) -> Result<(RepoName, Reference), String> {
    let s = s.trim();
    let (name, reference) = match s.split_once('@') {
        Some((n, d)) => (n, d.to_owned()),
        None => match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_owned()),
            _ => (s, "latest".to_owned()),
        },
    };
    let mut repo: RepoName = name.parse().map_err(|e: cove_core::RegistryError| format!("{s:?}: {}", e.message))?;
    if repo.first_component() == "docker.io" && repo.components().count() == 2 {
        if let Some(rest) = repo.strip_first_component() {
            repo = format!("docker.io/library/{rest}").parse().map_err(|e: cove_core::RegistryError| e.message)?;
        }
    }
    let reference: Reference =
        reference.parse().map_err(|e: cove_core::RegistryError| format!("{s:?}: {}", e.message))?;
    Ok((repo, reference))
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The valid entries of a config (for components built from a config that
/// passed validation).
pub fn specs(config: &super::Config) -> Vec<PrefetchSpec> {
    let hosts: Vec<String> = cove_upstreams::resolve_upstreams(&config.upstreams)
        .map(|u| u.into_iter().map(|u| u.host).collect())
        .unwrap_or_default();
    validate(&config.prefetch, &hosts, &mut Vec::new())
}

/// Checks every entry against the enabled upstreams; returns the valid ones.
pub(super) fn validate(
    entries: &[PrefetchEntry],
    upstream_hosts: &[String],
    problems: &mut Vec<String>,
) -> Vec<PrefetchSpec> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let key = format!("prefetch[{i}]");
        let before = problems.len();
        let parsed = match (&e.image, &e.repository, &e.tags) {
            (Some(image), None, None) => match parse_image_ref(image) {
                Ok((repo, r)) => Some((repo, PrefetchWhat::Reference(r))),
                Err(m) => {
                    problems.push(format!("{key}.image: {m}"));
                    None
                }
            },
            (None, Some(repo), Some(tags)) => match parse_image_ref(repo) {
                Ok((r, _)) if !repo.contains('@') && !repo.rsplit('/').next().unwrap_or("").contains(':') => {
                    if tags.trim().is_empty() {
                        problems.push(format!("{key}.tags: an empty pattern matches nothing"));
                    }
                    Some((r, PrefetchWhat::Tags(tags.trim().to_owned())))
                }
                Ok(_) => {
                    problems
                        .push(format!("{key}.repository: {repo:?} names a tag or digest; use image = … for one image"));
                    None
                }
                Err(m) => {
                    problems.push(format!("{key}.repository: {m}"));
                    None
                }
            },
            (None, Some(_), None) => {
                problems.push(format!("{key}: repository needs tags = \"pattern\" (e.g. \"1.27*\")"));
                None
            }
            _ => {
                problems.push(format!("{key}: set either image, or repository and tags"));
                None
            }
        };
        if let Some((repo, _)) = &parsed {
            if !upstream_hosts.iter().any(|h| h == repo.first_component()) {
                problems.push(format!(
                    "{key}: {repo} is not in an upstream's namespace (start it with an enabled upstream: {})",
                    upstream_hosts.join(", ")
                ));
            }
        }
        let mut platforms = Vec::new();
        for (j, p) in e.platforms.iter().enumerate() {
            match p.parse::<Platform>() {
                Ok(p) => platforms.push(p),
                Err(m) => problems.push(format!("{key}.platforms[{j}]: {m}")),
            }
        }
        let interval = match parse_duration(&e.interval) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                problems.push(format!("{key}.interval: at least 1s"));
                None
            }
            Err(m) => {
                problems.push(format!("{key}.interval: {m}"));
                None
            }
        };
        if let (Some((repo, what)), Some(interval), true) = (parsed, interval, problems.len() == before) {
            out.push(PrefetchSpec { repo, what, platforms, pin: e.pin, interval });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let (r, t) = parse_image_ref("docker.io/alpine:3.20").expect("ref");
        assert_eq!((r.as_str(), t.to_string().as_str()), ("docker.io/library/alpine", "3.20"));
        let (r, t) = parse_image_ref("ghcr.io/o/app").expect("ref");
        assert_eq!((r.as_str(), t.to_string().as_str()), ("ghcr.io/o/app", "latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let (_, t) = parse_image_ref(&format!("ghcr.io/o/app@{d}")).expect("ref");
        assert_eq!(t.to_string(), d);
        assert!(parse_image_ref("UPPER/x").is_err());
        assert!(parse_image_ref("docker.io/x:bad tag").is_err());
    }

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("1.27*", "1.27.3", true),
            ("1.27*", "1.27", true),
            ("1.27*", "1.26", false),
            ("*-alpine", "1.27-alpine", true),
            ("v?", "v1", true),
            ("v?", "v10", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(glob_match(p, s), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn validation_names_keys() {
        let entries: Vec<PrefetchEntry> = toml::from_str::<std::collections::BTreeMap<String, Vec<PrefetchEntry>>>(
            "[[p]]\nimage = \"docker.io/alpine:3\"\npin = true\nplatforms = [\"linux/amd64\"]\n\
             [[p]]\nimage = \"elsewhere.io/x:1\"\n\
             [[p]]\nrepository = \"docker.io/library/nginx\"\n\
             [[p]]\nimage = \"docker.io/x:1\"\nplatforms = [\"linux\"]\ninterval = \"soon\"\n\
             [[p]]\nrepository = \"docker.io/library/nginx\"\ntags = \"1.*\"\n",
        )
        .expect("parses")
        .remove("p")
        .expect("entries");
        let mut problems = Vec::new();
        let ok = validate(&entries, &["docker.io".to_owned()], &mut problems);
        let text = problems.join("\n");
        for want in [
            "prefetch[1]: elsewhere.io/x is not in an upstream's namespace",
            "prefetch[2]: repository needs tags",
            "prefetch[3].platforms[0]",
            "prefetch[3].interval",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert_eq!(ok.len(), 2, "{ok:?}");
        let alpine: RepoName = "docker.io/library/alpine".parse().expect("repo");
        assert!(ok[0].pins(&alpine, "3"));
        assert!(!ok[0].pins(&alpine, "4"));
        assert_eq!(ok[0].interval, Duration::from_secs(6 * 3600));
        let nginx: RepoName = "docker.io/library/nginx".parse().expect("repo");
        assert!(!ok[1].pins(&nginx, "1.2"), "pin = false");
    }
}
