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
/// and which direct peers are proxies whose forwarding headers are believed.
///
/// The rule, for a request whose direct peer is `P`:
/// - without `X-Forwarded-For` or `Forwarded`: `P` is the client;
/// - `P` in `auth.trusted_proxies`: each forwarding header present names the
///   client as its right-most address that is not itself a trusted proxy (the
///   left-most if all are), and every such client must be in
///   `auth.trusted_networks`. Both headers are judged, so a client cannot
///   launder its address through the header its proxy leaves untouched
///   (Caddy and nginx pass a client's own `Forwarded` through);
/// - `P` not a trusted proxy: the headers are not believed, but they can
///   only make the answer stricter (fail closed). `P` must be trusted, and
///   so must the right-most address of each header, which is the client a
///   reverse proxy in front would have seen: a proxy on another host that is
///   missing from `auth.trusted_proxies` cannot open the registry to the
///   internet. Such a refusal names `auth.trusted_proxies`.
///
/// A forwarding header that cannot be read where the answer depends on it
/// (`for=unknown`, an obfuscated identifier, garbage) is refused.
#[derive(Debug, Clone)]
pub struct NetworkBoundary {
    trusted: Vec<IpNet>,
    proxies: Vec<IpNet>,
}

/// One forwarding header's client chain, left (first hop) to right.
struct Chain {
    header: &'static str,
    hops: Vec<Option<IpAddr>>,
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

    /// The trusted proxies as configured (for the start-up log).
    pub fn proxies(&self) -> &[IpNet] {
        &self.proxies
    }

    /// Resolves the client address and refuses the request unless every
    /// address the rule above judges is trusted (403 DENIED naming
    /// `auth.trusted_networks`, or `auth.trusted_proxies` when the
    /// refusal comes from the headers of a peer that is not a trusted proxy).
    pub fn admit(
        &self,
        peer: IpAddr,
        forwarded_for: Option<&str>,
        forwarded: Option<&str>,
    ) -> Result<IpAddr, RegistryError> {
        let peer = canonical_ip(peer);
        let chains = chains(forwarded_for, forwarded);
        if self.is_proxy(peer) && !chains.is_empty() {
            let mut client = None;
            for chain in &chains {
                let c = self.client_of(chain)?;
                self.judge(c)?;
                client.get_or_insert(c);
            }
            return Ok(client.unwrap_or(peer));
        }
        self.judge(peer)?;
        for chain in &chains {
            match chain.hops.last() {
                Some(Some(ip)) if self.is_trusted(*ip) => {}
                Some(Some(ip)) => {
                    tracing::info!(%peer, client = %ip, header = chain.header, "forwarded request from outside auth.trusted_networks refused");
                    return Err(RegistryError::denied(format!(
                        "{peer} forwarded this request for {ip}, which is not in auth.trusted_networks; \
                         if {peer} is a reverse proxy, add it to auth.trusted_proxies"
                    )));
                }
                _ => {
                    return Err(RegistryError::denied(format!(
                        "unreadable {} header from {peer}, which is not in auth.trusted_proxies",
                        chain.header
                    )))
                }
            }
        }
        Ok(peer)
    }

    /// Refuses `client` unless it is in `auth.trusted_networks`.
    fn judge(&self, client: IpAddr) -> Result<(), RegistryError> {
        if self.is_trusted(client) {
            return Ok(());
        }
        tracing::info!(%client, "request from outside auth.trusted_networks refused");
        Err(RegistryError::denied(format!(
            "source address {client} is not in auth.trusted_networks; \
             add its network to auth.trusted_networks to admit it"
        )))
    }

    /// The right-most hop of `chain` that is not a trusted proxy (the
    /// left-most if all are). An unreadable hop where the client should be
    /// is `DENIED` (fail closed).
    fn client_of(&self, chain: &Chain) -> Result<IpAddr, RegistryError> {
        let mut client = None;
        for hop in chain.hops.iter().rev() {
            let ip = hop.map(canonical_ip).ok_or_else(|| {
                RegistryError::denied(format!("malformed {} header from a trusted proxy", chain.header))
            })?;
            client = Some(ip);
            if !self.is_proxy(ip) {
                break;
            }
        }
        client.ok_or_else(|| RegistryError::denied(format!("empty {} header from a trusted proxy", chain.header)))
    }
}

/// The forwarding headers present, `X-Forwarded-For` first.
fn chains(forwarded_for: Option<&str>, forwarded: Option<&str>) -> Vec<Chain> {
    let mut out = Vec::new();
    if let Some(v) = forwarded_for {
        let hops = v.split(',').map(str::trim).filter(|e| !e.is_empty()).map(parse_forwarded_entry).collect();
        out.push(Chain { header: "X-Forwarded-For", hops });
    }
    if let Some(v) = forwarded {
        out.push(Chain { header: "Forwarded", hops: parse_rfc7239(v) });
    }
    out
}

/// The `for=` address of each element of an RFC 7239 `Forwarded` header,
/// left to right; `None` for an element without a readable address
/// (`for=unknown`, an obfuscated `_name`, no `for` at all, bad syntax).
pub fn parse_rfc7239(value: &str) -> Vec<Option<IpAddr>> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|element| {
            let mut addr = None;
            for pair in split_outside_quotes(element, ';') {
                let (name, v) = pair.split_once('=')?;
                if name.trim().eq_ignore_ascii_case("for") {
                    if addr.is_some() {
                        return None; // two `for` in one element: ambiguous
                    }
                    let v = v.trim();
                    let v = match v.strip_prefix('"') {
                        Some(q) => q.strip_suffix('"')?,
                        None => v,
                    };
                    addr = Some(parse_forwarded_entry(v)?);
                }
            }
            addr
        })
        .collect()
}

/// Splits at `sep` where it is not inside a quoted string (RFC 7230
/// quoted-string, with `\` escapes).
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Parses one forwarded address: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
/// `[::1]:5678`, `[::1]`.
fn parse_forwarded_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
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
    fn rfc7239_elements() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(parse_rfc7239("for=192.0.2.60;proto=http;by=203.0.113.43"), vec![ip("192.0.2.60")]);
        assert_eq!(
            parse_rfc7239("for=\"[2001:db8:cafe::17]:4711\", For=198.51.100.17;host=\"a,b;c\""),
            vec![ip("2001:db8:cafe::17"), ip("198.51.100.17")]
        );
        assert_eq!(parse_rfc7239("for=unknown, for=_hidden, proto=https"), vec![None, None, None]);
        assert_eq!(parse_rfc7239("for=1.2.3.4;for=5.6.7.8"), vec![None]);
        assert_eq!(parse_rfc7239("for=\"1.2.3.4"), vec![None]);
    }

    #[test]
    fn both_headers_are_judged_behind_a_trusted_proxy() {
        let nb = b(&["10.0.0.0/8"], &["127.0.0.0/8"]);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(nb.admit(lo, Some("10.1.1.1"), None).is_ok());
        assert!(nb.admit(lo, None, Some("for=10.1.1.1")).is_ok());
        // A client's own Forwarded passed through untouched cannot launder
        // the address its proxy put in X-Forwarded-For, nor the reverse.
        assert!(nb.admit(lo, Some("203.0.113.9"), Some("for=10.1.1.1")).is_err());
        assert!(nb.admit(lo, Some("10.1.1.1"), Some("for=203.0.113.9")).is_err());
        assert!(nb.admit(lo, None, Some("for=unknown")).is_err());
        assert_eq!(nb.admit(lo, Some("10.1.1.1, 127.0.0.5"), None).unwrap(), "10.1.1.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn headers_of_a_peer_that_is_no_proxy_only_make_it_stricter() {
        let nb = b(&["10.0.0.0/8"], &["127.0.0.0/8"]);
        let lan: IpAddr = "10.0.0.7".parse().unwrap();
        assert!(nb.admit(lan, None, None).is_ok());
        assert!(nb.admit(lan, Some("10.1.1.1"), None).is_ok());
        let e = nb.admit(lan, Some("10.1.1.1, 203.0.113.9"), None).unwrap_err();
        assert!(e.message.contains("auth.trusted_proxies") && e.message.contains("203.0.113.9"), "{}", e.message);
        assert!(nb.admit(lan, None, Some("for=203.0.113.9")).is_err());
        assert!(nb.admit(lan, Some("garbage"), None).is_err());
        // An untrusted peer is refused whatever it claims.
        assert!(nb.admit("8.8.8.8".parse().unwrap(), Some("10.1.1.1"), None).is_err());
        assert_eq!(nb.admit(lan, Some("10.1.1.1"), None).unwrap(), lan);
    }

    #[test]
    fn forwarded_entries() {
        assert_eq!(parse_forwarded_entry("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_forwarded_entry("1.2.3.4:80"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_forwarded_entry("unknown"), None);
        assert_eq!(parse_forwarded_entry("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_forwarded_entry("[::1]x"), None);
    }
}
