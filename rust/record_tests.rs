//! The unit tests of `record.rs` (a module of it: they see its private items).

use super::*;

fn ok(line: &str) -> Record<'_> {
    parse(line.as_bytes()).unwrap_or_else(|| panic!("should be valid: {line:?}"))
}

fn corrupt(line: &[u8]) {
    assert!(
        parse(line).is_none(),
        "should be corrupt: {:?}",
        String::from_utf8_lossy(line)
    );
    assert!(
        !is_valid(line),
        "validator disagrees: {:?}",
        String::from_utf8_lossy(line)
    );
}

#[test]
fn plain_message_is_borrowed() {
    let record = ok(r#"{"role":"user","content":"hello"}"#);
    assert_eq!(record.role.decode(), "user");
    assert!(matches!(record.content.decode(), Cow::Borrowed("hello")));
    assert!(record.extra.is_empty());
}

#[test]
fn escapes_and_pairs_decode() {
    let record = ok(r#"{"content":"a\"b\\c\nd\u00e9\ud83d\ude00\/","role":"x"}"#);
    assert_eq!(record.content.decode(), "a\"b\\c\ndé😀/");
    let mut buf = String::from("stale");
    assert_eq!(record.content.decode_into(&mut buf), "a\"b\\c\ndé😀/");
}

#[test]
fn extras_keep_order_and_types() {
    let record = ok(r#" {"role":"a","x":[1,-2.5e3,true,null],"content":"c","y":{"z":"w"}} "#);
    assert_eq!(record.extra.len(), 2);
    assert_eq!(record.extra[0].0, "x");
    assert_eq!(
        record.extra[0].1,
        Value::Array(vec![
            Value::Int("1".into()),
            Value::Float(-2500.0),
            Value::Bool(true),
            Value::Null
        ])
    );
    assert_eq!(record.extra[1].0, "y");
}

#[test]
fn unicode_whitespace_is_trimmed() {
    ok("\u{a0}\u{3000}\t{\"role\":\"a\",\"content\":\"b\"}\r");
    corrupt("\u{1c}{\"role\":\"a\",\"content\":\"b\"}".as_bytes());
}

#[test]
fn corrupt_lines() {
    for line in [
        "",
        "   ",
        "garbage",
        r#"{"role":"a","content":"b""#,
        r#"{"role":"a","content":"b"}x"#,
        r#"{"role":"a","content":"b"}{}"#,
        r#"["role","content"]"#,
        r#""text""#,
        "42",
        r#"{"role":1,"content":"b"}"#,
        r#"{"role":"a","content":null}"#,
        r#"{"role":"a"}"#,
        r#"{"content":"b"}"#,
        "{}",
        r#"{"role":"a","content":"\ud800"}"#,
        r#"{"role":"a","content":"\udc00\ud800"}"#,
        r#"{"role":"a","content":"\ud800\u0041"}"#,
        r#"{"role":"a","content":"b","x":NaN}"#,
        r#"{"role":"a","content":"b","x":Infinity}"#,
        r#"{"role":"a","content":"b","x":-Infinity}"#,
        r#"{"role":"a","role":"b","content":"c"}"#,
        r#"{"role":"a","content":"c","x":{"k":1,"k":2}}"#,
        "\u{feff}{\"role\":\"a\",\"content\":\"b\"}",
        "{\"role\":\"a\",\"content\":\"b\u{0}\"}",
        "{\"role\":\"a\",\"content\":\"b\"}\u{0}",
        r#"{"role":"a","content":"b","x":01}"#,
        r#"{"role":"a","content":"b","x":1.}"#,
        r#"{"role":"a","content":"b","x":.5}"#,
        r#"{"role":"a","content":"b","x":+1}"#,
        r#"{"role":"a","content":"b","x":[1,]}"#,
        r#"{"role":"a","content":"b",}"#,
        r#"{"role":"a","content":"\x"}"#,
        r#"{"role":"a","content":"\u12"}"#,
        r#"{'role':'a','content':'b'}"#,
    ] {
        corrupt(line.as_bytes());
    }
    corrupt(b"{\"role\":\"a\",\"content\":\"\xff\"}");
    corrupt(b"{\"role\":\"a\",\"content\":\"\xed\xa0\x80\"}"); // UTF-8-encoded surrogate
}

#[test]
fn depth_limit() {
    let nested = |depth: usize| {
        let inner = depth - 1; // the message object is level 1
        format!(
            r#"{{"role":"a","content":"b","x":{}{}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    };
    assert!(parse(nested(MAX_DEPTH).as_bytes()).is_some());
    corrupt(nested(MAX_DEPTH + 1).as_bytes());
}

#[test]
fn integer_digit_limit() {
    let line = |digits: usize| {
        format!(
            r#"{{"role":"a","content":"b","x":-{}}}"#,
            "9".repeat(digits)
        )
    };
    assert!(parse(line(MAX_INT_DIGITS).as_bytes()).is_some());
    corrupt(line(MAX_INT_DIGITS + 1).as_bytes());
    let huge = ok(r#"{"role":"a","content":"b","x":1e400}"#);
    assert_eq!(huge.extra[0].1, Value::Float(f64::INFINITY));
}

#[test]
fn duplicate_keys_with_escapes_and_many_keys() {
    corrupt(br#"{"role":"a","content":"b","k":1,"\u006b":2}"#);
    let many: String = (0..40).map(|i| format!(r#","k{i}":{i}"#)).collect();
    assert!(parse(format!(r#"{{"role":"a","content":"b"{many}}}"#).as_bytes()).is_some());
    corrupt(format!(r#"{{"role":"a","content":"b"{many},"k7":0}}"#).as_bytes());
}

#[test]
fn skip_plain_finds_the_first_stop_anywhere() {
    for len in 0..40 {
        for at in 0..=len {
            for stop in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                let mut bytes = vec![b'a'; len];
                bytes.extend_from_slice("é€".as_bytes()); // bytes >= 0x80 are not stops
                if at < len {
                    bytes[at] = stop;
                }
                let found = skip_plain(&bytes, 0);
                let swar = skip_plain_swar(&bytes, 0);
                assert!(bytes[..swar].iter().all(|&b| !STRING_STOP[b as usize]));
                let mut exact = found;
                while exact < bytes.len() && !STRING_STOP[bytes[exact] as usize] {
                    exact += 1;
                }
                assert!(found <= exact);
                assert!(bytes[..found].iter().all(|&b| !STRING_STOP[b as usize]));
                assert_eq!(exact, if at < len { at } else { bytes.len() });
            }
        }
    }
}

#[test]
fn valid_text_strips() {
    assert_eq!(
        valid_text(b"  {\"role\":\"a\",\"content\":\"b\"}\r"),
        Some(&b"{\"role\":\"a\",\"content\":\"b\"}"[..])
    );
}
