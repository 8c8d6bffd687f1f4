//! The demo on embedded defaults: campaign 1 and affiliate 1, an advertiser landing page
//! and checkout page served by clicktrail itself (the checkout fires the conversion
//! pixel), a report page, and the generated admin token kept in the data directory.

use crate::pixels::html_escape;
use engine::{Affiliate, Campaign};
use std::path::{Path, PathBuf};

/// The demo's campaign and affiliate IDs.
pub const CAMPAIGN_ID: u32 = 1;
pub const AFFILIATE_ID: u32 = 1;

/// The file in the data directory holding the generated admin token.
pub const TOKEN_FILE: &str = "admin-token";

/// Bytes of CSPRNG output in a generated admin token (256 bits, hex-encoded).
const TOKEN_BYTES: usize = 32;

pub fn catalog(public_url: &str) -> (Vec<Campaign>, Vec<Affiliate>) {
    let base = public_url.trim_end_matches('/');
    let campaign = Campaign {
        id: CAMPAIGN_ID,
        name: "Demo shop".to_string(),
        landing_url: format!(
            "{base}/demo/landing?click_id={{click_id}}&affiliate={{affiliate_id}}&sid={{sid1}}"
        ),
        revenue: 10.0,
        payout: 4.0,
        ..Campaign::default()
    };
    let affiliate = Affiliate {
        id: AFFILIATE_ID,
        name: "Demo affiliate".to_string(),
        ..Affiliate::default()
    };
    (vec![campaign], vec![affiliate])
}

/// The tracking link a newcomer opens first.
pub fn tracking_link(public_url: &str) -> String {
    format!(
        "{}/click.track?CID={CAMPAIGN_ID}&AFID={AFFILIATE_ID}&SID=demo",
        public_url.trim_end_matches('/')
    )
}

/// Reads the admin token kept in `data_dir`, or generates and keeps one (owner-only file).
pub fn admin_token(data_dir: &Path) -> std::io::Result<String> {
    let path: PathBuf = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::fill(&mut bytes);
    let token = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
<style>body{{font-family:sans-serif;max-width:40em;margin:3em auto;line-height:1.5}}\
code{{background:#eee;padding:0 .3em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em}}</style>\
</head><body>{body}</body></html>"
    )
}

/// The start page: what the demo is and where to click.
pub fn index(public_url: &str) -> String {
    let link = html_escape(&tracking_link(public_url));
    page(
        "clicktrail demo",
        &format!(
            "<h1>clicktrail demo</h1><p>This is an affiliate's tracking link for campaign 1 \
and affiliate 1. Open it: clicktrail records the click, sets the <code>ct_1</code> cookie and \
sends you to the advertiser's landing page.</p><p><a href=\"{link}\">{link}</a></p>\
<p>Then buy something on the landing page, and look at the <a href=\"/demo/report\">report</a>.</p>"
        ),
    )
}

/// The advertiser's landing page the demo campaign redirects to.
pub fn landing(click_id: &str) -> String {
    page(
        "Demo shop",
        &format!(
            "<h1>Demo shop</h1><p>You arrived through clicktrail; your click ID is \
<code>{}</code>.</p><p><a href=\"/demo/checkout\">Buy the demo product for $10</a></p>",
            html_escape(click_id)
        ),
    )
}

/// The advertiser's order confirmation page, which fires the conversion pixel. The
/// merchant reference is the order number the shop made up.
pub fn checkout() -> String {
    let mut order = [0u8; 6];
    rand::fill(&mut order);
    let order = hex::encode(order);
    page(
        "Thank you",
        &format!(
            "<h1>Thank you for your order</h1><p>Order <code>{order}</code>. This page fired the \
conversion pixel below (a 1×1 image); clicktrail matched it to your click through the \
<code>ct_1</code> cookie.</p>\
<img src=\"/pixel.track?CID={CAMPAIGN_ID}&amp;MerchantReferenceID={order}&amp;TotalSales=10\" width=\"1\" height=\"1\" alt=\"\">\
<p>See it in the <a href=\"/demo/report\">report</a>.</p>"
        ),
    )
}

/// A report page: paste the admin token printed at start-up; the page calls the admin API
/// with it as a bearer token (the token never appears in a URL).
pub fn report() -> String {
    page(
        "clicktrail report",
        "<h1>Report</h1><p>Admin token (printed in the start-up log): \
<input id=\"t\" size=\"40\"> <button id=\"go\">Show</button></p><div id=\"out\"></div>\
<script>\
document.getElementById('go').addEventListener('click',function(){\
var out=document.getElementById('out');out.textContent='loading...';\
fetch('/api/v1/report?group_by=day,campaign,affiliate',{headers:{'Authorization':'Bearer '+document.getElementById('t').value}})\
.then(function(r){if(!r.ok){throw new Error('HTTP '+r.status);}return r.json();})\
.then(function(rep){var cols=['day','campaign_id','affiliate_id','clicks','unique_clicks','conversions','revenue','payout','profit','cr','epc'];\
var t=document.createElement('table'),h=t.insertRow();cols.forEach(function(c){var th=document.createElement('th');th.textContent=c;h.appendChild(th);});\
rep.rows.forEach(function(row){var tr=t.insertRow();cols.forEach(function(c){tr.insertCell().textContent=row[c]===undefined?'':row[c];});});\
out.textContent='';out.appendChild(t);})\
.catch(function(e){out.textContent=e.message;});});\
</script>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = admin_token(dir.path()).unwrap();
        assert_eq!(first.len(), TOKEN_BYTES * 2);
        assert_eq!(admin_token(dir.path()).unwrap(), first);
    }

    #[test]
    fn landing_escapes_the_click_id() {
        assert!(landing("<x>").contains("&lt;x&gt;"));
    }
}
