//! The OIDC authorization-code flow with PKCE for browsers (the web
//! interface's login): the issuer's endpoints from its discovery document,
//! and the exchange of a code for an ID token. The ID token is then checked
//! by the same [`crate::OidcAuthenticator`] as a bearer token on the API
//! (issuer, audience, signature, claims), so a browser login is held to
//! exactly the API's rules.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::config::OidcConfig;

/// Largest discovery document or token response read.
const MAX_DOCUMENT: usize = 256 * 1024;

/// A browser login against the configured issuer.
pub struct BrowserLogin {
    http: reqwest::Client,
    issuer: String,
    /// The OAuth client id (the ID token's audience).
    pub client_id: String,
    allow_http: bool,
}

/// The PKCE challenge (S256) of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl BrowserLogin {
    /// A login for `cfg`'s issuer as client `client_id`.
    pub fn new(cfg: &OidcConfig, client_id: &str) -> Result<BrowserLogin, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(BrowserLogin {
            http,
            issuer: cfg.issuer.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            allow_http: cfg.allow_insecure_http,
        })
    }

    fn check_url(&self, url: &str) -> Result<(), String> {
        if url.starts_with("https://")
            || (url.starts_with("http://") && (self.allow_http || crate::oidc::is_loopback_url(url)))
        {
            Ok(())
        } else {
            Err(format!("refusing the issuer endpoint {url:?} (https only, or loopback http)"))
        }
    }

    async fn read_json(resp: reqwest::Response, what: &str) -> Result<Value, String> {
        let status = resp.status();
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{what}: {e}"))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("{what}: answer larger than {MAX_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(format!(
                "{what}: status {status}: {}",
                String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{what}: invalid JSON: {e}"))
    }

    /// The issuer's (authorization, token) endpoints.
    async fn endpoints(&self) -> Result<(String, String), String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        self.check_url(&url)?;
        let resp = self
            .http
            .get(&url)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let doc = Self::read_json(resp, "discovery").await?;
        let get = |k: &str| {
            doc.get(k).and_then(Value::as_str).map(str::to_owned).ok_or(format!("discovery document has no {k}"))
        };
        let (auth, token) = (get("authorization_endpoint")?, get("token_endpoint")?);
        self.check_url(&auth)?;
        self.check_url(&token)?;
        Ok((auth, token))
    }

    /// Where to send the browser: the authorization endpoint with the
    /// client, `redirect_uri`, `state` and the PKCE challenge of `verifier`.
    pub async fn authorization_url(&self, redirect_uri: &str, state: &str, verifier: &str) -> Result<String, String> {
        let (auth, _) = self.endpoints().await?;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid profile")
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce_challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if auth.contains('?') { '&' } else { '?' };
        Ok(format!("{auth}{sep}{query}"))
    }

    /// Exchanges an authorization `code` for the ID token.
    pub async fn exchange(&self, code: &str, verifier: &str, redirect_uri: &str) -> Result<String, String> {
        let (_, token) = self.endpoints().await?;
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("client_id", &self.client_id)
            .append_pair("code_verifier", verifier)
            .finish();
        let resp = self
            .http
            .post(&token)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {token}: {e}"))?;
        let doc = Self::read_json(resp, "token endpoint").await?;
        doc.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "token answer has no id_token".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
