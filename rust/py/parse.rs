//! `parse_lines`: the line parser for records that do not come from a session file (the Redis
//! backend's list elements), so every backend skips exactly the lines the JSONL store skips.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::convert::{self, RoleCache};
use crate::batch::Batch;

/// One item per line of `lines` (a sequence of `bytes`): its `ChatMessage`, or `None` when the
/// line is not a valid message. Each line is one record: a newline inside it is white space.
#[pyfunction]
pub fn parse_lines<'py>(
    py: Python<'py>,
    lines: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let mut records = Vec::new();
    for line in lines.try_iter()? {
        let line = line?;
        let bytes = line.cast_into::<PyBytes>().map_err(|error| {
            let name = error
                .into_inner()
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string());
            PyTypeError::new_err(format!("parse_lines takes bytes, not {name}"))
        })?;
        records.push(bytes);
    }
    let (batch, positions) = Batch::parse_each(records.iter().map(|b| b.as_bytes()));
    let built = PyList::empty(py);
    convert::messages(
        py,
        &mut RoleCache::default(),
        &batch,
        &batch.messages,
        &built,
    )?;
    let out = PyList::empty(py);
    for position in positions {
        match position {
            Some(index) => out.append(built.get_item(index)?)?,
            None => out.append(py.None())?,
        }
    }
    Ok(out)
}
