//! The `clicktrail` binary: parse the command line, load config, call into the crates.

mod loadgen;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "clicktrail",
    version,
    about = "High-throughput click and conversion tracking for affiliate networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the tracker. Without --config it starts on embedded defaults with a demo.
    Serve {
        /// TOML configuration file (SPEC section 9); environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Start even if a log is corrupt before its tail, dropping the damaged records and
        /// logging exactly what was dropped (without it, start-up stops and names the
        /// segment and offset).
        #[arg(long)]
        repair: bool,
    },
    /// Drive a running clicktrail with a seeded, realistic mix and check what it recorded.
    Loadgen(loadgen::Args),
    /// Inspect the write-ahead log of a data directory.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Check every segment and snapshot; exits non-zero on corruption.
    Verify {
        /// The data directory (storage.data_dir).
        dir: PathBuf,
    },
    /// Print every record as a JSON line on stdout.
    Dump {
        /// The data directory (storage.data_dir).
        dir: PathBuf,
    },
}

/// Turns transparent huge pages off for the server process. mimalloc asks for them on its
/// arenas, and the first write to each 2 MiB page then clears it whole inside a page fault:
/// on the CI machine's VM that held the shard's task 4.5 ms about every 37 k clicks, and
/// 14 / 18 / 37 / 78 ms where a click index began to grow (at 197 k / 393 k / 786 k /
/// 1.57 M clicks on one shard), with every connection of the shard waiting. With 4 KiB
/// pages the same zeroing comes a page at a time; measured over 2 M clicks on one shard:
/// 6 answers slower than 3 ms instead of 40, and the same clicks per second.
/// (`MIMALLOC_ALLOW_THP=0` does the same from outside.)
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "could not turn transparent huge pages off");
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Logs go to stderr; RUST_LOG overrides the default level. Request values are escaped
    // by the server before they reach a log line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve { config, repair } => {
            no_huge_pages();
            let mut config =
                server::Config::load(config.as_deref()).context("loading configuration")?;
            config.storage.repair = repair;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime
                .block_on(server::serve(config))
                .map_err(|e| anyhow::anyhow!(e))
        }
        Command::Loadgen(args) => loadgen::run(args),
        Command::Wal {
            command: WalCommand::Verify { dir },
        } => {
            let summary = engine::inspect::verify(&dir)
                .with_context(|| format!("verifying {}", dir.display()))?;
            println!("{summary}");
            Ok(())
        }
        Command::Wal {
            command: WalCommand::Dump { dir },
        } => {
            let stdout = std::io::stdout();
            match engine::inspect::dump(&dir, &mut stdout.lock()) {
                // `clicktrail wal dump DIR | head` closes the pipe early: that is the reader
                // being done, not a failure.
                Err(engine::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(())
                }
                result => result.with_context(|| format!("dumping {}", dir.display())),
            }
        }
    }
}
