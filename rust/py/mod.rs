//! The PyO3 layer: `turnlog._native`. It converts Python arguments to Rust data, releases the
//! GIL around the core's file work, and turns results and errors back into Python objects.

mod convert;
mod encode;
mod errors;
mod message;
mod parse;
mod store;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<message::ChatMessage>()?;
    m.add_class::<store::JsonlStore>()?;
    m.add_function(wrap_pyfunction!(parse::parse_lines, m)?)?;
    m.add_function(wrap_pyfunction!(parse::_parse_block, m)?)?;
    m.add_function(wrap_pyfunction!(store::zeroclaw_name, m)?)?;
    Ok(())
}
