//! `JsonlStore`: the native half of `turnlog.SessionStore` (`python/turnlog/_rust.py`).

use std::ops::ControlFlow;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::convert::{self, RoleCache};
use super::encode::encode_into;
use super::errors::to_py;
use super::message::ChatMessage;
use crate::batch;
use crate::search::Query;
use crate::store::{self, Store};

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

/// The Rust JSONL store over one sessions folder. Not for direct use: see
/// `turnlog.SessionStore`.
#[pyclass(module = "turnlog._native", frozen)]
pub struct JsonlStore {
    store: Store,
}

#[pymethods]
impl JsonlStore {
    #[new]
    fn new(sessions_dir: std::path::PathBuf, durable: bool) -> Self {
        JsonlStore {
            store: Store::new(sessions_dir, durable),
        }
    }

    #[pyo3(signature = (key, limit=None))]
    fn load<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let key = key_str(key)?.to_owned();
        let opened = py.detach(|| self.store.open(&key)).map_err(to_py)?;
        let Some((file, path)) = opened else {
            return Ok(PyList::empty(py));
        };
        let io_error = |e| to_py(store::Error::Io(e, path.clone()));
        let (start, end) = match limit {
            Some(0) => return Ok(PyList::empty(py)),
            Some(n) => py
                .detach(|| store::tail_range(&file, n))
                .map_err(io_error)?,
            None => (0, py.detach(|| file.metadata()).map_err(io_error)?.len()),
        };
        let mut messages: Vec<Py<ChatMessage>> = Vec::new();
        let mut roles = RoleCache::default();
        let mut failed: Option<PyErr> = None;
        // Blocks are read and parsed without the GIL (on a second thread for big files); the
        // GIL is taken only to turn each parsed batch into objects.
        let scanned = py.detach(|| {
            batch::load(&file, start, end, |parsed| {
                Python::attach(|py| {
                    let built = py
                        .check_signals()
                        .and_then(|()| convert::messages(py, &mut roles, &parsed, &mut messages));
                    match built {
                        Ok(()) => ControlFlow::Continue(()),
                        Err(error) => {
                            failed = Some(error);
                            ControlFlow::Break(())
                        }
                    }
                })
            })
        });
        if let Some(error) = failed {
            return Err(error);
        }
        scanned.map_err(io_error)?;
        PyList::new(py, messages)
    }

    fn append(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let mut line = Vec::with_capacity(128);
        encode_into(message, &mut line)?;
        let key = key_str(key)?;
        py.detach(|| self.store.append(key, &line)).map_err(to_py)
    }

    fn append_many(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        messages: &Bound<'_, PyList>,
    ) -> PyResult<bool> {
        let mut lines = Vec::with_capacity(128 * messages.len());
        for message in messages.iter() {
            encode_into(&message, &mut lines)?;
        }
        let key = key_str(key)?;
        py.detach(|| self.store.append(key, &lines)).map_err(to_py)
    }

    fn remove_last(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_str(key)?;
        py.detach(|| self.store.remove_last(key)).map_err(to_py)
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
