//! The rule-based access policy.
//!
//! Semantics (order of rules does not matter):
//! 1. The rules whose `repository` pattern matches the repository are
//!    collected. If there are any, the identity gets the **union** of the
//!    actions of those matching rules that name it (by user, group, or
//!    `anyone`); the default policy does not apply to that repository.
//! 2. If no rule's pattern matches, the default policy applies; for a cached
//!    upstream namespace (first component is a configured upstream host such
//!    as `docker.io`) the default is capped at `pull`. An explicit rule can
//!    still grant push or delete there.

use cove_core::{AccessPolicy, Action, Identity, RepoName};

use crate::config::{AccessRule, Anyone, DefaultPolicy};

/// A repository glob: components separated by `/`; `**` matches zero or more
/// components, `*` alone one component, and `*` inside a component any run of
/// characters within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    parts: Vec<String>,
}

impl RepoPattern {
    /// Parses a pattern; `**` must be a whole component.
    pub fn parse(s: &str) -> Result<RepoPattern, String> {
        if s.is_empty() {
            return Err("empty repository pattern".to_owned());
        }
        let parts: Vec<String> = s.split('/').map(str::to_owned).collect();
        for p in &parts {
            if p.is_empty() {
                return Err(format!("pattern {s:?} has an empty component"));
            }
            if p.contains("**") && p != "**" {
                return Err(format!("in pattern {s:?}, ** must be a whole component (like myorg/**)"));
            }
            if !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'*'))
            {
                return Err(format!("pattern {s:?} may only hold lowercase letters, digits, . _ - / and *"));
            }
        }
        Ok(RepoPattern { parts })
    }

    /// True if `repo` matches.
    pub fn matches(&self, repo: &RepoName) -> bool {
        let comps: Vec<&str> = repo.components().collect();
        match_parts(&self.parts, &comps)
    }
}

fn match_parts(pat: &[String], name: &[&str]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((p, rest)) if p == "**" => (0..=name.len()).any(|i| match_parts(rest, &name[i..])),
        Some((p, rest)) => match name.split_first() {
            Some((n, nrest)) => match_component(p.as_bytes(), n.as_bytes()) && match_parts(rest, nrest),
            None => false,
        },
    }
}

fn match_component(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', prest)) => (0..=n.len()).any(|i| match_component(prest, &n[i..])),
        Some((c, prest)) => n.split_first().is_some_and(|(d, nrest)| c == d && match_component(prest, nrest)),
    }
}

/// A set of actions as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    /// No actions.
    pub const NONE: Actions = Actions(0);
    /// Pull, push and delete.
    pub const ALL: Actions = Actions(0b111);
    /// Pull only.
    pub const PULL: Actions = Actions(0b001);

    fn bit(a: Action) -> u8 {
        match a {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }

    /// True if `a` is in the set.
    pub fn contains(self, a: Action) -> bool {
        self.0 & Self::bit(a) != 0
    }

    /// The set plus `a`.
    pub fn with(self, a: Action) -> Actions {
        Actions(self.0 | Self::bit(a))
    }

    /// Union.
    pub fn union(self, o: Actions) -> Actions {
        Actions(self.0 | o.0)
    }

    /// Intersection.
    pub fn intersect(self, o: Actions) -> Actions {
        Actions(self.0 & o.0)
    }

    /// The actions in canonical order.
    pub fn to_vec(self) -> Vec<Action> {
        Action::ALL.into_iter().filter(|a| self.contains(*a)).collect()
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(Actions::NONE, Actions::with)
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    pattern: RepoPattern,
    actions: Actions,
    users: Vec<String>,
    groups: Vec<String>,
    anyone: Option<Anyone>,
}

impl CompiledRule {
    fn names(&self, identity: &Identity) -> bool {
        match identity {
            Identity::Anonymous => self.anyone == Some(Anyone::Anonymous),
            Identity::User { name, groups } => {
                self.anyone.is_some()
                    || self.users.iter().any(|u| u == name)
                    || self.groups.iter().any(|g| groups.contains(g))
            }
        }
    }
}

/// The `[[access]]` rules plus a default, as an [`AccessPolicy`].
#[derive(Debug, Clone)]
pub struct RulePolicy {
    rules: Vec<CompiledRule>,
    default: DefaultPolicy,
    upstream_hosts: Vec<String>,
}

impl RulePolicy {
    /// Compiles rules (validate them first with [`crate::config::validate`];
    /// an invalid rule is an error naming its index). `upstream_hosts` are
    /// the first components of cached upstream namespaces (`docker.io`, …).
    pub fn new(rules: &[AccessRule], default: DefaultPolicy, upstream_hosts: &[String]) -> Result<Self, String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let pattern = RepoPattern::parse(&r.repository).map_err(|e| format!("access[{i}].repository: {e}"))?;
            let mut actions = Actions::NONE;
            for a in &r.actions {
                let a: Action = a.parse().map_err(|_| format!("access[{i}].actions: unknown action {a:?}"))?;
                actions = actions.with(a);
            }
            compiled.push(CompiledRule {
                pattern,
                actions,
                users: r.users.clone(),
                groups: r.groups.clone(),
                anyone: r.anyone,
            });
        }
        Ok(RulePolicy {
            rules: compiled,
            default,
            upstream_hosts: upstream_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        })
    }

    /// Everything `identity` may do on `repo`.
    pub fn granted(&self, identity: &Identity, repo: &RepoName) -> Actions {
        let mut matched = false;
        let mut granted = Actions::NONE;
        for rule in &self.rules {
            if rule.pattern.matches(repo) {
                matched = true;
                if rule.names(identity) {
                    granted = granted.union(rule.actions);
                }
            }
        }
        if matched {
            return granted;
        }
        let by_default = match (self.default, identity.is_authenticated()) {
            (DefaultPolicy::AllowAll, _) => Actions::ALL,
            (DefaultPolicy::Authenticated, true) => Actions::ALL,
            (DefaultPolicy::Authenticated, false) => Actions::NONE,
            (DefaultPolicy::AnonymousPull, true) => Actions::ALL,
            (DefaultPolicy::AnonymousPull, false) => Actions::PULL,
            (DefaultPolicy::Deny, _) => Actions::NONE,
        };
        if self.is_upstream_namespace(repo) {
            by_default.intersect(Actions::PULL)
        } else {
            by_default
        }
    }

    /// True if `repo` lies in a cached upstream namespace.
    pub fn is_upstream_namespace(&self, repo: &RepoName) -> bool {
        let first = repo.first_component();
        repo.as_str().contains('/') && self.upstream_hosts.iter().any(|h| h == first)
    }
}

impl AccessPolicy for RulePolicy {
    fn allows(&self, identity: &Identity, action: Action, repo: &RepoName) -> bool {
        self.granted(identity, repo).contains(action)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn patterns() {
        let p = |s: &str| RepoPattern::parse(s).unwrap();
        assert!(p("myorg/**").matches(&r("myorg/a/b")));
        assert!(p("myorg/**").matches(&r("myorg")));
        assert!(!p("myorg/**").matches(&r("myorgx/a")));
        assert!(p("*").matches(&r("alpine")));
        assert!(!p("*").matches(&r("library/alpine")));
        assert!(p("*/alpine").matches(&r("library/alpine")));
        assert!(p("team-*/**").matches(&r("team-a/app")));
        assert!(!p("team-*/**").matches(&r("teamb/app")));
        assert!(p("**/cache").matches(&r("a/b/cache")));
        assert!(p("exact/name").matches(&r("exact/name")));
        assert!(!p("exact/name").matches(&r("exact/name2")));
        assert!(RepoPattern::parse("a/**b").is_err());
        assert!(RepoPattern::parse("a//b").is_err());
        assert!(RepoPattern::parse("A/b").is_err());
    }
}
