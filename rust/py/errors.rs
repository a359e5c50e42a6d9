//! Core errors to the Python exceptions users already catch.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;

use crate::store::Error;

/// `KeyError` (a bad session key) becomes `ValueError`; an I/O error becomes `OSError` built
/// from errno, so Python picks the subclass (`FileNotFoundError`, `PermissionError`, ...) and
/// `filename` names the file.
pub fn to_py(error: Error) -> PyErr {
    match error {
        Error::Key(key) => PyValueError::new_err(key.to_string()),
        Error::Io(io, path) => {
            let path = path.to_string_lossy().into_owned();
            match io.raw_os_error() {
                Some(code) => {
                    // strerror's text without Rust's " (os error N)" suffix.
                    let text = io.to_string();
                    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
                    PyOSError::new_err((code, text, path))
                }
                None => PyOSError::new_err(format!("{io}: {path:?}")),
            }
        }
    }
}
