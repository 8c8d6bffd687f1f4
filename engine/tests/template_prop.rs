//! Template expansion under arbitrary values (issue 7), through `engine::template`: for any
//! text at all in any macro (unicode, delimiters, escapes, dot segments), the expanded URL
//! keeps the configured scheme, host and path, gains no delimiter (`?`, `&`, `=`, `#`, `/`),
//! stays printable ASCII, and each parameter decodes back to exactly the value given.
//! Complements `template.rs`, whose property test draws values from a hostile list.
//! Seeded: the seed is printed and `SEED=` replays a run.

use engine::template::{expand_url, validate_url_template, Macros};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::borrow::Cow;
use std::collections::HashMap;

/// Cases: each expands one template; generation dominates the cost in debug builds.
const CASES: u32 = 400;

struct Values(HashMap<&'static str, String>);

impl Macros for Values {
    fn value(&self, canonical_name: &str) -> Option<Cow<'_, str>> {
        self.0
            .get(canonical_name)
            .map(|v| Cow::Borrowed(v.as_str()))
    }
}

/// Macro spellings (both forms, aliases, case) and the canonical name each resolves to.
const MACROS: &[(&str, &str)] = &[
    ("{click_id}", "click_id"),
    ("[=ClickID=]", "click_id"),
    ("{transaction_id}", "click_id"),
    ("{sid1}", "sid1"),
    ("[=SID=]", "sid1"),
    ("{aff_sub}", "sid1"),
    ("{affiliate_id}", "affiliate_id"),
    ("[=AFID=]", "affiliate_id"),
    ("{MerchantReferenceID}", "merchant_ref"),
    ("{utm_source}", "utm_source"),
];

const HOSTS: &[&str] = &["aff.example", "sub.aff.example:8443", "192.0.2.7"];

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    println!("template_prop SEED={seed}");
    seed
}

/// Any text, with the URL grammar's delimiters and escapes over-represented.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[&=#?/@:%+. \\[\\]{}\\\\]{0,12}",
        "\\.{1,3}",
        "(%[0-9a-fA-F]{2}|%|%z){0,4}",
        "\\PC{0,16}",
    ]
}

fn delimiters(text: &str) -> [usize; 5] {
    let count = |c: char| text.chars().filter(|x| *x == c).count();
    [count('?'), count('&'), count('='), count('#'), count('/')]
}

#[test]
fn any_value_stays_inside_its_parameter() {
    let seed = seed();
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = (
        proptest::sample::select(HOSTS),
        proptest::sample::select(vec!["", "/pb", "/a/b/"]),
        proptest::collection::vec(proptest::sample::select(MACROS), 1..5),
        proptest::collection::vec(value(), 5),
    );
    let result = runner.run(&strategy, |(host, path, macros, values)| {
        let template = format!(
            "https://{host}{path}?{}",
            macros
                .iter()
                .enumerate()
                .map(|(i, (spelling, _))| format!("p{i}={spelling}"))
                .collect::<Vec<_>>()
                .join("&")
        );
        prop_assert!(
            validate_url_template(&template).is_ok(),
            "{template} is a valid template"
        );
        let names = [
            "click_id",
            "sid1",
            "affiliate_id",
            "merchant_ref",
            "utm_source",
        ];
        let given: HashMap<&'static str, String> =
            names.iter().copied().zip(values.iter().cloned()).collect();
        let out = expand_url(&template, &Values(given.clone()));

        let fixed = format!("https://{host}{path}?");
        prop_assert!(out.starts_with(&fixed), "{out:?} left {fixed}");
        prop_assert!(
            out.bytes().all(|b| b.is_ascii_graphic()),
            "{out:?} is printable ASCII"
        );
        // The template's own delimiters, less the `=` inside `[=Name=]` macros.
        let mut want = delimiters(&template);
        let bracket_equals: usize = macros.iter().filter(|(s, _)| s.starts_with("[=")).count() * 2;
        want[2] -= bracket_equals;
        prop_assert_eq!(delimiters(&out), want, "{}", out);
        // Each parameter decodes back to its value.
        let query = &out[fixed.len()..];
        for (i, piece) in query.split('&').enumerate() {
            let (name, encoded) = piece
                .split_once('=')
                .ok_or_else(|| TestCaseError::fail(format!("{piece:?} in {out:?}")))?;
            prop_assert_eq!(name, format!("p{i}"));
            let decoded = percent_decode_str(encoded).decode_utf8_lossy();
            let canonical = macros[i].1;
            prop_assert_eq!(decoded.as_ref(), given[canonical].as_str(), "{}", out);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
}
