//! [`Framing`]: finds where each row and cell of the CSV ends, the way the
//! parser will, before the parser sees the bytes. That bounds what one row
//! may cost, and catches a stray quote before it swallows the rest of the
//! file.
//!
//! A quote that opens a cell and runs past the end of its line is held back,
//! with everything after it, until its row ends. If the row then looks sound
//! (every quote closed before a comma or a line end, as many cells as the
//! header) it is passed on unchanged. Otherwise the quote is taken for a stray
//! one: it stays in its cell as a literal `"`, the cell is closed at the end
//! of the quote's line, and the lines after it are read again as rows of their
//! own. The reader reports that row invalid, so every line of the input still
//! ends up in a row of its own.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use memchr::memchr3;

use super::lines::LineIndex;
use super::{Fault, Limits, StraySign};

/// A stray quote that was closed at the end of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Repair {
    /// Where the quote is in the bytes handed to the parser.
    pub(super) at: u64,
    /// The line the quote is on.
    pub(super) line: u64,
    /// What gave it away.
    pub(super) sign: StraySign,
}

/// Where the scan is, as the csv parser's own states name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between rows, where a line break is a blank line.
    StartRecord,
    StartField,
    InField,
    InQuoted,
    /// Just after a quote inside a quoted cell: `""` or the closing quote.
    QuoteInQuoted,
}

/// The row being scanned.
#[derive(Debug, Default, Clone, Copy)]
struct Row {
    line: u64,
    cells: usize,
    len: usize,
    cell_len: usize,
}

/// Bytes held back from a quote that opened a cell.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// The quote's line.
    line: u64,
    /// Where in the held bytes the first line break inside the quote is.
    /// Once there is one, the rest of the row is held too.
    break_at: Option<usize>,
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes asked of the underlying reader at a time.
const CHUNK: usize = 64 << 10;

/// A reader between the input and the csv parser; see the module's comment.
pub(super) struct Framing {
    inner: Box<dyn Read + Send>,
    limits: Limits,
    /// The cell separator.
    delimiter: u8,
    index: Arc<Mutex<LineIndex>>,
    /// Bytes read: `input[at..end]` are not scanned yet, and
    /// `input[copied..at]` are scanned but not yet copied to `out` or `held`
    /// (copying whole runs at once keeps the common path cheap).
    input: Vec<u8>,
    copied: usize,
    at: usize,
    end: usize,
    /// Bytes scanned: `out[out_at..]` are not handed on yet.
    out: Vec<u8>,
    out_at: usize,
    /// Bytes ever put into `out`.
    emitted: u64,
    held: Vec<u8>,
    hold: Option<Hold>,
    state: State,
    /// The line of the next byte to scan.
    line: u64,
    after_cr: bool,
    row: Row,
    /// The line the open quote is on.
    quote_line: u64,
    /// Cells in the header, once it is scanned.
    columns: Option<usize>,
    started: bool,
    eof: bool,
    done: bool,
    fault: Option<Fault>,
}

impl Framing {
    /// Frames `inner`, whose cells `delimiter` separates; the bytes handed
    /// on, and every stray quote closed, are noted in `index`.
    pub(super) fn new(
        inner: Box<dyn Read + Send>,
        limits: Limits,
        delimiter: u8,
        index: Arc<Mutex<LineIndex>>,
    ) -> Framing {
        Framing {
            inner,
            limits,
            delimiter,
            index,
            input: Vec::new(),
            copied: 0,
            at: 0,
            end: 0,
            out: Vec::new(),
            out_at: 0,
            emitted: 0,
            held: Vec::new(),
            hold: None,
            state: State::StartRecord,
            line: 1,
            after_cr: false,
            row: Row::default(),
            quote_line: 0,
            columns: None,
            started: false,
            eof: false,
            done: false,
            fault: None,
        }
    }

    /// Reads from the underlying reader, or ends the input; then scans.
    fn fill(&mut self) -> io::Result<()> {
        if self.at >= self.end {
            if self.eof {
                self.finish();
                return Ok(());
            }
            self.read_chunk()?;
            if !self.started {
                self.started = true;
                self.pass_bom();
            }
        }
        self.scan();
        Ok(())
    }

    /// Reads the next chunk; the first is at least three bytes long unless
    /// the input is shorter, so a byte-order mark arrives whole.
    fn read_chunk(&mut self) -> io::Result<()> {
        (self.copied, self.at, self.end) = (0, 0, 0);
        if self.input.len() < CHUNK {
            self.input.resize(CHUNK, 0);
        }
        while !self.eof && (self.end == 0 || (!self.started && self.end < 3)) {
            match self.inner.read(&mut self.input[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A byte-order mark is no part of any cell: it is noted for the header
    /// line and kept from the parser (which would take a mark alone in its
    /// first read for the end of the input).
    fn pass_bom(&mut self) {
        if self.input[..self.end].starts_with(BOM) {
            (self.copied, self.at) = (BOM.len(), BOM.len());
            self.index
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .began_with_bom();
        }
    }

    /// Scans the bytes read, until they run out or a fault stops the scan.
    fn scan(&mut self) {
        while self.at < self.end && self.fault.is_none() {
            let rest = &self.input[self.at..self.end];
            let run = match self.state {
                State::InField => memchr3(self.delimiter, b'\r', b'\n', rest),
                State::InQuoted => memchr3(b'"', b'\r', b'\n', rest),
                _ => Some(0),
            }
            .unwrap_or(rest.len());
            if run > 0 {
                self.at += run;
                self.after_cr = false;
                self.grow(run);
            } else {
                let b = rest[0];
                self.at += 1;
                self.step(b);
            }
        }
        self.copy_to(self.at);
    }

    /// Moves one byte through the states.
    fn step(&mut self, b: u8) {
        match self.state {
            State::StartRecord if is_break(b) => self.count_line(b),
            State::StartRecord => {
                self.row = Row {
                    line: self.line,
                    cells: 1,
                    ..Row::default()
                };
                self.field_start(b);
            }
            State::StartField => self.field_start(b),
            State::InField => self.unquoted(b),
            State::InQuoted => {
                if b == b'"' {
                    self.state = State::QuoteInQuoted;
                } else if self.hold.is_some_and(|h| h.break_at.is_none()) {
                    // A line break (the scan stops inside quotes only at a
                    // quote or a line break): the first in the held quote.
                    self.copy_to(self.at - 1);
                    let at = self.held.len();
                    self.hold = self.hold.map(|h| Hold {
                        break_at: Some(at),
                        ..h
                    });
                }
                self.count_line(b);
                self.grow(1);
            }
            State::QuoteInQuoted => self.after_quote(b),
        }
    }

    /// The first byte of a cell: a quote opens a quoted cell.
    fn field_start(&mut self, b: u8) {
        if b != b'"' {
            return self.unquoted(b);
        }
        self.quote_line = self.line;
        if self.hold.is_none() {
            // Held from the quote on; what comes before it is ready.
            self.copy_to(self.at - 1);
            self.hold = Some(Hold {
                line: self.line,
                break_at: None,
            });
        }
        self.state = State::InQuoted;
        self.grow(1);
    }

    /// A byte outside quotes: the separator ends the cell, a line break the
    /// row.
    fn unquoted(&mut self, b: u8) {
        match b {
            b if b == self.delimiter => {
                self.state = State::StartField;
                self.row.cells += 1;
                self.row.cell_len = 0;
                self.grow(1);
            }
            b'\r' | b'\n' => {
                self.count_line(b);
                self.end_row();
            }
            _ => {
                self.state = State::InField;
                self.grow(1);
            }
        }
    }

    /// The byte after a quote inside a quoted cell: another quote makes
    /// `""`, the separator or a line break ends the cell; anything else follows a
    /// closing quote, which the parser allows but which, after a line break,
    /// shows the quote for a stray one.
    fn after_quote(&mut self, b: u8) {
        match b {
            b'"' => {
                self.state = State::InQuoted;
                self.grow(1);
            }
            b if b == self.delimiter || is_break(b) => {
                self.quote_closed();
                self.unquoted(b);
            }
            _ if self.line > self.quote_line => {
                self.repair(StraySign::ClosedWithText { line: self.line });
            }
            _ => {
                self.quote_closed();
                self.state = State::InField;
                self.grow(1);
            }
        }
    }

    /// A quote closed: if it never left its line, nothing needs holding.
    fn quote_closed(&mut self) {
        if self.hold.is_some_and(|h| h.break_at.is_none()) {
            self.release();
        }
    }

    /// The row ended: a held row passes if it has the header's cells.
    fn end_row(&mut self) {
        self.state = State::StartRecord;
        if self.hold.is_some() {
            match self.columns {
                Some(columns) if self.row.cells != columns => {
                    let cells = self.row.cells;
                    return self.repair(StraySign::Cells { cells, columns });
                }
                _ => self.release(),
            }
        }
        self.columns.get_or_insert(self.row.cells);
    }

    /// The input ended.
    fn finish(&mut self) {
        match self.state {
            State::StartRecord => self.done = self.held.is_empty(),
            State::InQuoted => self.repair(StraySign::NeverClosed),
            State::StartField | State::InField | State::QuoteInQuoted => {
                self.quote_closed();
                self.end_row();
            }
        }
    }

    /// Adds `n` bytes to the row and its cell, and stops at a limit.
    fn grow(&mut self, n: usize) {
        self.row.len += n;
        self.row.cell_len += n;
        let header = self.columns.is_none();
        let row_limit = if header {
            self.limits.header
        } else {
            self.limits.row
        };
        let over_row = self.row.len > row_limit;
        if !over_row && self.row.cell_len <= self.limits.cell {
            return;
        }
        let limit = if over_row {
            row_limit
        } else {
            self.limits.cell
        };
        if self.hold.is_some_and(|h| h.break_at.is_some()) {
            return self.repair(StraySign::TooLong { limit });
        }
        let line = self.row.line;
        self.fault = Some(if header {
            Fault::Header { line, limit }
        } else if over_row {
            Fault::Row { line, limit }
        } else {
            Fault::Cell {
                line: self.line,
                limit,
            }
        });
    }

    /// Takes the held quote for a stray one: it stays in its cell as a
    /// literal quote (`"` becomes `"""`), the cell is closed at the end of
    /// the quote's line, and the bytes after that line are scanned again.
    fn repair(&mut self, sign: StraySign) {
        self.copy_to(self.at);
        let Some(hold) = self.hold.take() else {
            return;
        };
        let held = std::mem::take(&mut self.held);
        if self.columns.is_none() {
            self.fault = Some(Fault::HeaderQuote {
                line: hold.line,
                sign,
            });
            return;
        }
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .repaired(Repair {
                at: self.emitted,
                line: hold.line,
                sign,
            });
        let end = hold.break_at.unwrap_or(held.len());
        for part in [&held[..1], b"\"\"", &held[1..end], b"\""] {
            self.push(part);
        }
        self.state = State::StartRecord;
        if let Some(at) = hold.break_at {
            let crlf = held[at] == b'\r' && held.get(at + 1) == Some(&b'\n');
            let after = at + 1 + usize::from(crlf);
            self.push(&held[at..after]);
            let mut rest = held[after..].to_vec();
            rest.extend_from_slice(&self.input[self.at..self.end]);
            (self.copied, self.at, self.end) = (0, 0, rest.len());
            self.input = rest;
            self.line = hold.line + 1;
            self.after_cr = held[after - 1] == b'\r';
        }
    }

    /// Hands on the bytes held back.
    fn release(&mut self) {
        self.copy_to(self.at);
        self.hold = None;
        self.out.extend_from_slice(&self.held);
        self.emitted += self.held.len() as u64;
        self.held.clear();
    }

    /// Scanned bytes: held back while a quote is held, else ready.
    fn push(&mut self, bytes: &[u8]) {
        if self.hold.is_some() {
            self.held.extend_from_slice(bytes);
        } else {
            self.out.extend_from_slice(bytes);
            self.emitted += bytes.len() as u64;
        }
    }

    /// Copies the bytes scanned up to `input[to]` to where they go.
    fn copy_to(&mut self, to: usize) {
        if self.copied < to {
            let input = std::mem::take(&mut self.input);
            self.push(&input[self.copied..to]);
            self.input = input;
            self.copied = to;
        }
    }

    /// Counts a line break: `\n`, `\r\n` or a lone `\r` each end one line.
    fn count_line(&mut self, b: u8) {
        if b == b'\r' || (b == b'\n' && !self.after_cr) {
            self.line += 1;
        }
        self.after_cr = b == b'\r';
    }
}

fn is_break(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

impl Read for Framing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_at < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_at);
                buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
                self.out_at += n;
                if self.out_at == self.out.len() {
                    self.out.clear();
                    self.out_at = 0;
                }
                self.index
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .note(&buf[..n]);
                return Ok(n);
            }
            if let Some(fault) = &self.fault {
                return Err(io::Error::new(io::ErrorKind::InvalidData, fault.clone()));
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            self.fill()?;
        }
    }
}
