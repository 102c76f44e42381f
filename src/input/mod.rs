//! The input CSV of leads: streams it row by row, normalises LeadId and PortalId
//! GUIDs, and classifies every row as valid, invalid (with the reason) or a
//! duplicate of an earlier valid row, keeping the input's line numbers.
//!
//! A bad row is data, never an error: only faults that make the rest of the file
//! unreadable (cannot open, no header, no LeadId column, I/O error) are
//! [`InputError`]s.

use std::collections::hash_map::{Entry, HashMap};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod guid;

pub use guid::normalize_guid;

use guid::{hyphenated, parse_guid, GuidHashBuilder};

/// Which columns hold the lead and portal ids, and the portal to use when a row
/// names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputOptions {
    /// Header of the LeadId column, matched case-insensitively.
    pub lead_column: String,
    /// Header of the optional PortalId column, matched case-insensitively.
    pub portal_column: String,
    /// Portal for rows whose PortalId cell is missing or empty (`--portal-id`).
    pub default_portal: Option<String>,
    /// About how many rows to expect: the de-duplication set is sized for
    /// them up front, so a large file never holds two copies while it grows.
    pub expected_rows: usize,
    /// Keep every row's cells in [`InputRow::fields`] (for email templates and
    /// `failed.csv`); without, `fields` is empty.
    pub keep_cells: bool,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            lead_column: "LeadId".to_owned(),
            portal_column: "PortalId".to_owned(),
            default_portal: None,
            expected_rows: 0,
            keep_cells: true,
        }
    }
}

/// A fault that stops reading the input altogether.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened.
    #[error("cannot open the input {path}: {source}; check the path and its permissions")]
    Open {
        /// The input as named by the user.
        path: String,
        /// Why the open failed.
        #[source]
        source: std::io::Error,
    },
    /// The input is empty or its first line has no column names.
    #[error("the input {path} has no header row; its first line must name the columns, e.g. LeadId,Email")]
    NoHeader {
        /// The input as named by the user.
        path: String,
    },
    /// The header has no column with the LeadId column's name.
    #[error(
        "the input {path} has no {column:?} column (found: {}); name the column with --lead-column",
        found_list(found)
    )]
    MissingColumn {
        /// The input as named by the user.
        path: String,
        /// The column that was looked for.
        column: String,
        /// The header names that are there.
        found: Vec<String>,
    },
    /// The default portal (`--portal-id`) is not a GUID, so every row would fail.
    #[error("the default PortalId {value:?} is not a GUID; check --portal-id / LSQ_PORTAL_ID")]
    DefaultPortal {
        /// The value given.
        value: String,
    },
    /// Reading failed part-way, typically an I/O error.
    #[error("cannot read the input {path} at line {line}: {source}")]
    Read {
        /// The input as named by the user.
        path: String,
        /// The line being read when it failed.
        line: u64,
        /// The underlying error.
        #[source]
        source: csv::Error,
    },
}

fn found_list(found: &[String]) -> String {
    if found.is_empty() {
        return "no named columns".to_owned();
    }
    found
        .iter()
        .map(|h| format!("{h:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What became of one input row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowKind {
    /// The row can be processed.
    Valid,
    /// The row cannot be processed; the reason is meant for the report.
    Invalid(String),
    /// Same lead and portal as an earlier valid row, at `first_line`.
    Duplicate {
        /// Line number of the earlier row.
        first_line: u64,
    },
}

/// One row of the input with its classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRow {
    /// Line number in the input where the row starts; the header is line 1.
    pub line: u64,
    /// Lower-case hyphenated GUID when valid; the trimmed cell as written otherwise.
    pub lead_id: String,
    /// The row's PortalId (normalised when valid), or the default portal.
    pub portal_id: Option<String>,
    /// Trimmed cells, aligned with [`LeadReader::headers`] as far as they go.
    pub fields: Vec<String>,
    /// Whether the row is valid, invalid or a duplicate.
    pub kind: RowKind,
}

impl InputRow {
    /// The cell under the column `name` (case-insensitive), if the row has one.
    pub fn field(&self, headers: &[String], name: &str) -> Option<&str> {
        let idx = column_index(headers, name)?;
        self.fields.get(idx).map(String::as_str)
    }

    /// True when the row can be processed.
    pub fn is_valid(&self) -> bool {
        self.kind == RowKind::Valid
    }
}

fn column_index(headers: &[String], name: &str) -> Option<usize> {
    let name = name.trim();
    headers.iter().position(|h| h.eq_ignore_ascii_case(name))
}

/// Streams the rows of an input CSV.
///
/// Memory stays constant apart from the de-duplication set, which holds two
/// 128-bit ids and a line number per valid row rather than the strings.
pub struct LeadReader {
    source: String,
    reader: csv::Reader<Box<dyn Read + Send>>,
    headers: Vec<String>,
    lead_idx: usize,
    portal_idx: Option<usize>,
    default_portal: Option<(String, u128)>,
    /// (lead, portal) of every valid row so far, with its line: the lead's 16
    /// bytes and the portal's index in `portals`, 24 bytes an entry, so a
    /// million leads take about 50 MB.
    seen: HashMap<([u8; 16], u32), u32, GuidHashBuilder>,
    /// Every portal seen, numbered; "no portal" is the nil GUID.
    portals: HashMap<u128, u32>,
    keep_cells: bool,
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

impl LeadReader {
    /// Opens the CSV file at `path` and reads its header.
    pub fn open(path: &Path, opts: InputOptions) -> Result<LeadReader, InputError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| InputError::Open {
            path: name.clone(),
            source,
        })?;
        LeadReader::from_reader(Box::new(file), name, opts)
    }

    /// Reads CSV from any reader; `source` names it in messages.
    pub fn from_reader(
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
        let lines = Arc::new(Mutex::new(LineIndex::default()));
        let counting: Box<dyn Read + Send> = Box::new(LineCounting {
            inner: reader,
            index: Arc::clone(&lines),
        });
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(counting);
        let raw_headers = match reader.byte_headers() {
            Ok(h) => h.clone(),
            Err(err) => {
                return Err(InputError::Read {
                    line: err.position().map_or(1, |p| p.line()),
                    path: source,
                    source: err,
                })
            }
        };
        // csv strips a BOM it sees whole; trimming one here covers a BOM split
        // across the first read.
        let headers: Vec<String> = raw_headers
            .iter()
            .map(|cell| {
                String::from_utf8_lossy(cell)
                    .trim_start_matches('\u{feff}')
                    .trim()
                    .to_owned()
            })
            .collect();
        if headers.iter().all(String::is_empty) {
            return Err(InputError::NoHeader { path: source });
        }
        let lead_idx =
            column_index(&headers, &opts.lead_column).ok_or_else(|| InputError::MissingColumn {
                path: source.clone(),
                column: opts.lead_column.trim().to_owned(),
                found: headers.iter().filter(|h| !h.is_empty()).cloned().collect(),
            })?;
        let portal_idx = column_index(&headers, &opts.portal_column);
        Ok(LeadReader {
            source,
            reader,
            headers,
            lead_idx,
            portal_idx,
            default_portal,
            seen: HashMap::with_capacity_and_hasher(opts.expected_rows, GuidHashBuilder::new()),
            portals: HashMap::new(),
            keep_cells: opts.keep_cells,
            record: csv::ByteRecord::new(),
            lines,
            done: false,
        })
    }

    /// Header names, trimmed, with any byte-order mark removed.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// The input's name as used in messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The line the current record starts on.
    ///
    /// `csv::Position::line()` of a record is taken before blank lines are
    /// skipped and, in CRLF files, before the previous row's `\n` is consumed,
    /// so it is one short on every row of a Windows export. Instead, count the
    /// line breaks before the record's last byte and subtract the breaks inside
    /// its quoted cells.
    fn record_line(&self) -> u64 {
        let end = self.reader.position().byte();
        let end_line = 1 + self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .breaks_before(end.saturating_sub(1));
        let inside: u64 = self.record.iter().map(count_breaks).sum();
        end_line.saturating_sub(inside)
    }

    fn classify(&mut self) -> InputRow {
        let line = self.record_line();
        let record = &self.record;
        let utf8_bad = record.iter().position(|c| std::str::from_utf8(c).is_err());
        let text = |idx: Option<usize>| {
            idx.and_then(|i| record.get(i))
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
        };
        let (lead_cell, portal_cell) = (text(Some(self.lead_idx)), text(self.portal_idx));
        let (lead_raw, portal_raw) = (lead_cell.trim(), portal_cell.trim());
        let lead = parse_guid(lead_raw);
        // The portal's text is built once per row, below; here only its value.
        let portal: Result<Option<u128>, ()> = if portal_raw.is_empty() {
            Ok(self.default_portal.as_ref().map(|(_, u)| *u))
        } else {
            parse_guid(portal_raw).map(|u| Some(u.as_u128())).ok_or(())
        };

        let lead_id = lead.map_or_else(|| lead_raw.to_owned(), hyphenated);
        let portal_id = match &portal {
            Ok(None) => None,
            Ok(Some(_)) if portal_raw.is_empty() => {
                self.default_portal.as_ref().map(|(s, _)| s.clone())
            }
            Ok(Some(u)) => Some(hyphenated(uuid::Uuid::from_u128(*u))),
            Err(()) => Some(portal_raw.to_owned()),
        };

        // Ragged rows come first: once cells are shifted, any other verdict
        // would be about the wrong column.
        let cells = record.len();
        let kind = if cells != self.headers.len() {
            RowKind::Invalid(format!(
                "row has {} cell{}, header has {}",
                cells,
                if cells == 1 { "" } else { "s" },
                self.headers.len()
            ))
        } else if let Some(i) = utf8_bad {
            RowKind::Invalid(format!(
                "cell {} ({}) is not valid UTF-8; save the file as UTF-8",
                i + 1,
                self.headers[i]
            ))
        } else if lead_raw.is_empty() {
            RowKind::Invalid(format!("{} is empty", self.headers[self.lead_idx]))
        } else if lead.is_none() {
            RowKind::Invalid(format!(
                "{} {:?} is not a GUID",
                self.headers[self.lead_idx], lead_raw
            ))
        } else if portal.is_err() {
            let name = self.portal_idx.map_or("PortalId", |i| &self.headers[i]);
            RowKind::Invalid(format!("{name} {portal_raw:?} is not a GUID"))
        } else {
            let portal = match &portal {
                Ok(Some(u)) => *u,
                _ => 0,
            };
            let next = self.portals.len() as u32;
            let portal = *self.portals.entry(portal).or_insert(next);
            let key = (lead.map_or(0, |u| u.as_u128()).to_le_bytes(), portal);
            match self.seen.entry(key) {
                Entry::Vacant(slot) => {
                    // Past four billion lines the first line is reported as
                    // the last one a u32 holds; the verdict stays right.
                    slot.insert(u32::try_from(line).unwrap_or(u32::MAX));
                    RowKind::Valid
                }
                Entry::Occupied(first) => RowKind::Duplicate {
                    first_line: u64::from(*first.get()),
                },
            }
        };
        // A plan without email needs only the ids: skipping the cells saves a
        // string per cell on every row.
        let fields = if self.keep_cells {
            record
                .iter()
                .map(|c| String::from_utf8_lossy(c).trim().to_owned())
                .collect()
        } else {
            Vec::new()
        };
        InputRow {
            line,
            lead_id,
            portal_id,
            fields,
            kind,
        }
    }
}

/// Line breaks in a byte string: `\n`, `\r\n` or a lone `\r` each count once.
fn count_breaks(bytes: &[u8]) -> u64 {
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
struct LineIndex {
    pending: VecDeque<(u64, u8)>,
    passed: u64,
    offset: u64,
}

impl LineIndex {
    fn note(&mut self, chunk: &[u8]) {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                self.pending.push_back((self.offset + i as u64, b));
            }
        }
        self.offset += chunk.len() as u64;
    }

    /// Line breaks wholly before byte `offset`; offsets must not go backwards.
    fn breaks_before(&mut self, offset: u64) -> u64 {
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

struct LineCounting {
    inner: Box<dyn Read + Send>,
    index: Arc<Mutex<LineIndex>>,
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
                    return Some(Err(InputError::Read {
                        path: self.source.clone(),
                        line,
                        source: err,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84";
    const B: &str = "a91c05d7-62e3-4f18-b7d2-8e4c3a1f6b09";
    const P: &str = "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31";

    fn reader_with(csv: &str, opts: InputOptions) -> Result<LeadReader, InputError> {
        LeadReader::from_reader(
            Box::new(std::io::Cursor::new(csv.as_bytes().to_vec())),
            "leads.csv".to_owned(),
            opts,
        )
    }

    fn rows(csv: &str) -> Vec<InputRow> {
        rows_with(csv, InputOptions::default())
    }

    fn rows_with(csv: &str, opts: InputOptions) -> Vec<InputRow> {
        reader_with(csv, opts)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn invalid_reason(row: &InputRow) -> &str {
        match &row.kind {
            RowKind::Invalid(reason) => reason,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn bom_crlf_spaces_and_header_case_are_tolerated() {
        let csv = format!(
            "\u{feff} leadid , Email ,portalID\r\n {} , ann@example.com , \r\n",
            A.to_uppercase()
        );
        let r = reader_with(&csv, InputOptions::default()).unwrap();
        assert_eq!(r.headers(), ["leadid", "Email", "portalID"]);
        let rows: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].kind, RowKind::Valid);
        assert_eq!(rows[0].lead_id, A);
        assert_eq!(rows[0].portal_id, None);
        assert_eq!(
            rows[0].fields,
            [A.to_uppercase(), "ann@example.com".into(), String::new()]
        );
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn line_numbers_count_blank_lines_and_multi_line_cells() {
        let csv = format!("LeadId,Note\n{A},\"two\nlines\"\n\n   \n{B},\"a, b\"\n");
        let rows = rows(&csv);
        assert_eq!(rows.len(), 2, "blank lines are skipped, not reported");
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].fields[1], "two\nlines");
        assert_eq!(rows[1].line, 6);
        assert_eq!(rows[1].fields[1], "a, b");
        assert!(rows.iter().all(InputRow::is_valid));
    }

    #[test]
    fn line_numbers_are_right_for_crlf_and_cr_only_files() {
        for eol in ["\r\n", "\r", "\n"] {
            let csv = format!("LeadId,Note{eol}{A},x{eol}{eol}{B},\"a{eol}b\"{eol}{eol}{eol}{A},y");
            let lines: Vec<u64> = rows(&csv).iter().map(|r| r.line).collect();
            assert_eq!(lines, [2, 4, 8], "eol {eol:?}");
        }
    }

    #[test]
    fn line_numbers_survive_many_buffers() {
        let mut csv = String::from("\u{feff}LeadId,Note\r\n");
        for i in 0..5000 {
            csv.push_str(&format!("{A},\"line\r\nbreak {i}\"\r\n"));
        }
        let rows = rows(&csv);
        assert_eq!(rows.len(), 5000);
        assert_eq!(rows[4999].line, 2 + 2 * 4999);
        assert_eq!(rows[4999].kind, RowKind::Duplicate { first_line: 2 });
    }

    #[test]
    fn empty_and_non_guid_lead_ids_are_invalid_with_the_raw_cell() {
        let rows = rows(&format!(
            "LeadId,Email\n,x@example.com\n abc ,y@example.com\n{A},z@example.com\n"
        ));
        assert_eq!(invalid_reason(&rows[0]), "LeadId is empty");
        assert_eq!(rows[0].lead_id, "");
        assert_eq!(invalid_reason(&rows[1]), "LeadId \"abc\" is not a GUID");
        assert_eq!(rows[1].lead_id, "abc");
        assert_eq!(
            rows[2].kind,
            RowKind::Valid,
            "invalid rows never stop the stream"
        );
    }

    #[test]
    fn portal_cell_overrides_the_default_and_is_validated() {
        let opts = InputOptions {
            default_portal: Some(format!(" {} ", P.to_uppercase())),
            ..InputOptions::default()
        };
        let csv = format!(
            "LeadId,PortalId\n{A},\n{B},{{{}}}\n{A},x\n",
            B.to_uppercase()
        );
        let rows = rows_with(&csv, opts);
        assert_eq!(rows[0].portal_id.as_deref(), Some(P));
        assert_eq!(rows[1].portal_id.as_deref(), Some(B));
        assert_eq!(rows[1].kind, RowKind::Valid);
        assert_eq!(invalid_reason(&rows[2]), "PortalId \"x\" is not a GUID");
        assert_eq!(rows[2].portal_id.as_deref(), Some("x"));
    }

    #[test]
    fn an_invalid_default_portal_stops_before_any_row() {
        let opts = InputOptions {
            default_portal: Some("portal-7".into()),
            ..InputOptions::default()
        };
        let err = reader_with("LeadId\n", opts).unwrap_err();
        assert!(matches!(err, InputError::DefaultPortal { .. }));
        assert!(err.to_string().contains("--portal-id"));
    }

    #[test]
    fn duplicates_compare_normalised_lead_and_effective_portal() {
        let csv = format!(
            "LeadId,PortalId\n{A},\n{{{}}},\n{A},{P}\n{},{}\n{B},bad\n{B},\n",
            A.to_uppercase(),
            A.replace('-', ""),
            P.to_uppercase()
        );
        let rows = rows(&csv);
        assert_eq!(rows[0].kind, RowKind::Valid);
        assert_eq!(rows[1].kind, RowKind::Duplicate { first_line: 2 });
        assert_eq!(rows[1].lead_id, A);
        assert_eq!(
            rows[2].kind,
            RowKind::Valid,
            "another portal is another login"
        );
        assert_eq!(rows[3].kind, RowKind::Duplicate { first_line: 4 });
        assert!(matches!(rows[4].kind, RowKind::Invalid(_)));
        assert_eq!(
            rows[5].kind,
            RowKind::Valid,
            "an invalid row is not a first sighting"
        );
    }

    #[test]
    fn default_portal_counts_as_the_rows_portal_for_duplicates() {
        let opts = InputOptions {
            default_portal: Some(P.into()),
            ..InputOptions::default()
        };
        let rows = rows_with(&format!("LeadId,PortalId\n{A},\n{A},{P}\n"), opts);
        assert_eq!(rows[1].kind, RowKind::Duplicate { first_line: 2 });
    }

    #[test]
    fn ragged_rows_are_invalid_and_keep_their_cells() {
        let csv = format!("LeadId,FirstName,Email\n{A},Ann\n{B},Bo,b@example.com,extra\n{A}\n");
        let rows = rows(&csv);
        assert_eq!(invalid_reason(&rows[0]), "row has 2 cells, header has 3");
        assert_eq!(rows[0].fields, [A, "Ann"]);
        assert_eq!(rows[0].lead_id, A);
        assert_eq!(invalid_reason(&rows[1]), "row has 4 cells, header has 3");
        assert_eq!(invalid_reason(&rows[2]), "row has 1 cell, header has 3");
    }

    #[test]
    fn invalid_utf8_is_a_row_fault_not_a_run_fault() {
        // "Jérôme" saved as Latin-1, as older spreadsheet exports do.
        let mut bytes = format!("LeadId,FirstName\n{A},J").into_bytes();
        bytes.extend_from_slice(b"\xE9r\xF4me\n");
        bytes.extend_from_slice(format!("{B},Ann\n").as_bytes());
        let r = LeadReader::from_reader(
            Box::new(std::io::Cursor::new(bytes)),
            "leads.csv".into(),
            InputOptions::default(),
        )
        .unwrap();
        let rows: Vec<_> = r.map(Result::unwrap).collect();
        assert!(invalid_reason(&rows[0]).contains("not valid UTF-8"));
        assert!(invalid_reason(&rows[0]).contains("FirstName"));
        assert_eq!(rows[1].kind, RowKind::Valid);
    }

    #[test]
    fn custom_lead_column_and_field_lookup() {
        let opts = InputOptions {
            lead_column: "Prospect ID".into(),
            ..InputOptions::default()
        };
        let r = reader_with(&format!("Email,Prospect ID\nann@example.com,{A}\n"), opts).unwrap();
        let headers = r.headers().to_vec();
        let rows: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(rows[0].lead_id, A);
        assert_eq!(rows[0].field(&headers, "email"), Some("ann@example.com"));
        assert_eq!(rows[0].field(&headers, "Phone"), None);
    }

    #[test]
    fn missing_lead_column_lists_the_headers_and_the_flag() {
        let err = reader_with("Id,Email\n1,a@example.com\n", InputOptions::default()).unwrap_err();
        let msg = err.to_string();
        match &err {
            InputError::MissingColumn { column, found, .. } => {
                assert_eq!(column, "LeadId");
                assert_eq!(found, &["Id", "Email"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(msg.contains("\"Id\", \"Email\""), "{msg}");
        assert!(msg.contains("--lead-column"), "{msg}");
        assert!(msg.contains("leads.csv"), "{msg}");
    }

    #[test]
    fn empty_input_has_no_header() {
        for csv in ["", "\n\n", "\u{feff}"] {
            let err = reader_with(csv, InputOptions::default()).unwrap_err();
            assert!(
                matches!(err, InputError::NoHeader { .. }),
                "{csv:?}: {err:?}"
            );
        }
    }

    #[test]
    fn open_names_the_missing_file() {
        let err = LeadReader::open(Path::new("/nonexistent/leads.csv"), InputOptions::default())
            .unwrap_err();
        assert!(matches!(err, InputError::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/leads.csv"));
    }

    #[test]
    fn open_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leads.csv");
        std::fs::write(&path, format!("LeadId\n{A}\n")).unwrap();
        let rows: Vec<_> = LeadReader::open(&path, InputOptions::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 1);
    }

    struct FailAfter(Vec<u8>);

    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn an_io_error_ends_the_stream_with_a_located_error() {
        let r = LeadReader::from_reader(
            Box::new(FailAfter(format!("LeadId\n{A}\n{B}").into_bytes())),
            "leads.csv".into(),
            InputOptions::default(),
        )
        .unwrap();
        let items: Vec<_> = r.collect();
        assert_eq!(items.len(), 2, "{items:?}");
        assert!(items[0].is_ok());
        let err = items[1].as_ref().unwrap_err();
        assert!(matches!(err, InputError::Read { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("leads.csv") && msg.contains("disk on fire"),
            "{msg}"
        );
    }

    #[test]
    fn samples_leads_csv_exercises_every_row_kind() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/leads.csv");
        let rows: Vec<_> = LeadReader::open(&path, InputOptions::default())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 12);
        for row in &rows {
            match row.line {
                7 => assert_eq!(row.kind, RowKind::Duplicate { first_line: 2 }),
                8 => assert_eq!(invalid_reason(row), "LeadId is empty"),
                9 => assert_eq!(invalid_reason(row), "LeadId \"LD-20931\" is not a GUID"),
                _ => assert_eq!(row.kind, RowKind::Valid, "line {}", row.line),
            }
        }
    }
}
