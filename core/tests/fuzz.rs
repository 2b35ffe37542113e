//! Property-based tests of the parsers that see bytes from outside: names,
//! references, digests, byte ranges and manifests. Each property runs a
//! bounded number of cases (`CASES`) so the file runs in seconds in CI.
//! Every one asserts no panic, and a round trip for what is accepted or a
//! clean rejection (the right OCI code) for what is not.

use cove_core::manifest::parse_manifest;
use cove_core::{Digest, ErrorCode, RangeRequest, Reference, RepoName, Tag};
use proptest::prelude::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    // PROPTEST_CASES, when set, runs more (or fewer).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A component of the OCI name grammar.
fn component() -> impl Strategy<Value = String> {
    ("[a-z0-9]{1,8}", proptest::collection::vec(("(\\.|_|__|-{1,3})", "[a-z0-9]{1,8}"), 0..3))
        .prop_map(|(head, rest)| rest.into_iter().fold(head, |acc, (sep, part)| acc + &sep + &part))
}

fn valid_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(component(), 1..5).prop_map(|c| c.join("/"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn repo_names_round_trip(name in valid_name()) {
        let parsed: RepoName = name.parse().expect("grammar-conforming name");
        prop_assert_eq!(parsed.to_string(), name.clone());
        prop_assert_eq!(parsed.components().collect::<Vec<_>>().join("/"), name);
    }

    #[test]
    fn arbitrary_names_parse_or_are_name_invalid(s in "\\PC{0,300}|[a-z0-9._/-]{0,80}") {
        match s.parse::<RepoName>() {
            Ok(n) => {
                prop_assert_eq!(n.as_str(), s.as_str());
                prop_assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
                prop_assert!(n.components().all(|c| !c.is_empty() && !c.starts_with('_') && c != "." && c != ".."));
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::NameInvalid),
        }
    }

    #[test]
    fn tags_round_trip_or_are_rejected(s in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|\\PC{0,140}") {
        match s.parse::<Tag>() {
            Ok(t) => {
                prop_assert_eq!(t.to_string(), s.clone());
                prop_assert!(s.len() <= 128 && !s.contains('/') && s != "." && s != "..");
                let r: Reference = s.parse().expect("a tag is a reference");
                prop_assert_eq!(r, Reference::Tag(t));
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::ManifestInvalid),
        }
    }

    #[test]
    fn digests_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let d = Digest::sha256_of(&bytes);
        let parsed: Digest = d.to_string().parse().expect("own digest");
        prop_assert_eq!(&parsed, &d);
        let r: Reference = d.to_string().parse().expect("digest reference");
        prop_assert_eq!(r, Reference::Digest(d));
    }

    #[test]
    fn arbitrary_digests_parse_or_are_digest_invalid(
        s in "(sha256|sha512|md5|SHA256)?:[0-9a-fA-F]{0,130}|\\PC{0,150}"
    ) {
        match s.parse::<Digest>() {
            Ok(d) => {
                prop_assert_eq!(d.to_string(), s.clone());
                prop_assert_eq!(d.hex().len(), d.algorithm().hex_len());
                prop_assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
            Err(e) => prop_assert!(
                matches!(e.code, ErrorCode::DigestInvalid | ErrorCode::Unsupported),
                "{:?}", e.code
            ),
        }
    }

    #[test]
    fn ranges_resolve_inside_the_blob_or_are_unsatisfiable(
        start in any::<u64>(), end in proptest::option::of(any::<u64>()), suffix in any::<u64>(),
        size in 0u64..u64::MAX, kind in 0u8..3,
    ) {
        let req = match kind {
            0 => RangeRequest::From { start, end },
            1 => RangeRequest::Suffix(suffix),
            _ => RangeRequest::Malformed(format!("{start}x")),
        };
        match req.resolve(size) {
            Ok(r) => {
                prop_assert!(r.start <= r.end && r.end < size, "{:?} of {}", r, size);
                prop_assert!(r.len() == r.end - r.start + 1);
            }
            Err(e) => prop_assert_eq!(e.code, ErrorCode::RangeInvalid),
        }
    }

    #[test]
    fn arbitrary_bytes_are_never_a_manifest_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        ct in proptest::option::of("\\PC{0,60}"),
    ) {
        if let Err(e) = parse_manifest(&bytes, ct.as_deref()) {
            prop_assert!(matches!(e.code, ErrorCode::ManifestInvalid | ErrorCode::DigestInvalid | ErrorCode::SizeInvalid), "{:?}", e.code);
        }
    }

    #[test]
    fn manifests_and_indexes_with_arbitrary_fields_parse_or_are_rejected(
        index in any::<bool>(),
        media in prop_oneof![
            Just(None),
            Just(Some("application/vnd.oci.image.manifest.v1+json".to_owned())),
            Just(Some("application/vnd.oci.image.index.v1+json".to_owned())),
            Just(Some("application/vnd.docker.distribution.manifest.v2+json".to_owned())),
            Just(Some("application/vnd.docker.distribution.manifest.list.v2+json".to_owned())),
            "\\PC{0,40}".prop_map(Some),
        ],
        schema in prop_oneof![Just(serde_json::json!(2)), Just(serde_json::json!(1)), Just(serde_json::json!("2")), Just(serde_json::Value::Null)],
        digests in proptest::collection::vec(prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Digest::sha256_of(&b).to_string()),
            "\\PC{0,80}",
        ], 0..4),
        sizes in proptest::collection::vec(prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            Just(serde_json::json!("12")),
        ], 4),
        subject in any::<bool>(),
        ct in proptest::option::of(prop_oneof![Just("application/vnd.oci.image.manifest.v1+json".to_owned()), "\\PC{0,40}"]),
    ) {
        let descs: Vec<serde_json::Value> = digests.iter().zip(sizes.iter().cycle()).map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s,
        })).collect();
        let mut m = serde_json::json!({ "schemaVersion": schema });
        if let Some(mt) = &media { m["mediaType"] = serde_json::json!(mt); }
        if index {
            m["manifests"] = serde_json::json!(descs);
        } else {
            m["config"] = descs.first().cloned().unwrap_or(serde_json::json!({}));
            m["layers"] = serde_json::json!(descs.iter().skip(1).collect::<Vec<_>>());
        }
        if subject { m["subject"] = descs.last().cloned().unwrap_or(serde_json::Value::Null); }
        let bytes = serde_json::to_vec(&m).expect("json");
        match parse_manifest(&bytes, ct.as_deref()) {
            Ok(p) => {
                // Accepted: every reference it names is a valid digest and
                // the media type is one Cove serves as a manifest.
                prop_assert!(cove_core::manifest::is_manifest_media_type(&p.media_type), "{}", p.media_type);
                for d in p.layers.iter().chain(&p.manifests).chain(p.config.iter()) {
                    prop_assert!(d.digest.to_string().parse::<Digest>().is_ok());
                }
            }
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::ManifestInvalid | ErrorCode::DigestInvalid | ErrorCode::SizeInvalid), "{:?}: {}", e.code, e.message),
        }
    }
}
