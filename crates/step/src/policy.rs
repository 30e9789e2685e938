//! What happens to a file a step failed on: retries with exponential backoff through a delayed
//! queue, then the failure policy (`keep`, `delete`, `move`), and the `step_limit` loop guard.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ironwork_core::messages::{epoch_seconds, names, FileEvent, StepEvent};

use crate::file::{Basename, StepFile};
use crate::layout::StepName;
use crate::routing::Delayed;

/// Metwork's `failure_policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Into `trash/<plugin>.<step>/` with a `.tags` file (the default).
    Keep,
    /// Removed, with a WARN log line.
    Delete,
    /// Into another plugin step, or a directory (with a `.tags` file).
    Move(MoveTarget),
}

/// Where `failure_policy = move` sends files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveTarget {
    /// `plugin/step`.
    Step(StepName),
    /// An absolute directory.
    Dir(PathBuf),
}

impl FailurePolicy {
    /// Parse `keep`, `delete` or `move` with its `failure_policy_move_dest_dir`.
    pub fn parse(policy: &str, move_dest: Option<&str>) -> Result<Self, String> {
        match (policy, move_dest) {
            ("keep", _) => Ok(Self::Keep),
            ("delete", _) => Ok(Self::Delete),
            ("move", Some(dest)) if Path::new(dest).is_absolute() => Ok(Self::Move(MoveTarget::Dir(dest.into()))),
            ("move", Some(dest)) => StepName::parse(dest).map(|s| Self::Move(MoveTarget::Step(s))),
            ("move", None) => Err("failure_policy move needs failure_policy_move_dest_dir".into()),
            (other, _) => Err(format!("unknown failure_policy {other:?} (keep, delete or move)")),
        }
    }
}

/// Metwork's `retry_total`, `retry_min_wait`, `retry_max_wait`, `retry_backoff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first; 0 disables retries.
    pub total: u32,
    /// Wait before the first retry.
    pub min_wait: Duration,
    /// Longest wait.
    pub max_wait: Duration,
    /// Added, doubling each time: wait n = min(min_wait + backoff * 2^(n-1), max_wait).
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            total: 0,
            min_wait: Duration::from_secs(10),
            max_wait: Duration::from_secs(120),
            backoff: Duration::ZERO,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        (self.min_wait + self.backoff.saturating_mul(factor)).min(self.max_wait)
    }
}

/// The decision for a failed file, applied by the worker through the router.
#[derive(Debug)]
pub enum Verdict {
    /// Try again later: the file goes to the retry directory and `delayed` re-queues it.
    Retry {
        /// The attempt about to be scheduled (1-based).
        attempt: u32,
        /// Re-queue message.
        delayed: Delayed,
    },
    /// Kept in the trash (policy `keep`, or the loop guard).
    Kept(PathBuf),
    /// Removed.
    Deleted,
    /// Moved on (policy `move`).
    Moved(PathBuf),
}

/// Everything the failure path needs to know about the step.
#[derive(Debug, Clone)]
pub struct Policies {
    /// The failure policy.
    pub failure: FailurePolicy,
    /// The retry policy.
    pub retry: RetryPolicy,
    /// Files that have entered more steps than this are kept, whatever the policy.
    pub step_limit: u64,
}

impl Policies {
    /// Keep `file` in the trash with `reason`, whatever the policies say (a file the step must
    /// not run on: the loop guard, a FIFO or symlink).
    pub fn keep_now(&self, file: &mut StepFile, reason: &str) -> Verdict {
        file.set_tag("failure_reason", reason);
        Verdict::Kept(self.keep(file))
    }

    /// Decide what happens to `file`, which failed with `reason`, and stage the routes for it.
    pub fn on_failure(&self, file: &mut StepFile, queue: &str, reason: &str) -> Verdict {
        file.set_tag("failure_reason", reason);
        let latest_attempt = format!("latest.{}.{}.attempt", file.plugin, file.step);
        let done: u32 = file.tag(&latest_attempt).and_then(|v| v.parse().ok()).unwrap_or(0);
        if done < self.retry.total {
            let attempt = done + 1;
            file.set_tag("attempt", attempt.to_string());
            let dir = file.data.retry_dir(&file.plugin, &file.step);
            let name = file.claim_id().to_string();
            file.move_to_dir(&dir, &name);
            let now = epoch_seconds();
            let message = StepEvent {
                directory: dir.to_string_lossy().into_owned(),
                filename: name,
                event: FileEvent::Created,
                event_timestamp: now,
            };
            let delayed = Delayed {
                key: names::delayed(queue),
                due: now + self.retry.delay(attempt).as_secs_f64(),
                member: String::from_utf8_lossy(&message.to_metwork_json()).into_owned(),
            };
            return Verdict::Retry { attempt, delayed };
        }
        match &self.failure {
            FailurePolicy::Keep => Verdict::Kept(self.keep(file)),
            FailurePolicy::Delete => Verdict::Deleted,
            FailurePolicy::Move(MoveTarget::Step(target)) => {
                let dest = file.step_dir(target).join(file.claim_id());
                file.move_to_step(target, Basename::New);
                Verdict::Moved(dest)
            }
            FailurePolicy::Move(MoveTarget::Dir(dir)) => Verdict::Moved(with_tags_file(file, dir)),
        }
    }

    fn keep(&self, file: &mut StepFile) -> PathBuf {
        let dir = file.data.trash_dir(&file.plugin, &file.step);
        with_tags_file(file, &dir)
    }
}

/// Longest kept name: `<name>.<claim id>.tags` must still fit in 255 bytes.
const MAX_KEPT_NAME: usize = 255 - 1 - 32 - ".tags".len();

/// Route `file` into `dir` under its original base name (or `<name>.<claim id>` if that name or
/// its `.tags` is taken, or the claim id alone for a name too long), with its tags written
/// beside it in `<name>.tags`. Returns the file's destination.
pub fn with_tags_file(file: &mut StepFile, dir: &Path) -> PathBuf {
    let mut name = sanitize(file.original_basename());
    let taken = |n: &str| {
        std::fs::symlink_metadata(dir.join(n)).is_ok()
            || std::fs::symlink_metadata(dir.join(format!("{n}.tags"))).is_ok()
    };
    if name.is_empty() || name.len() > MAX_KEPT_NAME {
        name = file.claim_id().to_string();
    } else if taken(&name) {
        name = format!("{name}.{}", file.claim_id());
    }
    let dest = dir.join(&name);
    file.move_to_dir(dir, &name);
    let text = file.tags().to_file_text().into_bytes();
    file.write_beside(dir.join(format!("{name}.tags")), text);
    dest
}

/// A base name from a tag: no path separators, no `.`/`..`.
fn sanitize(name: &str) -> String {
    let name = name.replace('/', "_");
    if name == "." || name == ".." {
        String::new()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_matches_metwork_formula() {
        let r = RetryPolicy {
            total: 5,
            min_wait: Duration::from_secs(10),
            max_wait: Duration::from_secs(120),
            backoff: Duration::from_secs(5),
        };
        let waits: Vec<u64> = (1..=6).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(waits, [15, 20, 30, 50, 90, 120]);
        assert_eq!(RetryPolicy::default().delay(3), Duration::from_secs(10));
        assert_eq!(r.delay(200), Duration::from_secs(120));
    }

    #[test]
    fn failure_policies_parse() {
        assert_eq!(FailurePolicy::parse("keep", None), Ok(FailurePolicy::Keep));
        assert_eq!(
            FailurePolicy::parse("move", Some("archive/main")),
            Ok(FailurePolicy::Move(MoveTarget::Step(
                StepName::parse("archive/main").unwrap_or_else(|e| panic!("{e}"))
            )))
        );
        assert_eq!(
            FailurePolicy::parse("move", Some("/srv/failed")),
            Ok(FailurePolicy::Move(MoveTarget::Dir("/srv/failed".into())))
        );
        assert!(FailurePolicy::parse("move", None).is_err());
        assert!(FailurePolicy::parse("drop", None).is_err());
    }
}
