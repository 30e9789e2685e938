//! `ringmaster CONFIG`: supervise the watchers of a circus ini file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ironwork_core::telemetry::{self, LogFormat};

/// ironwork's process supervisor (reads circus ini files).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The configuration file (circus ini).
    config: PathBuf,
    /// Log format: json, human or auto (human on a terminal).
    #[arg(long, default_value = "auto")]
    log_format: LogFormat,
    /// Validate the configuration, print the watchers, and exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = telemetry::init("ringmaster", args.log_format) {
        eprintln!("ringmaster: {e}");
        return ExitCode::from(2);
    }
    let config = match ringmaster::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("ringmaster: {} refused:\n{errors}", args.config.display());
            return ExitCode::from(2);
        }
    };
    if args.check {
        for w in &config.warnings {
            println!("warning: {w}");
        }
        for w in &config.watchers {
            println!(
                "{} x{} priority={} : {} {}",
                w.name, w.numprocesses, w.priority, w.cmd, w.args
            );
        }
        return ExitCode::SUCCESS;
    }
    let (shutdown, _signals) = match ironwork_core::shutdown::spawn_signal_task() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringmaster: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match ringmaster::run(args.config, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ringmaster failed");
            ExitCode::FAILURE
        }
    }
}
