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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::lines::{self, Forward};
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
            if let Some(parsed) = record::parse(line) {
                let role = batch.push(parsed.role.decode_into(&mut scratch));
                let content = batch.push(parsed.content.decode_into(&mut scratch));
                let extra = parsed
                    .extra
                    .into_iter()
                    .map(|(name, value)| (name.into_owned(), value.into_owned()))
                    .collect();
                batch.messages.push(Message {
                    role,
                    content,
                    extra,
                });
            }
        });
        batch
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

/// Below this many bytes a load parses on the calling thread: a tail read of a few messages
/// must not pay for starting a thread.
pub const THREADED_MIN_BYTES: u64 = 2 * lines::FORWARD_BLOCK as u64;

/// Counts the loads in progress in this process while alive.
struct ActiveLoad {
    others: usize,
}

static ACTIVE_LOADS: AtomicUsize = AtomicUsize::new(0);

impl ActiveLoad {
    fn enter() -> ActiveLoad {
        ActiveLoad {
            others: ACTIVE_LOADS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for ActiveLoad {
    fn drop(&mut self) {
        ACTIVE_LOADS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads `[start, end)` of `file` in blocks, hands each parsed [`Batch`] to `on_batch`, in file
/// order, until it breaks. For large ranges a second thread reads and parses ahead (at most one
/// batches), so reading and parsing overlap with what `on_batch` does.
pub fn load(
    file: &File,
    start: u64,
    end: u64,
    mut on_batch: impl FnMut(Batch) -> ControlFlow<()>,
) -> io::Result<()> {
    // Read ahead on a second thread only for a large range, and only when no other load of
    // this process is running: concurrent loads already keep the cores busy, and extra
    // threads would only contend with them.
    let active = ActiveLoad::enter();
    if end.saturating_sub(start) < THREADED_MIN_BYTES || active.others > 0 {
        let mut reader = Forward::new(file, start, end);
        while let Some(block) = reader.next_block()? {
            if on_batch(Batch::parse(block)).is_break() {
                break;
            }
        }
        return Ok(());
    }
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel::<io::Result<Batch>>(1);
        scope.spawn(move || {
            let mut reader = Forward::new(file, start, end);
            loop {
                let parsed = match reader.next_block() {
                    Ok(Some(block)) => Ok(Batch::parse(block)),
                    Ok(None) => return,
                    Err(error) => Err(error),
                };
                let failed = parsed.is_err();
                // A closed channel means the consumer stopped early: nothing more to do.
                if sender.send(parsed).is_err() || failed {
                    return;
                }
            }
        });
        for parsed in receiver {
            if on_batch(parsed?).is_break() {
                // Dropping the receiver ends the reader at its next send.
                break;
            }
        }
        Ok(())
    })
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
}
