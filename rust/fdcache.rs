//! Session files kept open between appends, so that a bot's next append to the same session
//! skips `open` and `close` (with path lookup, the costliest part of an append).
//!
//! A file is lent out for one append at a time (taken, then put back), so two threads of one
//! process never share an open file description: each `flock` then excludes the other, as it
//! does across processes. The holder re-checks after locking that the path still names the
//! file, so a cached descriptor of a replaced or deleted file is never written. After a `fork`
//! the child starts with an empty cache: an inherited descriptor shares its `flock` with the
//! parent's, which would let the two overlap. If a thread of the parent held the cache's mutex
//! at the fork, the child's copy stays locked forever (that thread does not exist there): the
//! child then goes without a cache rather than wait.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

/// How many files a process keeps open, across all its stores: enough for the sessions a worker
/// is busy with, few enough to be harmless next to the process's descriptor limit whatever the
/// number of stores (a bot may build one per chat).
const CAPACITY: usize = 64;

#[derive(Debug, Default)]
struct Entries {
    pid: u32,
    files: Vec<(PathBuf, File)>,
}

/// Open session files, most recently used last, keyed by their absolute path.
#[derive(Debug, Default)]
pub struct OpenFiles {
    entries: Mutex<Entries>,
    /// The process that last used `entries` (0: none yet), read without taking the mutex.
    owner: AtomicU32,
}

/// The one cache of the process: every store's appends share it, so descriptors are bounded per
/// process, not per store.
pub static OPEN_FILES: OpenFiles = OpenFiles::new();

impl OpenFiles {
    /// An empty cache.
    pub const fn new() -> Self {
        Self {
            entries: Mutex::new(Entries {
                pid: 0,
                files: Vec::new(),
            }),
            owner: AtomicU32::new(0),
        }
    }

    /// The entries, emptied first in a process forked since they were filled; `None` in a
    /// forked child whose copy of the mutex a vanished thread holds.
    fn entries(&self) -> Option<MutexGuard<'_, Entries>> {
        let pid = std::process::id();
        let owner = self.owner.load(Ordering::Acquire);
        // A panic while holding the lock cannot leave the list inconsistent: use it as it is.
        // Not yet this process's (a first use, or a fork since): only try, and go without the
        // cache this once if another thread has it.
        let mut entries = if owner == pid {
            self.entries.lock().unwrap_or_else(PoisonError::into_inner)
        } else {
            match self.entries.try_lock() {
                Ok(entries) => entries,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            }
        };
        if entries.pid != pid {
            entries.pid = pid;
            entries.files.clear();
            self.owner.store(pid, Ordering::Release);
        }
        Some(entries)
    }

    /// The open file of `path`, removed from the cache while the caller uses it.
    pub fn take(&self, path: &Path) -> Option<File> {
        let mut entries = self.entries()?;
        let index = entries
            .files
            .iter()
            .position(|(cached, _)| cached == path)?;
        Some(entries.files.remove(index).1)
    }

    /// Gives `file` (of `path`) back for the next append, evicting the least recently used
    /// (or closes it, when the cache cannot be had).
    pub fn put(&self, path: PathBuf, file: File) {
        if let Some(mut entries) = self.entries() {
            if entries.files.len() >= CAPACITY {
                entries.files.remove(0);
            }
            entries.files.push((path, file));
        }
    }

    /// Closes the cached file of `path`, if any (its session was rewritten or deleted).
    pub fn forget(&self, path: &Path) {
        drop(self.take(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_one_file_at_a_time_and_evicts_the_oldest() {
        let cache = OpenFiles::default();
        let dir = std::env::temp_dir();
        let open = || File::open(&dir).unwrap();
        for i in 0..=CAPACITY {
            cache.put(dir.join(i.to_string()), open());
        }
        assert!(
            cache.take(&dir.join("0")).is_none(),
            "the oldest was evicted"
        );
        assert!(cache.take(&dir.join("1")).is_some());
        assert!(cache.take(&dir.join("1")).is_none(), "lent out");
        cache.forget(&dir.join("2"));
        assert!(cache.take(&dir.join("2")).is_none());
    }
}
