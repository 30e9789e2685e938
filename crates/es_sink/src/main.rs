//! `es_sink --listen ADDR [--threads N] [--keep-documents]`: an Elasticsearch-compatible
//! `_bulk` sink. Prints `listening on ADDR` once bound; SIGTERM or SIGINT stops it.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use ironwork_core::telemetry::{self, LogFormat};

/// Answer Elasticsearch `_bulk`, `_count` and `_cat` requests, keeping only ids and counts.
#[derive(Debug, Parser)]
#[command(name = "es_sink", version)]
struct Cli {
    /// Address to listen on (port 0: any free port, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Keep the documents (memory grows with every document).
    #[arg(long)]
    keep_documents: bool,
    /// Log format: json, human or auto (human on a terminal).
    #[arg(long, default_value = "auto")]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init("es_sink", cli.log_format) {
        eprintln!("es_sink: {e}");
        return ExitCode::from(2);
    }
    let options = es_sink::Options {
        keep_documents: cli.keep_documents,
        threads: cli.threads,
        ..es_sink::Options::default()
    };
    let result = es_sink::runtime(cli.threads).and_then(|rt| {
        rt.block_on(async {
            // Handlers first: a harness may signal as soon as it reads the line.
            let (shutdown, _signals) = ironwork_core::shutdown::spawn_signal_task()?;
            let listener = tokio::net::TcpListener::bind(cli.listen).await?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "listening on {}", listener.local_addr()?)?;
            stdout.flush()?;
            es_sink::serve(listener, &options, shutdown.token).await;
            Ok(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("es_sink: {e}");
            ExitCode::FAILURE
        }
    }
}
