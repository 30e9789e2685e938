//! What ringmaster reads from /proc: per-process stats (RSS, CPU ticks, start time, parent,
//! process group, session) and process-tree walks for tree kills.

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
    let _ = pid;
    todo!()
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<i32> {
    todo!()
}

/// Every live descendant of `root` (children, grandchildren, …), found by parent links.
pub fn descendants(root: i32) -> Vec<i32> {
    let _ = root;
    todo!()
}

/// Every live process whose process group or session is `id` (a setsid leader's whole tree, unless
/// members called setsid themselves).
pub fn group_members(id: i32) -> Vec<i32> {
    let _ = id;
    todo!()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    todo!()
}
