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
    let (built, positions) = build_each(py, records.iter().map(|b| b.as_bytes()))?;
    let out = PyList::empty(py);
    for position in positions {
        match position {
            Some(index) => out.append(built.get_item(index)?)?,
            None => out.append(py.None())?,
        }
    }
    Ok(out)
}

/// The messages of `block` (lines, as in a session file) as a big load builds them, the contents
/// of `wide_eighths` of every eight decoded to code points first where they are mostly not
/// ASCII (`Batch::parse_paced`). For tests: a load does that only when its reading thread is
/// ahead, which a test cannot arrange.
#[pyfunction]
pub fn _parse_block<'py>(
    py: Python<'py>,
    block: &[u8],
    wide_eighths: usize,
) -> PyResult<Bound<'py, PyList>> {
    built(py, &Batch::parse_paced(block, wide_eighths.min(8)))
}

/// The messages of `batch`, built.
fn built<'py>(py: Python<'py>, batch: &Batch) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    convert::messages(py, &mut RoleCache::default(), batch, &batch.messages, &list)?;
    Ok(list)
}

/// The valid lines of `records` as `ChatMessage`s, and for each record its index among them
/// (`None`: not a valid message).
fn build_each<'py, 'r>(
    py: Python<'py>,
    records: impl IntoIterator<Item = &'r [u8]>,
) -> PyResult<(Bound<'py, PyList>, Vec<Option<usize>>)> {
    let (batch, positions) = Batch::parse_each(records);
    Ok((built(py, &batch)?, positions))
}

/// The `ChatMessage` of one line that the store already found valid (`None` if it is not).
pub fn message_of<'py>(py: Python<'py>, line: &[u8]) -> PyResult<Option<Bound<'py, PyAny>>> {
    let (built, positions) = build_each(py, [line])?;
    positions
        .first()
        .copied()
        .flatten()
        .map(|index| built.get_item(index))
        .transpose()
}
