//! Session files kept open between appends, so that a bot's next append to the same session
//! skips `open` and `close` (with path lookup, the costliest part of an append).
//!
//! A file is lent out for one append at a time (taken, then put back), so two threads of one
//! process never share an open file description: each `flock` then excludes the other, as it
//! does across processes. The holder re-checks after locking that the path still names the
//! file, so a cached descriptor of a replaced or deleted file is never written. After a `fork`
//! the child starts with an empty cache: an inherited descriptor shares its `flock` with the
//! parent's, which would let the two overlap.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many files one store keeps open: enough for the sessions a worker is busy with, few
/// enough to be harmless next to the process's descriptor limit.
const CAPACITY: usize = 16;

#[derive(Debug, Default)]
struct Entries {
    pid: u32,
    files: Vec<(PathBuf, File)>,
}

/// The open files of one store, most recently used last.
#[derive(Debug, Default)]
pub struct OpenFiles {
    entries: Mutex<Entries>,
}

impl OpenFiles {
    fn with_entries<T>(&self, f: impl FnOnce(&mut Vec<(PathBuf, File)>) -> T) -> T {
        // A panic while holding the lock cannot leave the list inconsistent: use it as it is.
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pid = std::process::id();
        if entries.pid != pid {
            entries.pid = pid;
            entries.files.clear();
        }
        f(&mut entries.files)
    }

    /// The open file of `path`, removed from the cache while the caller uses it.
    pub fn take(&self, path: &Path) -> Option<File> {
        self.with_entries(|files| {
            let index = files.iter().position(|(cached, _)| cached == path)?;
            Some(files.remove(index).1)
        })
    }

    /// Gives `file` (of `path`) back for the next append, evicting the least recently used.
    pub fn put(&self, path: PathBuf, file: File) {
        self.with_entries(|files| {
            if files.len() >= CAPACITY {
                files.remove(0);
            }
            files.push((path, file));
        });
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
