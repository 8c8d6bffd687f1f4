//! One HTTP attempt of one delivery: resolve the host, vet every address (SSRF guard),
//! dial the vetted address, TLS if https, send the request, read at most
//! [`MAX_RESPONSE_BODY_BYTES`] of the answer. No redirects are followed, and
//! every phase is bounded by the attempt's deadline.
//!
//! Connections are kept alive for the next delivery to the same target (scheme, host,
//! port): such a connection was dialled to a vetted address for that very target, so reuse
//! never skips the SSRF guard.

use super::guard::is_forbidden_target;
use super::DeliveryJob;
use crate::config::HttpMethod;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// At most this much of a target's answer is read: the status is all we need, and a
/// hostile target must not make us buffer a large body (SPEC 5.1).
pub const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024;

/// At most this many resolved addresses are dialled in turn: enough for dual-stack hosts
/// with a spare, few enough that one attempt cannot turn into a port scan.
const MAX_ADDRESSES_DIALLED: usize = 4;

/// Sent on every request, so operators of the targets can see who calls them.
const USER_AGENT: &str = concat!("clicktrail-dispatcher/", env!("CARGO_PKG_VERSION"));

/// How an attempt failed before a status arrived. The `as_str` names are the `result` of
/// `AttemptReport`s and the `result` label of the attempt metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The URL does not parse, or the request cannot be built from the job.
    InvalidUrl,
    /// The scheme is not http(s), or the host resolves to a forbidden address.
    BlockedTarget,
    /// The name did not resolve.
    Dns,
    /// No vetted address accepted a TCP connection within the connect timeout.
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The connection broke or the answer was not HTTP/1.
    Protocol,
    /// The attempt's total time ran out before a status arrived.
    Timeout,
    /// The webhook secret is not `whsec_<base64>`.
    InvalidSecret,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUrl => "invalid_url",
            Self::BlockedTarget => "blocked_target",
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Timeout => "timeout",
            Self::InvalidSecret => "invalid_secret",
        }
    }

    /// Transport trouble is worth another try; a refused or malformed target never is.
    pub fn is_retryable(self) -> bool {
        match self {
            Self::Dns | Self::Connect | Self::Tls | Self::Protocol | Self::Timeout => true,
            Self::InvalidUrl | Self::BlockedTarget | Self::InvalidSecret => false,
        }
    }
}

/// Where a delivery goes, parsed once when it is submitted.
#[derive(Debug)]
pub struct Target {
    pub uri: Uri,
    pub https: bool,
    /// The host as written, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// The `Host` header: host and explicit port as written.
    pub authority: HeaderValue,
    /// Lane key for per-host concurrency: scheme, lower-case host and port.
    pub key: Arc<str>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, ErrorClass> {
        // Only http and https: `file:`, `gopher:` and the like are refused as targets even
        // when `Uri` cannot parse them.
        if let Some((scheme, _)) = url.split_once(':') {
            let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
            if is_scheme
                && !scheme.eq_ignore_ascii_case("http")
                && !scheme.eq_ignore_ascii_case("https")
            {
                return Err(ErrorClass::BlockedTarget);
            }
        }
        let uri: Uri = url.parse().map_err(|_| ErrorClass::InvalidUrl)?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            // Only http and https: no file://, gopher:// or the like.
            _ => return Err(ErrorClass::BlockedTarget),
        };
        let authority = uri.authority().ok_or(ErrorClass::InvalidUrl)?;
        if authority.as_str().contains('@') {
            return Err(ErrorClass::InvalidUrl);
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(ErrorClass::InvalidUrl);
        }
        let port = match authority.port() {
            Some(port) => port.as_u16(),
            // `Uri` hides a port that is not a u16; refuse rather than dial the default.
            None if authority.as_str().ends_with(']') || !authority.as_str().contains(':') => {
                if https {
                    443
                } else {
                    80
                }
            }
            None => return Err(ErrorClass::InvalidUrl),
        };
        if port == 0 {
            return Err(ErrorClass::InvalidUrl);
        }
        let header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| ErrorClass::InvalidUrl)?;
        let key = format!(
            "{}://{}:{port}",
            if https { "https" } else { "http" },
            host.to_ascii_lowercase()
        );
        Ok(Target {
            https,
            host: host.to_string(),
            port,
            authority: header,
            key: key.into(),
            uri,
        })
    }
}

/// What a target answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when given as a number.
    pub retry_after_secs: Option<u64>,
}

/// The dispatcher's HTTP client: settings shared by every attempt, and idle keep-alive
/// connections.
pub struct Client {
    /// `None` only if rustls could not be set up; https attempts then fail with `tls`.
    tls: Option<tokio_rustls::TlsConnector>,
    allow_private_targets: bool,
    connect_timeout: Duration,
    total_timeout: Duration,
    pool: Mutex<Pool>,
    max_idle_per_host: usize,
}

/// How long an idle connection is kept for the next delivery to its host: long enough to
/// serve a burst of conversions, shorter than most servers' own keep-alive timeouts.
const IDLE_CONNECTION_MS: u64 = 15_000;

/// Idle connections overall: the same order as the in-flight bound, so the pool never
/// holds more sockets than the dispatcher would use at its busiest.
const MAX_IDLE_CONNECTIONS: usize = 256;

/// Connections that finished an exchange cleanly, by lane key (scheme, host, port). Each
/// was dialled to a vetted address for that very key, so reusing it needs no new check.
#[derive(Default)]
struct Pool {
    by_host: HashMap<Arc<str>, Vec<Connection>>,
    total: usize,
}

/// One HTTP/1 connection: the request side and its driver task, which dies with it.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop<()>,
    idle_since: Instant,
}

impl Client {
    pub fn new(
        allow_private_targets: bool,
        connect_timeout: Duration,
        total_timeout: Duration,
        max_idle_per_host: usize,
    ) -> Self {
        Client {
            tls: tls_connector(),
            allow_private_targets,
            connect_timeout,
            total_timeout,
            pool: Mutex::new(Pool::default()),
            max_idle_per_host,
        }
    }

    /// Makes one attempt. `now_secs` is the Standard Webhooks timestamp.
    ///
    /// Everything up to the response's status runs under the attempt's deadline (its
    /// expiry is a `timeout`); then at most [`MAX_RESPONSE_BODY_BYTES`] of the body are read
    /// until the same deadline, and a slow body does not turn an answer into a timeout.
    pub async fn attempt(
        &self,
        target: &Target,
        job: &DeliveryJob,
        now_secs: u64,
    ) -> Result<Answer, ErrorClass> {
        let request = build_request(target, job, now_secs)?;
        let deadline = Instant::now() + self.total_timeout;
        let (connection, response) = timeout_at(deadline, self.exchange(target, request, deadline))
            .await
            .unwrap_or(Err(ErrorClass::Timeout))?;
        let retry_after_secs = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let answer = Answer {
            status: response.status().as_u16(),
            retry_after_secs,
        };
        let mut body = response.into_body();
        let mut read_bytes = 0;
        let mut complete = false;
        while read_bytes <= MAX_RESPONSE_BODY_BYTES {
            match timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => read_bytes += frame.data_ref().map_or(0, |d| d.len()),
                Ok(None) => {
                    complete = true;
                    break;
                }
                Ok(Some(Err(_))) | Err(_) => break,
            }
        }
        if complete {
            self.put_idle(&target.key, connection);
        }
        Ok(answer)
    }

    /// Sends the request on an idle connection to the same target, else on a new one.
    async fn exchange(
        &self,
        target: &Target,
        mut request: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<(Connection, Response<Incoming>), ErrorClass> {
        while let Some(mut connection) = self.take_idle(&target.key) {
            // The driver may still be finishing the previous exchange; a closing
            // connection answers with an error here.
            if connection.sender.ready().await.is_err() {
                continue;
            }
            match connection.sender.try_send_request(request).await {
                Ok(response) => return Ok((connection, response)),
                // The connection closed before the request went out: try the next one.
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(ErrorClass::Protocol),
                },
            }
        }
        let mut connection = self.open(target, deadline).await?;
        let response = connection
            .sender
            .send_request(request)
            .await
            .map_err(|_| ErrorClass::Protocol)?;
        Ok((connection, response))
    }

    /// Resolves and vets the target, dials a vetted address, and does TLS and the HTTP/1
    /// handshake.
    async fn open(&self, target: &Target, deadline: Instant) -> Result<Connection, ErrorClass> {
        let addresses = self.resolve(target).await?;
        let tcp = self.connect(&addresses, deadline).await?;
        if target.https {
            let tls = self.tls.as_ref().ok_or(ErrorClass::Tls)?;
            let name =
                ServerName::try_from(target.host.clone()).map_err(|_| ErrorClass::InvalidUrl)?;
            let stream = tls.connect(name, tcp).await.map_err(|_| ErrorClass::Tls)?;
            handshake(stream).await
        } else {
            handshake(tcp).await
        }
    }

    fn take_idle(&self, key: &Arc<str>) -> Option<Connection> {
        let mut pool = self.pool.lock().ok()?;
        let idle = pool.by_host.get_mut(key)?;
        let mut found = None;
        let mut dropped = 0;
        while let Some(connection) = idle.pop() {
            dropped += 1;
            let fresh = connection.idle_since.elapsed() < Duration::from_millis(IDLE_CONNECTION_MS);
            if fresh && !connection.sender.is_closed() {
                found = Some(connection);
                break;
            }
        }
        if idle.is_empty() {
            pool.by_host.remove(key);
        }
        pool.total -= dropped;
        found
    }

    fn put_idle(&self, key: &Arc<str>, mut connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        let Ok(mut pool) = self.pool.lock() else {
            return;
        };
        if pool.total >= MAX_IDLE_CONNECTIONS {
            // Make room from connections that have idled out, whatever their host.
            let max_idle = Duration::from_millis(IDLE_CONNECTION_MS);
            let mut kept = 0;
            pool.by_host.retain(|_, idle| {
                idle.retain(|c| c.idle_since.elapsed() < max_idle && !c.sender.is_closed());
                kept += idle.len();
                !idle.is_empty()
            });
            pool.total = kept;
            if pool.total >= MAX_IDLE_CONNECTIONS {
                return;
            }
        }
        let idle = pool.by_host.entry(key.clone()).or_default();
        if idle.len() >= self.max_idle_per_host {
            return;
        }
        connection.idle_since = Instant::now();
        idle.push(connection);
        pool.total += 1;
    }

    /// Resolves the host and vets every address; one forbidden address refuses the target,
    /// so a name that mixes public and private answers cannot be used to probe inside.
    async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ErrorClass> {
        let addresses: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => tokio::net::lookup_host((target.host.as_str(), target.port))
                .await
                .map_err(|_| ErrorClass::Dns)?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(ErrorClass::Dns);
        }
        if !self.allow_private_targets && addresses.iter().any(|a| is_forbidden_target(a.ip())) {
            return Err(ErrorClass::BlockedTarget);
        }
        Ok(addresses)
    }

    /// Dials the vetted addresses in turn until one accepts, all within the connect timeout.
    async fn connect(
        &self,
        addresses: &[SocketAddr],
        deadline: Instant,
    ) -> Result<TcpStream, ErrorClass> {
        let connect_deadline = deadline.min(Instant::now() + self.connect_timeout);
        for address in addresses.iter().take(MAX_ADDRESSES_DIALLED) {
            match timeout_at(connect_deadline, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    // Requests are small and sent whole; do not wait for more to batch.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(_)) => continue,
                Err(_) => break,
            }
        }
        Err(ErrorClass::Connect)
    }
}

/// Starts HTTP/1 on a connected stream. The driver task is aborted when the connection is
/// dropped, so an abandoned attempt or a hanging target keeps nothing alive.
async fn handshake<S>(io: S) -> Result<Connection, ErrorClass>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The read buffer is bounded too, so neither headers nor one body chunk can make a
    // hostile target's answer take more than this much memory.
    let (sender, driver) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_BODY_BYTES)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| ErrorClass::Protocol)?;
    let driver = tokio::spawn(async move {
        // A failed connection shows up on the request side; nothing to do here.
        let _ = driver.await;
    });
    Ok(Connection {
        sender,
        _driver: AbortOnDrop(driver),
        idle_since: Instant::now(),
    })
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn build_request(
    target: &Target,
    job: &DeliveryJob,
    now_secs: u64,
) -> Result<Request<Full<Bytes>>, ErrorClass> {
    let path = target.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = match job.method {
        HttpMethod::Get => Bytes::new(),
        HttpMethod::Post => Bytes::from(job.body.clone().unwrap_or_default()),
    };
    let method = match job.method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
    };
    let id = HeaderValue::from_str(&job.id).map_err(|_| ErrorClass::InvalidUrl)?;
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, target.authority.clone())
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(HeaderName::from_static("idempotency-key"), id.clone());
    if job.method == HttpMethod::Post {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if let Some(secret) = job.webhook_secret.as_deref().filter(|s| !s.is_empty()) {
        let signature = sign(secret, &job.id, now_secs, &body)?;
        builder = builder
            .header(HeaderName::from_static("webhook-id"), id)
            .header(HeaderName::from_static("webhook-timestamp"), now_secs)
            .header(HeaderName::from_static("webhook-signature"), signature);
    }
    builder
        .body(Full::new(body))
        .map_err(|_| ErrorClass::InvalidUrl)
}

/// The Standard Webhooks signature: `v1,` + base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}`, keyed with the base64-decoded secret after `whsec_`.
pub fn sign(
    secret: &str,
    id: &str,
    timestamp_secs: u64,
    body: &[u8],
) -> Result<String, ErrorClass> {
    use hmac::{Hmac, Mac};
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ErrorClass::InvalidSecret)?;
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|_| ErrorClass::InvalidSecret)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    ))
}

/// rustls with the `ring` provider and the webpki roots: no platform certificate store, so
/// behaviour is the same on every machine.
fn tls_connector() -> Option<tokio_rustls::TlsConnector> {
    use hyper_rustls::ConfigBuilderExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder,
        Err(e) => {
            tracing::error!(error = %e, "dispatcher: cannot set up TLS; https deliveries will fail");
            return None;
        }
    };
    let mut config = builder.with_webpki_roots().with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
