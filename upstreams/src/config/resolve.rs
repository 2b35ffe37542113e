//! Merging the `[upstreams."HOST"]` tables over the presets, and
//! validating each merged upstream without I/O (every problem reported,
//! each with the TOML path of its key).

use std::collections::BTreeMap;

use reqwest::Url;

use super::{key_path, presets, ConfigError, UpstreamConfig, MAX_RETRIES};

/// An enabled upstream after merging and validation: ready to build.
#[derive(Debug, Clone)]
pub struct ResolvedUpstream {
    /// Origin host, the key of its table (`docker.io`).
    pub host: String,
    /// Parsed base URL (http or https, no credentials, query or fragment).
    pub url: Url,
    /// The merged settings (`config.url` equals `url`).
    pub config: UpstreamConfig,
}

/// Merges the user's `[upstreams."HOST"]` tables over the presets and
/// validates the result without I/O.
///
/// Presets need no table; a table for a preset host keeps the preset URL
/// unless it sets `url`; a table for another host adds an upstream (then
/// `url` is required); `enabled = false` removes one. Returns the enabled
/// upstreams sorted by host, or every problem found.
pub fn resolve_upstreams(user: &BTreeMap<String, UpstreamConfig>) -> Result<Vec<ResolvedUpstream>, Vec<ConfigError>> {
    let mut merged = presets();
    for (host, cfg) in user {
        let preset_url = merged.get(host).and_then(|p| p.url.clone());
        let mut cfg = cfg.clone();
        if cfg.url.is_none() {
            cfg.url = preset_url;
        }
        merged.insert(host.clone(), cfg);
    }
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (host, cfg) in merged {
        if !cfg.enabled {
            continue;
        }
        match validate(&host, &cfg) {
            Ok(url) => out.push(ResolvedUpstream { host, url, config: cfg }),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Whether `host` is a valid origin host key: lowercase DNS labels
/// (letters, digits, `-`), separated by `.`, optionally `:port`.
pub fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    port_ok && labels_ok
}

/// Validates one merged upstream; returns its parsed URL or every problem.
pub fn validate(host: &str, cfg: &UpstreamConfig) -> Result<Url, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut err = |key: &str, message: String| errors.push(ConfigError { path: key_path(host, key), message });
    if !valid_host(host) {
        err(
            "",
            "the key must be an origin host name such as \"registry.k8s.io\" \
             (lowercase letters, digits, '-' and '.', optional :port)"
                .to_owned(),
        );
    }
    let mut url = None;
    match &cfg.url {
        None => {
            err("url", "required for an upstream without a preset (e.g. \"https://registry.example.com\")".to_owned())
        }
        Some(s) => match Url::parse(s) {
            Err(e) => err("url", format!("invalid URL {s:?}: {e}")),
            Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
                err("url", format!("scheme must be http or https, not {:?}", u.scheme()))
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                err("url", "must not contain credentials; use username/password or credentials_file".to_owned())
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                err("url", "must not have a query or fragment".to_owned())
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => err("url", "must name a host".to_owned()),
            Ok(u) => url = Some(u),
        },
    }
    match (&cfg.username, &cfg.password) {
        (Some(u), Some(_)) if u.is_empty() => err("username", "must not be empty".to_owned()),
        (Some(_), None) => err("password", "required when username is set".to_owned()),
        (None, Some(_)) => err("username", "required when password is set".to_owned()),
        _ => {}
    }
    if cfg.credentials_file.is_some() && (cfg.username.is_some() || cfg.password.is_some()) {
        err("credentials_file", "set either credentials_file or username/password, not both".to_owned());
    }
    if cfg.connect_timeout.is_zero() {
        err("connect_timeout", "must be greater than zero".to_owned());
    }
    if cfg.read_timeout.is_zero() {
        err("read_timeout", "must be greater than zero".to_owned());
    }
    if cfg.response_timeout.is_zero() {
        err("response_timeout", "must be greater than zero".to_owned());
    }
    if cfg.request_deadline < cfg.response_timeout {
        err(
            "request_deadline",
            format!(
                "must be at least response_timeout ({:?}), or no request could get an answer",
                cfg.response_timeout
            ),
        );
    }
    if cfg.retries > MAX_RETRIES {
        err("retries", format!("at most {MAX_RETRIES}"));
    }
    match url {
        Some(u) if errors.is_empty() => Ok(u),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Root {
        #[serde(default)]
        upstreams: BTreeMap<String, UpstreamConfig>,
    }

    fn parse(s: &str) -> BTreeMap<String, UpstreamConfig> {
        toml::from_str::<Root>(s).expect("toml").upstreams
    }

    fn hosts(v: &[ResolvedUpstream]) -> Vec<&str> {
        v.iter().map(|u| u.host.as_str()).collect()
    }

    #[test]
    fn presets_need_no_config() {
        let r = resolve_upstreams(&BTreeMap::new()).expect("valid");
        assert_eq!(hosts(&r), ["docker.io", "ghcr.io", "quay.io"]);
        assert_eq!(r[0].url.as_str(), "https://registry-1.docker.io/");
        let c = &r[0].config;
        assert_eq!(c.tag_ttl, Duration::from_secs(300));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.response_timeout, Duration::from_secs(5));
        assert_eq!(c.read_timeout, Duration::from_secs(30));
        assert_eq!(c.request_deadline, Duration::from_secs(10));
        assert_eq!(c.retries, 3);
        assert!(c.tls_verify && c.enabled);
    }

    #[test]
    fn merge_override_add_remove() {
        let r = resolve_upstreams(&parse(
            r#"
            [upstreams."docker.io"]
            url = "http://127.0.0.1:5000"
            tag_ttl = "30s"
            [upstreams."ghcr.io"]
            tag_ttl = "1h 30m"
            retries = 0
            [upstreams."quay.io"]
            enabled = false
            [upstreams."registry.k8s.io"]
            url = "https://registry.k8s.io"
            tls_verify = false
            connect_timeout = "2s"
            read_timeout = "500ms"
            "#,
        ))
        .expect("valid");
        assert_eq!(hosts(&r), ["docker.io", "ghcr.io", "registry.k8s.io"]);
        assert_eq!(r[0].url.as_str(), "http://127.0.0.1:5000/");
        assert_eq!(r[0].config.tag_ttl, Duration::from_secs(30));
        assert_eq!(r[1].url.as_str(), "https://ghcr.io/");
        assert_eq!(r[1].config.tag_ttl, Duration::from_secs(5400));
        assert_eq!(r[1].config.retries, 0);
        assert!(!r[2].config.tls_verify);
        assert_eq!(r[2].config.connect_timeout, Duration::from_secs(2));
        assert_eq!(r[2].config.read_timeout, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        let e = toml::from_str::<Root>("[upstreams.\"docker.io\"]\nurll = \"x\"\n").err().expect("unknown field");
        assert!(e.to_string().contains("urll"), "{e}");
        let e = toml::from_str::<Root>("[upstreams.\"docker.io\"]\ntag_ttl = \"five\"\n").err().expect("bad duration");
        assert!(e.to_string().contains("invalid duration"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errs = resolve_upstreams(&parse(
            r#"
            [upstreams."docker.io"]
            url = "ftp://x"
            retries = 99
            [upstreams."example.com"]
            username = "u"
            [upstreams."Bad_Host"]
            url = "https://x"
            [upstreams."quay.io"]
            url = "https://user:pw@quay.io"
            [upstreams."b.example"]
            url = "https://b.example"
            username = "u"
            password = "p"
            credentials_file = "/x"
            read_timeout = "0s"
            "#,
        ))
        .expect_err("invalid");
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            r#"upstreams."docker.io".url"#,
            r#"upstreams."docker.io".retries"#,
            r#"upstreams."example.com".url"#,
            r#"upstreams."example.com".password"#,
            r#"upstreams."Bad_Host""#,
            r#"upstreams."quay.io".url"#,
            r#"upstreams."b.example".credentials_file"#,
            r#"upstreams."b.example".read_timeout"#,
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        assert_eq!(paths.len(), 8, "{errs:?}");
        // The credentials in the URL are not echoed.
        assert!(errs.iter().all(|e| !e.to_string().contains("pw")), "{errs:?}");
    }

    #[test]
    fn host_keys() {
        for ok in ["docker.io", "localhost", "registry.k8s.io", "localhost:5000", "a-b.c"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in ["", "Docker.io", "a..b", "-a.b", "a_b", "a:0", "a:x", "a/b", ":80"] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = parse("[upstreams.\"docker.io\"]\nusername = \"me\"\npassword = \"hunter2\"\n");
        let shown = format!("{:?}", c);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("me"));
        let r = resolve_upstreams(&c).expect("valid");
        let cred = r[0].credentials().expect("ok").expect("some");
        assert_eq!(cred.password.expose(), "hunter2");
        assert!(!format!("{cred:?} {}", cred.password).contains("hunter2"));
    }
}
