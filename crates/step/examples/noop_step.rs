//! A Rust-native step built on the library: it accepts every file, optionally moving it into a
//! directory first (`--into DIR`), otherwise the worker simply removes it.
//!
//! `cargo run -p ironwork-step --example noop_step -- --plugin bench --step sink [--into DIR]`
//! takes every option of `step run` (see `ironwork_step::cli::WorkerArgs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ironwork_core::telemetry::{self, LogFormat};
use ironwork_core::Redis;
use ironwork_step::cli::WorkerArgs;
use ironwork_step::{Failure, Step, StepFile};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    worker: WorkerArgs,
    /// Move each file here (under its original name) instead of dropping it.
    #[arg(long)]
    into: Option<PathBuf>,
}

struct Noop {
    into: Option<PathBuf>,
}

impl Step for Noop {
    async fn process(&mut self, file: &mut StepFile) -> Result<(), Failure> {
        if let Some(dir) = &self.into {
            let name = file.original_basename().to_string();
            file.move_to_dir(dir, &name);
        }
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if telemetry::init("noop_step", LogFormat::auto()).is_err() {
        return ExitCode::from(2);
    }
    let cfg = match args.worker.to_config(Some("noop")) {
        Ok(cfg) => cfg,
        Err(errors) => {
            eprintln!("noop_step: {}", errors.join("; "));
            return ExitCode::from(2);
        }
    };
    let Ok((shutdown, _guard)) = ironwork_core::shutdown::spawn_signal_task() else {
        return ExitCode::from(2);
    };
    let result = match Redis::open(&args.worker.redis_url()) {
        Ok(redis) => {
            ironwork_step::serve(cfg, args.worker.listen, redis, Noop { into: args.into }, shutdown.token).await
        }
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "noop_step stopped");
            ExitCode::FAILURE
        }
    }
}
