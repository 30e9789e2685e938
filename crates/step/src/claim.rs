//! Taking a file for a step: the rename that claims it, and the lock that makes its handling
//! exclusive. Every message is handled under `flock(LOCK_EX)` on `tmp/<plugin>.<step>/<claim
//! id>.lock`: the kernel drops the lock when a worker dies, so a replayed message resumes its
//! file, while a duplicate of a message a live worker is still handling finds the lock taken
//! and steps aside. The lock lives on its own file, not on the data: a file keeps its inode
//! from step to step (and hard links share one), so a lock on the data would follow it.
//! The garbage collector honours the same locks.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// An exclusive claim on one message's file; unlinks its lock file when dropped.
#[derive(Debug)]
pub struct ClaimLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl Drop for ClaimLock {
    fn drop(&mut self) {
        // Unlinked while still held: a waiter that opened it sees it gone and retries.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Take the lock file at `path` (created if missing). `Ok(None)`: a live process holds it.
pub fn lock(path: &Path) -> io::Result<Option<ClaimLock>> {
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        let ino = file.metadata()?.ino();
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e.into()),
        };
        // The previous holder may have unlinked it between our open and our lock.
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.ino() == ino => {
                return Ok(Some(ClaimLock {
                    _lock: lock,
                    path: path.to_path_buf(),
                }))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a live process holds the lock file at `path` (for the garbage collector).
pub fn is_locked(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, Errno::EWOULDBLOCK))
    )
}

/// Move `src` to `tmp`. `Ok(false)`: `src` is already gone (a duplicate message). A directory
/// is refused, whatever a message says.
pub fn claim(src: &Path, tmp: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(src) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
        Ok(m) if m.is_dir() => return Err(io::Error::other("it is a directory")),
        Ok(_) => {}
    }
    match std::fs::rename(src, tmp) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_lock_file_goes_with_it() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("id.lock");
        let held = lock(&path)?;
        assert!(held.is_some());
        assert!(is_locked(&path));
        assert!(lock(&path)?.is_none(), "a second holder is refused");
        drop(held);
        assert!(!path.exists(), "released locks leave no file");
        assert!(!is_locked(&path));
        // A lock file left by a dead holder is simply taken over.
        std::fs::write(&path, b"")?;
        assert!(lock(&path)?.is_some());
        Ok(())
    }

    #[test]
    fn directories_are_never_claimed() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("d"))?;
        assert!(claim(&dir.path().join("d"), &dir.path().join("t")).is_err());
        assert!(!claim(&dir.path().join("none"), &dir.path().join("t"))?);
        Ok(())
    }
}
