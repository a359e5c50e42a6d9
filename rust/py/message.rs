//! `ChatMessage`, built in Rust so that a load creates each message without running Python
//! code. Its behaviour is that of the pure-Python class in `python/turnlog/_message.py`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping, PyString, PyTuple, PyType};
use pyo3::{ffi, PyTraverseError};

/// One chat message: a ``role``, a ``content`` string, and any extra top-level fields.
#[pyclass(module = "turnlog._native", name = "ChatMessage", subclass)]
pub struct ChatMessage {
    pub role: Py<PyString>,
    pub content: Py<PyString>,
    /// Extra fields; `None` stands for `{}` until someone asks for the dict.
    pub extra: Option<Py<PyDict>>,
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

fn checked_str<'py>(value: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyString>> {
    value.cast::<PyString>().cloned().map_err(|_| {
        PyTypeError::new_err(format!(
            "ChatMessage {what} must be str, not {}",
            type_name(value)
        ))
    })
}

fn non_empty<'py>(extra: Option<&Py<PyDict>>, py: Python<'py>) -> Option<Bound<'py, PyDict>> {
    extra.map(|d| d.bind(py).clone()).filter(|d| !d.is_empty())
}

/// Takes a message out of the cycle collector's sight. A message whose extra dict is absent or
/// itself untracked (it holds only scalars and such dicts) cannot be part of a reference cycle,
/// and a load of a million messages would otherwise make the collector walk them again and
/// again. The `extra` accessors, the only way to reach the dict and put a container in it, put
/// the message back ([`track`]).
pub fn untrack(message: &Py<ChatMessage>) {
    // SAFETY: the pointer is a live object of a GC-enabled type (every pyclass is one), and
    // untracking an object is always allowed.
    unsafe { ffi::PyObject_GC_UnTrack(message.as_ptr().cast()) }
}

fn track(message: &PyRefMut<'_, ChatMessage>) {
    let object = message.as_ptr();
    // SAFETY: a live object of a GC-enabled type; it is tracked only if it is not already.
    unsafe {
        if ffi::PyObject_GC_IsTracked(object) == 0 {
            ffi::PyObject_GC_Track(object.cast());
        }
    }
}

impl ChatMessage {
    /// The role, content and other fields of a mapping, checked as `from_dict` checks them:
    /// field names first, then presence (types are `build`'s to check).
    pub fn fields<'py>(
        data: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyDict>)> {
        let py = data.py();
        let mapping = data.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err(format!(
                "a message must be a ChatMessage or a mapping, not {}",
                type_name(data)
            ))
        })?;
        let extra = PyDict::new(py);
        let (mut role, mut content) = (None, None);
        for item in mapping.items()?.iter() {
            let (name, value) = item.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()?;
            let name_str = name.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "message field names must be str, not {}",
                    type_name(&name)
                ))
            })?;
            // A name with a lone surrogate is neither; writing the message refuses it later,
            // as the pure store does.
            match name_str.to_str() {
                Ok("role") => role = Some(value),
                Ok("content") => content = Some(value),
                _ => extra.set_item(name_str, value)?,
            }
        }
        let role = role.ok_or_else(|| PyValueError::new_err("message has no 'role' field"))?;
        let content =
            content.ok_or_else(|| PyValueError::new_err("message has no 'content' field"))?;
        Ok((role, content, extra))
    }

    /// A message of class `cls`: built here for `ChatMessage` itself, by calling a subclass
    /// (whose `__init__` may do more) otherwise.
    fn make<'py>(
        cls: &Bound<'py, PyType>,
        role: &Bound<'py, PyAny>,
        content: &Bound<'py, PyAny>,
        extra: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = cls.py();
        if cls.is(py.get_type::<ChatMessage>()) {
            Ok(Bound::new(py, Self::build(py, role, content, extra)?)?.into_any())
        } else {
            cls.call((role, content), extra.as_ref())
        }
    }

    pub fn build(
        py: Python<'_>,
        role: &Bound<'_, PyAny>,
        content: &Bound<'_, PyAny>,
        extra: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let _ = py;
        Ok(ChatMessage {
            role: checked_str(role, "role")?.unbind(),
            content: checked_str(content, "content")?.unbind(),
            extra: extra.filter(|d| !d.is_empty()).map(Bound::unbind),
        })
    }
}

#[pymethods]
impl ChatMessage {
    #[classattr]
    const __hash__: Option<Py<PyAny>> = None;

    /// Only the extra dict can lead back to this message (role and content are strings), so it
    /// is all the cycle collector needs to see and to clear.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.extra)
    }

    fn __clear__(&mut self) {
        self.extra = None;
    }

    #[new]
    #[pyo3(signature = (role, content, **extra))]
    fn new(
        py: Python<'_>,
        role: &Bound<'_, PyAny>,
        content: &Bound<'_, PyAny>,
        extra: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Self::build(py, role, content, extra)
    }

    /// Who spoke, e.g. ``"user"``, ``"assistant"``, ``"system"`` or ``"tool"``.
    #[getter]
    fn role(&self, py: Python<'_>) -> Py<PyString> {
        self.role.clone_ref(py)
    }

    #[setter]
    fn set_role(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.role = checked_str(value, "role")?.unbind();
        Ok(())
    }

    /// The text of the message.
    #[getter]
    fn content(&self, py: Python<'_>) -> Py<PyString> {
        self.content.clone_ref(py)
    }

    #[setter]
    fn set_content(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.content = checked_str(value, "content")?.unbind();
        Ok(())
    }

    /// Every top-level field other than ``role`` and ``content`` (``{}`` when none).
    #[getter]
    fn extra(mut slf: PyRefMut<'_, Self>) -> Py<PyDict> {
        let py = slf.py();
        if slf.extra.is_none() {
            slf.extra = Some(PyDict::new(py).unbind());
        }
        // The caller may put anything in the dict, this message included.
        track(&slf);
        slf.extra
            .as_ref()
            .map_or_else(|| PyDict::new(py).unbind(), |d| d.clone_ref(py))
    }

    #[setter]
    fn set_extra(mut slf: PyRefMut<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let dict = value.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "ChatMessage extra must be a dict, not {}",
                type_name(value)
            ))
        })?;
        slf.extra = Some(dict.clone().unbind());
        track(&slf);
        Ok(())
    }

    /// Build a message from a mapping with ``role`` and ``content`` and any other fields.
    #[classmethod]
    fn from_dict<'py>(
        cls: &Bound<'py, PyType>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (role, content, extra) = Self::fields(data)?;
        Self::make(cls, &role, &content, Some(extra))
    }

    /// A ``system`` message.
    #[classmethod]
    fn system<'py>(
        cls: &Bound<'py, PyType>,
        content: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::make(cls, &PyString::new(cls.py(), "system"), content, None)
    }

    /// A ``user`` message.
    #[classmethod]
    fn user<'py>(
        cls: &Bound<'py, PyType>,
        content: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::make(cls, &PyString::new(cls.py(), "user"), content, None)
    }

    /// An ``assistant`` message.
    #[classmethod]
    fn assistant<'py>(
        cls: &Bound<'py, PyType>,
        content: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::make(cls, &PyString::new(cls.py(), "assistant"), content, None)
    }

    /// A ``tool`` message.
    #[classmethod]
    fn tool<'py>(
        cls: &Bound<'py, PyType>,
        content: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::make(cls, &PyString::new(cls.py(), "tool"), content, None)
    }

    /// A new dict ``{"role": ..., "content": ..., **extra}``.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item(pyo3::intern!(py, "role"), &self.role)?;
        dict.set_item(pyo3::intern!(py, "content"), &self.content)?;
        if let Some(extra) = non_empty(self.extra.as_ref(), py) {
            dict.update(extra.as_mapping())?;
        }
        Ok(dict)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let Ok(other) = other.cast::<ChatMessage>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.borrow();
        let same = PyAnyMethods::eq(self.role.bind(py).as_any(), other.role.bind(py))?
            && PyAnyMethods::eq(self.content.bind(py).as_any(), other.content.bind(py))?
            && match (
                non_empty(self.extra.as_ref(), py),
                non_empty(other.extra.as_ref(), py),
            ) {
                (None, None) => true,
                (Some(a), Some(b)) => PyAnyMethods::eq(a.as_any(), b)?,
                _ => false,
            };
        Ok(same.into_pyobject(py)?.to_owned().into_any().unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let role = self.role.bind(py).repr()?;
        let content = self.content.bind(py).repr()?;
        Ok(match non_empty(self.extra.as_ref(), py) {
            Some(extra) => format!(
                "ChatMessage(role={role}, content={content}, extra={})",
                extra.repr()?
            ),
            None => format!("ChatMessage(role={role}, content={content})"),
        })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        // The message's own class, so a subclass comes back as itself.
        let from_dict = slf.get_type().getattr(pyo3::intern!(py, "from_dict"))?;
        let fields = slf.borrow().to_dict(py)?;
        PyTuple::new(py, [from_dict, PyTuple::new(py, [fields])?.into_any()])
    }
}
