//! Property-based tests of the server's parsers of outside bytes: `Range`
//! and `Content-Range` headers, the configuration TOML and
//! `storage.min_free`. Bounded (`CASES` per property) so it runs in seconds.

use cove_core::{ErrorCode, RangeRequest};
use cove_server::config::Config;
use cove_server::range::{parse_content_range, parse_range};
use proptest::prelude::*;

const CASES: u32 = 512;

fn config() -> ProptestConfig {
    // PROPTEST_CASES, when set, runs more (or fewer).
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn range_headers_round_trip(start in any::<u64>(), end in proptest::option::of(any::<u64>()), suffix in any::<u64>(), kind in any::<bool>()) {
        let (header, want) = if kind {
            let h = match end { Some(e) => format!("bytes={start}-{e}"), None => format!("bytes={start}-") };
            (h, RangeRequest::From { start, end })
        } else {
            (format!("bytes=-{suffix}"), RangeRequest::Suffix(suffix))
        };
        prop_assert_eq!(parse_range(&header), Some(want.clone()));
        prop_assert_eq!(format!("bytes={want}"), header);
    }

    #[test]
    fn arbitrary_range_headers_never_panic(h in "(bytes=)?[0-9 ,-]{0,40}|\\PC{0,80}", size in any::<u64>()) {
        match parse_range(&h) {
            None => {}
            Some(r) => {
                prop_assert!(h.trim().starts_with("bytes="));
                if let Ok(b) = r.resolve(size) {
                    prop_assert!(b.start <= b.end && b.end < size);
                }
            }
        }
    }

    #[test]
    fn content_ranges_round_trip(start in any::<u64>(), len in 0u64..1 << 40, form in 0u8..3) {
        let end = start.saturating_add(len);
        let text = match form {
            0 => format!("{start}-{end}"),
            1 => format!("bytes {start}-{end}/*"),
            _ => format!("bytes={start}-{end}"),
        };
        let v = http::HeaderValue::from_str(&text).expect("ascii");
        prop_assert_eq!(parse_content_range(&v).expect("well formed"), (start, end));
    }

    #[test]
    fn arbitrary_content_ranges_parse_or_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
        let Ok(v) = http::HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        match parse_content_range(&v) {
            Ok((a, b)) => prop_assert!(a <= b, "{a}-{b}"),
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::BlobUploadInvalid | ErrorCode::SizeInvalid | ErrorCode::RangeInvalid), "{:?}", e.code),
        }
    }

    #[test]
    fn arbitrary_config_text_is_parsed_or_rejected(text in "\\PC{0,400}") {
        if let Ok(cfg) = Config::parse(&text) {
            let _ = cfg.validate();
        }
    }

    #[test]
    fn config_with_arbitrary_values_validates_or_names_the_key(
        key in prop_oneof![
            Just("server.listen"), Just("server.public_url"), Just("storage.upload_ttl"), Just("storage.min_free"),
            Just("gc.interval"), Just("retention.interval"), Just("auth.trusted_networks"), Just("auth.kind"),
            Just("storage.kind"), Just("metrics.enabled"),
        ],
        value in prop_oneof![
            "\\PC{0,30}".prop_map(|s| toml::Value::String(s).to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            proptest::collection::vec("[ -~]{0,12}", 0..3).prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect()).to_string()),
        ],
    ) {
        let (section, name) = key.split_once('.').expect("dotted");
        let text = format!("[{section}]\n{name} = {value}\n");
        match Config::parse(&text) {
            Err(e) => prop_assert!(!e.is_empty()),
            Ok(cfg) => {
                if let Err(e) = cfg.validate() {
                    let msg = e.to_string();
                    prop_assert!(msg.contains(section), "{text}: {msg}");
                }
            }
        }
    }

    #[test]
    fn min_free_parses_sizes_and_percentages(n in 0u64..1 << 50, p in 0.0f64..=100.0, junk in "\\PC{0,20}") {
        use cove_server::config::{parse_min_free, MinFree};
        prop_assert_eq!(parse_min_free(&n.to_string()), Ok(MinFree::Bytes(n)));
        prop_assert_eq!(parse_min_free(&format!("{p}%")), Ok(MinFree::Percent(p)));
        if let Ok(m) = parse_min_free(&junk) {
            prop_assert!(m.bytes(1 << 40) <= (1 << 40) || matches!(m, MinFree::Bytes(_)));
        }
    }
}
