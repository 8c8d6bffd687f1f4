//! Building answers. Every answer carries `Cache-Control: no-store`: tracking answers must
//! reach us on every hit, and admin data must not sit in shared caches.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};
use serde::Serialize;

pub type Answer = Response<Full<Bytes>>;

// Header names and values are constants: `from_static` validates its text each time it
// runs, and as a `const` it runs once, at compile time.
pub const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
pub const JSON: HeaderValue = HeaderValue::from_static("application/json");
pub const CSV: HeaderValue = HeaderValue::from_static("text/csv; charset=utf-8");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

pub fn bytes(status: StatusCode, content_type: HeaderValue, body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    answer
}

pub fn text(status: StatusCode, body: impl Into<String>) -> Answer {
    let mut body = body.into();
    body.push('\n');
    bytes(status, TEXT, body)
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    match serde_json::to_vec(value) {
        Ok(body) => bytes(status, JSON, body),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode: {e}"),
        ),
    }
}

/// `{"error": message}` (admin API errors).
pub fn error(status: StatusCode, message: &str) -> Answer {
    json_error(status, message, None)
}

/// `{"error": message, "field": field}`: a 400 that names the bad field.
pub fn json_error(status: StatusCode, message: &str, field: Option<&str>) -> Answer {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), message.into());
    if let Some(field) = field {
        body.insert("field".into(), field.into());
    }
    match serde_json::to_vec(&body) {
        Ok(bytes_) => bytes(status, JSON, bytes_),
        Err(_) => bytes(status, JSON, &b"{}"[..]),
    }
}

/// A 302 to `location`; `None` when the URL cannot be a header value (control bytes).
/// The header takes the URL's buffer as it is, without a copy.
pub fn redirect(location: String) -> Option<Answer> {
    let value = HeaderValue::from_maybe_shared(Bytes::from(location)).ok()?;
    let mut answer = bytes(StatusCode::FOUND, TEXT, Bytes::new());
    answer.headers_mut().insert(LOCATION, value);
    Some(answer)
}

/// Adds a header whose value is built from data, taking its buffer without a copy; a
/// value that cannot be a header is dropped (our own values never contain control bytes).
pub fn with_header(mut answer: Answer, name: HeaderName, value: String) -> Answer {
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
        answer.headers_mut().append(name, value);
    }
    answer
}

pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
