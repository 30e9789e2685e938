//! Starting and signalling children: the command line with `$(circus.wid)` and
//! `$(circus.sockets.NAME)` expanded, its own session and process group (`setsid`), rlimits,
//! uid/gid, environment, inherited listening sockets, and output pipes; the same process run in
//! the foreground in place of the caller ([`exec`], for systemd units and containers); and
//! signals delivered to a whole process tree.
//!
//! Arguments are passed as argv (split shell-style), never through a shell unless the watcher
//! says `shell = true`.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::config::{SocketAddress, SocketConfig, StreamConfig, WatcherConfig};
use crate::procfs;
use crate::reaper::Reaper;

/// PATH given to children whose environment has none (no `copy_env`/`copy_path`, no `[env]` PATH).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors starting a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The command line cannot be split into words.
    #[error("cannot split command line {0:?} (unbalanced quotes?)")]
    BadCommandLine(String),
    /// The command line is empty.
    #[error("empty command line")]
    Empty,
    /// A user or group name does not exist.
    #[error("unknown {kind} {name:?}")]
    UnknownId {
        /// `user` or `group`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// fork/exec failed (command not found, permission denied, …).
    #[error("cannot start {program:?}: {source}")]
    Io {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The listening sockets ringmaster bound for `[socket:NAME]` sections.
#[derive(Debug, Default)]
pub struct BoundSockets {
    fds: Vec<(SocketConfig, OwnedFd)>,
}

impl BoundSockets {
    /// Bind every configured socket.
    pub fn bind_all(configs: &[SocketConfig]) -> std::io::Result<Self> {
        let mut out = Self::default();
        for c in configs {
            out.fds.push((c.clone(), bind(c)?));
        }
        Ok(out)
    }

    /// The fd of socket `name`.
    pub fn fd(&self, name: &str) -> Option<RawFd> {
        self.fds
            .iter()
            .find(|(c, _)| c.name == name)
            .map(|(_, fd)| fd.as_raw_fd())
    }

    /// Every socket's name and fd.
    pub fn all(&self) -> impl Iterator<Item = (&str, RawFd)> {
        self.fds.iter().map(|(c, fd)| (c.name.as_str(), fd.as_raw_fd()))
    }

    /// Keep the sockets whose config is unchanged in `configs`, bind new or changed ones, close
    /// removed ones. Returns the names that were (re)bound.
    /// On a bind error nothing changes: the running sockets stay as they were.
    pub fn rebind(&mut self, configs: &[SocketConfig]) -> std::io::Result<Vec<String>> {
        let unchanged = |c: &SocketConfig| self.fds.iter().any(|(o, _)| o == c);
        let to_bind: Vec<&SocketConfig> = configs.iter().filter(|c| !unchanged(c)).collect();
        let mut fresh = Vec::new();
        for c in &to_bind {
            // A changed socket that keeps its address must release it first: such a rebind
            // cannot be tried on the side, so it closes the old socket now.
            if let Some(i) = self
                .fds
                .iter()
                .position(|(o, _)| o.name == c.name && o.address == c.address)
            {
                drop(self.fds.swap_remove(i));
            }
            fresh.push(((*c).clone(), bind(c)?));
        }
        let changed = to_bind.iter().map(|c| c.name.clone()).collect();
        let mut old = std::mem::take(&mut self.fds);
        let mut kept = Vec::new();
        for c in configs {
            if let Some(i) = old.iter().position(|(o, _)| o == c) {
                kept.push(old.swap_remove(i));
            } else if let Some(i) = fresh.iter().position(|(f, _): &(SocketConfig, OwnedFd)| f == c) {
                kept.push(fresh.swap_remove(i));
            }
        }
        self.fds = kept;
        Ok(changed)
    }
}

fn bind(c: &SocketConfig) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
    let io = |e: nix::Error| std::io::Error::from(e);
    match &c.address {
        SocketAddress::Tcp { host, port } => {
            let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{host}:{port} resolves to nothing")))?;
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io)?;
            socket::setsockopt(&fd, socket::sockopt::ReuseAddr, &true).map_err(io)?;
            if c.so_reuseport {
                socket::setsockopt(&fd, socket::sockopt::ReusePort, &true).map_err(io)?;
            }
            match addr {
                std::net::SocketAddr::V4(a) => socket::bind(fd.as_raw_fd(), &socket::SockaddrIn::from(a)),
                std::net::SocketAddr::V6(a) => socket::bind(fd.as_raw_fd(), &socket::SockaddrIn6::from(a)),
            }
            .map_err(io)?;
            socket::listen(&fd, socket::Backlog::new(c.backlog).unwrap_or(socket::Backlog::MAXCONN)).map_err(io)?;
            Ok(fd)
        }
        SocketAddress::Unix(path) => {
            if c.replace {
                let _ = std::fs::remove_file(path);
            }
            let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io)?;
            let addr = socket::UnixAddr::new(path).map_err(io)?;
            let old_mask = c
                .umask
                .map(|m| nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m as _)));
            let bound = socket::bind(fd.as_raw_fd(), &addr);
            if let Some(m) = old_mask {
                nix::sys::stat::umask(m);
            }
            bound.map_err(io)?;
            socket::listen(&fd, socket::Backlog::new(c.backlog).unwrap_or(socket::Backlog::MAXCONN)).map_err(io)?;
            Ok(fd)
        }
    }
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its process group and session id).
    pub pid: i32,
    /// Its stdout pipe, when the stream is not /dev/null.
    pub stdout: Option<OwnedFd>,
    /// Its stderr pipe, likewise.
    pub stderr: Option<OwnedFd>,
}

/// Expand `$(circus.wid)` and `$(circus.sockets.NAME)` (case-insensitive `circus.` prefix).
pub fn expand_runtime(text: &str, wid: u32, sockets: &BoundSockets) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find(')') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let var = &after[..end];
        let lower = var.to_ascii_lowercase();
        let replacement = if lower == "circus.wid" || lower == "wid" {
            Some(wid.to_string())
        } else if let Some(name) = lower.strip_prefix("circus.sockets.") {
            let original = &var[var.len() - name.len()..];
            sockets
                .fd(original)
                .or_else(|| sockets.fd(name))
                .map(|fd| fd.to_string())
        } else {
            None
        };
        match replacement {
            Some(r) => out.push_str(&r),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The argv a watcher's process `wid` runs.
pub fn command_line(w: &WatcherConfig, wid: u32, sockets: &BoundSockets) -> Result<Vec<String>, SpawnError> {
    let cmd = expand_runtime(&w.cmd, wid, sockets);
    let args = expand_runtime(&w.args, wid, sockets);
    let line = if args.trim().is_empty() {
        cmd
    } else {
        format!("{cmd} {args}")
    };
    if w.shell {
        return Ok(vec!["/bin/sh".into(), "-c".into(), line]);
    }
    let words = shlex::split(&line).ok_or_else(|| SpawnError::BadCommandLine(line.clone()))?;
    if words.is_empty() {
        return Err(SpawnError::Empty);
    }
    Ok(words)
}

/// The process `wid` of watcher `w` as ringmaster starts it, apart from its output: argv (for
/// errors), environment (`RINGMASTER_WATCHER`, `RINGMASTER_WID` and `$(circus.wid)` expanded),
/// working directory, and in the child before exec its own session (when `new_session`),
/// rlimits, inherited sockets and uid/gid.
fn prepare(
    w: &WatcherConfig,
    wid: u32,
    sockets: &BoundSockets,
    new_session: bool,
) -> Result<(Command, Vec<String>), SpawnError> {
    let argv = command_line(w, wid, sockets)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.env_clear();
    if !w.env.iter().any(|(k, _)| k == "PATH") {
        // Like Python's os.defpath for circus: a child without PATH can still run `sleep`.
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.envs(w.env.iter().map(|(k, v)| (k.as_str(), expand_runtime(v, wid, sockets))));
    cmd.env("RINGMASTER_WATCHER", &w.name);
    cmd.env("RINGMASTER_WID", wid.to_string());
    if let Some(dir) = &w.working_dir {
        cmd.current_dir(dir);
    }
    // Identity is dropped in pre_exec, after the rlimits (which may need root to raise), as
    // circus does; the lookups (NSS) happen here, never after fork.
    let identity = resolve_identity(w.uid.as_deref(), w.gid.as_deref())?;
    let rlimits = w.rlimits.clone();
    let inherit: Vec<RawFd> = if w.use_sockets {
        sockets.all().map(|(_, fd)| fd).collect()
    } else {
        Vec::new()
    };
    // Runs in the forked child before exec: only async-signal-safe calls (setsid, setrlimit, fcntl).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if new_session {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
            }
            let apply_identity = || -> std::io::Result<()> {
                if let Some((uid, gid, groups)) = &identity {
                    nix::unistd::setgroups(groups).map_err(std::io::Error::from)?;
                    nix::unistd::setgid(*gid).map_err(std::io::Error::from)?;
                    nix::unistd::setuid(*uid).map_err(std::io::Error::from)?;
                }
                Ok(())
            };
            for (resource, limit) in &rlimits {
                let value = limit.unwrap_or(libc::RLIM_INFINITY);
                let lim = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(*resource as _, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            apply_identity()
        });
    }
    Ok((cmd, argv))
}

/// Start process `wid` of watcher `w`; `reaper` learns the new pid while the spawn lock is held.
pub fn spawn(w: &WatcherConfig, wid: u32, sockets: &BoundSockets, reaper: &Reaper) -> Result<Spawned, SpawnError> {
    let (mut cmd, argv) = prepare(w, wid, sockets, true)?;
    cmd.stdin(if w.close_child_stdin {
        Stdio::null()
    } else {
        Stdio::inherit()
    });
    cmd.stdout(stdio_for(&w.stdout));
    cmd.stderr(stdio_for(&w.stderr));
    let spawned = {
        let _lock = crate::reaper::spawn_lock();
        let spawned = cmd.spawn();
        if let Ok(child) = &spawned {
            reaper.forget(child.id() as i32);
        }
        spawned
    };
    let mut child = spawned.map_err(|source| SpawnError::Io {
        program: argv[0].clone(),
        source,
    })?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    // The std handle is dropped without waiting: the reaper collects the status.
    drop(child);
    Ok(Spawned { pid, stdout, stderr })
}

/// Replace the calling process with process `wid` of watcher `w`, as ringmaster would start it
/// but in the caller's session and with the caller's stdin, stdout and stderr: a service
/// manager (systemd, a container runtime) supervises it and collects its output. Returns only
/// on failure. Watchers that take ringmaster's listening sockets cannot run this way.
pub fn exec(w: &WatcherConfig, wid: u32) -> SpawnError {
    if w.use_sockets {
        return SpawnError::Io {
            program: w.cmd.clone(),
            source: std::io::Error::other("use_sockets needs the sockets ringmaster binds: run it under ringmaster"),
        };
    }
    match prepare(w, wid, &BoundSockets::default(), false) {
        Ok((mut cmd, argv)) => SpawnError::Io {
            program: argv[0].clone(),
            source: cmd.exec(),
        },
        Err(e) => e,
    }
}

fn stdio_for(s: &StreamConfig) -> Stdio {
    match s {
        StreamConfig::Null => Stdio::null(),
        StreamConfig::Inherit | StreamConfig::File(_) => Stdio::piped(),
    }
}

/// The uid, gid and supplementary groups a watcher's `uid`/`gid` settings call for, if any.
type Identity = Option<(nix::unistd::Uid, nix::unistd::Gid, Vec<nix::unistd::Gid>)>;

fn resolve_identity(user: Option<&str>, group: Option<&str>) -> Result<Identity, SpawnError> {
    use nix::unistd::{Gid, Uid};
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let uid = match user {
        Some(u) => Uid::from_raw(resolve_uid(u)?),
        None => Uid::current(),
    };
    let named = nix::unistd::User::from_uid(uid).ok().flatten();
    let gid = match group {
        Some(g) => Gid::from_raw(resolve_gid(g)?),
        None => named.as_ref().map(|u| u.gid).unwrap_or_else(Gid::current),
    };
    // The user's supplementary groups, as initgroups would set them.
    let groups = match &named {
        Some(u) => std::ffi::CString::new(u.name.as_str())
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, gid).ok())
            .unwrap_or_else(|| vec![gid]),
        None => vec![gid],
    };
    Ok(Some((uid, gid, groups)))
}

fn resolve_uid(user: &str) -> Result<u32, SpawnError> {
    if let Ok(n) = user.parse() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(SpawnError::UnknownId {
            kind: "user",
            name: user.into(),
        }),
    }
}

fn resolve_gid(group: &str) -> Result<u32, SpawnError> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(SpawnError::UnknownId {
            kind: "group",
            name: group.into(),
        }),
    }
}

/// Send `signal` to the process group led by `pid`, and with `children` to every descendant too
/// (those that left the group included). Returns how many processes were signalled.
pub fn signal_tree(pid: i32, signal: i32, children: bool) -> usize {
    let Ok(sig) = Signal::try_from(signal) else {
        return 0;
    };
    let mut n = 0;
    // The group first; a leader that left its group (or has none yet) is signalled directly.
    if killpg(Pid::from_raw(pid), sig).is_ok() || kill(Pid::from_raw(pid), sig).is_ok() {
        n += 1;
    }
    if children {
        for d in procfs::descendants(pid) {
            if kill(Pid::from_raw(d), sig).is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// SIGKILL everything in `pid`'s process group and session, its descendants, and `extra`.
pub fn kill_tree(pid: i32, extra: &[i32]) {
    let mut targets: Vec<i32> = procfs::group_members(pid);
    targets.extend(procfs::descendants(pid));
    targets.extend_from_slice(extra);
    targets.sort_unstable();
    targets.dedup();
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    for t in targets {
        if t > 1 && t != std::process::id() as i32 {
            let _ = kill(Pid::from_raw(t), Signal::SIGKILL);
        }
    }
}

/// Whether a path is an existing unix socket someone answers on.
pub fn socket_is_live(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Environment lookups for hooks: the watcher's env plus its name.
pub fn hook_env(w: &WatcherConfig) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = w.env.iter().cloned().collect();
    env.insert("RINGMASTER_WATCHER".into(), w.name.clone());
    env
}
