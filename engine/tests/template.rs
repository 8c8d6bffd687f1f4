//! Macro templates (SPEC 5.3) through the public `engine::template` API: both macro forms,
//! aliases, extras, unknown macros, URL encoding and HTML escaping, save-time validation,
//! and a seeded property test that no value can move a URL to another host or add
//! parameters.

use engine::template::{expand_html, expand_url, validate_url_template, Macros};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::borrow::Cow;
use std::collections::HashMap;

/// Macro values keyed by canonical name (or extra name, lower case).
struct Values(HashMap<String, String>);

impl Values {
    fn new(pairs: &[(&str, &str)]) -> Self {
        Values(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl Macros for Values {
    fn value(&self, canonical_name: &str) -> Option<Cow<'_, str>> {
        self.0
            .get(canonical_name)
            .map(|v| Cow::Borrowed(v.as_str()))
    }
}

fn sample() -> Values {
    Values::new(&[
        ("click_id", "Ab3_x-9"),
        ("conversion_id", "cv42"),
        ("campaign_id", "1"),
        ("affiliate_id", "7"),
        ("creative_id", "12"),
        ("sid1", "news letter"),
        ("sid2", "a&b=c"),
        ("merchant_ref", "ORD#9/1?x"),
        ("payout", "4.50"),
        ("revenue", "10"),
        ("currency", "USD"),
        ("status", "approved"),
        ("event", "sale"),
        ("timestamp", "1764000000"),
        ("token", "secret-token"),
        ("utm_source", "mail@evil.example:80"),
        ("dots", ".."),
    ])
}

fn check_url(template: &str, want: &str) {
    assert_eq!(
        expand_url(template, &sample()),
        want,
        "expand_url({template:?})"
    );
}

#[test]
fn url_macros_in_both_forms_through_aliases() {
    let cases = [
        (
            "https://s.example/?c={click_id}",
            "https://s.example/?c=Ab3_x-9",
        ),
        (
            "https://s.example/?c={ClickID}",
            "https://s.example/?c=Ab3_x-9",
        ),
        (
            "https://s.example/?c=[=ClickID=]",
            "https://s.example/?c=Ab3_x-9",
        ),
        (
            "https://s.example/?c=[=transaction_id=]",
            "https://s.example/?c=Ab3_x-9",
        ),
        (
            "https://s.example/?a=[=AFID=]&o={offer_id}",
            "https://s.example/?a=7&o=1",
        ),
        (
            "https://s.example/?s=[=SID=]",
            "https://s.example/?s=news%20letter",
        ),
        (
            "https://s.example/?s={aff_sub}",
            "https://s.example/?s=news%20letter",
        ),
        (
            "https://s.example/?s={SUB2}",
            "https://s.example/?s=a%26b%3Dc",
        ),
        (
            "https://s.example/?m=[=MerchantReferenceID=]",
            "https://s.example/?m=ORD%239%2F1%3Fx",
        ),
        (
            "https://s.example/?p={AP}&r={mp}&cur={Currency}",
            "https://s.example/?p=4.50&r=10&cur=USD",
        ),
        (
            "https://s.example/?st={status}&e={EVENT}&t={timestamp}",
            "https://s.example/?st=approved&e=sale&t=1764000000",
        ),
        (
            "https://s.example/?cv={conversion_id}&ad={ADID}",
            "https://s.example/?cv=cv42&ad=12",
        ),
        // A known field without a value expands to nothing.
        ("https://s.example/?s3={sid3}", "https://s.example/?s3="),
        // Extras by name, case-insensitively; hostile characters are encoded.
        (
            "https://s.example/?u={UTM_Source}",
            "https://s.example/?u=mail%40evil.example%3A80",
        ),
        // Unknown macros, malformed macros and flags stay as they are.
        (
            "https://s.example/?x={nope}&y=[=Nope=]",
            "https://s.example/?x={nope}&y=[=Nope=]",
        ),
        (
            "https://s.example/?x={click id}&y={}&z=[=&w={click_id",
            "https://s.example/?x={click id}&y={}&z=[=&w={click_id",
        ),
        (
            "https://s.example/?tok={token}&t={T}",
            "https://s.example/?tok={token}&t={T}",
        ),
        // A value of only dots cannot become a dot-segment in the path.
        (
            "https://s.example/a/{dots}/b",
            "https://s.example/a/%2E%2E/b",
        ),
        // Non-ASCII template text is copied through untouched.
        (
            "https://s.example/é?c={click_id}",
            "https://s.example/é?c=Ab3_x-9",
        ),
    ];
    for (template, want) in cases {
        check_url(template, want);
    }
}

#[test]
fn url_values_with_unicode_are_utf8_percent_encoded() {
    let values = Values::new(&[("sid1", "café/☕")]);
    assert_eq!(
        expand_url("http://h.example/?s={sid1}", &values),
        "http://h.example/?s=caf%C3%A9%2F%E2%98%95"
    );
}

#[test]
fn macro_names_longer_than_the_bound_are_left_alone() {
    let long = "a".repeat(engine::template::MAX_MACRO_NAME_BYTES + 1);
    let values = Values::new(&[(long.as_str(), "v")]);
    let template = format!("http://h.example/?x={{{long}}}");
    assert_eq!(expand_url(&template, &values), template);
}

#[test]
fn html_values_are_escaped() {
    let values = Values::new(&[
        ("click_id", "<script>alert('x')</script>"),
        ("sid1", "\"a\" & `b`"),
    ]);
    let cases = [
        (
            "<img src=\"https://a.example/p?c={click_id}\">",
            "<img src=\"https://a.example/p?c=&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;\">",
        ),
        ("<p>[=SID=]</p>", "<p>&quot;a&quot; &amp; &#x60;b&#x60;</p>"),
        ("<p>{unknown}</p>", "<p>{unknown}</p>"),
    ];
    for (template, want) in cases {
        assert_eq!(
            expand_html(template, &values),
            want,
            "expand_html({template:?})"
        );
    }
}

#[test]
fn url_templates_are_validated_when_saved() {
    let ok = [
        "https://shop.example/?ref={click_id}&a={affiliate_id}&s={sid1}",
        "HTTP://shop.example:8080/path/{sid2}?x=[=ClickID=]",
        "http://127.0.0.1:9000/pb?c={click_id}&u={utm_source}",
        "https://[2001:db8::1]/pb?c={click_id}",
        "https://aff.example/pb",
    ];
    for template in ok {
        assert_eq!(validate_url_template(template), Ok(()), "{template}");
    }
    let refused = [
        ("", "http"),
        ("shop.example/?c={click_id}", "http"),
        ("ftp://shop.example/", "http"),
        ("javascript:alert(1)", "http"),
        ("{click_id}://shop.example/", "http"),
        ("https://{sid1}/x", "host"),
        ("https://shop.{sid1}.example/x", "host"),
        ("https://[=SID=].example/x", "host"),
        ("https://shop.example:{sid1}/x", "host"),
        ("https://shop.example{sid1}?x=1", "host"),
        ("https:///path", "host"),
        ("https://user:pw@shop.example/", "user"),
        ("https://shop.example/a b", "valid URL"),
        ("https://shop.example:99999/", "port"),
        ("https://shop.example:0/", "port"),
    ];
    for (template, needle) in refused {
        let err = validate_url_template(template).expect_err(template);
        assert!(err.contains(needle), "{template}: {err}");
    }
}

/// The seed for the property test: `SEED=` from the environment, else a fresh one; printed
/// so a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand_seed);
    println!("template property test SEED={seed}");
    seed
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

const HOSTS: &[&str] = &[
    "shop.example",
    "aff.example:8443",
    "127.0.0.1:9000",
    "[2001:db8::1]:81",
];
const MACROS: &[&str] = &[
    "{click_id}",
    "[=ClickID=]",
    "{sid1}",
    "[=SID=]",
    "{SID2}",
    "[=AFID=]",
    "{payout}",
    "{merchant_ref}",
    "{utm_source}",
    "{unknown}",
    "[=Unknown=]",
];
const HOSTILE: &[&str] = &[
    "&",
    "#",
    "/",
    "?",
    "@",
    ":",
    "=",
    "%",
    "..",
    ".",
    " ",
    "\\",
    "évil",
    "☕",
    "%2F",
    "a&admin=1",
    "#frag",
    "/../../x",
    "@evil.example",
    "http://evil.example/",
];

/// The delimiters a value must never add to a URL.
fn delimiters(url: &str) -> Vec<usize> {
    ['&', '#', '/', '?', '@', ':', '=', ';', '\\', '[', ']']
        .iter()
        .map(|d| url.matches(*d).count())
        .collect()
}

#[test]
fn expansion_always_keeps_the_configured_host_and_parameters() {
    let seed = seed();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 512,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let value = prop_oneof![
        any::<String>(),
        proptest::sample::select(HOSTILE).prop_map(str::to_string),
        proptest::collection::vec(proptest::sample::select(HOSTILE), 1..4)
            .prop_map(|parts| parts.concat()),
    ];
    let strategy = (
        proptest::sample::select(HOSTS),
        proptest::bool::ANY,
        proptest::collection::vec(proptest::sample::select(MACROS), 0..3),
        proptest::collection::vec(proptest::sample::select(MACROS), 1..5),
        proptest::collection::vec(value, 6),
    );
    let result = runner.run(&strategy, |(host, https, path, query, vals)| {
        let scheme = if https { "https" } else { "http" };
        let path: String = path.iter().map(|m| format!("/{m}")).collect();
        let query: Vec<String> = query
            .iter()
            .enumerate()
            .map(|(i, m)| format!("p{i}={m}"))
            .collect();
        let template = format!("{scheme}://{host}{path}/x?{}", query.join("&"));
        prop_assert_eq!(validate_url_template(&template), Ok(()), "{}", template);

        let names = [
            "click_id",
            "sid1",
            "sid2",
            "affiliate_id",
            "payout",
            "utm_source",
        ];
        let values = Values(
            names
                .iter()
                .zip(&vals)
                .map(|(n, v)| (n.to_string(), v.clone()))
                .chain([("merchant_ref".to_string(), vals[0].clone())])
                .collect(),
        );
        let empty = Values(
            names
                .iter()
                .map(|n| (n.to_string(), String::new()))
                .collect(),
        );
        let skeleton = expand_url(&template, &empty);
        let url = expand_url(&template, &values);

        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{url}: {e}")))?;
        let want: hyper::Uri = skeleton
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{skeleton}: {e}")))?;
        prop_assert_eq!(uri.scheme_str(), Some(scheme));
        prop_assert_eq!(uri.authority(), want.authority(), "{}", url);
        prop_assert_eq!(delimiters(&url), delimiters(&skeleton), "{}", url);
        prop_assert!(url.is_ascii(), "{}", url);
        Ok(())
    });
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
}
