//! What ringmaster reads from /proc: per-process stats (RSS, CPU ticks, start time, parent,
//! process group, session) and process-tree walks for tree kills.
//!
//! Everything here is a best-effort snapshot: a process may exit between two reads, in which case
//! it is simply absent from the result. [`CpuSampler`] turns successive CPU tick samples into
//! CPU percentages for `ringctl stats`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use nix::unistd::{sysconf, SysconfVar};

/// One process's `/proc/<pid>/stat` and `statm` essentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The pid.
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Process group id.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// `utime + stime`, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks (with the pid, identifies a process across pid reuse).
    pub start_ticks: u64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Whether the process is a zombie (state `Z`).
    pub zombie: bool,
}

/// Read `/proc/<pid>/stat` (+ `statm`); `None` if the process is gone.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let mut st = parse_stat(pid, &stat)?;
    st.rss_bytes = rss_pages.saturating_mul(page_size());
    Some(st)
}

/// Parse the text of `/proc/<pid>/stat` (without RSS, which comes from `statm`).
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`, so the
/// fields after it are found after the *last* `)`.
fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here; see proc(5) for the numbering.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    let int = |i: usize| -> Option<i32> { fields.get(i)?.parse().ok() };
    Some(ProcStat {
        pid,
        ppid: int(1)?,
        pgrp: int(2)?,
        session: int(3)?,
        cpu_ticks: num(11)?.saturating_add(num(12)?),
        start_ticks: num(19)?,
        rss_bytes: 0,
        zombie: *fields.first()? == "Z",
    })
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Stats of every live (non-zombie) process, from one /proc scan.
fn live_stats() -> Vec<ProcStat> {
    all_pids().into_iter().filter_map(stat).filter(|s| !s.zombie).collect()
}

/// Every live descendant of `root` (children, grandchildren, …), found by parent links.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for s in live_stats() {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            // Guard against a (theoretical) cycle from pid reuse during the scan.
            if child != root && !found.contains(&child) {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

/// Every live process whose process group or session is `id` (a setsid leader's whole tree, unless
/// members called setsid themselves).
pub fn group_members(id: i32) -> Vec<i32> {
    live_stats()
        .into_iter()
        .filter(|s| s.pgrp == id || s.session == id)
        .map(|s| s.pid)
        .collect()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| sysconf_u64(SysconfVar::CLK_TCK).unwrap_or(100))
}

/// Memory page size in bytes (`sysconf(_SC_PAGE_SIZE)`).
fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| sysconf_u64(SysconfVar::PAGE_SIZE).unwrap_or(4096))
}

fn sysconf_u64(var: SysconfVar) -> Option<u64> {
    let value = sysconf(var).ok()??;
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// Turns successive `(pid, cpu_ticks)` samples into CPU % since each pid's previous sample.
#[derive(Debug)]
pub struct CpuSampler {
    ticks_per_second: u64,
    previous: HashMap<i32, (u64, Instant)>,
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuSampler {
    /// A sampler using the system's clock tick rate.
    pub fn new() -> Self {
        Self::with_ticks_per_second(ticks_per_second())
    }

    /// A sampler for a given clock tick rate.
    pub fn with_ticks_per_second(ticks_per_second: u64) -> Self {
        Self {
            ticks_per_second: ticks_per_second.max(1),
            previous: HashMap::new(),
        }
    }

    /// Record the samples taken at `now` and return CPU % (100 = one full core) per pid, for pids
    /// that had a previous sample; pids absent from `samples` are forgotten.
    pub fn sample(&mut self, now: Instant, samples: &[(i32, u64)]) -> HashMap<i32, f64> {
        let mut percents = HashMap::new();
        let mut next = HashMap::with_capacity(samples.len());
        for &(pid, ticks) in samples {
            if let Some(&(prev_ticks, prev_at)) = self.previous.get(&pid) {
                let secs = now.saturating_duration_since(prev_at).as_secs_f64();
                // A tick count going backwards means the pid was reused: report 0 this time.
                let used = ticks.saturating_sub(prev_ticks) as f64 / self.ticks_per_second as f64;
                let percent = if secs > 0.0 { used / secs * 100.0 } else { 0.0 };
                percents.insert(pid, percent);
            }
            next.insert(pid, (ticks, now));
        }
        self.previous = next;
        percents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    /// Kill a child's whole process group (it was started with `process_group(0)`) and reap it.
    fn kill_group(mut child: Child) {
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        child.wait().expect("reap child");
    }

    /// Spawn `sh -c 'sleep 30 & echo $!; sleep 30'` in its own group; return it and the background pid.
    fn spawn_tree() -> (Child, i32) {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; sleep 30"])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read grandchild pid");
        let grandchild = line.trim().parse().expect("grandchild pid");
        (child, grandchild)
    }

    #[test]
    fn stat_of_self() {
        let me = stat(std::process::id() as i32).expect("own stat");
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.ppid, std::os::unix::process::parent_id() as i32);
        assert!(me.rss_bytes > 0);
        assert!(!me.zombie);
        assert!(me.start_ticks > 0);
        assert!(ticks_per_second() > 0);
        assert!(all_pids().contains(&me.pid));
    }

    #[test]
    fn descendants_include_grandchild() {
        let (child, grandchild) = spawn_tree();
        let pid = child.id() as i32;
        let found = descendants(pid);
        let mine = descendants(std::process::id() as i32);
        kill_group(child);
        assert!(found.contains(&grandchild), "{found:?} lacks {grandchild}");
        assert!(!found.contains(&pid));
        assert!(mine.contains(&pid) && mine.contains(&grandchild), "{mine:?}");
    }

    #[test]
    fn group_members_include_grandchild() {
        let (child, grandchild) = spawn_tree();
        let pid = child.id() as i32;
        let members = group_members(pid);
        kill_group(child);
        assert!(members.contains(&pid), "{members:?} lacks {pid}");
        assert!(members.contains(&grandchild), "{members:?} lacks {grandchild}");
        assert!(!members.contains(&(std::process::id() as i32)));
    }

    #[test]
    fn comm_with_spaces_and_paren() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("a b) c");
        std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
        // Another test thread forking while the copy's fd was open can make exec fail with
        // ETXTBSY for a moment; retry briefly.
        let mut attempts = 0;
        let child = loop {
            match Command::new(&exe).arg("30").process_group(0).spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("spawn {exe:?}: {e}"),
            }
        };
        let pid = child.id() as i32;
        let st = stat(pid);
        kill_group(child);
        let st = st.expect("child stat");
        assert_eq!(st.pid, pid);
        assert_eq!(st.ppid, std::process::id() as i32);
        assert_eq!(st.pgrp, pid);
        assert!(st.rss_bytes > 0);
    }

    #[test]
    fn parse_tricky_comm() {
        let text = "42 (x) (y) z) S 7 42 40 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 1 0 12345 1000 50";
        let st = parse_stat(42, text).expect("parse");
        assert_eq!((st.pid, st.ppid, st.pgrp, st.session), (42, 7, 42, 40));
        assert_eq!(st.cpu_ticks, 42);
        assert_eq!(st.start_ticks, 12345);
        assert!(!st.zombie);
        assert!(parse_stat(1, "1 (truncated").is_none());
        assert!(parse_stat(1, "1 (x) S 1 2").is_none());
    }

    #[test]
    fn dead_and_zombie() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id() as i32;
        // Not yet reaped: a zombie once it exits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stat(pid).is_some_and(|s| s.zombie) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(stat(pid).expect("zombie still listed").zombie);
        assert!(!descendants(std::process::id() as i32).contains(&pid));
        child.wait().expect("reap");
        assert_eq!(stat(pid), None);
    }

    #[test]
    fn cpu_sampler_percent() {
        let mut sampler = CpuSampler::with_ticks_per_second(100);
        let t0 = Instant::now();
        assert!(sampler.sample(t0, &[(1, 1000), (2, 50)]).is_empty());
        let t1 = t0 + Duration::from_secs(2);
        let p = sampler.sample(t1, &[(1, 1100), (3, 7)]);
        assert!((p[&1] - 50.0).abs() < 1e-9);
        assert!(!p.contains_key(&3));
        assert!(!p.contains_key(&2));
        // pid 2 was forgotten: seen again, it starts over.
        let t2 = t1 + Duration::from_secs(1);
        let p = sampler.sample(t2, &[(2, 60), (3, 107)]);
        assert!(!p.contains_key(&2));
        assert!((p[&3] - 100.0).abs() < 1e-9);
        // Same instant or ticks going backwards: 0, not NaN or a panic.
        let p = sampler.sample(t2, &[(3, 1)]);
        assert_eq!(p[&3], 0.0);
    }
}
