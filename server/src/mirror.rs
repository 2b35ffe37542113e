//! `cove mirror-config containerd`: the `hosts.toml` files that make
//! containerd pull every configured upstream through Cove.

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
