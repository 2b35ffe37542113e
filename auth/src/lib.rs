//! Cove's authentication and access control.
//!
//! The server builds one [`AuthService`] from the `[auth]` section and the
//! `[[access]]` rules ([`AuthService::from_config`]) and calls
//! [`AuthService::authorize`] once per request, before any handler runs, and
//! [`AuthService::token`] for `GET /token`. Underneath:
//! - [`NetworkBoundary`]: `auth.trusted_networks` (every kind) and
//!   `auth.trusted_proxies` (default loopback) for `X-Forwarded-For` and `Forwarded`;
//! - an [`Authenticator`](cove_core::Authenticator): [`NetworkAuthenticator`]
//!   (default, no logins), [`HtpasswdAuthenticator`], [`OidcAuthenticator`];
//! - [`RulePolicy`]: `[[access]]` rules plus a default, as the
//!   [`AccessPolicy`](cove_core::AccessPolicy);
//! - [`TokenIssuer`]: short-lived registry JWTs for the Docker token flow,
//!   signed with a [`SigningKeys`] set (a key file, or keys shared through
//!   the storage by every replica).

pub mod config;
pub mod credentials;
pub mod htpasswd;
pub mod keys;
pub mod network;
pub mod oidc;
pub mod oidc_login;
pub mod policy;
pub mod ratelimit;
pub mod service;
pub mod token;

pub use config::{AccessRule, AuthConfig, AuthKind, ConfigProblem, DefaultPolicy, OidcConfig, TokenConfig};
pub use credentials::{Credentials, Secret};
pub use htpasswd::{HtpasswdAuthenticator, HtpasswdError, HtpasswdOptions};
pub use keys::SigningKeys;
pub use network::{NetworkAuthenticator, NetworkBoundary};
pub use oidc::OidcAuthenticator;
pub use policy::{Actions, RepoPattern, RulePolicy};
pub use ratelimit::FailureLimiter;
pub use service::{AuthBuildError, AuthService};
pub use token::{Scope, TokenIssuer, TokenResponse, VerifiedToken};

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // Without randomness no key or salt can be made safely.
        panic!("operating system random number generator failed: {e}");
    }
}
