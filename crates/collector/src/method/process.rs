//! The `PROCESS` method: is a process running on this host, how many, and what do they use.
//! Reads `/proc`, so the target is only a tag: the processes are always local.
//!
//! Keys (exactly one of `process_name` and `pidfile`):
//! - `process_name`: the processes whose `/proc/<pid>/comm` equals it (the kernel keeps at most
//!   15 bytes of it, so a longer name is refused), or, with `match = cmdline`, whose command line
//!   (arguments joined with spaces) contains it.
//! - `match` (optional, with `process_name`): `comm` (default) or `cmdline`.
//! - `pidfile`: the file holding the pid of the one process to watch; `{var}` placeholders are
//!   rendered per run. A missing pidfile, or one naming a pid that is gone, means down.
//!
//! Points, tagged `target` and `process` (the name, or the rendered pidfile path):
//! - `process.up`: 1 when at least one process matched, else 0.
//! - `process.count`: how many matched.
//! - `process.rss_bytes`: resident memory, summed over them (only when up).
//! - `process.cpu_seconds`: user + system CPU time consumed so far, summed (only when up).
//!
//! A pidfile that exists but cannot be read or does not hold a pid fails the run with kind
//! `pidfile`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use ironwork_core::config::SectionReader;
use nix::unistd::{sysconf, SysconfVar};

use super::{point_with, Failure, Outcome, Probe, ProbeFuture};
use crate::collection::Run;

/// The longest `comm` the kernel keeps (TASK_COMM_LEN − 1).
const COMM_MAX: usize = 15;

/// Compile a `PROCESS` section.
pub fn compile(r: &mut SectionReader<'_>) -> Arc<dyn Probe> {
    let name = r.str("process_name").filter(|s| !s.is_empty());
    let pidfile = r.str("pidfile").filter(|s| !s.is_empty());
    let by_cmdline = r.parse_with("match", false, |s| match s.trim().to_ascii_lowercase().as_str() {
        "comm" => Ok(false),
        "cmdline" => Ok(true),
        _ => Err("expected comm or cmdline".into()),
    });
    let select = match (name, pidfile) {
        (Some(name), None) => {
            if !by_cmdline && name.len() > COMM_MAX {
                r.error(
                    "process_name",
                    format!("the kernel keeps only {COMM_MAX} bytes of a process name; use match = cmdline"),
                );
            }
            Select::Name {
                name: name.to_string(),
                by_cmdline,
            }
        }
        (None, Some(path)) => {
            if r.str("match").is_some() {
                r.error("match", "only applies to process_name");
            }
            Select::Pidfile(path.to_string())
        }
        (Some(_), Some(_)) => {
            r.error("pidfile", "give process_name or pidfile, not both");
            Select::Pidfile(String::new())
        }
        (None, None) => {
            r.error("process_name", "missing required key (or give pidfile)");
            Select::Pidfile(String::new())
        }
    };
    Arc::new(ProcessProbe { select })
}

/// Which processes a section watches.
#[derive(Debug, Clone)]
enum Select {
    /// By name: `comm` equal to it, or a command line containing it.
    Name { name: String, by_cmdline: bool },
    /// The pid in this file (a template).
    Pidfile(String),
}

/// A compiled `PROCESS` section.
#[derive(Debug)]
struct ProcessProbe {
    select: Select,
}

impl Probe for ProcessProbe {
    fn collect<'a>(&'a self, run: &'a Run) -> ProbeFuture<'a> {
        Box::pin(async move {
            let (select, label) = match &self.select {
                Select::Name { name, .. } => (self.select.clone(), name.clone()),
                Select::Pidfile(template) => {
                    let path = run.render(template);
                    (Select::Pidfile(path.clone()), path)
                }
            };
            let scan = tokio::task::spawn_blocking(move || scan(Path::new("/proc"), &select, Units::of_host()));
            let usage = match tokio::time::timeout(run.timeout, scan).await {
                Ok(Ok(Ok(usage))) => usage,
                Ok(Ok(Err(failure))) => return failure.into(),
                Ok(Err(join)) => return Outcome::failed("io", format!("reading /proc: {join}")),
                Err(_) => return Outcome::failed("timeout", "reading /proc took longer than the run's timeout"),
            };
            let tags = BTreeMap::from([("process".to_string(), label)]);
            let mut points = vec![
                point_with(run, "process.up", u8::from(usage.count > 0), tags.clone()),
                point_with(run, "process.count", usage.count, tags.clone()),
            ];
            if usage.count > 0 {
                points.push(point_with(run, "process.rss_bytes", usage.rss_bytes, tags.clone()));
                points.push(point_with(run, "process.cpu_seconds", usage.cpu_seconds, tags));
            }
            Outcome::ok(points)
        })
    }
}

/// The host's units for `/proc` numbers.
#[derive(Debug, Clone, Copy)]
struct Units {
    /// Bytes per page (`statm`).
    page_size: u64,
    /// Clock ticks per second (`stat`'s times).
    clk_tck: f64,
}

impl Units {
    /// This host's, with Linux's usual values if sysconf cannot tell.
    fn of_host() -> Self {
        let get = |var, fallback: i64| match sysconf(var) {
            Ok(Some(v)) if v > 0 => v,
            _ => fallback,
        };
        Self {
            page_size: get(SysconfVar::PAGE_SIZE, 4096) as u64,
            clk_tck: get(SysconfVar::CLK_TCK, 100) as f64,
        }
    }
}

/// What the matched processes use, summed.
#[derive(Debug, Default, Clone, PartialEq)]
struct Usage {
    count: u64,
    rss_bytes: u64,
    cpu_seconds: f64,
}

/// Find the processes `select` names under the proc filesystem at `root` and sum their usage.
/// Processes that exit while being read are skipped.
fn scan(root: &Path, select: &Select, units: Units) -> Result<Usage, Failure> {
    let pids = match select {
        Select::Pidfile(path) => match read_pidfile(Path::new(path))? {
            Some(pid) => vec![pid],
            None => Vec::new(),
        },
        Select::Name { name, by_cmdline } => {
            let entries = std::fs::read_dir(root).map_err(|e| Failure {
                kind: "io",
                message: format!("listing {}: {e}", root.display()),
            })?;
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| matches(&root.join(pid.to_string()), name, *by_cmdline))
                .collect()
        }
    };
    let mut usage = Usage::default();
    for pid in pids {
        if let Some((rss, cpu)) = pid_usage(&root.join(pid.to_string()), units) {
            usage.count += 1;
            usage.rss_bytes += rss;
            usage.cpu_seconds += cpu;
        }
    }
    Ok(usage)
}

/// The pid in `path`; None when the file does not exist (the process is stopped).
fn read_pidfile(path: &Path) -> Result<Option<u32>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Failure {
                kind: "pidfile",
                message: format!("reading {}: {e}", path.display()),
            })
        }
    };
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(Some(pid)),
        _ => Err(Failure {
            kind: "pidfile",
            message: format!("{} does not hold a pid (found {:?})", path.display(), text.trim()),
        }),
    }
}

/// Whether the process at `dir` (`/proc/<pid>`) is one we look for.
fn matches(dir: &Path, name: &str, by_cmdline: bool) -> bool {
    if by_cmdline {
        // Kernel threads have an empty command line: never a match.
        std::fs::read(dir.join("cmdline")).is_ok_and(|raw| !raw.is_empty() && cmdline(&raw).contains(name))
    } else {
        std::fs::read_to_string(dir.join("comm")).is_ok_and(|comm| comm.strip_suffix('\n').unwrap_or(&comm) == name)
    }
}

/// `/proc/<pid>/cmdline` (NUL-terminated arguments) as the arguments joined with spaces.
fn cmdline(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    String::from_utf8_lossy(raw).replace('\0', " ")
}

/// Resident bytes and CPU seconds of the process at `dir`; None when it is gone.
fn pid_usage(dir: &Path, units: Units) -> Option<(u64, f64)> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let ticks = cpu_ticks(&stat)?;
    let statm = std::fs::read_to_string(dir.join("statm")).ok()?;
    let pages = resident_pages(&statm)?;
    Some((pages * units.page_size, ticks as f64 / units.clk_tck))
}

/// utime + stime from `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so fields are counted after the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // state is field 3; utime is field 14
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The resident set, in pages, from `/proc/<pid>/statm` (its second field).
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::method::testing;

    const UNITS: Units = Units {
        page_size: 4096,
        clk_tck: 100.0,
    };

    /// A process in a fake `/proc` at `root`.
    fn fake_pid(root: &Path, pid: u32, comm: &str, cmdline: &[&str], ticks: (u64, u64), pages: u64) -> PathBuf {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("comm"), format!("{comm}\n")).expect("comm");
        let mut raw = cmdline.join("\0");
        if !raw.is_empty() {
            raw.push('\0');
        }
        std::fs::write(dir.join("cmdline"), raw).expect("cmdline");
        std::fs::write(
            dir.join("stat"),
            format!(
                "{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 1 0 12345 1000000 {pages} 18446744073709551615",
                ticks.0, ticks.1
            ),
        )
        .expect("stat");
        std::fs::write(dir.join("statm"), format!("2000 {pages} 300 10 0 400 0\n")).expect("statm");
        dir
    }

    fn by_name(name: &str, by_cmdline: bool) -> Select {
        Select::Name {
            name: name.into(),
            by_cmdline,
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (my (odd) prog) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("42 (short) S 1"), None);
        assert_eq!(resident_pages("2000 123 300 10 0 400 0\n"), Some(123));
        assert_eq!(
            cmdline(b"nginx: worker\0-g\0daemon off;\0"),
            "nginx: worker -g daemon off;"
        );
    }

    #[test]
    fn processes_match_by_comm_exactly_or_by_cmdline_substring() {
        let root = tempfile::tempdir().expect("tempdir");
        fake_pid(
            root.path(),
            10,
            "nginx",
            &["nginx: master process", "-g", "daemon off;"],
            (100, 50),
            10,
        );
        fake_pid(root.path(), 11, "nginx", &["nginx: worker process"], (300, 50), 20);
        fake_pid(
            root.path(),
            12,
            "nginx-exporter",
            &["/usr/bin/nginx-exporter"],
            (1, 1),
            5,
        );
        fake_pid(root.path(), 13, "kworker/0:1", &[], (7, 7), 0);
        std::fs::create_dir(root.path().join("sys")).expect("not a pid");

        let usage = scan(root.path(), &by_name("nginx", false), UNITS).expect("scan");
        assert_eq!(
            usage,
            Usage {
                count: 2,
                rss_bytes: 30 * 4096,
                cpu_seconds: 5.0
            }
        );
        let usage = scan(root.path(), &by_name("daemon off", true), UNITS).expect("scan");
        assert_eq!(usage.count, 1);
        assert_eq!(usage.rss_bytes, 10 * 4096);
        let usage = scan(root.path(), &by_name("nginx", true), UNITS).expect("scan");
        assert_eq!(usage.count, 3);
        // Kernel threads have no command line: even an empty pattern never matches them.
        let usage = scan(root.path(), &by_name("", true), UNITS).expect("scan");
        assert_eq!(usage.count, 3);
        let usage = scan(root.path(), &by_name("nginx-", false), UNITS).expect("scan");
        assert_eq!(usage.count, 0);
    }

    #[test]
    fn pidfiles_missing_stale_or_garbage() {
        let root = tempfile::tempdir().expect("tempdir");
        fake_pid(root.path(), 77, "redis-server", &["redis-server *:6379"], (10, 10), 3);
        let pidfile = root.path().join("redis.pid");
        let select = Select::Pidfile(pidfile.display().to_string());

        assert_eq!(scan(root.path(), &select, UNITS).expect("missing").count, 0);
        std::fs::write(&pidfile, "77\n").expect("write");
        let usage = scan(root.path(), &select, UNITS).expect("running");
        assert_eq!((usage.count, usage.rss_bytes), (1, 3 * 4096));
        assert!((usage.cpu_seconds - 0.2).abs() < 1e-9, "{usage:?}");
        std::fs::write(&pidfile, "78\n").expect("write");
        assert_eq!(scan(root.path(), &select, UNITS).expect("stale").count, 0);
        std::fs::write(&pidfile, "redis\n").expect("write");
        let failure = scan(root.path(), &select, UNITS).expect_err("garbage");
        assert_eq!(failure.kind, "pidfile");
        assert!(failure.message.contains("\"redis\""), "{}", failure.message);
    }

    #[test]
    fn keys_need_exactly_one_selector() {
        let (_, errors) = testing::compile(compile, "match = cmdline");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("process_name: missing required key"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "process_name = sshd\npidfile = /run/sshd.pid");
        assert!(errors[0].contains("not both"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "process_name = a-very-long-daemon-name");
        assert!(errors[0].contains("use match = cmdline"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "process_name = a-very-long-daemon-name\nmatch = cmdline");
        assert!(errors.is_empty(), "{errors:?}");
        let (_, errors) = testing::compile(compile, "process_name = sshd\nmatch = exe");
        assert!(errors[0].contains("match: expected comm or cmdline"), "{errors:?}");
        let (_, errors) = testing::compile(compile, "pidfile = /run/x.pid\nmatch = cmdline");
        assert!(errors[0].contains("match: only applies to process_name"), "{errors:?}");
    }

    #[tokio::test]
    async fn finds_this_test_process_by_a_rendered_pidfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("me.pid"), std::process::id().to_string()).expect("write");
        let (probe, errors) = testing::compile(compile, "pidfile = {dir}/me.pid");
        assert!(errors.is_empty(), "{errors:?}");
        let mut run = testing::run("localhost");
        run.vars.insert("dir".into(), dir.path().display().to_string());
        let out = probe.collect(&run).await;
        assert_eq!(out.failure, None);
        let value = |name: &str| {
            out.points
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("no {name} in {:?}", out.points))
                .value
                .clone()
        };
        assert_eq!(value("process.up"), 1);
        assert_eq!(value("process.count"), 1);
        assert!(
            value("process.rss_bytes").as_u64().is_some_and(|b| b > 1 << 20),
            "{out:?}"
        );
        assert!(
            value("process.cpu_seconds").as_f64().is_some_and(|s| s >= 0.0),
            "{out:?}"
        );
        let pidfile = format!("{}/me.pid", dir.path().display());
        assert!(
            out.points.iter().all(|p| p.tags.get("process") == Some(&pidfile)),
            "{out:?}"
        );
    }
}
