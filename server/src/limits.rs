//! Every bound the HTTP front end enforces (SPEC 7), in one place. Per-parameter bounds
//! (value length, extras count) are the engine's constants, re-exported here so the server
//! and the engine can never disagree about them.

use std::time::Duration;

pub use engine::{MAX_EXTRAS, MAX_SUB_IDS, MAX_VALUE_BYTES};

/// Longest request target (path and query), in bytes; longer answers 414. Tracking links
/// with ten sub IDs and ten extras at their maximum length fit well inside it.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// Largest header block (names, values and their separators, without the request line);
/// larger answers 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Largest request head hyper buffers before it gives up with its own 431. It is larger
/// than `MAX_URL_BYTES + MAX_HEADER_BYTES` so that a head which is only a little too big
/// reaches our own checks and gets the precise answer (414 for the URL, 431 for headers);
/// it bounds the memory one connection can hold before a request is even parsed.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Largest request body (POSTed forms and JSON); larger answers 413 (SPEC 2.3, 7).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Time a client has to send a complete request head; then the connection is closed, so a
/// client trickling bytes (slowloris) cannot hold a connection for long (SPEC 7).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a complete body once the head arrived, for the same reason.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a write to a client may stay blocked before the connection is closed: a client
/// that stops reading our answers must not keep its connection for ever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once; further clients wait in the kernel's accept queue.
/// Each connection may hold up to `MAX_HEAD_BYTES + MAX_BODY_BYTES` of buffers, so this
/// bounds request memory to roughly 400 MiB in the worst case.
pub const MAX_CONNECTIONS: usize = 4096;

/// Most `name=value` pairs parsed from one request (query and body together); more is a
/// bad request. The known fields plus `MAX_EXTRAS` extras are far fewer.
pub const MAX_PARAMS: usize = 64;

/// Longest parameter name, in bytes; an extra's name is kept with the record.
pub const MAX_NAME_BYTES: usize = 64;

/// Most `ct_<CID>` cookies read from one request; a browser holding more keeps the first.
pub const MAX_TRACKING_COOKIES: usize = 32;

/// Longest click ID accepted from a cookie or a parameter (SPEC 2.1 mints at most 32).
pub const MAX_CLICK_ID_BYTES: usize = 64;

/// Time in-flight requests get to finish after shutdown begins; then connections are cut.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest page of conversions or deliveries one admin request returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// Default page size for admin lists.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Longest report range, in days; bounds the work one admin request can ask for.
pub const MAX_REPORT_DAYS: u32 = 3660;

const _: () = assert!(MAX_HEAD_BYTES > MAX_URL_BYTES + MAX_HEADER_BYTES);
// hyper refuses read buffers smaller than 8 KiB.
const _: () = assert!(MAX_HEAD_BYTES >= 8192);
