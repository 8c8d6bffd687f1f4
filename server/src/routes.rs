//! Request routing and the public tracking surface (SPEC 2): clicks, impressions and
//! conversion pixels, plus health, metrics and the demo pages. The admin API is in
//! [`crate::admin`].

use crate::body::{self, BodyError};
use crate::client_ip::client_ip;
use crate::config::Config;
use crate::cookies;
use crate::limits::{MAX_HEADER_BYTES, MAX_URL_BYTES};
use crate::logging::Escaped;
use crate::metrics;
use crate::params::{Body, Invalid, ParamError, Params};
use crate::pixels;
use crate::reply::{self, Answer};
use bytes::Bytes;
use engine::fields::{self, Field};
use engine::{
    ClickOutcome, ClickRequest, ConversionOutcome, ConversionRequest, Engine, ImpressionRequest,
    OutcomeStatus, PixelType, Visitor,
};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_LANGUAGE, ALLOW, AUTHORIZATION, CONNECTION,
    CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT,
};
use hyper::{Method, Request, StatusCode};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

/// What one server instance shares between its connections.
pub struct App {
    pub engine: Engine,
    pub config: Arc<Config>,
    /// Set when shutdown begins: `/readyz` fails so load balancers stop sending traffic.
    pub draining: AtomicBool,
    /// [`Config::public_url_is_https`], read once: every tracked click's cookie asks.
    secure_cookies: bool,
}

impl App {
    pub fn new(engine: Engine, config: Arc<Config>) -> Arc<App> {
        Arc::new(App {
            engine,
            secure_cookies: config.public_url_is_https(),
            config,
            draining: AtomicBool::new(false),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// Which routes a listener serves: everything, or the public and admin halves when
/// `admin.listen` puts the admin API and metrics on a listener of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    All,
    Public,
    Admin,
}

impl Surface {
    fn public(self) -> bool {
        self != Surface::Admin
    }
    fn admin(self) -> bool {
        self != Surface::Public
    }
}

/// What a request's path names: what [`handle`] routes on, and the metrics label. A
/// fixed set, so unknown paths cannot grow the label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Click,
    Impression,
    Pixel,
    Healthz,
    Readyz,
    Metrics,
    /// `/api/...`. (`/api` alone is labelled `other` but served by the admin API too.)
    Admin,
    /// `/` and `/demo/...`.
    Demo,
    Other,
}

impl Route {
    /// How many routes there are: the size of a table indexed by [`Route::index`].
    pub const COUNT: usize = 9;

    pub fn of(path: &str) -> Route {
        match path {
            "/click.track" => Route::Click,
            "/impression.track" => Route::Impression,
            "/pixel.track" => Route::Pixel,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            p if p.starts_with("/api/") => Route::Admin,
            p if p.starts_with("/demo/") || p == "/" => Route::Demo,
            _ => Route::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Click => "click",
            Route::Impression => "impression",
            Route::Pixel => "pixel",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Admin => "admin",
            Route::Demo => "demo",
            Route::Other => "other",
        }
    }

    /// A dense index in `0..COUNT`.
    pub fn index(self) -> usize {
        self as usize
    }
}

const _: () = assert!(Route::Other as usize + 1 == Route::COUNT);

/// Answers one request. Never panics on input; every failure is an answer.
pub async fn handle<B>(app: &App, surface: Surface, request: Request<B>, peer: SocketAddr) -> Answer
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Ok(answer) = serve(app, surface, request, peer).await;
    answer
}

/// [`handle`] as hyper's service calls it: owning its handle on the app and answering a
/// `Result`, so the connection's service needs no `async` block around it.
///
/// Clicks and impressions are read here, when hyper calls the service, and the request
/// is dropped before the future exists: hyper reads ahead on the connection before it
/// polls the future, and while the request lives its head holds hyper's read buffer, so
/// hyper would allocate another one for every request.
///
/// The other routes are matched in the future itself rather than in an `async fn` of
/// their own: each nested future moves the request in and the answer out once more.
// Not an `async fn`: the synchronous part must run before the future is returned.
#[allow(clippy::manual_async_fn)]
pub fn serve<A, B>(
    app: A,
    surface: Surface,
    request: Request<B>,
    peer: SocketAddr,
) -> impl Future<Output = Result<Answer, Infallible>>
where
    A: Deref<Target = App>,
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let route = Route::of(request.uri().path());
    // Only copied when someone reads debug logs: the hot path does not allocate for it.
    // The path only: query strings carry postback tokens and visitors' data.
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (request.method().clone(), request.uri().path().to_string()));
    let in_flight = metrics::InFlight::start();
    let work = prepare(&app, surface, route, request, peer);
    async move {
        let app = &*app;
        let answer = match work {
            Work::Answer(answer) => answer,
            Work::Click(ask) => click(app, ask).await,
            Work::Impression(impression) => self::impression(app, impression).await,
            Work::Request(request) => match route {
                Route::Pixel if surface.public() => match *request.method() {
                    Method::GET | Method::POST => pixel(app, request, peer).await,
                    _ => not_allowed("GET, POST"),
                },
                Route::Healthz => reply::text(StatusCode::OK, "ok"),
                Route::Readyz => readyz(app),
                Route::Metrics if surface.admin() => match *request.method() {
                    Method::GET => reply::bytes(
                        StatusCode::OK,
                        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                        metrics::render(),
                    ),
                    _ => not_allowed("GET"),
                },
                Route::Admin | Route::Other
                    if surface.admin()
                        && (route == Route::Admin || request.uri().path() == "/api") =>
                {
                    crate::admin::handle(app, request).await
                }
                Route::Demo if app.config.embedded_defaults && surface.public() => {
                    demo_page(app, &request)
                }
                _ => reply::text(StatusCode::NOT_FOUND, "not found"),
            },
        };
        drop(in_flight);
        let elapsed = started.elapsed();
        metrics::record_request(route, answer.status().as_u16(), elapsed);
        if let Some((method, target)) = logged {
            tracing::debug!(
                %method,
                path = %Escaped(&target),
                status = answer.status().as_u16(),
                elapsed_us = elapsed.as_micros() as u64,
                %peer,
                "request"
            );
        }
        Ok(answer)
    }
}

/// What is left of a request once [`prepare`] has read what it could without waiting.
enum Work<B> {
    /// Answered already: over a bound, a method not allowed, a link that cannot be read.
    Answer(Answer),
    /// A click for the engine.
    Click(ClickAsk),
    /// An impression for the engine.
    Impression(ImpressionRequest),
    /// Any other route, matched by [`serve`]'s future.
    Request(Request<B>),
}

/// Checks the bounds and reads clicks and impressions; every other request is handed on
/// whole. Clicks and impressions drop the request here (see [`serve`]).
fn prepare<B>(
    app: &App,
    surface: Surface,
    route: Route,
    request: Request<B>,
    peer: SocketAddr,
) -> Work<B> {
    let found = match measure(&request) {
        Ok(found) => found,
        Err(refused) => return Work::Answer(refused),
    };
    match route {
        Route::Click if surface.public() => match *request.method() {
            Method::GET => match click_ask(app, &request, &found, peer) {
                Ok(ask) => Work::Click(ask),
                Err(answer) => Work::Answer(answer),
            },
            _ => Work::Answer(not_allowed("GET")),
        },
        Route::Impression if surface.public() => match *request.method() {
            Method::GET => match impression_ask(app, &request, &found, peer) {
                Some(impression) => Work::Impression(impression),
                None => Work::Answer(gif()),
            },
            _ => Work::Answer(not_allowed("GET")),
        },
        _ => Work::Request(request),
    }
}

/// Checks a request's target and headers against their bounds; on the way, one walk over
/// the headers finds what the tracking routes read. `Err` is the answer to a request over
/// a bound.
// The answer is the error, as in `click_ask`.
#[allow(clippy::result_large_err)]
fn measure<B>(request: &Request<B>) -> Result<TrackingHeaders<'_>, Answer> {
    let target_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target_bytes > MAX_URL_BYTES {
        return Err(closing(reply::text(
            StatusCode::URI_TOO_LONG,
            "URL too long",
        )));
    }
    let mut found = TrackingHeaders::default();
    let mut header_bytes = 0;
    for (name, value) in request.headers() {
        header_bytes += name.as_str().len() + value.len() + 4;
        found.note(name, value);
    }
    if header_bytes > MAX_HEADER_BYTES {
        return Err(closing(reply::text(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        )));
    }
    Ok(found)
}

/// Asks the client to close the connection: after a refused head or body, what follows on
/// the connection may be the rest of it.
pub fn closing(mut answer: Answer) -> Answer {
    answer
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    answer
}

pub fn not_allowed(allow: &'static str) -> Answer {
    let mut answer = reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    answer
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    answer
}

/// Maps a body read failure to its answer (413 too large, 408 too slow, 400 broken).
pub fn body_error(e: &BodyError) -> Answer {
    let status = match e {
        BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
        BodyError::Aborted => StatusCode::BAD_REQUEST,
    };
    closing(reply::text(status, e.to_string()))
}

fn readyz(app: &App) -> Answer {
    if app.draining.load(Ordering::SeqCst) {
        return reply::text(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    let health = app.engine.health();
    if health.ready {
        reply::text(StatusCode::OK, "ready")
    } else {
        let why = health.fault.unwrap_or_else(|| "not ready".to_string());
        reply::text(StatusCode::SERVICE_UNAVAILABLE, why)
    }
}

/// The text of the first `name` header ([`value_str`]).
fn header_str(headers: &HeaderMap, name: HeaderName) -> &str {
    value_str(headers.get(name))
}

/// ASCII case-insensitive prefix test (media types), without lower-casing a copy.
fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The request headers the tracking routes read, found in one walk over the headers
/// (which [`measure`] makes anyway): a hashed lookup per name costs
/// about as much as walking a request's few headers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct TrackingHeaders<'a> {
    /// The first `User-Agent`, as `HeaderMap::get` answers.
    user_agent: Option<&'a HeaderValue>,
    /// The first `Accept-Language`.
    accept_language: Option<&'a HeaderValue>,
    /// Whether there is a `Cookie` header: without one there is no cookie to look for.
    cookie: bool,
}

impl<'a> TrackingHeaders<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut found = TrackingHeaders::default();
        for (name, value) in headers {
            found.note(name, value);
        }
        found
    }

    /// Takes one header, in the order `HeaderMap`'s iterator gives them.
    fn note(&mut self, name: &HeaderName, value: &'a HeaderValue) {
        if *name == USER_AGENT {
            self.user_agent.get_or_insert(value);
        } else if *name == ACCEPT_LANGUAGE {
            self.accept_language.get_or_insert(value);
        } else if *name == COOKIE {
            self.cookie = true;
        }
    }
}

/// A header's text, or "" when it is absent or not visible ASCII.
fn value_str(value: Option<&HeaderValue>) -> &str {
    value.and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn visitor(app: &App, found: &TrackingHeaders, headers: &HeaderMap, peer: SocketAddr) -> Visitor {
    Visitor {
        ip: client_ip(peer.ip(), headers, &app.config.server.trusted_proxies),
        user_agent: value_str(found.user_agent).to_string(),
        accept_language: value_str(found.accept_language).to_string(),
    }
}

// ---- clicks ---------------------------------------------------------------------------

/// What a click request asks for, read from its parameters and headers.
struct ClickAsk {
    click: ClickRequest,
    set_cookie: bool,
    redirect: bool,
}

/// Reads a click request; `Err` is the answer to a link that cannot be followed. Called
/// by [`prepare`], before any future exists: the parameters never live in one (hyper
/// moves futures around by value), and the request can be dropped before the engine is
/// awaited.
// The answer is the error: no larger than the request it replaces, and never boxed on a
// path that answers anyway.
#[allow(clippy::result_large_err)]
fn click_ask<B>(
    app: &App,
    request: &Request<B>,
    found: &TrackingHeaders,
    peer: SocketAddr,
) -> Result<ClickAsk, Answer> {
    let params = match Params::parse(request.uri().query(), None) {
        Ok(params) => params,
        Err(e) => return Err(reply::text(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let (campaign_id, affiliate_id) =
        match (params.id(Field::CampaignId), params.id(Field::AffiliateId)) {
            (Ok(Some(c)), Ok(Some(a))) => (c, a),
            _ => return Err(fallback(app, "malformed_link")),
        };
    let source = match params.source_with(campaign_id, affiliate_id) {
        Ok(source) => source,
        Err(e) => return Err(reply::text(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let headers = request.headers();
    Ok(ClickAsk {
        click: ClickRequest {
            source,
            visitor: visitor(app, found, headers, peer),
            cookie_click_id: found
                .cookie
                .then(|| cookies::click_cookie(headers, campaign_id))
                .flatten(),
            track: !params.flag_off(Field::TrackFlag),
        },
        set_cookie: !params.flag_off(Field::CookieFlag),
        redirect: !params.flag_off(Field::RedirectFlag),
    })
}

async fn click(app: &App, ask: ClickAsk) -> Answer {
    let ClickAsk {
        click,
        set_cookie,
        redirect,
    } = ask;
    let campaign_id = click.source.campaign_id;
    match app.engine.click(click).await {
        Err(rejection) => fallback(app, rejection.as_str()),
        Ok(ClickOutcome::Tracked {
            click_id,
            location,
            cookie_life_secs,
            ..
        }) => {
            let cookie = set_cookie.then(|| {
                cookies::set_cookie(campaign_id, &click_id, cookie_life_secs, app.secure_cookies)
            });
            let cookie = match cookie {
                // The usual answer, from headers built once.
                Some(cookie) if redirect => {
                    return reply::redirect_with_cookie(location, cookie)
                        .unwrap_or_else(|| fallback(app, "bad_landing_url"));
                }
                cookie => cookie,
            };
            let answer = if redirect {
                match reply::redirect(location) {
                    Some(answer) => answer,
                    None => return fallback(app, "bad_landing_url"),
                }
            } else {
                reply::bytes(StatusCode::OK, reply::TEXT, click_id)
            };
            match cookie {
                Some(cookie) => reply::with_header(answer, SET_COOKIE, cookie),
                None => answer,
            }
        }
        Ok(ClickOutcome::Untracked { location, degraded }) => {
            if degraded {
                metrics::click_rejected("untracked");
            }
            if !redirect {
                return reply::bytes(StatusCode::OK, reply::TEXT, Bytes::new());
            }
            reply::redirect(location).unwrap_or_else(|| fallback(app, "bad_landing_url"))
        }
    }
}

/// A link that cannot be followed goes to `fallback_url` exactly, else 404 with the reason;
/// either way the reason is counted.
fn fallback(app: &App, reason: &'static str) -> Answer {
    metrics::click_rejected(reason);
    let url = &app.config.server.fallback_url;
    if !url.is_empty() {
        if let Some(answer) = reply::redirect(url.clone()) {
            return answer;
        }
    }
    reply::text(StatusCode::NOT_FOUND, reason)
}

// ---- impressions ----------------------------------------------------------------------

/// The label of impression errors in [`metrics::pixel_error`].
const IMPRESSION_ROUTE: &str = "impression";

/// Reads an impression request; `None` when it is counted as an error already. Called by
/// [`prepare`], as [`click_ask`].
fn impression_ask<B>(
    app: &App,
    request: &Request<B>,
    found: &TrackingHeaders,
    peer: SocketAddr,
) -> Option<ImpressionRequest> {
    let params = match Params::parse(request.uri().query(), None) {
        Ok(params) => params,
        Err(e) => {
            metrics::pixel_error(IMPRESSION_ROUTE, e.reason());
            return None;
        }
    };
    let source = match params.source() {
        Ok(source) if source.campaign_id != 0 && source.affiliate_id != 0 => source,
        _ => {
            metrics::pixel_error(IMPRESSION_ROUTE, "malformed_link");
            return None;
        }
    };
    Some(ImpressionRequest {
        source,
        visitor: visitor(app, found, request.headers(), peer),
    })
}

async fn impression(app: &App, impression: ImpressionRequest) -> Answer {
    if let Err(rejection) = app.engine.impression(impression).await {
        metrics::pixel_error(IMPRESSION_ROUTE, rejection.as_str());
    }
    gif()
}

/// The headers of every gif answer, built once (see [`reply::common_headers`]).
static GIF_HEADERS: LazyLock<HeaderMap> =
    LazyLock::new(|| reply::common_headers(pixels::GIF_CONTENT_TYPE));

/// The headers of every s2s JSON answer, built once.
static JSON_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| reply::common_headers(reply::JSON));

fn gif() -> Answer {
    reply::with_headers(StatusCode::OK, &GIF_HEADERS, &pixels::GIF[..])
}

// ---- conversions ----------------------------------------------------------------------

async fn pixel<B>(app: &App, request: Request<B>, peer: SocketAddr) -> Answer
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = request.into_parts();
    let bytes = if parts.method == Method::POST {
        match body::read(&parts.headers, body).await {
            Ok(bytes) => Some(bytes),
            Err(e) => return body_error(&e),
        }
    } else {
        None
    };
    let (pixel_type, conversion) = match pixel_ask(app, &parts, bytes.as_deref(), peer) {
        Ok(ask) => ask,
        Err(answer) => return answer,
    };
    let outcome = app.engine.convert(conversion).await;
    if outcome.status != OutcomeStatus::Approved && outcome.status != OutcomeStatus::Pending {
        tracing::debug!(
            status = ?outcome.status,
            reason = %Escaped(outcome.reason.as_deref().unwrap_or("")),
            "conversion not counted"
        );
    }
    conversion_answer(pixel_type, &outcome)
}

/// Reads a conversion pixel or post: its type and the engine's request, or the answer to
/// a request that cannot be read. Not `async`, so the parameters never live in
/// [`pixel`]'s future.
// As for `click_ask`: the error is the answer.
#[allow(clippy::result_large_err)]
fn pixel_ask(
    app: &App,
    parts: &hyper::http::request::Parts,
    bytes: Option<&[u8]>,
    peer: SocketAddr,
) -> Result<(PixelType, ConversionRequest), Answer> {
    const ROUTE: &str = "pixel";
    let query = parts.uri.query();
    let content_type = header_str(&parts.headers, CONTENT_TYPE);
    let body = match bytes {
        Some([]) => Ok(None),
        Some(b) if starts_with_ignore_case(content_type, "application/json") => {
            Ok(Some(Body::Json(b)))
        }
        Some(b)
            if content_type.is_empty()
                || starts_with_ignore_case(content_type, "application/x-www-form-urlencoded") =>
        {
            Ok(Some(Body::Form(b)))
        }
        Some(_) => Err(ParamError::ContentType),
        None => Ok(None),
    };
    let params = body.and_then(|body| Params::parse(query, body));
    let params = match params {
        Ok(params) => params,
        Err(e) => {
            let pixel_type = sniff_pixel_type(query, bytes);
            if pixel_type.is_browser() {
                metrics::pixel_error(ROUTE, e.reason());
            }
            let outcome = ConversionOutcome::refused(OutcomeStatus::Invalid, e.to_string());
            return Err(conversion_answer(pixel_type, &outcome));
        }
    };
    let pixel_type = match params.get(Field::PixelType).filter(|p| !p.value.is_empty()) {
        None => PixelType::Img,
        Some(p) => match PixelType::parse(&p.value) {
            Some(t) => t,
            None => {
                let outcome = ConversionOutcome::refused(
                    OutcomeStatus::Invalid,
                    format!("{}: expected img, iframe, js or s2s", p.name),
                );
                return Err(reply::json(StatusCode::BAD_REQUEST, &outcome));
            }
        },
    };
    let conversion = match conversion_request(app, &params, pixel_type, &parts.headers, peer) {
        Ok(conversion) => conversion,
        Err(invalid) => {
            if pixel_type.is_browser() {
                metrics::pixel_error(ROUTE, "invalid_field");
            }
            let outcome = ConversionOutcome::refused(OutcomeStatus::Invalid, invalid.to_string());
            return Err(conversion_answer(pixel_type, &outcome));
        }
    };
    Ok((pixel_type, conversion))
}

fn conversion_request(
    app: &App,
    params: &Params,
    pixel_type: PixelType,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<ConversionRequest, Invalid> {
    let status = match params.get(Field::Status).filter(|p| !p.value.is_empty()) {
        None => engine::ConversionStatus::Approved,
        Some(p) => engine::ConversionStatus::parse(&p.value).ok_or_else(|| Invalid {
            name: p.name.to_string(),
            reason: "expected approved, pending or rejected",
        })?,
    };
    // Any value goes to the engine: a click ID we never minted matches nothing, and the
    // engine answers unknown_click.
    let click_id = params.str(Field::ClickId).map(str::to_string);
    let token = params
        .str(Field::Token)
        .map(str::to_string)
        .or_else(|| bearer(headers).map(str::to_string));
    Ok(ConversionRequest {
        pixel_type,
        click_id,
        source: params.source()?,
        cookies: cookies::tracking_cookies(headers),
        visitor: visitor(app, &TrackingHeaders::of(headers), headers, peer),
        event: params.str(Field::Event).unwrap_or("sale").to_string(),
        merchant_ref: params.str(Field::MerchantRef).map(str::to_string),
        payout_override: params.amount(Field::Payout)?,
        revenue_override: params.amount(Field::Revenue)?,
        currency_override: params.str(Field::Currency).map(str::to_string),
        total_sales: params.amount(Field::TotalSales)?,
        status,
        token,
    })
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The answer for each pixel type: browsers always get something harmless of the kind
/// they asked for (a gif, a page, a script), server posts the JSON outcome and its status.
fn conversion_answer(pixel_type: PixelType, outcome: &ConversionOutcome) -> Answer {
    match pixel_type {
        PixelType::Img => gif(),
        PixelType::Iframe => reply::bytes(
            StatusCode::OK,
            pixels::HTML_CONTENT_TYPE,
            pixels::iframe_page(&outcome.browser_pixels),
        ),
        PixelType::Js => reply::bytes(
            StatusCode::OK,
            pixels::JS_CONTENT_TYPE,
            pixels::script(&outcome.browser_pixels),
        ),
        PixelType::S2s => {
            let mut answer = reply::with_headers(
                reply::status(outcome.status.http_status()),
                &JSON_HEADERS,
                crate::outcome::json(outcome),
            );
            if outcome.status == OutcomeStatus::Unavailable {
                answer
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            answer
        }
    }
}

/// The pixel type of a request whose parameters did not parse, read leniently so the
/// answer has the right kind: a browser still gets its harmless default.
fn sniff_pixel_type(query: Option<&str>, body: Option<&[u8]>) -> PixelType {
    let is_type = |name: &str| fields::lookup(name) == Some(Field::PixelType);
    let mut found = PixelType::Img;
    if let Some(query) = query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if let Some(t) = is_type(&name).then(|| PixelType::parse(&value)).flatten() {
                found = t;
            }
        }
    }
    let Some(body) = body else { return found };
    if let Ok(object) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        for (name, value) in &object {
            if let Some(t) = value
                .as_str()
                .filter(|_| is_type(name))
                .and_then(PixelType::parse)
            {
                found = t;
            }
        }
        return found;
    }
    for (name, value) in form_urlencoded::parse(body) {
        if let Some(t) = is_type(&name).then(|| PixelType::parse(&value)).flatten() {
            found = t;
        }
    }
    found
}

// ---- demo -----------------------------------------------------------------------------

fn demo_page<B>(app: &App, request: &Request<B>) -> Answer {
    if request.method() != Method::GET {
        return not_allowed("GET");
    }
    let html = match request.uri().path() {
        "/" => crate::demo::index(&app.config.server.public_url),
        "/demo/landing" => {
            let click_id =
                crate::params::decode_pairs(request.uri().query().unwrap_or("").as_bytes())
                    .ok()
                    .and_then(|pairs| pairs.into_iter().find(|(n, _)| n == "click_id"))
                    .map(|(_, v)| v)
                    .unwrap_or_default();
            crate::demo::landing(&click_id)
        }
        "/demo/checkout" => crate::demo::checkout(),
        "/demo/report" => crate::demo::report(),
        _ => return reply::text(StatusCode::NOT_FOUND, "not found"),
    };
    reply::bytes(StatusCode::OK, pixels::HTML_CONTENT_TYPE, html)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redirect with a cookie from headers made once is the redirect `reply::redirect`
    /// and `reply::with_header` build, for good and bad locations and cookies.
    #[test]
    fn redirect_with_cookie_matches_redirect_then_header() {
        let headers = |a: &Answer| {
            a.headers()
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        let locations = ["https://shop.example/?ref=abc", "", "bad\nlocation"];
        let cookies = [
            "ct_1=abc; Max-Age=60; Path=/; HttpOnly; SameSite=Lax",
            "",
            "bad\0",
        ];
        for location in locations {
            for cookie in cookies {
                let want = reply::redirect(location.to_string())
                    .map(|a| reply::with_header(a, SET_COOKIE, cookie.to_string()));
                let got = reply::redirect_with_cookie(location.to_string(), cookie.to_string());
                assert_eq!(
                    got.as_ref().map(|a| (a.status(), headers(a))),
                    want.as_ref().map(|a| (a.status(), headers(a))),
                    "{location:?} {cookie:?}"
                );
            }
        }
    }

    /// Answers built from headers made once carry what `reply::bytes` gives them: the
    /// same status and the same headers in the same order.
    #[test]
    fn fixed_header_answers_match_bytes() {
        let cases = [
            (StatusCode::OK, pixels::GIF_CONTENT_TYPE, &GIF_HEADERS),
            (StatusCode::CONFLICT, reply::JSON, &JSON_HEADERS),
        ];
        let headers = |a: &Answer| {
            a.headers()
                .iter()
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        for (status, content_type, fixed) in cases {
            let want = reply::bytes(status, content_type, &b"body"[..]);
            let got = reply::with_headers(status, fixed, &b"body"[..]);
            assert_eq!(got.status(), want.status());
            assert_eq!(headers(&got), headers(&want));
        }
    }

    /// One walk finds what hashed lookups find: the first `User-Agent` and
    /// `Accept-Language`, and whether there is a `Cookie`, among repeated, absent and
    /// non-ASCII headers. Seeded: `SEED=<n>` replays a run.
    #[test]
    fn tracking_headers_agree_with_lookups() {
        use rand::Rng;
        let mut rng = crate::seed::seeded_rng();
        let names = [
            USER_AGENT,
            ACCEPT_LANGUAGE,
            COOKIE,
            hyper::header::HOST,
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("user-agent-x"),
        ];
        let values: [&[u8]; 5] = [
            b"Mozilla/5.0",
            b"",
            b"fr-CH, fr;q=0.9",
            b"caf\xc3\xa9",
            b"a\tb",
        ];
        for _ in 0..2000 {
            let mut headers = HeaderMap::new();
            for _ in 0..rng.random_range(0..12) {
                let name = names[rng.random_range(0..names.len())].clone();
                let value = HeaderValue::from_bytes(values[rng.random_range(0..values.len())])
                    .expect("a valid header value");
                headers.append(name, value);
            }
            let found = TrackingHeaders::of(&headers);
            let want = TrackingHeaders {
                user_agent: headers.get(USER_AGENT),
                accept_language: headers.get(ACCEPT_LANGUAGE),
                cookie: headers.contains_key(COOKIE),
            };
            assert_eq!(found, want, "{headers:?}");
            for name in [USER_AGENT, ACCEPT_LANGUAGE] {
                let value = if name == USER_AGENT {
                    found.user_agent
                } else {
                    found.accept_language
                };
                assert_eq!(value_str(value), header_str(&headers, name), "{headers:?}");
            }
        }
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), want, "{value}");
        }
    }

    #[test]
    fn pixel_type_is_sniffed_through_the_alias_table() {
        assert_eq!(
            sniff_pixel_type(Some("TYPE=s2s&x=%zz"), None),
            PixelType::S2s
        );
        assert_eq!(sniff_pixel_type(None, Some(b"type=js")), PixelType::Js);
        assert_eq!(sniff_pixel_type(Some("x=%00"), None), PixelType::Img);
        let json = br#"{"Type": "s2s", "CID": {"nested": 1}}"#;
        assert_eq!(sniff_pixel_type(None, Some(json)), PixelType::S2s);
    }

    /// The metrics label of a path.
    fn route_label(path: &str) -> &'static str {
        Route::of(path).label()
    }

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(route_label("/click.track"), "click");
        assert_eq!(route_label("/api/v1/campaigns/1"), "admin");
        assert_eq!(route_label("/anything/else"), "other");
    }
}
