//! Python messages to the bytes of their line, identical to the pure store's
//! `json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)`, and refused
//! with the same exceptions when they cannot be stored as valid JSON.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::message::ChatMessage;
use crate::bigint;
use crate::json::write_str;
use crate::record::{MAX_DEPTH, MAX_INT_DIGITS};

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// Calls `f` with each item of `dict` in the order `json.dumps` writes them: a dict's own
/// order, or for a subclass (an `OrderedDict` rearranged with `move_to_end`) its `items()`.
fn for_each_item<'py>(
    dict: &Bound<'py, PyDict>,
    mut f: impl FnMut(Bound<'py, PyAny>, Bound<'py, PyAny>) -> PyResult<()>,
) -> PyResult<()> {
    if dict.is_exact_instance_of::<PyDict>() {
        for (name, item) in dict.iter() {
            f(name, item)?;
        }
    } else {
        for pair in dict
            .call_method0(pyo3::intern!(dict.py(), "items"))?
            .try_iter()?
        {
            let (name, item) = pair?.extract()?;
            f(name, item)?;
        }
    }
    Ok(())
}

/// Writes one message line. Lone surrogates are reported only after every other check, as
/// the pure store finds them last (when it encodes the finished line to UTF-8).
struct Encoder<'o> {
    out: &'o mut Vec<u8>,
    surrogate: bool,
}

impl Encoder<'_> {
    fn string(&mut self, text: &Bound<'_, PyString>) {
        match text.to_str() {
            Ok(text) => write_str(self.out, text),
            Err(_) => self.surrogate = true,
        }
    }

    fn repr_of(
        &mut self,
        method: &'static PyOnceLock<Py<PyAny>>,
        ty: &str,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = value.py();
        let repr = method.get_or_try_init(py, || {
            py.import("builtins")?
                .getattr(ty)?
                .getattr("__repr__")
                .map(Bound::unbind)
        })?;
        let text = repr.bind(py).call1((value,))?;
        self.out
            .extend_from_slice(text.cast::<PyString>()?.to_str()?.as_bytes());
        Ok(())
    }

    /// An int beyond `i64`, written without `str(int)` (whose digit limit is a process-wide
    /// setting) and refused past the format's limit.
    fn big_int(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let negative = value.lt(0)?;
        let magnitude = if negative {
            value.neg()?
        } else {
            value.clone()
        };
        let bits: usize = magnitude.call_method0("bit_length")?.extract()?;
        let bytes = magnitude.call_method1("to_bytes", (bits.div_ceil(8), "little"))?;
        let digits = bigint::le_bytes_to_decimal(bytes.cast::<PyBytes>()?.as_bytes());
        if digits.len() > MAX_INT_DIGITS {
            return Err(PyValueError::new_err(format!(
                "message fields must not hold integers of more than {MAX_INT_DIGITS} digits"
            )));
        }
        if negative {
            self.out.push(b'-');
        }
        self.out.extend_from_slice(digits.as_bytes());
        Ok(())
    }

    /// One value of an extra field; `depth` counts the containers around it.
    fn value(&mut self, value: &Bound<'_, PyAny>, depth: usize) -> PyResult<()> {
        static FLOAT_REPR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        if value.is_none() {
            self.out.extend_from_slice(b"null");
        } else if let Ok(text) = value.cast::<PyString>() {
            self.string(text);
        } else if let Ok(flag) = value.cast::<PyBool>() {
            self.out
                .extend_from_slice(if flag.is_true() { b"true" } else { b"false" });
        } else if value.is_instance_of::<PyInt>() {
            match value.extract::<i64>() {
                Ok(small) => self.out.extend_from_slice(small.to_string().as_bytes()),
                Err(_) => self.big_int(value)?,
            }
        } else if let Ok(float) = value.cast::<PyFloat>() {
            let number = float.value();
            if !number.is_finite() {
                return Err(PyValueError::new_err(format!(
                    "message fields must be finite numbers, not {}",
                    float.repr()?
                )));
            }
            self.repr_of(&FLOAT_REPR, "float", value)?;
        } else if value.is_instance_of::<PyList>()
            || value.is_instance_of::<PyTuple>()
            || value.is_instance_of::<PyDict>()
        {
            if depth >= MAX_DEPTH {
                return Err(PyValueError::new_err(format!(
                    "message is nested deeper than {MAX_DEPTH} levels"
                )));
            }
            if let Ok(dict) = value.cast::<PyDict>() {
                self.out.push(b'{');
                let mut first = true;
                for_each_item(dict, |name, item| {
                    let name = name.cast::<PyString>().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "JSON object keys must be str, not {}",
                            type_name(&name)
                        ))
                    })?;
                    if !first {
                        self.out.push(b',');
                    }
                    first = false;
                    self.string(name);
                    self.out.push(b':');
                    self.value(&item, depth + 1)
                })?;
                self.out.push(b'}');
            } else {
                self.out.push(b'[');
                for (i, item) in value.try_iter()?.enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.value(&item?, depth + 1)?;
                }
                self.out.push(b']');
            }
        } else {
            return Err(PyTypeError::new_err(format!(
                "Object of type {} is not JSON serializable",
                type_name(value)
            )));
        }
        Ok(())
    }

    fn message(
        &mut self,
        role: &Bound<'_, PyAny>,
        content: &Bound<'_, PyAny>,
        extra: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let role = role.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("message role must be str, not {}", type_name(role)))
        })?;
        let content = content.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "message content must be str, not {}",
                type_name(content)
            ))
        })?;
        self.out.extend_from_slice(b"{\"role\":");
        self.string(role);
        self.out.extend_from_slice(b",\"content\":");
        self.string(content);
        if let Some(extra) = extra {
            for_each_item(extra, |name, item| {
                let name = name.cast::<PyString>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "message field names must be str, not {}",
                        type_name(&name)
                    ))
                })?;
                if let Ok(text @ ("role" | "content")) = name.to_str() {
                    return Err(PyValueError::new_err(format!(
                        "message extra fields must not hold '{text}'"
                    )));
                }
                self.out.push(b',');
                self.string(name);
                self.out.push(b':');
                self.value(&item, 1)
            })?;
        }
        self.out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// Appends the line of `message` (a `ChatMessage` or a `dict`) to `out`; on error `out` is
/// left as it was.
pub fn encode_into(message: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let start = out.len();
    let mut encoder = Encoder {
        out,
        surrogate: false,
    };
    let result = if let Ok(chat) = message.cast::<ChatMessage>() {
        let py = message.py();
        let chat = chat.borrow();
        let extra = chat.extra.as_ref().map(|d| d.bind(py).clone());
        encoder.message(
            chat.role.bind(py).as_any(),
            chat.content.bind(py).as_any(),
            extra.as_ref(),
        )
    } else if let Ok(dict) = message.cast::<PyDict>() {
        // As ChatMessage.from_dict: field names first, then presence, then types.
        let py = message.py();
        let (role, content, extra) = ChatMessage::fields(dict.as_any())?;
        let chat = ChatMessage::build(py, &role, &content, Some(extra))?;
        let extra = chat.extra.as_ref().map(|d| d.bind(py).clone());
        encoder.message(
            chat.role.bind(py).as_any(),
            chat.content.bind(py).as_any(),
            extra.as_ref(),
        )
    } else {
        Err(PyTypeError::new_err(format!(
            "a message must be a ChatMessage or a mapping, not {}",
            type_name(message)
        )))
    };
    let result = result.and_then(|()| {
        if encoder.surrogate {
            Err(PyValueError::new_err(
                "message must not contain lone surrogates",
            ))
        } else {
            Ok(())
        }
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}
