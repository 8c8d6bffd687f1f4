//! The client IP (SPEC 2.1): the socket peer, or — only when the peer is a trusted proxy —
//! the right-most `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left
//! of that one were written by the client and prove nothing.

use hyper::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// Longest `X-Forwarded-For` chain walked; a longer one is a client padding it.
const MAX_FORWARDED_HOPS: usize = 32;

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    // Several X-Forwarded-For headers form one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = parse_entry(entry.trim()) else {
            // A trusted proxy wrote garbage: believe no further than the last good hop.
            return client;
        };
        client = ip;
        if !trusted(&ip) {
            return ip;
        }
    }
    client
}

/// An address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn check(peer: &str, xff: &[&str], trusted: &[&str], want: &str) {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let got = client_ip(peer.parse().unwrap(), &headers, &trusted);
        assert_eq!(
            got.to_string(),
            want,
            "peer {peer} xff {xff:?} trusted {trusted:?}"
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        check("203.0.113.9", &["1.1.1.1"], &[], "203.0.113.9");
        check("203.0.113.9", &["1.1.1.1"], &["10.0.0.0/8"], "203.0.113.9");
        check("10.0.0.1", &["1.1.1.1"], &["10.0.0.0/8"], "1.1.1.1");
        // The client's own spoofed entry is left of the real one.
        check(
            "10.0.0.1",
            &["6.6.6.6, 1.1.1.1"],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        // Chains of trusted proxies are skipped, across several headers.
        check(
            "10.0.0.1",
            &["6.6.6.6, 1.1.1.1", "10.0.0.2"],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        check("10.0.0.1", &["1.1.1.1:443"], &["10.0.0.0/8"], "1.1.1.1");
        check(
            "10.0.0.1",
            &["[2001:db8::1]:443"],
            &["10.0.0.0/8"],
            "2001:db8::1",
        );
        check("10.0.0.1", &["garbage"], &["10.0.0.0/8"], "10.0.0.1");
        check(
            "10.0.0.1",
            &["1.1.1.1, garbage, 10.0.0.3"],
            &["10.0.0.0/8"],
            "10.0.0.3",
        );
        check("10.0.0.1", &[], &["10.0.0.0/8"], "10.0.0.1");
        check("::ffff:10.0.0.1", &["1.1.1.1"], &["10.0.0.0/8"], "1.1.1.1");
    }
}
