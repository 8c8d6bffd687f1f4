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
            let Some((campaign_id, value)) = tracking_pair(pair) else {
                continue;
            };
            if !found.iter().any(|(c, _)| *c == campaign_id) {
                found.push((campaign_id, value.to_string()));
            }
        }
    }
    found
}

/// The cookie for `campaign_id`, if the request carries one: the one
/// [`tracking_cookies`] would list for it, found without listing the others.
pub fn click_cookie(headers: &HeaderMap, campaign_id: u32) -> Option<String> {
    // The other campaigns met so far: only the first cookie of each counts towards the
    // bound, as in `tracking_cookies`.
    let mut others = [0u32; MAX_TRACKING_COOKIES];
    let mut seen = 0;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            if seen >= MAX_TRACKING_COOKIES {
                return None;
            }
            let Some((campaign, value)) = tracking_pair(pair) else {
                continue;
            };
            if campaign == campaign_id {
                return Some(value.to_string());
            }
            if !others[..seen].contains(&campaign) {
                others[seen] = campaign;
                seen += 1;
            }
        }
    }
    None
}

/// A well-formed `ct_<CID>=<click id>` pair: the campaign and the click ID.
fn tracking_pair(pair: &str) -> Option<(u32, &str)> {
    let (name, value) = pair.trim().split_once('=')?;
    let campaign_id = name.strip_prefix(PREFIX).and_then(parse_id)?;
    let value = value.trim_matches('"');
    is_click_id(value).then_some((campaign_id, value))
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
///
/// Written into one allocation of the exact length, which the answer's header then takes
/// over as it is (see `reply::with_header`).
pub fn set_cookie(campaign_id: u32, click_id: &str, max_age_secs: u64, secure: bool) -> String {
    let same_site = if secure {
        "SameSite=None; Secure"
    } else {
        "SameSite=Lax"
    };
    let mut campaign = itoa::Buffer::new();
    let campaign = campaign.format(campaign_id);
    let mut max_age = itoa::Buffer::new();
    let max_age = max_age.format(max_age_secs);
    let parts = [
        PREFIX,
        campaign,
        "=",
        click_id,
        "; Max-Age=",
        max_age,
        "; Path=/; HttpOnly; ",
        same_site,
    ];
    let mut cookie = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        cookie.push_str(part);
    }
    cookie
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

    /// `click_cookie` answers what `tracking_cookies` lists, including at the bound:
    /// seeded random cookie headers (`SEED=<n>` replays a run).
    #[test]
    fn click_cookie_agrees_with_tracking_cookies() {
        use rand::Rng;
        let mut rng = crate::seed::seeded_rng();
        const PAIRS: &[&str] = &[
            "a=b",
            "ct_x=1",
            "ct_0=abc",
            "ct_1=bad!",
            "ct_9=\"q\"",
            " ct_8=z ",
        ];
        for _ in 0..500 {
            let mut headers = HeaderMap::new();
            for _ in 0..rng.random_range(0..3) {
                let pairs: Vec<String> = (0..rng.random_range(0..50))
                    .map(|_| match rng.random_range(0..3) {
                        0 => PAIRS[rng.random_range(0..PAIRS.len())].to_string(),
                        _ => format!(
                            "ct_{}=id{}",
                            rng.random_range(1..45),
                            rng.random_range(0..9)
                        ),
                    })
                    .collect();
                headers.append(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
            }
            let listed = tracking_cookies(&headers);
            for campaign in 0..50 {
                let want = listed
                    .iter()
                    .find(|(c, _)| *c == campaign)
                    .map(|(_, id)| id.clone());
                assert_eq!(
                    click_cookie(&headers, campaign),
                    want,
                    "{headers:?} campaign {campaign}"
                );
            }
        }
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
        // One allocation of the exact length: the header takes it over without a copy.
        let cookie = set_cookie(u32::MAX, "AAAAAAAAAAAAAAAAAAAAAA", u64::MAX, true);
        assert_eq!(cookie.len(), cookie.capacity());
        assert!(cookie
            .starts_with("ct_4294967295=AAAAAAAAAAAAAAAAAAAAAA; Max-Age=18446744073709551615;"));
    }
}
