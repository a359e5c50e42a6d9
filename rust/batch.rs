//! Loading in batches: a block of the file parsed into owned messages, so that one thread can
//! read and parse the next block while another (the one holding Python's GIL) turns this one
//! into objects.
//!
//! A batch keeps every role and decoded content in a `String` arena, so building Python
//! strings from it needs no allocation or unescaping by the thread that holds the GIL.
//!
//! For text that is mostly not ASCII, building the `str` from UTF-8 is still costly: CPython
//! decodes it again, and widens the string each time it meets a wider character. A batch read
//! ahead hands some of that work to the reading thread: a share of such contents ([`Pace`]) is
//! decoded to code points in a second arena, from which CPython makes a `str` with a scan and a
//! copy. The share follows which thread is behind, so that neither waits for the other.

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
enum Place {
    /// In the text arena.
    Text(Range<usize>),
    /// In the wide arena.
    Wide(Range<usize>),
}

/// A message's decoded content.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Content<'a> {
    Text(&'a str),
    /// Decoded to code points by the reading thread.
    Wide(&'a [char]),
}

impl<'a> Content<'a> {
    /// The content as UTF-8 (a copy if it is [`Content::Wide`]).
    pub fn to_text(self) -> Cow<'a, str> {
        match self {
            Content::Text(text) => Cow::Borrowed(text),
            Content::Wide(points) => Cow::Owned(points.iter().collect()),
        }
    }
}

/// One valid message of a [`Batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    role: Range<usize>,
    content: Place,
    /// Extra fields in file order (empty, and so not allocated, for most messages).
    pub extra: Vec<(String, Value<'static>)>,
}

/// The valid messages of a block of lines, owning their text.
#[derive(Debug, Default)]
pub struct Batch {
    text: String,
    wide: Vec<char>,
    pub messages: Vec<Message>,
}

impl Batch {
    /// Parses the lines of `block`, keeping the valid ones.
    pub fn parse(block: &[u8]) -> Batch {
        Self::parse_paced(block, 0)
    }

    /// As [`Batch::parse`], decoding to code points the contents that are mostly not ASCII of
    /// `wide_eighths` of every eight messages, spread evenly (so that messages that alternate,
    /// a user's and a reply, share alike).
    pub fn parse_paced(block: &[u8], wide_eighths: usize) -> Batch {
        let mut batch = Batch {
            text: String::with_capacity(block.len()),
            ..Batch::default()
        };
        let mut scratch = String::new();
        lines::for_each_line(block, |line| {
            let index = batch.messages.len();
            let wide = index * wide_eighths / 8 != (index + 1) * wide_eighths / 8;
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
        // Under 1.5 UTF-8 bytes a character (mostly ASCII), CPython's decoder is about as fast
        // from UTF-8 as from code points (benches/README.md, row 5). A content longer than a
        // block stays UTF-8: its code points would take up to 4 times a block's memory.
        let wide_chars = (wide && content.len() <= lines::FORWARD_BLOCK)
            .then(|| content.chars().count())
            .filter(|&chars| 2 * content.len() >= 3 * chars);
        let content = match wide_chars {
            Some(chars) => {
                let start = self.wide.len();
                self.wide.reserve(chars);
                self.wide.extend(content.chars());
                Place::Wide(start..self.wide.len())
            }
            None => Place::Text(self.push(content)),
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

    pub fn content(&self, message: &Message) -> Content<'_> {
        match &message.content {
            Place::Text(range) => Content::Text(&self.text[range.clone()]),
            Place::Wide(range) => Content::Wide(&self.wide[range.clone()]),
        }
    }
}

/// How much of the decoding to code points a read-ahead thread takes on, in eighths of the
/// messages ([`Batch::parse_paced`]): one more after each batch that was ready before its
/// consumer asked for it, one less after each it had to wait for. It starts at none, so a load
/// that does not read ahead (whose consumer waits for every batch) never decodes to code points.
/// The reader is a batch or two ahead of what it hears, so the share swings around the balance
/// rather than settling, and a load of a few blocks decodes little to code points.
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

    fn wide_count(batch: &Batch) -> usize {
        batch
            .messages
            .iter()
            .filter(|m| matches!(batch.content(m), Content::Wide(_)))
            .count()
    }

    #[test]
    fn batch_owns_decoded_text() {
        let block = b"{\"role\":\"user\",\"content\":\"a\\nb\"}\njunk\n{\"role\":\"x\",\"content\":\"c\",\"n\":[1]}";
        let batch = Batch::parse(block);
        assert_eq!(batch.messages.len(), 2);
        assert_eq!(batch.role(&batch.messages[0]), "user");
        assert_eq!(batch.content(&batch.messages[0]), Content::Text("a\nb"));
        assert!(batch.messages[0].extra.is_empty());
        assert_eq!(batch.content(&batch.messages[1]), Content::Text("c"));
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
            r#"{"role":"user","content":"aé"}"#,
            r#"{"role":"user","content":""}"#,
        ]
        .join("\n");
        let all = Batch::parse_paced(lines.as_bytes(), 8);
        let plain = Batch::parse(lines.as_bytes());
        let kinds: Vec<bool> = all
            .messages
            .iter()
            .map(|m| matches!(all.content(m), Content::Wide(_)))
            .collect();
        // "hello, мир": 13 bytes for 10 characters, under 1.5 a character; "aé": exactly 1.5.
        assert_eq!(kinds, [true, false, true, true, true]);
        assert_eq!(wide_count(&plain), 0);
        for (a, b) in all.messages.iter().zip(&plain.messages) {
            assert_eq!(all.content(a).to_text(), plain.content(b).to_text());
            assert_eq!(all.role(a), "user");
        }
        assert_eq!(
            all.content(&all.messages[2]),
            Content::Wide(&['你', '好', ' ', '🙂'])
        );
        assert_eq!(all.content(&all.messages[4]), Content::Wide(&[]));
    }

    #[test]
    fn a_share_is_spread_over_every_eight_messages() {
        let lines = vec![r#"{"role":"user","content":"привет"}"#; 16].join("\n");
        for eighths in 0..=8 {
            let batch = Batch::parse_paced(lines.as_bytes(), eighths);
            assert_eq!(wide_count(&batch), 2 * eighths);
        }
        let wide: Vec<usize> = Batch::parse_paced(lines.as_bytes(), 2)
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m.content, Place::Wide(_)))
            .map(|(index, _)| index)
            .collect();
        assert_eq!(wide, [3, 7, 11, 15]);
    }

    #[test]
    fn the_share_follows_whichever_thread_is_behind() {
        let pace = Pace {
            wide_eighths: AtomicUsize::new(0),
            waited: Cell::new(false),
        };
        let share = || pace.wide_eighths.load(Ordering::Relaxed);
        for expected in [1, 2, 3, 4, 5, 6, 7, 8, 8] {
            pace.after_batch();
            assert_eq!(share(), expected);
        }
        for expected in [7, 6, 5, 4, 3, 2, 1, 0, 0] {
            pace.waited.set(true);
            pace.after_batch();
            assert_eq!(share(), expected);
            assert!(!pace.waited.get(), "each batch is judged on its own");
        }
    }

    /// A file of `count` lines of mostly non-ASCII text, removed when dropped.
    struct Scratch(std::path::PathBuf, File);

    impl Scratch {
        fn new(name: &str, count: usize) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("turnlog-batch-{name}-{}.jsonl", std::process::id()));
            let line = "{\"role\":\"user\",\"content\":\"съешь же ещё этих мягких французских булок 🙂\"}\n";
            std::fs::write(&path, line.repeat(count)).expect("writable temp dir");
            let file = File::open(&path).expect("just written");
            Scratch(path, file)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The batches of a whole-file `load`, each (valid messages, of which wide), consumed
    /// slowly or at once.
    fn load_all(scratch: &Scratch, slow: bool) -> Vec<(usize, usize)> {
        let len = scratch.1.metadata().expect("stat").len();
        let mut seen = Vec::new();
        let on_batch = |batch: Batch| {
            for message in &batch.messages {
                assert_eq!(
                    batch.content(message).to_text(),
                    "съешь же ещё этих мягких французских булок 🙂"
                );
            }
            seen.push((batch.messages.len(), wide_count(&batch)));
            if slow {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            ControlFlow::Continue(())
        };
        load(&scratch.1, 0, len, on_batch, &mut lines::Plain).expect("load");
        seen
    }

    #[test]
    fn a_slow_consumer_gets_contents_decoded_ahead() {
        // 110 bytes a line: 12 MiB, six blocks read ahead.
        let scratch = Scratch::new("slow", 120_000);
        // A scan by another test of this process at the same moment makes the load read on the
        // consumer's thread (see `lines::read_ahead`); it runs alone in one of a few tries.
        let decoded_ahead = (0..10).any(|_| {
            let seen = load_all(&scratch, true);
            assert_eq!(seen.iter().map(|(n, _)| n).sum::<usize>(), 120_000);
            assert_eq!(seen[0].1, 0, "the share starts at none");
            // A consumer that never waits gets more decoded ahead batch after batch (the last
            // batch is a short one).
            let full = &seen[..seen.len() - 1];
            full.last().is_some_and(|&(_, wide)| wide > 0)
                && full.windows(2).all(|pair| pair[1].1 >= pair[0].1)
        });
        assert!(decoded_ahead);
    }

    #[test]
    fn a_load_that_does_not_read_ahead_decodes_nothing_ahead() {
        // 3 MiB: under READ_AHEAD_MIN_BYTES, read on the consumer's thread.
        let scratch = Scratch::new("inline", 28_000);
        let seen = load_all(&scratch, true);
        assert_eq!(seen.iter().map(|(n, _)| n).sum::<usize>(), 28_000);
        assert!(seen.iter().all(|&(_, wide)| wide == 0), "{seen:?}");
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
        assert_eq!(batch.content(&batch.messages[0]), Content::Text("a"));
        assert_eq!(batch.content(&batch.messages[1]), Content::Text("d"));
    }
}
