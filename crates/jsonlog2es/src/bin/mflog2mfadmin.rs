//! `mflog2mfadmin --home DIR --url URL`: the daemons' own logs into the admin Elasticsearch.

use std::process::ExitCode;

use clap::Parser;
use jsonlog2es::cli::{self, Cli};
use jsonlog2es::config::Config;
use jsonlog2es::mflog;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        print!("{}", mflog::default_ini());
        return ExitCode::SUCCESS;
    }
    cli::main("mflog2mfadmin", cli, |cli, home| {
        let home = home.unwrap_or(std::path::Path::new("."));
        match &cli.config {
            Some(path) => Config::load(path, Some(home), cli.url.as_deref()),
            None => mflog::config(home, cli.url.as_deref()),
        }
    })
    .await
}
