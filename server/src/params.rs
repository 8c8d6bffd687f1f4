//! Request parameters: the query string plus a form or JSON body, decoded strictly and
//! mapped to fields through the engine's one alias table ([`engine::fields::lookup`]).
//! Nothing here knows an alias; unknown names become extras.

use crate::limits::{MAX_EXTRAS, MAX_NAME_BYTES, MAX_PARAMS, MAX_SUB_IDS, MAX_VALUE_BYTES};
use engine::fields::{self, Field};
use engine::Source;

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

/// One known parameter: the name as sent and its decoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: String,
}

/// The parameters of one request: known fields (body over query) and extras.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    fields: Vec<(Field, Param)>,
    /// Unknown `name=value` pairs, names as sent; at most [`MAX_EXTRAS`].
    pub extras: Vec<(String, String)>,
}

impl Params {
    /// Reads the query string, then the body; a field in the body replaces the same field
    /// from the query, and a later pair replaces an earlier one.
    pub fn parse(query: Option<&str>, body: Option<Body<'_>>) -> Result<Params, ParamError> {
        let mut pairs = match query {
            Some(q) => decode_pairs(q.as_bytes())?,
            None => Vec::new(),
        };
        match body {
            Some(Body::Form(bytes)) => pairs.extend(decode_pairs(bytes)?),
            Some(Body::Json(bytes)) => pairs.extend(json_pairs(bytes)?),
            None => {}
        }
        if pairs.len() > MAX_PARAMS {
            return Err(ParamError::TooManyParams);
        }
        let mut params = Params::default();
        for (name, value) in pairs {
            if value.len() > MAX_VALUE_BYTES {
                return Err(ParamError::ValueTooLong(name));
            }
            match fields::lookup(&name) {
                Some(field) => {
                    params.fields.retain(|(f, _)| *f != field);
                    params.fields.push((field, Param { name, value }));
                }
                None => {
                    params
                        .extras
                        .retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                    params.extras.push((name, value));
                }
            }
        }
        if params.extras.len() > MAX_EXTRAS {
            return Err(ParamError::TooManyExtras);
        }
        Ok(params)
    }

    pub fn get(&self, field: Field) -> Option<&Param> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, p)| p)
    }

    /// The value of `field`, when present and not empty.
    pub fn str(&self, field: Field) -> Option<&str> {
        self.get(field)
            .map(|p| p.value.as_str())
            .filter(|v| !v.is_empty())
    }

    /// A LinkTrust flag (`C`, `R`, `T`): only the value `0` turns it off.
    pub fn flag_off(&self, field: Field) -> bool {
        self.str(field) == Some("0")
    }

    /// A numeric ID (`CID`, `AFID`, `ADID`): decimal digits, 1..=u32::MAX. Absent or empty
    /// is `None`.
    pub fn id(&self, field: Field) -> Result<Option<u32>, Invalid> {
        let Some(param) = self.get(field).filter(|p| !p.value.is_empty()) else {
            return Ok(None);
        };
        parse_id(&param.value).map(Some).ok_or_else(|| Invalid {
            name: param.name.clone(),
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
                name: param.name.clone(),
                reason: "expected a non-negative number",
            })
    }

    /// sid1..sid10 from `SID` (a comma-separated list) and `SID1`..`SID10` (which win),
    /// trailing empty sub IDs trimmed.
    pub fn sub_ids(&self) -> Result<Vec<String>, Invalid> {
        let mut sub_ids: Vec<String> = Vec::new();
        if let Some(param) = self.get(Field::SidList).filter(|p| !p.value.is_empty()) {
            let list: Vec<&str> = param.value.split(',').collect();
            if list.len() > MAX_SUB_IDS {
                return Err(Invalid {
                    name: param.name.clone(),
                    reason: "more than 10 sub IDs",
                });
            }
            sub_ids = list.into_iter().map(str::to_string).collect();
        }
        for (field, param) in &self.fields {
            if let Field::Sid(n) = *field {
                let index = usize::from(n).saturating_sub(1);
                if index >= MAX_SUB_IDS {
                    continue;
                }
                if sub_ids.len() <= index {
                    sub_ids.resize(index + 1, String::new());
                }
                sub_ids[index] = param.value.clone();
            }
        }
        while sub_ids.last().is_some_and(String::is_empty) {
            sub_ids.pop();
        }
        Ok(sub_ids)
    }

    /// The affiliate-side fields; an absent `CID` or `AFID` is 0.
    pub fn source(&self) -> Result<Source, Invalid> {
        Ok(Source {
            campaign_id: self.id(Field::CampaignId)?.unwrap_or(0),
            affiliate_id: self.id(Field::AffiliateId)?.unwrap_or(0),
            creative_id: self.id(Field::CreativeId)?,
            sub_ids: self.sub_ids()?,
            extras: self.extras.clone(),
        })
    }
}

/// Decimal digits only (no sign, no spaces), 1..=u32::MAX.
pub fn parse_id(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|id| *id > 0)
}

/// Decodes `application/x-www-form-urlencoded` pairs strictly: `+` is a space, `%XX` must
/// be two hex digits, the result must be UTF-8 without NUL. Empty pairs (`&&`) are skipped;
/// a name without `=` has an empty value.
pub fn decode_pairs(input: &[u8]) -> Result<Vec<(String, String)>, ParamError> {
    let mut pairs = Vec::new();
    for piece in input.split(|b| *b == b'&') {
        if piece.is_empty() {
            continue;
        }
        if pairs.len() >= MAX_PARAMS {
            return Err(ParamError::TooManyParams);
        }
        let (name, value) = match piece.iter().position(|b| *b == b'=') {
            Some(i) => (&piece[..i], &piece[i + 1..]),
            None => (piece, &piece[piece.len()..]),
        };
        let name = decode_component(name)?;
        if name.is_empty() {
            continue;
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(ParamError::NameTooLong);
        }
        let value = decode_component(value)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn decode_component(input: &[u8]) -> Result<String, ParamError> {
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

    fn parse(query: &str) -> Result<Params, ParamError> {
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

    /// Random bytes, biased towards the characters the decoder treats specially, never
    /// panic and never yield a value over the bounds. Seeded: `SEED=<n>` replays a run.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
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
