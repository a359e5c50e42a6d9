//! Parsed records to Python objects.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use super::message::{self, ChatMessage};
use crate::batch::{self, Batch};
use crate::bigint;
use crate::record::Value;

/// Role strings seen in this load, so a million messages share a handful of `str` objects.
#[derive(Default)]
pub struct RoleCache {
    roles: Vec<(String, Py<PyString>)>,
}

impl RoleCache {
    /// Few distinct roles is the normal case; past this many, stop caching new ones.
    const MAX: usize = 16;

    fn get(&mut self, py: Python<'_>, role: &str) -> Py<PyString> {
        if let Some((_, cached)) = self.roles.iter().find(|(text, _)| text == role) {
            return cached.clone_ref(py);
        }
        let made = PyString::new(py, role).unbind();
        if self.roles.len() < Self::MAX {
            self.roles.push((role.to_owned(), made.clone_ref(py)));
        }
        made
    }
}

/// An `int` of any length up to the format's digit limit, built without `int(str)`, whose
/// limit is a process-wide setting.
fn big_int<'py>(py: Python<'py>, literal: &str) -> PyResult<Bound<'py, PyAny>> {
    static FROM_BYTES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let from_bytes = FROM_BYTES.get_or_try_init(py, || {
        py.import("builtins")?
            .getattr("int")?
            .getattr("from_bytes")
            .map(Bound::unbind)
    })?;
    let (negative, digits) = match literal.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, literal),
    };
    let bytes = PyBytes::new(py, &bigint::decimal_to_le_bytes(digits));
    let magnitude = from_bytes.bind(py).call1((bytes, "little"))?;
    if negative {
        magnitude.neg()
    } else {
        Ok(magnitude)
    }
}

fn to_py_value<'py>(py: Python<'py>, value: &Value<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(literal) => match literal.parse::<i64>() {
            Ok(small) => PyInt::new(py, small).into_any(),
            Err(_) => big_int(py, literal)?,
        },
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py_value(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(fields) => fields_dict(py, fields)?.into_any(),
    })
}

/// A dict of `fields`. One that holds only scalars is taken out of the cycle collector's sight,
/// as CPython itself does with such dicts once a collection has looked at them: a load of many
/// messages with small extras would otherwise make every collection walk them, pausing every
/// thread of the process. Such a dict tracks itself again when a container is put in.
fn fields_dict<'py, K: AsRef<str>>(
    py: Python<'py>,
    fields: &[(K, Value<'_>)],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, item) in fields {
        dict.set_item(PyString::new(py, name.as_ref()), to_py_value(py, item)?)?;
    }
    let scalars = fields
        .iter()
        .all(|(_, item)| !matches!(item, Value::Array(_) | Value::Object(_)));
    if scalars {
        // SAFETY: a live dict; untracking is always allowed.
        unsafe { ffi::PyObject_GC_UnTrack(dict.as_ptr().cast()) }
    }
    Ok(dict)
}

// `PyUnicode_FromWideChar` takes code points where `wchar_t` is 4 bytes (not Windows, where it
// is UTF-16 and the core does not build anyway).
const _: () = assert!(std::mem::size_of::<libc::wchar_t>() == std::mem::size_of::<char>());

/// A `str` of `points`: CPython finds the widest and copies them at that width, the fastest way
/// to make a `str` of non-ASCII text in the stable ABI.
fn from_code_points<'py>(py: Python<'py>, points: &[char]) -> PyResult<Bound<'py, PyString>> {
    let len = ffi::Py_ssize_t::try_from(points.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("content too long"))?;
    // SAFETY: `points` is `len` values of 4 bytes, each a Unicode scalar value, as `wchar_t`
    // holds them; the call reads them without keeping them, and returns a new `str` or NULL
    // with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_FromWideChar(points.as_ptr().cast(), len))
            .map(|text| text.cast_into_unchecked())
    }
}

/// A `ChatMessage` for each of `messages` (of `batch`), appended to `out`.
pub fn messages(
    py: Python<'_>,
    roles: &mut RoleCache,
    batch: &Batch,
    messages: &[batch::Message],
    out: &Bound<'_, PyList>,
) -> PyResult<()> {
    for message in messages {
        let extra = if message.extra.is_empty() {
            None
        } else {
            Some(fields_dict(py, &message.extra)?.unbind())
        };
        // SAFETY: a live object.
        let untracked = match &extra {
            None => true,
            Some(dict) => unsafe { ffi::PyObject_GC_IsTracked(dict.as_ptr()) == 0 },
        };
        let content = match batch.content(message) {
            batch::Content::Text(text) => PyString::new(py, text),
            batch::Content::Wide(points) => from_code_points(py, points)?,
        };
        let object = Py::new(
            py,
            ChatMessage {
                role: roles.get(py, batch.role(message)),
                content: content.unbind(),
                extra,
            },
        )?;
        if untracked {
            message::untrack(&object);
        }
        out.append(object)?;
    }
    Ok(())
}
