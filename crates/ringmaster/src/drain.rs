//! Draining a worker that serves on a unix socket before it is signalled (Metwork's "smart
//! stop", without the Lua in nginx): the socket's path is taken away, so the front's next
//! connect fails at once and it routes the request to another worker, and the stop signal waits
//! until the connections the worker had accepted are closed.
//!
//! Which connections are the worker's comes from `/proc/net/unix` (an accepted socket carries
//! its listener's path, and keeps it after the path is unlinked) crossed with the socket inodes
//! in `/proc/<pid>/fd` of the worker and its descendants.

use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// `__SO_ACCEPTCON`: the entry is a listening socket.
const ACCEPTING: u32 = 0x0001_0000;
/// `SS_CONNECTED`.
const CONNECTED: u32 = 3;
/// `SS_CONNECTING`: with inode 0, a connection waiting in a listen backlog.
const CONNECTING: u32 = 2;

/// Where a worker being drained stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Connections it accepted on the path and still holds open.
    pub open: usize,
    /// Connections on the path not yet accepted by anyone (a listen backlog; the kernel does not
    /// say whose).
    pub pending: usize,
    /// Its successor listens on the path (a replacement took it over).
    pub replaced: bool,
}

/// Take the path away from the worker listening there, so new connections fail at once and
/// the front moves on. Only a socket file is removed.
pub fn withdraw(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the socket of a worker being drained");
            }
        }
        _ => {}
    }
}

/// `/proc/net/unix`, read once per pass and shared by every drain.
pub fn table() -> String {
    std::fs::read_to_string("/proc/net/unix").unwrap_or_default()
}

/// How far `pid` (and its descendants) are from having no connection on `path`; `successor`
/// is the process expected to take the path over, if any.
pub fn progress(table: &str, pid: i32, path: &Path, successor: Option<i32>) -> Progress {
    let tree = |root: i32| {
        let mut pids = vec![root];
        pids.extend(crate::procfs::descendants(root));
        socket_inodes(&pids)
    };
    let mine = tree(pid);
    let theirs = successor.map(tree).unwrap_or_default();
    tally(table, &path.to_string_lossy(), &mine, &theirs)
}

fn tally(table: &str, path: &str, mine: &HashSet<u64>, successor: &HashSet<u64>) -> Progress {
    let mut p = Progress::default();
    for line in table.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode Path (the path may hold spaces).
        let mut rest = line;
        let mut head = Vec::with_capacity(7);
        while head.len() < 7 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            head.push(&rest[..end]);
            rest = &rest[end..];
        }
        let rest = rest.strip_prefix(' ').unwrap_or(rest).trim_end_matches('\n');
        if head.len() < 7 || rest != path {
            continue;
        }
        let (Ok(flags), Ok(state), Ok(inode)) = (
            u32::from_str_radix(head[3], 16),
            u32::from_str_radix(head[5], 16),
            head[6].parse::<u64>(),
        ) else {
            continue;
        };
        if flags & ACCEPTING != 0 {
            p.replaced |= successor.contains(&inode);
        } else if inode == 0 && state == CONNECTING {
            p.pending += 1;
        } else if state == CONNECTED && mine.contains(&inode) {
            p.open += 1;
        }
    }
    p
}

/// The inodes of the sockets `pids` hold open.
fn socket_inodes(pids: &[i32]) -> HashSet<u64> {
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in dir.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let t = target.to_string_lossy();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(inode) = n.parse() {
                        out.insert(inode);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    const TABLE: &str = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000003 00000000 00000000 0001 03  4986 /run/app_1.sock
0000000000000000: 00000002 00000000 00010000 0001 01  4984 /run/app_1.sock
0000000000000000: 00000002 00000000 00010000 0001 01  5001 /run/app_1.sock
0000000000000000: 00000002 00000000 00010000 0001 01  5009 /run/app_1.sock
0000000000000000: 00000003 00000000 00000000 0001 02     0 /run/app_1.sock
0000000000000000: 00000003 00000000 00000000 0001 03  4990 /run/app_2.sock
0000000000000000: 00000003 00000000 00000000 0001 03  4993 /run/my app.sock
0000000000000000: 00000003 00000000 00000000 0001 03  4991
";

    #[test]
    fn only_the_workers_own_connections_count_and_only_its_successor_replaces_it() {
        let set = |v: &[u64]| -> HashSet<u64> { v.iter().copied().collect() };
        let mine = set(&[4984, 4986, 4990]);
        assert_eq!(
            tally(TABLE, "/run/app_1.sock", &mine, &set(&[5001])),
            Progress {
                open: 1,
                pending: 1,
                replaced: true
            }
        );
        // 5009 listens on the path too (an older worker still draining): not the successor.
        assert_eq!(
            tally(TABLE, "/run/app_1.sock", &mine, &set(&[7777])),
            Progress {
                open: 1,
                pending: 1,
                replaced: false
            }
        );
        assert_eq!(tally(TABLE, "/run/other.sock", &mine, &set(&[])), Progress::default());
        assert_eq!(tally(TABLE, "/run/my app.sock", &set(&[4993]), &set(&[])).open, 1);
    }

    #[test]
    fn a_withdrawn_listener_still_sees_its_open_connection_until_it_closes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("w.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut client = UnixStream::connect(&path).expect("connect");
        let (mut served, _) = listener.accept().expect("accept");
        let me = std::process::id() as i32;
        assert_eq!(progress(&table(), me, &path, None).open, 1);

        withdraw(&path);
        assert!(!path.exists(), "the path is taken away");
        assert!(UnixStream::connect(&path).is_err(), "new connections fail at once");
        assert_eq!(
            progress(&table(), me, &path, None).open,
            1,
            "the accepted connection still counts"
        );

        client.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        served.read_exact(&mut b).expect("read");
        drop(served);
        drop(client);
        assert_eq!(progress(&table(), me, &path, None), Progress::default());
        drop(listener);
    }
}
