//! Metric handles of the tracking hot path, looked up once.
//!
//! Why: `metrics::counter!` with labels builds its key and searches the recorder's registry
//! on every call; per click that was a few percent of the CPU. The handles are taken at
//! first use rather than when the engine opens: a handle taken before the process installs
//! its recorder would count into nothing (tests open an engine, then start a server).

use metrics::Counter;

pub(crate) struct Meters {
    /// Clicks recorded, by uniqueness: `[repeat, unique]`.
    clicks: [Counter; 2],
    pub clicks_untracked: Counter,
    pub impressions: Counter,
    pub impressions_untracked: Counter,
}

impl Meters {
    pub fn new() -> Meters {
        let clicks =
            |unique: &'static str| metrics::counter!("clicktrail_clicks_total", "unique" => unique);
        Meters {
            clicks: [clicks("false"), clicks("true")],
            clicks_untracked: metrics::counter!("clicktrail_clicks_untracked_total"),
            impressions: metrics::counter!("clicktrail_impressions_total"),
            impressions_untracked: metrics::counter!("clicktrail_impressions_untracked_total"),
        }
    }

    pub fn click(&self, unique: bool) {
        self.clicks[usize::from(unique)].increment(1);
    }
}
