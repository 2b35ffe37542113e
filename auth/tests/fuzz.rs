//! Property-based tests of the auth parsers that see outside bytes:
//! htpasswd lines, bearer tokens (JWT headers and payloads) and token
//! scopes. Bounded (`CASES` per property) so it runs in seconds.

use std::time::Duration;

use base64::Engine as _;
use cove_auth::htpasswd::HtpasswdUsers;
use cove_auth::token::TokenCheck;
use cove_auth::{Scope, TokenIssuer};
use proptest::prelude::*;

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    // PROPTEST_CASES, when set, runs more (or fewer).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn issuer() -> TokenIssuer {
    TokenIssuer::new("cove", "cove", Duration::from_secs(300), None).expect("issuer")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn htpasswd_text_is_parsed_or_every_problem_reported(
        lines in proptest::collection::vec(prop_oneof![
            "\\PC{0,80}",
            "[a-z]{1,8}:\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{0,60}",
            "[a-z]{1,8}:\\$[156]\\$[./A-Za-z0-9]{0,16}\\$[./A-Za-z0-9]{0,90}",
            "[a-z]{1,8}:\\{SHA\\}[A-Za-z0-9+/=]{0,30}",
            "#\\PC{0,20}",
            "[a-z:]{0,10}",
        ], 0..8),
    ) {
        let text = lines.join("\n");
        match HtpasswdUsers::parse(&text) {
            Ok(users) => prop_assert!(users.len() <= lines.len()),
            Err(problems) => {
                prop_assert!(!problems.is_empty());
                // A problem names the line, never the hash.
                let hashes: Vec<&str> = lines
                    .iter()
                    .filter_map(|l| l.trim().split_once(':'))
                    .filter(|(user, hash)| hash.len() >= 8 && !user.contains(hash))
                    .map(|(_, hash)| hash)
                    .collect();
                for p in &problems {
                    prop_assert!(p.contains("line"), "{p}");
                    for h in &hashes {
                        prop_assert!(!p.contains(h), "hash leaked: {p}");
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_tokens_are_not_ours(token in "\\PC{0,200}|[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}") {
        prop_assert!(!matches!(issuer().verify(&token), TokenCheck::Valid(_)));
    }

    #[test]
    fn jwts_with_arbitrary_headers_are_refused(
        alg in prop_oneof![Just("ES256".to_owned()), Just("none".to_owned()), Just("HS256".to_owned()), "\\PC{0,10}"],
        kid in proptest::option::of("\\PC{0,40}"),
        extra in proptest::collection::btree_map("[a-z]{1,6}", "\\PC{0,10}", 0..4),
        payload in proptest::collection::vec(any::<u8>(), 0..120),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let mut header = serde_json::json!({ "typ": "JWT", "alg": alg });
        if let Some(k) = &kid { header["kid"] = serde_json::json!(k); }
        for (k, v) in &extra { header[k] = serde_json::json!(v); }
        let token = format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(&payload), b64(&sig));
        prop_assert!(!matches!(issuer().verify(&token), TokenCheck::Valid(_)), "forged token accepted");
    }

    #[test]
    fn own_tokens_with_a_tampered_payload_are_invalid(
        flip in 0usize..4096, scope in "repository:[a-z]{1,8}(/[a-z]{1,8})?:(pull|push|pull,push)",
    ) {
        let iss = issuer();
        let Some(s) = Scope::parse(&scope) else { return Err(TestCaseError::fail("valid scope refused")) };
        prop_assert_eq!(Scope::parse(&s.to_scope_string()), Some(s.clone()));
        let t = iss.issue(&cove_core::Identity::User { name: "alice".into(), groups: Vec::new() }, std::slice::from_ref(&s)).expect("issue");
        prop_assert!(matches!(iss.verify(&t.token), TokenCheck::Valid(_)));
        let parts: Vec<&str> = t.token.split('.').collect();
        let mut body = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).expect("b64");
        let i = flip % body.len();
        body[i] ^= 0x20;
        let forged = format!("{}.{}.{}", parts[0], b64(&body), parts[2]);
        prop_assert!(!matches!(iss.verify(&forged), TokenCheck::Valid(_)));
    }

    #[test]
    fn arbitrary_scopes_parse_or_are_dropped(s in "\\PC{0,80}|(repository|registry):[a-z/:*,]{0,30}") {
        if let Some(scope) = Scope::parse(&s) {
            prop_assert_eq!(Scope::parse(&scope.to_scope_string()), Some(scope));
        }
    }
}
