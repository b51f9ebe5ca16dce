//! The `switchboard` command line.

use anyhow::Context as _;
use switchboard_server::config::LogFormat;
use switchboard_server::config::cli::{self, Action};
use switchboard_server::config::file::ConfigError;
use switchboard_server::{server, shutdown};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = match cli::load(std::env::args_os()) {
        Ok(Action::Serve(config)) => *config,
        Ok(Action::ShowConfig(text)) => {
            print!("{text}");
            return Ok(());
        }
        Err(ConfigError::Command(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    // Crash tests arm the store's fail points through `FAILPOINTS`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
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
