//! Non-panicking requests for the crash and fault tests, where a request may meet a server
//! that is being killed: the caller needs to tell "answered", "never reached the server"
//! (connection refused: certainly not applied) and "lost in flight" (may or may not have
//! been applied) apart.
//!
//! Included with `#[path = "support/ops.rs"] mod ops;` next to `mod support;`.

#![allow(dead_code)]

use crate::support::{send_raw, Reply};
use std::net::SocketAddr;

/// How one request ended.
#[derive(Debug)]
pub enum Sent {
    /// A complete answer: whatever it says happened.
    Answered(Reply),
    /// The connection was refused: the server never saw the request.
    Refused,
    /// Sent, but no complete answer: it may or may not have been applied.
    Lost,
}

/// A raw HTTP/1.1 request with `Connection: close`.
pub fn raw(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: test.invalid\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub async fn send(addr: SocketAddr, bytes: &[u8]) -> Sent {
    match send_raw(addr, bytes).await {
        Ok(reply) => Sent::Answered(reply),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Sent::Refused,
        Err(_) => Sent::Lost,
    }
}

/// The `ct_<campaign>` cookie's value in a click answer, if it set one.
pub fn cookie_value(reply: &Reply, campaign: u32) -> Option<String> {
    let prefix = format!("ct_{campaign}=");
    reply.headers_named("set-cookie").into_iter().find_map(|c| {
        c.split(';')
            .next()
            .and_then(|kv| kv.trim().strip_prefix(&prefix))
            .map(str::to_string)
    })
}

/// Seed for a randomised test: `SEED=` from the environment, else from the OS. Printed so
/// a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("SEED must be an unsigned integer, got {s:?}")),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: SEED={seed}");
    seed
}
