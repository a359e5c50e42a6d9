//! Session-file locking, shared with the pure-Python store: every writer takes `flock(LOCK_EX)`
//! on the transcript itself (the pure store's `fcntl.flock` is the same lock, so they exclude
//! each other), readers `LOCK_SH`. Because a rewrite renames a new file over the path, a writer
//! that opened the old file must notice, after it gets the lock, that the path now names
//! another inode, and start again; otherwise its append would land in the replaced file and be
//! lost. `flock` dies with its process, so a SIGKILLed writer blocks nobody; every lock is let
//! go explicitly before its file closes, so a forked child's copy of the descriptor holds
//! nothing either.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::lines;

/// How long to wait for a session's lock: `None` for as long as it takes.
pub type LockWait = Option<Duration>;

/// Takes the exclusive (or `shared`) lock on `file`, waiting at most `wait`: then `ETIMEDOUT`
/// (Python's `TimeoutError`), so a stopped writer cannot freeze its session's readers.
pub(crate) fn wait_lock(file: &File, shared: bool, wait: LockWait) -> io::Result<()> {
    let Some(limit) = wait else {
        return retrying(|| {
            if shared {
                file.lock_shared()
            } else {
                file.lock()
            }
        });
    };
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let tried = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match tried {
            Ok(()) => return Ok(()),
            Err(TryLockError::Error(error)) if error.kind() != io::ErrorKind::Interrupted => {
                return Err(error)
            }
            Err(_) => {}
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Runs a lock call again when a signal interrupted it. The standard library's `File::lock`,
/// `lock_shared` and `unlock` are one `flock(2)` each on Unix (`LockFileEx`/`UnlockFile` on
/// Windows): the same whole-file lock the pure-Python store takes with `fcntl.flock`, so the
/// two exclude each other; a blocked `flock` fails with EINTR when a signal handler runs.
pub(crate) fn retrying(mut call: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match call() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            done => return done,
        }
    }
}

/// Opens a session file for reading, never through a symlink.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(NO_FOLLOW_NO_WAIT)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_a_session_file());
    }
    Ok(file)
}

/// Never through a symlink, and never waiting: opening a FIFO would block until a writer came.
const NO_FOLLOW_NO_WAIT: libc::c_int = libc::O_NOFOLLOW | libc::O_NONBLOCK;

/// What opening a FIFO, socket or device where a session file should be gives: like a symlink,
/// it is not a session; reads find nothing (with a warning) and writes fail.
pub(crate) fn not_a_session_file() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// A session file held under an exclusive `flock`; dropping it unlocks and closes the file.
pub(crate) struct Locked {
    pub(crate) file: File,
    pub(crate) len: u64,
}

impl Drop for Locked {
    /// Lets go of the lock explicitly before the file closes. A process forked while it was
    /// held has a copy of the descriptor (the same open file description, which the lock
    /// belongs to): closing ours alone would leave the session locked for that child's life.
    fn drop(&mut self) {
        let _ = retrying(|| self.file.unlock());
    }
}

fn open_write(path: &Path, create_new: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(create_new)
        .mode(0o600)
        .custom_flags(NO_FOLLOW_NO_WAIT)
        .open(path)
}

/// Opens `path` for writing and locks it, making sure the lock is on the file the path names
/// now. `None` when the file does not exist and `create` is false.
pub(crate) fn lock(path: &Path, create: bool, wait: LockWait) -> io::Result<Option<Locked>> {
    let locked = lock_unguarded(path, create, wait)?;
    Ok(locked.map(|(file, len, _)| Locked { file, len }))
}

/// [`lock`]'s file, length and whether it created the file, for a caller that unlocks the
/// file itself (an append, which keeps it open afterwards).
pub(crate) fn lock_unguarded(
    path: &Path,
    create: bool,
    wait: LockWait,
) -> io::Result<Option<(File, u64, bool)>> {
    loop {
        let (file, created) = match open_write(path, false) {
            Ok(file) => (file, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match open_write(path, true) {
                    Ok(file) => (file, true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some((file, len, _)) = lock_open(file, path, wait)? {
            return Ok(Some((file, len, created)));
        }
    }
}

/// Locks an open `file` of `path`: the file, its length and mode, or `None` (file unlocked and
/// closed) when the path no longer names it: a rewrite renamed a new file over it, or it was
/// deleted, while we waited for the lock. The caller unlocks what it gets.
pub(crate) fn lock_open(
    file: File,
    path: &Path,
    wait: LockWait,
) -> io::Result<Option<(File, u64, u32)>> {
    wait_lock(&file, false, wait)?;
    let held = match file.metadata() {
        Ok(held) if held.is_file() => held,
        Ok(_) => unlocked(&file, not_a_session_file())?,
        Err(e) => unlocked(&file, e)?,
    };
    let same = match fs::symlink_metadata(path) {
        Ok(now) => now.dev() == held.dev() && now.ino() == held.ino(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => unlocked(&file, e)?,
    };
    if same {
        return Ok(Some((file, held.len(), held.mode())));
    }
    retrying(|| file.unlock())?;
    Ok(None)
}

/// A locked cached file as [`lock_open`] gives it, or `None` (unlocked, closed) when it was made
/// read-only since it was cached: the append then opens the path again, and `open` decides, as
/// it does for the pure store (refused, unless the process may write any file).
pub(crate) fn writable((file, len, mode): (File, u64, u32)) -> Option<(File, u64)> {
    if mode & 0o222 != 0 {
        return Some((file, len));
    }
    let _ = retrying(|| file.unlock());
    None
}

/// `Err(error)`, once `file` is unlocked.
fn unlocked<T>(file: &File, error: io::Error) -> io::Result<T> {
    let _ = retrying(|| file.unlock());
    Err(error)
}

/// A shared lock on an open session file and its length under it. While it is held no writer
/// cuts the file in place (`remove_last`, `clear_messages`), so a read of `[0, len)` sees
/// whole lines as they were written, never the head of one line and the tail of a later one.
/// Appends wait for it too; rewrites never touch this inode. Dropping it lets go of the lock
/// explicitly, before the file closes, for the reason `Locked`'s drop gives.
pub struct Snapshot<'a> {
    file: &'a File,
    /// The file's length when the lock was taken.
    pub len: u64,
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        let _ = retrying(|| self.file.unlock());
    }
}

/// Takes a shared lock on `file` ([`Snapshot`]), waiting at most `wait`.
pub fn snapshot(file: &File, wait: LockWait) -> io::Result<Snapshot<'_>> {
    wait_lock(file, true, wait)?;
    match file.metadata() {
        Ok(meta) => Ok(Snapshot {
            file,
            len: meta.len(),
        }),
        Err(error) => unlocked(file, error),
    }
}

/// A snapshot of `file` and the start of the byte range holding its newest `limit` valid
/// messages (the range ends at the snapshot's length).
pub fn tail_range(file: &File, limit: usize, wait: LockWait) -> io::Result<(Snapshot<'_>, u64)> {
    let held = snapshot(file, wait)?;
    let spans = lines::last_valid(file, held.len, limit)?;
    let start = spans.first().map_or(held.len, |first| first.start);
    Ok((held, start))
}
