//! clicktrail's HTTP front end. It owns no tracking state: it translates HTTP requests into
//! engine requests and engine outcomes into answers.
//!
//! Modules, one noun each: [`routes`] (routing and the tracking surface), [`params`],
//! [`cookies`], [`client_ip`], [`pixels`], [`admin`], [`report`], [`metrics`], [`config`],
//! [`limits`], [`body`], [`reply`], [`outcome`], [`logging`], [`demo`], [`connection`].

pub mod admin;
pub mod body;
pub mod client_ip;
pub mod config;
pub mod connection;
pub mod cookies;
pub mod demo;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod params;
pub mod pixels;
pub mod reply;
pub mod report;
pub mod routes;
#[cfg(test)]
mod seed;
pub mod timers;

use crate::limits::{DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES};
use crate::routes::{App, Surface};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub use config::Config;

/// Pause after a failed `accept` (usually out of file descriptors) before trying again, so
/// the loop does not spin while connections close.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, finishes
/// in-flight requests and returns. The engine is not shut down here: the caller owns it.
///
/// When `config.admin.listen` is set, this listener serves only the public routes; serve
/// the admin API and metrics with [`run_admin`].
pub async fn run(
    listener: tokio::net::TcpListener,
    engine: engine::Engine,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let surface = if config.admin.listen.is_empty() {
        Surface::All
    } else {
        Surface::Public
    };
    serve_listener(listener, App::new(engine, config), surface, shutdown).await
}

/// Serves the admin API, `/metrics` and the health checks on a listener of their own
/// (`admin.listen`), until `shutdown` completes.
pub async fn run_admin(
    listener: tokio::net::TcpListener,
    engine: engine::Engine,
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_listener(listener, App::new(engine, config), Surface::Admin, shutdown).await
}

async fn serve_listener(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    surface: Surface,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Install the process-wide recorder before the first request records anything.
    let _ = metrics::handle();
    let _anchor = timers::TimerAnchor::start();
    let mut builder = http1::Builder::new();
    builder
        // Without a timer hyper silently ignores the header read timeout.
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_header_size(MAX_HEAD_BYTES);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| routes::serve(app.clone(), surface, request, peer));
        let stream = connection::TimedStream::new(stream);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            metrics::connections().increment(1.0);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
            metrics::connections().decrement(1.0);
            drop(permit);
        });
    }
    app.start_draining();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish in time; closing them");
        }
    }
    Ok(())
}

/// `clicktrail serve`: opens the engine on `config`, binds the listeners, prints the demo
/// links on embedded defaults, serves until SIGINT/SIGTERM, then drains and syncs.
pub async fn serve(mut config: Config) -> anyhow_free::Result<()> {
    // Before recovery, so the engine's recovery metrics are recorded.
    let _ = metrics::handle();
    if config.embedded_defaults && config.admin.token.is_empty() {
        config.admin.token = demo::admin_token(&config.storage.data_dir).map_err(|e| {
            format!(
                "cannot keep the admin token in {}: {e}",
                config.storage.data_dir.display()
            )
        })?;
    }
    // Bind first: a port already in use fails before recovery, and on embedded defaults
    // the demo's links need the real port when the listen port is 0.
    let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
    let admin_listener = if config.admin.listen.is_empty() {
        None
    } else {
        Some(tokio::net::TcpListener::bind(&config.admin.listen).await?)
    };
    let local = listener.local_addr()?;
    if config.embedded_defaults && config.server.public_url == "http://localhost:0" {
        config.server.public_url = format!("http://localhost:{}", local.port());
        let (campaigns, affiliates) = demo::catalog(&config.server.public_url);
        config.campaigns = campaigns;
        config.affiliates = affiliates;
    }
    let engine_config = engine::EngineConfig {
        storage: config.storage.clone(),
        dispatch: config.dispatch.clone(),
        campaigns: config.campaigns.clone(),
        affiliates: config.affiliates.clone(),
        webhooks: config.webhooks.clone(),
    };
    let started = std::time::Instant::now();
    let engine = tokio::task::spawn_blocking(move || {
        engine::Engine::open(engine_config, Arc::new(engine::SystemClock))
    })
    .await??;
    tracing::info!(
        data_dir = %config.storage.data_dir.display(),
        recovery_ms = started.elapsed().as_millis() as u64,
        "engine recovered"
    );
    tracing::info!(listen = %local, "clicktrail listening");
    if let Some(admin) = &admin_listener {
        tracing::info!(listen = %admin.local_addr()?, "admin API listening");
    }
    if config.admin_token().is_none() {
        tracing::info!("admin API off: set admin.token or CLICKTRAIL_ADMIN_TOKEN");
    }
    if config.embedded_defaults {
        let public = config.server.public_url.trim_end_matches('/').to_string();
        tracing::info!("demo: open {}", demo::tracking_link(&public));
        tracing::info!("demo: then buy on the landing page and see {public}/demo/report");
        tracing::info!("admin token: {}", config.admin.token);
        tracing::info!(
            "report: curl -H 'Authorization: Bearer {}' '{public}/api/v1/report?group_by=day,campaign,affiliate'",
            config.admin.token
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let config = Arc::new(config);
    let app = App::new(engine.clone(), config);
    match admin_listener {
        None => serve_listener(listener, app, Surface::All, stopped(stop_rx)).await?,
        Some(admin) => {
            let public = serve_listener(
                listener,
                app.clone(),
                Surface::Public,
                stopped(stop_rx.clone()),
            );
            let admin = serve_listener(admin, app, Surface::Admin, stopped(stop_rx));
            tokio::try_join!(public, admin)?;
        }
    }
    engine.shutdown().await;
    tracing::info!("stopped; logs synced");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. If the handlers cannot be installed, the server runs
/// until killed, which is no worse than a server without graceful shutdown.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The server crate reports errors as boxed std errors to keep `anyhow` in the binary only.
pub mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}
