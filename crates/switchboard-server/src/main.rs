//! The `switchboard` command line.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard_server::config::LogFormat;
use switchboard_server::{Config, server, shutdown};
use tracing_subscriber::EnvFilter;

/// switchboard: real-time messaging over WebSocket.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` is the default: its flags work without the subcommand too.
    #[command(flatten)]
    serve: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Config),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Crash tests arm the store's fail points through `FAILPOINTS`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let config = match cli.command {
        Some(Command::Serve(config)) => config,
        None => cli.serve,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .init(),
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        server::run(listener, config, shutdown::signal()).await?;
        anyhow::Ok(())
    })
}
