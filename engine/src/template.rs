//! Macro templates for landing URLs and pixels (SPEC 5.3): `{name}` and LinkTrust's
//! `[=Name=]`. Names match case-insensitively and through the alias table in `fields`
//! (`{ClickID}`, `[=AFID=]`, `[=SID=]` = sid1). Values are URL-encoded into URLs and
//! HTML-escaped into HTML; an unknown macro is left as it is.
//!
//! Resolution of one macro name, in order:
//! 1. A request flag (`type`, `token`, `C`, `R`, `T`) is never a macro: it is left as it is,
//!    so a template can never leak the postback token.
//! 2. A field name or alias resolves to the field's canonical name (`fields::canonical_name`);
//!    a field without a value (no sid3 on this click) expands to the empty string, which is
//!    what an operator expects from `&s3={sid3}`.
//! 3. Any other name is an extra, asked for by its lower-case name; an extra the click does
//!    not carry is an unknown macro and is left as it is.
//!
//! Expansion is one pass over the template with no allocation besides the output (names are
//! lower-cased on the stack): the click path calls [`expand_url`] once per click.

use crate::fields::{self, Field};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Cow;

/// Supplies macro values by canonical name (`click_id`, `sid1`, `payout`, ...; see
/// `fields::canonical_name`) or, for extras, by the extra's name in lower case.
pub trait Macros {
    fn value(&self, canonical_name: &str) -> Option<Cow<'_, str>>;

    /// The value of a known field (never a request flag). The default asks
    /// [`Macros::value`] by the field's canonical name; the click path's implementation
    /// answers directly, so a landing URL costs neither a second alias lookup per macro
    /// nor a `String` per number.
    fn field_value(&self, field: Field) -> Option<MacroValue<'_>> {
        self.value(fields::canonical_name(field))
            .map(MacroValue::Text)
    }
}

/// The value of one macro.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MacroValue<'a> {
    Text(Cow<'a, str>),
    /// Written in decimal straight into the output (digits need no escaping anywhere).
    Number(u64),
}

impl<'a> MacroValue<'a> {
    /// The value as text, formatting a number.
    pub fn into_text(self) -> Cow<'a, str> {
        match self {
            MacroValue::Text(text) => text,
            MacroValue::Number(n) => Cow::Owned(n.to_string()),
        }
    }
}

/// The longest macro name recognised. The longest alias (`merchantreferenceid`) has 19
/// bytes; 64 leaves room for descriptive extra names while keeping the lower-cased copy on
/// the stack. A longer `{...}` is not a macro and stays as it is.
pub const MAX_MACRO_NAME_BYTES: usize = 64;

/// Everything but RFC 3986 "unreserved" characters is percent-encoded, so a value can never
/// carry a `&`, `=`, `#`, `/`, `?`, `@`, `:`, `%`, space or non-ASCII byte into the URL: it
/// stays inside the one component the template put it in.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Expands a URL template; every substituted value is percent-encoded so it cannot add
/// parameters, fragments or path segments, or change the host.
pub fn expand_url(template: &str, macros: &dyn Macros) -> String {
    let mut out = String::with_capacity(template.len() + EXPANSION_HEADROOM_BYTES);
    expand_url_into(&mut out, template, macros);
    out
}

/// [`expand_url`] appending to `out`, so a caller can reuse one buffer.
///
/// The click path calls this once per click with one of a few landing templates, so the
/// template's cut into text and macros (the scan and one alias lookup per macro) is kept
/// per thread and reused; the output is the same as [`expand_into`]'s.
pub fn expand_url_into(out: &mut String, template: &str, macros: &dyn Macros) {
    if template.len() > MAX_COMPILED_TEMPLATE_BYTES {
        return expand_into(out, template, macros, write_url_value);
    }
    COMPILED.with(|cache| match cache.try_borrow_mut() {
        Ok(mut cache) => {
            if cache.is_empty() {
                cache.resize_with(COMPILED_SLOTS, || None);
            }
            let slot = &mut cache[compiled_slot(template)];
            let compiled = match slot {
                Some(compiled) if *compiled.template == *template => compiled,
                _ => slot.insert(Compiled::new(template)),
            };
            compiled.expand(out, macros, write_url_value);
        }
        // Not reached (expansion does not re-enter), but the direct path is always right.
        Err(_) => expand_into(out, template, macros, write_url_value),
    })
}

/// Slots of the per-thread cache of cut templates: more than the landing templates a
/// worker sees at once in a typical deployment; a collision only costs a re-cut.
const COMPILED_SLOTS: usize = 64;

/// Longest template kept cut in the cache; longer ones are expanded directly, so the
/// cache holds at most [`COMPILED_SLOTS`] times this (plus the cut) per thread.
const MAX_COMPILED_TEMPLATE_BYTES: usize = 2048;

thread_local! {
    /// Direct-mapped by the template's address (a campaign's template lives in its
    /// `Arc<Campaign>`), checked by content, so a reused address never serves a stale cut.
    static COMPILED: std::cell::RefCell<Vec<Option<Compiled>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The cache slot of a template: a multiplicative hash of its address and length.
fn compiled_slot(template: &str) -> usize {
    let address = template.as_ptr() as usize as u64 ^ (template.len() as u64).rotate_left(32);
    // COMPILED_SLOTS is 64: the top six bits.
    (address.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - 6)) as usize
}
const _: () = assert!(COMPILED_SLOTS == 1 << 6);

/// A template cut once into literal text and macros, exactly as [`expand_into`] scans it.
struct Compiled {
    template: Box<str>,
    /// Lower-case names of the macros that are neither fields nor flags (extras).
    extra_names: String,
    parts: Vec<Part>,
}

/// One piece of a [`Compiled`] template; ranges index its `template` (or `extra_names`).
enum Part {
    /// Copied as it is: text between macros, and request flags, which are never macros.
    Text(std::ops::Range<usize>),
    /// A field: its value, or nothing when the click has none.
    Field(Field),
    /// An extra, asked for by its lower-case `name`; left as the macro's `text` when the
    /// click does not carry it.
    Extra {
        name: std::ops::Range<usize>,
        text: std::ops::Range<usize>,
    },
}

impl Compiled {
    fn new(template: &str) -> Compiled {
        let mut compiled = Compiled {
            template: template.into(),
            extra_names: String::new(),
            parts: Vec::new(),
        };
        let mut copied_to = 0;
        // The scan of `expand_into`, recording where values go instead of writing them.
        for (i, name, end) in macros_in(template) {
            let part = match fields::lookup(name) {
                Some(field) if is_flag(field) => None,
                Some(field) => Some(Part::Field(field)),
                None => {
                    let start = compiled.extra_names.len();
                    compiled.extra_names.push_str(name);
                    compiled.extra_names[start..].make_ascii_lowercase();
                    Some(Part::Extra {
                        name: start..compiled.extra_names.len(),
                        text: i..end,
                    })
                }
            };
            if let Some(part) = part {
                if copied_to < i {
                    compiled.parts.push(Part::Text(copied_to..i));
                }
                compiled.parts.push(part);
                copied_to = end;
            }
        }
        if copied_to < template.len() {
            compiled.parts.push(Part::Text(copied_to..template.len()));
        }
        compiled
    }

    fn expand(&self, out: &mut String, macros: &dyn Macros, write_value: fn(&mut String, &str)) {
        out.reserve(self.template.len() + EXPANSION_HEADROOM_BYTES);
        for part in &self.parts {
            match part {
                Part::Text(range) => out.push_str(&self.template[range.clone()]),
                Part::Field(field) => write_macro(out, field_or_empty(macros, *field), write_value),
                Part::Extra { name, text } => match macros.value(&self.extra_names[name.clone()]) {
                    Some(value) => write_value(out, &value),
                    None => out.push_str(&self.template[text.clone()]),
                },
            }
        }
    }
}

/// Writes one value into a URL: percent-encoded, and never a bare dot-segment.
fn write_url_value(out: &mut String, value: &str) {
    if !value.is_empty() && value.bytes().all(|b| b == b'.') {
        // `.` and `..` alone would be dot-segments that walk up the target's path.
        for _ in 0..value.len() {
            out.push_str("%2E");
        }
    } else if value.bytes().all(|b| UNRESERVED[usize::from(b)]) {
        // Nothing to encode (click IDs, numbers, most sub IDs): copied in one go.
        out.push_str(value);
    } else {
        out.extend(utf8_percent_encode(value, URL_VALUE));
    }
}

/// Room for the values beyond the template's own length: most values are short IDs, so
/// a little headroom avoids a regrowth on typical templates.
const EXPANSION_HEADROOM_BYTES: usize = 64;

/// The bytes [`URL_VALUE`] leaves as they are (RFC 3986 "unreserved"), as a table.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < table.len() {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

/// Expands an HTML/script template; every substituted value is HTML-escaped.
pub fn expand_html(template: &str, macros: &dyn Macros) -> String {
    expand(template, macros, escape_html_into)
}

/// Checks a URL template when it is saved: with every macro replaced by a sample value the
/// result must parse as an absolute http(s) URL whose host does not come from a macro.
pub fn validate_url_template(template: &str) -> Result<(), String> {
    let scheme_len = if starts_with_ignore_case(template, "https://") {
        "https://".len()
    } else if starts_with_ignore_case(template, "http://") {
        "http://".len()
    } else {
        return Err("the URL must start with http:// or https://".to_string());
    };
    let rest = &template[scheme_len..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.is_empty() {
        return Err("the URL has no host".to_string());
    }
    if authority.contains(['{', '}']) || authority.contains("[=") || authority.contains("=]") {
        return Err("a macro may not appear in the host or port of the URL".to_string());
    }
    if authority.contains('@') {
        return Err("the URL may not carry user information (user@host)".to_string());
    }
    // Every macro, known or not, becomes a harmless sample value; what is left must be a URL
    // the dispatcher's HTTP client accepts.
    let sample = expand(template, &SampleValues, |out, value| out.push_str(value));
    let uri: hyper::Uri = sample
        .parse()
        .map_err(|e| format!("not a valid URL once macros are filled in: {e}"))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        _ => return Err("the URL must start with http:// or https://".to_string()),
    }
    // `hyper::Uri` silently ignores a port that is not a u16; the dispatcher must not.
    let after_host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, rest)| rest),
        None => authority.find(':').map_or("", |i| &authority[i..]),
    };
    if let Some(port) = after_host.strip_prefix(':') {
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(format!(
                "the URL's port {port:?} is not between 1 and 65535"
            ));
        }
    } else if !after_host.is_empty() {
        return Err("not a valid URL: unexpected text after the host".to_string());
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err("the URL has no host".to_string()),
    }
}

/// Fills every macro, including unknown ones, with a sample value for validation.
struct SampleValues;

impl Macros for SampleValues {
    fn value(&self, _canonical_name: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed("x1"))
    }
}

/// The one expansion loop into a new string.
fn expand(template: &str, macros: &dyn Macros, write_value: impl Fn(&mut String, &str)) -> String {
    let mut out = String::with_capacity(template.len() + EXPANSION_HEADROOM_BYTES);
    expand_into(&mut out, template, macros, write_value);
    out
}

/// The one expansion loop; `write_value` encodes a value into the output.
fn expand_into(
    out: &mut String,
    template: &str,
    macros: &dyn Macros,
    write_value: impl Fn(&mut String, &str),
) {
    out.reserve(template.len() + EXPANSION_HEADROOM_BYTES);
    let mut copied_to = 0;
    // The text between macros is copied in bulk.
    for (i, name, end) in macros_in(template) {
        if let Some(value) = resolve(name, macros) {
            out.push_str(&template[copied_to..i]);
            write_macro(out, value, &write_value);
            copied_to = end;
        }
    }
    out.push_str(&template[copied_to..]);
}

/// Every macro of a template in order, `{name}` or `[=name=]`: where its text starts, its
/// name, and where its text ends. From one possible opening to the next, found a word at a
/// time by `memchr2`.
fn macros_in(template: &str) -> impl Iterator<Item = (usize, &str, usize)> {
    let bytes = template.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while let Some(offset) = memchr::memchr2(b'{', b'[', &bytes[i..]) {
            i += offset;
            let found = match bytes[i] {
                b'{' => macro_at(template, i + 1, b"}"),
                b'[' if bytes.get(i + 1) == Some(&b'=') => macro_at(template, i + 2, b"=]"),
                _ => None,
            };
            match found {
                Some((name, end)) => {
                    let start = i;
                    i = end;
                    return Some((start, name, end));
                }
                None => i += 1,
            }
        }
        None
    })
}

/// A macro name starting at `start` and closed by `close`: `(name, index after close)`.
fn macro_at<'t>(template: &'t str, start: usize, close: &[u8]) -> Option<(&'t str, usize)> {
    let rest = template.as_bytes().get(start..)?;
    let len = rest
        .iter()
        .take(MAX_MACRO_NAME_BYTES + 1)
        .position(|&b| !NAME_BYTES[usize::from(b)])?;
    // Byte by byte: the closers are one or two bytes, less than a `memcmp` call costs.
    let closed = close
        .iter()
        .enumerate()
        .all(|(k, c)| rest.get(len + k) == Some(c));
    if len == 0 || len > MAX_MACRO_NAME_BYTES || !closed {
        return None;
    }
    Some((template.get(start..start + len)?, start + len + close.len()))
}

/// Bytes a macro name may contain: enough for every alias and for extras such as
/// `utm_source` or `gclid`; never a URL delimiter.
const fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

/// [`is_name_byte`] as a table, one load per byte of a macro name.
const NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < table.len() {
        table[b] = is_name_byte(b as u8);
        b += 1;
    }
    table
};

/// `n` in decimal, formatted in `buf` (20 digits hold any u64).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[start..]).unwrap_or_default()
}

/// A request flag: never a macro, so a template can never leak the postback token.
fn is_flag(field: Field) -> bool {
    matches!(
        field,
        Field::PixelType
            | Field::Token
            | Field::CookieFlag
            | Field::RedirectFlag
            | Field::TrackFlag
    )
}

/// A field's value for a macro: empty when the event does not carry the field.
fn field_or_empty(macros: &dyn Macros, field: Field) -> MacroValue<'_> {
    macros
        .field_value(field)
        .unwrap_or(MacroValue::Text(Cow::Borrowed("")))
}

/// Writes a macro's value through `write_value` (numbers as decimal text).
fn write_macro(out: &mut String, value: MacroValue<'_>, write_value: impl Fn(&mut String, &str)) {
    match value {
        MacroValue::Text(text) => write_value(out, &text),
        MacroValue::Number(n) => write_value(out, decimal(n, &mut [0; 20])),
    }
}

/// The value of one macro; `None` leaves the macro text in place.
fn resolve<'m>(name: &str, macros: &'m dyn Macros) -> Option<MacroValue<'m>> {
    match fields::lookup(name) {
        Some(field) if is_flag(field) => None,
        Some(field) => Some(field_or_empty(macros, field)),
        None => {
            let mut buf = [0u8; MAX_MACRO_NAME_BYTES];
            let lower = &mut buf[..name.len()];
            lower.copy_from_slice(name.as_bytes());
            lower.make_ascii_lowercase();
            // Names are ASCII by construction (`is_name_byte`), so this cannot fail.
            let lower = std::str::from_utf8(lower).ok()?;
            macros.value(lower).map(MacroValue::Text)
        }
    }
}

fn escape_html_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            c => out.push(c),
        }
    }
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers through [`Macros::field_value`], text through [`Macros::value`].
    struct Numbers;

    impl Macros for Numbers {
        fn value(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == "utm_source").then_some(Cow::Borrowed("a b"))
        }
        fn field_value(&self, field: Field) -> Option<MacroValue<'_>> {
            match field {
                Field::CampaignId => Some(MacroValue::Number(0)),
                Field::AffiliateId => Some(MacroValue::Number(u64::MAX)),
                Field::Timestamp => Some(MacroValue::Number(1_764_000_000)),
                Field::ClickId => Some(MacroValue::Text(Cow::Borrowed("x&y"))),
                _ => None,
            }
        }
    }

    #[test]
    fn numbers_are_written_in_decimal_in_urls_and_html() {
        let cases = [
            (
                "{cid}/{AFID}/{timestamp}",
                "0/18446744073709551615/1764000000",
            ),
            ("{click_id}|{utm_source}|{sid3}", "x%26y|a%20b|"),
        ];
        for (template, want) in cases {
            assert_eq!(expand_url(template, &Numbers), want, "{template}");
        }
        assert_eq!(
            expand_html("<b>{cid}:{click_id}</b>", &Numbers),
            "<b>0:x&amp;y</b>"
        );
    }

    /// The fast path's table and the encoder's set agree on every byte.
    #[test]
    fn unreserved_bytes_are_exactly_those_the_encoder_keeps() {
        for b in 0..=255u8 {
            let byte = [b];
            let encoded: String = percent_encoding::percent_encode(&byte, URL_VALUE).collect();
            let kept = encoded.as_bytes() == byte;
            assert_eq!(UNRESERVED[usize::from(b)], kept, "byte {b:#04x}");
        }
        assert_eq!(expand_url("{sid1}", &Numbers), "");
        assert_eq!(expand_url("x{click_id}", &Numbers), "xx%26y");
    }

    /// Values for the equivalence test: some fields as numbers, some as text needing
    /// encoding, some absent; extras by lower-case name.
    struct Mixed;

    impl Macros for Mixed {
        fn value(&self, name: &str) -> Option<Cow<'_, str>> {
            match name {
                "utm_source" => Some(Cow::Borrowed("a b&c")),
                "gclid" => Some(Cow::Borrowed("..")),
                "x" => Some(Cow::Borrowed("")),
                _ => None,
            }
        }
        fn field_value(&self, field: Field) -> Option<MacroValue<'_>> {
            match field {
                Field::CampaignId => Some(MacroValue::Number(7)),
                Field::ClickId => Some(MacroValue::Text(Cow::Borrowed("AbC-_9"))),
                Field::Sid(1) | Field::SidList => Some(MacroValue::Text(Cow::Borrowed("é/?"))),
                Field::Timestamp => Some(MacroValue::Number(u64::MAX)),
                _ => None,
            }
        }
    }

    /// The per-thread cut templates expand exactly as the direct scan does, for random
    /// templates of literal text, fields, aliases, flags, extras, unknown names and broken
    /// macro syntax, each expanded twice (cut, then cached). `SEED=<n>` replays a run.
    #[test]
    fn cut_templates_expand_as_the_direct_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(crate::test_seed::seed());
        const PIECES: &[&str] = &[
            "https://shop.example/",
            "?",
            "&",
            "=",
            "a",
            "/",
            "#",
            "{click_id}",
            "{CID}",
            "[=AFID=]",
            "{sid1}",
            "{SID}",
            "{sid3}",
            "{timestamp}",
            "{token}",
            "[=type=]",
            "{C}",
            "{utm_source}",
            "{UTM_Source}",
            "[=gclid=]",
            "{x}",
            "{unknown}",
            "{",
            "}",
            "[",
            "[=",
            "=]",
            "{a b}",
            "{}",
            "[==]",
            "{{cid}}",
            "[=[=sid1=]=]",
            "{cid",
            "é",
            "%7B",
        ];
        for _ in 0..3_000 {
            let template: String = (0..rng.random_range(0..20))
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            let want = expand(&template, &Mixed, write_url_value);
            for _ in 0..2 {
                let mut got = String::new();
                expand_url_into(&mut got, &template, &Mixed);
                assert_eq!(got, want, "{template:?}");
            }
        }
        let long = format!("https://a.example/{}?c={{click_id}}", "p".repeat(3000));
        let mut got = String::new();
        expand_url_into(&mut got, &long, &Mixed);
        assert_eq!(got, expand(&long, &Mixed, write_url_value));
    }

    #[test]
    fn numbers_become_text_for_value_callers() {
        assert_eq!(MacroValue::Number(42).into_text(), "42");
        assert_eq!(MacroValue::Text(Cow::Borrowed("x")).into_text(), "x");
        for n in [0, 7, 10, 99, 100, 4_294_967_295, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string());
        }
    }
}
