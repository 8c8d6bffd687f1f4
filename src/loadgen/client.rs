//! A thin HTTP/1.1 client over hyper-util's pooled client: plain HTTP only (the load
//! generator talks to a tracker on the same network), every answer read whole but bounded.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::rt::TokioExecutor;
use std::time::{Duration, Instant};

/// Longest answer body read. Tracking answers are tiny; admin views (a click with its
/// conversions and audits, a report) stay well under this.
const MAX_BODY_BYTES: usize = 4 << 20;

/// Longest wait for one answer: clicktrail's own slowest path (header read timeout) is
/// 10 s, so an answer later than this means the server is stuck, not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub set_cookies: Vec<String>,
    pub body: Bytes,
    pub latency_us: u64,
}

/// Why a request got no answer. The binary reports these as text (no library crate here,
/// so no thiserror), and counts them per route.
#[derive(Debug)]
pub enum ClientError {
    NotHttp(String),
    BadUrl { url: String, reason: String },
    Transport(String),
    Timeout(Duration),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotHttp(url) => {
                write!(f, "only plain http:// targets are supported, got {url:?}")
            }
            Self::BadUrl { url, reason } => write!(f, "bad request URL {url:?}: {reason}"),
            Self::Transport(reason) => f.write_str(reason),
            Self::Timeout(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Clone)]
pub struct Client {
    inner: PooledClient<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Client {
    /// A client for `base` (`http://host:port`), keeping up to `connections` idle
    /// connections so every worker reuses its own.
    pub fn new(base: &str, connections: usize) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(ClientError::NotHttp(base.to_string()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let inner = PooledClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(connections)
            .build(connector);
        Ok(Self {
            inner,
            base: base.to_string(),
        })
    }

    /// Sends `method path_and_query` with `headers` and an optional form body.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(HeaderName, String)],
        form_body: Option<String>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut builder = Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|e| ClientError::BadUrl {
                url: url.clone(),
                reason: format!("header {name}: {e}"),
            })?;
            builder = builder.header(name, value);
        }
        let body = match form_body {
            Some(form) => {
                builder = builder.header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
                Full::new(Bytes::from(form))
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body).map_err(|e| ClientError::BadUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;

        let started = Instant::now();
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| ClientError::Transport(error_chain(&e)))?;
            let status = response.status();
            let set_cookies = response
                .headers()
                .get_all(hyper::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("reading the body: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, set_cookies, body))
        };
        let (status, set_cookies, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))??;
        Ok(Answer {
            status,
            set_cookies,
            body,
            latency_us: started.elapsed().as_micros() as u64,
        })
    }
}

/// hyper-util's errors say "client error (Connect)" and keep the cause in `source()`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The click ID in a `Set-Cookie: ct_<campaign>=<id>; ...` among `set_cookies`.
pub fn click_cookie(set_cookies: &[String], campaign_id: u32) -> Option<String> {
    let prefix = format!("ct_{campaign_id}=");
    set_cookies.iter().find_map(|cookie| {
        let value = cookie.trim_start().strip_prefix(&prefix)?;
        let id = value.split(';').next()?.trim();
        (!id.is_empty()).then(|| id.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cookies: &[&str], campaign: u32, expected: Option<&str>) {
        let cookies: Vec<String> = cookies.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            click_cookie(&cookies, campaign).as_deref(),
            expected,
            "{cookies:?}"
        );
    }

    #[test]
    fn click_cookie_is_found_by_campaign() {
        check(&[], 1, None);
        check(&["ct_1=abc; Max-Age=10; Path=/; HttpOnly"], 1, Some("abc"));
        check(&["ct_1=abc"], 1, Some("abc"));
        check(&["ct_12=abc; Path=/"], 1, None);
        check(&["other=1", "ct_2=xyz; Path=/"], 2, Some("xyz"));
        check(&["ct_1=; Path=/"], 1, None);
    }

    #[test]
    fn only_plain_http_targets() {
        assert!(matches!(
            Client::new("https://example.com", 1),
            Err(ClientError::NotHttp(_))
        ));
        assert!(Client::new("http://127.0.0.1:1/", 1).is_ok());
    }
}
