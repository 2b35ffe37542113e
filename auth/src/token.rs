//! Registry-issued tokens for the Docker token flow: scope parsing, the
//! short-lived HS256 JWTs Cove signs for itself, and the JSON response.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cove_core::{Action, Identity, RepoName};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::keys::{SigningKeys, SIGNING_REFRESH};
use crate::policy::Actions;

/// One requested or granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`.
    Repository {
        /// The repository.
        repo: RepoName,
        /// The actions.
        actions: Actions,
    },
    /// `registry:catalog:*`.
    Catalog,
}

impl Scope {
    /// Parses one scope (`repository:a/b:pull,push`, `registry:catalog:*`).
    /// Unknown types, unknown actions and invalid names yield `None`/are
    /// dropped, as distribution ignores what it cannot grant.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        match kind {
            "repository" => {
                let repo: RepoName = name.parse().ok()?;
                let actions = actions
                    .split(',')
                    .flat_map(|a| match a.trim() {
                        "*" => Action::ALL.to_vec(),
                        a => a.parse::<Action>().ok().into_iter().collect(),
                    })
                    .collect();
                Some(Scope::Repository { repo, actions })
            }
            "registry" if name == "catalog" => Some(Scope::Catalog),
            _ => None,
        }
    }

    /// The challenge/token spelling of the scope.
    pub fn to_scope_string(&self) -> String {
        match self {
            Scope::Repository { repo, actions } => format!(
                "repository:{repo}:{}",
                actions.to_vec().iter().map(|a| a.as_str()).collect::<Vec<_>>().join(",")
            ),
            Scope::Catalog => "registry:catalog:*".to_owned(),
        }
    }
}

/// One entry of a token's `access` claim (the Docker token format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name, or `catalog`.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RegistryClaims {
    iss: String,
    /// Empty for anonymous tokens.
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<AccessEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

/// The JSON answer of the token endpoint.
#[derive(Clone, Serialize)]
pub struct TokenResponse {
    /// The bearer token (also sent as `access_token` for OAuth2 clients).
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// Issue time, RFC 3339.
    pub issued_at: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

impl TokenResponse {
    /// `{"token","access_token","expires_in","issued_at"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self.issued_at,
        })
    }
}

/// A registry token that verified: who, and what it grants.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The subject (anonymous for tokens issued without credentials).
    pub identity: Identity,
    /// The granted scopes.
    pub scopes: Vec<Scope>,
}

impl VerifiedToken {
    /// True if the token grants `action` on `repo`.
    pub fn grants(&self, repo: &RepoName, action: Action) -> bool {
        self.scopes.iter().any(|s| match s {
            Scope::Repository { repo: r, actions } => r == repo && actions.contains(action),
            Scope::Catalog => false,
        })
    }
}

/// Whether a bearer token is one of ours.
#[derive(Debug)]
pub enum TokenCheck {
    /// Not signed by this registry (maybe an OIDC token).
    NotOurs,
    /// Ours and valid.
    Valid(VerifiedToken),
    /// Ours (our key id) but expired, tampered or for another audience.
    Invalid,
}

/// Signs and verifies registry tokens with HS256 keys from a
/// [`SigningKeys`] set: the token's `kid` header names the key.
pub struct TokenIssuer {
    issuer: String,
    service: String,
    lifetime: Duration,
    keys: Arc<SigningKeys>,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .field("lifetime", &self.lifetime)
            .field("keys", &self.keys)
            .finish()
    }
}

pub use crate::keys::MIN_SIGNING_KEY_LEN;

impl TokenIssuer {
    /// A signer with `key` (at least [`MIN_SIGNING_KEY_LEN`] bytes) or, if
    /// `None`, a fresh random key kept in memory.
    pub fn new(issuer: &str, service: &str, lifetime: Duration, key: Option<&[u8]>) -> Result<Self, String> {
        let keys = match key {
            Some(k) => SigningKeys::fixed(k).map_err(|e| e.to_string())?,
            None => SigningKeys::random(),
        };
        Ok(TokenIssuer::with_keys(issuer, service, lifetime, Arc::new(keys)))
    }

    /// A signer over a key set (e.g. one shared through storage).
    pub fn with_keys(issuer: &str, service: &str, lifetime: Duration, keys: Arc<SigningKeys>) -> Self {
        TokenIssuer { issuer: issuer.to_owned(), service: service.to_owned(), lifetime, keys }
    }

    /// The key set.
    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    /// The `service` tokens are issued for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Signs a token for `identity` granting `scopes`.
    pub fn issue(&self, identity: &Identity, scopes: &[Scope]) -> Result<TokenResponse, String> {
        let now =
            SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| "system clock before 1970".to_owned())?.as_secs();
        let mut jti = [0u8; 16];
        crate::random_bytes(&mut jti);
        let access = scopes
            .iter()
            .map(|s| match s {
                Scope::Repository { repo, actions } => AccessEntry {
                    kind: "repository".into(),
                    name: repo.to_string(),
                    actions: actions.to_vec().iter().map(|a| a.as_str().to_owned()).collect(),
                },
                Scope::Catalog => {
                    AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }
                }
            })
            .collect();
        let claims = RegistryClaims {
            iss: self.issuer.clone(),
            sub: identity.name().unwrap_or("").to_owned(),
            aud: self.service.clone(),
            exp: now + self.lifetime.as_secs(),
            nbf: now.saturating_sub(1),
            iat: now,
            jti: hex::encode(jti),
            access,
            groups: identity.groups().to_vec(),
        };
        let (kid, encoding) = self.keys.signing().ok_or_else(|| "no token signing key".to_owned())?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        let token = jsonwebtoken::encode(&header, &claims, &encoding).map_err(|e| format!("cannot sign token: {e}"))?;
        Ok(TokenResponse { token, expires_in: self.lifetime.as_secs(), issued_at: rfc3339(now) })
    }

    /// Signs like [`TokenIssuer::issue`], re-reading a shared key set first
    /// when it is older than [`SIGNING_REFRESH`] (so replicas converge on
    /// the key with the smallest id).
    pub async fn issue_fresh(&self, identity: &Identity, scopes: &[Scope]) -> Result<TokenResponse, String> {
        self.keys.refresh_if_older(SIGNING_REFRESH).await;
        self.issue(identity, scopes)
    }

    /// Like [`TokenIssuer::verify`], but a token naming a key id the shared
    /// set does not hold (yet) makes it re-read the set, at most once per
    /// [`UNKNOWN_KID_REFRESH`](crate::keys::UNKNOWN_KID_REFRESH), before it
    /// is judged.
    pub async fn check(&self, token: &str) -> TokenCheck {
        match self.verify(token) {
            TokenCheck::NotOurs if self.keys.is_shared() && may_be_shared_kid(token) => {
                // Judged again even when this call did not read: a re-read
                // by a concurrent request may have brought the key.
                self.keys.refresh_for_unknown_id().await;
                self.verify(token)
            }
            other => other,
        }
    }

    /// Checks whether `token` is ours and valid, against the keys in memory.
    pub fn verify(&self, token: &str) -> TokenCheck {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return TokenCheck::NotOurs;
        };
        let Some(decoding) = header.kid.as_deref().and_then(|kid| self.keys.decoding(kid)) else {
            return TokenCheck::NotOurs;
        };
        if header.alg != Algorithm::HS256 {
            return TokenCheck::Invalid;
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "nbf"]);
        v.validate_nbf = true;
        v.leeway = 5;
        let data = match jsonwebtoken::decode::<RegistryClaims>(token, &decoding, &v) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "registry token rejected");
                return TokenCheck::Invalid;
            }
        };
        let c = data.claims;
        let identity =
            if c.sub.is_empty() { Identity::Anonymous } else { Identity::User { name: c.sub, groups: c.groups } };
        let scopes = c
            .access
            .iter()
            .filter_map(|e| Scope::parse(&format!("{}:{}:{}", e.kind, e.name, e.actions.join(","))))
            .collect();
        TokenCheck::Valid(VerifiedToken { identity, scopes })
    }
}

/// Whether the token's `kid` has the shape of a shared key id (16 hex
/// digits), so other issuers' tokens (OIDC) do not cause store reads.
fn may_be_shared_kid(token: &str) -> bool {
    jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid).is_some_and(|k| crate::keys::is_key_id(&k))
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-27T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn scope_parsing() {
        assert_eq!(
            Scope::parse("repository:a/b:pull,push"),
            Some(Scope::Repository {
                repo: "a/b".parse().unwrap(),
                actions: [Action::Pull, Action::Push].into_iter().collect()
            })
        );
        assert_eq!(Scope::parse("registry:catalog:*"), Some(Scope::Catalog));
        assert_eq!(Scope::parse("repository:A:pull"), None);
        assert_eq!(Scope::parse("nonsense"), None);
        let s = Scope::parse("repository:x:*").unwrap();
        assert_eq!(s.to_scope_string(), "repository:x:pull,push,delete");
    }
}
