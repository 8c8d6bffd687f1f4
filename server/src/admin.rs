//! The admin API under `/api/v1` (SPEC 3): bearer-token authentication, catalog CRUD,
//! clicks, conversions, deliveries and reports. Off (404) when no token is configured.

use crate::body;
use crate::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_REPORT_DAYS};
use crate::params::{decode_pairs, parse_id};
use crate::reply::{self, Answer};
use crate::routes::{bearer, body_error, not_allowed, App};
use bytes::Bytes;
use engine::clock::{Clock, Day, SystemClock};
use engine::{
    background, AdminError, Affiliate, Campaign, ConversionQuery, ConversionStatus, DeliveryState,
    GroupKey, ReportQuery, Webhook,
};
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

const PREFIX: &str = "/api/v1/";

pub async fn handle<B>(app: &App, request: Request<B>) -> Answer
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(token) = app.config.admin_token() else {
        return reply::text(StatusCode::NOT_FOUND, "not found");
    };
    if !authorized(token, bearer(request.headers())) {
        let mut answer = reply::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        answer
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return answer;
    }
    let path = request.uri().path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return reply::error(StatusCode::NOT_FOUND, "not found");
    };
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let query = match decode_pairs(request.uri().query().unwrap_or("").as_bytes()) {
        Ok(pairs) => pairs,
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let method = request.method().clone();
    let (parts, body) = request.into_parts();
    let body = if method == Method::POST || method == Method::PUT {
        match body::read(&parts.headers, body).await {
            Ok(bytes) => bytes,
            Err(e) => return body_error(&e),
        }
    } else {
        Bytes::new()
    };
    if !body.is_empty() {
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return reply::error(StatusCode::BAD_REQUEST, "the body must be application/json");
        }
    }
    let request = AdminRequest {
        method,
        query,
        body,
    };
    match segments.as_slice() {
        ["campaigns"] => collection::<CampaignKind>(app, &request).await,
        ["campaigns", id] => item::<CampaignKind>(app, &request, id).await,
        ["affiliates"] => collection::<AffiliateKind>(app, &request).await,
        ["affiliates", id] => item::<AffiliateKind>(app, &request, id).await,
        ["webhooks"] => collection::<WebhookKind>(app, &request).await,
        ["webhooks", id] => item::<WebhookKind>(app, &request, id).await,
        ["clicks", id] => match request.method {
            Method::GET => match app.engine.click_view(id).await {
                Some(view) => reply::json(StatusCode::OK, &view),
                None => reply::error(StatusCode::NOT_FOUND, "no such click"),
            },
            _ => not_allowed("GET"),
        },
        ["conversions"] => match request.method {
            Method::GET => conversions(app, &request).await,
            _ => not_allowed("GET"),
        },
        ["conversions", id, "status"] => match request.method {
            Method::POST => conversion_status(app, &request, id).await,
            _ => not_allowed("POST"),
        },
        ["deliveries"] => match request.method {
            Method::GET => deliveries(app, &request).await,
            _ => not_allowed("GET"),
        },
        ["deliveries", id, "replay"] => match request.method {
            Method::POST => match app.engine.replay_delivery(id).await {
                Ok(view) => reply::json(StatusCode::OK, &view),
                Err(e) => admin_error(&e),
            },
            _ => not_allowed("POST"),
        },
        ["report"] => match request.method {
            Method::GET => report(app, &request).await,
            _ => not_allowed("GET"),
        },
        _ => reply::error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Constant-time comparison, so the time an answer takes says nothing about how much of a
/// guessed token was right. (A length difference is not secret.)
fn authorized(expected: &str, given: Option<&str>) -> bool {
    given.is_some_and(|given| bool::from(expected.as_bytes().ct_eq(given.as_bytes())))
}

struct AdminRequest {
    method: Method,
    query: Vec<(String, String)>,
    body: Bytes,
}

impl AdminRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// Maps engine errors: not found 404, invalid 400 naming the field, storage 503.
fn admin_error(e: &AdminError) -> Answer {
    match e {
        AdminError::NotFound => reply::error(StatusCode::NOT_FOUND, "not found"),
        AdminError::Invalid { field, .. } => {
            reply::json_error(StatusCode::BAD_REQUEST, &e.to_string(), Some(field))
        }
        AdminError::Unavailable(_) => reply::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        _ => reply::error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// A refused admin request, before it becomes an answer: `{"error", "field"?}`.
struct Refusal {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl Refusal {
    fn answer(self) -> Answer {
        reply::json_error(self.status, &self.message, self.field.as_deref())
    }
}

/// A 400 naming the field for a parameter that does not parse.
fn bad_param(name: &str, why: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        message: format!("invalid {name}: {why}"),
        field: Some(name.to_string()),
    }
}

/// Parses a JSON body into `T`; unknown fields (serde's `deny_unknown_fields`) and type
/// errors answer 400 naming the field.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        let message = e.to_string();
        let field = message
            .strip_prefix("unknown field `")
            .or_else(|| message.strip_prefix("missing field `"))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message,
            field,
        }
    })
}

// ---- catalog --------------------------------------------------------------------------

/// One kind of catalog object (campaigns, affiliates, webhooks): the same five operations.
trait CatalogKind {
    type Item: Serialize + DeserializeOwned + Send;
    const NAME: &'static str;
    fn id(item: &Self::Item) -> u32;
    fn set_id(item: &mut Self::Item, id: u32);
    fn list(app: &App) -> Vec<Self::Item>;
    fn get(app: &App, id: u32) -> Option<Self::Item>;
    async fn put(app: &App, item: Self::Item) -> Result<Self::Item, AdminError>;
    async fn delete(app: &App, id: u32) -> Result<(), AdminError>;
}

struct CampaignKind;
impl CatalogKind for CampaignKind {
    type Item = Campaign;
    const NAME: &'static str = "campaign";
    fn id(item: &Campaign) -> u32 {
        item.id
    }
    fn set_id(item: &mut Campaign, id: u32) {
        item.id = id;
    }
    fn list(app: &App) -> Vec<Campaign> {
        app.engine.campaigns()
    }
    fn get(app: &App, id: u32) -> Option<Campaign> {
        app.engine.campaign(id)
    }
    async fn put(app: &App, item: Campaign) -> Result<Campaign, AdminError> {
        app.engine.put_campaign(item).await
    }
    async fn delete(app: &App, id: u32) -> Result<(), AdminError> {
        app.engine.delete_campaign(id).await
    }
}

struct AffiliateKind;
impl CatalogKind for AffiliateKind {
    type Item = Affiliate;
    const NAME: &'static str = "affiliate";
    fn id(item: &Affiliate) -> u32 {
        item.id
    }
    fn set_id(item: &mut Affiliate, id: u32) {
        item.id = id;
    }
    fn list(app: &App) -> Vec<Affiliate> {
        app.engine.affiliates()
    }
    fn get(app: &App, id: u32) -> Option<Affiliate> {
        app.engine.affiliate(id)
    }
    async fn put(app: &App, item: Affiliate) -> Result<Affiliate, AdminError> {
        app.engine.put_affiliate(item).await
    }
    async fn delete(app: &App, id: u32) -> Result<(), AdminError> {
        app.engine.delete_affiliate(id).await
    }
}

struct WebhookKind;
impl CatalogKind for WebhookKind {
    type Item = Webhook;
    const NAME: &'static str = "webhook";
    fn id(item: &Webhook) -> u32 {
        item.id
    }
    fn set_id(item: &mut Webhook, id: u32) {
        item.id = id;
    }
    fn list(app: &App) -> Vec<Webhook> {
        app.engine.webhooks()
    }
    fn get(app: &App, id: u32) -> Option<Webhook> {
        app.engine.webhook(id)
    }
    async fn put(app: &App, item: Webhook) -> Result<Webhook, AdminError> {
        app.engine.put_webhook(item).await
    }
    async fn delete(app: &App, id: u32) -> Result<(), AdminError> {
        app.engine.delete_webhook(id).await
    }
}

/// `GET` lists; `POST` creates (201): an `id` of 0 or none takes the next free one, an
/// existing `id` is a conflict (409; `PUT` replaces).
async fn collection<K: CatalogKind>(app: &App, request: &AdminRequest) -> Answer {
    match request.method {
        Method::GET => reply::json(StatusCode::OK, &K::list(app)),
        Method::POST => {
            let mut item: K::Item = match parse_json(&request.body) {
                Ok(item) => item,
                Err(refusal) => return refusal.answer(),
            };
            let existing = K::list(app);
            let id = K::id(&item);
            if id == 0 {
                let next = existing.iter().map(K::id).max().unwrap_or(0).checked_add(1);
                let Some(next) = next else {
                    return reply::json_error(StatusCode::BAD_REQUEST, "no free id", Some("id"));
                };
                K::set_id(&mut item, next);
            } else if existing.iter().any(|e| K::id(e) == id) {
                return reply::json_error(
                    StatusCode::CONFLICT,
                    &format!("{} {id} exists; PUT replaces it", K::NAME),
                    Some("id"),
                );
            }
            match K::put(app, item).await {
                Ok(item) => reply::json(StatusCode::CREATED, &item),
                Err(e) => admin_error(&e),
            }
        }
        _ => not_allowed("GET, POST"),
    }
}

/// `GET`, `PUT` (the whole object; its `id`, if given, must match the path) and `DELETE`.
async fn item<K: CatalogKind>(app: &App, request: &AdminRequest, id: &str) -> Answer {
    let Some(id) = parse_id(id) else {
        return reply::error(StatusCode::NOT_FOUND, &format!("no such {}", K::NAME));
    };
    match request.method {
        Method::GET => match K::get(app, id) {
            Some(item) => reply::json(StatusCode::OK, &item),
            None => reply::error(StatusCode::NOT_FOUND, &format!("no such {}", K::NAME)),
        },
        Method::PUT => {
            let mut item: K::Item = match parse_json(&request.body) {
                Ok(item) => item,
                Err(refusal) => return refusal.answer(),
            };
            match K::id(&item) {
                0 => K::set_id(&mut item, id),
                given if given != id => {
                    return reply::json_error(
                        StatusCode::BAD_REQUEST,
                        "id differs from the path",
                        Some("id"),
                    )
                }
                _ => {}
            }
            match K::put(app, item).await {
                Ok(item) => reply::json(StatusCode::OK, &item),
                Err(e) => admin_error(&e),
            }
        }
        Method::DELETE => match K::delete(app, id).await {
            Ok(()) => reply::bytes(StatusCode::NO_CONTENT, reply::JSON, Bytes::new()),
            Err(e) => admin_error(&e),
        },
        _ => not_allowed("GET, PUT, DELETE"),
    }
}

// ---- records --------------------------------------------------------------------------

fn day_param(request: &AdminRequest, name: &str) -> Result<Option<Day>, Refusal> {
    match request.param(name) {
        None => Ok(None),
        Some(text) => Day::parse(text)
            .map(Some)
            .ok_or_else(|| bad_param(name, "expected YYYY-MM-DD")),
    }
}

fn id_param(request: &AdminRequest, name: &str) -> Result<Option<u32>, Refusal> {
    match request.param(name) {
        None => Ok(None),
        Some(text) => parse_id(text)
            .map(Some)
            .ok_or_else(|| bad_param(name, "expected a positive whole number")),
    }
}

fn limit_param(request: &AdminRequest) -> Result<usize, Refusal> {
    match request.param("limit") {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| bad_param("limit", "expected 1 to 1000")),
    }
}

async fn conversions(app: &App, request: &AdminRequest) -> Answer {
    let query = (|| -> Result<ConversionQuery, Refusal> {
        Ok(ConversionQuery {
            from: day_param(request, "from")?,
            to: day_param(request, "to")?,
            campaign_id: id_param(request, "campaign")?,
            affiliate_id: id_param(request, "affiliate")?,
            status: match request.param("status") {
                None => None,
                Some(s) => Some(ConversionStatus::parse(s).ok_or_else(|| {
                    bad_param("status", "expected approved, pending or rejected")
                })?),
            },
            cursor: request.param("cursor").map(str::to_string),
            limit: limit_param(request)?,
        })
    })();
    let query = match query {
        Ok(query) => query,
        Err(refusal) => return refusal.answer(),
    };
    match app.engine.conversions(query).await {
        Ok(page) => reply::json(StatusCode::OK, &page),
        Err(e) => admin_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: ConversionStatus,
}

async fn conversion_status(app: &App, request: &AdminRequest, id: &str) -> Answer {
    let change: StatusChange = match parse_json(&request.body) {
        Ok(change) => change,
        Err(refusal) => return refusal.answer(),
    };
    match app.engine.set_conversion_status(id, change.status).await {
        Ok(view) => reply::json(StatusCode::OK, &view),
        Err(e) => admin_error(&e),
    }
}

async fn deliveries(app: &App, request: &AdminRequest) -> Answer {
    let state = match request.param("state") {
        None => None,
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => return bad_param("state", "expected pending, delivered or failed").answer(),
        },
    };
    let limit = match limit_param(request) {
        Ok(limit) => limit,
        Err(refusal) => return refusal.answer(),
    };
    match app.engine.deliveries(state, limit).await {
        Ok(list) => reply::json(StatusCode::OK, &list),
        Err(e) => admin_error(&e),
    }
}

/// Days in the default report range: the last 7 days through today.
const DEFAULT_REPORT_DAYS: u32 = 7;

async fn report(app: &App, request: &AdminRequest) -> Answer {
    let today = Day::from_unix_ms(SystemClock.now_ms());
    let to = match day_param(request, "to") {
        Ok(to) => to.unwrap_or(today),
        Err(refusal) => return refusal.answer(),
    };
    let from = match day_param(request, "from") {
        Ok(from) => from.unwrap_or(Day(to.0.saturating_sub(DEFAULT_REPORT_DAYS - 1))),
        Err(refusal) => return refusal.answer(),
    };
    if from > to {
        return bad_param("from", "after to").answer();
    }
    if to.0 - from.0 >= MAX_REPORT_DAYS {
        return bad_param("from", "the range is longer than 3660 days").answer();
    }
    let mut group_by = Vec::new();
    if let Some(list) = request.param("group_by") {
        for key in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            match GroupKey::parse(key) {
                Some(key) if !group_by.contains(&key) => group_by.push(key),
                Some(_) => {}
                None => {
                    return bad_param(
                        "group_by",
                        "expected day, campaign, affiliate, creative or sid1",
                    )
                    .answer()
                }
            }
        }
    } else {
        group_by.push(GroupKey::Day);
    }
    let csv = match request
        .param("format")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return bad_param("format", "expected json or csv").answer(),
    };
    let report = match app.engine.report(ReportQuery { from, to, group_by }).await {
        Ok(report) => report,
        Err(e) => return admin_error(&e),
    };
    // Up to engine::stats::MAX_REPORT_ROWS rows: formatted off this worker, which answers
    // tracking requests meanwhile.
    let _turn = background::turn().await;
    let formatted = background::run("report-format", move || crate::report::answer(&report, csv));
    match formatted.await {
        Ok(answer) => answer,
        Err(e) => admin_error(&AdminError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(authorized("secret", Some("secret")));
        assert!(!authorized("secret", Some("secreT")));
        assert!(!authorized("secret", Some("secret2")));
        assert!(!authorized("secret", Some("")));
        assert!(!authorized("secret", None));
    }

    #[test]
    fn json_errors_name_the_unknown_field() {
        let field = |r: Result<(), Refusal>| r.unwrap_err().field;
        let campaign = |body: &[u8]| parse_json::<Campaign>(body).map(|_| ());
        let change = |body: &[u8]| parse_json::<StatusChange>(body).map(|_| ());
        assert_eq!(
            field(campaign(br#"{"id": 1, "landing": "x"}"#)).as_deref(),
            Some("landing")
        );
        assert_eq!(
            field(change(br#"{"status": "approved", "why": 1}"#)).as_deref(),
            Some("why")
        );
        assert!(
            change(br#"{"status": "Pending"}"#).is_err(),
            "statuses are lower case in JSON"
        );
        assert!(change(br#"{"status": "pending"}"#).is_ok());
        let missing = parse_json::<StatusChange>(b"{}").map(|_| ()).unwrap_err();
        assert_eq!(missing.field.as_deref(), Some("status"));
    }
}
