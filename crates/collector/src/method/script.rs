//! The `SCRIPT` method: a plugin's executable, run with cwd = the plugin directory, whose stdout
//! is a JSON list of `{"name","timestamp","tags","value"}`. Each point is renamed
//! `<plugin>.<name>`.
//!
//! Keys: `cmd_and_args` (required): the program and its arguments, split like a shell would
//! (no shell runs), `{var}` placeholders rendered per run. A program without `/` is looked for
//! in the plugin directory first, then on `PATH`; a relative path with `/` is under the plugin
//! directory. On-demand runs append their `param` words.
//!
//! Environment: `IRONWORK_PLUGIN`, `IRONWORK_COLLECTION`, `IRONWORK_TARGET`.
//!
//! Outcome: empty output is "no data". A timeout, a non-zero exit, output that is not a JSON
//! list, output over the size cap, or points refused make the run a failure (the valid points
//! are still kept); the failure names its reason and quotes the first bytes of bad output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironwork_core::config::SectionReader;
use ironwork_core::messages::epoch_seconds;

use super::{Failure, Outcome, Probe, ProbeFuture};
use crate::collection::Run;
use crate::points;
use crate::runner::{self, Exec};

/// Compile a `SCRIPT` section.
pub fn compile(r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    let words = match r.required("cmd_and_args") {
        Some(s) => match shlex::split(s) {
            Some(w) if !w.is_empty() => w,
            _ => {
                r.error("cmd_and_args", "cannot be split into words (unbalanced quotes?)");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    Arc::new(Script { words })
}

#[derive(Debug)]
struct Script {
    words: Vec<String>,
}

/// Where `program` is, for a script of the plugin in `dir`.
fn resolve(program: &str, dir: &Path) -> PathBuf {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let local = dir.join(p);
    if program.contains('/') || local.is_file() {
        local
    } else {
        p.to_path_buf()
    }
}

impl Probe for Script {
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async move {
            let Some((program, args)) = self.words.split_first() else {
                return Outcome::failed("spawn", "empty cmd_and_args");
            };
            let mut args: Vec<String> = args.iter().map(|a| run.render(a)).collect();
            args.extend(run.param.iter().cloned());
            let exec = Exec {
                program: resolve(&run.render(program), &run.plugin_dir),
                args,
                cwd: run.plugin_dir.clone(),
                env: vec![
                    ("IRONWORK_PLUGIN".into(), run.plugin.clone()),
                    ("IRONWORK_COLLECTION".into(), run.collection.clone()),
                    ("IRONWORK_TARGET".into(), run.target.clone()),
                ],
                timeout: run.timeout,
            };
            match runner::run(&exec, &run.limits).await {
                Err(e) => Outcome::failed("spawn", format!("cannot run {}: {e}", exec.program.display())),
                Ok(done) => judge(run, &done),
            }
        })
    }
}

/// Turn a finished script into points and a verdict.
fn judge(run: &Run, done: &runner::Finished) -> Outcome {
    let mut failures: Vec<Failure> = Vec::new();
    if done.timed_out {
        failures.push(Failure {
            kind: "timeout",
            message: format!(
                "timed out after {:?}; process group {}",
                run.timeout,
                if done.killed { "killed" } else { "terminated" }
            ),
        });
    } else if !done.status.success() {
        let stderr = String::from_utf8_lossy(&done.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        failures.push(Failure {
            kind: "exit",
            message: format!("{} (stderr: {first:?})", done.status),
        });
    }
    let mut points = Vec::new();
    if done.stdout_truncated {
        failures.push(Failure {
            kind: "output",
            message: format!(
                "output longer than {} bytes; it starts with {:?}",
                run.limits.stdout_max,
                points::head(&done.stdout)
            ),
        });
    } else {
        match points::parse(&done.stdout, epoch_seconds()) {
            Ok(parsed) => {
                if !parsed.rejected.is_empty() {
                    failures.push(Failure {
                        kind: "output",
                        message: format!(
                            "{} point(s) refused: {}",
                            parsed.rejected.len(),
                            parsed.rejected.join("; ")
                        ),
                    });
                }
                points = parsed.points;
            }
            Err(why) => failures.push(Failure {
                kind: "output",
                message: why,
            }),
        }
    }
    for p in &mut points {
        p.name = format!("{}.{}", run.plugin, p.name);
    }
    Outcome {
        points,
        failure: failures.into_iter().next(),
    }
}
