//! What conf_monitor watches, and how it notices a change: a fingerprint (size, modification
//! time, inode) of `config/ironwork.ini`, `config/nginx.conf.template`, every admin override
//! `config/plugins/*.ini` and every
//! top-level file of `plugins/*/` (its `config.ini` and the scripts it names), taken every poll
//! interval. Polling a few dozen `stat` calls a second
//! costs nothing, sees plugin directories appear and vanish without any watch bookkeeping, and
//! works on every filesystem.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One watched file's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

/// The state of every watched file (absent files are simply not in the map).
pub type Fingerprint = BTreeMap<PathBuf, Stamp>;

/// Take the fingerprint of the configuration under `home`.
pub fn fingerprint(home: &Path) -> Fingerprint {
    let mut out = Fingerprint::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            if m.is_file() {
                let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
                out.insert(
                    p,
                    Stamp {
                        len: m.len(),
                        mtime_ns,
                        ino: m.ino(),
                    },
                );
            }
        }
    };
    add(home.join("config").join("ironwork.ini"));
    add(home.join("config").join("nginx.conf.template"));
    for dir in [home.join("config").join("plugins")] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "ini") {
                add(e.path());
            }
        }
    }
    // Every top-level file of a plugin, not only its config.ini: generation resolves a step's
    // relative program against the plugin directory, so a script arriving after the config
    // changes the result.
    for e in std::fs::read_dir(home.join("plugins")).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            add(f.path());
        }
    }
    out
}

/// Turns a stream of fingerprints into "regenerate now" decisions: a change is acted on once
/// the files have stayed the same for the debounce period (an editor's save, a plugin being
/// unpacked, are several writes).
#[derive(Debug)]
pub struct Debouncer {
    applied: Option<Fingerprint>,
    pending: Option<(Fingerprint, Instant)>,
    quiet: Duration,
}

impl Debouncer {
    /// Act once the files have been quiet for `quiet`.
    pub fn new(quiet: Duration) -> Self {
        Self {
            applied: None,
            pending: None,
            quiet,
        }
    }

    /// Feed the latest fingerprint; returns true when it is time to regenerate (always true
    /// for the first one).
    pub fn observe(&mut self, now: Fingerprint, at: Instant) -> bool {
        if self.applied.as_ref() == Some(&now) {
            self.pending = None;
            return false;
        }
        if self.applied.is_none() {
            self.applied = Some(now);
            return true;
        }
        match &self.pending {
            Some((seen, since)) if *seen == now => {
                if at.duration_since(*since) >= self.quiet {
                    self.applied = Some(now);
                    self.pending = None;
                    true
                } else {
                    false
                }
            }
            _ => {
                self.pending = Some((now, at));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u64) -> Fingerprint {
        let mut f = Fingerprint::new();
        f.insert(
            "a".into(),
            Stamp {
                len: n,
                mtime_ns: 0,
                ino: 1,
            },
        );
        f
    }

    #[test]
    fn a_change_is_acted_on_once_it_has_settled() {
        let t0 = Instant::now();
        let q = Duration::from_secs(1);
        let mut d = Debouncer::new(q);
        assert!(d.observe(fp(1), t0), "the first look always generates");
        assert!(!d.observe(fp(1), t0));
        assert!(!d.observe(fp(2), t0));
        assert!(!d.observe(fp(3), t0 + q / 2), "still changing");
        assert!(!d.observe(fp(3), t0 + q));
        assert!(d.observe(fp(3), t0 + q / 2 + q), "quiet for a full period");
        assert!(!d.observe(fp(3), t0 + q * 5));
    }

    #[test]
    fn the_fingerprint_covers_settings_overrides_and_plugins() -> std::io::Result<()> {
        let home = tempfile::tempdir()?;
        let h = home.path();
        for d in ["config/plugins", "plugins/a", "plugins/b"] {
            std::fs::create_dir_all(h.join(d))?;
        }
        std::fs::write(h.join("config/ironwork.ini"), "")?;
        std::fs::write(h.join("config/plugins/a.ini"), "")?;
        std::fs::write(h.join("plugins/a/config.ini"), "")?;
        let f = fingerprint(h);
        assert_eq!(f.len(), 3);
        std::fs::write(h.join("plugins/b/config.ini"), "[step_main]\n")?;
        assert_ne!(fingerprint(h), f, "a new plugin is a change");
        Ok(())
    }
}
