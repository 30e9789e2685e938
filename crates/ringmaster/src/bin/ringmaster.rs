//! `ringmaster CONFIG`: supervise the watchers of a circus ini file.
//!
//! One thread runs the supervision loop, the reaper and the control socket: nothing here is
//! CPU-bound, and a single-threaded runtime keeps the resident memory small.

use std::path::PathBuf;
use std::process::ExitCode;

use ironwork_core::telemetry::{self, LogFormat};

const USAGE: &str = "usage: ringmaster [--log-format json|human|auto] [--check] CONFIG

Supervise the watchers of a circus ini file.
  --log-format F  json, human or auto (human on a terminal; the default)
  --check         validate the configuration, print the watchers and warnings, exit";

/// The command line (parsed by hand: three options do not need a parser crate in every
/// supervisor's resident memory).
struct Args {
    config: PathBuf,
    log_format: LogFormat,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut log_format, mut check) = (None, LogFormat::auto(), false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--log-format" => log_format = args.next().ok_or("--log-format needs a value")?.parse()?,
            "-h" | "--help" => return Err(String::new()),
            "-V" | "--version" => {
                println!("ringmaster {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            s if s.starts_with("--log-format=") => log_format = s["--log-format=".len()..].parse()?,
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if config.is_some() => return Err(format!("unexpected argument {a}")),
            _ => config = Some(PathBuf::from(a)),
        }
    }
    let config = config.ok_or("missing CONFIG")?;
    Ok(Args {
        config,
        log_format,
        check,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // One malloc arena: each thread that starts processes would otherwise keep its own arena
    // resident for good, and a supervisor should stay small.
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ringmaster: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
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
