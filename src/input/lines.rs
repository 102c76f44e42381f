//! Line numbers for the report: the csv parser's own count is off on CRLF
//! files and blank lines, so the reader counts the line breaks it hands the
//! parser and works each record's first line out from them. The same pass
//! keeps the header line's bytes as they are in the file.

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
    /// Every byte read, kept from the start until the header is parsed.
    head: Option<Vec<u8>>,
}

impl LineIndex {
    /// An index that keeps the bytes read until [`LineIndex::header_line`].
    pub(super) fn keeping_the_header() -> LineIndex {
        LineIndex {
            head: Some(Vec::new()),
            ..LineIndex::default()
        }
    }

    /// The header line, once the parser has passed it at byte `end`; the
    /// bytes kept for it are let go.
    pub(super) fn header_line(&mut self, end: u64) -> HeaderLine {
        HeaderLine::new(&self.head.take().unwrap_or_default(), end)
    }

    pub(super) fn note(&mut self, chunk: &[u8]) {
        if let Some(head) = &mut self.head {
            head.extend_from_slice(chunk);
        }
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

/// The input's header line as it is in the file, so that files of input
/// rows read back exactly as the input does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderLine {
    /// The line's bytes, a byte-order mark included, without its line break.
    pub(crate) bytes: Vec<u8>,
    /// Whether the line ends with `\r\n` rather than `\n`.
    pub(crate) crlf: bool,
}

impl HeaderLine {
    /// The line in `head`, the first bytes of the file, which the parser
    /// left at byte `end`: just past the line break, or between the `\r`
    /// and the `\n` of a CRLF.
    fn new(head: &[u8], end: u64) -> HeaderLine {
        let end = usize::try_from(end).map_or(head.len(), |end| end.min(head.len()));
        let mut bytes = &head[..end];
        let crlf =
            bytes.ends_with(b"\r\n") || (bytes.ends_with(b"\r") && head.get(end) == Some(&b'\n'));
        if let Some(line) = bytes.strip_suffix(b"\n") {
            bytes = line;
        }
        if let Some(line) = bytes.strip_suffix(b"\r") {
            bytes = line;
        }
        HeaderLine {
            bytes: bytes.to_vec(),
            crlf,
        }
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
