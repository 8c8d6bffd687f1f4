//! clicktrail's HTTP front end. It owns no tracking state: it translates HTTP requests into
//! engine requests and engine outcomes into answers.

pub mod config;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;

/// Serves HTTP on `listener` until `shutdown` completes, then stops accepting, finishes
/// in-flight requests and returns. The engine is not shut down here: the caller owns it.
pub async fn run(
    _listener: tokio::net::TcpListener,
    _engine: engine::Engine,
    _config: Arc<Config>,
    _shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    todo!("server: run")
}

/// `clicktrail serve`: opens the engine on `config`, binds the listeners, prints the demo
/// links on embedded defaults, serves until SIGINT/SIGTERM, then drains and syncs.
pub async fn serve(_config: Config) -> anyhow_free::Result<()> {
    todo!("server: serve")
}

/// The server crate reports errors as boxed std errors to keep `anyhow` in the binary only.
pub mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}
