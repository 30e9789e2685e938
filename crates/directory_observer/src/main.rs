//! `directory_observer --config PATH`: watch step directories, push file events to Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use directory_observer::config::{resolve_config_path, Config, HOME_ENV};
use ironwork_core::config::parse_duration;
use ironwork_core::telemetry::{self, LogFormat};

/// Watch step directories with inotify and push one message per file to Redis.
#[derive(Debug, Parser)]
#[command(name = "directory_observer", version)]
struct Cli {
    /// directory_observer.ini; a relative path is taken under $IRONWORK_HOME/tmp/config_auto.
    #[arg(short, long)]
    config: PathBuf,
    /// Log format: json, human or auto (human on a terminal).
    #[arg(long, default_value = "auto")]
    log_format: LogFormat,
    /// Validate the configuration, print its sections or every error, exit 0 or 2.
    #[arg(long)]
    check: bool,
    /// Serve /health and /metrics on this address (overrides http_listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// How long SIGTERM waits for buffered events (overrides shutdown_grace).
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init("directory_observer", cli.log_format) {
        eprintln!("directory_observer: {e}");
        return ExitCode::from(2);
    }
    let home = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()).map(PathBuf::from);
    let path = resolve_config_path(&cli.config, home.as_deref());
    let config = match Config::load_with_home(&path, home.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("directory_observer: {} refused:\n{errors}", path.display());
            return ExitCode::from(2);
        }
    };
    if cli.check {
        for w in &config.warnings {
            println!("warning: {w}");
        }
        for s in &config.steps {
            println!("[{}] {} -> {}", s.section, s.directory.display(), s.queue);
        }
        return ExitCode::SUCCESS;
    }
    let (shutdown, _signals) = match ironwork_core::shutdown::spawn_signal_task() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("directory_observer: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = directory_observer::RunOptions::new(shutdown.token);
    (options.force, options.reload) = (shutdown.force, Some(shutdown.reload));
    (options.listen, options.grace) = (cli.listen, cli.grace);
    match directory_observer::run_with(config, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "directory_observer failed");
            ExitCode::FAILURE
        }
    }
}
