//! A collector started in-process on a private Redis, with a plugin directory of scripts.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use collector::config::Config;
use ironwork_test_support::http::{request, Answer};
use ironwork_test_support::RedisServer;
use tokio_util::sync::CancellationToken;

/// A running collector and everything it uses.
pub struct Agent {
    pub redis: RedisServer,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub token: CancellationToken,
    pub running: Option<collector::Running>,
    pub addr: String,
    pub api_token: String,
    pub reload: tokio::sync::watch::Sender<u64>,
}

/// Write an executable shell script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Agent {
    /// `settings` are extra `[collector]` lines; `collections` is the rest of the file, where
    /// `@PLUGIN@` stands for the plugin directory.
    pub fn start(redis: RedisServer, settings: &str, collections: &str, scripts: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        for (name, body) in scripts {
            script(&plugin, name, body);
        }
        let text = Self::config_text(&redis, dir.path(), settings, collections);
        std::fs::write(dir.path().join("collector.ini"), text).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = Config::load(&dir.path().join("collector.ini")).expect("test config loads");
        let token = CancellationToken::new();
        let (reload, reload_rx) = tokio::sync::watch::channel(0);
        let running = rt
            .block_on(collector::start(config, token.clone(), reload_rx))
            .expect("collector starts");
        let addr = running.api_addr.expect("api listens").to_string();
        let api_token = std::fs::read_to_string(dir.path().join("state/collector.token"))
            .unwrap()
            .trim()
            .to_string();
        Self {
            redis,
            dir,
            rt,
            token,
            running: Some(running),
            addr,
            api_token,
            reload,
        }
    }

    pub fn config_text(redis: &RedisServer, dir: &Path, settings: &str, collections: &str) -> String {
        format!(
            "[collector]\nredis = {}\nlisten = 127.0.0.1:0\ntoken_file = {}\nlog_roots = {}\n\
             kill_grace = 500ms\ndrain = 300ms\n{settings}\n{}",
            redis.url(),
            dir.join("state/collector.token").display(),
            dir.join("log").display(),
            collections.replace("@PLUGIN@", &dir.join("plugin").display().to_string())
        )
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.path().join("plugin")
    }

    pub fn get(&self, path: &str) -> Answer {
        request(&self.addr, "GET", path, &[], b"").unwrap()
    }

    pub fn get_auth(&self, path: &str) -> Answer {
        let auth = format!("Bearer {}", self.api_token);
        request(&self.addr, "GET", path, &[("authorization", &auth)], b"").unwrap()
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Answer {
        let auth = format!("Bearer {}", self.api_token);
        request(&self.addr, "POST", path, &[("authorization", &auth)], body).unwrap()
    }

    /// Every message of a Redis list (LPUSH-ed), oldest first, parsed as JSON.
    pub fn list(&self, key: &str) -> Vec<serde_json::Value> {
        let raw = self.redis.cli(&["LRANGE", key, "0", "-1"]);
        let mut v: Vec<serde_json::Value> = raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        v.reverse();
        v
    }

    pub fn llen(&self, key: &str) -> u64 {
        self.redis.cli(&["LLEN", key]).trim().parse().unwrap_or(0)
    }

    pub fn stop(&mut self) {
        self.token.cancel();
        if let Some(r) = self.running.take() {
            self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(15), r.join())
                    .await
                    .expect("collector stops within 15 s");
            });
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.token.cancel();
    }
}
