//! The line parser, on any bytes: the oracle is `turnlog::fuzzing::check_parse` (also run on
//! the seeds and their mutations by `cargo test`, CI's smoke run).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnlog::fuzzing::check_parse(data));
