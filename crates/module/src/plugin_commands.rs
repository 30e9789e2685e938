//! `ironwork plugins …`: create, list, install and remove the plugins of a runtime home.
//!
//! - `create NAME --template step|daemon|collector` writes a commented plugin from a template.
//! - `list [--verbose]` shows every plugin directory, `ok` or `REFUSED (n errors)`.
//! - `install DIR|ARCHIVE [--force]` installs a directory or a `.tar`/`.tar.gz`/`.tgz` archive.
//! - `remove NAME` removes `plugins/NAME` (the admin override stays).
//!
//! Nothing half-done is ever visible in `plugins/`: a new plugin is assembled in a staging
//! directory `plugins/.install-<random>/` (skipped by [`load_all`], removed on every exit path),
//! validated with [`Plugin::load`] (with the admin override, when there is one), and only then
//! renamed to `plugins/NAME`. [`load_all`] then runs on the result: if the new plugin is refused
//! or makes another plugin refused (a watched directory used twice), the rename is undone and the
//! previous plugin, if `--force` moved one aside, is put back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::{Subcommand, ValueEnum};
use ironwork_core::config::{ConfigError, ConfigErrors};
use ironwork_step::layout::valid_name;

use crate::home::Home;
use crate::plugin::{load_all, Plugin, SWITCH_PLUGIN};

/// The hint printed after every change.
pub const APPLY_HINT: &str =
    "conf_monitor applies it within a few seconds when the stack runs; otherwise `ironwork generate`";

/// `ironwork plugins` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Create plugins/NAME from a commented template.
    Create {
        /// The plugin's name: letters, digits, '_' or '-' ("switch" is reserved).
        name: String,
        /// What the plugin starts with.
        #[arg(long, value_enum, default_value_t = Template::Step)]
        template: Template,
    },
    /// One line per plugin: name, version, steps, extra daemons, ok or REFUSED; exit 1 when a
    /// plugin is refused.
    List {
        /// Print every error of the refused plugins.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Install a plugin directory or a .tar, .tar.gz or .tgz archive (validated first).
    Install {
        /// A plugin directory (its name is the plugin's), or an archive holding one top-level
        /// directory, or a config.ini at its root (the name is then the archive's, less its
        /// extension).
        source: PathBuf,
        /// Replace an installed plugin of the same name.
        #[arg(long)]
        force: bool,
    },
    /// Remove plugins/NAME (its admin override in config/plugins/NAME.ini is kept).
    Remove {
        /// The plugin's name.
        name: String,
    },
}

/// `plugins create --template`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Template {
    /// A step `main` running `main.sh` on each file, and a switch rule feeding it.
    Step,
    /// An extra daemon `main` running the loop in `daemon.sh`.
    Daemon,
    /// A `[collection_main]` SCRIPT collection and its `plugin.sh`.
    Collector,
    /// An app `main` that is a static directory served by nginx.
    AppStatic,
    /// An app `main` whose workers run `main.py` (Python 3, standard library only).
    AppCommand,
    /// An app `main` whose workers run a small hyper service (build it with `cargo build --release`).
    AppRust,
}

/// Run a `plugins` subcommand on `home`; returns the exit code.
pub fn run(home: &Home, command: PluginsCommand) -> anyhow::Result<u8> {
    let plugins_dir = home.plugins_dir();
    if !plugins_dir.is_dir() {
        bail!(
            "{} is not a directory: is {} a runtime home (ironwork init)?",
            plugins_dir.display(),
            home.root.display()
        );
    }
    match command {
        PluginsCommand::Create { name, template } => create(home, &name, template),
        PluginsCommand::List { verbose } => list(home, verbose),
        PluginsCommand::Install { source, force } => install(home, &source, force),
        PluginsCommand::Remove { name } => remove(home, &name),
    }
}

/// Refuse a name `Plugin::load` would refuse, before it is used in a path.
fn check_name(name: &str) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("invalid plugin name {name:?}: letters, digits, '_' or '-' only");
    }
    if name == SWITCH_PLUGIN {
        bail!("the plugin name \"switch\" is reserved for the built-in switch");
    }
    Ok(())
}

/// The admin override of `name`, when the file exists.
fn override_of(home: &Home, name: &str) -> Option<PathBuf> {
    let o = home.plugin_override(name);
    o.is_file().then_some(o)
}

/// "1 error", "3 errors".
fn count(n: usize) -> String {
    format!("{n} error{}", if n == 1 { "" } else { "s" })
}

fn summary(p: &Plugin) -> String {
    let names = |v: Vec<&str>| if v.is_empty() { "-".to_string() } else { v.join(",") };
    let mut s = format!(
        "version {}, steps {}, extra daemons {}",
        p.version.as_deref().unwrap_or("-"),
        names(p.steps.iter().map(|s| s.name.as_str()).collect()),
        names(p.extra_daemons.iter().map(|d| d.name.as_str()).collect()),
    );
    if !p.apps.is_empty() {
        s.push_str(", apps ");
        s.push_str(&names(p.apps.iter().map(|a| a.name.as_str()).collect()));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Staging

/// `plugins/.install-<random>/`: removed with everything in it when dropped, unless it holds
/// the only copy of a previous plugin (see [`Staging::keep`]).
struct Staging {
    dir: PathBuf,
    keep: std::cell::Cell<bool>,
}

impl Staging {
    fn new(home: &Home) -> anyhow::Result<Staging> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        for _ in 0..100 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = home
                .plugins_dir()
                .join(format!(".install-{:x}{nanos:08x}{n:x}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(Staging {
                        dir,
                        keep: std::cell::Cell::new(false),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
            }
        }
        bail!("cannot create a staging directory in {}", home.plugins_dir().display())
    }
}

impl Staging {
    /// Leave the directory on disk: it holds something the operator must move back by hand.
    fn keep(&self) {
        self.keep.set(true);
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.keep.get() {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("ironwork: cannot remove {}: {e}", self.dir.display());
            }
        }
    }
}

/// Validate the plugin staged in `staged` (a directory named after the plugin), with the
/// admin override if one exists. `shown` maps a staged path to the one the user knows.
fn validate(home: &Home, staged: &Path, name: &str, shown: &dyn Fn(&Path) -> PathBuf) -> anyhow::Result<Plugin> {
    let ovr = override_of(home, name);
    Plugin::load(staged, ovr.as_deref()).map_err(|errors| {
        let errors = ConfigErrors(
            errors
                .0
                .into_iter()
                .map(|mut e| {
                    if let Ok(rel) = e.file.strip_prefix(staged) {
                        e.file = shown(rel);
                    }
                    e
                })
                .collect(),
        );
        anyhow!("plugin {name} refused ({}):\n{errors}", count(errors.0.len()))
    })
}

/// Errors of `load_all`, as text.
fn load_all_errors(home: &Home) -> Vec<String> {
    load_all(home).1 .0.iter().map(ToString::to_string).collect()
}

/// Move the validated `staging/NAME` to `plugins/NAME` (moving an installed one aside when
/// `replace`), then check the whole set with `load_all` and undo everything if the new plugin
/// is refused or makes another one refused. Returns whether a plugin was replaced.
fn commit(home: &Home, staging: &Staging, name: &str, replace: bool) -> anyhow::Result<bool> {
    let staged = staging.dir.join(name);
    let target = home.plugin_dir(name);
    // Not a valid plugin name, so never the staged plugin's.
    let old = staging.dir.join(".previous");
    let before = load_all_errors(home);
    let had_old = match fs::symlink_metadata(&target) {
        Ok(_) if !replace => bail!("{} already exists (give --force to replace it)", target.display()),
        Ok(_) => {
            fs::rename(&target, &old).with_context(|| format!("cannot move {} aside", target.display()))?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", target.display())),
    };
    let restore_old = || -> anyhow::Result<()> {
        if had_old {
            fs::rename(&old, &target)
                .inspect_err(|_| staging.keep())
                .with_context(|| {
                    format!(
                        "cannot put the previous plugin back: it is in {}, move it to {} by hand",
                        old.display(),
                        target.display()
                    )
                })?;
        }
        Ok(())
    };
    if let Err(e) = fs::rename(&staged, &target) {
        restore_old()?;
        return Err(e).with_context(|| format!("cannot rename {} to {}", staged.display(), target.display()));
    }
    let (plugins, errors) = load_all(home);
    let ovr = home.plugin_override(name);
    let caused: Vec<&ConfigError> = errors
        .0
        .iter()
        .filter(|e| !before.contains(&e.to_string()) || e.file.starts_with(&target) || e.file == ovr)
        .collect();
    if plugins.iter().any(|p| p.name == name) && caused.is_empty() {
        return Ok(had_old);
    }
    // Roll back: the new plugin into the staging directory (removed with it), the old one back.
    fs::rename(&target, &staged)
        .inspect_err(|_| staging.keep())
        .with_context(|| {
            format!(
                "{name} conflicts with the installed plugins and cannot be taken back out of {}: remove it by hand",
                target.display()
            )
        })?;
    restore_old()?;
    let listed = caused.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    bail!(
        "plugin {name} refused: it conflicts with the installed plugins ({}):\n{listed}",
        count(caused.len())
    )
}

// ---------------------------------------------------------------------------------------------
// create

const STEP_CONFIG: &str = r#"# Plugin @NAME@: one step, `main`, fed by the switch with the files named *.@NAME@.
#
# The format is described in docs/module.md ("The plugin format"). An administrator can change
# any key below without editing this file, in config/plugins/@NAME@.ini (same section names).
# Comments are whole lines starting with # or ; (there are no end-of-line comments).

[general]
description = @NAME@: logs the size of each file it is given
version = 0.1.0

# A step. Each file routed to @NAME@/main is claimed by one of its workers, which runs
# cmd_and_args with the file's path appended (directly, never through a shell). A relative
# program naming a file in this directory runs that file. Exit 0 is success.
[step_main]
cmd_and_args = main.sh
# Every other step key, with its default:
# workers for this step
# numprocesses = 1
# seconds before a command is killed (also the graceful stop delay)
# timeout = 600
# recycle a worker after this long; 0 = never
# max_age = 0
# what happens to a file whose command failed: keep (var/in/trash), delete or move
# failure_policy = keep
# with failure_policy = move only: plugin/step or an absolute directory
# failure_policy_move_dest_dir =
# retries before the failure policy applies, and the waits between them
# retry_total = 0
# retry_min_wait = 10
# retry_max_wait = 120
# retry_backoff = 0
# setrlimit for the workers; 0 = not set
# rlimit_as = 0
# rlimit_nofile = 0
# rlimit_stack = 0
# rlimit_fsize = 0
# directories feeding this step (comma-separated; absolute, or relative to var/in)
# watched_directories = {MFDATA_CURRENT_STEP_DIR}
# workers log at debug level
# debug = false

# Switch rules: files entering var/in/incoming whose original name matches *.@NAME@ are
# given to this plugin's step main (`pattern = plugin/step, …`; a trailing * hard-links).
[switch_rules:fnmatch:first.core.original_basename]
*.@NAME@ = @NAME@/main
"#;

const STEP_SCRIPT: &str = r#"#!/bin/sh
# Step main of plugin @NAME@, run with the path of one file as its only argument.
# Exit 0 when done; any other exit status applies the step's failure_policy.
set -eu
file="$1"
size=$(wc -c < "$file")
echo "$(basename "$file"): $size bytes"
exit 0
"#;

const DAEMON_CONFIG: &str = r#"# Plugin @NAME@: one extra daemon, `main`, a long-running program supervised with the stack
# (watcher extra_daemon.@NAME@.main).
#
# The format is described in docs/module.md ("The plugin format"). An administrator can change
# any key below without editing this file, in config/plugins/@NAME@.ini (same section names).
# Comments are whole lines starting with # or ; (there are no end-of-line comments).

[general]
description = @NAME@: an example extra daemon
version = 0.1.0

# cmd_and_args is split shell-style and run directly (never through a shell); a relative
# program naming a file in this directory runs that file. Its stdout and stderr go to
# log/extra_daemon_@NAME@_main.stdout.log and log/extra_daemon_@NAME@_main.log.
[extra_daemon_main]
cmd_and_args = daemon.sh
# Every other key, with its default:
# processes to run
# numprocesses = 1
# seconds between SIGTERM and SIGKILL when stopping
# graceful_timeout = 10
# recycle the process after this long; 0 = never
# max_age = 0
# setrlimit; 0 = not set
# rlimit_as = 0
# rlimit_nofile = 0
# rlimit_stack = 0
# rlimit_fsize = 0
"#;

const DAEMON_SCRIPT: &str = r#"#!/bin/sh
# Extra daemon main of plugin @NAME@: runs until it is told to stop (SIGTERM).
set -eu
trap 'echo "@NAME@: stopping"; exit 0' TERM INT
echo "@NAME@: started"
while true; do
    echo "@NAME@: alive"
    # In the background, so that SIGTERM is handled at once rather than after the sleep.
    sleep 60 &
    wait $! || true
done
"#;

const COLLECTOR_CONFIG: &str = r#"# Plugin @NAME@: one collection, `main`, run by the collector.
#
# The format is described in docs/collector.md ("Collections"). Comments are whole lines
# starting with # or ; (there are no end-of-line comments).

[general]
description = @NAME@: an example collection
version = 0.1.0

[collection_main]
# SCRIPT runs plugin.sh in this directory; its stdout is a JSON list of
# {"name", "timestamp", "tags", "value"}. Points are renamed @NAME@.<name>.
method = SCRIPT
cmd_and_args = plugin.sh {target}
# Seconds between two runs (0: only on demand, POST /plugins/run).
interval = 60
# One job per target per interval; {target} in cmd_and_args is replaced.
targets = localhost
# Carried with the data to the reflector, and usable as {site} in cmd_and_args.
correlation_info.site = main
"#;

const COLLECTOR_SCRIPT: &str = r#"#!/bin/sh
# Plugin @NAME@: print one JSON list of points on stdout. Exit non-zero on failure (the
# collector then emits plugin.result = 1); print nothing when there is nothing to report.
now=$(date +%s)
load=$(cut -d' ' -f1 /proc/loadavg)
printf '[{"name": "load1", "timestamp": %s, "tags": {"target": "%s"}, "value": %s}]\n' "$now" "$1" "$load"
"#;

const APP_KEYS: &str = r#"# Every other key, with its default:
# URL path routed to the app (starts and ends with /)
# prefix = /@NAME@/main/
# workers: two, so that one can restart while the other serves
# numprocesses = 2
# longest request, in seconds; also the longest a stopping worker is given to finish them
# timeout = 60
# seconds between the stop signal and SIGKILL
# graceful_timeout = 10
# recycle a worker after this long; 0 = never
# max_age = 0
# RSS above which a worker is replaced (512M, 2G; empty = none)
# memory_limit =
# largest request body (nginx size; empty = [nginx] client_max_body_size)
# client_max_body_size =
# a directory of this plugin nginx serves itself, at static_prefix (<prefix>static/)
# static =
# a path each worker answers with 2xx when it is well (shown by `ironwork apps stats`)
# health =
# setrlimit for the workers; 0 = not set
# rlimit_as = 0
# rlimit_nofile = 0
# workers log at debug level
# debug = false
"#;

const APP_HEADER: &str = r#"# Plugin @NAME@: one web app, `main`, behind the nginx front at /@NAME@/main/.
#
# The format is described in docs/apps.md. An administrator can change any key below without
# editing this file, in config/plugins/@NAME@.ini (same section names). Comments are whole
# lines starting with # or ; (there are no end-of-line comments).

[general]
description = @NAME@: an example app
version = 0.1.0

"#;

const APP_STATIC_CONFIG: &str = r#"# No cmd_and_args: nginx serves the directory `static` at the prefix, and nothing else runs.
[app_main]
static = static
"#;

const APP_STATIC_INDEX: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>@NAME@</title></head>
<body><p>Hello from @NAME@, served by nginx.</p></body></html>
"#;

const APP_COMMAND_CONFIG: &str = r#"# Each worker runs cmd_and_args (directly, never through a shell) and listens on the unix
# socket {unix_socket_path} (also in $IRONWORK_APP_SOCKET). It must remove a stale file at
# that path before binding: a restarted worker takes its predecessor's path over.
[app_main]
cmd_and_args = main.py {unix_socket_path}
health = /@NAME@/main/healthz
"#;

const APP_COMMAND_SCRIPT: &str = r#"#!/usr/bin/env python3
# App main of plugin @NAME@: an HTTP server on the unix socket given as argument.
import json
import os
import socketserver
import sys
from http.server import BaseHTTPRequestHandler

PREFIX = os.environ.get("IRONWORK_APP_PREFIX", "/@NAME@/main/")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return self.headers.get("X-Real-IP", "-") if self.headers else "-"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path == PREFIX + "healthz":
            body = b"ok\n"
            kind = "text/plain"
        else:
            answer = {
                "app": "@NAME@/main",
                "pid": os.getpid(),
                "path": self.path,
                "request_id": self.headers.get("X-Request-Id"),
            }
            body = (json.dumps(answer) + "\n").encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    path = sys.argv[1]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    with Server(path, Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
"#;

const APP_RUST_CONFIG: &str = r#"# Each worker runs the service built from src/main.rs: run `cargo build --release` in this
# directory before starting it. It listens on {unix_socket_path} (also $IRONWORK_APP_SOCKET).
[app_main]
cmd_and_args = target/release/@NAME@ {unix_socket_path}
health = /@NAME@/main/healthz
"#;

const APP_RUST_CARGO: &str = r#"[package]
name = "@NAME@"
version = "0.1.0"
edition = "2021"
publish = false

[dependencies]
http-body-util = "0.1"
hyper = { version = "1", features = ["http1", "server"] }
hyper-util = { version = "0.1", features = ["tokio"] }
tokio = { version = "1", features = ["macros", "net", "rt-multi-thread"] }

[workspace]
"#;

const APP_RUST_MAIN: &str = r#"//! App main of plugin @NAME@: an HTTP server on the unix socket given as argument (or, to
//! try it alone, on `tcp://HOST:PORT`).

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path().ends_with("/healthz") {
        "ok\n".to_string()
    } else {
        format!("hello from @NAME@/main, worker {}\n", std::process::id())
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S) {
    tokio::spawn(async move {
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service_fn(answer))
            .await;
    });
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let where_ = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("IRONWORK_APP_SOCKET").ok())
        .expect("usage: @NAME@ SOCKET_PATH|tcp://HOST:PORT");
    if let Some(addr) = where_.strip_prefix("tcp://") {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            serve(stream);
        }
    }
    // A restarted worker takes its predecessor's path over.
    let _ = std::fs::remove_file(&where_);
    let listener = tokio::net::UnixListener::bind(&where_)?;
    loop {
        let (stream, _) = listener.accept().await?;
        serve(stream);
    }
}
"#;

/// The files of `template` for plugin `name`: (file name, content, executable).
fn template_files(template: Template, name: &str) -> Vec<(&'static str, String, bool)> {
    let fill = |t: &str| t.replace("@NAME@", name);
    match template {
        Template::Step => vec![
            ("config.ini", fill(STEP_CONFIG), false),
            ("main.sh", fill(STEP_SCRIPT), true),
        ],
        Template::Daemon => vec![
            ("config.ini", fill(DAEMON_CONFIG), false),
            ("daemon.sh", fill(DAEMON_SCRIPT), true),
        ],
        Template::Collector => vec![
            ("config.ini", fill(COLLECTOR_CONFIG), false),
            ("plugin.sh", fill(COLLECTOR_SCRIPT), true),
        ],
        Template::AppStatic => vec![
            ("config.ini", fill(&[APP_HEADER, APP_STATIC_CONFIG].concat()), false),
            ("static/index.html", fill(APP_STATIC_INDEX), false),
        ],
        Template::AppCommand => vec![
            (
                "config.ini",
                fill(&[APP_HEADER, APP_COMMAND_CONFIG, APP_KEYS].concat()),
                false,
            ),
            ("main.py", fill(APP_COMMAND_SCRIPT), true),
        ],
        Template::AppRust => vec![
            (
                "config.ini",
                fill(&[APP_HEADER, APP_RUST_CONFIG, APP_KEYS].concat()),
                false,
            ),
            ("Cargo.toml", fill(APP_RUST_CARGO), false),
            ("src/main.rs", fill(APP_RUST_MAIN), false),
        ],
    }
}

fn create(home: &Home, name: &str, template: Template) -> anyhow::Result<u8> {
    use std::os::unix::fs::PermissionsExt;
    check_name(name)?;
    let target = home.plugin_dir(name);
    if fs::symlink_metadata(&target).is_ok() {
        bail!("{} already exists: refusing to overwrite it", target.display());
    }
    let staging = Staging::new(home)?;
    let staged = staging.dir.join(name);
    fs::create_dir(&staged).with_context(|| format!("cannot create {}", staged.display()))?;
    let files = template_files(template, name);
    for (file, content, executable) in &files {
        let path = staged.join(file);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
        if *executable {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    let plugin = validate(home, &staged, name, &|rel| target.join(rel))
        .context("the created plugin does not load (nothing was created)")?;
    commit(home, &staging, name, false)?;
    println!("created plugin {name} in {} ({})", target.display(), summary(&plugin));
    for (file, _, _) in &files {
        println!("  {}", target.join(file).display());
    }
    if plugin.override_file.is_some() {
        println!(
            "the admin override {} applies to it",
            home.plugin_override(name).display()
        );
    }
    println!("{APPLY_HINT}");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// list

fn list(home: &Home, verbose: bool) -> anyhow::Result<u8> {
    let root = home.plugins_dir();
    let mut names: Vec<String> = fs::read_dir(&root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    if names.is_empty() {
        println!("no plugins in {}", root.display());
        return Ok(0);
    }
    let (loaded, errors) = load_all(home);
    let mut rows: Vec<[String; 5]> = vec![[
        "NAME".into(),
        "VERSION".into(),
        "STEPS".into(),
        "EXTRA DAEMONS".into(),
        "STATUS".into(),
    ]];
    let mut details: Vec<Vec<String>> = vec![Vec::new()];
    let mut refused = 0;
    for name in &names {
        let dir = root.join(name);
        let ovr = home.plugin_override(name);
        // The plugin on its own, for what it holds even when load_all refused it.
        let own = Plugin::load(&dir, ovr.is_file().then_some(ovr.as_path())).ok();
        let mine: Vec<String> = errors
            .0
            .iter()
            .filter(|e| e.file.starts_with(&dir) || e.file == ovr)
            .map(ToString::to_string)
            .collect();
        let ok = loaded.iter().any(|p| &p.name == name) && mine.is_empty();
        let join = |v: Vec<&str>| if v.is_empty() { "-".to_string() } else { v.join(",") };
        let status = if ok {
            "ok".to_string()
        } else {
            refused += 1;
            format!("REFUSED ({})", count(mine.len()))
        };
        rows.push([
            name.clone(),
            own.as_ref()
                .and_then(|p| p.version.clone())
                .unwrap_or_else(|| "-".into()),
            own.as_ref()
                .map(|p| join(p.steps.iter().map(|s| s.name.as_str()).collect()))
                .unwrap_or_else(|| "-".into()),
            own.as_ref()
                .map(|p| join(p.extra_daemons.iter().map(|d| d.name.as_str()).collect()))
                .unwrap_or_else(|| "-".into()),
            status,
        ]);
        details.push(mine);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (row, errs) in rows.iter().zip(&details) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        if verbose {
            for e in errs {
                for (i, line) in e.lines().enumerate() {
                    println!("{}{line}", if i == 0 { "    " } else { "      " });
                }
            }
        }
    }
    // Problems with plugins/ itself belong to no plugin.
    let other: Vec<&ConfigError> = errors
        .0
        .iter()
        .filter(|e| {
            !names
                .iter()
                .any(|n| e.file.starts_with(root.join(n)) || e.file == home.plugin_override(n))
        })
        .collect();
    for e in &other {
        eprintln!("{e}");
    }
    if refused > 0 && !verbose {
        eprintln!("{refused} plugin(s) refused: `ironwork plugins list --verbose` lists the errors");
    }
    Ok(if refused > 0 || !other.is_empty() { 1 } else { 0 })
}

// ---------------------------------------------------------------------------------------------
// install

/// Maps a path inside the staged plugin to the one the user gave (for error messages).
type ShownPath = Box<dyn Fn(&Path) -> PathBuf>;

/// The archive kinds `install` takes: (suffix, gzip-compressed).
const ARCHIVES: [(&str, bool); 3] = [(".tar.gz", true), (".tgz", true), (".tar", false)];

/// Copy the tree `src` to `dst` (which must not exist): files with their permissions,
/// directories, and symbolic links as links.
fn copy_tree(src: &Path, dst: &Path) -> anyhow::Result<()> {
    fs::create_dir(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let mode = fs::metadata(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .permissions();
    for entry in fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", src.display()))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot inspect {}", from.display()))?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&from).with_context(|| format!("cannot read link {}", from.display()))?;
            std::os::unix::fs::symlink(&link, &to).with_context(|| format!("cannot create link {}", to.display()))?;
        } else if kind.is_file() {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        } else {
            bail!("{}: not a file, directory or symbolic link", from.display());
        }
    }
    fs::set_permissions(dst, mode).with_context(|| format!("cannot set permissions of {}", dst.display()))?;
    Ok(())
}

/// Refuse what a plugin never needs and an archive could smuggle in (devices, FIFOs, sockets,
/// symbolic links), and strip setuid/setgid bits from what stays.
fn check_extracted(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        if kind.is_dir() {
            check_extracted(&path)?;
        } else if kind.is_file() {
            let mode = meta.permissions().mode();
            if mode & 0o6000 != 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o6000))?;
            }
        } else {
            bail!(
                "member {} is not a regular file or directory (links, devices and FIFOs are refused)",
                path.strip_prefix(dir).unwrap_or(&path).display()
            );
        }
    }
    Ok(())
}

/// Run `tar` (never through a shell); its stdout on success.
fn tar(args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    let out = Process::new("tar").args(args).output().context("cannot run tar")?;
    if !out.status.success() {
        bail!(
            "tar {} failed ({}): {}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Extract `archive` into `staging` and move the plugin it holds to `staging/NAME`; returns
/// NAME and the prefix of its files in the archive (for error messages).
fn extract(archive: &Path, gzip: bool, base_name: &str, staging: &Staging) -> anyhow::Result<(String, String)> {
    let archive = std::path::absolute(archive).unwrap_or_else(|_| archive.to_path_buf());
    let list_flag = if gzip { "-tzf" } else { "-tf" };
    let members = tar(&[list_flag.as_ref(), archive.as_os_str()])?;
    for m in members.lines() {
        let p = Path::new(m);
        if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            bail!(
                "{}: member {m:?} would be extracted outside the plugin",
                archive.display()
            );
        }
    }
    // A name that is not a valid plugin name, so it never clashes with staging/NAME.
    let into = staging.dir.join(".extract");
    fs::create_dir(&into).with_context(|| format!("cannot create {}", into.display()))?;
    let extract_flag = if gzip { "-xzf" } else { "-xf" };
    tar(&[
        extract_flag.as_ref(),
        archive.as_os_str(),
        "-C".as_ref(),
        into.as_os_str(),
        "--no-same-owner".as_ref(),
        "--no-same-permissions".as_ref(),
    ])?;
    check_extracted(&into).with_context(|| format!("{}", archive.display()))?;
    let (name, plugin_dir, prefix) = if into.join("config.ini").exists() {
        (base_name.to_string(), into.clone(), String::new())
    } else {
        let entries: Vec<fs::DirEntry> = fs::read_dir(&into)
            .with_context(|| format!("cannot list {}", into.display()))?
            .filter_map(Result::ok)
            .collect();
        match entries.as_slice() {
            [one] if one.file_type().is_ok_and(|t| t.is_dir()) => {
                let name = one.file_name().to_string_lossy().into_owned();
                (name.clone(), one.path(), format!("{name}/"))
            }
            _ => bail!(
                "{}: expected one top-level directory, or a config.ini at the root of the archive",
                archive.display()
            ),
        }
    };
    check_name(&name).with_context(|| format!("{}", archive.display()))?;
    let staged = staging.dir.join(&name);
    fs::rename(&plugin_dir, &staged)
        .with_context(|| format!("cannot rename {} to {}", plugin_dir.display(), staged.display()))?;
    Ok((name, prefix))
}

fn install(home: &Home, source: &Path, force: bool) -> anyhow::Result<u8> {
    let meta = fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    let staging = Staging::new(home)?;
    let file_name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (name, shown): (String, ShownPath) = if meta.is_dir() {
        let src = fs::canonicalize(source).with_context(|| format!("cannot resolve {}", source.display()))?;
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        check_name(&name).with_context(|| format!("{}: the directory's name is the plugin's", src.display()))?;
        let plugins_dir = fs::canonicalize(home.plugins_dir()).unwrap_or_else(|_| home.plugins_dir());
        if plugins_dir.starts_with(&src) {
            bail!(
                "{} holds {}: it cannot be a plugin",
                src.display(),
                plugins_dir.display()
            );
        }
        copy_tree(&src, &staging.dir.join(&name))?;
        (name, Box::new(move |rel: &Path| src.join(rel)))
    } else if let Some((suffix, gzip)) = ARCHIVES.iter().find(|(s, _)| file_name.ends_with(s)) {
        let base = &file_name[..file_name.len() - suffix.len()];
        let (name, prefix) = extract(source, *gzip, base, &staging)?;
        let archive = source.display().to_string();
        (
            name,
            Box::new(move |rel: &Path| PathBuf::from(format!("{archive}:{prefix}{}", rel.display()))),
        )
    } else {
        bail!(
            "{}: expected a plugin directory, or a .tar, .tar.gz or .tgz archive",
            source.display()
        );
    };
    let staged = staging.dir.join(&name);
    let plugin = validate(home, &staged, &name, &*shown)?;
    let target = home.plugin_dir(&name);
    if !force && fs::symlink_metadata(&target).is_ok() {
        bail!(
            "plugin {name} is already installed in {} (give --force to replace it)",
            target.display()
        );
    }
    let replaced = commit(home, &staging, &name, force)?;
    println!(
        "{} plugin {name} in {} ({})",
        if replaced { "replaced" } else { "installed" },
        target.display(),
        summary(&plugin)
    );
    if plugin.override_file.is_some() {
        println!(
            "the admin override {} applies to it",
            home.plugin_override(&name).display()
        );
    }
    println!("{APPLY_HINT}");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// remove

fn remove(home: &Home, name: &str) -> anyhow::Result<u8> {
    if !valid_name(name) {
        bail!("invalid plugin name {name:?}");
    }
    let target = home.plugin_dir(name);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            // Out of sight first, so nothing ever loads a half-removed plugin.
            let staging = Staging::new(home)?;
            fs::rename(&target, staging.dir.join(name))
                .with_context(|| format!("cannot move {} away", target.display()))?;
            drop(staging);
        }
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(&target).with_context(|| format!("cannot remove {}", target.display()))?
        }
        Ok(_) => bail!("{} is not a plugin directory", target.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no plugin {name} in {}", home.plugins_dir().display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", target.display())),
    }
    println!("removed plugin {name} ({})", target.display());
    let ovr = home.plugin_override(name);
    if ovr.exists() {
        println!(
            "its admin override {} is kept (ignored while no plugin {name} is installed; remove it by hand if it is no longer wanted)",
            ovr.display()
        );
    }
    println!("{APPLY_HINT}");
    Ok(0)
}
