//! `cove mirror-config`: the client configuration that makes a runtime pull
//! every configured upstream through Cove: containerd's `hosts.toml` files,
//! the `registries.conf` drop-in read by podman, buildah, skopeo and CRI-O,
//! and Docker Engine's `daemon.json` fragment.

use std::path::Path;

use crate::config::Validated;

/// One `hosts.toml` file: the registry host directory it belongs in and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// The directory name under containerd's `certs.d` (`docker.io`).
    pub host: String,
    pub contents: String,
}

/// Builds a `hosts.toml` per upstream (and per name Cove answers to), with
/// Cove at `mirror_url` as the first host to try and the origin as fallback.
///
/// containerd 1.6 rejects a file holding only `server =`, so each has a
/// `[host."…"]` table.
pub fn containerd_hosts(validated: &Validated, mirror_url: &str) -> Vec<HostsFile> {
    let mirror = mirror_url.trim_end_matches('/');
    let mut files: Vec<HostsFile> = validated
        .upstreams
        .iter()
        .map(|u| {
            let origin = if u.host == "docker.io" { "https://registry-1.docker.io".to_owned() } else { format!("https://{}", u.host) };
            HostsFile {
                host: u.host.clone(),
                contents: format!(
                    "# containerd: /etc/containerd/certs.d/{host}/hosts.toml (written by `cove mirror-config containerd`)\n\
                     server = \"{origin}\"\n\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{tls}",
                    host = u.host,
                    tls = tls_line(mirror),
                ),
            }
        })
        .collect();
    for host in &validated.self_hosts {
        files.push(HostsFile {
            host: host.clone(),
            contents: format!(
                "# containerd: /etc/containerd/certs.d/{host}/hosts.toml (written by `cove mirror-config containerd`)\n\
                 server = \"{mirror}\"\n\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n{tls}",
                tls = tls_line(mirror),
            ),
        });
    }
    files
}

fn tls_line(mirror: &str) -> &'static str {
    if mirror.starts_with("https://") {
        ""
    } else {
        "  # plain HTTP: containerd talks to this host without TLS\n"
    }
}

/// Which program reads a `registries.conf` drop-in (only the comment differs:
/// podman, buildah, skopeo and CRI-O all read containers-registries.conf(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainersTool {
    Podman,
    Buildah,
    Crio,
}

/// The `registries.conf.d` drop-in: per upstream a `[[registry]]` with Cove
/// as its mirror under the origin-path prefix (`cove.lan:5050/docker.io`),
/// and Cove's own address as a registry of its own. Plain HTTP is marked
/// `insecure`. Errors when `mirror_url` is not `http(s)://host[:port]`.
pub fn registries_conf(validated: &Validated, mirror_url: &str, tool: ContainersTool) -> Result<String, String> {
    let (https, authority) = split_url(mirror_url)?;
    let insecure = if https { "" } else { "insecure = true\n" };
    let program = match tool {
        ContainersTool::Podman => "podman",
        ContainersTool::Buildah => "buildah",
        ContainersTool::Crio => "CRI-O",
    };
    let mut out = format!(
        "# {program}: /etc/containers/registries.conf.d/50-cove.conf (written by `cove mirror-config`)\n\
         # Pulls of every upstream below go to Cove first and to the origin if Cove fails.\n"
    );
    for u in &validated.upstreams {
        out.push_str(&format!(
            "\n[[registry]]\nprefix = \"{host}\"\nlocation = \"{host}\"\n\n[[registry.mirror]]\nlocation = \"{authority}/{host}\"\n{insecure}",
            host = u.host,
        ));
    }
    out.push_str(&format!(
        "\n# Cove's own repositories (push and pull)\n[[registry]]\nlocation = \"{authority}\"\n{insecure}"
    ));
    Ok(out)
}

/// Docker Engine's `daemon.json` fragment: Cove as the Docker Hub mirror
/// (Docker mirrors nothing else) and, over plain HTTP, an insecure registry.
pub fn docker_daemon_json(mirror_url: &str) -> Result<String, String> {
    let (https, authority) = split_url(mirror_url)?;
    let origin = format!("{}://{authority}", if https { "https" } else { "http" });
    let mut doc = serde_json::json!({ "registry-mirrors": [origin] });
    if !https {
        doc["insecure-registries"] = serde_json::json!([authority]);
    }
    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
}

/// `http(s)://host[:port][/]` → (is https, `host[:port]`).
fn split_url(url: &str) -> Result<(bool, String), String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("--url {url:?} must start with http:// or https://"));
    };
    let authority = rest.trim_end_matches('/');
    let valid = !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !valid {
        return Err(format!("--url {url:?} must be http(s)://host[:port] with no path"));
    }
    Ok((https, authority.to_ascii_lowercase()))
}

/// Writes the files under `dir/<host>/hosts.toml`.
pub fn write_all(dir: &Path, files: &[HostsFile]) -> std::io::Result<()> {
    for f in files {
        let d = dir.join(&f.host);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("hosts.toml"), &f.contents)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn registries_conf_mirrors_each_upstream_under_its_origin_path() {
        let v = Config::parse("").expect("parses").validate().expect("valid");
        let text = registries_conf(&v, "http://Cove.lan:5050/", ContainersTool::Podman).expect("conf");
        let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
        let regs = parsed["registry"].as_array().expect("[[registry]]");
        let docker =
            regs.iter().find(|r| r.get("prefix").and_then(|p| p.as_str()) == Some("docker.io")).expect("docker.io");
        assert_eq!(docker["mirror"][0]["location"].as_str(), Some("cove.lan:5050/docker.io"));
        assert_eq!(docker["mirror"][0]["insecure"].as_bool(), Some(true));
        let own = regs.last().expect("own");
        assert_eq!((own["location"].as_str(), own["insecure"].as_bool()), (Some("cove.lan:5050"), Some(true)));
        assert_eq!(regs.len(), v.upstreams.len() + 1);
        let tls = registries_conf(&v, "https://cove.lan", ContainersTool::Crio).expect("conf");
        assert!(!tls.contains("insecure") && tls.starts_with("# CRI-O"), "{tls}");
        assert!(registries_conf(&v, "cove.lan:5050", ContainersTool::Podman).is_err());
        assert!(registries_conf(&v, "http://cove.lan/x\"]", ContainersTool::Podman).is_err());
    }

    #[test]
    fn docker_fragment_names_the_mirror_and_plain_http() {
        let j: serde_json::Value =
            serde_json::from_str(&docker_daemon_json("http://127.0.0.1:5050").expect("json")).expect("parses");
        assert_eq!(j["registry-mirrors"][0], "http://127.0.0.1:5050");
        assert_eq!(j["insecure-registries"][0], "127.0.0.1:5050");
        let j: serde_json::Value =
            serde_json::from_str(&docker_daemon_json("https://cove.lan/").expect("json")).expect("parses");
        assert_eq!((j["registry-mirrors"][0].as_str(), j.get("insecure-registries")), (Some("https://cove.lan"), None));
    }

    #[test]
    fn one_file_per_upstream_with_a_host_table() {
        let c = Config::parse("[server]\nhostnames = [\"cove.lan\"]\n[upstreams.\"quay.io\"]\nenabled = false\n")
            .expect("parses");
        let v = c.validate().expect("valid");
        let files = containerd_hosts(&v, "http://cove.lan:5050/");
        let hosts: Vec<&str> = files.iter().map(|f| f.host.as_str()).collect();
        assert_eq!(hosts, ["docker.io", "ghcr.io", "cove.lan"]);
        assert!(files[0].contents.contains("server = \"https://registry-1.docker.io\""));
        assert!(files[0].contents.contains("[host.\"http://cove.lan:5050\"]"));
        assert!(files[1].contents.contains("server = \"https://ghcr.io\""));
        for f in &files {
            let parsed: toml::Value = toml::from_str(&f.contents).expect("valid TOML");
            assert!(parsed.get("host").is_some(), "{} has a [host] table", f.host);
        }
    }
}
