//! Taking a file for a step: the rename that claims it, and the lock that makes its processing
//! exclusive. A worker holds `flock(LOCK_EX)` on its claimed file (or on a routing manifest) for
//! as long as it works on it; the kernel drops the lock when the worker dies, so a replayed
//! message resumes the file, while a duplicate of a message a live worker is still handling
//! finds the lock taken and steps aside. The garbage collector honours the same lock.

use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why a claimed path could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Nothing there any more (another worker finished it).
    #[error("file already gone")]
    Gone,
    /// A symlink, FIFO, socket, device or directory: never opened, never processed.
    #[error("not a regular file")]
    NotRegular,
    /// Anything else.
    #[error(transparent)]
    Io(#[from] io::Error),
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

/// Lock the regular file at `path` for this process. `Ok(None)`: a live process holds it.
pub fn lock(path: &Path) -> Result<Option<Flock<File>>, LockError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => LockError::Gone,
            Some(libc::ELOOP) | Some(libc::ENXIO) => LockError::NotRegular,
            _ => LockError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(LockError::NotRegular);
    }
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(LockError::Io(e.into())),
    };
    // The path may have been routed away between open and lock: then it is not ours.
    match std::fs::symlink_metadata(path) {
        Ok(now) if now.ino() == meta.ino() && now.dev() == meta.dev() => Ok(Some(lock)),
        Ok(_) | Err(_) => Err(LockError::Gone),
    }
}

/// Whether a live process holds the lock on `path` (for the garbage collector).
pub fn is_locked(path: &Path) -> bool {
    matches!(lock(path), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_at_a_time_and_only_on_regular_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("f");
        std::fs::write(&f, b"x")?;
        let held = lock(&f).map_err(io::Error::other)?;
        assert!(held.is_some());
        assert!(is_locked(&f));
        drop(held);
        assert!(!is_locked(&f));
        std::os::unix::fs::symlink(&f, dir.path().join("l"))?;
        assert!(matches!(lock(&dir.path().join("l")), Err(LockError::NotRegular)));
        nix::unistd::mkfifo(&dir.path().join("p"), nix::sys::stat::Mode::S_IRWXU).map_err(io::Error::from)?;
        assert!(matches!(lock(&dir.path().join("p")), Err(LockError::NotRegular)));
        assert!(matches!(lock(&dir.path().join("none")), Err(LockError::Gone)));
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
