//! Property-based tests of the parsers of upstream answers:
//! `WWW-Authenticate` challenges, `Link` headers and `Retry-After`.
//! Bounded (`CASES` per property) so it runs in seconds.

use cove_upstreams::{next_link, parse_retry_after, parse_www_authenticate};
use proptest::prelude::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    // PROPTEST_CASES, when set, runs more (or fewer).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A quoted-string value with `"` and `\` escaped.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bearer_challenges_round_trip(
        realm in "[ -~]{0,40}", service in "[ -~]{0,20}", scope in "[ -~]{0,40}",
        basic_first in any::<bool>(),
    ) {
        let bearer = format!("Bearer realm={},service={},scope={}", quote(&realm), quote(&service), quote(&scope));
        let header = if basic_first { format!("Basic realm=\"x\", {bearer}") } else { bearer };
        let cs = parse_www_authenticate(&header).expect("well formed");
        let b = cs.iter().find(|c| c.scheme.eq_ignore_ascii_case("bearer")).expect("bearer challenge");
        let get = |name: &str| b.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        prop_assert_eq!(get("realm"), Some(realm));
        prop_assert_eq!(get("service"), Some(service));
        prop_assert_eq!(get("scope"), Some(scope));
        prop_assert_eq!(cs.len(), if basic_first { 2 } else { 1 });
    }

    #[test]
    fn arbitrary_challenges_parse_or_are_rejected(h in "\\PC{0,200}|[A-Za-z]{1,8}( [a-z]{1,6}=(\"[^\"]{0,10}\"|[a-z0-9]{0,6}),?){0,4}") {
        if let Ok(cs) = parse_www_authenticate(&h) {
            for c in cs {
                prop_assert!(!c.scheme.is_empty());
            }
        }
    }

    #[test]
    fn link_headers_never_panic(h in "\\PC{0,120}|<[ -~]{0,40}>; ?rel=\"?next\"?") {
        if let Some(url) = next_link(&h) {
            prop_assert!(h.contains(&url));
        }
    }

    #[test]
    fn retry_after_seconds_round_trip(n in any::<u64>(), junk in "\\PC{0,40}") {
        prop_assert_eq!(parse_retry_after(&n.to_string()), Some(std::time::Duration::from_secs(n)));
        let _ = parse_retry_after(&junk);
    }
}
