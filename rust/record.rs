//! What a line of a session file means: the strict JSON parser that decides whether a line is a
//! valid message and slices its fields out.
//!
//! The rules are those of `docs/FORMAT.md`, identical to the pure-Python reference
//! (`python/turnlog/backends/format.py`): the line must be UTF-8; stripped of Unicode white
//! space (what `str::trim` strips, as ZeroClaw does) it must be exactly one JSON object (RFC
//! 8259: no NaN, no trailing junk, no lone surrogate escapes) with string `role` and `content`.
//! Duplicate keys, nesting deeper than [`MAX_DEPTH`] and integers longer than
//! [`MAX_INT_DIGITS`] digits make a line corrupt too.
//!
//! Strings without escapes are borrowed from the line, so the common message costs no allocation.

use std::borrow::Cow;
use std::collections::HashSet;

/// Deepest nesting of objects and arrays, the message object itself counting as 1.
pub const MAX_DEPTH: usize = 128;
/// Longest integer literal (digits, sign not counted): CPython's default `int` conversion limit.
pub const MAX_INT_DIGITS: usize = 4300;

/// A JSON value of an extra field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// An integer literal as written (sign included), so that any size converts exactly.
    Int(Cow<'a, str>),
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl Value<'_> {
    /// The same value owning all its text.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(literal) => Value::Int(Cow::Owned(literal.into_owned())),
            Value::Float(f) => Value::Float(f),
            Value::Str(text) => Value::Str(Cow::Owned(text.into_owned())),
            Value::Array(items) => Value::Array(items.into_iter().map(Value::into_owned).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(name, value)| (Cow::Owned(name.into_owned()), value.into_owned()))
                    .collect(),
            ),
        }
    }
}

/// A valid message line: role, content and the other top-level fields in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub role: JsonStr<'a>,
    pub content: JsonStr<'a>,
    pub extra: Vec<(Cow<'a, str>, Value<'a>)>,
}

/// A validated JSON string as it stands in the line, quotes included. Decoding waits until the
/// text is wanted, so a load can decode into one reused buffer instead of a fresh `String` per
/// escaped message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonStr<'a> {
    quoted: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The text, borrowed when there is nothing to unescape, else decoded into `buf`.
    pub fn decode_into<'b>(&self, buf: &'b mut String) -> &'b str
    where
        'a: 'b,
    {
        let inner = &self.quoted[1..self.quoted.len() - 1];
        if !self.escaped {
            return inner;
        }
        buf.clear();
        buf.reserve(inner.len());
        // Validated when scanned, so decoding cannot fail; an empty string is the safe fallback.
        if Parser::new(self.quoted, true)
            .scan_string(Some(buf))
            .is_err()
        {
            buf.clear();
        }
        buf
    }

    /// The text, borrowed when there is nothing to unescape.
    pub fn decode(&self) -> Cow<'a, str> {
        if !self.escaped {
            return Cow::Borrowed(&self.quoted[1..self.quoted.len() - 1]);
        }
        let mut buf = String::new();
        self.decode_into(&mut buf);
        Cow::Owned(buf)
    }
}

/// The line (without its newline) stripped of surrounding Unicode white space, if it is UTF-8.
fn trimmed(line: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(line).ok().map(str::trim)
}

/// Parses a line (without its newline). `None` when the line is corrupt.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    Parser::new(trimmed(line)?, true).message()
}

/// Whether a line (without its newline) holds a valid message; allocates nothing for the usual
/// role/content line.
pub fn is_valid(line: &[u8]) -> bool {
    valid_text(line).is_some()
}

/// The line stripped of surrounding white space when it is a valid message (what `compact` keeps).
pub fn valid_text(line: &[u8]) -> Option<&[u8]> {
    let text = trimmed(line)?;
    Parser::new(text, false).message().map(|_| text.as_bytes())
}

type Fail<T> = Result<T, ()>;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// False when only validating: strings are checked but not unescaped, values not kept.
    build: bool,
}

/// Bytes that end the fast run inside a string: the quote, the backslash and control characters.
const STRING_STOP: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = true;
        i += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` that is below `n` (n <= 128); the lowest flag is exact.
#[inline]
fn bytes_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// The position of the first quote, backslash or control character at or after `pos`; may stop
/// short of it near the end of `bytes`, where the caller's byte loop takes over. The bulk of a
/// session file is string content, so this loop is most of what validating a line costs.
#[inline]
fn skip_plain(bytes: &[u8], pos: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of the x86-64 baseline: every CPU this code runs on has it.
    let pos = unsafe { skip_plain_sse2(bytes, pos) };
    skip_plain_swar(bytes, pos)
}

/// Sixteen bytes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn skip_plain_sse2(bytes: &[u8], mut pos: usize) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let floor = _mm_set1_epi8(0x1f);
    while let Some(chunk) = bytes.get(pos..pos + 16) {
        // SAFETY: `chunk` is 16 readable bytes; the load has no alignment requirement.
        let block = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
        // A control character is x <= 0x1f unsigned: max(x, 0x1f) == 0x1f.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(block, floor), floor);
        let special = _mm_or_si128(
            _mm_cmpeq_epi8(block, quote),
            _mm_cmpeq_epi8(block, backslash),
        );
        let stops = _mm_movemask_epi8(_mm_or_si128(special, control));
        if stops != 0 {
            return pos + stops.trailing_zeros() as usize;
        }
        pos += 16;
    }
    pos
}

/// Eight bytes at a time, in a `u64`.
#[inline]
fn skip_plain_swar(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        let word = u64::from_le_bytes(le);
        let stops = bytes_below(word, 0x20)
            | bytes_below(word ^ (ONES * u64::from(b'"')), 1)
            | bytes_below(word ^ (ONES * u64::from(b'\\')), 1);
        if stops != 0 {
            return pos + (stops.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    pos
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, build: bool) -> Self {
        Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            build,
        }
    }

    fn message(mut self) -> Option<Record<'a>> {
        let record = self.top_object().ok()?;
        self.skip_ws();
        (self.pos == self.bytes.len()).then_some(record)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Fail<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(())
        }
    }

    /// The message object: `role` and `content` pulled out, the rest kept in order.
    fn top_object(&mut self) -> Fail<Record<'a>> {
        self.expect(b'{')?;
        let mut role = None;
        let mut content = None;
        let mut extra = Vec::new();
        let mut keys = KeySet::default();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            return Err(()); // no role, no content
        }
        loop {
            self.skip_ws();
            let key_text = self.string()?;
            keys.insert(key_text.clone())?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            match &*key_text {
                "role" => role = Some(self.string_value()?),
                "content" => content = Some(self.string_value()?),
                _ => {
                    let value = self.value(1)?;
                    if self.build {
                        extra.push((key_text, value));
                    }
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(()),
            }
        }
        Ok(Record {
            role: role.ok_or(())?,
            content: content.ok_or(())?,
            extra,
        })
    }

    /// A value that must be a string (role and content).
    fn string_value(&mut self) -> Fail<JsonStr<'a>> {
        if self.peek() == Some(b'"') {
            self.json_str()
        } else {
            Err(())
        }
    }

    /// Any JSON value; `depth` counts the containers around it.
    fn value(&mut self, depth: usize) -> Fail<Value<'a>> {
        match self.peek().ok_or(())? {
            b'"' if self.build => Ok(Value::Str(self.string()?)),
            b'"' => self.json_str().map(|_| Value::Null),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal("true", Value::Bool(true)),
            b'f' => self.literal("false", Value::Bool(false)),
            b'n' => self.literal("null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(()),
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Fail<Value<'a>> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(())
        }
    }

    fn object(&mut self, depth: usize) -> Fail<Value<'a>> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.expect(b'{')?;
        let mut fields = Vec::new();
        let mut keys = KeySet::default();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(fields));
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            keys.insert(key.clone())?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let value = self.value(depth)?;
            if self.build {
                fields.push((key, value));
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(fields));
                }
                _ => return Err(()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Fail<Value<'a>> {
        if depth > MAX_DEPTH {
            return Err(());
        }
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            let value = self.value(depth)?;
            if self.build {
                items.push(value);
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(()),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Fail<Value<'a>> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(()),
        };
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(());
            }
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(());
            }
            is_float = true;
        }
        let literal = &self.text[start..self.pos];
        if is_float {
            // Rust and Python both round correctly, and both overflow to infinity.
            literal.parse::<f64>().map(Value::Float).map_err(|_| ())
        } else if int_digits > MAX_INT_DIGITS {
            Err(())
        } else {
            Ok(Value::Int(Cow::Borrowed(literal)))
        }
    }

    /// Scans a string from its opening quote to past its closing quote, checking escapes and
    /// refusing raw control characters; with `out`, decodes it there. Returns whether it has
    /// escapes.
    fn scan_string(&mut self, mut out: Option<&mut String>) -> Fail<bool> {
        self.expect(b'"')?;
        let mut escaped = false;
        let mut run_start = self.pos;
        loop {
            self.pos = skip_plain(self.bytes, self.pos);
            while self.pos < self.bytes.len() && !STRING_STOP[self.bytes[self.pos] as usize] {
                self.pos += 1;
            }
            match self.peek().ok_or(())? {
                b'"' => {
                    if let Some(out) = out {
                        out.push_str(&self.text[run_start..self.pos]);
                    }
                    self.pos += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    let run = &self.text[run_start..self.pos];
                    self.pos += 1;
                    let ch = self.escape()?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push_str(run);
                        out.push(ch);
                    }
                    escaped = true;
                    run_start = self.pos;
                }
                _ => return Err(()), // a raw control character
            }
        }
    }

    /// A string as its raw quoted text, validated, not decoded.
    fn json_str(&mut self) -> Fail<JsonStr<'a>> {
        let start = self.pos;
        let escaped = self.scan_string(None)?;
        Ok(JsonStr {
            quoted: &self.text[start..self.pos],
            escaped,
        })
    }

    /// A string decoded: borrowed from the line when it has no escapes.
    fn string(&mut self) -> Fail<Cow<'a, str>> {
        Ok(self.json_str()?.decode())
    }

    fn hex4(&mut self) -> Fail<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(())?;
        let mut value = 0;
        for &digit in digits {
            value = value * 16 + (digit as char).to_digit(16).ok_or(())?;
        }
        self.pos += 4;
        Ok(value)
    }

    /// The character of the escape after a backslash; surrogates must come in valid pairs.
    fn escape(&mut self) -> Fail<char> {
        let byte = self.peek().ok_or(())?;
        self.pos += 1;
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return Err(());
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(());
                        }
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or(())?
                    }
                    0xDC00..=0xDFFF => return Err(()),
                    _ => char::from_u32(unit).ok_or(())?,
                }
            }
            _ => return Err(()),
        })
    }
}

/// The keys of one object, to refuse duplicates. A linear scan while small; a hash set when an
/// object has many keys, so a hostile line cannot make parsing quadratic.
#[derive(Default)]
struct KeySet<'k> {
    few: Vec<Cow<'k, str>>,
    many: Option<HashSet<Cow<'k, str>>>,
}

impl<'k> KeySet<'k> {
    fn insert(&mut self, key: Cow<'k, str>) -> Fail<()> {
        if let Some(set) = &mut self.many {
            return if set.insert(key) { Ok(()) } else { Err(()) };
        }
        if self.few.contains(&key) {
            return Err(());
        }
        self.few.push(key);
        if self.few.len() > 16 {
            self.many = Some(self.few.drain(..).collect());
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
