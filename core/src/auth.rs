//! The authentication and access-policy plugin traits.

use std::fmt;
use std::net::IpAddr;

use crate::error::RegistryError;
use crate::name::RepoName;

/// Who is making a request.
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User { name: String, groups: Vec<String> },
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
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// The parts of a request an authenticator may look at.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The direct TCP peer.
    pub peer: IpAddr,
    /// The `Authorization` header, if any. Never log it.
    pub authorization: Option<&'a str>,
    /// The `X-Forwarded-For` header, if any.
    pub forwarded_for: Option<&'a str>,
}

/// Turns a request into an [`Identity`].
///
/// # Contract
/// - Missing credentials where credentials are required, and wrong ones, are
///   `UNAUTHORIZED` (401) errors carrying a `WWW-Authenticate` header.
/// - A source that no credentials could admit is `DENIED` (403).
/// - Never logs or echoes secrets; compares secrets in constant time.
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// A short name for logs (`network`, `htpasswd`, `oidc`).
    fn kind(&self) -> &'static str;

    async fn authenticate(&self, request: &AuthRequest<'_>) -> Result<Identity, RegistryError>;

    /// The challenge to send when an anonymous identity lacks a permission
    /// that credentials might grant, or `None` if credentials cannot help.
    fn challenge(&self) -> Option<String>;
}

/// Decides whether an identity may perform an action on a repository.
pub trait AccessPolicy: Send + Sync + 'static {
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
