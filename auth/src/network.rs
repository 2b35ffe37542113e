//! Network trust: the `network` authenticator (no logins; every admitted
//! request is anonymous) and the [`NetworkBoundary`] that every kind applies
//! first (`auth.trusted_networks`, `auth.trusted_proxies`).

use std::net::IpAddr;

use cove_core::{AuthRequest, Authenticator, Challenge, Identity, RegistryError};
use ipnet::IpNet;

/// Admits every request as [`Identity::Anonymous`]; credentials are ignored.
/// Who may connect at all is the [`NetworkBoundary`]'s decision, applied by
/// [`crate::AuthService`] before any authenticator runs.
#[derive(Debug, Default, Clone)]
pub struct NetworkAuthenticator;

#[async_trait::async_trait]
impl Authenticator for NetworkAuthenticator {
    fn kind(&self) -> &'static str {
        "network"
    }

    async fn authenticate(&self, _request: &AuthRequest<'_>) -> Result<Identity, RegistryError> {
        Ok(Identity::Anonymous)
    }

    fn challenge(&self) -> Option<Challenge> {
        None
    }
}

/// Parses a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, `::1`).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(a) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    Err(format!("{s:?} is not a network (expected CIDR like 10.0.0.0/8 or an address)"))
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` so IPv4 rules apply to dual-stack sockets.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The source-address rules: which client addresses may reach the registry,
/// and which direct peers are proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone)]
pub struct NetworkBoundary {
    trusted: Vec<IpNet>,
    proxies: Vec<IpNet>,
}

impl NetworkBoundary {
    /// Builds from config strings; returns the first unparsable entry.
    pub fn new(trusted: &[String], proxies: &[String]) -> Result<Self, String> {
        Ok(NetworkBoundary {
            trusted: trusted.iter().map(|s| parse_net(s)).collect::<Result<_, _>>()?,
            proxies: proxies.iter().map(|s| parse_net(s)).collect::<Result<_, _>>()?,
        })
    }

    /// True if `ip` is inside `auth.trusted_networks`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// True if `ip` is inside `auth.trusted_proxies`.
    pub fn is_proxy(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client address: the direct peer, unless the peer is a trusted
    /// proxy, in which case the right-most `X-Forwarded-For` entry that is
    /// not itself a trusted proxy (or the left-most if all are). A malformed
    /// entry where the client should be is `DENIED` (fail closed).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Result<IpAddr, RegistryError> {
        let peer = canonical_ip(peer);
        let Some(xff) = forwarded_for else {
            return Ok(peer);
        };
        if !self.is_proxy(peer) {
            return Ok(peer);
        }
        let mut client = peer;
        for entry in xff.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let ip = parse_forwarded_entry(entry)
                .ok_or_else(|| RegistryError::denied("malformed X-Forwarded-For header from a trusted proxy"))?;
            client = canonical_ip(ip);
            if !self.is_proxy(client) {
                return Ok(client);
            }
        }
        Ok(client)
    }

    /// Resolves the client address and refuses it unless trusted (403 DENIED
    /// naming `auth.trusted_networks`).
    pub fn admit(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Result<IpAddr, RegistryError> {
        let client = self.client_ip(peer, forwarded_for)?;
        if self.is_trusted(client) {
            Ok(client)
        } else {
            tracing::info!(%client, "request from outside auth.trusted_networks refused");
            Err(RegistryError::denied(format!(
                "source address {client} is not in auth.trusted_networks; \
                 add its network to auth.trusted_networks to admit it"
            )))
        }
    }
}

/// Parses one `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]:5678`.
fn parse_forwarded_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, _) = rest.split_once(']')?;
        return addr.parse().ok();
    }
    let (addr, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4);
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn b(trusted: &[&str], proxies: &[&str]) -> NetworkBoundary {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        NetworkBoundary::new(&s(trusted), &s(proxies)).unwrap()
    }

    #[test]
    fn mapped_v4_matches_v4_rule() {
        let nb = b(&["10.0.0.0/8"], &[]);
        assert!(nb.is_trusted("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!nb.is_trusted("::ffff:11.1.2.3".parse().unwrap()));
    }

    #[test]
    fn forwarded_entries() {
        assert_eq!(parse_forwarded_entry("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_forwarded_entry("1.2.3.4:80"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_forwarded_entry("unknown"), None);
    }
}
