//! Writing JSON byte for byte as Python's `json.dumps(..., ensure_ascii=False,
//! separators=(",", ":"))` does, so both stores write identical files.

/// Appends `text` as a JSON string literal: `"` and `\` escaped, `\b \f \n \r \t` in their
/// short forms, other control characters as `\u00XX` (lower-case hex), everything else (DEL and
/// non-ASCII included) as it is.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0x00..=0x1f => 0,
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        if short == 0 {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 15)]);
        } else {
            out.push(b'\\');
            out.push(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_like_python() {
        assert_eq!(written("plain"), r#""plain""#);
        assert_eq!(
            written("a\"b\\c\nd\re\tf\u{8}\u{c}"),
            r#""a\"b\\c\nd\re\tf\b\f""#
        );
        assert_eq!(written("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(written("ключ 😀 \u{2028}"), "\"ключ 😀 \u{2028}\"");
    }
}
