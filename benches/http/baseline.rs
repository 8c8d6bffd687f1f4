//! The physical limit of clicktrail's HTTP stack: a bare hyper 1 server (HTTP/1.1, tokio
//! multi-thread runtime, the same crates and settings clicktrail serves with) that answers
//! every request with a fixed `302`, a `Location` and a `Set-Cookie`, and does nothing else:
//! no parsing, no state, no disk. `benches/http/run.sh` measures clicktrail against it, so a
//! ratio near 1 means the tracking work is close to free next to the HTTP work.
//!
//! Usage: `baseline [LISTEN_ADDR]` (default `127.0.0.1:8090`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

/// Where the baseline listens when no address is given: next to clicktrail's default 8080.
const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// The same header-read timeout clicktrail uses against slowloris (SPEC 7), so both servers
/// arm the same timer per connection.
const HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// A fixed answer the size and shape of a tracked click's: a landing URL carrying a click
/// ID, and a click cookie of the same length as a minted one.
const LOCATION: &str = "https://shop.example/?ref=AAAAAAAAAAAAAAAAAAAAAAAAAA&a=1&s=";
const SET_COOKIE: &str =
    "ct_1=AAAAAAAAAAAAAAAAAAAAAAAAAA; Max-Age=2592000; Path=/; HttpOnly; SameSite=Lax";

async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::LOCATION,
        hyper::header::HeaderValue::from_static(LOCATION),
    );
    headers.insert(
        hyper::header::SET_COOKIE,
        hyper::header::HeaderValue::from_static(SET_COOKIE),
    );
    Ok(response)
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let addr: SocketAddr = listen.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad listen address {listen:?}: {e}"),
        )
    })?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("baseline listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // Same as a tracker would: answer small requests without Nagle's delay.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(HEADER_READ_TIMEOUT_SECS))
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
