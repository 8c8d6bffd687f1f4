//! Macro templates for landing URLs and pixels (SPEC 5.3): `{name}` and LinkTrust's
//! `[=Name=]`. Names match case-insensitively and through the alias table in `fields`
//! (`{ClickID}`, `[=AFID=]`, `[=SID=]` = sid1). Values are URL-encoded into URLs and
//! HTML-escaped into HTML; an unknown macro is left as it is.

use std::borrow::Cow;

/// Supplies macro values by canonical name (`click_id`, `sid1`, `payout`, ...; see
/// `fields::canonical_name`) or, for extras, by the extra's name in lower case.
pub trait Macros {
    fn value(&self, canonical_name: &str) -> Option<Cow<'_, str>>;
}

/// Expands a URL template; every substituted value is percent-encoded so it cannot add
/// parameters, fragments or path segments, or change the host.
pub fn expand_url(_template: &str, _macros: &dyn Macros) -> String {
    todo!()
}

/// Expands an HTML/script template; every substituted value is HTML-escaped.
pub fn expand_html(_template: &str, _macros: &dyn Macros) -> String {
    todo!()
}

/// Checks a URL template when it is saved: with every macro replaced by a sample value the
/// result must parse as an absolute http(s) URL whose host does not come from a macro.
pub fn validate_url_template(_template: &str) -> Result<(), String> {
    todo!()
}
