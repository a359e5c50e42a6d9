//! The unit tests of `store.rs` (a module of it: they see its private items).

use super::*;
use std::time::{Duration, Instant};

fn store() -> (Store, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "turnlog-store-{}-{}",
        std::process::id(),
        temp_suffix()
    ));
    fs::create_dir_all(&dir).unwrap();
    (Store::new(&dir, false), dir)
}

const A: &[u8] = b"{\"role\":\"user\",\"content\":\"a\"}\n";
const B: &[u8] = b"{\"role\":\"assistant\",\"content\":\"b\"}\n";

#[test]
fn compact_block_matches_line_by_line() {
    let lines: [&[u8]; 6] = [
        A,
        B,
        b"junk\n",
        b"\n",
        b"  {\"role\":\"a\",\"content\":\"b\"}\r\n",
        b"\n\n",
    ];
    // Every sequence of up to four lines, with and without a final torn or valid line.
    let mut cases = vec![Vec::new()];
    for _ in 0..4 {
        let grown: Vec<Vec<u8>> = cases
            .iter()
            .flat_map(|case| {
                lines
                    .iter()
                    .map(move |line| [case.as_slice(), line].concat())
            })
            .collect();
        cases.extend(grown);
    }
    for case in cases {
        for tail in [&b""[..], b"{\"role\":\"a\",\"content\":\"z\"}", b"{\"ro"] {
            let block = [case.as_slice(), tail].concat();
            let mut expected = Vec::new();
            lines::for_each_line(&block, |line| {
                if let Some(text) = record::valid_text(line) {
                    expected.extend_from_slice(text);
                    expected.push(b'\n');
                }
            });
            let mut written = Vec::new();
            compact_block(&block, &mut written).unwrap();
            assert_eq!(written, expected, "{:?}", String::from_utf8_lossy(&block));
        }
    }
}

#[test]
fn append_repairs_a_torn_tail() {
    let (store, dir) = store();
    let path = store.path("s").unwrap();
    fs::write(&path, b"{\"role\":\"user\",\"con").unwrap();
    let appended = store.append("s", A, true).unwrap().unwrap();
    assert!(appended.repaired_torn_tail && !appended.created);
    assert_eq!(
        fs::read(&path).unwrap(),
        [&b"{\"role\":\"user\",\"con\n"[..], A].concat()
    );
    assert_eq!(
        store.append("s", A, true).unwrap(),
        Some(Appended::default())
    );
    assert_eq!(store.append("u", A, false).unwrap(), None);
    assert!(!store.path("u").unwrap().exists());
    let created = store.append("t", A, true).unwrap().unwrap();
    assert!(created.created && !created.repaired_torn_tail);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn remove_last_truncates_or_keeps_trailing_junk() {
    let (store, dir) = store();
    let path = store.path("s").unwrap();
    fs::write(&path, [A, B].concat()).unwrap();
    assert!(store.remove_last("s").unwrap());
    assert_eq!(fs::read(&path).unwrap(), A);
    fs::write(&path, [A, b"junk\n", B, b"  torn"].concat()).unwrap();
    assert!(store.remove_last("s").unwrap());
    assert_eq!(fs::read(&path).unwrap(), [A, b"junk\n", b"  torn"].concat());
    assert!(store.remove_last("s").unwrap());
    assert!(!store.remove_last("s").unwrap());
    assert_eq!(fs::read(&path).unwrap(), b"junk\n  torn");
    assert!(!store.remove_last("missing").unwrap());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bounded_wait_for_a_held_lock_times_out() {
    let (store, dir) = store();
    let store = store.waiting(Some(Duration::from_millis(50)));
    let path = store.path("s").unwrap();
    fs::write(&path, A).unwrap();
    let holder = File::open(&path).unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let Err(Error::Io(error, _)) = store.remove_last("s") else {
        panic!("a held lock must time out");
    };
    assert_eq!(error.raw_os_error(), Some(libc::ETIMEDOUT));
    assert!(started.elapsed() >= Duration::from_millis(50));
    let read = File::open(&path).unwrap();
    let waited = snapshot(&read, Some(Duration::from_millis(20)));
    assert_eq!(
        waited.err().and_then(|e| e.raw_os_error()),
        Some(libc::ETIMEDOUT)
    );
    holder.unlock().unwrap();
    assert!(store.remove_last("s").unwrap());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pop_last_returns_the_line_it_removes() {
    let (store, dir) = store();
    let path = store.path("s").unwrap();
    fs::write(&path, [A, b"junk\n", B, b"  torn"].concat()).unwrap();
    assert_eq!(store.pop_last("s").unwrap().unwrap(), &B[..B.len() - 1]);
    assert_eq!(fs::read(&path).unwrap(), [A, b"junk\n", b"  torn"].concat());
    // A last line without its newline comes back whole too.
    fs::write(&path, [A, &B[..B.len() - 1]].concat()).unwrap();
    assert_eq!(store.pop_last("s").unwrap().unwrap(), &B[..B.len() - 1]);
    assert_eq!(store.pop_last("s").unwrap().unwrap(), &A[..A.len() - 1]);
    assert_eq!(store.pop_last("s").unwrap(), None);
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(store.pop_last("missing").unwrap(), None);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn update_compact_clear_delete() {
    let (store, dir) = store();
    let path = store.path("a/b").unwrap();
    assert!(!store.update_last("a/b", B).unwrap());
    assert!(!path.exists());
    store
        .append("a/b", &[A, b" junk\n", A].concat(), true)
        .unwrap();
    assert!(store.update_last("a/b", B).unwrap());
    assert_eq!(fs::read(&path).unwrap(), [A, b" junk\n", B].concat());
    fs::write(&path, [b"  ", A, b"\n", B, b"x"].concat()).unwrap();
    store.compact("a/b").unwrap();
    assert_eq!(fs::read(&path).unwrap(), [A, B].concat());
    assert_eq!(store.list().unwrap(), vec!["a/b".to_string()]);
    assert_eq!(store.stat("a/b").unwrap().map(|s| s.0), Some(2));
    assert_eq!(store.clear("a/b").unwrap(), 2);
    assert!(store.exists("a/b").unwrap());
    assert!(store.delete("a/b").unwrap());
    assert!(!store.delete("a/b").unwrap());
    assert!(!store.exists("a/b").unwrap());
    fs::remove_dir_all(dir).unwrap();
}
