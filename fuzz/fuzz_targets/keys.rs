//! Session keys to file names, on any string: the oracle is `turnlog::fuzzing::check_key`
//! (also run on the seeds and their mutations by `cargo test`, CI's smoke run).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|key: &str| turnlog::fuzzing::check_key(key));
