//! Property tests of the hostile-input parsers (issue 7): the query/form parser and the
//! tracking-cookie reader, through their public functions. Seeded: the seed is printed and
//! `SEED=` replays a run.
//!
//! Properties:
//! - any bytes: `decode_pairs` and `Params::parse` never panic, and what they accept is
//!   within the bounds (parameter count, name and value length, no NUL);
//! - any pairs of text, percent-encoded, decode back to exactly those pairs;
//! - any `Cookie` header: only well-formed `ct_<CID>=<click id>` cookies come out, at most
//!   `MAX_TRACKING_COOKIES`, one per campaign, and every well-formed one planted among
//!   junk is found.

use hyper::header::{HeaderMap, HeaderValue, COOKIE};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use server::cookies::{is_click_id, tracking_cookies};
use server::limits::{
    MAX_EXTRAS, MAX_NAME_BYTES, MAX_PARAMS, MAX_TRACKING_COOKIES, MAX_VALUE_BYTES,
};
use server::params::{decode_pairs, parse_id, Body, Params};

/// Cases per property: enough to cover the grammar's corners, fast enough for CI (case
/// generation dominates in debug builds). `SEED=` runs replay; more seeds, more coverage.
const CASES: u32 = 300;

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("params property tests SEED={seed}");
    seed
}

fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Bytes a hostile query string is made of: the grammar's delimiters, escapes (good and
/// broken), NUL, invalid UTF-8 and ordinary letters, weighted towards the troublesome.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => proptest::sample::select(b"&=+%".to_vec()),
        2 => proptest::sample::select(b"0123456789abcdefABCDEFxz".to_vec()),
        1 => Just(0u8),
        1 => 0x80u8..=0xff,
        2 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..300)
}

/// Percent-encodes every byte but the unreserved ones.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_accepted(params: &Params) -> Result<(), TestCaseError> {
    prop_assert!(params.extras.len() <= MAX_EXTRAS);
    for (name, value) in &params.extras {
        prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES);
        prop_assert!(value.len() <= MAX_VALUE_BYTES);
        prop_assert!(!name.contains('\0') && !value.contains('\0'));
    }
    Ok(())
}

#[test]
fn the_query_parser_never_panics_and_keeps_its_bounds() {
    let seed = seed();
    let result = runner(seed).run(
        &(hostile_bytes(), hostile_bytes(), any::<bool>()),
        |(query, body, json)| {
            if let Ok(pairs) = decode_pairs(&query) {
                prop_assert!(pairs.len() <= MAX_PARAMS);
                for (name, value) in &pairs {
                    prop_assert!(!name.is_empty() && name.len() <= MAX_NAME_BYTES);
                    prop_assert!(!name.contains('\0') && !value.contains('\0'));
                }
            }
            // The query arrives as a str (hyper's URI); the body as bytes.
            let query = String::from_utf8_lossy(&query).into_owned();
            let body = if json {
                Body::Json(&body)
            } else {
                Body::Form(&body)
            };
            if let Ok(params) = Params::parse(Some(&query), Some(body)) {
                check_accepted(&params)?;
                // Whatever parsed also maps to a source or a clear refusal, never a panic.
                let _ = params.source();
                let _ = params.sub_ids();
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
}

#[test]
fn encoded_pairs_decode_to_themselves() {
    let seed = seed();
    let text = "\\PC{0,24}".prop_filter("no NUL", |s: &String| !s.contains('\0'));
    let name = "\\PC{1,20}".prop_filter("no NUL, not blank", |s: &String| {
        !s.contains('\0') && s.len() <= MAX_NAME_BYTES
    });
    let result = runner(seed).run(&proptest::collection::vec((name, text), 0..12), |pairs| {
        let query = pairs
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let decoded = decode_pairs(query.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{query:?}: {e}")))?;
        prop_assert_eq!(decoded, pairs);
        Ok(())
    });
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
}

#[test]
fn only_well_formed_tracking_cookies_come_out() {
    let seed = seed();
    // Header values are visible ASCII (hyper refuses the rest before we see it).
    let junk = "[ -~]{0,60}";
    let id = "[A-Za-z0-9_-]{1,32}";
    let planted = (1u32..50, id);
    let result = runner(seed).run(
        &(
            proptest::collection::vec(junk, 0..6),
            proptest::collection::vec(planted, 0..6),
        ),
        |(junk, planted)| {
            let mut pieces: Vec<String> = junk;
            for (campaign, id) in &planted {
                pieces.push(format!("ct_{campaign}={id}"));
            }
            let header = pieces.join("; ");
            let Ok(value) = HeaderValue::from_str(&header) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.append(COOKIE, value);
            let found = tracking_cookies(&headers);
            prop_assert!(found.len() <= MAX_TRACKING_COOKIES);
            for (i, (campaign, id)) in found.iter().enumerate() {
                prop_assert!(*campaign > 0);
                prop_assert!(is_click_id(id), "{id:?}");
                prop_assert!(!found[..i].iter().any(|(c, _)| c == campaign));
            }
            // Every planted cookie whose campaign no earlier piece claimed is found.
            for (campaign, id) in &planted {
                let first = header
                    .split(';')
                    .map(str::trim)
                    .filter_map(|p| p.split_once('='))
                    .find(|(n, v)| {
                        n.strip_prefix("ct_").and_then(parse_id) == Some(*campaign)
                            && is_click_id(v.trim_matches('"'))
                    })
                    .map(|(_, v)| v.trim_matches('"').to_string());
                if first.as_deref() == Some(id.as_str()) {
                    prop_assert!(
                        found.iter().any(|(c, v)| c == campaign && v == id),
                        "{header:?} lost ct_{campaign}={id}"
                    );
                }
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
}
