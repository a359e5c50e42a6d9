//! turnlog's core: a crash-safe, multi-process JSONL session store for chat bots.
//!
//! The modules are plain Rust with their own tests; the PyO3 layer (`py`, behind the `python`
//! feature) only converts between Python objects and these types.
//!
//! - [`batch`]: blocks parsed into owned messages, read ahead on a second thread.
//! - [`bigint`]: long integers to and from decimal, independent of CPython's digit limit.
//! - [`keys`]: session keys to file names, reversibly.
//! - [`record`]: the strict parser that decides whether a line is a valid message.
//! - [`fdcache`]: session files kept open between appends.
//! - [`json`]: writing JSON strings exactly as Python's `json.dumps(ensure_ascii=False)` does.
//! - [`lines`]: reading a file's lines forwards and backwards in bounded memory.
//! - [`lock`]: the `flock` protocol shared with the pure-Python store, with bounded waits.
//! - [`search`]: keyword search by scanning message contents.
//! - [`store`]: locking, appends, tail reads, truncation and atomic rewrites.

// The core is written against Unix file APIs (`flock`, `O_NOFOLLOW`, inode identity, positional
// reads, permission bits): elsewhere say so plainly rather than with a page of unresolved imports.
#[cfg(not(unix))]
compile_error!(
    "turnlog's Rust core supports Unix only (Linux, macOS, the BSDs): docs/RELEASING.md lists \
     what a Windows port needs"
);

pub mod batch;
pub mod bigint;
pub mod fdcache;
pub mod fuzzing;
pub mod json;
pub mod keys;
pub mod lines;
pub mod lock;
pub mod record;
pub mod search;
pub mod store;

#[cfg(feature = "python")]
mod py;
