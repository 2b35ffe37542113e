//! `[mirror]`: Docker Hub mirror mode, for clients that can only mirror
//! Docker Hub by sending its names unqualified (Docker Engine's
//! `registry-mirrors`, Docker Desktop).

use cove_core::RepoName;
use serde::Deserialize;

/// `[mirror]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream that owns names with no upstream prefix and no upstream
    /// `ns=` (`library/nginx` is then `docker.io/library/nginx`). Off by
    /// default; normally `"docker.io"`.
    pub default_upstream: Option<String>,
    /// In that mode, the first name components of private repositories
    /// (`["myorg"]` keeps `myorg/app` private). Every other unqualified name
    /// is the default upstream's.
    pub private_prefixes: Vec<String>,
}

/// Checks the section against the enabled upstreams; returns the default
/// upstream (lowercased) and the private prefixes.
pub(super) fn validate(
    m: &MirrorConfig,
    upstream_hosts: &[String],
    problems: &mut Vec<String>,
) -> (Option<String>, Vec<String>) {
    let default = m.default_upstream.as_ref().map(|h| h.trim().to_ascii_lowercase());
    if let Some(h) = &default {
        if !upstream_hosts.contains(h) {
            problems.push(format!(
                "mirror.default_upstream: {h:?} is not an enabled upstream (enabled: {})",
                upstream_hosts.join(", ")
            ));
        }
    } else if !m.private_prefixes.is_empty() {
        problems.push("mirror.private_prefixes: only meaningful with mirror.default_upstream".into());
    }
    let mut prefixes = Vec::new();
    for (i, p) in m.private_prefixes.iter().enumerate() {
        let one_component = !p.contains('/') && p.parse::<RepoName>().is_ok();
        if !one_component {
            problems.push(format!("mirror.private_prefixes[{i}]: {p:?} is not one repository name component"));
        } else if upstream_hosts.contains(p) {
            problems.push(format!("mirror.private_prefixes[{i}]: {p:?} is a configured upstream"));
        } else {
            prefixes.push(p.clone());
        }
    }
    (default, prefixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> (Option<String>, Vec<String>, Vec<String>) {
        let m: MirrorConfig = toml::from_str(text).expect("parses");
        let mut problems = Vec::new();
        let (d, p) = validate(&m, &["docker.io".into(), "ghcr.io".into()], &mut problems);
        (d, p, problems)
    }

    #[test]
    fn default_upstream_must_be_enabled_and_prefixes_one_component() {
        assert_eq!(check(""), (None, vec![], vec![]));
        let (d, p, problems) = check("default_upstream = \"Docker.IO\"\nprivate_prefixes = [\"myorg\"]");
        assert_eq!((d.as_deref(), p, problems), (Some("docker.io"), vec!["myorg".to_owned()], vec![]));
        let (_, _, problems) = check("default_upstream = \"quay.io\"");
        assert!(problems[0].contains("mirror.default_upstream"), "{problems:?}");
        let (_, p, problems) =
            check("default_upstream = \"docker.io\"\nprivate_prefixes = [\"a/b\", \"Up\", \"ghcr.io\"]");
        assert!(p.is_empty());
        assert_eq!(problems.len(), 3, "{problems:?}");
        let (_, _, problems) = check("private_prefixes = [\"myorg\"]");
        assert!(problems[0].contains("only meaningful"), "{problems:?}");
    }
}
