//! The `oidc` authenticator: Bearer JWTs from an OIDC issuer.
//!
//! The discovery document (`<issuer>/.well-known/openid-configuration`)
//! gives the `jwks_uri`; the JWKS is fetched lazily, cached, refreshed hourly
//! and refetched (at most once per `jwks_refetch_interval`) when a token
//! names an unknown `kid`, which handles key rotation. `iss`, `aud`, `exp`,
//! `nbf` are checked with a small leeway; only the configured asymmetric
//! algorithms are accepted (never `none`, never HS*), and the key's type and
//! `alg` must agree with the token's. A JWT sent as the password of Basic
//! credentials is accepted too (`docker login -u ci -p "$JWT"`).

use std::time::{Duration, Instant};

use cove_core::{AuthRequest, Authenticator, Challenge, ChallengeError, ErrorCode, Identity, RegistryError};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{errors::ErrorKind, Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use crate::config::OidcConfig;
use crate::credentials::Credentials;

/// JWKS and discovery documents larger than this are refused.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// The JWKS is refreshed at least this often even without an unknown `kid`.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// Parses an entry of `auth.oidc.algorithms`; refuses `none` and HS*.
pub fn parse_allowed_algorithm(s: &str) -> Result<Algorithm, String> {
    if s.eq_ignore_ascii_case("none") {
        return Err("\"none\" (unsigned tokens) is never allowed".to_owned());
    }
    let a: Algorithm = s.parse().map_err(|_| format!("unknown algorithm {s:?}"))?;
    if a.family() == AlgorithmFamily::Hmac {
        return Err(format!("{s} is a shared-secret algorithm and cannot be verified with an issuer's public keys"));
    }
    Ok(a)
}

/// True if an `http(s)://host[:port]/…` URL names a loopback host.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| crate::network::canonical_ip(ip).is_loopback())
}

#[derive(Default)]
struct JwksState {
    jwks_uri: Option<String>,
    keys: Option<JwkSet>,
    fetched: Option<Instant>,
}

/// Verifies OIDC bearer tokens.
pub struct OidcAuthenticator {
    cfg: OidcConfig,
    algorithms: Vec<Algorithm>,
    http: reqwest::Client,
    state: tokio::sync::RwLock<JwksState>,
    /// Held while fetching (single flight); holds the last fetch attempt.
    fetch_lock: tokio::sync::Mutex<Option<Instant>>,
    realm: String,
}

impl std::fmt::Debug for OidcAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcAuthenticator")
            .field("issuer", &self.cfg.issuer)
            .field("audience", &self.cfg.audience)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl OidcAuthenticator {
    /// An authenticator for `cfg` with a default HTTP client (rustls, 10 s
    /// timeout). `realm` names the challenge realm. Nothing is fetched yet.
    pub fn new(cfg: OidcConfig, realm: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Self::with_http_client(cfg, http, realm)
    }

    /// Like [`OidcAuthenticator::new`] with a caller-built client (custom CA,
    /// proxy).
    pub fn with_http_client(cfg: OidcConfig, http: reqwest::Client, realm: &str) -> Result<Self, String> {
        let algorithms = cfg.algorithms.iter().map(|a| parse_allowed_algorithm(a)).collect::<Result<Vec<_>, _>>()?;
        if algorithms.is_empty() {
            return Err("auth.oidc.algorithms is empty".to_owned());
        }
        if cfg.issuer.starts_with("http://") && !cfg.allow_insecure_http && !is_loopback_url(&cfg.issuer) {
            return Err("auth.oidc.issuer: http:// is only allowed for loopback issuers".to_owned());
        }
        Ok(OidcAuthenticator {
            cfg,
            algorithms,
            http,
            state: tokio::sync::RwLock::new(JwksState::default()),
            fetch_lock: tokio::sync::Mutex::new(None),
            realm: realm.replace('"', ""),
        })
    }

    /// Fetches discovery and JWKS now (optional: done lazily on first use).
    pub async fn refresh(&self) -> Result<(), String> {
        let mut last = self.fetch_lock.lock().await;
        *last = Some(Instant::now());
        self.fetch_keys().await
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        if url.starts_with("http://") && !self.cfg.allow_insecure_http && !is_loopback_url(url) {
            return Err(format!("refusing to fetch {url} over plain http"));
        }
        let mut resp = self
            .http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: status {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("GET {url}: document larger than {MAX_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: invalid JSON: {e}"))
    }

    async fn fetch_keys(&self) -> Result<(), String> {
        let issuer = self.cfg.issuer.trim_end_matches('/');
        let jwks_uri = {
            let st = self.state.read().await;
            st.jwks_uri.clone()
        };
        let jwks_uri = match jwks_uri {
            Some(u) => u,
            None => {
                let doc = self.get_json(&format!("{issuer}/.well-known/openid-configuration")).await?;
                let doc_issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                if doc_issuer.trim_end_matches('/') != issuer {
                    return Err(format!(
                        "discovery document names issuer {doc_issuer:?}, expected {:?}",
                        self.cfg.issuer
                    ));
                }
                doc.get("jwks_uri").and_then(Value::as_str).ok_or("discovery document has no jwks_uri")?.to_owned()
            }
        };
        let raw = self.get_json(&jwks_uri).await?;
        let keys: JwkSet = serde_json::from_value(raw).map_err(|e| format!("invalid JWKS: {e}"))?;
        let mut st = self.state.write().await;
        tracing::info!(keys = keys.keys.len(), "OIDC signing keys fetched");
        st.jwks_uri = Some(jwks_uri);
        st.keys = Some(keys);
        st.fetched = Some(Instant::now());
        Ok(())
    }

    async fn cached_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Jwk> {
        let st = self.state.read().await;
        let fresh = st.fetched.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE);
        if !fresh {
            return None;
        }
        let keys = st.keys.as_ref()?;
        match kid {
            Some(k) => keys.find(k).cloned(),
            None => {
                // Without a kid, accept only an unambiguous key of the right family.
                let mut it = keys.keys.iter().filter(|j| key_family(j) == Some(alg.family()));
                match (it.next(), it.next()) {
                    (Some(j), None) => Some(j.clone()),
                    _ => None,
                }
            }
        }
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, RegistryError> {
        if let Some(k) = self.cached_key(kid, alg).await {
            return Ok(k);
        }
        let mut last = self.fetch_lock.lock().await;
        // Another task may have fetched while we waited.
        if let Some(k) = self.cached_key(kid, alg).await {
            return Ok(k);
        }
        let loaded = self.state.read().await.fetched.is_some_and(|t| t.elapsed() < JWKS_MAX_AGE);
        let may_fetch = !loaded || last.is_none_or(|t| t.elapsed() >= self.cfg.jwks_refetch_interval);
        if may_fetch {
            *last = Some(Instant::now());
            if let Err(e) = self.fetch_keys().await {
                tracing::warn!(error = %e, issuer = %self.cfg.issuer, "cannot fetch OIDC signing keys");
                if !loaded {
                    return Err(RegistryError::new(
                        ErrorCode::Unavailable,
                        "the OIDC issuer's signing keys are unavailable",
                    ));
                }
            }
        }
        drop(last);
        self.cached_key(kid, alg).await.ok_or_else(|| self.invalid("token signed by an unknown key"))
    }

    fn invalid(&self, msg: &str) -> RegistryError {
        let challenge = Challenge::Bearer {
            realm: self.realm.clone(),
            service: None,
            scopes: Vec::new(),
            error: Some(ChallengeError::InvalidToken),
        };
        RegistryError::unauthorized(format!("invalid token: {msg}"), Some(challenge))
    }

    /// Verifies a JWT and maps its claims to an identity.
    pub async fn verify(&self, token: &str) -> Result<Identity, RegistryError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| self.invalid("malformed or unsigned JWT"))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(self.invalid("signature algorithm not allowed"));
        }
        let jwk = self.key_for(header.kid.as_deref(), header.alg).await?;
        if key_family(&jwk) != Some(header.alg.family()) {
            return Err(self.invalid("key type does not match the token's algorithm"));
        }
        if let Some(ka) = jwk.common.key_algorithm {
            if Algorithm::try_from(ka).ok() != Some(header.alg) {
                return Err(self.invalid("key is not for the token's algorithm"));
            }
        }
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(self.invalid("key is not a signing key"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| self.invalid("issuer key is unusable"))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[self.cfg.issuer.as_str()]);
        v.set_audience(&[self.cfg.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = self.cfg.leeway.as_secs();
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v).map_err(|e| {
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not yet valid (nbf)",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::MissingRequiredClaim(_) => "missing exp, iss or aud",
                ErrorKind::InvalidAlgorithm => "algorithm mismatch",
                _ => "rejected",
            };
            self.invalid(why)
        })?;
        let claims = data.claims;
        let name = claims
            .get(&self.cfg.username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.invalid("the user-name claim is missing"))?
            .to_owned();
        let groups = match claims.get(&self.cfg.groups_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(Identity::User { name, groups })
    }
}

fn key_family(jwk: &Jwk) -> Option<AlgorithmFamily> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(AlgorithmFamily::Rsa),
        AlgorithmParameters::EllipticCurve(_) => Some(AlgorithmFamily::Ec),
        AlgorithmParameters::OctetKeyPair(_) => Some(AlgorithmFamily::Ed),
        // Symmetric keys in a JWKS are never used.
        _ => None,
    }
}

#[async_trait::async_trait]
impl Authenticator for OidcAuthenticator {
    fn kind(&self) -> &'static str {
        "oidc"
    }

    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, RegistryError> {
        let Some(header) = request.authorization else {
            return Ok(Identity::Anonymous);
        };
        let creds = Credentials::parse(header).map_err(|e| self.invalid(&e.message))?;
        let token = match &creds {
            Credentials::Bearer(t) => t.expose(),
            Credentials::Basic { password, .. } => password.expose(),
        };
        self.verify(token).await
    }

    fn challenge(&self) -> Option<Challenge> {
        Some(Challenge::Bearer { realm: self.realm.clone(), service: None, scopes: Vec::new(), error: None })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:8080/x"));
        assert!(is_loopback_url("http://[::1]:80/"));
        assert!(is_loopback_url("http://localhost/"));
        assert!(!is_loopback_url("http://example.com/"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.com/"));
    }

    #[test]
    fn algorithm_allow_list() {
        assert!(parse_allowed_algorithm("RS256").is_ok());
        assert!(parse_allowed_algorithm("none").is_err());
        assert!(parse_allowed_algorithm("HS256").is_err());
    }
}
