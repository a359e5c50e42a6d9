//! Loading in batches: a block of the file parsed into owned messages, so that one thread can
//! read and parse the next block while another (the one holding Python's GIL) turns this one
//! into objects.
//!
//! A batch keeps every role and decoded content in one `String` arena, so building Python
//! strings from it is a plain copy per message, with no allocation or unescaping left for the
//! thread that holds the GIL.
//!
//! For text that is mostly not ASCII, that copy is not plain: CPython decodes the UTF-8 again,
//! and widens the string each time it meets a wider character. A batch read ahead can hand
//! some of that work to the reading thread: a share of such contents ([`Pace`]) is decoded to
//! code points in a second arena, from which CPython makes a `str` with little more than a
//! copy. The share follows which thread is behind, so neither waits for the other.

use std::borrow::Cow;
use std::cell::Cell;
use std::fs::File;
use std::io;
use std::ops::{ControlFlow, Range};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::lines;
use crate::record::{self, Value};

/// Where a message's decoded content is.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// UTF-8, in the batch's text arena.
    Text(Range<usize>),
    /// Code points, in the batch's wide arena.
    Wide(Range<usize>),
}

/// One valid message of a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    role: Range<usize>,
    pub content: Content,
    /// Extra fields in file order (empty, and so not allocated, for most messages).
    pub extra: Vec<(String, Value<'static>)>,
}

/// The valid messages of a block of lines, owning their text.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    wide: Vec<u32>,
    pub messages: Vec<Message>,
}

impl Batch {
    /// Parses the lines of `block`, keeping the valid ones.
    pub fn parse(block: &[u8]) -> Batch {
        Self::parse_paced(block, 0)
    }

    /// As [`Batch::parse`], decoding to code points `wide_eighths` eighths of the contents that
    /// are mostly not ASCII.
    pub fn parse_paced(block: &[u8], wide_eighths: usize) -> Batch {
        let mut batch = Batch {
            text: String::with_capacity(block.len()),
            ..Batch::default()
        };
        let mut scratch = String::new();
        lines::for_each_line(block, |line| {
            let wide = batch.messages.len() % 8 < wide_eighths;
            batch.keep(line, &mut scratch, wide);
        });
        batch
    }

    /// Parses each of `records` as one whole line (a newline inside one is white space, not a
    /// line break), as a store that keeps records apart (Redis list elements) reads them.
    /// Returns the batch of the valid ones and, for each record, the index of its message.
    pub fn parse_each<'r>(
        records: impl IntoIterator<Item = &'r [u8]>,
    ) -> (Batch, Vec<Option<usize>>) {
        let mut batch = Batch::default();
        let mut scratch = String::new();
        let positions = records
            .into_iter()
            .map(|record| {
                batch
                    .keep(record, &mut scratch, false)
                    .then(|| batch.messages.len() - 1)
            })
            .collect();
        (batch, positions)
    }

    /// Adds `line` if it is a valid message; whether it was. `wide`: its content goes to the
    /// wide arena if it is mostly not ASCII.
    fn keep(&mut self, line: &[u8], scratch: &mut String, wide: bool) -> bool {
        let Some(parsed) = record::parse(line) else {
            return false;
        };
        let role = self.push(parsed.role.decode_into(scratch));
        let content = parsed.content.decode_into(scratch);
        // Below half its characters outside ASCII (UTF-8 bytes under 1.5 per character),
        // CPython's decoder is about as fast from UTF-8 as from code points.
        let content = if wide && 2 * content.len() >= 3 * content.chars().count() {
            let start = self.wide.len();
            self.wide.extend(content.chars().map(u32::from));
            Content::Wide(start..self.wide.len())
        } else {
            Content::Text(self.push(content))
        };
        let extra = parsed
            .extra
            .into_iter()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        self.messages.push(Message {
            role,
            content,
            extra,
        });
        true
    }

    fn push(&mut self, text: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(text);
        start..self.text.len()
    }

    pub fn role(&self, message: &Message) -> &str {
        &self.text[message.role.clone()]
    }

    /// The content as UTF-8 (a copy if it is in the wide arena).
    pub fn content(&self, message: &Message) -> Cow<'_, str> {
        match &message.content {
            Content::Text(range) => Cow::Borrowed(&self.text[range.clone()]),
            Content::Wide(range) => self.wide[range.clone()]
                .iter()
                .map(|&point| char::from_u32(point).unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        }
    }

    /// A content of [`Content::Text`].
    pub fn text(&self, range: &Range<usize>) -> &str {
        &self.text[range.clone()]
    }

    /// A content of [`Content::Wide`]: code points, each a `char`.
    pub fn wide(&self, range: &Range<usize>) -> &[u32] {
        &self.wide[range.clone()]
    }
}

/// How much of the decoding to code points a read-ahead thread takes on, in eighths of the
/// eligible contents: one more after each batch that was ready before its consumer asked for
/// it, one less after each it had to wait for. It starts at none, so a load that does not read
/// ahead (whose consumer waits for every batch) never decodes to code points.
struct Pace {
    wide_eighths: AtomicUsize,
    waited: Cell<bool>,
}

impl Pace {
    fn after_batch(&self) {
        let now = self.wide_eighths.load(Ordering::Relaxed);
        let next = if self.waited.replace(false) {
            now.saturating_sub(1)
        } else {
            (now + 1).min(8)
        };
        self.wide_eighths.store(next, Ordering::Relaxed);
    }
}

/// A [`lines::Wait`] that notes when the consumer waited.
struct Paced<'a, W> {
    inner: &'a mut W,
    pace: &'a Pace,
}

impl<W: lines::Wait> lines::Wait for Paced<'_, W> {
    fn blocking<R: Send>(&mut self, f: impl FnOnce() -> R + Send) -> R {
        self.pace.waited.set(true);
        self.inner.blocking(f)
    }
}

/// Reads `[start, end)` of `file` in blocks, hands each parsed [`Batch`] to `on_batch`, in file
/// order, until it breaks; large ranges are read and parsed ahead on a second thread, which
/// also takes on a share of the decoding ([`Pace`]). Reading and parsing happen inside
/// `wait.blocking` (see [`lines::read_ahead`]).
pub fn load(
    file: &File,
    start: u64,
    end: u64,
    mut on_batch: impl FnMut(Batch) -> ControlFlow<()>,
    wait: &mut impl lines::Wait,
) -> io::Result<()> {
    let pace = Pace {
        wide_eighths: AtomicUsize::new(0),
        waited: Cell::new(false),
    };
    let wide_eighths = &pace.wide_eighths;
    lines::read_ahead(
        file,
        start,
        end,
        |block| Batch::parse_paced(block, wide_eighths.load(Ordering::Relaxed)),
        |batch| {
            pace.after_batch();
            on_batch(batch)
        },
        &mut Paced {
            inner: wait,
            pace: &pace,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_owns_decoded_text() {
        let block = b"{\"role\":\"user\",\"content\":\"a\\nb\"}\njunk\n{\"role\":\"x\",\"content\":\"c\",\"n\":[1]}";
        let batch = Batch::parse(block);
        assert_eq!(batch.messages.len(), 2);
        assert_eq!(batch.role(&batch.messages[0]), "user");
        assert_eq!(batch.content(&batch.messages[0]), "a\nb");
        assert_eq!(batch.messages[0].content, Content::Text(4..7));
        assert!(batch.messages[0].extra.is_empty());
        assert_eq!(batch.content(&batch.messages[1]), "c");
        assert_eq!(
            batch.messages[1].extra,
            vec![("n".to_owned(), Value::Array(vec![Value::Int("1".into())]))]
        );
    }

    #[test]
    fn paced_batches_decode_mostly_non_ascii_contents_to_code_points() {
        let lines = [
            r#"{"role":"user","content":"привет, мир"}"#,
            r#"{"role":"user","content":"hello, мир"}"#,
            r#"{"role":"user","content":"\u4f60\u597d 🙂"}"#,
        ]
        .join("\n");
        let all = Batch::parse_paced(lines.as_bytes(), 8);
        let kinds: Vec<bool> = all
            .messages
            .iter()
            .map(|m| matches!(m.content, Content::Wide(_)))
            .collect();
        // "hello, мир": 13 bytes for 10 characters, under 1.5 a character.
        assert_eq!(kinds, [true, false, true]);
        let plain = Batch::parse(lines.as_bytes());
        for (a, b) in all.messages.iter().zip(&plain.messages) {
            assert_eq!(all.content(a), plain.content(b));
            assert!(matches!(b.content, Content::Text(_)));
        }
        assert_eq!(all.content(&all.messages[2]), "你好 🙂");
        let Content::Wide(range) = &all.messages[2].content else {
            unreachable!()
        };
        assert_eq!(all.wide(range), [0x4f60, 0x597d, 0x20, 0x1f642]);
        // A quarter: the first two of every eight messages.
        let quarter = Batch::parse_paced(lines.as_bytes(), 2);
        assert!(matches!(quarter.messages[0].content, Content::Wide(_)));
        assert!(matches!(quarter.messages[2].content, Content::Text(_)));
        let none = Batch::parse_paced(lines.as_bytes(), 0);
        assert!(none
            .messages
            .iter()
            .all(|m| matches!(m.content, Content::Text(_))));
    }

    #[test]
    fn parse_each_keeps_records_apart() {
        let records: [&[u8]; 4] = [
            b"{\"role\":\"user\",\n\"content\":\"a\"}",
            b"junk",
            b"{\"role\":\"x\",\"content\":\"b\"}\n{\"role\":\"x\",\"content\":\"c\"}",
            b" {\"role\":\"x\",\"content\":\"d\"}\r\n",
        ];
        let (batch, positions) = Batch::parse_each(records);
        assert_eq!(positions, vec![Some(0), None, None, Some(1)]);
        assert_eq!(batch.content(&batch.messages[0]), "a");
        assert_eq!(batch.content(&batch.messages[1]), "d");
    }
}
