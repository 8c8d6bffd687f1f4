//! Building answers. Every answer carries `Cache-Control: no-store`: tracking answers must
//! reach us on every hit, and admin data must not sit in shared caches.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE,
};
use hyper::{Response, StatusCode};
use serde::Serialize;
use std::sync::LazyLock;

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
    insert_common(answer.headers_mut(), content_type);
    answer
}

/// The headers every answer of one content type carries.
fn insert_common(headers: &mut HeaderMap, content_type: HeaderValue) {
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF);
}

/// The headers [`bytes`] gives an answer of `content_type`, built once by a caller that
/// answers with that type on every hit (impression and pixel gifs, s2s JSON) and handed
/// to [`with_headers`]: cloning three entries costs a fraction of hashing and inserting
/// them again.
pub fn common_headers(content_type: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    insert_common(&mut headers, content_type);
    headers
}

/// [`bytes`] with headers built once by [`common_headers`]. Inlined: a few lines whose
/// answer would otherwise be copied out of the call.
#[inline(always)]
pub fn with_headers(status: StatusCode, headers: &HeaderMap, body: impl Into<Bytes>) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers.clone();
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
///
/// A redirect has no body, so no `Content-Type` and no `X-Content-Type-Options` (which
/// only tells a browser not to second-guess a body's type): two headers fewer for hyper
/// to write on every click (see [`REDIRECT_WITH_COOKIE`]).
pub fn redirect(location: String) -> Option<Answer> {
    let value = HeaderValue::from_maybe_shared(Bytes::from(location)).ok()?;
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = StatusCode::FOUND;
    let headers = answer.headers_mut();
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(LOCATION, value);
    Some(answer)
}

/// The headers of a redirect that sets a cookie (a click's usual answer), built once with
/// placeholder `Location` and `Set-Cookie` values that [`redirect_with_cookie`] replaces
/// in place: the entries keep the order [`redirect`] and [`with_header`] give them.
static REDIRECT_WITH_COOKIE: LazyLock<HeaderMap> = LazyLock::new(|| {
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert(LOCATION, HeaderValue::from_static("/"));
    headers.insert(SET_COOKIE, HeaderValue::from_static("-"));
    headers
});

/// `with_header(redirect(location)?, SET_COOKIE, cookie)`, from headers built once.
///
/// The placeholders are replaced where they stand, found by walking the three entries:
/// `insert` would hash each name and probe the table, which costs more than the walk.
pub fn redirect_with_cookie(location: String, cookie: String) -> Option<Answer> {
    let location = HeaderValue::from_maybe_shared(Bytes::from(location)).ok()?;
    let cookie = HeaderValue::from_maybe_shared(Bytes::from(cookie));
    let mut answer = with_headers(StatusCode::FOUND, &REDIRECT_WITH_COOKIE, Bytes::new());
    let headers = answer.headers_mut();
    let cookie = match cookie {
        Ok(cookie) => cookie,
        // `with_header` leaves out a value that is not a valid header value.
        Err(_) => {
            headers.remove(SET_COOKIE);
            headers.insert(LOCATION, location);
            return Some(answer);
        }
    };
    let (mut location, mut cookie) = (Some(location), Some(cookie));
    for (name, value) in headers.iter_mut() {
        let new = if name == LOCATION {
            location.take()
        } else if name == SET_COOKIE {
            cookie.take()
        } else {
            None
        };
        if let Some(new) = new {
            *value = new;
        }
    }
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
