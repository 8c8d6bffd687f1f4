//! The visitor fingerprint of SPEC 2.1 (IP backup and uniqueness): a keyed hash of the
//! client IP, User-Agent and Accept-Language.
//!
//! SipHash-1-3 keyed with a 128-bit secret generated once per data directory (kept in the
//! control log), so fingerprints cannot be precomputed or linked across installations, and
//! raw IPs are not needed to match visitors. The top 16 bits are the visitor's route key.

use crate::api::Visitor;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// The secret key of the fingerprint hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FingerprintKey(pub [u8; 16]);

impl FingerprintKey {
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut key = [0u8; 16];
        rand::rng().fill_bytes(&mut key);
        FingerprintKey(key)
    }

    pub fn fingerprint(&self, visitor: &Visitor) -> u64 {
        let mut h = SipHasher13::new_with_key(&self.0);
        match visitor.ip {
            std::net::IpAddr::V4(ip) => {
                h.write_u8(4);
                h.write(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                h.write_u8(6);
                h.write(&ip.octets());
            }
        }
        // Length-prefixed so field boundaries cannot be shifted to collide.
        for field in [&visitor.user_agent, &visitor.accept_language] {
            h.write_u64(field.len() as u64);
            h.write(field.as_bytes());
        }
        h.finish()
    }
}

/// The route key of a fingerprint: its top 16 bits.
pub fn route_key(fingerprint: u64) -> u16 {
    (fingerprint >> 48) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visitor(ip: &str, ua: &str, lang: &str) -> Visitor {
        Visitor {
            ip: ip.parse().expect("ip"),
            user_agent: ua.into(),
            accept_language: lang.into(),
        }
    }

    #[test]
    fn fingerprint_depends_on_every_input_and_the_key() {
        let key = FingerprintKey([7; 16]);
        let base = key.fingerprint(&visitor("10.0.0.1", "UA", "en"));
        assert_eq!(base, key.fingerprint(&visitor("10.0.0.1", "UA", "en")));
        for other in [
            visitor("10.0.0.2", "UA", "en"),
            visitor("10.0.0.1", "UB", "en"),
            visitor("10.0.0.1", "UA", "de"),
            visitor("10.0.0.1", "UAe", "n"),
            visitor("::ffff:10.0.0.1", "UA", "en"),
        ] {
            assert_ne!(base, key.fingerprint(&other), "{other:?}");
        }
        let other_key = FingerprintKey([8; 16]);
        assert_ne!(
            base,
            other_key.fingerprint(&visitor("10.0.0.1", "UA", "en"))
        );
    }
}
