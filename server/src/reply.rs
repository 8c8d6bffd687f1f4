//! Building answers. Every answer carries `Cache-Control: no-store`: tracking answers must
//! reach us on every hit, and admin data must not sit in shared caches.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};
use serde::Serialize;

pub type Answer = Response<Full<Bytes>>;

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";
pub const CSV: &str = "text/csv; charset=utf-8";

pub fn bytes(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
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
pub fn redirect(location: &str) -> Option<Answer> {
    let value = HeaderValue::from_str(location).ok()?;
    let mut answer = bytes(StatusCode::FOUND, TEXT, Bytes::new());
    answer.headers_mut().insert(LOCATION, value);
    Some(answer)
}

/// Adds a header whose value is built from data; a value that cannot be a header is
/// dropped (our own values never contain control bytes).
pub fn with_header(mut answer: Answer, name: HeaderName, value: &str) -> Answer {
    if let Ok(value) = HeaderValue::from_str(value) {
        answer.headers_mut().append(name, value);
    }
    answer
}

pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
