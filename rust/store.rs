//! The JSONL session store's file operations, free of Python: appends that survive a torn last
//! line, tail reads, in-place truncation and atomic rewrites, each under the session's lock
//! ([`crate::lock`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fdcache::OPEN_FILES;
use crate::keys::{self, KeyError, Names};
use crate::lines::{self, Forward, Span};
use crate::lock::{lock, lock_open, lock_unguarded, open_read, retrying, writable, Locked};
pub use crate::lock::{snapshot, tail_range, LockWait, Snapshot};
use crate::record;
use crate::search::Query;

/// What can go wrong in a store operation.
#[derive(Debug)]
pub enum Error {
    Key(KeyError),
    Io(io::Error, PathBuf),
}

impl From<KeyError> for Error {
    fn from(error: KeyError) -> Self {
        Error::Key(error)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

trait Context<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|error| Error::Io(error, path.to_path_buf()))
    }
}

/// What an [`Store::append`] found and did besides writing its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// The append created the session's file.
    pub created: bool,
    /// The file ended in a torn line (a writer died mid-line): a newline went first.
    pub repaired_torn_tail: bool,
}

fn temp_suffix() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed =
        nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64: spreads the bits so names do not look sequential.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Copies `[start, end)` of `from` into `to`.
fn copy_range(from: &File, start: u64, end: u64, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; (end - start).min(lines::FORWARD_BLOCK as u64) as usize];
    let mut offset = start;
    while offset < end {
        let want = ((end - offset) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..want], offset)?;
        to.write_all(&buf[..want])?;
        offset += want as u64;
    }
    Ok(())
}

/// The JSONL store: one `<name>.jsonl` per session in `dir`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// fsync files and the folder before a write returns (survive power loss).
    durable: bool,
    /// How long a call waits for a session's lock.
    wait: LockWait,
    /// How keys become file names.
    names: Names,
}

impl Store {
    /// A store over an existing sessions folder.
    pub fn new(dir: impl Into<PathBuf>, durable: bool) -> Self {
        Store {
            dir: dir.into(),
            durable,
            wait: None,
            names: Names::Escaped,
        }
    }

    /// The same store, naming files as `names` says.
    pub fn naming(self, names: Names) -> Self {
        Store { names, ..self }
    }

    /// The same store, waiting at most `wait` for a session's lock.
    pub fn waiting(self, wait: LockWait) -> Self {
        Store { wait, ..self }
    }

    /// How long a call waits for a session's lock.
    pub fn lock_wait(&self) -> LockWait {
        self.wait
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of session `key`.
    pub fn path(&self, key: &str) -> std::result::Result<PathBuf, KeyError> {
        let name = self.names.name(key)?;
        Ok(self.dir.join(format!("{name}{}", keys::SUFFIX)))
    }

    fn sync_dir(&self) -> Result<()> {
        if self.durable {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .at(&self.dir)?;
        }
        Ok(())
    }

    fn sync_file(&self, file: &File) -> io::Result<()> {
        if self.durable {
            // fdatasync: the data and the size, not the times; as SQLite syncs its journal.
            file.sync_data()?;
        }
        Ok(())
    }

    fn sync(&self, file: &File, path: &Path) -> Result<()> {
        self.sync_file(file).at(path)
    }

    /// Opens the session file for reading; `None` if it does not exist.
    pub fn open(&self, key: &str) -> Result<Option<(File, PathBuf)>> {
        let path = self.path(key)?;
        match open_read(&path) {
            Ok(file) => Ok(Some((file, path))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(e, path)),
        }
    }

    /// Appends encoded records (each ending in a newline) with one locked write. A torn last
    /// line gets its newline first, in the same write, so the record never joins it. On a
    /// failed write the file is cut back to its old length. `None` (nothing written) when the
    /// session has no file and `create` is false.
    pub fn append(&self, key: &str, records: &[u8], create: bool) -> Result<Option<Appended>> {
        let path = self.path(key)?;
        if records.is_empty() {
            return Ok(Some(Appended::default()));
        }
        let cached = match OPEN_FILES.take(&path) {
            Some(file) => lock_open(file, &path, self.wait)
                .at(&path)?
                .and_then(writable),
            None => None,
        };
        let (file, len, created) = match cached {
            Some((file, len)) => (file, len, false),
            None => match lock_unguarded(&path, create, self.wait).at(&path)? {
                Some(locked) => locked,
                None => return Ok(None),
            },
        };
        let written = self.write_locked(&file, &path, len, created, records);
        // Kept open for the next append, unlocked: only a held lock excludes other writers.
        retrying(|| file.unlock()).at(&path)?;
        let appended = written?;
        OPEN_FILES.put(path, file);
        Ok(Some(appended))
    }

    /// The write of [`Store::append`], on the locked `file` of `len` bytes.
    fn write_locked(
        &self,
        file: &File,
        path: &Path,
        len: u64,
        created: bool,
        records: &[u8],
    ) -> Result<Appended> {
        let mut last = [0u8; 1];
        let torn = len > 0 && {
            file.read_exact_at(&mut last, len - 1).at(path)?;
            last[0] != b'\n'
        };
        let written = if torn {
            let mut data = Vec::with_capacity(records.len() + 1);
            data.push(b'\n');
            data.extend_from_slice(records);
            (&*file).write_all(&data)
        } else {
            (&*file).write_all(records)
        };
        if let Err(error) = written.and_then(|()| self.sync_file(file)) {
            // Leave no trace: a new session disappears again, an old one gets its length back.
            let _ = if created {
                fs::remove_file(path)
            } else {
                file.set_len(len)
            };
            return Err(Error::Io(error, path.to_path_buf()));
        }
        if created {
            self.sync_dir()?;
        }
        Ok(Appended {
            created,
            repaired_torn_tail: torn,
        })
    }

    /// Atomically replaces the locked file at `path` with what `write` produces: a temp file
    /// in the same folder, renamed over the path. Readers see the old file or the new one.
    fn replace(
        &self,
        locked: &Locked,
        path: &Path,
        write: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
    ) -> Result<()> {
        // The cached descriptor would name the replaced file: close it rather than keep it.
        OPEN_FILES.forget(path);
        let mode = locked.file.metadata().at(path)?.permissions().mode() & 0o7777;
        let (temp_path, temp) = loop {
            let candidate = self
                .dir
                .join(format!(".turnlog-{:016x}.tmp", temp_suffix()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&candidate)
            {
                Ok(file) => break (candidate, file),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::Io(e, candidate)),
            }
        };
        let result = (|| {
            temp.set_permissions(fs::Permissions::from_mode(mode))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, &temp);
            write(&mut out)?;
            out.flush()?;
            drop(out);
            if self.durable {
                temp.sync_data()?;
            }
            fs::rename(&temp_path, path)
        })();
        if let Err(error) = result {
            let _ = fs::remove_file(&temp_path);
            return Err(Error::Io(error, path.to_path_buf()));
        }
        self.sync_dir()
    }

    /// The session's file, locked for writing, with the span of its newest valid message;
    /// `None` (and no lock kept) when there is no file or no valid message in it.
    fn lock_newest(&self, key: &str) -> Result<Option<(PathBuf, Locked, Span)>> {
        let path = self.path(key)?;
        let Some(locked) = lock(&path, false, self.wait).at(&path)? else {
            return Ok(None);
        };
        let newest = lines::last_valid(&locked.file, locked.len, 1)
            .at(&path)?
            .last()
            .copied();
        Ok(newest.map(|span| (path, locked, span)))
    }

    /// Removes the newest valid message. A message at the very end is cut off with one
    /// `ftruncate` (no rewrite); if corrupt lines follow it, they are kept and the file is
    /// rewritten atomically. Returns whether a message was removed.
    pub fn remove_last(&self, key: &str) -> Result<bool> {
        let Some((path, locked, span)) = self.lock_newest(key)? else {
            return Ok(false);
        };
        self.cut(&path, &locked, span)?;
        Ok(true)
    }

    /// Removes the newest valid message and returns its line (without the newline), under one
    /// lock: two callers popping at once get two different messages. As `remove_last` does,
    /// corrupt lines stay. `None` when there is no message.
    pub fn pop_last(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some((path, locked, span)) = self.lock_newest(key)? else {
            return Ok(None);
        };
        let mut line = Vec::new();
        copy_range(&locked.file, span.start, span.end, &mut line).at(&path)?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        self.cut(&path, &locked, span)?;
        Ok(Some(line))
    }

    /// Removes `span` from the locked file: one `ftruncate` when it ends the file, an atomic
    /// rewrite otherwise.
    fn cut(&self, path: &Path, locked: &Locked, Span { start, end }: Span) -> Result<()> {
        if end == locked.len {
            locked.file.set_len(start).at(path)?;
            self.sync(&locked.file, path)
        } else {
            self.replace(locked, path, |out| {
                copy_range(&locked.file, 0, start, out)?;
                copy_range(&locked.file, end, locked.len, out)
            })
        }
    }

    /// Replaces the newest valid message with `record` (one encoded line), atomically.
    /// Returns `false`, writing nothing, when there is no message.
    pub fn update_last(&self, key: &str, record: &[u8]) -> Result<bool> {
        let Some((path, locked, Span { start, end })) = self.lock_newest(key)? else {
            return Ok(false);
        };
        self.replace(&locked, &path, |out| {
            copy_range(&locked.file, 0, start, out)?;
            out.write_all(record)?;
            copy_range(&locked.file, end, locked.len, out)
        })?;
        Ok(true)
    }

    /// Rewrites the session with only its valid lines, each stripped of surrounding white
    /// space, atomically; leaves the file alone when that would change nothing.
    pub fn compact(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        let Some(locked) = lock(&path, false, self.wait).at(&path)? else {
            return Ok(());
        };
        // One pass finds out whether anything would change, so an already compact session
        // (the usual case for a periodic compaction) costs a read, not a rewrite.
        let mut changed = false;
        let mut reader = Forward::new(&locked.file, 0, locked.len);
        while let Some(block) = reader.next_block().at(&path)? {
            lines::for_each_line(block, |line| {
                changed = changed || record::valid_text(line).map(<[u8]>::len) != Some(line.len());
            });
            if changed {
                break;
            }
        }
        let ends_clean = locked.len == 0 || {
            let mut last = [0u8; 1];
            locked
                .file
                .read_exact_at(&mut last, locked.len - 1)
                .at(&path)?;
            last[0] == b'\n'
        };
        if !changed && ends_clean {
            return Ok(());
        }
        self.replace(&locked, &path, |out| {
            // Blocks are filtered on a second thread while this one writes the previous one.
            let mut written = Ok(());
            let compacted = |block: &[u8]| {
                let mut kept = Vec::with_capacity(block.len());
                compact_block(block, &mut kept).map(|()| kept)
            };
            let write = |kept: io::Result<Vec<u8>>| {
                written = kept.and_then(|kept| out.write_all(&kept));
                if written.is_ok() {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            };
            lines::read_ahead(
                &locked.file,
                0,
                locked.len,
                compacted,
                write,
                &mut lines::Plain,
            )?;
            written
        })
    }

    /// Empties the session, keeping its file. Returns how many valid messages it held.
    pub fn clear(&self, key: &str) -> Result<usize> {
        let path = self.path(key)?;
        let Some(locked) = lock(&path, false, self.wait).at(&path)? else {
            return Ok(0);
        };
        let count = lines::count_valid(&locked.file, locked.len).at(&path)?;
        if locked.len > 0 {
            locked.file.set_len(0).at(&path)?;
            self.sync(&locked.file, &path)?;
        }
        Ok(count)
    }

    /// Deletes the session file. Returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        let Some(locked) = lock(&path, false, self.wait).at(&path)? else {
            return Ok(false);
        };
        fs::remove_file(&path).at(&path)?;
        drop(locked);
        OPEN_FILES.forget(&path);
        self.sync_dir()?;
        Ok(true)
    }

    /// Every session key, sorted; files whose names no key maps to are skipped.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir).at(&self.dir)? {
            let entry = entry.at(&self.dir)?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(keys::SUFFIX)) else {
                continue;
            };
            if !entry.file_type().at(&self.dir)?.is_file() {
                continue;
            }
            if let Some(key) = self.names.key(stem) {
                found.push(key);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Whether the session has a file.
    pub fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) => Ok(meta.file_type().is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io(e, path)),
        }
    }

    /// The sessions (of `keys`) with a valid message matching `query`; missing ones are skipped.
    pub fn search(&self, keys: &[String], query: &Query) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for key in keys {
            let Some((file, path)) = self.open(key)? else {
                continue;
            };
            let held = snapshot(&file, self.wait).at(&path)?;
            if query.matches_file(&file, held.len).at(&path)? {
                found.push(key.clone());
            }
        }
        Ok(found)
    }

    /// `(valid messages, modification time in ns)` of the session; `None` if it has no file.
    pub fn stat(&self, key: &str) -> Result<Option<(usize, i128)>> {
        let Some((file, path)) = self.open(key)? else {
            return Ok(None);
        };
        let held = snapshot(&file, self.wait).at(&path)?;
        let meta = file.metadata().at(&path)?;
        let count = lines::count_valid(&file, held.len).at(&path)?;
        let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        Ok(Some((count, mtime)))
    }
}

/// Writes the valid lines of `block`, stripped, each with its newline. Runs of lines that stay
/// as they are go out in one write, straight from the block.
fn compact_block(block: &[u8], out: &mut impl Write) -> io::Result<()> {
    let mut newlines = memchr::memchr_iter(b'\n', block);
    let mut pending = 0; // block[pending..start] is kept as it is and not written yet
    let mut start = 0;
    while start < block.len() {
        let (end, next) = match newlines.next() {
            Some(newline) => (newline, newline + 1),
            None => (block.len(), block.len()),
        };
        let line = &block[start..end];
        match record::valid_text(line) {
            Some(text) if text.len() == line.len() && next > end => {}
            kept => {
                out.write_all(&block[pending..start])?;
                if let Some(text) = kept {
                    out.write_all(text)?;
                    out.write_all(b"\n")?;
                }
                pending = next;
            }
        }
        start = next;
    }
    out.write_all(&block[pending..start])
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
