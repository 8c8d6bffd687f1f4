//! `clicktrail loadgen`: a load generator that checks what it measures. It drives a running
//! clicktrail with a seeded, realistic mix of visitors (impressions, clicks with and without
//! cookies, repeat clicks, browser pixels, server posts by click ID, AFID posts, retried
//! duplicates), reports throughput and latency per route, then asks the admin API whether
//! every conversion landed on the click that caused it, matched the way it should have
//! been, and whether the report counters equal what was sent.
//!
//! Fingerprints: every visitor has its own User-Agent (carrying the run tag and visitor
//! number), so visitors stay distinguishable on the single loopback IP. With
//! `--forwarded-for` (only when the server lists 127.0.0.1 in `trusted_proxies`) visitors
//! also get their own X-Forwarded-For address, a share of them from a small shared pool.
//!
//! The report check compares the campaign and affiliate's counters before and after the
//! run (`group_by=campaign,affiliate`, the default last 7 days): it assumes no other
//! traffic for that pair meanwhile. Use a campaign or affiliate of its own on a shared
//! server.

mod client;
mod histogram;
mod ledger;
mod plan;

use anyhow::{bail, Context};
use client::{click_cookie, Answer, Client};
use histogram::Histogram;
use hyper::header::{HeaderName, ACCEPT_LANGUAGE, AUTHORIZATION, COOKIE, USER_AGENT};
use hyper::StatusCode;
use ledger::{
    compare_counters, CampaignFacts, Counters, ExpectedConversion, Ledger, SentClick, Tally,
    Verdict,
};
use plan::{Journey, Method, Mix, Plan, Step};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Requests sent when neither `--requests` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 10_000;
/// Upper bounds on a run, so a typo cannot start a load that never ends.
const MAX_REQUESTS: u64 = 1_000_000_000;
const MAX_DURATION_SECS: u64 = 24 * 3600;
/// More in-flight requests than this measures the client, not the server.
const MAX_CONCURRENCY: usize = 4096;
/// Converting clicks kept for the check through the admin API after the run; beyond this
/// the check would take longer than the load itself (and memory would grow with the run).
const MAX_CHECKED_CONVERSIONS: usize = 200_000;
/// Clicks without a conversion kept for the same check (they must stay without one).
const MAX_CHECKED_PLAIN_CLICKS: usize = 50_000;
/// Body bytes quoted when an answer is not the expected one.
const QUOTED_BODY_BYTES: usize = 200;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Base URL of the running clicktrail (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Admin API token. Enables the correctness checks (campaign settings, every click's
    /// conversions, report counters).
    #[arg(long, env = "CLICKTRAIL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Base URL of the admin API when it listens apart (`admin.listen`); default --target.
    #[arg(long)]
    pub admin_target: Option<String>,
    /// Requests per second over all workers; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this many requests (default 10000 when --duration is not given either).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Requests in flight at once (one visitor each).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seeds the traffic mix: the same seed sends the same visitors.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The campaign (`CID`) the traffic is for.
    #[arg(long, default_value_t = 1)]
    pub campaign: u32,
    /// The affiliate (`AFID`) sending the traffic.
    #[arg(long, default_value_t = 1)]
    pub affiliate: u32,
    /// Send each visitor's address as X-Forwarded-For. Only when the server trusts
    /// 127.0.0.1 as a proxy (`trusted_proxies`); otherwise it would be ignored.
    #[arg(long)]
    pub forwarded_for: bool,
    /// Share of visitors who see an impression first.
    #[arg(long, default_value_t = Mix::default().impression)]
    pub impression_share: f64,
    /// Share of visitors who click.
    #[arg(long, default_value_t = Mix::default().click)]
    pub click_share: f64,
    /// Share of clickers who click twice (the second click is not unique).
    #[arg(long, default_value_t = Mix::default().repeat_click)]
    pub repeat_click_share: f64,
    /// Share of clickers who convert.
    #[arg(long, default_value_t = Mix::default().convert)]
    pub convert_share: f64,
    /// Share of conversions posted server to server by ClickID (the rest: browser pixel).
    #[arg(long, default_value_t = Mix::default().s2s)]
    pub s2s_share: f64,
    /// Share of browser conversions that lost the cookie (attributed by IP backup).
    #[arg(long, default_value_t = Mix::default().cookie_loss)]
    pub cookie_loss_share: f64,
    /// Share of conversions sent twice (must not count twice).
    #[arg(long, default_value_t = Mix::default().duplicate)]
    pub duplicate_share: f64,
    /// Share of visitors replaced by clickless AFID posts.
    #[arg(long, default_value_t = Mix::default().afid_post)]
    pub afid_share: f64,
    /// Share of visitors behind a shared IP (with --forwarded-for).
    #[arg(long, default_value_t = Mix::default().shared_ip)]
    pub shared_ip_share: f64,
}

impl Args {
    fn mix(&self) -> Mix {
        Mix {
            impression: self.impression_share,
            click: self.click_share,
            repeat_click: self.repeat_click_share,
            convert: self.convert_share,
            s2s: self.s2s_share,
            cookie_loss: self.cookie_loss_share,
            duplicate: self.duplicate_share,
            afid_post: self.afid_share,
            shared_ip: self.shared_ip_share,
        }
    }
}

/// Runs the load and the checks; an error when a correctness check fails.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mix = args.mix();
    mix.validate().map_err(anyhow::Error::msg)?;
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        bail!("--concurrency must be within 1..={MAX_CONCURRENCY}");
    }
    if args
        .duration
        .is_some_and(|d| d == 0 || d > MAX_DURATION_SECS)
    {
        bail!("--duration must be within 1..={MAX_DURATION_SECS} seconds");
    }
    if args.requests.is_some_and(|n| n == 0 || n > MAX_REQUESTS) {
        bail!("--requests must be within 1..={MAX_REQUESTS}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run_load(args, mix))
}

/// The routes measured apart, in the order they are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Impression,
    Click,
    PixelImg,
    PostClickId,
    PostAfid,
}

impl Route {
    const ALL: [Route; 5] = [
        Self::Impression,
        Self::Click,
        Self::PixelImg,
        Self::PostClickId,
        Self::PostAfid,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Impression => "impression.track",
            Self::Click => "click.track",
            Self::PixelImg => "pixel.track img",
            Self::PostClickId => "pixel.track s2s ClickID",
            Self::PostAfid => "pixel.track s2s AFID",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Default)]
struct RouteStats {
    latency: Histogram,
    /// No answer at all (connect, timeout, reset).
    errors: u64,
    /// An answer other than the one the request must get.
    unexpected: u64,
}

/// What one worker measured and sent.
#[derive(Default)]
struct Output {
    ledger: Ledger,
    routes: [RouteStats; 5],
}

/// Hands out permission to send: stops at the request or time bound, and paces to the
/// rate by giving ticket n the send time start + n / rate.
struct Budget {
    issued: AtomicU64,
    limit: u64,
    start: Instant,
    deadline: Instant,
    rate_per_s: u64,
}

impl Budget {
    async fn acquire(&self) -> bool {
        let ticket = self.issued.fetch_add(1, Relaxed);
        if ticket >= self.limit {
            return false;
        }
        if self.rate_per_s > 0 {
            let at = self.start + Duration::from_secs_f64(ticket as f64 / self.rate_per_s as f64);
            if at >= self.deadline {
                return false;
            }
            tokio::time::sleep_until(at).await;
        }
        Instant::now() < self.deadline
    }
}

struct Shared {
    client: Client,
    plan: Plan,
    facts: CampaignFacts,
    campaign_id: u32,
    affiliate_id: u32,
    forwarded_for: bool,
    budget: Budget,
    next_visitor: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    kept_conversions: AtomicUsize,
    kept_plain_clicks: AtomicUsize,
}

async fn run_load(args: Args, mix: Mix) -> anyhow::Result<()> {
    let client = Client::new(&args.target, args.concurrency).map_err(anyhow::Error::msg)?;
    let admin = match &args.admin_token {
        Some(token) if !token.is_empty() => {
            let base = args.admin_target.as_deref().unwrap_or(&args.target);
            Some(Admin {
                client: Client::new(base, args.concurrency).map_err(anyhow::Error::msg)?,
                token: token.clone(),
            })
        }
        _ => None,
    };

    let facts = match &admin {
        Some(admin) => CampaignFacts::from_json(
            &admin
                .get(&format!("/api/v1/campaigns/{}", args.campaign))
                .await
                .context("reading the campaign's settings")?,
        ),
        None => CampaignFacts::default(),
    };
    let before = match &admin {
        Some(admin) => Some(admin.counters(args.campaign, args.affiliate).await?),
        None => None,
    };

    let run_tag = format!("{:08x}", rand::random::<u32>());
    let limit = match (args.requests, args.duration) {
        (Some(n), _) => n,
        (None, Some(_)) => MAX_REQUESTS,
        (None, None) => DEFAULT_REQUESTS,
    };
    let duration = Duration::from_secs(args.duration.unwrap_or(MAX_DURATION_SECS));
    eprintln!(
        "loadgen: {} campaign {} affiliate {}, seed {} (run tag {run_tag}), {} requests max, \
         {} s max, rate {}, concurrency {}",
        args.target,
        args.campaign,
        args.affiliate,
        args.seed,
        limit,
        duration.as_secs(),
        if args.rate == 0 {
            "flat out".to_string()
        } else {
            format!("{}/s", args.rate)
        },
        args.concurrency
    );
    let start = Instant::now();
    let shared = Arc::new(Shared {
        client,
        plan: Plan {
            seed: args.seed,
            mix,
            run_tag,
        },
        facts,
        campaign_id: args.campaign,
        affiliate_id: args.affiliate,
        forwarded_for: args.forwarded_for,
        budget: Budget {
            issued: AtomicU64::new(0),
            limit,
            start,
            deadline: start + duration,
            rate_per_s: args.rate,
        },
        next_visitor: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        kept_conversions: AtomicUsize::new(0),
        kept_plain_clicks: AtomicUsize::new(0),
    });

    let progress = tokio::spawn(report_progress(shared.clone(), start));
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(shared.clone())))
        .collect();
    let mut total = Output::default();
    for worker in workers {
        let output = worker.await.context("a load worker panicked")?;
        total.ledger.merge(output.ledger);
        for (mine, theirs) in total.routes.iter_mut().zip(output.routes.iter()) {
            mine.latency.merge(&theirs.latency);
            mine.errors += theirs.errors;
            mine.unexpected += theirs.unexpected;
        }
    }
    let elapsed = start.elapsed();
    progress.abort();

    print_routes(&total.routes, elapsed);
    let failed = check(
        &shared,
        admin.as_ref(),
        before,
        total.ledger,
        args.concurrency,
    )
    .await?;
    if failed {
        bail!("correctness checks failed");
    }
    Ok(())
}

async fn report_progress(shared: Arc<Shared>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let answered = shared.answered.load(Relaxed);
        eprintln!(
            "loadgen: {:>5.0} s  {answered:>10} answered  {:>8}/s  errors {}",
            start.elapsed().as_secs_f64(),
            answered - last,
            shared.errors.load(Relaxed)
        );
        last = answered;
    }
}

async fn worker(shared: Arc<Shared>) -> Output {
    let mut out = Output::default();
    loop {
        let visitor = shared.next_visitor.fetch_add(1, Relaxed);
        let journey = shared.plan.journey(visitor);
        if !run_journey(&shared, &journey, &mut out).await {
            return out;
        }
    }
}

/// What a visitor's browser holds between its requests, and the clicks it made.
#[derive(Default)]
struct Visit {
    cookie: Option<String>,
    /// The visitor's tracked clicks, latest last.
    clicks: Vec<SentClick>,
}

/// Runs one visitor's journey; false once the budget is spent. A step whose answer is
/// wrong ends the journey (the ledger keeps what is known).
async fn run_journey(shared: &Shared, journey: &Journey, out: &mut Output) -> bool {
    let mut visit = Visit::default();
    let mut more = true;
    for step in &journey.steps {
        if !shared.budget.acquire().await {
            more = false;
            break;
        }
        let ok = match *step {
            Step::Impression => impression(shared, journey, out).await,
            Step::Click => click(shared, journey, &mut visit, out).await,
            Step::Convert {
                method: Method::Afid,
                ..
            } => afid_post(shared, journey, out).await,
            Step::Convert { method, repeat } => {
                convert(shared, journey, &mut visit, method, repeat, out).await
            }
        };
        if !ok {
            break;
        }
    }
    for click in visit.clicks {
        keep_for_check(shared, &mut out.ledger, click);
    }
    more
}

/// Keeps `click` for the admin API check while under the bounds.
fn keep_for_check(shared: &Shared, ledger: &mut Ledger, click: SentClick) {
    let (kept, bound) = match click.conversion {
        Some(_) => (&shared.kept_conversions, MAX_CHECKED_CONVERSIONS),
        None => (&shared.kept_plain_clicks, MAX_CHECKED_PLAIN_CLICKS),
    };
    if kept.fetch_add(1, Relaxed) < bound {
        ledger.clicks.push(click);
    }
}

fn browser_headers(
    shared: &Shared,
    journey: &Journey,
    cookie: Option<&str>,
) -> Vec<(HeaderName, String)> {
    let mut headers = vec![
        (USER_AGENT, journey.user_agent.clone()),
        (ACCEPT_LANGUAGE, journey.accept_language.to_string()),
    ];
    if let Some(id) = cookie {
        headers.push((COOKIE, format!("ct_{}={id}", shared.campaign_id)));
    }
    if shared.forwarded_for {
        headers.push((
            HeaderName::from_static("x-forwarded-for"),
            journey.ip.to_string(),
        ));
    }
    headers
}

fn source_query(shared: &Shared, journey: &Journey) -> String {
    format!(
        "CID={}&AFID={}&ADID={}&SID={}",
        shared.campaign_id, shared.affiliate_id, journey.creative_id, journey.sid
    )
}

/// The advertiser's order ID for this visitor's conversion: unique per run and visitor,
/// and the same on a retried (duplicate) sending.
fn merchant_ref(shared: &Shared, journey: &Journey) -> String {
    format!("{}-{}", shared.plan.run_tag, journey.visitor)
}

/// Sends and records latency; `None` (counted, ledger uncertain) when no answer came.
async fn send(
    shared: &Shared,
    out: &mut Output,
    route: Route,
    get_query: Option<String>,
    path: &str,
    headers: &[(HeaderName, String)],
    post_form: Option<String>,
) -> Option<Answer> {
    let (method, target) = match get_query {
        Some(query) => (hyper::Method::GET, format!("{path}?{query}")),
        None => (hyper::Method::POST, path.to_string()),
    };
    match shared
        .client
        .send(method, &target, headers, post_form)
        .await
    {
        Ok(answer) => {
            out.routes[route.index()].latency.record(answer.latency_us);
            shared.answered.fetch_add(1, Relaxed);
            Some(answer)
        }
        Err(e) => {
            out.routes[route.index()].errors += 1;
            shared.errors.fetch_add(1, Relaxed);
            out.ledger.uncertain += 1;
            out.ledger.fail(format!("{}: {e}", route.name()));
            None
        }
    }
}

/// Records an answer that is not the one expected: counted, and the ledger can no longer
/// predict the counters exactly.
fn unexpected(out: &mut Output, route: Route, answer: &Answer, wanted: &str) {
    out.routes[route.index()].unexpected += 1;
    out.ledger.uncertain += 1;
    let body = String::from_utf8_lossy(&answer.body[..answer.body.len().min(QUOTED_BODY_BYTES)])
        .into_owned();
    out.ledger.fail(format!(
        "{}: wanted {wanted}, got {} {body:?}",
        route.name(),
        answer.status
    ));
}

async fn impression(shared: &Shared, journey: &Journey, out: &mut Output) -> bool {
    let headers = browser_headers(shared, journey, None);
    let query = source_query(shared, journey);
    let Some(answer) = send(
        shared,
        out,
        Route::Impression,
        Some(query),
        "/impression.track",
        &headers,
        None,
    )
    .await
    else {
        return false;
    };
    if answer.status != StatusCode::OK {
        unexpected(out, Route::Impression, &answer, "200 and a gif");
        return false;
    }
    // One impression per visitor, each with its own fingerprint: all unique.
    out.ledger.counters.impressions += 1;
    out.ledger.counters.unique_impressions += 1;
    true
}

async fn click(shared: &Shared, journey: &Journey, visit: &mut Visit, out: &mut Output) -> bool {
    let headers = browser_headers(shared, journey, visit.cookie.as_deref());
    let query = source_query(shared, journey);
    let Some(answer) = send(
        shared,
        out,
        Route::Click,
        Some(query),
        "/click.track",
        &headers,
        None,
    )
    .await
    else {
        return false;
    };
    let cookie = click_cookie(&answer.set_cookies, shared.campaign_id);
    let Some(click_id) = cookie.filter(|_| answer.status == StatusCode::FOUND) else {
        unexpected(
            out,
            Route::Click,
            &answer,
            "302 with a ct_ cookie (a tracked click)",
        );
        return false;
    };
    let counters = &mut out.ledger.counters;
    counters.clicks += 1;
    // Unique unless this visitor (cookie or fingerprint) clicked before.
    if visit.clicks.is_empty() {
        counters.unique_clicks += 1;
    }
    visit.cookie = Some(click_id.clone());
    visit.clicks.push(SentClick {
        click_id,
        forwarded_ip: shared.forwarded_for.then(|| journey.ip.to_string()),
        conversion: None,
    });
    true
}

/// The `token` parameter when the campaign requires one on server posts.
fn token_param(shared: &Shared) -> String {
    if shared.facts.postback_token.is_empty() {
        String::new()
    } else {
        format!("&token={}", shared.facts.postback_token)
    }
}

/// Sends a server post as GET or POST (the journey decides) and parses its JSON answer.
async fn server_post(
    shared: &Shared,
    journey: &Journey,
    out: &mut Output,
    route: Route,
    fields: String,
) -> Option<(Answer, Value)> {
    let headers = [(USER_AGENT, "clicktrail-loadgen advertiser".to_string())];
    let answer = if journey.post {
        send(
            shared,
            out,
            route,
            None,
            "/pixel.track",
            &headers,
            Some(fields),
        )
        .await
    } else {
        send(
            shared,
            out,
            route,
            Some(fields),
            "/pixel.track",
            &headers,
            None,
        )
        .await
    }?;
    match serde_json::from_slice::<Value>(&answer.body) {
        Ok(json) => Some((answer, json)),
        Err(_) => {
            unexpected(out, route, &answer, "a JSON answer");
            None
        }
    }
}

fn json_str<'a>(json: &'a Value, name: &str) -> Option<&'a str> {
    json.get(name).and_then(Value::as_str)
}

async fn afid_post(shared: &Shared, journey: &Journey, out: &mut Output) -> bool {
    let fields = format!(
        "type=s2s&{}&MerchantReferenceID={}{}",
        source_query(shared, journey),
        merchant_ref(shared, journey),
        token_param(shared)
    );
    let Some((answer, json)) = server_post(shared, journey, out, Route::PostAfid, fields).await
    else {
        return false;
    };
    out.ledger.tally(Method::Afid).expected += 1;
    let (ok, wanted) = if shared.facts.allow_afid_posts {
        (
            answer.status == StatusCode::OK
                && json_str(&json, "status") == Some("approved")
                && json.get("click_id").is_none_or(Value::is_null),
            "200 approved, no click_id",
        )
    } else {
        (answer.status == StatusCode::FORBIDDEN, "403 forbidden")
    };
    if !ok {
        unexpected(out, Route::PostAfid, &answer, wanted);
        return false;
    }
    out.ledger.tally(Method::Afid).correct += 1;
    let counted = u64::from(shared.facts.counted(Method::Afid, 1));
    out.ledger.counters.conversions += counted;
    out.ledger.counters.approved += counted;
    true
}

async fn convert(
    shared: &Shared,
    journey: &Journey,
    visit: &mut Visit,
    method: Method,
    repeat: bool,
    out: &mut Output,
) -> bool {
    let Some(latest) = visit.clicks.last() else {
        return false; // The click was not tracked; the journey already failed.
    };
    let click_id = latest.click_id.clone();
    let order = merchant_ref(shared, journey);
    let facts = &shared.facts;
    let sent = if repeat { 2 } else { 1 };
    let mut conversion_id = None;

    if method == Method::ClickId {
        let fields = format!(
            "type=s2s&ClickID={click_id}&MerchantReferenceID={order}{}",
            token_param(shared)
        );
        let Some((answer, json)) =
            server_post(shared, journey, out, Route::PostClickId, fields).await
        else {
            return false;
        };
        let original = latest
            .conversion
            .as_ref()
            .and_then(|c| c.conversion_id.clone());
        let counts_again = facts.counted(method, sent) > facts.counted(method, sent - 1);
        let status = json_str(&json, "status");
        if repeat && !counts_again {
            out.ledger.duplicates_sent += 1;
            if answer.status == StatusCode::OK {
                out.ledger.duplicates_counted += 1;
            }
            if answer.status != StatusCode::CONFLICT
                || status != Some("duplicate")
                || json_str(&json, "conversion_id") != original.as_deref()
            {
                unexpected(
                    out,
                    Route::PostClickId,
                    &answer,
                    "409 duplicate naming the original conversion",
                );
                return false;
            }
        } else if answer.status != StatusCode::OK
            || status != Some("approved")
            || json_str(&json, "click_id") != Some(click_id.as_str())
            || json_str(&json, "conversion_id").is_none()
        {
            unexpected(
                out,
                Route::PostClickId,
                &answer,
                "200 approved naming the click",
            );
            return false;
        }
        conversion_id = original.or_else(|| json_str(&json, "conversion_id").map(str::to_string));
    } else {
        let cookie = (method == Method::Cookie).then_some(click_id.as_str());
        let headers = browser_headers(shared, journey, cookie);
        let query = format!(
            "type=img&CID={}&MerchantReferenceID={order}",
            shared.campaign_id
        );
        let Some(answer) = send(
            shared,
            out,
            Route::PixelImg,
            Some(query),
            "/pixel.track",
            &headers,
            None,
        )
        .await
        else {
            return false;
        };
        if answer.status != StatusCode::OK {
            unexpected(out, Route::PixelImg, &answer, "200 and a gif");
            return false;
        }
        if repeat {
            out.ledger.duplicates_sent += 1;
        }
    }

    let counted_before = facts.counted(method, sent - 1);
    let counted_now = facts.counted(method, sent);
    let added = u64::from(counted_now - counted_before);
    out.ledger.counters.conversions += added;
    out.ledger.counters.approved += added;
    let Some(latest) = visit.clicks.last_mut() else {
        return false;
    };
    latest.conversion = Some(ExpectedConversion {
        method,
        conversion_id,
        sent,
        counted: counted_now,
    });
    true
}

fn print_routes(routes: &[RouteStats; 5], elapsed: Duration) {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    println!();
    println!(
        "{:<24} {:>10} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "route", "answers", "req/s", "errors", "wrong", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut all = RouteStats::default();
    for route in Route::ALL {
        let stats = &routes[route.index()];
        print_route(route.name(), stats, seconds);
        all.latency.merge(&stats.latency);
        all.errors += stats.errors;
        all.unexpected += stats.unexpected;
    }
    print_route("total", &all, seconds);
    println!("elapsed {:.1} s", seconds);
    fn print_route(name: &str, stats: &RouteStats, seconds: f64) {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &stats.latency;
        println!(
            "{:<24} {:>10} {:>10.0} {:>7} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name,
            h.count(),
            h.count() as f64 / seconds,
            stats.errors,
            stats.unexpected,
            ms(h.percentile_us(50.0)),
            ms(h.percentile_us(90.0)),
            ms(h.percentile_us(99.0)),
            ms(h.max_us())
        );
    }
}

/// The admin API, for the checks.
struct Admin {
    client: Client,
    token: String,
}

impl Admin {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let headers = [(AUTHORIZATION, format!("Bearer {}", self.token))];
        let answer = self
            .client
            .send(hyper::Method::GET, path, &headers, None)
            .await
            .with_context(|| format!("GET {path}"))?;
        if !answer.status.is_success() {
            bail!(
                "GET {path}: {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(QUOTED_BODY_BYTES)])
            );
        }
        serde_json::from_slice(&answer.body).with_context(|| format!("GET {path}: not JSON"))
    }

    async fn counters(&self, campaign: u32, affiliate: u32) -> anyhow::Result<Counters> {
        let report = self
            .get("/api/v1/report?group_by=campaign,affiliate&format=json")
            .await
            .context("reading the report")?;
        Ok(Counters::from_report(&report, campaign, affiliate))
    }
}

/// Verdicts of the click checks, merged over the checking tasks.
#[derive(Default)]
struct ClickChecks {
    tallies: BTreeMap<Method, Tally>,
    checked: u64,
    wrong: u64,
    samples: Vec<String>,
}

impl ClickChecks {
    fn record(&mut self, click: &SentClick, verdict: Result<Verdict, String>) {
        self.checked += 1;
        let verdict = verdict.unwrap_or_else(Verdict::Malformed);
        if let Some(expected) = &click.conversion {
            let tally = self.tallies.entry(expected.method).or_default();
            tally.expected += 1;
            tally.correct += u64::from(verdict == Verdict::Correct);
        }
        if verdict != Verdict::Correct {
            self.wrong += 1;
            if self.samples.len() < ledger::MAX_FAILURE_SAMPLES {
                self.samples.push(format!(
                    "click {} (expected {:?}): {verdict:?}",
                    click.click_id, click.conversion
                ));
            }
        }
    }
}

/// Asks the admin API about up to [`MAX_VERIFIED_CLICKS`] clicks, converting ones first.
async fn check_clicks(
    admin: &Admin,
    mut clicks: Vec<SentClick>,
    concurrency: usize,
) -> ClickChecks {
    // Converting clicks first, so an interrupted check has looked at those.
    clicks.sort_by_key(|c| c.conversion.is_none());
    let clicks = Arc::new(clicks);
    let next = Arc::new(AtomicUsize::new(0));
    let admin = Arc::new(Admin {
        client: admin.client.clone(),
        token: admin.token.clone(),
    });
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (clicks, next, admin) = (clicks.clone(), next.clone(), admin.clone());
            tokio::spawn(async move {
                let mut checks = ClickChecks::default();
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(click) = clicks.get(i) else {
                        return checks;
                    };
                    let verdict = admin
                        .get(&format!("/api/v1/clicks/{}", click.click_id))
                        .await
                        .map(|view| ledger::judge(click, &view))
                        .map_err(|e| format!("{e:#}"));
                    checks.record(click, verdict);
                }
            })
        })
        .collect();
    let mut all = ClickChecks::default();
    for task in tasks {
        let Ok(part) = task.await else {
            all.wrong += 1;
            continue;
        };
        for (method, tally) in part.tallies {
            let mine = all.tallies.entry(method).or_default();
            mine.expected += tally.expected;
            mine.correct += tally.correct;
        }
        all.checked += part.checked;
        all.wrong += part.wrong;
        for sample in part.samples {
            if all.samples.len() < ledger::MAX_FAILURE_SAMPLES {
                all.samples.push(sample);
            }
        }
    }
    all
}

/// Prints the correctness report; true when something is wrong.
async fn check(
    shared: &Shared,
    admin: Option<&Admin>,
    before: Option<Counters>,
    mut ledger: Ledger,
    concurrency: usize,
) -> anyhow::Result<bool> {
    let mut failed = false;
    println!();
    println!("correctness");
    if ledger.failures > 0 {
        failed = true;
        println!(
            "  FAIL {} requests without the expected answer, e.g.:",
            ledger.failures
        );
        for sample in &ledger.failure_samples {
            println!("    {sample}");
        }
    }
    println!(
        "  duplicates sent {}, counted {} (by the server posts' answers)",
        ledger.duplicates_sent, ledger.duplicates_counted
    );
    if ledger.duplicates_counted > 0 {
        failed = true;
    }

    let Some(admin) = admin else {
        println!("  attribution and report checks skipped: no --admin-token");
        return Ok(failed);
    };

    let after = admin
        .counters(shared.campaign_id, shared.affiliate_id)
        .await?;
    let total_clicks = ledger.counters.clicks;
    let clicks = std::mem::take(&mut ledger.clicks);
    let checks = check_clicks(admin, clicks, concurrency).await;
    for (method, tally) in checks.tallies {
        let mine = ledger.tally(method);
        mine.expected += tally.expected;
        mine.correct += tally.correct;
    }
    println!(
        "  clicks checked through /api/v1/clicks/{{id}}: {} of {total_clicks}",
        checks.checked
    );
    println!(
        "  {:<10} {:>10} {:>10} {:>9}",
        "matched_by", "expected", "correct", "accuracy"
    );
    for method in Method::ALL {
        let tally = ledger.tallies.get(&method).cloned().unwrap_or_default();
        let accuracy = if tally.expected == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.2} %",
                100.0 * tally.correct as f64 / tally.expected as f64
            )
        };
        println!(
            "  {:<10} {:>10} {:>10} {:>9}",
            method.matched_by(),
            tally.expected,
            tally.correct,
            accuracy
        );
    }
    if checks.wrong > 0 {
        failed = true;
        println!("  FAIL {} clicks not as sent, e.g.:", checks.wrong);
        for sample in &checks.samples {
            println!("    {sample}");
        }
    }

    let Some(before) = before else {
        return Ok(failed);
    };
    let got = after.since(&before);
    if ledger.uncertain > 0 {
        println!(
            "  report counters not compared: {} requests had an unknown effect",
            ledger.uncertain
        );
        return Ok(true);
    }
    let mismatches = compare_counters(&ledger.counters, &got, &shared.facts);
    let expected = &ledger.counters;
    println!(
        "  report (campaign {}, affiliate {}), expected = got unless listed: impressions {} \
         (unique {}), clicks {} (unique {}), conversions {} (approved {})",
        shared.campaign_id,
        shared.affiliate_id,
        expected.impressions,
        expected.unique_impressions,
        expected.clicks,
        expected.unique_clicks,
        expected.conversions,
        expected.approved
    );
    for (name, want, have) in &mismatches {
        println!("  FAIL report {name}: expected {want}, got {have}");
    }
    failed |= !mismatches.is_empty();
    println!(
        "  {}",
        if failed {
            "FAILED"
        } else {
            "all checks passed"
        }
    );
    Ok(failed)
}

/// The seed of a randomised test: `SEED` from the environment, else a fresh one; printed
/// so a failure can be replayed.
#[cfg(test)]
pub(crate) fn test_seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("SEED={seed}");
    seed
}
