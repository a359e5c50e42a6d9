//! Reading a session file line by line, forwards in blocks and backwards from the end, with
//! `pread` so that no file position is shared and memory stays bounded by the block size plus
//! the longest line.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use memchr::{memchr_iter, memrchr};

use crate::record;

/// Block size of forward reads: large enough that syscalls vanish in the cost, small enough
/// that memory stays flat however big the file.
pub const FORWARD_BLOCK: usize = 2 << 20;
/// First block size of backward reads: a tail read of a few messages costs one small `pread`.
const BACKWARD_BLOCK: usize = 64 << 10;

/// Reads `len` bytes at `offset` (fewer at end of file) into `buf`, returning how many.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Forward reader over `[start, end)` of a file yielding blocks of whole lines.
pub struct Forward<'f> {
    file: &'f File,
    offset: u64,
    end: u64,
    buf: Vec<u8>,
    /// `buf[..kept]` is the unfinished line carried over from the previous block.
    kept: usize,
    done: bool,
}

impl<'f> Forward<'f> {
    pub fn new(file: &'f File, start: u64, end: u64) -> Self {
        Forward {
            file,
            offset: start,
            end,
            buf: Vec::new(),
            kept: 0,
            done: start >= end,
        }
    }

    /// The next block of whole lines: bytes that end with a newline, or at the end of the
    /// range the last line without one. `None` when the range is exhausted.
    pub fn next_block(&mut self) -> io::Result<Option<&[u8]>> {
        if self.done {
            return Ok(None);
        }
        // Drop the lines handed out last time, keeping the unfinished one at the front.
        let handed = self.buf.len() - self.kept;
        self.buf.copy_within(handed.., 0);
        self.buf.truncate(self.kept);
        loop {
            let want = (self.end - self.offset).min(FORWARD_BLOCK.max(self.buf.len()) as u64);
            let old = self.buf.len();
            self.buf.resize(old + want as usize, 0);
            let got = read_at_most(self.file, &mut self.buf[old..], self.offset)?;
            self.buf.truncate(old + got);
            self.offset += got as u64;
            if got == 0 || self.offset >= self.end {
                // The file ended (or shrank): whatever is left is the last line.
                self.done = true;
                self.kept = 0;
                return Ok((!self.buf.is_empty()).then_some(&self.buf[..]));
            }
            if let Some(newline) = memrchr(b'\n', &self.buf[old..]) {
                let cut = old + newline + 1;
                self.kept = self.buf.len() - cut;
                return Ok(Some(&self.buf[..cut]));
            }
            // No newline yet: a long line; read on, the block grows with it.
        }
    }
}

/// Below this many bytes a scan stays on the calling thread: a tail read of a few messages
/// must not pay for starting a thread.
pub const READ_AHEAD_MIN_BYTES: u64 = 2 * FORWARD_BLOCK as u64;

/// Counts the read-ahead scans in progress in this process while alive.
struct ActiveScan {
    others: usize,
}

static ACTIVE_SCANS: AtomicUsize = AtomicUsize::new(0);

impl ActiveScan {
    fn enter() -> ActiveScan {
        ActiveScan {
            others: ACTIVE_SCANS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for ActiveScan {
    fn drop(&mut self) {
        ACTIVE_SCANS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the consumer of a scan waits for blocks: the Python layer holds the GIL while it
/// consumes and gives it up only for as long as it has to wait (reading, parsing, or the
/// read-ahead thread being behind).
pub trait Wait {
    /// Runs `f`, which blocks.
    fn blocking<R: Send>(&mut self, f: impl FnOnce() -> R + Send) -> R;
}

/// Waits with nothing to give up.
pub struct Plain;

impl Wait for Plain {
    fn blocking<R: Send>(&mut self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }
}

/// Reads `[start, end)` of `file` in blocks of whole lines, turns each into a `T` with
/// `process`, and hands those to `consume` in file order until it breaks. Reading and `process`
/// run inside `wait.blocking`; `consume` runs outside it, back to back while blocks are ready.
///
/// For a large range, `process` runs on a second thread, one block ahead, so reading and
/// processing overlap with what `consume` does (building Python objects, writing a file). Not
/// when another such scan of this process is running: concurrent scans already keep the cores
/// busy, and more threads would only contend with them.
pub fn read_ahead<T: Send>(
    file: &File,
    start: u64,
    end: u64,
    mut process: impl FnMut(&[u8]) -> T + Send,
    mut consume: impl FnMut(T) -> ControlFlow<()>,
    wait: &mut impl Wait,
) -> io::Result<()> {
    let active = ActiveScan::enter();
    if end.saturating_sub(start) < READ_AHEAD_MIN_BYTES || active.others > 0 {
        let mut reader = Forward::new(file, start, end);
        loop {
            let next = wait.blocking(|| reader.next_block().map(|block| block.map(&mut process)));
            let Some(item) = next? else {
                return Ok(());
            };
            if consume(item).is_break() {
                return Ok(());
            }
        }
    }
    std::thread::scope(|scope| {
        let (sender, mut receiver) = mpsc::sync_channel::<io::Result<T>>(1);
        scope.spawn(move || {
            let mut reader = Forward::new(file, start, end);
            loop {
                let item = match reader.next_block() {
                    Ok(Some(block)) => Ok(process(block)),
                    Ok(None) => return,
                    Err(error) => Err(error),
                };
                let failed = item.is_err();
                // A closed channel means the consumer stopped early: nothing more to do.
                if sender.send(item).is_err() || failed {
                    return;
                }
            }
        });
        loop {
            let next = match receiver.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::TryRecvError::Disconnected) => None,
                Err(mpsc::TryRecvError::Empty) => {
                    // The receiver goes into the wait and comes back: it is Send, not Sync.
                    let (back, item) = wait.blocking(move || {
                        let item = receiver.recv().ok();
                        (receiver, item)
                    });
                    receiver = back;
                    item
                }
            };
            // Returning drops the receiver, which ends the reader at its next send.
            let Some(item) = next else {
                return Ok(());
            };
            if consume(item?).is_break() {
                return Ok(());
            }
        }
    })
}

/// Calls `f` with each line of `block` (newline not included).
pub fn for_each_line<'b>(block: &'b [u8], mut f: impl FnMut(&'b [u8])) {
    let mut start = 0;
    for newline in memchr_iter(b'\n', block) {
        f(&block[start..newline]);
        start = newline + 1;
    }
    if start < block.len() {
        f(&block[start..]);
    }
}

/// Calls `f(offset, line)` for the lines of `[0, end)` from the last to the first, `line`
/// without its newline, until `f` breaks. The segment after a final newline is the empty line.
pub fn rev_lines(
    file: &File,
    end: u64,
    mut f: impl FnMut(u64, &[u8]) -> ControlFlow<()>,
) -> io::Result<()> {
    // `buf` holds `[buf_start, buf_start + buf.len())`; `buf[..open]` is the part whose lines
    // have not been handed out (its first line may continue further back).
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = end;
    let mut open = 0;
    let mut block = BACKWARD_BLOCK;
    loop {
        let read_start = buf_start.saturating_sub(block as u64);
        let mut fresh = vec![0u8; (buf_start - read_start) as usize];
        let got = read_at_most(file, &mut fresh, read_start)?;
        if got < fresh.len() {
            // The file shrank under us (a concurrent truncation): read what is there now.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while reading",
            ));
        }
        fresh.extend_from_slice(&buf[..open]);
        buf = fresh;
        buf_start = read_start;
        open = buf.len();
        while let Some(newline) = memrchr(b'\n', &buf[..open]) {
            if f(buf_start + newline as u64 + 1, &buf[newline + 1..open]).is_break() {
                return Ok(());
            }
            open = newline;
        }
        if buf_start == 0 {
            let _ = f(0, &buf[..open]);
            return Ok(());
        }
        block = block.saturating_mul(2);
    }
}

/// A line found by [`last_valid`]: `start..end` spans the line and its newline, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

/// The spans of the last `n` valid lines of `[0, len)`, oldest first (fewer if the file has fewer).
pub fn last_valid(file: &File, len: u64, n: usize) -> io::Result<Vec<Span>> {
    let mut found = Vec::new();
    if n == 0 {
        return Ok(found);
    }
    rev_lines(file, len, |start, line| {
        if record::is_valid(line) {
            let stop = start + line.len() as u64;
            found.push(Span {
                start,
                end: if stop < len { stop + 1 } else { stop },
            });
            if found.len() == n {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    found.reverse();
    Ok(found)
}

/// How many valid messages `[0, len)` of the file holds.
pub fn count_valid(file: &File, len: u64) -> io::Result<usize> {
    let mut count = 0;
    let mut reader = Forward::new(file, 0, len);
    while let Some(block) = reader.next_block()? {
        for_each_line(block, |line| count += usize::from(record::is_valid(line)));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile();
        file.write_all(bytes).unwrap();
        file
    }

    fn tempfile() -> File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "turnlog-lines-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    fn forward_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        let file = file_with(bytes);
        let mut reader = Forward::new(&file, 0, bytes.len() as u64);
        let mut lines = Vec::new();
        while let Some(block) = reader.next_block().unwrap() {
            for_each_line(block, |line| lines.push(line.to_vec()));
        }
        lines
    }

    fn backward_lines(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let file = file_with(bytes);
        let mut lines = Vec::new();
        rev_lines(&file, bytes.len() as u64, |offset, line| {
            lines.push((offset, line.to_vec()));
            ControlFlow::Continue(())
        })
        .unwrap();
        lines.reverse();
        lines
    }

    #[test]
    fn forward_and_backward_agree_on_segments() {
        let long = "x".repeat(300_000);
        for text in [
            "",
            "a",
            "a\n",
            "a\nb",
            "a\n\nb\n",
            "\n\n",
            &format!("a\n{long}\nb"),
        ] {
            let bytes = text.as_bytes();
            let expected: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            let back = backward_lines(bytes);
            assert_eq!(
                back.iter().map(|(_, l)| l.as_slice()).collect::<Vec<_>>(),
                expected
            );
            for (offset, line) in &back {
                assert_eq!(
                    &bytes[*offset as usize..*offset as usize + line.len()],
                    &line[..]
                );
            }
            // Forward skips only the empty segment after a final newline.
            let forward = forward_lines(bytes);
            let mut expected_forward = expected.clone();
            if expected_forward.last().is_some_and(|l| l.is_empty()) {
                expected_forward.pop();
            }
            assert_eq!(forward, expected_forward);
        }
    }

    #[test]
    fn last_valid_spans() {
        let bytes =
            b"{\"role\":\"a\",\"content\":\"1\"}\njunk\n{\"role\":\"a\",\"content\":\"2\"}\nbad";
        let file = file_with(bytes);
        let spans = last_valid(&file, bytes.len() as u64, 5).unwrap();
        assert_eq!(
            spans,
            vec![Span { start: 0, end: 27 }, Span { start: 32, end: 59 }]
        );
        let last = last_valid(&file, bytes.len() as u64, 1).unwrap();
        assert_eq!(last, vec![Span { start: 32, end: 59 }]);
    }
}
