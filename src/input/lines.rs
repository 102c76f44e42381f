//! Line numbers for the report: the csv parser's own count is off on CRLF
//! files and blank lines, so the reader counts the line breaks it hands the
//! parser and works each record's first line out from them.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};

/// Line breaks in a byte string: `\n`, `\r\n` or a lone `\r` each count once.
pub(super) fn count_breaks(bytes: &[u8]) -> u64 {
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            n += 1;
        }
    }
    n
}

/// Offsets of the `\r` and `\n` bytes read but not yet passed by the parser,
/// and the number of line breaks already passed. The parser is never more than
/// one buffer behind the reader, so this stays small.
#[derive(Debug, Default)]
pub(super) struct LineIndex {
    pending: VecDeque<(u64, u8)>,
    passed: u64,
    offset: u64,
}

impl LineIndex {
    pub(super) fn note(&mut self, chunk: &[u8]) {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                self.pending.push_back((self.offset + i as u64, b));
            }
        }
        self.offset += chunk.len() as u64;
    }

    /// Line breaks wholly before byte `offset`; offsets must not go backwards.
    pub(super) fn breaks_before(&mut self, offset: u64) -> u64 {
        while let Some(&(at, b)) = self.pending.front() {
            if at >= offset {
                break;
            }
            self.pending.pop_front();
            // A `\r\n` pair is one break, counted at its `\n`; the `\n` is
            // already buffered whenever the parser has moved past the `\r`.
            let crlf = b == b'\r' && self.pending.front() == Some(&(at + 1, b'\n'));
            if !crlf {
                self.passed += 1;
            }
        }
        self.passed
    }
}

/// A reader that notes every line break it passes on into `index`.
pub(super) struct LineCounting {
    pub(super) inner: Box<dyn Read + Send>,
    pub(super) index: Arc<Mutex<LineIndex>>,
}

impl Read for LineCounting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .note(&buf[..n]);
        Ok(n)
    }
}
