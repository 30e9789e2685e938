//! `ironwork`: set up and run a runtime home (`init`, `generate`, `start`, `stop`, `status`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = ironwork::cli::Cli::parse();
    match ironwork::cli::execute(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ironwork: {e:#}");
            ExitCode::from(2)
        }
    }
}
