//! The `[auth]` section and the `[[access]]` rules of Cove's configuration.
//!
//! Pure data plus pure validation ([`validate`]): nothing here touches the
//! network or the filesystem. Every default is documented on its field.

use std::fmt;
use std::time::Duration;

use cove_core::Action;
use serde::{Deserialize, Deserializer};

use crate::network::parse_net;
use crate::policy::RepoPattern;

/// Which authenticator verifies credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// No logins: every admitted request is anonymous (default).
    #[default]
    Network,
    /// HTTP Basic against an htpasswd file (bcrypt or SHA-crypt only).
    Htpasswd,
    /// Bearer JWTs from an OIDC issuer (CI, Kubernetes service accounts).
    Oidc,
}

impl AuthKind {
    /// The config spelling (`network`, `htpasswd`, `oidc`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Network => "network",
            AuthKind::Htpasswd => "htpasswd",
            AuthKind::Oidc => "oidc",
        }
    }
}

/// The default networks admitted by `auth.trusted_networks`: loopback,
/// RFC 1918, the CGNAT range tailnets use, IPv6 loopback and ULA.
pub const DEFAULT_TRUSTED_NETWORKS: &[&str] =
    &["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"];

/// The default `auth.trusted_proxies`: loopback. A reverse proxy on the same
/// host (Caddy, nginx) is the usual set-up, so the client address it
/// forwards is what `auth.trusted_networks` judges; without this, every
/// request through it would look local and be admitted.
pub const DEFAULT_TRUSTED_PROXIES: &[&str] = &["127.0.0.0/8", "::1/128"];

/// The `[auth]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `network` (default), `htpasswd` or `oidc`.
    pub kind: AuthKind,
    /// Source networks (CIDR or single address) allowed to reach the registry
    /// at all, for every kind. Default: [`DEFAULT_TRUSTED_NETWORKS`].
    pub trusted_networks: Vec<String>,
    /// Direct peers whose `X-Forwarded-For` / `Forwarded` headers are
    /// believed (a reverse proxy). Default: [`DEFAULT_TRUSTED_PROXIES`]
    /// (loopback); `[]` believes no one. Headers from any other peer can
    /// only get a request refused (see [`crate::NetworkBoundary`]).
    pub trusted_proxies: Vec<String>,
    /// The htpasswd file (required when `kind = "htpasswd"`).
    pub htpasswd_file: Option<String>,
    /// How long a successful password verification is remembered. Default
    /// `60s`; `0s` disables the cache.
    #[serde(deserialize_with = "de_duration")]
    pub credential_cache_ttl: Duration,
    /// How often, at most, the htpasswd file is checked for changes. Default `1s`.
    #[serde(deserialize_with = "de_duration")]
    pub htpasswd_reload_interval: Duration,
    /// Failed-login rate limit per source address.
    pub rate_limit: RateLimitConfig,
    /// The registry's own token service (Docker token flow).
    pub token: TokenConfig,
    /// OIDC settings (required when `kind = "oidc"`).
    pub oidc: Option<OidcConfig>,
    /// What identities may do on repositories no `[[access]]` rule matches.
    /// Default: `allow-all` for `network`, `authenticated` otherwise.
    pub default_policy: Option<DefaultPolicy>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            kind: AuthKind::Network,
            trusted_networks: DEFAULT_TRUSTED_NETWORKS.iter().map(|s| (*s).to_owned()).collect(),
            trusted_proxies: DEFAULT_TRUSTED_PROXIES.iter().map(|s| (*s).to_owned()).collect(),
            htpasswd_file: None,
            credential_cache_ttl: Duration::from_secs(60),
            htpasswd_reload_interval: Duration::from_secs(1),
            rate_limit: RateLimitConfig::default(),
            token: TokenConfig::default(),
            oidc: None,
            default_policy: None,
        }
    }
}

impl AuthConfig {
    /// The default policy in force: the configured one, or the kind's default.
    pub fn effective_default_policy(&self) -> DefaultPolicy {
        self.default_policy.unwrap_or(match self.kind {
            AuthKind::Network => DefaultPolicy::AllowAll,
            AuthKind::Htpasswd | AuthKind::Oidc => DefaultPolicy::Authenticated,
        })
    }
}

/// `[auth.rate_limit]`: failed attempts per source address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Failures allowed within `window` before the source gets 429. Default 10;
    /// 0 disables the limit.
    pub max_failures: u32,
    /// The counting window, also the block duration. Default `60s`.
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { max_failures: 10, window: Duration::from_secs(60) }
    }
}

/// `[auth.token]`: registry-issued JWTs for the Docker token flow.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The `iss` of issued tokens. Default `cove`.
    pub issuer: String,
    /// The `service` of the challenge and the `aud` of tokens. Default `cove`.
    pub service: String,
    /// The token endpoint URL in challenges. Default `<public url>/token`
    /// (the server passes its public URL); with neither, the challenge is Basic.
    pub realm: Option<String>,
    /// Token lifetime. Default `5m`.
    #[serde(deserialize_with = "de_duration")]
    pub lifetime: Duration,
    /// A file holding the HS256 signing secret (at least 32 bytes). Default:
    /// a key set kept in the storage's shared state (shared by every replica
    /// on one store, kept across restarts), or a random key when the storage
    /// has no shared state.
    pub signing_key_file: Option<String>,
    /// How often the shared key set gets a new signing key (old keys keep
    /// verifying until what they signed has expired). `0s`: never. Default
    /// `30d`. Not used with `signing_key_file`.
    #[serde(deserialize_with = "de_duration")]
    pub key_rotation: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            issuer: "cove".to_owned(),
            service: "cove".to_owned(),
            realm: None,
            lifetime: Duration::from_secs(300),
            signing_key_file: None,
            key_rotation: Duration::from_secs(30 * 86400),
        }
    }
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` is fetched.
    pub issuer: String,
    /// The required `aud` value.
    pub audience: String,
    /// The claim holding the user name. Default `sub`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim holding the groups (array of strings, or one string).
    /// Default `groups`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Accepted signature algorithms (asymmetric only). Default RS256, RS384,
    /// RS512, PS256, PS384, PS512, ES256, ES384, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`/`nbf`. Default `60s`.
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
    /// Minimum time between JWKS refetches triggered by an unknown `kid`.
    /// Default `10s`.
    #[serde(default = "default_refetch", deserialize_with = "de_duration")]
    pub jwks_refetch_interval: Duration,
    /// Allow an `http://` issuer that is not loopback. Default false.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_username_claim() -> String {
    "sub".to_owned()
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
/// The default `auth.oidc.algorithms`.
pub const DEFAULT_OIDC_ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
fn default_algorithms() -> Vec<String> {
    DEFAULT_OIDC_ALGORITHMS.iter().map(|s| (*s).to_owned()).collect()
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_refetch() -> Duration {
    Duration::from_secs(10)
}

/// What an identity may do where no `[[access]]` rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Everyone, anonymous included, may pull, push and delete.
    AllowAll,
    /// Authenticated identities may pull, push, delete; anonymous nothing.
    Authenticated,
    /// Anonymous may pull; authenticated may pull, push, delete.
    AnonymousPull,
    /// Nothing unless a rule grants it.
    Deny,
}

/// Who an access rule's `anyone` key admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anyone {
    /// Every identity that presented valid credentials.
    Authenticated,
    /// Every identity, including anonymous ones.
    Anonymous,
}

/// One `[[access]]` rule: a repository pattern, the actions it grants and
/// who gets them (users, groups, and/or `anyone`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// `myorg/**` (any depth, including `myorg`), `*` (one component, `*`
    /// inside a component matches any characters), or an exact name.
    pub repository: String,
    /// Granted actions: `pull`, `push`, `delete`.
    pub actions: Vec<String>,
    /// User names granted the actions.
    #[serde(default)]
    pub users: Vec<String>,
    /// Groups granted the actions.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `authenticated` or `anonymous` (= everyone).
    #[serde(default)]
    pub anyone: Option<Anyone>,
}

/// One configuration problem, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `auth.oidc.issuer` or `access[2].actions`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks `[auth]` and `[[access]]` without I/O and returns every problem.
pub fn validate(auth: &AuthConfig, access: &[AccessRule]) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    let mut problem = |path: String, message: String| out.push(ConfigProblem { path, message });

    if auth.trusted_networks.is_empty() {
        problem(
            "auth.trusted_networks".into(),
            "is empty: no source could reach the registry (use [\"0.0.0.0/0\", \"::/0\"] to admit all)".into(),
        );
    }
    for (i, n) in auth.trusted_networks.iter().enumerate() {
        if let Err(e) = parse_net(n) {
            problem(format!("auth.trusted_networks[{i}]"), e);
        }
    }
    for (i, n) in auth.trusted_proxies.iter().enumerate() {
        if let Err(e) = parse_net(n) {
            problem(format!("auth.trusted_proxies[{i}]"), e);
        }
    }
    match auth.kind {
        AuthKind::Htpasswd if auth.htpasswd_file.as_deref().unwrap_or("").is_empty() => {
            problem("auth.htpasswd_file".into(), "is required when auth.kind = \"htpasswd\"".into())
        }
        AuthKind::Oidc if auth.oidc.is_none() => problem(
            "auth.oidc".into(),
            "an [auth.oidc] section with issuer and audience is required when auth.kind = \"oidc\"".into(),
        ),
        _ => {}
    }
    if auth.token.lifetime.is_zero() || auth.token.lifetime > Duration::from_secs(24 * 3600) {
        problem("auth.token.lifetime".into(), "must be between 1s and 24h".into());
    }
    if !auth.token.key_rotation.is_zero() && auth.token.key_rotation < Duration::from_secs(1) {
        problem("auth.token.key_rotation".into(), "must be 0s (never) or at least 1s".into());
    }
    if auth.token.service.is_empty() || auth.token.service.contains('"') {
        problem("auth.token.service".into(), "must be non-empty and contain no '\"'".into());
    }
    if auth.token.issuer.is_empty() {
        problem("auth.token.issuer".into(), "must be non-empty".into());
    }
    if let Some(r) = &auth.token.realm {
        if !(r.starts_with("http://") || r.starts_with("https://")) || r.contains('"') {
            problem("auth.token.realm".into(), "must be an http(s) URL without '\"'".into());
        }
    }
    if auth.rate_limit.max_failures > 0 && auth.rate_limit.window.is_zero() {
        problem("auth.rate_limit.window".into(), "must be positive when max_failures > 0".into());
    }
    if let Some(o) = &auth.oidc {
        if !(o.issuer.starts_with("https://") || o.issuer.starts_with("http://")) {
            problem("auth.oidc.issuer".into(), "must be an https:// URL".into());
        } else if o.issuer.starts_with("http://") && !o.allow_insecure_http && !crate::oidc::is_loopback_url(&o.issuer)
        {
            problem(
                "auth.oidc.issuer".into(),
                "http:// is only allowed for loopback issuers (set auth.oidc.allow_insecure_http = true to override)"
                    .into(),
            );
        }
        if o.audience.is_empty() {
            problem("auth.oidc.audience".into(), "must be non-empty".into());
        }
        if o.username_claim.is_empty() {
            problem("auth.oidc.username_claim".into(), "must be non-empty".into());
        }
        if o.algorithms.is_empty() {
            problem("auth.oidc.algorithms".into(), "must list at least one algorithm".into());
        }
        for (i, a) in o.algorithms.iter().enumerate() {
            if let Err(e) = crate::oidc::parse_allowed_algorithm(a) {
                problem(format!("auth.oidc.algorithms[{i}]"), e);
            }
        }
    }
    for (i, rule) in access.iter().enumerate() {
        if let Err(e) = RepoPattern::parse(&rule.repository) {
            problem(format!("access[{i}].repository"), e);
        }
        if rule.actions.is_empty() {
            problem(format!("access[{i}].actions"), "must list at least one of pull, push, delete".into());
        }
        for (j, a) in rule.actions.iter().enumerate() {
            if a.parse::<Action>().is_err() {
                problem(
                    format!("access[{i}].actions[{j}]"),
                    format!("unknown action {a:?} (expected pull, push or delete)"),
                );
            }
        }
        if rule.users.is_empty() && rule.groups.is_empty() && rule.anyone.is_none() {
            problem(
                format!("access[{i}]"),
                "names nobody: set users, groups, or anyone = \"authenticated\" | \"anonymous\"".into(),
            );
        }
    }
    out
}

/// Parses `30s`, `5m`, `1h`, `250ms` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?} (expected e.g. 30s, 5m, 1h)"))?;
    let secs = |m: u64| n.checked_mul(m).map(Duration::from_secs).ok_or_else(|| format!("duration {s:?} is too large"));
    match unit.trim() {
        "" | "s" => secs(1),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86400),
        _ => Err(format!("invalid duration unit in {s:?} (use ms, s, m, h or d)")),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
        Raw::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}
