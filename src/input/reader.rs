//! [`LeadReader`]: streams the input CSV and gives each row its verdict
//! (valid, invalid with the reason, or a duplicate of an earlier row) and its
//! line number.

use std::collections::hash_map::{Entry, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::encoding::Decode;
use super::framing::{Framing, Repair};
use super::guid::{hyphenated, parse_guid, GuidHashBuilder};
use super::lines::{count_breaks, HeaderLine, LineIndex};
use super::{
    column_index, lead_columns, Fault, InputError, InputOptions, InputRow, Invalid, LeadColumn,
    RowKind, TextEncoding,
};

/// Streams the rows of an input CSV.
///
/// Memory stays constant apart from the de-duplication set, which holds two
/// 128-bit ids and a line number per valid row rather than the strings.
pub(crate) struct LeadReader {
    source: String,
    reader: csv::Reader<Box<dyn Read + Send>>,
    headers: Vec<String>,
    header_line: HeaderLine,
    lead_column: LeadColumn,
    lead_idx: usize,
    portal_idx: Option<usize>,
    default_portal: Option<(String, u128)>,
    sightings: Sightings,
    keep_cells: bool,
    keep_raw: bool,
    record: csv::ByteRecord,
    lines: Arc<Mutex<LineIndex>>,
    done: bool,
}

impl std::fmt::Debug for LeadReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadReader")
            .field("source", &self.source)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Opens the input at `path` for reading; a directory is refused by name.
pub(crate) fn open_input(path: &Path) -> Result<File, InputError> {
    let name = || path.display().to_string();
    let file = File::open(path).map_err(|cause| InputError::Open {
        path: name(),
        cause,
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(InputError::Directory { path: name() });
    }
    Ok(file)
}

impl LeadReader {
    /// Opens the CSV file at `path` and reads its header.
    #[cfg(test)]
    pub(crate) fn open(path: &Path, opts: InputOptions) -> Result<LeadReader, InputError> {
        let file = open_input(path)?;
        LeadReader::from_reader(Box::new(file), path.display().to_string(), opts)
    }

    /// Reads CSV from any reader; `source` names it in messages.
    pub(crate) fn from_reader(
        reader: Box<dyn Read + Send>,
        source: String,
        opts: InputOptions,
    ) -> Result<LeadReader, InputError> {
        let default_portal = match opts.default_portal.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => match parse_guid(raw) {
                Some(u) => Some((hyphenated(u), u.as_u128())),
                None => {
                    return Err(InputError::DefaultPortal {
                        value: raw.to_owned(),
                    })
                }
            },
        };
        let mut decode = Decode::new(reader, opts.encoding);
        let first_line = first_line(&mut decode, opts.limits.header)
            .map_err(|e| read_error(source.clone(), 1, csv::Error::from(e)))?;
        let encoding = decode.encoding();
        let delimiter = opts
            .delimiter
            .unwrap_or_else(|| sniff_delimiter(&first_line));
        let text: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(first_line).chain(decode));
        let lines = Arc::new(Mutex::new(LineIndex::keeping_the_header()));
        let framed: Box<dyn Read + Send> = Box::new(Framing::new(
            text,
            opts.limits,
            delimiter,
            Arc::clone(&lines),
        ));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(framed);
        let raw_headers = match reader.byte_headers() {
            Ok(h) => h.clone(),
            Err(err) => {
                let line = err.position().map_or(1, |p| p.line());
                return Err(read_error(source, line, err));
            }
        };
        let header_line = HeaderLine {
            encoding,
            delimiter,
            ..lines
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .header_line(reader.position().byte())
        };
        let headers = header_names(&raw_headers);
        if headers.iter().all(String::is_empty) {
            return Err(InputError::NoHeader { path: source });
        }
        let names = same_names(&headers);
        if !names.is_empty() {
            return Err(InputError::SameName {
                path: source,
                names,
            });
        }
        let (lead_idx, lead_column) = lead_column(&headers, opts.lead_column.as_deref(), &source)?;
        let portal_idx = column_index(&headers, &opts.portal_column);
        Ok(LeadReader {
            source,
            reader,
            headers,
            header_line,
            lead_column,
            lead_idx,
            portal_idx,
            default_portal,
            sightings: Sightings::with_capacity(opts.expected_rows),
            keep_cells: opts.keep_cells,
            keep_raw: opts.keep_raw,
            record: csv::ByteRecord::new(),
            lines,
            done: false,
        })
    }

    /// Header names, trimmed, with any byte-order mark removed.
    pub(crate) fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Whether the header has the PortalId column.
    pub(crate) fn has_portal_column(&self) -> bool {
        self.portal_idx.is_some()
    }

    /// The header line as it is in the file, and how the file is written.
    pub(crate) fn header_line(&self) -> &HeaderLine {
        &self.header_line
    }

    /// The column the LeadIds are read from.
    pub(crate) fn lead_column(&self) -> &LeadColumn {
        &self.lead_column
    }

    /// The line the current record starts on, and the stray quote closed
    /// in it, if any.
    ///
    /// `csv::Position::line()` of a record is taken before blank lines are
    /// skipped and, in CRLF files, before the previous row's `\n` is consumed,
    /// so it is one short on every row of a Windows export. Instead, count the
    /// line breaks before the record's last byte and subtract the breaks inside
    /// its quoted cells.
    fn record_place(&self) -> (u64, Option<Repair>) {
        let end = self.reader.position().byte();
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let end_line = 1 + lines.breaks_before(end.saturating_sub(1));
        let repair = lines.repair_before(end);
        drop(lines);
        let inside: u64 = self.record.iter().map(count_breaks).sum();
        (end_line.saturating_sub(inside), repair)
    }

    /// The current record as a row: its ids, its cells and its verdict.
    fn classify(&mut self) -> InputRow {
        let (line, repair) = self.record_place();
        let record = &self.record;
        let text = |idx: Option<usize>| {
            idx.and_then(|i| record.get(i))
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        };
        let (lead_cell, portal_cell) = (text(Some(self.lead_idx)), text(self.portal_idx));
        let (lead_raw, portal_raw) = (lead_cell.trim(), portal_cell.trim());
        let lead = parse_guid(lead_raw);
        let portal = self.portal(portal_raw);
        let stray = repair.map(|r| Invalid::StrayQuote {
            line: r.line,
            sign: r.sign,
        });
        let kind = match stray
            .or_else(|| self.fault(lead_raw, lead.is_some(), portal_raw, portal.is_ok()))
        {
            Some(reason) => RowKind::Invalid(reason),
            None => self.sightings.sight(
                lead.map_or(0, |u| u.as_u128()),
                portal.ok().flatten().unwrap_or(0),
                line,
            ),
        };
        InputRow {
            line,
            lead_id: lead.map_or_else(|| lead_raw.to_owned(), hyphenated),
            portal_id: self.portal_text(portal, portal_raw),
            fields: self.kept_cells(),
            raw: self.keep_raw.then(|| self.record.clone()),
            kind,
        }
    }

    /// The row's portal: its own cell when filled (`Err` when that is not a
    /// GUID), else the default portal, if there is one. Only the value: the
    /// text is built once per row, by [`LeadReader::portal_text`].
    fn portal(&self, cell: &str) -> Result<Option<u128>, ()> {
        if cell.is_empty() {
            Ok(self.default_portal.as_ref().map(|(_, u)| *u))
        } else {
            parse_guid(cell).map(|u| Some(u.as_u128())).ok_or(())
        }
    }

    /// The portal as the report shows it: normalised when it is a GUID, the
    /// cell as written when not.
    fn portal_text(&self, portal: Result<Option<u128>, ()>, cell: &str) -> Option<String> {
        match portal {
            Ok(None) => None,
            Ok(Some(_)) if cell.is_empty() => self.default_portal.as_ref().map(|(s, _)| s.clone()),
            Ok(Some(u)) => Some(hyphenated(uuid::Uuid::from_u128(u))),
            Err(()) => Some(cell.to_owned()),
        }
    }

    /// Why the current record cannot be processed, or `None` when it can.
    fn fault(
        &self,
        lead_cell: &str,
        lead_ok: bool,
        portal_cell: &str,
        portal_ok: bool,
    ) -> Option<Invalid> {
        // Ragged rows come first: once cells are shifted, any other verdict
        // would be about the wrong column.
        let cells = self.record.len();
        let lead_name = || self.headers[self.lead_idx].clone();
        if cells != self.headers.len() {
            Some(Invalid::Ragged {
                cells,
                columns: self.headers.len(),
            })
        } else if lead_cell.is_empty() {
            Some(Invalid::Empty {
                column: lead_name(),
            })
        } else if !lead_ok {
            Some(Invalid::NotGuid {
                column: lead_name(),
                value: lead_cell.to_owned(),
            })
        } else if !portal_ok {
            let name = self.portal_idx.map_or("PortalId", |i| &self.headers[i]);
            Some(Invalid::NotGuid {
                column: name.to_owned(),
                value: portal_cell.to_owned(),
            })
        } else {
            None
        }
    }

    /// The record's cells, trimmed; none when the caller asked not to keep
    /// them (a plan without email needs only the ids, and skipping the cells
    /// saves a string per cell on every row).
    fn kept_cells(&self) -> Vec<String> {
        if !self.keep_cells {
            return Vec::new();
        }
        self.record
            .iter()
            .map(|c| String::from_utf8_lossy(c).trim().to_owned())
            .collect()
    }
}

/// The (lead, portal) of every valid row so far, with its line: the lead's 16
/// bytes and the portal's number, 24 bytes an entry, so a million leads take
/// about 50 MB.
#[derive(Debug)]
struct Sightings {
    seen: HashMap<([u8; 16], u32), u32, GuidHashBuilder>,
    /// Every portal seen, numbered; "no portal" is the nil GUID.
    portals: HashMap<u128, u32>,
}

impl Sightings {
    /// Room for `rows` leads up front, so a large file never holds two copies
    /// of the set while it grows.
    fn with_capacity(rows: usize) -> Sightings {
        Sightings {
            seen: HashMap::with_capacity_and_hasher(rows, GuidHashBuilder::new()),
            portals: HashMap::new(),
        }
    }

    /// [`RowKind::Valid`] for the first row with this lead and portal, a
    /// duplicate of that row for every later one.
    fn sight(&mut self, lead: u128, portal: u128, line: u64) -> RowKind {
        let next = self.portals.len() as u32;
        let portal = *self.portals.entry(portal).or_insert(next);
        match self.seen.entry((lead.to_le_bytes(), portal)) {
            Entry::Vacant(slot) => {
                // Past four billion lines the first line is reported as the
                // last one a u32 holds; the verdict stays right.
                slot.insert(u32::try_from(line).unwrap_or(u32::MAX));
                RowKind::Valid
            }
            Entry::Occupied(first) => RowKind::Duplicate {
                first_line: u64::from(*first.get()),
            },
        }
    }
}

impl Iterator for LeadReader {
    type Item = Result<InputRow, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                // A line of only spaces parses as one empty-looking cell; it is
                // as blank as an empty line, which the csv crate already skips.
                Ok(true) if self.record.len() == 1 && self.record[0].trim_ascii().is_empty() => {
                    continue
                }
                Ok(true) => return Some(Ok(self.classify())),
                Err(err) => {
                    // The reader cannot resume after an I/O fault, so stop here
                    // rather than spin on the same error.
                    self.done = true;
                    let read_to = self.reader.position().byte();
                    let line = 1 + self
                        .lines
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .breaks_before(read_to);
                    return Some(Err(read_error(self.source.clone(), line, err)));
                }
            }
        }
    }
}

/// The column the LeadIds are in, as `--lead-column` names it (`named`) or,
/// when it names none, the one column whose name the LeadId column goes by.
fn lead_column(
    headers: &[String],
    named: Option<&str>,
    source: &str,
) -> Result<(usize, LeadColumn), InputError> {
    let found = match named {
        Some(name) => column_index(headers, name).map(|i| (i, false)),
        None => match lead_columns(headers).as_slice() {
            [] => None,
            [one] => Some((*one, true)),
            many => {
                return Err(InputError::LeadColumns {
                    path: source.to_owned(),
                    columns: many.iter().map(|&i| (headers[i].clone(), i + 1)).collect(),
                })
            }
        },
    };
    match found {
        Some((i, found)) => Ok((
            i,
            LeadColumn {
                name: headers[i].clone(),
                found,
            },
        )),
        None => Err(InputError::MissingColumn {
            path: source.to_owned(),
            column: named.map(|n| n.trim().to_owned()),
            found: headers.iter().filter(|h| !h.is_empty()).cloned().collect(),
        }),
    }
}

/// The text up to and with the first line break (or `limit` bytes past it,
/// or the whole text when shorter), read ahead to find the separator.
fn first_line(text: &mut impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    while line.len() <= limit && !line.iter().any(|&b| b == b'\n' || b == b'\r') {
        match text.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(line)
}

/// The separator the header line uses most, outside quotes, of `,` `;` tab
/// and `|`; a comma when it uses none (a header of one column) or on a tie.
fn sniff_delimiter(text: &[u8]) -> u8 {
    const CANDIDATES: [u8; 4] = [b',', b';', b'\t', b'|'];
    let mut counts = [0usize; 4];
    let mut quoted = false;
    for &b in text {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = CANDIDATES.iter().position(|&c| c == b) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let best = (0..4).rev().max_by_key(|&i| counts[i]).unwrap_or(0);
    CANDIDATES[best]
}

/// A read that failed: on a fault the framing found, that fault (it names
/// its line), else the parser's error at `line`.
fn read_error(path: String, line: u64, err: csv::Error) -> InputError {
    let fault = match err.kind() {
        csv::ErrorKind::Io(io) => fault_of(io),
        _ => None,
    };
    match fault {
        Some(fault) => InputError::Framing { path, fault },
        None => InputError::Read {
            path,
            line,
            cause: err,
        },
    }
}

/// The fault a reader found, when an I/O error is one.
fn fault_of(error: &std::io::Error) -> Option<Fault> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Fault>())
        .cloned()
}

/// Reads a regular file (`file`, a copy of the one the reader reads) to
/// its end in its encoding before any row is read, so that a line deep in the file that is not in it stops the run
/// before its first call rather than half-way. The file's own position is
/// left alone; a pipe or a device, which cannot be read twice, is checked
/// as it is read. A read error, and a line longer than a row may be (a
/// binary, a sparse file of zeros), are left for the reader to meet where
/// it stops, without this reading any further.
pub(crate) fn check_text(
    file: File,
    path: &Path,
    asked: Option<TextEncoding>,
    limits: super::Limits,
) -> Result<(), InputError> {
    let regular = file.metadata().is_ok_and(|m| m.is_file());
    // Every byte is a Windows-1252 character: nothing to find.
    if !regular || asked == Some(TextEncoding::Windows1252) {
        return Ok(());
    }
    let mut text = Decode::new(Box::new(ReadAt { file, at: 0 }), asked);
    let mut buf = vec![0u8; 64 << 10];
    let mut since_break = 0;
    loop {
        match text.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                since_break = match memchr::memrchr2(b'\n', b'\r', &buf[..n]) {
                    Some(at) => n - at - 1,
                    None => since_break + n,
                };
                if since_break > limits.row.max(limits.header) {
                    return Ok(());
                }
            }
            Err(e) => {
                return match fault_of(&e) {
                    Some(fault) => Err(InputError::Framing {
                        path: path.display().to_string(),
                        fault,
                    }),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Reads a file from `at` on without moving the file's own position.
struct ReadAt {
    file: File,
    at: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The header's names, trimmed (a byte-order mark is no part of them).
fn header_names(raw: &csv::ByteRecord) -> Vec<String> {
    raw.iter()
        .map(|cell| {
            String::from_utf8_lossy(cell)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_owned()
        })
        .collect()
}

/// Names that more than one column has (compared trimmed and in any case),
/// each as first written with the columns, from 1, that have it. Unnamed
/// columns are left out: no one can ask for their cells.
fn same_names(headers: &[String]) -> Vec<(String, Vec<usize>)> {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut columns: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, name) in headers.iter().enumerate().filter(|(_, h)| !h.is_empty()) {
        match first.entry(name.to_ascii_lowercase()) {
            Entry::Occupied(at) => columns[*at.get()].1.push(i + 1),
            Entry::Vacant(slot) => {
                slot.insert(columns.len());
                columns.push((name.clone(), vec![i + 1]));
            }
        }
    }
    columns.retain(|(_, at)| at.len() > 1);
    columns
}
