//! The seeded traffic mix: which visitor does what. A visitor's journey depends only on the
//! seed and the visitor's number, never on scheduling, so the same `--seed` sends the same
//! traffic whatever the concurrency or the rate.

use std::fmt;
use std::net::Ipv4Addr;

/// Addresses given to visitors that share an IP (behind one NAT, a mobile carrier's
/// gateway): small on purpose, so many visitors land on each.
const SHARED_IP_POOL: u32 = 16;

/// Accept-Language values visitors pick from (part of the fingerprint).
const LANGUAGES: [&str; 6] = [
    "en-US,en;q=0.9",
    "en-GB,en;q=0.8",
    "de-DE,de;q=0.9,en;q=0.5",
    "fr-FR,fr;q=0.9",
    "es-ES,es;q=0.9",
    "pt-BR,pt;q=0.8",
];

/// Creatives (`ADID`) and first sub IDs (`SID`) visitors come through.
const CREATIVES: u32 = 3;
const SUB_IDS: u32 = 5;

/// The shares that shape the traffic, each a fraction in 0..=1.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// Visitors who see an impression (banner view) before anything else.
    pub impression: f64,
    /// Visitors who click the tracking link.
    pub click: f64,
    /// Clickers who click a second time (with their cookie: not unique).
    pub repeat_click: f64,
    /// Clickers who convert.
    pub convert: f64,
    /// Conversions the advertiser posts server to server by click ID (`type=s2s`); the
    /// rest fire the browser pixel (`type=img`).
    pub s2s: f64,
    /// Browser conversions whose visitor lost the cookie: attributed by IP backup.
    pub cookie_loss: f64,
    /// Conversions sent a second time (a retrying advertiser): must not count twice.
    pub duplicate: f64,
    /// Visitors replaced by a clickless AFID post (`type=s2s&CID&AFID`).
    pub afid_post: f64,
    /// Visitors who share an IP address with others (only visible with X-Forwarded-For).
    pub shared_ip: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            impression: 0.5,
            click: 0.6,
            repeat_click: 0.1,
            convert: 0.3,
            s2s: 0.4,
            cookie_loss: 0.2,
            duplicate: 0.05,
            afid_post: 0.05,
            shared_ip: 0.2,
        }
    }
}

impl Mix {
    /// Names the first share outside 0..=1.
    pub fn validate(&self) -> Result<(), String> {
        let shares = [
            ("impression", self.impression),
            ("click", self.click),
            ("repeat-click", self.repeat_click),
            ("convert", self.convert),
            ("s2s", self.s2s),
            ("cookie-loss", self.cookie_loss),
            ("duplicate", self.duplicate),
            ("afid", self.afid_post),
            ("shared-ip", self.shared_ip),
        ];
        for (name, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("--{name}-share must be within 0..=1, got {share}"));
            }
        }
        Ok(())
    }
}

/// How a conversion reaches clicktrail, and so how it must be attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Browser pixel carrying the `ct_<CID>` cookie.
    Cookie,
    /// Browser pixel without the cookie: the same fingerprint's latest click.
    IpBackup,
    /// Server post naming the click (`ClickID`).
    ClickId,
    /// Server post naming the affiliate, no click (`CID` + `AFID`).
    Afid,
}

impl Method {
    pub const ALL: [Method; 4] = [Self::Cookie, Self::IpBackup, Self::ClickId, Self::Afid];

    /// The name clicktrail records in `matched_by`.
    pub fn matched_by(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::IpBackup => "ip_backup",
            Self::ClickId => "click_id",
            Self::Afid => "afid",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.matched_by())
    }
}

/// One request of a journey, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Impression,
    Click,
    /// A conversion of the visitor's latest click (or clickless for [`Method::Afid`]);
    /// `repeat` marks the second sending of the same conversion.
    Convert {
        method: Method,
        repeat: bool,
    },
}

/// Who the visitor is (the fingerprint's inputs) and what it does.
#[derive(Clone, Debug, PartialEq)]
pub struct Journey {
    pub visitor: u64,
    pub user_agent: String,
    pub accept_language: &'static str,
    /// Sent as `X-Forwarded-For` when the server trusts the load generator as a proxy.
    pub ip: Ipv4Addr,
    pub creative_id: u32,
    pub sid: String,
    /// Server posts go as POST form bodies when true, else as GET query strings.
    pub post: bool,
    pub steps: Vec<Step>,
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever, so a seed means the
/// same traffic in every version of this tool (unlike a library RNG that may change).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, share: f64) -> bool {
        self.next_f64() < share
    }

    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n.max(1))) as u32
    }
}

/// Builds journeys from a seed and a mix.
pub struct Plan {
    pub seed: u64,
    pub mix: Mix,
    /// Makes this run's visitors new to the server (user agents differ between runs), so
    /// uniqueness and IP backup see only this run's clicks.
    pub run_tag: String,
}

impl Plan {
    pub fn journey(&self, visitor: u64) -> Journey {
        // One independent stream per visitor, derived from the seed and the number.
        let mut rng = SplitMix64::new(self.seed ^ visitor.wrapping_mul(0xD605_BBB5_8C8A_BDEB));
        rng.next_u64();
        let mix = &self.mix;
        let shared = rng.chance(mix.shared_ip);
        let ip = if shared {
            // 198.19.0.0/16 of the benchmarking range (RFC 2544): never a real visitor.
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + rng.below(SHARED_IP_POOL))
        } else {
            // 198.18.0.0/16: one address per visitor until the range wraps.
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (visitor as u32 & 0xFFFF))
        };
        let browser_version = 100 + rng.below(30);
        let user_agent = format!(
            "Mozilla/5.0 (X11; Linux x86_64; rv:{browser_version}.0) Gecko/20100101 \
             Firefox/{browser_version}.0 loadgen/{}/{visitor}",
            self.run_tag
        );
        let accept_language = LANGUAGES[rng.below(LANGUAGES.len() as u32) as usize];
        let creative_id = 1 + rng.below(CREATIVES);
        let sid = format!("s{}", 1 + rng.below(SUB_IDS));
        let post = rng.chance(0.5);

        let mut steps = Vec::new();
        if rng.chance(mix.afid_post) {
            steps.push(Step::Convert {
                method: Method::Afid,
                repeat: false,
            });
        } else {
            if rng.chance(mix.impression) {
                steps.push(Step::Impression);
            }
            if rng.chance(mix.click) {
                steps.push(Step::Click);
                if rng.chance(mix.repeat_click) {
                    steps.push(Step::Click);
                }
                if rng.chance(mix.convert) {
                    let method = if rng.chance(mix.s2s) {
                        Method::ClickId
                    } else if rng.chance(mix.cookie_loss) {
                        Method::IpBackup
                    } else {
                        Method::Cookie
                    };
                    steps.push(Step::Convert {
                        method,
                        repeat: false,
                    });
                    if rng.chance(mix.duplicate) {
                        steps.push(Step::Convert {
                            method,
                            repeat: true,
                        });
                    }
                }
            }
        }
        Journey {
            visitor,
            user_agent,
            accept_language,
            ip,
            creative_id,
            sid,
            post,
            steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, mix: Mix) -> Plan {
        Plan {
            seed,
            mix,
            run_tag: "t".to_string(),
        }
    }

    #[test]
    fn same_seed_same_journeys_other_seed_other_journeys() {
        let a = plan(7, Mix::default());
        let b = plan(7, Mix::default());
        let c = plan(8, Mix::default());
        let journeys = |p: &Plan| (0..200).map(|v| p.journey(v)).collect::<Vec<_>>();
        assert_eq!(journeys(&a), journeys(&b));
        assert_ne!(journeys(&a), journeys(&c));
    }

    /// Shares of a large sample land near the configured ones, and the journey shapes obey
    /// the rules: a conversion follows a click, a repeat follows its original.
    #[test]
    fn shares_and_shapes() {
        let seed = crate::loadgen::test_seed();
        let p = plan(seed, Mix::default());
        let visitors = 20_000;
        let (mut clickers, mut converters, mut afid, mut s2s) = (0u32, 0u32, 0u32, 0u32);
        for v in 0..visitors {
            let j = p.journey(v);
            let clicked = j.steps.contains(&Step::Click);
            clickers += u32::from(clicked);
            for (i, step) in j.steps.iter().enumerate() {
                if let Step::Convert { method, repeat } = *step {
                    if method == Method::Afid {
                        afid += 1;
                        assert_eq!(j.steps.len(), 1, "an AFID post is the whole journey");
                        continue;
                    }
                    assert!(clicked, "conversion without a click: {j:?}");
                    if repeat {
                        assert_eq!(
                            j.steps[i - 1],
                            Step::Convert {
                                method,
                                repeat: false
                            }
                        );
                    } else {
                        converters += 1;
                        s2s += u32::from(method == Method::ClickId);
                    }
                }
            }
        }
        let share = |n: u32, of: u32| f64::from(n) / f64::from(of.max(1));
        let near = |got: f64, want: f64| (got - want).abs() < 0.03;
        assert!(near(share(afid, visitors as u32), 0.05), "afid share");
        assert!(
            near(share(clickers, visitors as u32 - afid), 0.6),
            "click share"
        );
        assert!(near(share(converters, clickers), 0.3), "convert share");
        assert!(near(share(s2s, converters), 0.4), "s2s share");
    }

    #[test]
    fn fingerprints_differ_per_visitor_even_on_a_shared_ip() {
        let mix = Mix {
            shared_ip: 1.0,
            ..Mix::default()
        };
        let p = plan(1, mix);
        let a = p.journey(1);
        let b = p.journey(2);
        assert_ne!(a.user_agent, b.user_agent);
        assert_eq!(a.ip.octets()[..2], [198, 19]);
    }

    #[test]
    fn mix_validation_names_the_share() {
        let bad = Mix {
            cookie_loss: 1.5,
            ..Mix::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("--cookie-loss-share"), "{err}");
        assert_eq!(Mix::default().validate(), Ok(()));
    }
}
