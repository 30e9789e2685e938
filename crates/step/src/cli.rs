//! The `step` command line: `step run … -- CMD ARGS…` (a plugin command step), `step switch …`
//! (the built-in switch) and `step gc …` (the garbage collector). Option names follow Metwork's
//! step keys (`--failure-policy`, `--retry-total`, …) and accept its spellings
//! (`--step-name`, `--redis-unix-socket-path`). [`WorkerArgs`] is public so Rust-native steps
//! built on this crate take the same options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ironwork_core::config::parse_duration;
use ironwork_core::lease::node_name;

use crate::layout::{valid_name, DataDir};
use crate::policy::{FailurePolicy, Policies, RetryPolicy};
use crate::switch::NoMatchPolicy;
use crate::worker::WorkerConfig;

/// `step`: ironwork's step worker.
#[derive(Debug, Parser)]
#[command(
    name = "step",
    version,
    about = "ironwork step worker: pops a step queue and processes each file"
)]
pub struct Cli {
    /// Log format: json, human or auto.
    #[arg(long, global = true, default_value = "auto")]
    pub log_format: String,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The three kinds of worker.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a plugin command on every file: CMD ARGS... FILE.
    Run(RunArgs),
    /// The built-in switch: copy or hard-link files to the plugin steps their rules name.
    Switch(SwitchArgs),
    /// Remove old leftovers from trash/ and tmp/.
    Gc(GcArgs),
}

/// `step run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Common worker options.
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Kill the command (SIGTERM to its process group, then SIGKILL) after this long.
    #[arg(long, default_value = "600", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Wait between SIGTERM and SIGKILL on timeout.
    #[arg(long, default_value = "5", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// The command and its arguments; the file path is appended.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `step switch`.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Common worker options (plugin defaults to `switch`).
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// The rules file (`tmp/config_auto/switch_rules.ini`).
    #[arg(long, alias = "rules-file")]
    pub rules: PathBuf,
    /// delete or keep (in trash/<plugin>.nomatch/) files no rule matches.
    #[arg(long, default_value = "delete")]
    pub no_match_policy: NoMatchPolicy,
    /// Keep unmatched files under their original base name instead of a unique one.
    #[arg(long)]
    pub no_match_keep_original_basename: bool,
}

/// `step gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// The data directory [default: $IRONWORK_HOME/var/in].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Remove kept files older than this.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub trash_max_age: Duration,
    /// Remove tmp leftovers older than this.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub tmp_max_age: Duration,
    /// Time between passes.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub every: Duration,
    /// One pass, then exit.
    #[arg(long)]
    pub once: bool,
}

/// Options every step worker takes.
#[derive(Debug, Args, Clone)]
pub struct WorkerArgs {
    /// The plugin this step belongs to.
    #[arg(long)]
    pub plugin: Option<String>,
    /// The step's name within the plugin.
    #[arg(long, alias = "step-name", default_value = "main")]
    pub step: String,
    /// Redis URL or unix socket path [default: $IRONWORK_REDIS, else $IRONWORK_HOME/var/redis.sock].
    #[arg(long, alias = "redis-unix-socket-path")]
    pub redis: Option<String>,
    /// The data directory [default: $IRONWORK_HOME/var/in].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Further directories messages may point into (a step's watched_directories).
    #[arg(long = "watched-directory")]
    pub watched_directories: Vec<PathBuf>,
    /// The queue [default: step.<plugin>.<step>].
    #[arg(long)]
    pub queue: Option<String>,
    /// Consumer id, stable across restarts [default: <host>.<RINGMASTER_WID or pid>].
    #[arg(long)]
    pub consumer: Option<String>,
    /// Most messages taken per pop.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// keep, delete or move.
    #[arg(long, default_value = "keep")]
    pub failure_policy: String,
    /// With move: `plugin/step` or an absolute directory.
    #[arg(long)]
    pub failure_policy_move_dest_dir: Option<String>,
    /// Retries after the first failure (0: none).
    #[arg(long, default_value_t = 0)]
    pub retry_total: u32,
    /// Wait before the first retry.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub retry_min_wait: Duration,
    /// Longest wait between retries.
    #[arg(long, default_value = "120", value_parser = parse_duration)]
    pub retry_max_wait: Duration,
    /// Backoff added, doubling each retry.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub retry_backoff: Duration,
    /// Files that entered more steps than this are kept in the trash (loop guard).
    #[arg(long, default_value_t = 1000)]
    pub step_limit: u64,
    /// How long file tags live after their last change.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub tags_ttl: Duration,
    /// Serve /health and /metrics on this address (e.g. 127.0.0.1:9101).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

impl WorkerArgs {
    /// The Redis URL to use.
    pub fn redis_url(&self) -> String {
        let from_env = std::env::var("IRONWORK_REDIS").ok().filter(|v| !v.is_empty());
        self.redis.clone().or(from_env).unwrap_or_else(|| {
            let home = std::env::var_os("IRONWORK_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| ".".into());
            format!("unix://{}", home.join("var").join("redis.sock").display())
        })
    }

    /// Validate into a worker configuration; `default_plugin` applies when `--plugin` is absent.
    /// Every problem is reported.
    pub fn to_config(&self, default_plugin: Option<&str>) -> Result<WorkerConfig, Vec<String>> {
        let mut errors = Vec::new();
        let plugin = self
            .plugin
            .as_deref()
            .or(default_plugin)
            .unwrap_or_default()
            .to_string();
        if !valid_name(&plugin) {
            errors.push(format!("--plugin {plugin:?}: letters, digits, '_' or '-' required"));
        }
        if !valid_name(&self.step) {
            errors.push(format!("--step {:?}: letters, digits, '_' or '-' required", self.step));
        }
        let failure = FailurePolicy::parse(&self.failure_policy, self.failure_policy_move_dest_dir.as_deref())
            .map_err(|e| errors.push(format!("--failure-policy: {e}")))
            .ok();
        if self.batch == 0 {
            errors.push("--batch must be at least 1".into());
        }
        if self.retry_min_wait > self.retry_max_wait {
            errors.push("--retry-min-wait is longer than --retry-max-wait".into());
        }
        for dir in &self.watched_directories {
            if !dir.is_absolute() {
                errors.push(format!("--watched-directory {}: must be absolute", dir.display()));
            }
        }
        let Some(failure) = failure.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let root = self.data_dir.clone().unwrap_or_else(DataDir::default_root);
        let root = std::path::absolute(&root).unwrap_or(root);
        let queue = self
            .queue
            .clone()
            .unwrap_or_else(|| format!("step.{plugin}.{}", self.step));
        let consumer = self.consumer.clone().unwrap_or_else(|| {
            let slot = std::env::var("RINGMASTER_WID").unwrap_or_else(|_| format!("pid{}", std::process::id()));
            format!("{}.{slot}", node_name())
        });
        Ok(WorkerConfig {
            plugin,
            step: self.step.clone(),
            queue,
            consumer,
            data: DataDir::new(root, self.watched_directories.clone()),
            batch: self.batch,
            policies: Policies {
                failure,
                retry: RetryPolicy {
                    total: self.retry_total,
                    min_wait: self.retry_min_wait,
                    max_wait: self.retry_max_wait,
                    backoff: self.retry_backoff,
                },
                step_limit: self.step_limit,
            },
            tags_ttl: self.tags_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("step").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn metwork_spellings_are_accepted() {
        let cli = parse(&[
            "run",
            "--plugin",
            "p",
            "--step-name",
            "s",
            "--redis-unix-socket-path",
            "/tmp/r.sock",
            "--failure-policy",
            "move",
            "--failure-policy-move-dest-dir",
            "archive/main",
            "--",
            "cmd",
            "--flag",
        ]);
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.command, ["cmd", "--flag"]);
        let cfg = run.worker.to_config(None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(cfg.queue, "step.p.s");
        assert_eq!(run.worker.redis_url(), "/tmp/r.sock");
    }

    #[test]
    fn every_error_is_reported() {
        let cli = parse(&[
            "switch",
            "--rules",
            "r.ini",
            "--step",
            "a b",
            "--failure-policy",
            "move",
            "--batch",
            "0",
        ]);
        let Command::Switch(s) = cli.command else {
            panic!("not switch")
        };
        let errors = s.worker.to_config(Some("switch")).err().unwrap_or_default();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
