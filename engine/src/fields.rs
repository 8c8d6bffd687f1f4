//! The one alias table: every accepted wire name (query, form, JSON, macro) and the field
//! it names. Matching is ASCII case-insensitive. Nothing else in the code knows the
//! aliases; the HTTP parameter parser and the template macros both ask [`lookup`].

/// A field of a click, impression or conversion request, or a request flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    CampaignId,
    AffiliateId,
    /// `SID`: one value, or a comma-separated list filling sid1, sid2, ... in order.
    SidList,
    /// `SID1`..`SID10` and their aliases; the number is 1-based.
    Sid(u8),
    CreativeId,
    ClickId,
    MerchantRef,
    Payout,
    Revenue,
    TotalSales,
    Currency,
    Event,
    Status,
    /// `type`: img, iframe, js or s2s.
    PixelType,
    /// `token`: the campaign's postback token on server posts.
    Token,
    /// `C=0`: set no cookie.
    CookieFlag,
    /// `R=0`: answer the click ID instead of redirecting.
    RedirectFlag,
    /// `T=0`: redirect only, record nothing.
    TrackFlag,
    // Macro-only names (templates): values that exist only once a conversion exists.
    ConversionId,
    Timestamp,
}

/// Every accepted name, lower case, and its field. Order does not matter (kept sorted for
/// the reader); names are unique.
const ALIASES: &[(&str, Field)] = &[
    ("adid", Field::CreativeId),
    ("adv_sub", Field::MerchantRef),
    ("aff_id", Field::AffiliateId),
    ("aff_sub", Field::Sid(1)),
    ("aff_sub2", Field::Sid(2)),
    ("aff_sub3", Field::Sid(3)),
    ("aff_sub4", Field::Sid(4)),
    ("aff_sub5", Field::Sid(5)),
    ("affiliate_id", Field::AffiliateId),
    ("afid", Field::AffiliateId),
    ("amount", Field::Revenue),
    ("ap", Field::Payout),
    ("c", Field::CookieFlag),
    ("campaign_id", Field::CampaignId),
    ("cid", Field::CampaignId),
    ("click_id", Field::ClickId),
    ("clickid", Field::ClickId),
    ("conversion_id", Field::ConversionId),
    ("creative_id", Field::CreativeId),
    ("currency", Field::Currency),
    ("event", Field::Event),
    ("merchant_ref", Field::MerchantRef),
    ("merchantreferenceid", Field::MerchantRef),
    ("mp", Field::Revenue),
    ("offer_id", Field::CampaignId),
    ("order_id", Field::MerchantRef),
    ("payout", Field::Payout),
    ("r", Field::RedirectFlag),
    ("revenue", Field::Revenue),
    ("sale_amount", Field::TotalSales),
    ("sid", Field::SidList),
    ("sid1", Field::Sid(1)),
    ("sid10", Field::Sid(10)),
    ("sid2", Field::Sid(2)),
    ("sid3", Field::Sid(3)),
    ("sid4", Field::Sid(4)),
    ("sid5", Field::Sid(5)),
    ("sid6", Field::Sid(6)),
    ("sid7", Field::Sid(7)),
    ("sid8", Field::Sid(8)),
    ("sid9", Field::Sid(9)),
    ("status", Field::Status),
    ("sub1", Field::Sid(1)),
    ("sub10", Field::Sid(10)),
    ("sub2", Field::Sid(2)),
    ("sub3", Field::Sid(3)),
    ("sub4", Field::Sid(4)),
    ("sub5", Field::Sid(5)),
    ("sub6", Field::Sid(6)),
    ("sub7", Field::Sid(7)),
    ("sub8", Field::Sid(8)),
    ("sub9", Field::Sid(9)),
    ("t", Field::TrackFlag),
    ("timestamp", Field::Timestamp),
    ("token", Field::Token),
    ("totalsales", Field::TotalSales),
    ("transaction_id", Field::ClickId),
    ("type", Field::PixelType),
];

/// The field a wire name or macro name stands for, ignoring ASCII case; `None` for an
/// unknown name (an "extra" on requests, a literal in templates).
pub fn lookup(name: &str) -> Option<Field> {
    let key = runtime_key(name.as_bytes())?;
    let index = usize::from(ALIAS_SLOTS[slot(&key, MULTIPLIER)].checked_sub(1)?);
    // Zero padding gives `cid` and `cid\0` one key; only the length tells them apart.
    let (alias, field) = ALIASES[index];
    (ALIAS_KEYS[index] == key && alias.len() == name.len()).then_some(field)
}

/// Longest name a [`Key`] holds, in bytes; every alias is shorter (the longest,
/// `merchantreferenceid`, has 19), so a longer name is none of them.
const KEY_BYTES: usize = 24;

/// A name as [`lookup`] looks for it: its bytes lower-cased, zero-padded to
/// [`KEY_BYTES`] and read as big-endian words, so comparing two names is comparing three
/// integers rather than calling `memcmp`.
type Key = [u64; KEY_BYTES / 8];

const fn key(name: &[u8]) -> Option<Key> {
    if name.len() > KEY_BYTES {
        return None;
    }
    let mut padded = [0u8; KEY_BYTES];
    let mut i = 0;
    while i < name.len() {
        padded[i] = name[i].to_ascii_lowercase();
        i += 1;
    }
    let mut key = [0u64; KEY_BYTES / 8];
    let mut w = 0;
    while w < key.len() {
        let mut word = [0u8; 8];
        let mut b = 0;
        while b < 8 {
            word[b] = padded[8 * w + b];
            b += 1;
        }
        key[w] = u64::from_be_bytes(word);
        w += 1;
    }
    Some(key)
}

/// [`key`] for names met at run time (every request parameter and template macro): the
/// same key, built with one copy into the padded buffer, one lower-casing pass over it
/// (which the compiler vectorises) and three word loads, instead of `key`'s byte-by-byte
/// loops, which a `const fn` needs. (Measured under callgrind: about 80 instructions a
/// lookup, against about 100 with word-wise (SWAR) lower-casing and 140 with the words
/// assembled byte by byte.)
fn runtime_key(name: &[u8]) -> Option<Key> {
    if name.len() > KEY_BYTES {
        return None;
    }
    let mut padded = [0u8; KEY_BYTES];
    padded[..name.len()].copy_from_slice(name);
    padded.make_ascii_lowercase();
    let word = |w: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&padded[8 * w..8 * w + 8]);
        u64::from_be_bytes(bytes)
    };
    Some([word(0), word(1), word(2)])
}

/// The keys of [`ALIASES`], in the same order.
const ALIAS_KEYS: [Key; ALIASES.len()] = {
    let mut keys = [[0; KEY_BYTES / 8]; ALIASES.len()];
    let mut i = 0;
    while i < ALIASES.len() {
        keys[i] = match key(ALIASES[i].0.as_bytes()) {
            Some(key) => key,
            None => panic!("an alias is longer than KEY_BYTES"),
        };
        i += 1;
    }
    keys
};

// The lookup is a perfect hash: it runs for every request parameter and every template
// macro, and one probe of a table costs a fraction of a search through 58 names.

/// Bits of a slot number: 512 slots for 58 aliases, so a multiplier that gives every
/// alias a slot of its own turns up within a few dozen tries.
const SLOT_BITS: u32 = 9;

/// The slot of `key` under `multiplier` (a multiplicative hash of its three words).
const fn slot(key: &Key, multiplier: u64) -> usize {
    let mixed = key[0] ^ key[1].rotate_left(21) ^ key[2].rotate_left(42);
    (mixed.wrapping_mul(multiplier) >> (64 - SLOT_BITS)) as usize
}

/// A multiplier under which no two aliases share a slot, and the slots: 0 for none,
/// else the alias's index in [`ALIASES`] plus one. Searched for at compile time.
const PERFECT_HASH: (u64, [u8; 1 << SLOT_BITS]) = {
    // Tries before giving up; the search needs a few dozen.
    const MAX_TRIES: u32 = 100_000;
    let mut multiplier: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut tries = 0;
    loop {
        let mut slots = [0u8; 1 << SLOT_BITS];
        let mut i = 0;
        while i < ALIASES.len() {
            let s = slot(&ALIAS_KEYS[i], multiplier);
            if slots[s] != 0 {
                break;
            }
            slots[s] = (i + 1) as u8;
            i += 1;
        }
        if i == ALIASES.len() {
            break (multiplier, slots);
        }
        tries += 1;
        assert!(tries < MAX_TRIES, "no perfect hash multiplier for ALIASES");
        // The next odd multiplier from a Weyl sequence.
        multiplier = multiplier.wrapping_add(0x6A09_E667_F3BC_C909) | 1;
    }
};
const MULTIPLIER: u64 = PERFECT_HASH.0;
static ALIAS_SLOTS: [u8; 1 << SLOT_BITS] = PERFECT_HASH.1;
// Slots hold an alias index plus one in a byte.
const _: () = assert!(ALIASES.len() < u8::MAX as usize);

/// How many distinct fields there are (`Sid(1)`..`Sid(10)` count as ten): the size of a
/// table indexed by [`Field::index`].
pub const FIELD_COUNT: usize = 29;

impl Field {
    /// A dense index in `0..FIELD_COUNT`, so per-request tables of fields can be plain
    /// arrays instead of maps. `Sid(n)` outside 1..=10 shares sid10's slot, as
    /// [`canonical_name`] names it sid10.
    pub const fn index(self) -> usize {
        match self {
            Field::CampaignId => 0,
            Field::AffiliateId => 1,
            Field::SidList => 2,
            // Sid(1)..Sid(10) take 3..=12; Sid(0), which no alias yields, takes sid1's.
            Field::Sid(n) => {
                2 + if n == 0 {
                    1
                } else if n > 10 {
                    10
                } else {
                    n as usize
                }
            }
            Field::CreativeId => 13,
            Field::ClickId => 14,
            Field::MerchantRef => 15,
            Field::Payout => 16,
            Field::Revenue => 17,
            Field::TotalSales => 18,
            Field::Currency => 19,
            Field::Event => 20,
            Field::Status => 21,
            Field::PixelType => 22,
            Field::Token => 23,
            Field::CookieFlag => 24,
            Field::RedirectFlag => 25,
            Field::TrackFlag => 26,
            Field::ConversionId => 27,
            Field::Timestamp => 28,
        }
    }
}

/// The canonical macro name of a field (`{click_id}`, `{sid1}`, ...), used where a
/// template value is looked up by field.
pub fn canonical_name(field: Field) -> &'static str {
    match field {
        Field::CampaignId => "campaign_id",
        Field::AffiliateId => "affiliate_id",
        Field::SidList | Field::Sid(1) => "sid1",
        Field::Sid(2) => "sid2",
        Field::Sid(3) => "sid3",
        Field::Sid(4) => "sid4",
        Field::Sid(5) => "sid5",
        Field::Sid(6) => "sid6",
        Field::Sid(7) => "sid7",
        Field::Sid(8) => "sid8",
        Field::Sid(9) => "sid9",
        Field::Sid(_) => "sid10",
        Field::CreativeId => "creative_id",
        Field::ClickId => "click_id",
        Field::MerchantRef => "merchant_ref",
        Field::Payout => "payout",
        Field::Revenue => "revenue",
        Field::TotalSales => "total_sales",
        Field::Currency => "currency",
        Field::Event => "event",
        Field::Status => "status",
        Field::PixelType => "type",
        Field::Token => "token",
        Field::CookieFlag => "c",
        Field::RedirectFlag => "r",
        Field::TrackFlag => "t",
        Field::ConversionId => "conversion_id",
        Field::Timestamp => "timestamp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_unique_and_lower_case() {
        for (i, (a, _)) in ALIASES.iter().enumerate() {
            assert_eq!(*a, a.to_ascii_lowercase(), "alias {a} must be lower case");
            assert!(
                ALIASES[i + 1..].iter().all(|(b, _)| a != b),
                "alias {a} appears twice"
            );
        }
    }

    /// The run-time key is the compile-time one, for aliases and for random names of any
    /// length and byte, every byte value in every position included (`SEED=<n>` replays
    /// a run).
    #[test]
    fn runtime_keys_are_the_const_keys() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(crate::test_seed::seed());
        for (alias, _) in ALIASES {
            assert_eq!(
                runtime_key(alias.as_bytes()),
                key(alias.as_bytes()),
                "{alias}"
            );
        }
        for b in 0..=255u8 {
            for at in [0, 7, 8, 23] {
                let mut name = [b'q'; KEY_BYTES];
                name[at] = b;
                assert_eq!(runtime_key(&name), key(&name), "byte {b:#04x} at {at}");
            }
        }
        for _ in 0..20_000 {
            let len = rng.random_range(0..=KEY_BYTES + 2);
            let name: Vec<u8> = (0..len)
                .map(|_| match rng.random_range(0..3) {
                    0 => rng.random(),
                    1 => rng.random_range(b'A'..=b'Z'),
                    _ => rng.random_range(b'a'..=b'z'),
                })
                .collect();
            assert_eq!(runtime_key(&name), key(&name), "{name:?}");
        }
    }

    #[test]
    fn every_alias_is_found_whatever_its_case() {
        for (alias, field) in ALIASES {
            assert_eq!(lookup(alias), Some(*field), "{alias}");
            assert_eq!(lookup(&alias.to_ascii_uppercase()), Some(*field), "{alias}");
        }
        let used = ALIAS_SLOTS.iter().filter(|s| **s != 0).count();
        assert_eq!(used, ALIASES.len(), "one slot per alias");
    }

    /// Names one byte away from an alias (changed, added, removed) are not aliases unless
    /// the table says so: the hash's final comparison holds for every near miss.
    #[test]
    fn near_misses_are_not_aliases() {
        let known = |name: &str| {
            ALIASES
                .iter()
                .find(|(a, _)| a.eq_ignore_ascii_case(name))
                .map(|(_, f)| *f)
        };
        for (alias, _) in ALIASES {
            let mut names = vec![
                alias[1..].to_string(),
                format!("{alias}_"),
                format!("_{alias}"),
            ];
            for i in 0..alias.len() {
                for b in [b'a', b'z', b'0', b'_', b'\0'] {
                    let mut bytes = alias.as_bytes().to_vec();
                    bytes[i] = b;
                    names.push(String::from_utf8(bytes).unwrap());
                }
            }
            for name in names {
                assert_eq!(lookup(&name), known(&name), "{name:?}");
            }
        }
    }

    #[test]
    fn field_indexes_are_dense_and_distinct() {
        let mut seen = [false; FIELD_COUNT];
        let mut fields: Vec<Field> = ALIASES.iter().map(|(_, f)| *f).collect();
        fields.extend([Field::ConversionId, Field::Timestamp]);
        for field in fields {
            seen[field.index()] = true;
            // One slot per field: no two different fields share an index.
            for (_, other) in ALIASES {
                if field.index() == other.index() {
                    assert_eq!(field, *other);
                }
            }
        }
        assert!(
            seen.iter().all(|s| *s),
            "every index in 0..FIELD_COUNT is used"
        );
        assert_eq!(Field::Sid(11).index(), Field::Sid(10).index());
    }

    #[test]
    fn lookup_ignores_case_and_knows_the_spec_names() {
        let cases = [
            ("CID", Some(Field::CampaignId)),
            ("Offer_ID", Some(Field::CampaignId)),
            ("AFID", Some(Field::AffiliateId)),
            ("aff_sub", Some(Field::Sid(1))),
            ("AFF_SUB5", Some(Field::Sid(5))),
            ("SID10", Some(Field::Sid(10))),
            ("ClickID", Some(Field::ClickId)),
            ("transaction_id", Some(Field::ClickId)),
            ("MerchantReferenceID", Some(Field::MerchantRef)),
            ("AP", Some(Field::Payout)),
            ("mp", Some(Field::Revenue)),
            ("TotalSales", Some(Field::TotalSales)),
            ("utm_source", None),
            ("", None),
            ("merchantreferenceidx", None),
            ("cid\0", None),
            ("\0", None),
            ("sid1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", None),
            ("affiliate_id_and_then_some", None),
            ("é", None),
        ];
        for (name, want) in cases {
            assert_eq!(lookup(name), want, "lookup({name})");
        }
    }
}
