//! The registry auth flow: bearer tokens from the realm a `WWW-Authenticate`
//! challenge names (anonymous or with Basic credentials), cached per scope
//! until shortly before they expire; Basic auth when challenged with Basic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cove_core::upstream::UpstreamError;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Url};

use crate::challenge::parse_www_authenticate;
use crate::client::{read_capped, status_failure, transport_failure, Failure};
use crate::config::Credentials;

/// Lifetime assumed when a token response has no `expires_in`
/// (the token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Cap on a token response body.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// Entries beyond which expired tokens are pruned.
const PRUNE_AT: usize = 1024;

/// What to send with a request.
#[derive(Clone)]
pub(crate) enum Authorization {
    Bearer(String),
    Basic,
}

impl Authorization {
    /// Adds the `Authorization` header (marked sensitive by reqwest).
    pub(crate) fn apply(&self, rb: RequestBuilder, creds: Option<&Credentials>) -> RequestBuilder {
        match (self, creds) {
            (Authorization::Bearer(t), _) => rb.bearer_auth(t),
            (Authorization::Basic, Some(c)) => rb.basic_auth(&c.username, Some(c.password.expose())),
            (Authorization::Basic, None) => rb,
        }
    }
}

#[derive(Clone)]
struct BearerEndpoint {
    realm: Url,
    service: Option<String>,
}

struct CachedToken {
    token: String,
    fresh_until: Instant,
}

/// Per-upstream auth state: credentials, learned token endpoint, token cache.
pub(crate) struct AuthState {
    credentials: Option<Credentials>,
    upstream_https: bool,
    tokens: Mutex<HashMap<String, CachedToken>>,
    bearer: Mutex<Option<BearerEndpoint>>,
    basic: AtomicBool,
    /// Serialises token fetches so concurrent misses for one scope share one.
    fetch_lock: tokio::sync::Mutex<()>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl AuthState {
    pub(crate) fn new(credentials: Option<Credentials>, upstream_https: bool) -> Self {
        AuthState {
            credentials,
            upstream_https,
            tokens: Mutex::new(HashMap::new()),
            bearer: Mutex::new(None),
            basic: AtomicBool::new(false),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    fn cached(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(scope).filter(|t| t.fresh_until > Instant::now()).map(|t| t.token.clone())
    }

    /// The authorization to send up front for `scope`: a cached token, a
    /// token fetched from an already known realm, Basic if the upstream
    /// asked for it before, or nothing.
    pub(crate) async fn authorize(
        &self,
        client: &reqwest::Client,
        scope: &str,
    ) -> Result<Option<Authorization>, Failure> {
        if let Some(t) = self.cached(scope) {
            return Ok(Some(Authorization::Bearer(t)));
        }
        let known = self.bearer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(ep) = known {
            let t = self.fetch_token(client, &ep, scope, scope, None).await?;
            return Ok(Some(Authorization::Bearer(t)));
        }
        if self.basic.load(Ordering::Relaxed) && self.credentials.is_some() {
            return Ok(Some(Authorization::Basic));
        }
        Ok(None)
    }

    /// Answers the challenges of a 401 response for `scope`. `rejected` is
    /// the token the upstream just refused (never reused).
    pub(crate) async fn answer_challenge(
        &self,
        client: &reqwest::Client,
        headers: &HeaderMap,
        scope: &str,
        rejected: Option<&str>,
    ) -> Result<Authorization, Failure> {
        let challenges: Vec<_> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| parse_www_authenticate(v).ok())
            .flatten()
            .collect();
        if let Some(b) = challenges.iter().find(|c| c.is("bearer")) {
            let realm = b
                .param("realm")
                .and_then(|r| Url::parse(r).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    Failure::Fatal(UpstreamError::Invalid("Bearer challenge without a valid http(s) realm".into()))
                })?;
            let ep = BearerEndpoint { realm, service: b.param("service").map(str::to_owned) };
            *self.bearer.lock().unwrap_or_else(|p| p.into_inner()) = Some(ep.clone());
            let token_scope = b.param("scope").unwrap_or(scope);
            let t = self.fetch_token(client, &ep, token_scope, scope, rejected).await?;
            return Ok(Authorization::Bearer(t));
        }
        if challenges.iter().any(|c| c.is("basic")) {
            if self.credentials.is_some() {
                self.basic.store(true, Ordering::Relaxed);
                return Ok(Authorization::Basic);
            }
            return Err(Failure::Fatal(UpstreamError::Unauthorized(
                "upstream requires Basic credentials and none are configured".into(),
            )));
        }
        Err(Failure::Fatal(UpstreamError::Unauthorized("upstream answered 401 without a usable challenge".into())))
    }

    /// Fetches a token for `token_scope` from the realm and caches it under
    /// `key`; reuses a fresh cached one that is not `rejected`.
    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        ep: &BearerEndpoint,
        token_scope: &str,
        key: &str,
        rejected: Option<&str>,
    ) -> Result<String, Failure> {
        let _guard = self.fetch_lock.lock().await;
        if let Some(t) = self.cached(key) {
            if Some(t.as_str()) != rejected {
                return Ok(t);
            }
        }
        let mut url = ep.realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &ep.service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", token_scope);
        }
        let mut rb = client.get(url);
        let mut with_creds = false;
        if let Some(c) = &self.credentials {
            // Never downgrade: an https upstream's credentials go only to an
            // https realm.
            if ep.realm.scheme() == "https" || !self.upstream_https {
                rb = rb.basic_auth(&c.username, Some(c.password.expose()));
                with_creds = true;
            } else {
                tracing::warn!(realm = %ep.realm, "not sending credentials to a plain-http token realm");
            }
        }
        tracing::debug!(realm = %ep.realm, scope = token_scope, with_creds, "fetching upstream token");
        let started = Instant::now();
        let resp = rb.send().await.map_err(transport_failure)?;
        let status = resp.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(Failure::Fatal(UpstreamError::Unauthorized(format!(
                "token service refused {} request ({status})",
                if with_creds { "the credentialed" } else { "an anonymous" }
            ))));
        }
        if !status.is_success() {
            return Err(status_failure(status, resp.headers()));
        }
        let body = read_capped(resp, MAX_TOKEN_RESPONSE, "token response").await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| Failure::Fatal(UpstreamError::Invalid("token response is not the expected JSON".into())))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| Failure::Fatal(UpstreamError::Invalid("token response holds no token".into())))?;
        let lifetime = parsed.expires_in.filter(|s| *s > 0).map(Duration::from_secs).unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let fresh_until = started + lifetime - token_margin(lifetime);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= PRUNE_AT {
            let now = Instant::now();
            tokens.retain(|_, t| t.fresh_until > now);
        }
        tokens.insert(key.to_owned(), CachedToken { token: token.clone(), fresh_until });
        Ok(token)
    }
}

/// How long before expiry a token stops being used: a fifth of its
/// lifetime, at most 30 s.
fn token_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(token_margin(Duration::from_secs(60)), Duration::from_secs(12));
        assert_eq!(token_margin(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(token_margin(Duration::from_secs(1)), Duration::from_millis(200));
    }
}
