//! File tags, Metwork's "xattr": one Redis hash per file, `xattr_<md5(absolute path)>`, with a
//! TTL. The hash follows the file: it is renamed when the file is claimed and copied to every
//! destination when the file is routed. Tag names are Metwork's:
//! `first.core.original_basename|original_uid|original_dirname`, `latest.core.step_counter`,
//! `<n>.<plugin>.<step>.<tag>` and `latest.<plugin>.<step>.<tag>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ironwork_core::Redis;
use md5::{Digest, Md5};
use redis::{RedisError, Script};

/// The Redis key holding the tags of the file at `path`.
pub fn key_for(path: &Path) -> String {
    let digest = Md5::digest(path.as_os_str().as_encoded_bytes());
    format!("xattr_{}", hex(&digest))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `ORIGINAL_*` tag names.
pub const ORIGINAL_BASENAME: &str = "first.core.original_basename";
/// The file's first identity, kept across steps.
pub const ORIGINAL_UID: &str = "first.core.original_uid";
/// The base name of the directory the file first appeared in.
pub const ORIGINAL_DIRNAME: &str = "first.core.original_dirname";
/// How many steps the file has entered (0 for the first).
pub const STEP_COUNTER: &str = "latest.core.step_counter";

/// A snapshot of one file's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(pub BTreeMap<String, String>);

impl Tags {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `latest.core.step_counter`, or 0.
    pub fn step_counter(&self) -> u64 {
        self.get(STEP_COUNTER).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// The `.tags` file written beside a kept file: `name = value` lines, sorted.
    pub fn to_file_text(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }

    /// All tags as one JSON object (the `IRONWORK_TAGS` variable of step commands).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }
}

/// What the tags of a file entering a step record.
#[derive(Debug)]
pub struct Entering<'a> {
    /// Where the file's tags were (its path in the step directory).
    pub from: &'a Path,
    /// Where the file now is (its path in the step's tmp directory).
    pub at: &'a Path,
    /// The claiming plugin.
    pub plugin: &'a str,
    /// The claiming step.
    pub step: &'a str,
    /// The file's first uid, should it have none yet.
    pub uid: &'a str,
    /// True when a previous run of this worker had already claimed the file: tags are only read
    /// (and moved, if the crash came between the claim and the move).
    pub resume: bool,
}

/// Renames the tags with the file, bumps the step counter, stamps `enter_step` and the `first.*`
/// tags, counts the file for the step and returns every tag, in one round trip.
const ENTER: &str = r"
local k = KEYS[2]
if KEYS[1] ~= k and redis.call('EXISTS', KEYS[1]) == 1 and (ARGV[2] == '0' or redis.call('EXISTS', k) == 0) then
  redis.call('RENAME', KEYS[1], k)
end
if ARGV[2] == '0' then
  local c = redis.call('HGET', k, 'latest.core.step_counter')
  local n = 0
  if c then n = (tonumber(c) or -1) + 1 end
  redis.call('HSET', k, 'latest.core.step_counter', n, n .. '.' .. ARGV[3] .. '.' .. ARGV[4] .. '.enter_step', ARGV[5])
  redis.call('HSETNX', k, 'first.core.original_basename', ARGV[6])
  redis.call('HSETNX', k, 'first.core.original_uid', ARGV[7])
  redis.call('HSETNX', k, 'first.core.original_dirname', ARGV[8])
  redis.call('INCR', KEYS[3])
  redis.call('SET', KEYS[4], ARGV[9])
end
redis.call('EXPIRE', k, ARGV[1])
return redis.call('HGETALL', k)
";

/// Reads and writes file tags.
#[derive(Debug, Clone)]
pub struct TagStore {
    redis: Redis,
    ttl: Duration,
    enter: Script,
}

impl TagStore {
    /// Tags kept for `ttl` after their last change.
    pub fn new(redis: Redis, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            enter: Script::new(ENTER),
        }
    }

    /// Record that a file entered a step (see [`Entering`]) and return its tags.
    pub async fn enter(&self, e: &Entering<'_>) -> Result<Tags, RedisError> {
        let basename = e
            .from
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dirname = e
            .from
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let now = SystemTime::now();
        let mut inv = self.enter.key(key_for(e.from));
        inv.key(key_for(e.at))
            .key(ironwork_core::messages::names::step_files(e.plugin, e.step))
            .key(format!("latest.{}.{}", e.plugin, e.step))
            .arg(self.ttl.as_secs().max(1))
            .arg(if e.resume { "1" } else { "0" })
            .arg(e.plugin)
            .arg(e.step)
            .arg(metwork_timestamp(now))
            .arg(basename)
            .arg(e.uid)
            .arg(dirname)
            .arg(now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
        let flat: Vec<(String, String)> = self
            .redis
            .retry("tags_enter", |mut c| {
                let inv = &inv;
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(Tags(flat.into_iter().collect()))
    }

    /// Write `pending` tags on the file at `at`, then give each of `dests` a copy of the whole
    /// set, in one round trip. Copies replace what a destination had.
    pub async fn write_and_copy(
        &self,
        at: &Path,
        pending: &[(String, String)],
        dests: &[&Path],
    ) -> Result<(), RedisError> {
        let src = key_for(at);
        let ttl = self.ttl.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        if !pending.is_empty() {
            pipe.hset_multiple(&src, pending).ignore();
            pipe.expire(&src, ttl).ignore();
        }
        for dest in dests {
            let dst = key_for(dest);
            pipe.cmd("COPY").arg(&src).arg(&dst).arg("REPLACE").ignore();
            pipe.expire(&dst, ttl).ignore();
        }
        self.redis.pipeline::<()>("tags_copy", &pipe).await
    }

    /// Forget the tags of the files at `paths`, in one round trip.
    pub async fn delete_all(&self, paths: &[std::path::PathBuf]) -> Result<(), RedisError> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for p in paths {
            cmd.arg(key_for(p));
        }
        self.redis
            .retry("tags_delete", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await
    }
}

/// Metwork's tag timestamp: `%Y-%m-%dT%H:%M:%S:%f`, UTC.
pub fn metwork_timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = ironwork_core::calendar::civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}:{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_md5_of_the_path() {
        // python3 -c 'import hashlib;print(hashlib.md5(b"/tmp/a").hexdigest())'
        assert_eq!(key_for(Path::new("/tmp/a")), "xattr_4a95409c024057266531d5bf11909beb");
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn timestamps_match_metwork_format() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(metwork_timestamp(t), "2023-11-14T22:13:20:123456");
        assert_eq!(
            metwork_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00:000000"
        );
    }

    #[test]
    fn tags_file_is_sorted_name_value_lines() {
        let mut t = Tags::default();
        t.0.insert("b".into(), "2".into());
        t.0.insert("a".into(), "1".into());
        assert_eq!(t.to_file_text(), "a = 1\nb = 2\n");
    }
}
