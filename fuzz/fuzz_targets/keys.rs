//! Session keys to file names: every key either is refused or gets a name that maps back to
//! exactly that key, holds no `/` or `.`, does not start with a dot and fits in a file name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnlog::keys;

fuzz_target!(|key: &str| {
    match keys::key_to_name(key) {
        Ok(name) => {
            assert!(!key.is_empty());
            assert!(!name.contains('/') && !name.contains('.') && !name.contains('\0'));
            assert!(name.len() <= keys::MAX_NAME_BYTES);
            assert_eq!(keys::name_to_key(&name).as_deref(), Some(key), "round trip");
        }
        Err(_) => assert!(key.is_empty() || key.len() > keys::MAX_NAME_BYTES / 3),
    }
    // Any name maps to at most one key, and back to itself.
    if let Some(back) = keys::name_to_key(key) {
        assert_eq!(
            keys::key_to_name(&back).ok().as_deref(),
            Some(key),
            "names are canonical"
        );
    }
});
