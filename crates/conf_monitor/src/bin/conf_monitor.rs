//! `conf_monitor --home DIR`: regenerate tmp/config_auto/ when the configuration changes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ironwork_core::config::parse_duration;
use ironwork_core::telemetry::{self, LogFormat};

/// Keep tmp/config_auto/ in step with config/ and plugins/, and tell the daemons.
#[derive(Debug, Parser)]
#[command(name = "conf_monitor", version)]
struct Cli {
    /// The runtime home [default: $IRONWORK_HOME].
    #[arg(long)]
    home: Option<PathBuf>,
    /// Redis URL or socket [default: ironwork.ini's [redis], else <home>/var/redis.sock].
    #[arg(long)]
    redis: Option<String>,
    /// How often the sources are looked at.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    poll: Duration,
    /// How long they must stay unchanged before a regeneration.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    quiet: Duration,
    /// Log format: json, human or auto.
    #[arg(long, default_value = "auto")]
    log_format: LogFormat,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init("conf_monitor", cli.log_format) {
        eprintln!("conf_monitor: {e}");
        return ExitCode::from(2);
    }
    let Some(root) = cli
        .home
        .or_else(|| std::env::var_os("IRONWORK_HOME").map(PathBuf::from))
    else {
        eprintln!("conf_monitor: give --home or set IRONWORK_HOME");
        return ExitCode::from(2);
    };
    let home = ironwork::home::Home::new(root);
    let settings = ironwork::settings::Settings::load(&home).ok();
    let url = cli.redis.unwrap_or_else(|| match &settings {
        Some(s) => s.redis.url_for_daemons(&home),
        None => format!("unix://{}", home.redis_socket().display()),
    });
    let bin_dir = match &settings {
        Some(s) => s.bin_dir().unwrap_or_else(|_| PathBuf::from("/usr/local/bin")),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin")),
    };
    let Ok((shutdown, _guard)) = ironwork_core::shutdown::spawn_signal_task() else {
        eprintln!("conf_monitor: cannot install signal handlers");
        return ExitCode::from(2);
    };
    let options = conf_monitor::Options {
        bin_dir,
        poll: cli.poll,
        quiet: cli.quiet,
    };
    let result = match ironwork_core::Redis::open(&url) {
        Ok(redis) => conf_monitor::run(home, redis, options, shutdown.token).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "conf_monitor stopped");
            ExitCode::FAILURE
        }
    }
}
