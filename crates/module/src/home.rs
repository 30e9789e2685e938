//! The runtime home (`$IRONWORK_HOME`): where everything an ironwork stack reads and writes lives.
//!
//! ```text
//! config/ironwork.ini            module settings (see [`crate::settings`])
//! config/plugins/<name>.ini      admin overrides of a plugin's config.ini
//! plugins/<name>/config.ini      installed plugins
//! tmp/config_auto/               generated: ringmaster.ini, directory_observer.ini, switch_rules.ini
//! var/redis.sock                 the managed Redis
//! var/ringmaster.sock            ringmaster's control socket
//! var/in/                        data: incoming/, step.<plugin>.<step>/, tmp/, trash/, retry/
//! var/state/                     checkpoints, pid files, lease ids
//! log/                           one log per daemon and step
//! ```
//!
//! [`Home`] only computes paths; [`Home::init`] is the one place that creates the tree.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable naming the runtime home.
pub const HOME_ENV: &str = "IRONWORK_HOME";

/// Problems with the runtime home itself.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("create directory", "write", …).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `ironwork init` on a home that already has its settings file.
    #[error("{0} already exists: refusing to overwrite it (edit it, or remove it to start over)")]
    AlreadyInitialised(PathBuf),
    /// `$IRONWORK_HOME` is not set.
    #[error("IRONWORK_HOME is not set (export IRONWORK_HOME=/path/to/home, or pass the home explicitly)")]
    NotSet,
}

/// A runtime home: path helpers for its layout. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Home {
    /// The home directory.
    pub root: PathBuf,
    /// `[data] in_dir` when set: the data directory lives elsewhere than `var/in`.
    data: Option<PathBuf>,
}

impl Home {
    /// The home at `root` (made absolute against the working directory if relative).
    pub fn new(root: impl Into<PathBuf>) -> Home {
        let root = root.into();
        let root = std::path::absolute(&root).unwrap_or(root);
        Home { root, data: None }
    }

    /// The home named by `$IRONWORK_HOME`.
    pub fn from_env() -> Result<Home, HomeError> {
        match std::env::var_os(HOME_ENV) {
            Some(v) if !v.is_empty() => Ok(Home::new(PathBuf::from(v))),
            _ => Err(HomeError::NotSet),
        }
    }

    /// Create the home tree in `dir` with a commented `config/ironwork.ini`. Directories that
    /// already exist are kept; an existing `config/ironwork.ini` is never overwritten.
    pub fn init(dir: &Path) -> Result<Home, HomeError> {
        let home = Home::new(dir);
        let ini = home.ironwork_ini();
        if ini.exists() {
            return Err(HomeError::AlreadyInitialised(ini));
        }
        // Private: sockets, queued data, admin settings and what is generated from them
        // (passwords in Redis and Elasticsearch URLs included) are nobody else's business.
        let private = [
            home.config_dir(),
            home.plugin_overrides_dir(),
            home.var_dir(),
            home.config_auto_dir(),
        ];
        for d in &private {
            create_dir(d, 0o700)?;
        }
        let public = [
            home.plugins_dir(),
            home.data_dir(),
            home.incoming_dir(),
            home.data_tmp_dir(),
            home.trash_dir(),
            home.retry_dir(),
            home.state_dir(),
            home.log_dir(),
        ];
        for d in &public {
            create_dir(d, 0o755)?;
        }
        // Created above, and possibly pre-existing with looser modes: tighten them either way.
        for d in [home.config_dir(), home.var_dir(), home.config_auto_dir()] {
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).map_err(|source| HomeError::Io {
                action: "set permissions of",
                path: d.clone(),
                source,
            })?;
        }
        let io = |action, source| HomeError::Io {
            action,
            path: ini.clone(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&ini)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    HomeError::AlreadyInitialised(ini.clone())
                } else {
                    io("create", e)
                }
            })?;
        f.write_all(crate::settings::DEFAULT_IRONWORK_INI.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io("write", e))?;
        Ok(home)
    }

    /// `config/`.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    /// `config/ironwork.ini`.
    pub fn ironwork_ini(&self) -> PathBuf {
        self.config_dir().join("ironwork.ini")
    }

    /// `config/plugins/`: admin overrides.
    pub fn plugin_overrides_dir(&self) -> PathBuf {
        self.config_dir().join("plugins")
    }

    /// `config/plugins/<name>.ini`: the admin override of plugin `name`.
    pub fn plugin_override(&self, name: &str) -> PathBuf {
        self.plugin_overrides_dir().join(format!("{name}.ini"))
    }

    /// `plugins/`.
    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// `plugins/<name>/`.
    pub fn plugin_dir(&self, name: &str) -> PathBuf {
        self.plugins_dir().join(name)
    }

    /// `tmp/config_auto/`: generated configuration.
    pub fn config_auto_dir(&self) -> PathBuf {
        self.root.join("tmp").join("config_auto")
    }

    /// `tmp/config_auto/ringmaster.ini`.
    pub fn ringmaster_ini(&self) -> PathBuf {
        self.config_auto_dir().join("ringmaster.ini")
    }

    /// `tmp/config_auto/directory_observer.ini`.
    pub fn directory_observer_ini(&self) -> PathBuf {
        self.config_auto_dir().join("directory_observer.ini")
    }

    /// `tmp/config_auto/switch_rules.ini`.
    pub fn switch_rules_ini(&self) -> PathBuf {
        self.config_auto_dir().join("switch_rules.ini")
    }

    /// `tmp/config_auto/nginx.conf`.
    pub fn nginx_conf(&self) -> PathBuf {
        self.config_auto_dir().join("nginx.conf")
    }

    /// `var/`.
    pub fn var_dir(&self) -> PathBuf {
        self.root.join("var")
    }

    /// `var/redis.sock`: the managed Redis's socket.
    pub fn redis_socket(&self) -> PathBuf {
        self.var_dir().join("redis.sock")
    }

    /// `var/ringmaster.sock`: ringmaster's control socket.
    pub fn ringmaster_socket(&self) -> PathBuf {
        self.var_dir().join("ringmaster.sock")
    }

    /// The data directory: `[data] in_dir`, `var/in/` by default.
    pub fn data_dir(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| self.var_dir().join("in"))
    }

    /// This home with its data directory at `dir` (from `[data] in_dir`; `None`: `var/in`).
    pub fn with_data_dir(mut self, dir: Option<PathBuf>) -> Home {
        self.data = dir;
        self
    }

    /// `var/in/incoming/`: where files enter the pipeline (the switch's input).
    pub fn incoming_dir(&self) -> PathBuf {
        self.data_dir().join("incoming")
    }

    /// `var/in/tmp/`: files claimed by a step.
    pub fn data_tmp_dir(&self) -> PathBuf {
        self.data_dir().join("tmp")
    }

    /// `var/in/trash/`: kept failures.
    pub fn trash_dir(&self) -> PathBuf {
        self.data_dir().join("trash")
    }

    /// `var/in/retry/`: files waiting for a retry.
    pub fn retry_dir(&self) -> PathBuf {
        self.data_dir().join("retry")
    }

    /// `var/in/step.<plugin>.<step>/`: a step's own directory.
    pub fn step_dir(&self, plugin: &str, step: &str) -> PathBuf {
        self.data_dir().join(format!("step.{plugin}.{step}"))
    }

    /// `tmp/config_auto/collector.ini`.
    pub fn collector_ini(&self) -> PathBuf {
        self.config_auto_dir().join("collector.ini")
    }

    /// `tmp/config_auto/reflector.ini`.
    pub fn reflector_ini(&self) -> PathBuf {
        self.config_auto_dir().join("reflector.ini")
    }

    /// `var/state/`.
    pub fn state_dir(&self) -> PathBuf {
        self.var_dir().join("state")
    }

    /// `log/`.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
}

fn create_dir(path: &Path, mode: u32) -> Result<(), HomeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| HomeError::Io {
            action: "create directory",
            path: path.to_path_buf(),
            source,
        })
}
