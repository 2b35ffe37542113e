//! The authentication and access-policy plugin traits.

use std::fmt;
use std::net::IpAddr;

use crate::error::{Challenge, RegistryError};
use crate::name::RepoName;

/// Who is making a request.
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials were presented (or the authenticator ignores them).
    Anonymous,
    /// A verified user (htpasswd user, OIDC subject, registry-token subject).
    User {
        /// The user name (htpasswd user or the configured OIDC claim).
        name: String,
        /// Group memberships (OIDC groups claim; empty for htpasswd).
        groups: Vec<String>,
    },
}

impl Identity {
    /// The user name, or `None` for [`Identity::Anonymous`].
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User { name, .. } => Some(name),
        }
    }

    /// The groups of a user; empty for [`Identity::Anonymous`].
    pub fn groups(&self) -> &[String] {
        match self {
            Identity::Anonymous => &[],
            Identity::User { groups, .. } => groups,
        }
    }

    /// True for [`Identity::User`].
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Identity::User { .. })
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::User { name, .. } => write!(f, "user:{name}"),
        }
    }
}

/// What an identity wants to do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs and manifests, move tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// Every action, in canonical order.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    /// The name used in configs and token scopes (`pull`, `push`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

impl std::str::FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            _ => Err(UnknownAction),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not `pull`, `push` or `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown action (expected pull, push or delete)")]
pub struct UnknownAction;

/// The parts of a request an authenticator may look at.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The direct TCP peer.
    pub peer: IpAddr,
    /// The `Authorization` header, if any. Never log it.
    pub authorization: Option<&'a str>,
    /// Every `X-Forwarded-For` header, joined with `, ` in order, if any.
    pub forwarded_for: Option<&'a str>,
    /// Every RFC 7239 `Forwarded` header, joined with `, ` in order, if any.
    pub forwarded: Option<&'a str>,
}

/// Turns a request into an [`Identity`].
///
/// # Contract
/// - Missing credentials where credentials are required, and wrong ones, are
///   `UNAUTHORIZED` errors carrying a [`Challenge`].
/// - A source that no credentials could admit is `DENIED`.
/// - Never logs or echoes secrets; compares secrets in constant time.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// A short name for logs (`network`, `htpasswd`, `oidc`).
    fn kind(&self) -> &'static str;

    /// Verifies the request's credentials. No `Authorization` header yields
    /// [`Identity::Anonymous`] (the policy then decides); present but wrong or
    /// malformed credentials are `UNAUTHORIZED`.
    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, RegistryError>;

    /// The challenge to send when an anonymous identity lacks a permission
    /// that credentials might grant, or `None` if credentials cannot help.
    fn challenge(&self) -> Option<Challenge>;
}

/// Decides whether an identity may perform an action on a repository.
pub trait AccessPolicy: Send + Sync + 'static {
    /// True if `identity` may perform `action` on `repo`.
    fn allows(&self, identity: &Identity, action: Action, repo: &RepoName) -> bool;
}

/// A policy that allows everything (the network-trust default, where the
/// authenticator already decided who gets in).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl AccessPolicy for AllowAll {
    fn allows(&self, _: &Identity, _: Action, _: &RepoName) -> bool {
        true
    }
}
