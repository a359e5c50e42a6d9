//! The line parser: `record::parse` (which builds the record), `record::is_valid` and
//! `record::valid_text` (which only validate) must agree on every input and never panic; a
//! valid line's stripped text must be valid on its own and parse to the same record; and a block
//! parsed as a batch (what `load` does) must hold one message per valid line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnlog::batch::Batch;
use turnlog::lines;
use turnlog::record;

fuzz_target!(|data: &[u8]| {
    let parsed = record::parse(data);
    let valid = record::is_valid(data);
    let text = record::valid_text(data);
    assert_eq!(parsed.is_some(), valid, "parse and is_valid disagree");
    assert_eq!(text.is_some(), valid, "valid_text and is_valid disagree");
    if let (Some(record), Some(text)) = (&parsed, text) {
        let line = std::str::from_utf8(data).expect("a valid line is UTF-8");
        assert_eq!(
            text,
            line.trim().as_bytes(),
            "valid_text is the line, trimmed"
        );
        assert_eq!(
            record::valid_text(text),
            Some(text),
            "the trimmed text is valid as it is"
        );
        assert_eq!(
            record::parse(text).as_ref(),
            Some(record),
            "and parses the same"
        );
        let _ = (record.role.decode(), record.content.decode());
    }
    // The same bytes as a block of lines, as `load` parses them.
    let mut valid_lines = 0;
    lines::for_each_line(data, |line| {
        valid_lines += usize::from(record::is_valid(line))
    });
    let batch = Batch::parse(data);
    assert_eq!(
        batch.messages.len(),
        valid_lines,
        "a batch keeps every valid line"
    );
    for message in &batch.messages {
        let _ = (batch.role(message), batch.content(message));
    }
});
