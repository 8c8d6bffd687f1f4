//! Compact text of stored conversions: a shard keeps every conversion in memory, and most
//! of a conversion's text is short (currency code, event, merchant reference) or one of a
//! few fixed audit phrases. As `String`s they cost a heap block each (about 250 bytes and
//! five allocations per conversion). Both types here serialize exactly as a `String` does
//! (serde's `str`), so the bytes in the log and in snapshots do not change.

use super::MatchedBy;
use crate::ids::Id;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Bytes a [`ShortText`] holds without a heap block: a currency code, an event name and
/// most merchant references fit, and the type stays the size of a `String` (24 bytes).
const SHORT_TEXT_INLINE_BYTES: usize = 22;

/// A string stored inline when short (the common case), boxed otherwise.
#[derive(Clone)]
pub struct ShortText(ShortRepr);

#[derive(Clone)]
enum ShortRepr {
    /// `bytes[..len]` is the text (valid UTF-8: copied whole from a `str`).
    Inline {
        len: u8,
        bytes: [u8; SHORT_TEXT_INLINE_BYTES],
    },
    Boxed(Box<str>),
}

const _: () = assert!(std::mem::size_of::<ShortText>() == std::mem::size_of::<String>());
const _: () =
    assert!(std::mem::size_of::<Option<ShortText>>() == std::mem::size_of::<Option<String>>());

impl ShortText {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // The bytes were copied from a `str`, so this never falls back to "".
            ShortRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            ShortRepr::Boxed(s) => s,
        }
    }

    /// Inline when it fits, `None` otherwise.
    fn inline(s: &str) -> Option<ShortText> {
        let len = u8::try_from(s.len())
            .ok()
            .filter(|&n| usize::from(n) <= SHORT_TEXT_INLINE_BYTES)?;
        let mut bytes = [0u8; SHORT_TEXT_INLINE_BYTES];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(ShortText(ShortRepr::Inline { len, bytes }))
    }
}

impl From<&str> for ShortText {
    fn from(s: &str) -> Self {
        Self::inline(s).unwrap_or_else(|| ShortText(ShortRepr::Boxed(s.into())))
    }
}

impl From<String> for ShortText {
    fn from(s: String) -> Self {
        Self::inline(&s).unwrap_or_else(|| ShortText(ShortRepr::Boxed(s.into_boxed_str())))
    }
}

impl std::ops::Deref for ShortText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ShortText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for ShortText {}

impl PartialEq<str> for ShortText {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ShortText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ShortText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_text(deserializer)
    }
}

/// The fixed phrases of conversion audits. Lines read back from the log or a snapshot with
/// one of these texts are stored as [`AuditLine::Fixed`], as they were when recorded.
pub mod phrase {
    pub const REVENUE_FROM_CAMPAIGN: &str = "revenue fixed by the campaign";
    pub const REVENUE_FROM_OVERRIDE: &str = "revenue from the mp override";
    pub const PAYOUT_FROM_CAMPAIGN: &str = "payout fixed by the campaign";
    pub const PAYOUT_FROM_OVERRIDE: &str = "payout from the AP override";
    pub const CURRENCY_FROM_OVERRIDE: &str = "currency from the Currency override";
    pub const MP_IGNORED: &str = "mp ignored: the campaign does not allow custom parameters";
    pub const AP_IGNORED: &str = "AP ignored: the campaign does not allow custom parameters";
    pub const CURRENCY_IGNORED: &str =
        "Currency ignored: the campaign does not allow custom parameters";
    pub const UNATTRIBUTED: &str = "unattributed: no payout, nothing fired";

    /// Every phrase above, for decoding.
    pub(crate) const ALL: [&str; 9] = [
        REVENUE_FROM_CAMPAIGN,
        REVENUE_FROM_OVERRIDE,
        PAYOUT_FROM_CAMPAIGN,
        PAYOUT_FROM_OVERRIDE,
        CURRENCY_FROM_OVERRIDE,
        MP_IGNORED,
        AP_IGNORED,
        CURRENCY_IGNORED,
        UNATTRIBUTED,
    ];
}

/// Every way a conversion can be matched, to read a [`AuditLine::Matched`] back.
const MATCHED_BY_ALL: [MatchedBy; 5] = [
    MatchedBy::ClickId,
    MatchedBy::Cookie,
    MatchedBy::IpBackup,
    MatchedBy::Afid,
    MatchedBy::Unattributed,
];

const MATCHED_PREFIX: &str = "matched by ";
const MATCHED_INFIX: &str = " to click ";
/// Longest text of an [`AuditLine::Matched`]: the phrase around the longest rule name
/// (`unattributed`) and a click ID's 22 characters.
const MATCHED_MAX_BYTES: usize = 64;
const _: () = assert!(
    MATCHED_PREFIX.len() + "unattributed".len() + MATCHED_INFIX.len() + crate::ids::ID_CHARS
        <= MATCHED_MAX_BYTES
);

/// One line of a conversion's audit trail, shown and serialized as its text.
#[derive(Clone)]
pub enum AuditLine {
    /// One of the [`phrase`]s: no heap block.
    Fixed(&'static str),
    /// "matched by {rule} to click {id}", the first line of every matched conversion:
    /// rebuilt from the rule and the click ID when shown or written.
    Matched { by: MatchedBy, click: [u8; 16] },
    /// Anything else (notes of earlier rules, percent payouts, duplicates, status changes).
    Text(Box<str>),
}

const _: () = assert!(std::mem::size_of::<AuditLine>() == std::mem::size_of::<String>());

impl AuditLine {
    /// Calls `f` with the line's text (built on the stack for [`AuditLine::Matched`]).
    pub fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Self::Fixed(s) => f(s),
            Self::Text(s) => f(s),
            Self::Matched { by, click } => {
                let mut buf = [0u8; MATCHED_MAX_BYTES];
                let mut len = 0;
                for part in [
                    MATCHED_PREFIX.as_bytes(),
                    by.as_str().as_bytes(),
                    MATCHED_INFIX.as_bytes(),
                    &Id(*click).encode(),
                ] {
                    buf[len..len + part.len()].copy_from_slice(part);
                    len += part.len();
                }
                // ASCII throughout, so never the fallback.
                f(std::str::from_utf8(&buf[..len]).unwrap_or_default())
            }
        }
    }

    /// The line for a text read back or built at run time: a fixed phrase or a match line
    /// when it is one (stored compactly), else the text itself.
    fn parse(s: &str) -> Option<AuditLine> {
        if let Some(&fixed) = phrase::ALL.iter().find(|&&p| p == s) {
            return Some(Self::Fixed(fixed));
        }
        let (rule, click) = s.strip_prefix(MATCHED_PREFIX)?.split_once(MATCHED_INFIX)?;
        let by = MATCHED_BY_ALL.into_iter().find(|b| b.as_str() == rule)?;
        // `Id::parse` accepts only the canonical text, so the line rebuilds byte for byte.
        let click = Id::parse(click)?;
        Some(Self::Matched { by, click: click.0 })
    }
}

impl From<&str> for AuditLine {
    fn from(s: &str) -> Self {
        Self::parse(s).unwrap_or_else(|| Self::Text(s.into()))
    }
}

impl From<String> for AuditLine {
    fn from(s: String) -> Self {
        Self::parse(&s).unwrap_or_else(|| Self::Text(s.into_boxed_str()))
    }
}

impl PartialEq for AuditLine {
    fn eq(&self, other: &Self) -> bool {
        self.with_text(|a| other.with_text(|b| a == b))
    }
}
impl Eq for AuditLine {}

impl fmt::Debug for AuditLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|s| fmt::Debug::fmt(s, f))
    }
}

impl fmt::Display for AuditLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|s| f.write_str(s))
    }
}

impl Serialize for AuditLine {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_text(|s| serializer.serialize_str(s))
    }
}

impl<'de> Deserialize<'de> for AuditLine {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_text(deserializer)
    }
}

/// Deserializes serde's `str` (borrowed or owned) into a text type made from either.
fn deserialize_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: for<'a> From<&'a str> + From<String>,
{
    struct Visitor<T>(std::marker::PhantomData<T>);
    impl<T: for<'a> From<&'a str> + From<String>> de::Visitor<'_> for Visitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            Ok(T::from(s))
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<T, E> {
            Ok(T::from(s))
        }
    }
    deserializer.deserialize_str(Visitor(std::marker::PhantomData))
}
