//! Request parameters: the query string plus a form or JSON body, decoded strictly and
//! mapped to fields through the engine's one alias table ([`engine::fields::lookup`]).
//! Nothing here knows an alias; unknown names become extras.

use crate::limits::{MAX_EXTRAS, MAX_NAME_BYTES, MAX_PARAMS, MAX_SUB_IDS, MAX_VALUE_BYTES};
use engine::fields::{self, Field, FIELD_COUNT};
use engine::Source;
use smallvec::SmallVec;
use std::borrow::Cow;

/// Why a request's parameters could not be read. Browser endpoints answer their harmless
/// default and count [`ParamError::reason`]; server posts and the admin API answer 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("malformed percent-encoding")]
    BadEncoding,
    #[error("a parameter is not valid UTF-8")]
    NotUtf8,
    #[error("a parameter contains a NUL byte")]
    Nul,
    #[error("parameter {0} is longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLong(String),
    #[error("a parameter name is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    #[error("more than {MAX_EXTRAS} extra parameters")]
    TooManyExtras,
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("the JSON body is not an object of fields: {0}")]
    Json(String),
    #[error("JSON field {0} must be a string, number or boolean")]
    JsonNotScalar(String),
    #[error("the body must be application/x-www-form-urlencoded or application/json")]
    ContentType,
}

impl ParamError {
    /// A short, fixed label for metrics (bounded cardinality, no request data).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadEncoding => "bad_encoding",
            Self::NotUtf8 => "not_utf8",
            Self::Nul => "nul_byte",
            Self::ValueTooLong(_) => "value_too_long",
            Self::NameTooLong => "name_too_long",
            Self::TooManyExtras => "too_many_extras",
            Self::TooManyParams => "too_many_params",
            Self::Json(_) | Self::JsonNotScalar(_) => "bad_json",
            Self::ContentType => "content_type",
        }
    }
}

/// A field whose value does not parse (a non-numeric `CID`, a negative `AP`, ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}: {reason}")]
pub struct Invalid {
    /// The parameter name as the client sent it, so the answer names what they wrote.
    pub name: String,
    pub reason: &'static str,
}

/// The body of a request, by its declared content type.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Form(&'a [u8]),
    Json(&'a [u8]),
}

/// One known parameter: the name as sent and its decoded value, borrowed from the request
/// unless decoding changed them (`%XX`, `+`), so a typical tracking link is parsed without
/// copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// A decoded `name=value` pair.
type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The parameters of one request: known fields (body over query) and extras.
///
/// Smaller than a table of 29 `Option<Param>` (1.4 KiB, walked slot by slot on every
/// drop), and without a heap allocation for a typical request.
#[derive(Clone, Debug, PartialEq)]
pub struct Params<'a> {
    /// One byte per field, at [`Field::index`]: where the field's parameter is in `known`,
    /// plus one; 0 when the request does not name it. A request names few fields, and a
    /// byte table needs neither a search nor a heap allocation of its own.
    slots: [u8; FIELD_COUNT],
    /// The known parameters in the order their fields first appeared; a later pair for the
    /// same field replaces its entry, so there are at most [`FIELD_COUNT`]. Inline up to
    /// [`INLINE_FIELDS`].
    known: SmallVec<[Param<'a>; INLINE_FIELDS]>,
    /// Unknown `name=value` pairs, names as sent; at most [`MAX_EXTRAS`].
    pub extras: Vec<Pair<'a>>,
}

/// The slots of `Sid(1)`..`Sid(10)` in `Params::slots`: consecutive, in order.
const SID_SLOTS: std::ops::Range<usize> = Field::Sid(1).index()..Field::Sid(10).index() + 1;
const _: () = assert!(Field::Sid(10).index() - Field::Sid(1).index() + 1 == MAX_SUB_IDS);

/// Known fields a request carries before `Params` allocates: a tracking link names a
/// campaign, an affiliate, a creative and a few sub IDs or flags.
const INLINE_FIELDS: usize = 8;

// A slot holds an index into `known` plus one in a byte.
const _: () = assert!(FIELD_COUNT < u8::MAX as usize);

impl Default for Params<'_> {
    fn default() -> Self {
        Params {
            slots: [0; FIELD_COUNT],
            known: SmallVec::new(),
            extras: Vec::new(),
        }
    }
}

impl<'a> Params<'a> {
    /// Reads the query string, then the body; a field in the body replaces the same field
    /// from the query, and a later pair replaces an earlier one.
    ///
    /// Errors, in this order: malformed encoding (query first, then body, each in order,
    /// and more than [`MAX_PARAMS`] pairs in one of them), more than [`MAX_PARAMS`] pairs
    /// together, the first value over [`MAX_VALUE_BYTES`], more than [`MAX_EXTRAS`] extras.
    pub fn parse(query: Option<&'a str>, body: Option<Body<'a>>) -> Result<Params<'a>, ParamError> {
        let mut params = Params::default();
        let mut count = 0;
        // Reported only once every pair has decoded and the count is known: a too-long
        // value is a lesser fault than broken encoding anywhere in the request.
        let mut too_long: Option<String> = None;
        FormPairs::of_text(query.unwrap_or(""))
            .visit(|pair| params.take(&mut count, &mut too_long, pair))?;
        match body {
            Some(Body::Form(bytes)) => {
                FormPairs::new(bytes).visit(|pair| params.take(&mut count, &mut too_long, pair))?
            }
            Some(Body::Json(bytes)) => {
                for (name, value) in json_pairs(bytes)? {
                    let pair = (Cow::Owned(name), Cow::Owned(value));
                    params.take(&mut count, &mut too_long, pair);
                }
            }
            None => {}
        }
        if count > MAX_PARAMS {
            return Err(ParamError::TooManyParams);
        }
        if let Some(name) = too_long {
            return Err(ParamError::ValueTooLong(name));
        }
        if params.extras.len() > MAX_EXTRAS {
            return Err(ParamError::TooManyExtras);
        }
        Ok(params)
    }

    /// Counts one pair for [`Params::parse`], notes the first value over
    /// [`MAX_VALUE_BYTES`], and keeps the pair ([`Params::add`]). Inlined into each of
    /// `parse`'s loops: it runs per pair, and a call costs more than its work on a short
    /// pair.
    #[inline(always)]
    fn take(&mut self, count: &mut usize, too_long: &mut Option<String>, pair: Pair<'a>) {
        let (name, value) = pair;
        *count += 1;
        if value.len() > MAX_VALUE_BYTES && too_long.is_none() {
            *too_long = Some(name.clone().into_owned());
        }
        self.add(name, value);
    }

    /// Keeps one pair: a field replaces the same field, an extra the same name (ignoring
    /// ASCII case). Bounded by the callers: at most [`MAX_PARAMS`] pairs per input.
    #[inline(always)]
    fn add(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) {
        match fields::lookup(&name) {
            Some(field) => {
                let param = Param { name, value };
                match usize::from(self.slots[field.index()]) {
                    0 => {
                        self.known.push(param);
                        // At most FIELD_COUNT entries (one per field): fits the byte.
                        self.slots[field.index()] = self.known.len() as u8;
                    }
                    slot => self.known[slot - 1] = param,
                }
            }
            None => {
                self.extras.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                self.extras.push((name, value));
            }
        }
    }

    pub fn get(&self, field: Field) -> Option<&Param<'a>> {
        let slot = usize::from(self.slots[field.index()]);
        slot.checked_sub(1).and_then(|i| self.known.get(i))
    }

    /// The value of `field`, when present and not empty.
    pub fn str(&self, field: Field) -> Option<&str> {
        self.get(field)
            .map(|p| p.value.as_ref())
            .filter(|v| !v.is_empty())
    }

    /// A LinkTrust flag (`C`, `R`, `T`): only the value `0` turns it off.
    pub fn flag_off(&self, field: Field) -> bool {
        self.str(field) == Some("0")
    }

    /// A numeric ID (`CID`, `AFID`, `ADID`): decimal digits, 1..=u32::MAX. Absent or empty
    /// is `None`. Inlined: a click reads three, and the call costs more than the work.
    #[inline(always)]
    pub fn id(&self, field: Field) -> Result<Option<u32>, Invalid> {
        let Some(param) = self.get(field).filter(|p| !p.value.is_empty()) else {
            return Ok(None);
        };
        parse_id(&param.value).map(Some).ok_or_else(|| Invalid {
            name: param.name.to_string(),
            reason: "expected a positive whole number",
        })
    }

    /// An amount (`AP`, `mp`, `TotalSales`): a finite, non-negative decimal number.
    pub fn amount(&self, field: Field) -> Result<Option<f64>, Invalid> {
        let Some(param) = self.get(field).filter(|p| !p.value.is_empty()) else {
            return Ok(None);
        };
        param
            .value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Some)
            .ok_or_else(|| Invalid {
                name: param.name.to_string(),
                reason: "expected a non-negative number",
            })
    }

    /// sid1..sid10 from `SID` (a comma-separated list) and `SID1`..`SID10` (which win),
    /// trailing empty sub IDs trimmed.
    pub fn sub_ids(&self) -> Result<Vec<String>, Invalid> {
        let list = self.get(Field::SidList).filter(|p| !p.value.is_empty());
        // The number of pieces split(',') yields, counted without splitting (a loop the
        // compiler vectorises: values are short, and memchr's setup costs more).
        let listed = list.map_or(0, |p| p.value.bytes().filter(|b| *b == b',').count() + 1);
        if let Some(param) = list.filter(|_| listed > MAX_SUB_IDS) {
            return Err(Invalid {
                name: param.name.to_string(),
                reason: "more than 10 sub IDs",
            });
        }
        // sid1..sid10's slots, in order; most links name none of them.
        let numbered = &self.slots[SID_SLOTS];
        let highest = numbered
            .iter()
            .rposition(|slot| *slot != 0)
            .map_or(0, |i| i + 1);
        // Sized once: the list, or the highest numbered sub ID if that is further.
        let mut sub_ids = Vec::with_capacity(listed.max(highest));
        match list {
            // One sub ID (the usual `SID=x`): no search for commas that are not there.
            Some(param) if listed == 1 => sub_ids.push(param.value.to_string()),
            Some(param) => sub_ids.extend(param.value.split(',').map(str::to_string)),
            None => {}
        }
        for (n, slot) in numbered[..highest].iter().enumerate() {
            if let Some(param) = usize::from(*slot).checked_sub(1).map(|i| &self.known[i]) {
                if sub_ids.len() <= n {
                    sub_ids.resize(n + 1, String::new());
                }
                sub_ids[n] = param.value.to_string();
            }
        }
        while sub_ids.last().is_some_and(String::is_empty) {
            sub_ids.pop();
        }
        Ok(sub_ids)
    }

    /// The affiliate-side fields; an absent `CID` or `AFID` is 0.
    pub fn source(&self) -> Result<Source, Invalid> {
        let campaign_id = self.id(Field::CampaignId)?.unwrap_or(0);
        let affiliate_id = self.id(Field::AffiliateId)?.unwrap_or(0);
        self.source_with(campaign_id, affiliate_id)
    }

    /// [`Params::source`] for a caller that has read the campaign and affiliate IDs
    /// already (a click checks them first), so they are not parsed twice.
    pub fn source_with(&self, campaign_id: u32, affiliate_id: u32) -> Result<Source, Invalid> {
        Ok(Source {
            campaign_id,
            affiliate_id,
            creative_id: self.id(Field::CreativeId)?,
            sub_ids: self.sub_ids()?,
            extras: self
                .extras
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        })
    }
}

/// Decimal digits only (no sign, no spaces), 1..=u32::MAX.
pub fn parse_id(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    // Ten decimal digits fit a u64, so there is no overflow to check digit by digit.
    let mut value: u64 = 0;
    for b in text.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(b - b'0');
    }
    u32::try_from(value).ok().filter(|id| *id > 0)
}

/// Decodes `application/x-www-form-urlencoded` pairs strictly: `+` is a space, `%XX` must
/// be two hex digits, the result must be UTF-8 without NUL. Empty pairs (`&&`) are skipped;
/// a name without `=` has an empty value.
pub fn decode_pairs(input: &[u8]) -> Result<Vec<(String, String)>, ParamError> {
    FormPairs::new(input)
        .map(|pair| pair.map(|(name, value)| (name.into_owned(), value.into_owned())))
        .collect()
}

/// The pairs of one form-encoded input as [`decode_pairs`] reads them, one at a time and
/// borrowed where decoding changes nothing. Stops after the first error.
struct FormPairs<'a> {
    input: &'a [u8],
    /// The input as text when it is UTF-8 (a query string always is): a piece cut at the
    /// ASCII `&` and `=` is then UTF-8 too, and is borrowed without checking it again.
    text: Option<&'a str>,
    /// Where the next piece starts; past the end once the input is used up.
    next: usize,
    count: usize,
}

impl<'a> FormPairs<'a> {
    fn new(input: &'a [u8]) -> Self {
        FormPairs {
            input,
            text: std::str::from_utf8(input).ok(),
            next: 0,
            count: 0,
        }
    }

    fn of_text(input: &'a str) -> Self {
        FormPairs {
            input: input.as_bytes(),
            text: Some(input),
            next: 0,
            count: 0,
        }
    }

    /// Hands every pair to `f`, in order; stops at the first error. What the iterator
    /// does, without wrapping each pair in an `Option<Result<..>>` on the request path.
    fn visit(mut self, mut f: impl FnMut(Pair<'a>)) -> Result<(), ParamError> {
        while let Some(pair) = self.next_pair()? {
            f(pair);
        }
        Ok(())
    }

    /// The next pair, skipping empty pieces and pieces without a name; `None` at the end.
    /// The one scan loop of [`FormPairs::visit`] and the iterator.
    #[inline(always)]
    fn next_pair(&mut self) -> Result<Option<Pair<'a>>, ParamError> {
        while self.next <= self.input.len() {
            let piece = self.piece_at(self.next);
            self.next = piece.end + 1;
            if piece.start == piece.end {
                continue;
            }
            if let Some(pair) = self.pair(piece)? {
                return Ok(Some(pair));
            }
        }
        Ok(None)
    }

    /// The pair in one piece; `None` for a piece without a name. Inlined into `visit`
    /// and `next` (with `component` and `piece_at`): called per parameter, and the calls
    /// and their `Result` temporaries cost more than the work on a short pair.
    #[inline(always)]
    fn pair(&mut self, piece: Piece) -> Result<Option<Pair<'a>>, ParamError> {
        if self.count >= MAX_PARAMS {
            return Err(ParamError::TooManyParams);
        }
        let Piece {
            start,
            end,
            equals,
            escaped_name,
            escaped_value,
        } = piece;
        let (name_end, value_start) = match equals {
            Some(i) => (i, i + 1),
            None => (end, end),
        };
        let name = self.component(start, name_end, escaped_name)?;
        if name.is_empty() {
            return Ok(None);
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(ParamError::NameTooLong);
        }
        let value = self.component(value_start, end, escaped_value)?;
        self.count += 1;
        Ok(Some((name, value)))
    }

    /// Decodes `input[start..end]` strictly: `+` is a space, `%XX` must be two hex digits,
    /// the result must be UTF-8 without NUL. `escaped` says whether it holds `%`, `+` or
    /// NUL; without them the component is the input itself, borrowed.
    #[inline(always)]
    fn component(
        &self,
        start: usize,
        end: usize,
        escaped: bool,
    ) -> Result<Cow<'a, str>, ParamError> {
        let bytes = &self.input[start..end];
        if escaped {
            return decode(bytes).map(Cow::Owned);
        }
        match self.text {
            Some(text) => text.get(start..end).map(Cow::Borrowed),
            None => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
        }
        .ok_or(ParamError::NotUtf8)
    }

    /// The piece starting at `start`, up to the next `&` or the end, found in one pass
    /// over its bytes (one table load per byte) along with its first `=` and whether its
    /// name and value need decoding.
    #[inline(always)]
    fn piece_at(&self, start: usize) -> Piece {
        let input = self.input;
        let mut piece = Piece {
            start,
            end: input.len(),
            equals: None,
            escaped_name: false,
            escaped_value: false,
        };
        let mut escaped = false;
        for (i, &b) in input.iter().enumerate().skip(start) {
            match BYTE_CLASS[usize::from(b)] {
                Class::Plain => {}
                Class::Escape => escaped = true,
                Class::Equals if piece.equals.is_none() => {
                    piece.equals = Some(i);
                    piece.escaped_name = escaped;
                    escaped = false;
                }
                Class::Equals => {}
                Class::Ampersand => {
                    piece.end = i;
                    break;
                }
            }
        }
        if piece.equals.is_some() {
            piece.escaped_value = escaped;
        } else {
            piece.escaped_name = escaped;
        }
        piece
    }
}

/// One `&`-separated piece of a form-encoded input, as [`FormPairs::piece_at`] found it.
#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    /// Where the first `=` is, if any.
    equals: Option<usize>,
    escaped_name: bool,
    escaped_value: bool,
}

/// What a byte means to the pair scanner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Plain,
    /// `%`, `+` or NUL: the component must go through [`decode`].
    Escape,
    Equals,
    Ampersand,
}

/// [`Class`] of every byte, one load per byte of the input.
const BYTE_CLASS: [Class; 256] = {
    let mut table = [Class::Plain; 256];
    table[b'%' as usize] = Class::Escape;
    table[b'+' as usize] = Class::Escape;
    table[0] = Class::Escape;
    table[b'=' as usize] = Class::Equals;
    table[b'&' as usize] = Class::Ampersand;
    table
};

impl<'a> Iterator for FormPairs<'a> {
    type Item = Result<Pair<'a>, ParamError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.next_pair();
        if next.is_err() {
            // Nothing after an error.
            self.next = usize::MAX;
        }
        next.transpose()
    }
}

/// The decoding of a component that has something to decode.
fn decode(input: &[u8]) -> Result<String, ParamError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = input.get(i + 1).and_then(|b| hex_value(*b));
                let lo = input.get(i + 2).and_then(|b| hex_value(*b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(ParamError::BadEncoding);
                };
                out.push(hi << 4 | lo);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    if out.contains(&0) {
        return Err(ParamError::Nul);
    }
    String::from_utf8(out).map_err(|_| ParamError::NotUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A JSON body must be one object whose values are strings, numbers, booleans or null
/// (null is skipped); numbers and booleans keep their JSON text.
fn json_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, ParamError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| ParamError::Json(e.to_string()))?;
    if object.len() > MAX_PARAMS {
        return Err(ParamError::TooManyParams);
    }
    let mut pairs = Vec::with_capacity(object.len());
    for (name, value) in object {
        if name.len() > MAX_NAME_BYTES {
            return Err(ParamError::NameTooLong);
        }
        let value = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(ParamError::JsonNotScalar(name)),
        };
        if name.contains('\0') || value.contains('\0') {
            return Err(ParamError::Nul);
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<Params<'_>, ParamError> {
        Params::parse(Some(query), None)
    }

    #[test]
    fn decoding_is_strict() {
        type Pairs = Vec<(&'static str, &'static str)>;
        let cases: &[(&str, Result<Pairs, ParamError>)] = &[
            (
                "a=1&b=x+y&c=%41%2b",
                Ok(vec![("a", "1"), ("b", "x y"), ("c", "A+")]),
            ),
            ("&&a&=x&b=", Ok(vec![("a", ""), ("b", "")])),
            ("a=%4", Err(ParamError::BadEncoding)),
            ("a=%zz", Err(ParamError::BadEncoding)),
            ("a=%", Err(ParamError::BadEncoding)),
            ("a=%00", Err(ParamError::Nul)),
            ("a=%ff%fe", Err(ParamError::NotUtf8)),
            ("a=%C3%A9", Ok(vec![("a", "é")])),
        ];
        for (input, want) in cases {
            let got = decode_pairs(input.as_bytes());
            let want = want.clone().map(|v| {
                v.into_iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn names_go_through_the_alias_table_case_insensitively() {
        let p = parse("offer_id=3&AFF_ID=7&aff_sub2=b&Sid=a&AdId=9&utm_source=x").unwrap();
        let source = p.source().unwrap();
        assert_eq!(source.campaign_id, 3);
        assert_eq!(source.affiliate_id, 7);
        assert_eq!(source.creative_id, Some(9));
        assert_eq!(source.sub_ids, vec!["a", "b"]);
        assert_eq!(source.extras, vec![("utm_source".into(), "x".into())]);
    }

    #[test]
    fn sid_list_fills_in_order_and_numbered_sids_win() {
        let p = parse("SID=a,b,c&SID2=B&SID5=e").unwrap();
        assert_eq!(p.sub_ids().unwrap(), vec!["a", "B", "c", "", "e"]);
        let p = parse("SID=1,2,3,4,5,6,7,8,9,10,11").unwrap();
        assert_eq!(p.sub_ids().unwrap_err().name, "SID");
    }

    #[test]
    fn body_wins_over_query() {
        let p = Params::parse(Some("CID=1&AP=1&x=q"), Some(Body::Form(b"cid=2&X=b"))).unwrap();
        assert_eq!(p.id(Field::CampaignId).unwrap(), Some(2));
        assert_eq!(p.str(Field::Payout), Some("1"));
        assert_eq!(p.extras, vec![("X".into(), "b".into())]);
        let p = Params::parse(
            Some("CID=1"),
            Some(Body::Json(br#"{"CID": 5, "AP": 2.5, "x": null}"#)),
        )
        .unwrap();
        assert_eq!(p.id(Field::CampaignId).unwrap(), Some(5));
        assert_eq!(p.amount(Field::Payout).unwrap(), Some(2.5));
        assert!(p.extras.is_empty());
    }

    #[test]
    fn bounds_are_enforced() {
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            parse(&format!("SID1={long}")),
            Err(ParamError::ValueTooLong("SID1".into()))
        );
        assert!(parse(&format!("SID1={}", "x".repeat(MAX_VALUE_BYTES))).is_ok());
        let extras: Vec<String> = (0..=MAX_EXTRAS).map(|i| format!("e{i}=1")).collect();
        assert_eq!(parse(&extras.join("&")), Err(ParamError::TooManyExtras));
        assert!(parse(&extras[..MAX_EXTRAS].join("&")).is_ok());
        let many: Vec<String> = (0..=MAX_PARAMS).map(|_| "CID=1".to_string()).collect();
        assert_eq!(parse(&many.join("&")), Err(ParamError::TooManyParams));
        assert_eq!(
            parse(&format!("{}=1", "n".repeat(MAX_NAME_BYTES + 1))),
            Err(ParamError::NameTooLong)
        );
        for body in [&b"[1]"[..], b"{\"a\": {}}", b"{\"a\":\"\\u0000\"}", b"nope"] {
            assert!(Params::parse(None, Some(Body::Json(body))).is_err());
        }
    }

    #[test]
    fn typed_values_name_the_field_as_sent() {
        let cases = [
            ("cid=abc", Field::CampaignId),
            ("CID=-1", Field::CampaignId),
            ("CID=0", Field::CampaignId),
            ("CID=99999999999", Field::CampaignId),
            ("afid=1.5", Field::AffiliateId),
        ];
        for (query, field) in cases {
            let err = parse(query).unwrap().id(field).unwrap_err();
            assert_eq!(err.name, query.split('=').next().unwrap(), "{query}");
        }
        for bad in ["AP=-1", "AP=NaN", "AP=inf", "AP=1e999", "AP=x"] {
            assert!(parse(bad).unwrap().amount(Field::Payout).is_err(), "{bad}");
        }
        assert_eq!(parse("AP=").unwrap().amount(Field::Payout), Ok(None));
        assert!(parse("C=0").unwrap().flag_off(Field::CookieFlag));
        assert!(!parse("C=1").unwrap().flag_off(Field::CookieFlag));
    }

    #[test]
    fn plain_values_are_borrowed_and_escaped_ones_decoded() {
        let p = parse("CID=1&SID=a%20b&x+y=z").unwrap();
        let cid = p.get(Field::CampaignId).unwrap();
        assert!(matches!(
            (&cid.name, &cid.value),
            (Cow::Borrowed("CID"), Cow::Borrowed("1"))
        ));
        let sid = p.get(Field::SidList).unwrap();
        assert!(matches!(&sid.value, Cow::Owned(v) if v == "a b"));
        assert_eq!(p.extras, vec![(Cow::from("x y"), Cow::from("z"))]);
        // Raw bytes in a body: not UTF-8, or NUL, fail where they stand, in order.
        let cases: &[(&[u8], ParamError)] = &[
            (b"a=\xff", ParamError::NotUtf8),
            (b"\xff=1", ParamError::NotUtf8),
            (b"a=%zz&b=\xff", ParamError::BadEncoding),
            (b"a=\xff&b=%zz", ParamError::NotUtf8),
            (b"a=\0", ParamError::Nul),
            (b"a=\0&b=\xff", ParamError::Nul),
        ];
        for (body, want) in cases {
            assert_eq!(decode_pairs(body).as_ref(), Err(want), "{body:?}");
        }
        let body = Params::parse(None, Some(Body::Form(b"CID=7&x=%C3%A9\xc3\xa9"))).unwrap();
        assert_eq!(body.str(Field::CampaignId), Some("7"));
        assert_eq!(body.extras, vec![(Cow::from("x"), Cow::from("éé"))]);
    }

    /// What `Params::parse` did before it borrowed: collect every owned pair, check the
    /// count, then keep them in order. The borrowed parser must answer exactly the same.
    fn reference(query: &str, form: Option<&[u8]>) -> Result<Vec<(String, String)>, ParamError> {
        let mut pairs = decode_pairs(query.as_bytes())?;
        if let Some(form) = form {
            pairs.extend(decode_pairs(form)?);
        }
        if pairs.len() > MAX_PARAMS {
            return Err(ParamError::TooManyParams);
        }
        let mut kept: Vec<(Option<Field>, String, String)> = Vec::new();
        for (name, value) in pairs {
            if value.len() > MAX_VALUE_BYTES {
                return Err(ParamError::ValueTooLong(name));
            }
            let field = fields::lookup(&name);
            kept.retain(|(f, n, _)| match field {
                Some(_) => *f != field,
                None => f.is_some() || !n.eq_ignore_ascii_case(&name),
            });
            kept.push((field, name, value));
        }
        if kept.iter().filter(|(f, _, _)| f.is_none()).count() > MAX_EXTRAS {
            return Err(ParamError::TooManyExtras);
        }
        // Fields in index order, then extras in order: how `flatten` below lists them.
        kept.sort_by_key(|(f, _, _)| f.map_or(FIELD_COUNT, Field::index));
        Ok(kept.into_iter().map(|(_, n, v)| (n, v)).collect())
    }

    /// The sub IDs as the owned parser computed them, from [`reference`]'s pairs.
    fn reference_sub_ids(pairs: &[(String, String)]) -> Result<Vec<String>, Invalid> {
        let mut sub_ids: Vec<String> = Vec::new();
        let list = pairs
            .iter()
            .find(|(n, v)| fields::lookup(n) == Some(Field::SidList) && !v.is_empty());
        if let Some((name, value)) = list {
            let list: Vec<&str> = value.split(',').collect();
            if list.len() > MAX_SUB_IDS {
                return Err(Invalid {
                    name: name.clone(),
                    reason: "more than 10 sub IDs",
                });
            }
            sub_ids = list.into_iter().map(str::to_string).collect();
        }
        for (name, value) in pairs {
            if let Some(Field::Sid(n)) = fields::lookup(name) {
                let index = usize::from(n) - 1;
                if sub_ids.len() <= index {
                    sub_ids.resize(index + 1, String::new());
                }
                sub_ids[index] = value.clone();
            }
        }
        while sub_ids.last().is_some_and(String::is_empty) {
            sub_ids.pop();
        }
        Ok(sub_ids)
    }

    fn flatten(p: &Params) -> Vec<(String, String)> {
        let fields = p
            .slots
            .iter()
            .filter_map(|slot| usize::from(*slot).checked_sub(1))
            .map(|i| (&p.known[i].name, &p.known[i].value));
        let extras = p.extras.iter().map(|(n, v)| (n, v));
        fields
            .chain(extras)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Seeded model test against [`reference`]: names from the alias table and extras,
    /// encodings good and bad, values near the length bound, pair counts near the bounds.
    /// `SEED=<n>` replays a run.
    #[test]
    fn parse_answers_as_the_owned_reference_did() {
        use rand::Rng;
        let mut rng = crate::seed::seeded_rng();
        const NAMES: &[&str] = &[
            "CID",
            "cid",
            "AFID",
            "aff_id",
            "SID",
            "sid2",
            "SUB2",
            "aff_sub",
            "ADID",
            "R",
            "x",
            "X",
            "utm_source",
            "e1",
            "e2",
            "e3",
            "e4",
            "e5",
            "e6",
            "e7",
            "e8",
            "e9",
            "e10",
            "%41",
            "a+b",
            "",
        ];
        const VALUES: &[&str] = &[
            "1",
            "0",
            "",
            "a,b,c",
            "%20",
            "+",
            "é",
            "1,2,3,4,5,6,7,8,9,10,11",
        ];
        // Each breaks decoding; rare, so most inputs get as far as the later checks.
        const BROKEN: &[&str] = &["%zz", "%00", "%ff", "%4"];
        let random_input = |rng: &mut rand::rngs::StdRng| {
            let pairs = rng.random_range(0..70);
            let mut text = String::new();
            for i in 0..pairs {
                if i > 0 || rng.random_bool(0.1) {
                    text.push('&');
                }
                text.push_str(NAMES[rng.random_range(0..NAMES.len())]);
                if rng.random_bool(0.9) {
                    text.push('=');
                    if rng.random_bool(0.02) {
                        let len = MAX_VALUE_BYTES - 1 + rng.random_range(0..3);
                        text.push_str(&"v".repeat(len));
                    } else if rng.random_bool(0.005) {
                        text.push_str(BROKEN[rng.random_range(0..BROKEN.len())]);
                    } else {
                        text.push_str(VALUES[rng.random_range(0..VALUES.len())]);
                    }
                }
            }
            text
        };
        for _ in 0..3000 {
            let query = random_input(&mut rng);
            let form = rng.random_bool(0.5).then(|| random_input(&mut rng));
            let got = Params::parse(
                Some(&query),
                form.as_deref().map(|f| Body::Form(f.as_bytes())),
            );
            let want = reference(&query, form.as_deref().map(str::as_bytes));
            if let (Ok(got), Ok(want)) = (&got, &want) {
                assert_eq!(
                    got.sub_ids(),
                    reference_sub_ids(want),
                    "query {query:?} form {form:?}"
                );
            }
            assert_eq!(
                got.map(|p| flatten(&p)),
                want,
                "query {query:?} form {form:?}"
            );
        }
    }

    /// `parse_id` answers as the std parser it replaced: digits only, 1..=u32::MAX, at
    /// most ten characters. Seeded: `SEED=<n>` replays a run.
    #[test]
    fn parse_id_answers_as_std_parse() {
        use rand::Rng;
        let reference = |text: &str| {
            if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            text.parse::<u32>().ok().filter(|id| *id > 0)
        };
        let mut rng = crate::seed::seeded_rng();
        const EDGES: &[&str] = &[
            "",
            "0",
            "1",
            "01",
            "4294967295",
            "4294967296",
            "9999999999",
            "00000000001",
            "+1",
            "-1",
            " 1",
            "1 ",
            "١",
        ];
        for text in EDGES {
            assert_eq!(parse_id(text), reference(text), "{text:?}");
        }
        for _ in 0..20_000 {
            let len = rng.random_range(0..13);
            let text: String = (0..len)
                .map(|_| match rng.random_range(0..12) {
                    0 => char::from(rng.random_range(0x20u8..0x7f)),
                    _ => char::from(b'0' + rng.random_range(0..10)),
                })
                .collect();
            assert_eq!(parse_id(&text), reference(&text), "{text:?}");
        }
    }

    /// Random bytes, biased towards the characters the decoder treats specially, never
    /// panic and never yield a value over the bounds. Seeded: `SEED=<n>` replays a run.
    #[test]
    fn random_input_never_panics() {
        use rand::Rng;
        let mut rng = crate::seed::seeded_rng();
        const ALPHABET: &[u8] = b"%&=+,0123456789abcdefABCDEF\0\xff\xc3{}[]\":ctidCID_ ";
        for _ in 0..2000 {
            let len = rng.random_range(0..400);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.random_bool(0.8) {
                        ALPHABET[rng.random_range(0..ALPHABET.len())]
                    } else {
                        rng.random()
                    }
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let results = [
                Params::parse(Some(&text), None),
                Params::parse(None, Some(Body::Form(&bytes))),
                Params::parse(None, Some(Body::Json(&bytes))),
            ];
            for params in results.into_iter().flatten() {
                assert!(params.extras.len() <= MAX_EXTRAS);
                assert!(params
                    .extras
                    .iter()
                    .all(|(_, v)| v.len() <= MAX_VALUE_BYTES));
                let _ = params.source();
                let _ = params.amount(Field::Payout);
            }
        }
    }
}
