//! What only these tests need: an `OciUpstream` built from a TOML snippet,
//! through the same path a server config takes. Everything else (the
//! distribution peer, the fault server, the token issuer, OCI layouts,
//! helpers) is in cove-testkit.

/// Builds the upstream `host` from a TOML snippet of its table's keys.
pub fn upstream_from_toml(host: &str, keys: &str) -> cove_upstreams::OciUpstream {
    let text = format!("[upstreams.\"{host}\"]\n{keys}\n");
    #[derive(serde::Deserialize)]
    struct Root {
        upstreams: std::collections::BTreeMap<String, cove_upstreams::UpstreamConfig>,
    }
    let root: Root = toml::from_str(&text).expect("toml");
    let resolved = cove_upstreams::resolve_upstreams(&root.upstreams).expect("valid config");
    let r = resolved.iter().find(|r| r.host == host).expect("upstream resolved");
    cove_upstreams::OciUpstream::new(r).expect("build upstream")
}
