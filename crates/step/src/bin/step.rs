//! `step`: one step worker (`run`, `switch`) or the garbage collector (`gc`).

use std::process::ExitCode;

use clap::Parser;
use ironwork_core::telemetry::{self, LogFormat};
use ironwork_step::cli::Cli;

// Two threads: file copies and other blocking work on one never stall the heartbeat, the
// command's output pumps or signal handling on the other.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format.parse::<LogFormat>() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("step: --log-format: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init("step", format) {
        eprintln!("step: {e}");
        return ExitCode::from(2);
    }
    let (shutdown, _guard) = match ironwork_core::shutdown::spawn_signal_task() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("step: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    match ironwork_step::execute(cli, shutdown.token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "step stopped");
            ExitCode::FAILURE
        }
    }
}
