//! `JsonlStore`: the native half of `turnlog.SessionStore` (`python/turnlog/backends/jsonl/rust.py`).

use std::ops::ControlFlow;
use std::time::Duration;

use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyString};

use super::convert::{self, RoleCache};
use super::encode::encode_into;
use super::errors::to_py;
use super::parse;
use crate::keys::{self, Names};
use crate::search::Query;
use crate::store::{self, Store};
use crate::{batch, lines};

/// A session key as `&str`: `TypeError` for a non-str, `ValueError` for lone surrogates.
fn key_str<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<&'a str> {
    let text = key.cast::<PyString>().map_err(|_| {
        let name = key
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        PyTypeError::new_err(format!("session key must be str, not {name}"))
    })?;
    text.to_str()
        .map_err(|_| PyValueError::new_err("session key must not contain lone surrogates"))
}

/// The file name (without `.jsonl`) ZeroClaw gives session `key` (see `rust/keys.rs`).
#[pyfunction]
pub fn zeroclaw_name(key: &Bound<'_, PyAny>) -> PyResult<String> {
    let key = key_str(key)?;
    keys::zeroclaw_name(key)
        .map(|name| name.into_owned())
        .map_err(|error| PyValueError::new_err(error.to_string()))
}

/// Messages built between two yield points.
const STEP: usize = 256;

/// Lets the interpreter do what it does between two bytecodes: above all, hand the GIL to a
/// thread that has asked for it (an asyncio event loop among them), as the pure store's loop
/// does at every step; running any Python-level function does that. Releasing and retaking the
/// GIL at each batch instead would starve such a thread: CPython asks a holder to drop the GIL
/// only when no switch happened for a whole switch interval (5 ms), and a holder that retakes
/// it every few milliseconds counts as switching each time.
fn yield_point(py: Python<'_>) -> PyResult<()> {
    static NOTHING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    NOTHING
        .get_or_try_init(py, || {
            py.eval(c"lambda: None", None, None).map(Bound::unbind)
        })?
        .call0(py)?;
    Ok(())
}

/// A turn at building messages: `turns.acquire()` (which lets go of the GIL while it waits),
/// and `release()` when dropped.
struct Turn<'py>(Bound<'py, PyAny>);

impl<'py> Turn<'py> {
    fn take(lock: &Bound<'py, PyAny>) -> PyResult<Self> {
        lock.call_method0("acquire")?;
        Ok(Turn(lock.clone()))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Releasing a lock this thread acquired cannot fail; an error here has nowhere to go.
        let _ = self.0.call_method0("release");
    }
}

/// Waits without the GIL.
struct Detached<'py>(Python<'py>);

impl lines::Wait for Detached<'_> {
    fn blocking<R: Send>(&mut self, f: impl FnOnce() -> R + Send) -> R {
        self.0.detach(f)
    }
}

/// Builds the messages of `parsed` into `out`, with a yield point every [`STEP`] messages.
fn build_batch(
    py: Python<'_>,
    roles: &mut RoleCache,
    parsed: &batch::Batch,
    out: &Bound<'_, PyList>,
) -> PyResult<()> {
    py.check_signals()?;
    for step in parsed.messages.chunks(STEP) {
        convert::messages(py, roles, parsed, step, out)?;
        yield_point(py)?;
    }
    Ok(())
}

/// The Rust JSONL store over one sessions folder. Not for direct use: see
/// `turnlog.SessionStore`.
#[pyclass(module = "turnlog._native", frozen)]
pub struct JsonlStore {
    store: Store,
}

#[pymethods]
impl JsonlStore {
    #[new]
    /// `lock_timeout`: seconds to wait for a session's lock (checked by the Python layer), or
    /// `None` to wait as long as it takes. `zeroclaw_names`: name files as ZeroClaw does.
    #[pyo3(signature = (sessions_dir, durable, lock_timeout=None, zeroclaw_names=false))]
    fn new(
        sessions_dir: std::path::PathBuf,
        durable: bool,
        lock_timeout: Option<f64>,
        zeroclaw_names: bool,
    ) -> Self {
        let wait = lock_timeout
            .map(|seconds| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
        let names = if zeroclaw_names {
            Names::Zeroclaw
        } else {
            Names::Escaped
        };
        JsonlStore {
            store: Store::new(sessions_dir, durable)
                .waiting(wait)
                .naming(names),
        }
    }

    /// `max_bytes`: refuse a load whose lines span more bytes (`TimeoutError`, before any object
    /// is built): a call that must not keep an event loop busy. `turns`: a lock (a Python
    /// `threading.Lock`) held while the messages are built, taken once the file's own lock is
    /// had, so that big loads of a process take turns without queueing behind a locked session.
    #[pyo3(signature = (key, limit=None, max_bytes=None, turns=None))]
    fn load<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        limit: Option<usize>,
        max_bytes: Option<u64>,
        turns: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let key = key_str(key)?.to_owned();
        let opened = py.detach(|| self.store.open(&key)).map_err(to_py)?;
        let Some((file, path)) = opened else {
            return Ok(PyList::empty(py));
        };
        let io_error = |e| to_py(store::Error::Io(e, path.clone()));
        // Held (a shared lock) until the load is done.
        let (held, start) = match limit {
            Some(0) => return Ok(PyList::empty(py)),
            Some(n) => py
                .detach(|| store::tail_range(&file, n, self.store.lock_wait()))
                .map_err(io_error)?,
            None => (
                py.detach(|| store::snapshot(&file, self.store.lock_wait()))
                    .map_err(io_error)?,
                0,
            ),
        };
        let end = held.len;
        if max_bytes.is_some_and(|most| end - start > most) {
            return Err(PyTimeoutError::new_err(format!(
                "the messages span {} bytes, more than max_bytes",
                end - start
            )));
        }
        // Only loads big enough to read ahead take turns: a small one builds in a moment, and
        // must not queue behind a big one.
        let big = end - start >= lines::READ_AHEAD_MIN_BYTES;
        let _turn = turns.filter(|_| big).map(Turn::take).transpose()?;
        // Appended to batch by batch: a side vector of the whole result would be memory that
        // grows with the session beyond the objects returned.
        let messages = PyList::empty(py);
        let mut roles = RoleCache::default();
        let mut failed: Option<PyErr> = None;
        // Blocks are read and parsed without the GIL (on a second thread for big files); it is
        // held to turn parsed batches into objects, batch after batch while they are ready.
        let on_batch = |parsed: batch::Batch| match build_batch(py, &mut roles, &parsed, &messages)
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                failed = Some(error);
                ControlFlow::Break(())
            }
        };
        let scanned = batch::load(&file, start, end, on_batch, &mut Detached(py));
        if let Some(error) = failed {
            return Err(error);
        }
        scanned.map_err(io_error)?;
        Ok(messages)
    }

    /// `(created the file, repaired a torn last line)`; `None` (nothing written) when the
    /// session has no file and `create` is false.
    #[pyo3(signature = (key, message, create = true))]
    fn append(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        create: bool,
    ) -> PyResult<Option<(bool, bool)>> {
        let mut line = Vec::with_capacity(128);
        encode_into(message, &mut line)?;
        self.append_lines(py, key, &line, create)
    }

    /// As `append`, for several messages in one write.
    #[pyo3(signature = (key, messages, create = true))]
    fn append_many(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        messages: &Bound<'_, PyList>,
        create: bool,
    ) -> PyResult<Option<(bool, bool)>> {
        let mut lines = Vec::with_capacity(128 * messages.len());
        for message in messages.iter() {
            encode_into(&message, &mut lines)?;
        }
        self.append_lines(py, key, &lines, create)
    }

    fn remove_last(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_str(key)?;
        py.detach(|| self.store.remove_last(key)).map_err(to_py)
    }

    /// The newest valid message, removed under the session's lock; `None` when there is none.
    fn pop_last<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let key = key_str(key)?;
        match py.detach(|| self.store.pop_last(key)).map_err(to_py)? {
            Some(line) => parse::message_of(py, &line),
            None => Ok(None),
        }
    }

    fn update_last(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let mut line = Vec::with_capacity(128);
        encode_into(message, &mut line)?;
        let key = key_str(key)?;
        py.detach(|| self.store.update_last(key, &line))
            .map_err(to_py)
    }

    fn compact(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = key_str(key)?;
        py.detach(|| self.store.compact(key)).map_err(to_py)
    }

    fn clear_messages(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<usize> {
        let key = key_str(key)?;
        py.detach(|| self.store.clear(key)).map_err(to_py)
    }

    fn delete_session(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_str(key)?;
        py.detach(|| self.store.delete(key)).map_err(to_py)
    }

    fn list_sessions(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.store.list()).map_err(to_py)
    }

    fn session_exists(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_str(key)?;
        py.detach(|| self.store.exists(key)).map_err(to_py)
    }

    /// The keys (of `keys`) with a valid message whose content matches `text`: every word
    /// (`all`) or any, case-insensitively.
    fn search(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        text: &str,
        all: bool,
    ) -> PyResult<Vec<String>> {
        let query = Query::new(text, all);
        py.detach(|| self.store.search(&keys, &query))
            .map_err(to_py)
    }

    /// `(valid message count, mtime in ns)`, or `None` when the session has no file.
    fn stat(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<(usize, i128)>> {
        let key = key_str(key)?;
        py.detach(|| self.store.stat(key)).map_err(to_py)
    }
}

impl JsonlStore {
    fn append_lines(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        lines: &[u8],
        create: bool,
    ) -> PyResult<Option<(bool, bool)>> {
        let key = key_str(key)?;
        let appended = py
            .detach(|| self.store.append(key, lines, create))
            .map_err(to_py)?;
        Ok(appended.map(|done| (done.created, done.repaired_torn_tail)))
    }
}
