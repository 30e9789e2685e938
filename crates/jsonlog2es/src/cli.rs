//! The command line shared by `jsonlog2es` and `mflog2mfadmin`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use ironwork_core::config::ConfigErrors;
use ironwork_core::telemetry::{self, LogFormat};

use crate::checkpoint::Checkpoints;
use crate::config::Config;

/// Follow JSON-lines log files and index them into Elasticsearch with no loss and no duplicates.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Configuration file (jsonlog2es: default <home>/config/jsonlog2es.ini).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Runtime home: relative paths resolve under it (default $IRONWORK_HOME).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Elasticsearch URL when the configuration sets none.
    #[arg(long)]
    pub url: Option<String>,
    /// Log format: json, human or auto (human on a terminal).
    #[arg(long, default_value = "auto")]
    pub log_format: LogFormat,
    /// Validate the configuration, print every file it resolves to with its checkpoint, exit 0 or 2.
    #[arg(long)]
    pub check: bool,
    /// Print the configuration in use (mflog2mfadmin: the built-in one) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Serve /health and /metrics on this address (overrides [state] http_listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

impl Cli {
    /// `--home`, else `$IRONWORK_HOME`.
    pub fn home(&self) -> Option<PathBuf> {
        self.home.clone().or_else(|| {
            std::env::var_os("IRONWORK_HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
        })
    }
}

/// Everything after argument parsing: load, check or run, and the exit code.
pub async fn main(
    name: &str,
    cli: Cli,
    load: impl FnOnce(&Cli, Option<&Path>) -> Result<Config, ConfigErrors>,
) -> ExitCode {
    if let Err(e) = telemetry::init(name, cli.log_format) {
        eprintln!("{name}: {e}");
        return ExitCode::from(2);
    }
    let home = cli.home();
    let mut config = match load(&cli, home.as_deref()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{name}: configuration refused:\n{errors}");
            return ExitCode::from(2);
        }
    };
    if cli.listen.is_some() {
        config.listen = cli.listen;
    }
    if cli.check {
        return check(&config);
    }
    let (shutdown, _signals) = match ironwork_core::shutdown::spawn_signal_task() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut reload = shutdown.reload.clone();
    tokio::spawn(async move {
        while reload.changed().await.is_ok() {
            tracing::info!("SIGHUP: configuration changes take effect at the next start");
        }
    });
    let options = crate::RunOptions {
        token: shutdown.token,
        force: shutdown.force,
    };
    match crate::run(config, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &Config) -> ExitCode {
    let checkpoints = match Checkpoints::load(&config.state.checkpoint_file()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("checkpoints: {e}");
            return ExitCode::from(2);
        }
    };
    let resume = checkpoints.entries().map(|e| (e.key, e.position())).collect();
    println!("elasticsearch {}", config.elasticsearch.url.display());
    println!(
        "checkpoints {} ({} entries)",
        config.state.checkpoint_file().display(),
        checkpoints.len()
    );
    for f in crate::tail::describe(config, &resume) {
        let position = match (f.key, f.checkpoint) {
            (None, _) => "waiting for its first line".to_string(),
            (Some(_), Some(at)) => format!("checkpoint {}/{} bytes (epoch {})", at.offset, f.size, at.epoch),
            (Some(_), None) => format!("no checkpoint, {} bytes", f.size),
        };
        println!("[input:{}] {} {position}", f.input, f.path.display());
    }
    ExitCode::SUCCESS
}
