//! Keyword search over session files: a scan of every valid message's content, no index to
//! keep in sync. Case-insensitive by Unicode lower-casing; words are split on Unicode white
//! space. The pure store (`python/turnlog/backends/jsonl/pure.py`, with the word rules of
//! `python/turnlog/_rules.py`) applies the same rules.

use std::fs::File;
use std::io;

use crate::lines::{self, Forward};
use crate::record;

/// What a message's content must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    words: Vec<String>,
    /// Every word (in one message), or any of them.
    all: bool,
}

impl Query {
    /// A query for the words of `text`; `all` asks for every word within one message.
    pub fn new(text: &str, all: bool) -> Query {
        Query {
            words: text.split_whitespace().map(str::to_lowercase).collect(),
            all,
        }
    }

    /// Whether the query has no words (and so matches every session).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether `content` matches.
    pub fn matches(&self, content: &str) -> bool {
        let lower = if content.is_ascii() {
            content.to_ascii_lowercase()
        } else {
            content.to_lowercase()
        };
        let found = |word: &String| lower.contains(word.as_str());
        if self.all {
            self.words.iter().all(found)
        } else {
            self.words.iter().any(found)
        }
    }

    /// Whether any valid message in the first `len` bytes of `file` matches.
    pub fn matches_file(&self, file: &File, len: u64) -> io::Result<bool> {
        if self.is_empty() {
            return Ok(true);
        }
        let mut reader = Forward::new(file, 0, len);
        let mut scratch = String::new();
        while let Some(block) = reader.next_block()? {
            let mut found = false;
            lines::for_each_line(block, |line| {
                if !found {
                    if let Some(parsed) = record::parse(line) {
                        found = self.matches(parsed.content.decode_into(&mut scratch));
                    }
                }
            });
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_or_any_words_case_insensitive() {
        let all = Query::new("  Rust  ПОИСК ", true);
        assert!(all.matches("about rust and поиск"));
        assert!(!all.matches("only rust"));
        let any = Query::new("rust поиск", false);
        assert!(any.matches("ONLY RUST"));
        assert!(!any.matches("python"));
        assert!(Query::new(" \u{3000} ", true).is_empty());
    }
}
