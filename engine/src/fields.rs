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

/// Every accepted name, lower case, and its field. Order does not matter; names are unique.
const ALIASES: &[(&str, Field)] = &[
    ("cid", Field::CampaignId),
    ("offer_id", Field::CampaignId),
    ("campaign_id", Field::CampaignId),
    ("afid", Field::AffiliateId),
    ("aff_id", Field::AffiliateId),
    ("affiliate_id", Field::AffiliateId),
    ("sid", Field::SidList),
    ("sid1", Field::Sid(1)),
    ("sid2", Field::Sid(2)),
    ("sid3", Field::Sid(3)),
    ("sid4", Field::Sid(4)),
    ("sid5", Field::Sid(5)),
    ("sid6", Field::Sid(6)),
    ("sid7", Field::Sid(7)),
    ("sid8", Field::Sid(8)),
    ("sid9", Field::Sid(9)),
    ("sid10", Field::Sid(10)),
    ("sub1", Field::Sid(1)),
    ("sub2", Field::Sid(2)),
    ("sub3", Field::Sid(3)),
    ("sub4", Field::Sid(4)),
    ("sub5", Field::Sid(5)),
    ("sub6", Field::Sid(6)),
    ("sub7", Field::Sid(7)),
    ("sub8", Field::Sid(8)),
    ("sub9", Field::Sid(9)),
    ("sub10", Field::Sid(10)),
    ("aff_sub", Field::Sid(1)),
    ("aff_sub2", Field::Sid(2)),
    ("aff_sub3", Field::Sid(3)),
    ("aff_sub4", Field::Sid(4)),
    ("aff_sub5", Field::Sid(5)),
    ("adid", Field::CreativeId),
    ("creative_id", Field::CreativeId),
    ("clickid", Field::ClickId),
    ("click_id", Field::ClickId),
    ("transaction_id", Field::ClickId),
    ("merchantreferenceid", Field::MerchantRef),
    ("order_id", Field::MerchantRef),
    ("adv_sub", Field::MerchantRef),
    ("merchant_ref", Field::MerchantRef),
    ("ap", Field::Payout),
    ("payout", Field::Payout),
    ("mp", Field::Revenue),
    ("amount", Field::Revenue),
    ("revenue", Field::Revenue),
    ("totalsales", Field::TotalSales),
    ("sale_amount", Field::TotalSales),
    ("currency", Field::Currency),
    ("event", Field::Event),
    ("status", Field::Status),
    ("type", Field::PixelType),
    ("token", Field::Token),
    ("c", Field::CookieFlag),
    ("r", Field::RedirectFlag),
    ("t", Field::TrackFlag),
    ("conversion_id", Field::ConversionId),
    ("timestamp", Field::Timestamp),
];

/// The field a wire name or macro name stands for, ignoring ASCII case; `None` for an
/// unknown name (an "extra" on requests, a literal in templates).
pub fn lookup(name: &str) -> Option<Field> {
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|&(_, field)| field)
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
        ];
        for (name, want) in cases {
            assert_eq!(lookup(name), want, "lookup({name})");
        }
    }
}
