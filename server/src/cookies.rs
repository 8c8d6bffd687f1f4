//! The `ct_<CID>` tracking cookies (SPEC 2.1): reading them from `Cookie` headers and
//! writing the `Set-Cookie` for a click.

use crate::limits::{MAX_CLICK_ID_BYTES, MAX_TRACKING_COOKIES};
use crate::params::parse_id;
use hyper::header::{HeaderMap, COOKIE};

const PREFIX: &str = "ct_";

/// Every well-formed `ct_<CID>=<click id>` cookie in the request, in order, at most
/// [`MAX_TRACKING_COOKIES`]. Malformed ones are ignored: a browser's cookie jar is not
/// the visitor's fault.
pub fn tracking_cookies(headers: &HeaderMap) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if found.len() >= MAX_TRACKING_COOKIES {
                return found;
            }
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let Some(campaign_id) = name.strip_prefix(PREFIX).and_then(parse_id) else {
                continue;
            };
            let value = value.trim_matches('"');
            if is_click_id(value) && !found.iter().any(|(c, _)| *c == campaign_id) {
                found.push((campaign_id, value.to_string()));
            }
        }
    }
    found
}

/// The cookie for `campaign_id`, if the request carries one.
pub fn click_cookie(headers: &HeaderMap, campaign_id: u32) -> Option<String> {
    tracking_cookies(headers)
        .into_iter()
        .find(|(c, _)| *c == campaign_id)
        .map(|(_, id)| id)
}

/// A click ID as minted by the engine is URL-safe; anything else never came from us.
pub fn is_click_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CLICK_ID_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Set-Cookie` for a tracked click. `secure` (an https public URL) adds
/// `SameSite=None; Secure` so the cookie survives the cross-site conversion pixel;
/// otherwise `SameSite=Lax`, since browsers drop `SameSite=None` without `Secure`.
pub fn set_cookie(campaign_id: u32, click_id: &str, max_age_secs: u64, secure: bool) -> String {
    let same_site = if secure {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    format!(
        "{PREFIX}{campaign_id}={click_id}; Max-Age={max_age_secs}; Path=/; HttpOnly; {same_site}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn reads_only_well_formed_tracking_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=b; ct_1=abc_DEF-1; ct_x=nope; ct_2=bad!id; ct_0=zero"),
        );
        headers.append(COOKIE, HeaderValue::from_static("ct_3=\"q\"; ct_1=second"));
        assert_eq!(
            tracking_cookies(&headers),
            vec![(1, "abc_DEF-1".to_string()), (3, "q".to_string())]
        );
        assert_eq!(click_cookie(&headers, 3).as_deref(), Some("q"));
        assert_eq!(click_cookie(&headers, 2), None);
    }

    #[test]
    fn set_cookie_attributes_follow_the_public_url_scheme() {
        assert_eq!(
            set_cookie(7, "abc", 2_592_000, false),
            "ct_7=abc; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            set_cookie(7, "abc", 60, true),
            "ct_7=abc; Max-Age=60; Path=/; HttpOnly; SameSite=None; Secure"
        );
    }
}
