//! Loading in batches: a block of the file parsed into owned messages, so that one thread can
//! read and parse the next block while another (the one holding Python's GIL) turns this one
//! into objects.
//!
//! A batch keeps every role and decoded content in one `String` arena, so building Python
//! strings from it is a plain copy per message, with no allocation or unescaping left for the
//! thread that holds the GIL.

use std::fs::File;
use std::io;
use std::ops::{ControlFlow, Range};

use crate::lines;
use crate::record::{self, Value};

/// One valid message of a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    role: Range<usize>,
    content: Range<usize>,
    /// Extra fields in file order (empty, and so not allocated, for most messages).
    pub extra: Vec<(String, Value<'static>)>,
}

/// The valid messages of a block of lines, owning their text.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    pub messages: Vec<Message>,
}

impl Batch {
    /// Parses the lines of `block`, keeping the valid ones.
    pub fn parse(block: &[u8]) -> Batch {
        let mut batch = Batch {
            text: String::with_capacity(block.len()),
            messages: Vec::new(),
        };
        let mut scratch = String::new();
        lines::for_each_line(block, |line| {
            batch.keep(line, &mut scratch);
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
                    .keep(record, &mut scratch)
                    .then(|| batch.messages.len() - 1)
            })
            .collect();
        (batch, positions)
    }

    /// Adds `line` if it is a valid message; whether it was.
    fn keep(&mut self, line: &[u8], scratch: &mut String) -> bool {
        let Some(parsed) = record::parse(line) else {
            return false;
        };
        let role = self.push(parsed.role.decode_into(scratch));
        let content = self.push(parsed.content.decode_into(scratch));
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

    pub fn content(&self, message: &Message) -> &str {
        &self.text[message.content.clone()]
    }
}

/// Reads `[start, end)` of `file` in blocks, hands each parsed [`Batch`] to `on_batch`, in file
/// order, until it breaks; large ranges are read and parsed ahead on a second thread. Reading
/// and parsing happen inside `wait.blocking` (see [`lines::read_ahead`]).
pub fn load(
    file: &File,
    start: u64,
    end: u64,
    on_batch: impl FnMut(Batch) -> ControlFlow<()>,
    wait: &mut impl lines::Wait,
) -> io::Result<()> {
    lines::read_ahead(file, start, end, Batch::parse, on_batch, wait)
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
        assert!(batch.messages[0].extra.is_empty());
        assert_eq!(batch.content(&batch.messages[1]), "c");
        assert_eq!(
            batch.messages[1].extra,
            vec![("n".to_owned(), Value::Array(vec![Value::Int("1".into())]))]
        );
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
