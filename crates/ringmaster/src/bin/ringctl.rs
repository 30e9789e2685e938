//! `ringctl`: control a running ringmaster through its control socket (circusctl's commands).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ringmaster::control::Client;
use serde_json::{json, Map, Value};

/// Control a running ringmaster.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The control socket (default: $RINGMASTER_SOCKET, else $IRONWORK_HOME/var/ringmaster.sock,
    /// else ./ringmaster.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print the raw JSON reply.
    #[arg(long, global = true)]
    json: bool,
    /// Give up waiting for a reply after this many seconds.
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Watchers, or the pids of one.
    List { name: Option<String> },
    /// Status of every watcher, or of one.
    Status { name: Option<String> },
    /// Start watchers (a name or glob; all when omitted).
    Start {
        name: Option<String>,
        #[arg(long)]
        waiting: bool,
    },
    /// Stop watchers.
    Stop {
        name: Option<String>,
        #[arg(long)]
        waiting: bool,
    },
    /// Stop then start watchers.
    Restart {
        name: Option<String>,
        #[arg(long)]
        waiting: bool,
    },
    /// Replace processes gracefully: new ones first, then stop the old.
    Reload {
        name: Option<String>,
        #[arg(long)]
        waiting: bool,
    },
    /// Re-read the configuration file and apply the difference.
    Reloadconfig,
    /// Add processes to a watcher.
    Incr { name: String, nb: Option<u64> },
    /// Remove processes from a watcher.
    Decr { name: String, nb: Option<u64> },
    /// Configured process count of a watcher (or the total).
    Numprocesses { name: Option<String> },
    /// Send a signal to a watcher's processes.
    Signal {
        name: String,
        signum: String,
        #[arg(long)]
        pid: Option<i64>,
        #[arg(long)]
        children: bool,
    },
    /// Per-process pid, rss, cpu, age and restarts.
    Stats { name: Option<String> },
    /// Add a watcher at runtime.
    Add {
        name: String,
        cmd: String,
        #[arg(long)]
        start: bool,
    },
    /// Remove a watcher (its processes are stopped).
    Rm { name: String },
    /// Last output lines of a watcher.
    Tail {
        name: String,
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop everything and exit ringmaster.
    Quit,
}

fn default_socket() -> PathBuf {
    if let Ok(s) = std::env::var("RINGMASTER_SOCKET") {
        return s.into();
    }
    if let Ok(home) = std::env::var("IRONWORK_HOME") {
        return PathBuf::from(home).join("var/ringmaster.sock");
    }
    PathBuf::from("ringmaster.sock")
}

fn props(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    let mut client = match Client::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringctl: cannot reach ringmaster at {}: {e}", socket.display());
            return ExitCode::from(2);
        }
    };
    let (command, properties) = match &args.command {
        Cmd::List { name } => ("list", props(json!({ "name": name }))),
        Cmd::Status { name } => ("status", props(json!({ "name": name }))),
        Cmd::Start { name, waiting } => ("start", props(json!({ "name": name, "waiting": waiting }))),
        Cmd::Stop { name, waiting } => ("stop", props(json!({ "name": name, "waiting": waiting }))),
        Cmd::Restart { name, waiting } => ("restart", props(json!({ "name": name, "waiting": waiting }))),
        Cmd::Reload { name, waiting } => ("reload", props(json!({ "name": name, "waiting": waiting }))),
        Cmd::Reloadconfig => ("reloadconfig", Map::new()),
        Cmd::Incr { name, nb } => ("incr", props(json!({ "name": name, "nb": nb }))),
        Cmd::Decr { name, nb } => ("decr", props(json!({ "name": name, "nb": nb }))),
        Cmd::Numprocesses { name } => ("numprocesses", props(json!({ "name": name }))),
        Cmd::Signal {
            name,
            signum,
            pid,
            children,
        } => (
            "signal",
            props(json!({ "name": name, "signum": signum, "pid": pid, "children": children })),
        ),
        Cmd::Stats { name } => ("stats", props(json!({ "name": name }))),
        Cmd::Add { name, cmd, start } => ("add", props(json!({ "name": name, "cmd": cmd, "start": start }))),
        Cmd::Rm { name } => ("rm", props(json!({ "name": name }))),
        Cmd::Tail { name, lines, .. } => ("tail", props(json!({ "name": name, "lines": lines }))),
        Cmd::Quit => ("quit", props(json!({ "waiting": true }))),
    };
    let timeout = Duration::from_secs_f64(args.timeout.max(0.1));
    let reply = match tokio::time::timeout(timeout, client.call(command, properties.clone())).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("ringctl: {e}");
            return ExitCode::from(2);
        }
        Err(_) => {
            eprintln!("ringctl: no reply within {:?}", timeout);
            return ExitCode::from(2);
        }
    };
    if reply.status != "ok" {
        if args.json {
            println!("{}", serde_json::to_string(&reply).unwrap_or_default());
        } else {
            eprintln!("error: {}", reply.reason.unwrap_or_default());
        }
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{}", serde_json::to_string(&reply).unwrap_or_default());
    } else {
        print_human(command, &reply.body);
    }
    if let Cmd::Tail {
        follow: true, lines, ..
    } = &args.command
    {
        return follow(&mut client, properties, *lines).await;
    }
    ExitCode::SUCCESS
}

async fn follow(client: &mut Client, properties: Map<String, Value>, lines: u64) -> ExitCode {
    // The tail buffer has no cursor: poll it and print what is new after the last line seen.
    let mut seen: Vec<String> = Vec::new();
    let mut first = true;
    loop {
        let mut p = properties.clone();
        p.insert("lines".into(), json!(lines.max(200)));
        let Ok(reply) = client.call("tail", p).await else {
            return ExitCode::from(2);
        };
        let now: Vec<String> = reply
            .body
            .get("lines")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        if !first {
            let overlap = (0..=seen.len().min(now.len()))
                .rev()
                .find(|&k| seen[seen.len() - k..] == now[..k])
                .unwrap_or(0);
            for l in &now[overlap..] {
                println!("{l}");
            }
        }
        first = false;
        seen = now;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_human(command: &str, body: &Map<String, Value>) {
    match command {
        "status" if body.contains_key("details") => {
            println!("{:<32} {:<9} {:>9} {:>8}", "WATCHER", "STATUS", "PROCESSES", "RESTARTS");
            if let Some(Value::Object(d)) = body.get("details") {
                for (name, v) in d {
                    let procs = format!("{}/{}", v["processes"], v["numprocesses"]);
                    println!(
                        "{:<32} {:<9} {:>9} {:>8}",
                        name,
                        v["status"].as_str().unwrap_or("?"),
                        procs,
                        v["restarts"].to_string()
                    );
                }
            }
        }
        "stats" => {
            println!(
                "{:<28} {:>8} {:>4} {:>10} {:>6} {:>10} {:>8}",
                "WATCHER", "PID", "WID", "RSS", "CPU%", "AGE(s)", "RESTARTS"
            );
            if let Some(Value::Object(info)) = body.get("info") {
                for (name, w) in info {
                    if let Some(Value::Object(procs)) = w.get("processes") {
                        for p in procs.values() {
                            println!(
                                "{:<28} {:>8} {:>4} {:>10} {:>6.1} {:>10.1} {:>8}",
                                name,
                                p["pid"].to_string(),
                                p["wid"].to_string(),
                                p["rss"].as_u64().map(human_bytes).unwrap_or_else(|| "-".into()),
                                p["cpu"].as_f64().unwrap_or(0.0),
                                p["age"].as_f64().unwrap_or(0.0),
                                w["restarts"].to_string()
                            );
                        }
                    }
                }
            }
        }
        "tail" => {
            if let Some(Value::Array(lines)) = body.get("lines") {
                for l in lines {
                    println!("{}", l.as_str().unwrap_or_default());
                }
            }
        }
        _ => {
            if body.is_empty() {
                println!("ok");
            }
            for (k, v) in body {
                match v {
                    Value::Array(a) => {
                        for item in a {
                            println!(
                                "{}",
                                item.as_str().map(str::to_string).unwrap_or_else(|| item.to_string())
                            );
                        }
                    }
                    Value::Object(o) => {
                        for (ik, iv) in o {
                            println!(
                                "{ik}: {}",
                                iv.as_str().map(str::to_string).unwrap_or_else(|| iv.to_string())
                            );
                        }
                    }
                    other => println!(
                        "{k}: {}",
                        other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string())
                    ),
                }
            }
        }
    }
}

fn human_bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1}G", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1}M", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{}K", b >> 10)
    }
}
