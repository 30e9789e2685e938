//! Where files live under the data directory (`$IRONWORK_HOME/var/in`, Metwork's
//! `MFDATA_DATA_IN_DIR`), and which directories a message may point into.

use std::path::{Component, Path, PathBuf};

/// The data directory and the per-step directories under it.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    extra_roots: Vec<PathBuf>,
}

impl DataDir {
    /// `root` is the data directory; `extra_roots` are further directories messages may name
    /// (a step's `watched_directories` outside the data directory).
    pub fn new(root: impl Into<PathBuf>, extra_roots: Vec<PathBuf>) -> Self {
        Self {
            root: root.into(),
            extra_roots,
        }
    }

    /// The default data directory: `$IRONWORK_HOME/var/in`, or `./var/in` without a home.
    pub fn default_root() -> PathBuf {
        let home = std::env::var_os("IRONWORK_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| ".".into());
        home.join("var").join("in")
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `step.<plugin>.<step>/`: the directory a step is fed from.
    pub fn step_dir(&self, plugin: &str, step: &str) -> PathBuf {
        self.root.join(format!("step.{plugin}.{step}"))
    }

    /// `tmp/<plugin>.<step>/`: files claimed by a step, being processed.
    pub fn tmp_dir(&self, plugin: &str, step: &str) -> PathBuf {
        self.root.join("tmp").join(format!("{plugin}.{step}"))
    }

    /// `trash/<plugin>.<step>/`: files a step failed on (failure policy `keep`), with `.tags`.
    pub fn trash_dir(&self, plugin: &str, step: &str) -> PathBuf {
        self.root.join("trash").join(format!("{plugin}.{step}"))
    }

    /// `retry/<plugin>.<step>/`: files waiting for their next attempt.
    pub fn retry_dir(&self, plugin: &str, step: &str) -> PathBuf {
        self.root.join("retry").join(format!("{plugin}.{step}"))
    }

    /// The directories a step's messages may point into.
    pub fn sources(&self, plugin: &str, step: &str) -> Sources {
        Sources {
            exact: vec![self.step_dir(plugin, step), self.retry_dir(plugin, step)],
            trees: self.extra_roots.clone(),
        }
    }
}

/// Where a step takes files from: its own step and retry directories, and its watched
/// directories (with their subdirectories, for recursive watches). Nothing else under the data
/// directory — not another step's directory, not tmp, not the trash.
#[derive(Debug, Clone)]
pub struct Sources {
    exact: Vec<PathBuf>,
    trees: Vec<PathBuf>,
}

impl Sources {
    /// Whether a message naming `dir` may be obeyed. Paths are compared lexically; relative
    /// paths and `..` components are refused outright.
    pub fn accepts(&self, dir: &Path) -> bool {
        if !dir.is_absolute() || dir.components().any(|c| matches!(c, Component::ParentDir)) {
            return false;
        }
        self.exact.iter().any(|d| d == dir) || self.trees.iter().any(|t| dir.starts_with(t))
    }
}

/// A `plugin/step` target, as written in switch rules and `failure_policy_move_dest_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepName {
    /// The plugin.
    pub plugin: String,
    /// The step within it.
    pub step: String,
}

impl StepName {
    /// Parse `plugin/step`. Names are Metwork's: letters, digits, `_` and `-`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (plugin, step) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not of the form plugin/step"))?;
        for (what, name) in [("plugin", plugin), ("step", step)] {
            if !valid_name(name) {
                return Err(format!("{what} name {name:?} must be letters, digits, '_' or '-'"));
            }
        }
        Ok(Self {
            plugin: plugin.to_string(),
            step: step.to_string(),
        })
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.plugin, self.step)
    }
}

/// Whether `name` (from a message) is a plain file name: no separator, not `.` or `..`.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Whether `name` is a valid plugin or step name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_takes_files_from_its_own_directories_only() {
        let d = DataDir::new("/srv/in", vec!["/data/drop".into()]);
        let s = d.sources("a", "b");
        assert!(s.accepts(Path::new("/srv/in/step.a.b")));
        assert!(s.accepts(Path::new("/srv/in/retry/a.b")));
        assert!(s.accepts(Path::new("/data/drop")));
        assert!(s.accepts(Path::new("/data/drop/sub")));
        assert!(!s.accepts(Path::new("/srv/in")));
        assert!(!s.accepts(Path::new("/srv/in/step.other.main")));
        assert!(!s.accepts(Path::new("/srv/in/tmp/a.b")));
        assert!(!s.accepts(Path::new("/data/drop/../etc")));
        assert!(!s.accepts(Path::new("relative")));
    }

    #[test]
    fn step_names_parse() {
        assert_eq!(
            StepName::parse("archive/main").map(|s| s.to_string()),
            Ok("archive/main".into())
        );
        assert!(StepName::parse("archive").is_err());
        assert!(StepName::parse("a/b/c").is_err());
        assert!(StepName::parse("../x").is_err());
    }
}
