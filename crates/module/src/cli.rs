//! The `ironwork` command line: `init`, `generate`, `start`, `stop`, `status`, `demo`, `apps`,
//! `plugins`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ironwork_core::config::parse_duration;

use crate::home::Home;

/// `ironwork`: set up and run a runtime home.
#[derive(Debug, Parser)]
#[command(name = "ironwork", version, about = "Set up and run an ironwork runtime home")]
pub struct Cli {
    /// The runtime home [default: $IRONWORK_HOME].
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a runtime home with a commented config/ironwork.ini.
    Init {
        /// Where (created if missing).
        dir: PathBuf,
    },
    /// Generate tmp/config_auto/ from config/ and plugins/ (refused with every error listed).
    Generate,
    /// Generate, start ringmaster in the background, wait for every watcher, print the status.
    Start {
        /// Give up waiting after this long.
        #[arg(long, default_value = "60", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Stop everything in order (steps first, Redis last).
    Stop {
        /// Give up waiting after this long.
        #[arg(long, default_value = "120", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Watchers, queue depths, the configuration's state, recent errors; exit 1 when something
    /// is down or the configuration was refused.
    Status,
    /// Run one watcher of the generated ringmaster.ini in the foreground, in place of this
    /// process, as ringmaster would start it (what the systemd units and containers run).
    Exec {
        /// `NAME[:WID]`: the watcher and its worker number (1 by default).
        #[arg(required_unless_present = "list")]
        watcher: Option<String>,
        /// Print every worker of the generated ringmaster.ini (`NAME:WID`, one per line).
        #[arg(long)]
        list: bool,
    },
    /// The whole stack on a temporary home with a demo plugin, shown working, then stopped.
    Demo {
        /// Keep the temporary home afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// The plugins' apps behind nginx.
    Apps {
        /// What to do.
        #[command(subcommand)]
        command: AppsCommand,
    },
    /// Create, list, install and remove plugins.
    Plugins {
        /// What to do.
        #[command(subcommand)]
        command: crate::plugin_commands::PluginsCommand,
    },
}

/// `ironwork apps …`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// One plugin's per-app figures since the previous run (requests, status classes, latency
    /// quantiles, live workers), as the JSON points a SCRIPT collection prints.
    Stats {
        /// The plugin.
        #[arg(long)]
        plugin: String,
        /// Who reads: each reader has its own place in the log (the generated collection is
        /// `collector`).
        #[arg(long, default_value = "cli", value_parser = consumer_name)]
        consumer: String,
    },
    /// Print the built-in nginx template (copy it to config/nginx.conf.template to change it).
    Template,
}

fn consumer_name(v: &str) -> Result<String, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        Ok(v.to_string())
    } else {
        Err("letters, digits, '_' or '-'".into())
    }
}

/// Where the ironwork binaries are: `[binaries] dir`, else beside this executable.
fn bin_dir(settings: &crate::settings::Settings) -> PathBuf {
    settings.bin_dir().unwrap_or_else(|_| PathBuf::from("/usr/local/bin"))
}

fn home(cli_home: Option<PathBuf>) -> anyhow::Result<Home> {
    match cli_home {
        Some(h) => Ok(Home::new(h)),
        None => Home::from_env().context("give --home or set IRONWORK_HOME"),
    }
}

/// Generate the home's configuration; returns whether a file changed.
pub fn generate(home: &Home) -> anyhow::Result<(bool, PathBuf)> {
    let settings = crate::settings::Settings::load(home).map_err(|e| anyhow::anyhow!("configuration refused:\n{e}"))?;
    let home = &settings.apply(home.clone());
    let (plugins, errors) = crate::plugin::load_all(home);
    if !errors.is_empty() {
        anyhow::bail!("plugins refused:\n{errors}");
    }
    let bin = bin_dir(&settings);
    let generated = crate::generate::generate(home, &settings, &plugins, &bin);
    generated
        .validate(home)
        .map_err(|e| anyhow::anyhow!("generated configuration refused:\n  {}", e.join("\n  ")))?;
    let changed = generated.write(home)?;
    Ok((changed, bin))
}

/// Generate, and when the stack runs and something changed, have ringmaster and the observer
/// re-read their files at once (conf_monitor would not: the files already match).
pub async fn generate_and_apply(home: &Home) -> anyhow::Result<(bool, PathBuf)> {
    let (changed, bin) = generate(home)?;
    if changed && crate::lifecycle::watchers(home).await.is_some() {
        crate::lifecycle::apply(home).await?;
    }
    Ok((changed, bin))
}

/// Run a parsed command line; returns the process exit code.
pub async fn execute(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Init { dir } => {
            let home = Home::init(&dir)?;
            println!("runtime home ready: {}", home.root.display());
            println!(
                "edit {} then run: ironwork --home {} start",
                home.ironwork_ini().display(),
                home.root.display()
            );
            Ok(0)
        }
        Command::Generate => {
            let home = home(cli.home)?;
            let (changed, _) = generate_and_apply(&home).await?;
            println!(
                "{} {}",
                home.config_auto_dir().display(),
                if changed { "updated" } else { "unchanged" }
            );
            Ok(0)
        }
        Command::Start { timeout } => {
            let home = home(cli.home)?;
            generate_and_apply(&home).await?;
            let settings = crate::settings::Settings::load(&home).map_err(|e| anyhow::anyhow!("{e}"))?;
            let ringmaster = bin_dir(&settings).join("ringmaster");
            let report = crate::lifecycle::start(&home, &ringmaster, &home.ringmaster_ini(), timeout).await?;
            print!("{report}");
            Ok(if report.healthy() { 0 } else { 1 })
        }
        Command::Stop { timeout } => {
            let home = home(cli.home)?;
            if crate::lifecycle::stop(&home, timeout).await? {
                println!("stopped");
            } else {
                println!("ringmaster was not running");
            }
            Ok(0)
        }
        Command::Exec { watcher, list } => {
            let home = home(cli.home)?;
            if list {
                for worker in crate::lifecycle::workers(&home)? {
                    println!("{worker}");
                }
                return Ok(0);
            }
            let spec = watcher.unwrap_or_default();
            Err(crate::lifecycle::exec(&home, &spec))
        }
        Command::Demo { keep } => {
            crate::demo::run(keep).await?;
            Ok(0)
        }
        Command::Status => {
            let home = home(cli.home)?;
            let report = crate::lifecycle::status(&home).await?;
            print!("{report}");
            Ok(if report.healthy() { 0 } else { 1 })
        }
        Command::Apps {
            command: AppsCommand::Template,
        } => {
            print!("{}", crate::nginx::TEMPLATE);
            Ok(0)
        }
        Command::Apps {
            command: AppsCommand::Stats { plugin, consumer },
        } => {
            let home = home(cli.home)?;
            let settings = crate::settings::Settings::load(&home).map_err(|e| anyhow::anyhow!("{e}"))?;
            let home = settings.apply(home);
            let dir = home.plugin_dir(&plugin);
            let ovr = home.plugin_override(&plugin);
            let p = crate::plugin::Plugin::load(&dir, ovr.is_file().then_some(ovr.as_path()))
                .map_err(|e| anyhow::anyhow!("plugin {plugin}:\n{e}"))?;
            crate::app_stats::run(&home, &p, &consumer)?;
            Ok(0)
        }
        Command::Plugins { command } => crate::plugin_commands::run(&home(cli.home)?, command),
    }
}
