//! `engine::template::expand_url` on a typical landing template: the click path calls it
//! once per click, so it must stay well under a microsecond.
//!
//! Run: `cargo bench --bench template_expand`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use engine::template::{expand_url, Macros};
use std::borrow::Cow;

/// What a click supplies: a handful of ids and sub IDs, looked up by canonical name.
struct Click {
    click_id: String,
    campaign_id: String,
    affiliate_id: String,
    sid1: String,
    sid2: String,
}

impl Macros for Click {
    fn value(&self, canonical_name: &str) -> Option<Cow<'_, str>> {
        let v = match canonical_name {
            "click_id" => &self.click_id,
            "campaign_id" => &self.campaign_id,
            "affiliate_id" => &self.affiliate_id,
            "sid1" => &self.sid1,
            "sid2" => &self.sid2,
            _ => return None,
        };
        Some(Cow::Borrowed(v.as_str()))
    }
}

fn bench(c: &mut Criterion) {
    let click = Click {
        click_id: "k3J9xQ2vLm8TzR4wYp6N".to_string(),
        campaign_id: "1".to_string(),
        affiliate_id: "7".to_string(),
        sid1: "spring sale/email".to_string(),
        sid2: "banner-300x250".to_string(),
    };
    let template = "https://shop.example/landing?ref={click_id}&a={affiliate_id}&c=[=CID=]\
                    &s={sid1}&s2={SID2}&utm_source=aff&utm_medium=cpa";
    c.bench_function("expand_url typical landing template", |b| {
        b.iter(|| expand_url(black_box(template), black_box(&click)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
