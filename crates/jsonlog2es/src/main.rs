//! `jsonlog2es --config FILE`: follow JSON-lines files into Elasticsearch.

use std::process::ExitCode;

use clap::Parser;
use jsonlog2es::cli::{self, Cli};
use jsonlog2es::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::main("jsonlog2es", cli, |cli, home| {
        let path = match (&cli.config, home) {
            (Some(p), _) => p.clone(),
            (None, Some(h)) => h.join("config/jsonlog2es.ini"),
            (None, None) => std::path::PathBuf::from("jsonlog2es.ini"),
        };
        let config = Config::load(&path, home, cli.url.as_deref())?;
        if cli.print_config {
            print!("{}", std::fs::read_to_string(&path).unwrap_or_default());
            std::process::exit(0);
        }
        Ok(config)
    })
    .await
}
