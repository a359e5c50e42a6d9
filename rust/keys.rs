//! Session keys to file names and back.
//!
//! A key of ASCII letters, digits, `_` and `-` is its own file name, so ZeroClaw's files keep
//! their names. In any other key every UTF-8 byte outside that set is written `%XX` (upper-case
//! hex). The mapping is reversible, different keys never share a file, and a name never starts
//! with a dot, so no key can reach a hidden, lock or temp file, or another folder.

use std::borrow::Cow;
use std::fmt;

/// The suffix of every session file.
pub const SUFFIX: &str = ".jsonl";
/// Longest name, suffix excluded, that fits the 255-byte file names of ext4, xfs, btrfs and APFS.
pub const MAX_NAME_BYTES: usize = 255 - SUFFIX.len();

/// Why a key has no file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    /// The encoded name would need this many bytes.
    TooLong(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "session key must not be empty"),
            KeyError::TooLong(len) => write!(
                f,
                "session key is too long: its file name needs {len} bytes, at most {MAX_NAME_BYTES} fit"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// `name`, if it fits in a file name.
fn fitting(name: Cow<'_, str>) -> Result<Cow<'_, str>, KeyError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(KeyError::TooLong(name.len()));
    }
    Ok(name)
}

/// The file name (without [`SUFFIX`]) of the session `key`.
pub fn key_to_name(key: &str) -> Result<Cow<'_, str>, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    let name = if key.bytes().all(is_plain) {
        Cow::Borrowed(key)
    } else {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut name = String::with_capacity(key.len() * 3);
        for byte in key.bytes() {
            if is_plain(byte) {
                name.push(byte as char);
            } else {
                name.push('%');
                name.push(HEX[usize::from(byte >> 4)] as char);
                name.push(HEX[usize::from(byte & 15)] as char);
            }
        }
        Cow::Owned(name)
    };
    fitting(name)
}

/// Whether ZeroClaw keeps `c` in a file name.
pub fn zeroclaw_keeps(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// The file name (without [`SUFFIX`]) ZeroClaw gives session `key`.
pub fn zeroclaw_name(key: &str) -> Result<Cow<'_, str>, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    let name = if key.chars().all(zeroclaw_keeps) {
        Cow::Borrowed(key)
    } else {
        let kept = |c| if zeroclaw_keeps(c) { c } else { '_' };
        Cow::Owned(key.chars().map(kept).collect())
    };
    fitting(name)
}

/// How a store names its session files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Names {
    /// turnlog's own, reversible names ([`key_to_name`]).
    #[default]
    Escaped,
    /// ZeroClaw's lossy names ([`zeroclaw_name`]).
    Zeroclaw,
}

impl Names {
    /// The file name (without [`SUFFIX`]) of session `key`.
    pub fn name<'k>(self, key: &'k str) -> Result<Cow<'k, str>, KeyError> {
        match self {
            Names::Escaped => key_to_name(key),
            Names::Zeroclaw => zeroclaw_name(key),
        }
    }

    /// The key a listing shows for the file `name` (without [`SUFFIX`]); `None` for a file no
    /// key of this mode maps to. A ZeroClaw name is listed as itself, as ZeroClaw lists it.
    pub fn key(self, name: &str) -> Option<String> {
        match self {
            Names::Escaped => name_to_key(name),
            Names::Zeroclaw => match zeroclaw_name(name) {
                Ok(Cow::Borrowed(_)) => Some(name.to_owned()),
                _ => None,
            },
        }
    }
}

fn upper_hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The key whose file name (without [`SUFFIX`]) is `name`; `None` when no key maps to it.
pub fn name_to_key(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return None;
    }
    let bytes = name.as_bytes();
    let mut raw = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if is_plain(byte) {
            raw.push(byte);
            i += 1;
        } else if byte == b'%' {
            let high = upper_hex(*bytes.get(i + 1)?)?;
            let low = upper_hex(*bytes.get(i + 2)?)?;
            let decoded = high << 4 | low;
            if is_plain(decoded) {
                return None; // key_to_name never escapes these
            }
            raw.push(decoded);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_keep_their_name() {
        assert_eq!(
            key_to_name("telegram_user-123").unwrap(),
            "telegram_user-123"
        );
        assert_eq!(
            name_to_key("telegram_user-123").as_deref(),
            Some("telegram_user-123")
        );
    }

    #[test]
    fn other_keys_are_escaped_and_round_trip() {
        for key in [
            "a/b",
            "a:b",
            "../x",
            ".hidden",
            "ключ",
            "with space",
            "x.jsonl",
            "\0",
            "%",
        ] {
            let name = key_to_name(key).unwrap();
            assert!(!name.starts_with('.'), "{name}");
            assert!(!name.contains('/') && !name.contains('.'), "{name}");
            assert_eq!(name_to_key(&name).as_deref(), Some(key));
        }
        assert_eq!(key_to_name("a/b").unwrap(), "a%2Fb");
        assert_ne!(key_to_name("a/b").unwrap(), key_to_name("a_b").unwrap());
    }

    #[test]
    fn bad_keys() {
        assert_eq!(key_to_name(""), Err(KeyError::Empty));
        assert_eq!(key_to_name(&"a".repeat(249)).unwrap().len(), 249);
        assert_eq!(key_to_name(&"a".repeat(250)), Err(KeyError::TooLong(250)));
        assert_eq!(key_to_name(&"/".repeat(84)), Err(KeyError::TooLong(252)));
    }

    #[test]
    fn zeroclaw_names() {
        let name = |key| zeroclaw_name(key).unwrap().into_owned();
        assert_eq!(
            name("agent:main:telegram:dm:user123"),
            "agent_main_telegram_dm_user123"
        );
        assert_eq!(name("telegram_ключ"), "telegram_ключ");
        assert_eq!(name("a/b c.d"), "a_b_c_d");
        assert_eq!(name("日本語🙂"), "日本語_");
        assert_eq!(name("../x"), "___x");
        assert_eq!(zeroclaw_name(""), Err(KeyError::Empty));
        assert_eq!(Names::Zeroclaw.key("a_b"), Some("a_b".to_owned()));
        assert_eq!(Names::Zeroclaw.key("a%3Ab"), None);
        assert_eq!(Names::Zeroclaw.key(""), None);
        assert_eq!(Names::Escaped.key("a%3Ab"), Some("a:b".to_owned()));
    }

    #[test]
    fn non_canonical_names_have_no_key() {
        for name in ["a%2fb", "%41", "a%2", "a%", "a.b", ".x", "", "%FF"] {
            assert_eq!(name_to_key(name), None, "{name}");
        }
    }
}
