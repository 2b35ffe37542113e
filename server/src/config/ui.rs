//! `[ui]`: the web interface served at `/` and `/ui/…`.

use std::time::Duration;

use serde::Deserialize;

use super::parse_duration;

/// `[ui]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the web interface. Default `true`.
    pub enabled: bool,
    /// How long a browser session (login) lasts. Default `"1h"`.
    pub session_ttl: String,
    /// Under `auth.kind = "oidc"`: the OAuth client id of the browser login
    /// (authorization code + PKCE). Default: `auth.oidc.audience`, which the
    /// ID token's `aud` must match.
    pub oidc_client_id: Option<String>,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig { enabled: true, session_ttl: "1h".into(), oidc_client_id: None }
    }
}

impl UiConfig {
    /// The session lifetime (validated by [`validate`]; 1 h if unreadable).
    pub fn session_ttl(&self) -> Duration {
        parse_duration(&self.session_ttl).unwrap_or(Duration::from_secs(3600))
    }

    /// How long a credential signed with a key derived from the token
    /// signing keys lives besides tokens: a web session, when the interface
    /// is on (a rotated-out signing key keeps verifying that long).
    pub fn signed_credential_ttl(&self) -> Duration {
        if self.enabled {
            self.session_ttl()
        } else {
            Duration::ZERO
        }
    }
}

/// Checks the `[ui]` section; every problem names its key.
pub(super) fn validate(ui: &UiConfig) -> Vec<String> {
    match parse_duration(&ui.session_ttl) {
        Ok(d) if d < Duration::from_secs(60) || d > Duration::from_secs(7 * 86400) => {
            vec!["ui.session_ttl: must be between 1m and 7d".to_owned()]
        }
        Ok(_) => Vec::new(),
        Err(e) => vec![format!("ui.session_ttl: {e}")],
    }
}
