//! Line numbers for the report: the csv parser's own count is off on CRLF
//! files and blank lines, so the reader counts the line breaks handed to the
//! parser and works each record's first line out from them. The same record
//! keeps the header line's bytes as they are in the file, and the stray
//! quotes [`Framing`](super::framing::Framing) closed.

use std::collections::VecDeque;

use super::framing::Repair;
use super::Encoding;

/// Line breaks in a byte string: `\n`, `\r\n` or a lone `\r` each count once.
pub(super) fn count_breaks(bytes: &[u8]) -> u64 {
    count_breaks_after(bytes, false)
}

/// [`count_breaks`] in bytes that follow a `\r` when `after_cr`, so that a
/// `\n` first among them ends no line of its own.
pub(super) fn count_breaks_after(bytes: &[u8], after_cr: bool) -> u64 {
    let mut n = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        let cr_before = match i {
            0 => after_cr,
            _ => bytes[i - 1] == b'\r',
        };
        if bytes[i] == b'\r' || !cr_before {
            n += 1;
        }
    }
    n
}

/// Offsets of the `\r` and `\n` bytes handed to the parser but not yet
/// passed by a record it returned, and the number of line breaks already
/// passed. The parser asks for more bytes only once it has used up those it
/// has, so this holds one buffer's breaks at most.
#[derive(Debug, Default)]
pub(super) struct LineIndex {
    pending: VecDeque<(u64, u8)>,
    passed: u64,
    offset: u64,
    /// Every byte read, kept from the start until the header is parsed.
    head: Option<Vec<u8>>,
    /// Whether the file begins with a byte-order mark, which the parser
    /// never sees.
    bom: bool,
    /// Stray quotes closed in bytes not yet passed.
    repairs: VecDeque<Repair>,
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
        let mut line = HeaderLine::new(&self.head.take().unwrap_or_default(), end);
        if self.bom {
            line.bytes.splice(0..0, "\u{feff}".bytes());
        }
        line
    }

    /// Notes that the file begins with a byte-order mark.
    pub(super) fn began_with_bom(&mut self) {
        self.bom = true;
    }

    /// Notes bytes handed to the parser.
    pub(super) fn note(&mut self, chunk: &[u8]) {
        // The parser has used up every byte handed to it before, and taken
        // every record that ends in them: a record it returns from now on
        // ends in the new bytes, so the breaks before them can be counted
        // (all but a last `\r`, whose `\n` may come next).
        let settled = match self.pending.back() {
            Some(&(at, b'\r')) if at + 1 == self.offset => at,
            _ => self.offset,
        };
        self.breaks_before(settled);
        if let Some(head) = &mut self.head {
            head.extend_from_slice(chunk);
        }
        for i in memchr::memchr2_iter(b'\n', b'\r', chunk) {
            self.pending.push_back((self.offset + i as u64, chunk[i]));
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

impl LineIndex {
    /// Line breaks noted and not yet counted.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Notes a stray quote closed at byte `repair.at`.
    pub(super) fn repaired(&mut self, repair: Repair) {
        self.repairs.push_back(repair);
    }

    /// The stray quote closed in the record that ends at byte `end`, if any;
    /// offsets must not go backwards.
    pub(super) fn repair_before(&mut self, end: u64) -> Option<Repair> {
        let mut found = None;
        while self.repairs.front().is_some_and(|r| r.at < end) {
            found = self.repairs.pop_front();
        }
        found
    }
}

/// The input's header line as it is in the file, and how the file is
/// written, so that files of input rows read back exactly as the input does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderLine {
    /// The line's text as UTF-8, a byte-order mark (U+FEFF) included,
    /// without its line break; [`Encoding::encode`] gives back its bytes.
    pub(crate) bytes: Vec<u8>,
    /// Whether the line ends with `\r\n` rather than `\n`.
    pub(crate) crlf: bool,
    /// The file's encoding.
    pub(crate) encoding: Encoding,
    /// The cell separator.
    pub(crate) delimiter: u8,
}

impl Default for HeaderLine {
    fn default() -> Self {
        HeaderLine {
            bytes: Vec::new(),
            crlf: false,
            encoding: Encoding::Utf8,
            delimiter: b',',
        }
    }
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
            ..HeaderLine::default()
        }
    }
}
