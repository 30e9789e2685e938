//! The built-in switch step: copies (or hard-links) each file to every plugin step whose rule
//! matches its tags. The rules file is re-read when it changes, between files, so no file is
//! lost or handled half by old and half by new rules; a broken edit is refused (every error
//! logged) and the previous rules stay in force. A change is applied once the file has stayed
//! the same for a second, so a file caught half-written is never taken for the new rules. A
//! missing rules file is refused at start: with no rules every file would take the no-match
//! policy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::file::{Basename, Failure, Step, StepFile};
use crate::policy::with_tags_file;
use crate::switch_rules::RuleSet;

/// What happens to a file no rule matches (Metwork's `--no-match-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMatchPolicy {
    /// Removed (the default).
    Delete,
    /// Kept in `trash/<plugin>.nomatch/` with a `.tags` file.
    Keep,
}

impl std::str::FromStr for NoMatchPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delete" => Ok(Self::Delete),
            "keep" => Ok(Self::Keep),
            _ => Err(format!("no_match_policy must be delete or keep, not {s:?}")),
        }
    }
}

/// File identity used to notice a changed rules file cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// How long a changed rules file must stay unchanged before it is read.
const SETTLE: Duration = Duration::from_secs(1);

/// The switch.
#[derive(Debug)]
pub struct SwitchStep {
    rules_path: PathBuf,
    rules: RuleSet,
    stamp: Option<Stamp>,
    /// A change seen but not applied yet, and since when it has been stable.
    changing: Option<(Option<Stamp>, Instant)>,
    no_match: NoMatchPolicy,
    keep_original_basename: bool,
}

impl SwitchStep {
    /// A switch on the rules in `rules_path`. A missing file or a file with errors is refused.
    pub fn new(rules_path: PathBuf, no_match: NoMatchPolicy) -> Result<Self, ironwork_core::config::ConfigErrors> {
        let stamp = stamp(&rules_path);
        let rules = RuleSet::load(&rules_path)?;
        tracing::info!(path = %rules_path.display(), rules = rules.len(), "switch rules loaded");
        Ok(Self {
            rules_path,
            rules,
            stamp,
            changing: None,
            no_match,
            keep_original_basename: false,
        })
    }

    /// Keep files that match nothing under their original base name (Metwork's
    /// `switch_no_match_keep_original_basename`).
    pub fn keep_original_basename(mut self, yes: bool) -> Self {
        self.keep_original_basename = yes;
        self
    }

    /// Re-read the rules if the file changed and has settled. Returns whether new rules are
    /// in force.
    pub fn reload_if_changed(&mut self) -> bool {
        let now = stamp(&self.rules_path);
        if now == self.stamp {
            self.changing = None;
            return false;
        }
        match &self.changing {
            Some((seen, since)) if *seen == now && since.elapsed() >= SETTLE => self.changing = None,
            Some((seen, _)) if *seen == now => return false,
            _ => {
                self.changing = Some((now, Instant::now()));
                return false;
            }
        }
        self.stamp = now.clone();
        if now.is_none() {
            tracing::error!(path = %self.rules_path.display(), "switch rules file disappeared: keeping the rules in force");
            return false;
        }
        match RuleSet::load(&self.rules_path) {
            Ok(rules) => {
                tracing::info!(path = %self.rules_path.display(), rules = rules.len(), "switch rules reloaded");
                self.rules = rules;
                true
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "switch rules refused, keeping the rules in force");
                }
                false
            }
        }
    }
}

impl Step for SwitchStep {
    async fn process(&mut self, file: &mut StepFile) -> Result<(), Failure> {
        let actions = self.rules.evaluate(file.tags());
        tracing::debug!(file = %file.path().display(), actions = actions.len(), "switch rules evaluated");
        if actions.is_empty() {
            match self.no_match {
                NoMatchPolicy::Delete => {}
                NoMatchPolicy::Keep => {
                    let dir = file.data.trash_dir(&file.plugin, "nomatch");
                    if self.keep_original_basename {
                        with_tags_file(file, &dir);
                    } else {
                        let name = file.claim_id().to_string();
                        file.move_to_dir(&dir, &name);
                        let text = file.tags().to_file_text().into_bytes();
                        file.write_beside(dir.join(format!("{name}.tags")), text);
                    }
                }
            }
            return Ok(());
        }
        for action in &actions {
            if action.hardlink {
                file.hardlink_to_step(&action.target, Basename::New);
            } else {
                file.copy_to_step(&action.target, Basename::New);
            }
        }
        Ok(())
    }

    fn tick(&mut self) {
        self.reload_if_changed();
    }
}
