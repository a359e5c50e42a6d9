//! The fuzz oracles: what must hold for any input to the line parser and the key escaping. The
//! cargo-fuzz targets in `fuzz/` call these on libFuzzer's inputs (`make fuzz`, nightly); the
//! unit test below calls them on the seed corpus and deterministic mutations of it, so
//! `cargo test` on the stable toolchain is the fuzzers' smoke run in CI. A broken property
//! panics, which is what both harnesses report.

use crate::batch::Batch;
use crate::{keys, lines, record};

/// The line parser: `record::parse` (which builds the record), `record::is_valid` and
/// `record::valid_text` (which only validate) agree on every input and never panic; a valid
/// line's stripped text is valid on its own and parses to the same record; and the same bytes
/// parsed as a block (what `load` does) keep one message per valid line.
pub fn check_parse(data: &[u8]) {
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
    let wide = Batch::parse_paced(data, 8);
    assert_eq!(
        wide.messages.len(),
        valid_lines,
        "a paced batch keeps every valid line"
    );
    for (message, same) in batch.messages.iter().zip(&wide.messages) {
        assert_eq!(batch.role(message), wide.role(same));
        assert_eq!(
            batch.content(message).to_text(),
            wide.content(same).to_text(),
            "decoding to code points keeps the content"
        );
    }
}

/// Session keys to file names: every key is either refused or gets a name that maps back to
/// exactly that key, holds no `/`, `.` or NUL and fits in a file name; and any string that is
/// a name maps to the one key whose name it is.
pub fn check_key(key: &str) {
    match keys::key_to_name(key) {
        Ok(name) => {
            assert!(!key.is_empty());
            assert!(!name.contains('/') && !name.contains('.') && !name.contains('\0'));
            assert!(name.len() <= keys::MAX_NAME_BYTES);
            assert_eq!(keys::name_to_key(&name).as_deref(), Some(key), "round trip");
        }
        Err(_) => assert!(key.is_empty() || key.len() > keys::MAX_NAME_BYTES / 3),
    }
    if let Some(back) = keys::name_to_key(key) {
        assert_eq!(
            keys::key_to_name(&back).ok().as_deref(),
            Some(key),
            "names are canonical"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::panic::{self, AssertUnwindSafe};
    use std::path::Path;

    /// Mutations per seed file: a few thousand inputs per oracle in all, in well under a second.
    const MUTATIONS_PER_SEED: usize = 1000;

    /// xorshift64: deterministic, so a failure names an input that can be replayed.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n.max(1) as u64) as usize
        }
    }

    fn fuzz_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz"))
    }

    /// The files of `fuzz/seeds/<target>`, sorted so the mutations are the same on every run.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = fuzz_dir().join("seeds").join(target);
        let mut paths: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        paths.sort();
        let seeds: Vec<_> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// The tokens of a libFuzzer dictionary (`"..."` per line, with `\\`, `\"` and `\xNN`).
    fn dictionary(name: &str) -> Vec<Vec<u8>> {
        let text = fs::read_to_string(fuzz_dir().join(name)).unwrap();
        let tokens: Vec<Vec<u8>> = text
            .lines()
            .filter_map(|line| line.strip_prefix('"')?.strip_suffix('"'))
            .map(|quoted| {
                let (bytes, mut token, mut i) = (quoted.as_bytes(), Vec::new(), 0);
                while i < bytes.len() {
                    match (bytes[i], bytes.get(i + 1)) {
                        (b'\\', Some(b'x')) => {
                            let hex = std::str::from_utf8(&bytes[i + 2..i + 4]).unwrap();
                            token.push(u8::from_str_radix(hex, 16).unwrap());
                            i += 4;
                        }
                        (b'\\', Some(&escaped)) => {
                            token.push(escaped);
                            i += 2;
                        }
                        (byte, _) => {
                            token.push(byte);
                            i += 1;
                        }
                    }
                }
                token
            })
            .collect();
        assert!(!tokens.is_empty(), "no tokens in fuzz/{name}");
        tokens
    }

    /// One to four of libFuzzer's kinds of mutation: flip a bit, set a byte to an interesting
    /// value, insert a dictionary token, delete a range, repeat a range (up to 8 times, so keys
    /// grow past the longest allowed name), cut, splice another seed.
    fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>], tokens: &[Vec<u8>]) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\0\n\r\t \"\\{}[]:,-.0e\x7f\x80\xbf\xc0\xe3\xed\xf0\xff";
        let mut data = input.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(data.len() + 1);
            match rng.below(7) {
                0 if at < data.len() => data[at] ^= 1 << rng.below(8),
                1 if at < data.len() => data[at] = INTERESTING[rng.below(INTERESTING.len())],
                2 => {
                    let token = &tokens[rng.below(tokens.len())];
                    data.splice(at..at, token.iter().copied());
                }
                3 => {
                    let end = (at + 1 + rng.below(8)).min(data.len());
                    data.drain(at.min(end)..end);
                }
                4 => {
                    let end = (at + 1 + rng.below(data.len())).min(data.len());
                    let copy = data[at.min(end)..end].repeat(1 + rng.below(8));
                    data.splice(at..at, copy);
                }
                5 => data.truncate(at),
                _ => {
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    data.truncate(at);
                    data.extend_from_slice(&other[from..]);
                }
            }
        }
        data
    }

    /// Runs `check` on every seed of `target` and on `MUTATIONS_PER_SEED` mutations of each;
    /// returns how many inputs it checked.
    fn smoke(target: &str, seed: u64, check: impl Fn(&[u8])) -> usize {
        let corpus = seeds(target);
        let tokens = dictionary("parse.dict");
        let mut rng = Rng(seed);
        let mut runs = 0;
        for input in &corpus {
            check(input);
            runs += 1;
            for _ in 0..MUTATIONS_PER_SEED {
                let mutated = mutate(&mut rng, input, &corpus, &tokens);
                let result = panic::catch_unwind(AssertUnwindSafe(|| check(&mutated)));
                assert!(result.is_ok(), "{target} fails on {mutated:?}");
                runs += 1;
            }
        }
        eprintln!("fuzz smoke: {runs} inputs through the `{target}` oracle");
        runs
    }

    #[test]
    fn parse_oracle_holds_on_seeds_and_mutations() {
        let runs = smoke("parse", 0x9E37_79B9_7F4A_7C15, check_parse);
        assert!(runs > 5_000, "{runs} inputs");
    }

    #[test]
    fn keys_oracle_holds_on_seeds_and_mutations() {
        // libFuzzer gives the `keys` target only UTF-8 inputs; a lossy conversion keeps the
        // mutations that broke a character instead of dropping them.
        let runs = smoke("keys", 0xD1B5_4A32_D192_ED03, |input| {
            check_key(&String::from_utf8_lossy(input))
        });
        assert!(runs >= 2_000, "{runs} inputs");
    }
}
