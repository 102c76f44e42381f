//! The input CSV of leads: streams it row by row, normalises LeadId and PortalId
//! GUIDs, and classifies every row as valid, invalid (with the reason) or a
//! duplicate of an earlier valid row, keeping the input's line numbers.
//!
//! The file may be UTF-8, UTF-16 or Windows-1252 (see `encoding`), its cells
//! separated by commas, semicolons, tabs or bars (found from the header line
//! when not given), and its LeadId column called by any of the names
//! LeadSquared and people give it (see [`LeadColumn`]).
//!
//! A bad row is data, never an error: only faults that make the rest of the file
//! unreadable (cannot open, a workbook rather than CSV, a line not in the
//! file's encoding, no header, no LeadId column or two, two columns of one
//! name, a row or cell larger than any lead needs, I/O error) are
//! [`InputError`]s. A stray quote is a bad row: the lines after it are read
//! on, never swallowed into its cell.

mod encoding;
mod framing;
mod guid;
#[cfg(test)]
mod hostile_tests;
mod lines;
mod reader;
#[cfg(test)]
mod tests;

pub(crate) use encoding::Encoding;
pub use encoding::TextEncoding;
pub(crate) use encoding::Workbook;
pub(crate) use guid::normalize_guid;
pub(crate) use lines::HeaderLine;
pub(crate) use reader::{check_text, open_input, LeadReader};

/// How the file is written, which columns hold the lead and portal ids, and
/// the portal to use when a row names none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputOptions {
    /// Header of the LeadId column, matched case-insensitively; `None` looks
    /// for any of [`LEAD_COLUMNS`].
    pub lead_column: Option<String>,
    /// The file's encoding when it has no byte-order mark; `None` for UTF-8,
    /// or UTF-16 when its NUL bytes show it.
    pub encoding: Option<TextEncoding>,
    /// The cell separator; `None` finds it from the header line.
    pub delimiter: Option<u8>,
    /// Header of the optional PortalId column, matched case-insensitively.
    pub portal_column: String,
    /// Portal for rows whose PortalId cell is missing or empty (`--portal-id`).
    pub default_portal: Option<String>,
    /// About how many rows to expect: the de-duplication set is sized for
    /// them up front, so a large file never holds two copies while it grows.
    pub expected_rows: usize,
    /// Keep every row's cells in [`InputRow::fields`] (for email templates);
    /// without, `fields` is empty.
    pub keep_cells: bool,
    /// Keep every row's cells as read, in [`InputRow::raw`] (for the files of
    /// rows to retry and invalid rows); without, `raw` is `None`.
    pub keep_raw: bool,
    /// How large the header, a row and a cell may be.
    pub limits: Limits,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            lead_column: None,
            encoding: None,
            delimiter: None,
            portal_column: "PortalId".to_owned(),
            default_portal: None,
            expected_rows: 0,
            keep_cells: true,
            keep_raw: false,
            limits: Limits::default(),
        }
    }
}

/// How large the parts of the input may be, in bytes. A leads file needs far
/// less; the limits keep a wrong file (a binary, `/dev/zero`) from taking the
/// machine's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The header row.
    pub header: usize,
    /// One cell.
    pub cell: usize,
    /// One data row.
    pub row: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header: 64 << 10,
            cell: 64 << 10,
            row: 1 << 20,
        }
    }
}

/// What gave a quote away as a stray one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StraySign {
    /// The file ends inside it.
    NeverClosed,
    /// It closes on a later line with text right after the closing quote.
    ClosedWithText {
        /// The line where it closes.
        line: u64,
    },
    /// The row it runs into has not as many cells as the header.
    Cells {
        /// Cells in that row.
        cells: usize,
        /// Columns in the header.
        columns: usize,
    },
    /// It runs on over lines for longer than a cell or a row may be.
    TooLong {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl std::fmt::Display for StraySign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StraySign::NeverClosed => f.write_str("is never closed"),
            StraySign::ClosedWithText { line } => {
                write!(f, "is only closed on line {line}, with text after it")
            }
            StraySign::Cells { cells, columns } => write!(
                f,
                "runs over lines into a row of {cells} cells, where the header has {columns}"
            ),
            StraySign::TooLong { limit } => {
                write!(
                    f,
                    "runs on over several lines for more than {}",
                    size(*limit)
                )
            }
        }
    }
}

/// Part of the input that no reading can get past.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Fault {
    /// The file is a spreadsheet workbook, not CSV.
    #[error(
        "it is {0}, not a CSV file; in Excel use File > Save As > \"CSV UTF-8 (Comma \
         delimited)\" and give the .csv file it saves"
    )]
    Workbook(Workbook),
    /// A line is not UTF-8, and no other encoding was given.
    #[error(
        "line {line} is not UTF-8; if Excel or another Windows program saved it, give \
         --encoding windows-1252 (for Latin-1 text too), or save it as \"CSV UTF-8\""
    )]
    NotUtf8 {
        /// The first line that is not.
        line: u64,
    },
    /// A line is not in the encoding given or marked.
    #[error(
        "line {line} is not valid {encoding}; check --encoding, or save the file as \"CSV UTF-8\""
    )]
    NotInEncoding {
        /// The first line that is not.
        line: u64,
        /// The encoding the file was read in.
        encoding: Encoding,
    },
    /// The header row is longer than its limit.
    #[error(
        "its header row (line {line}) is longer than {}; the first line must name the \
         columns, e.g. LeadId,Email: is this the CSV file of leads?",
        size(*limit)
    )]
    Header {
        /// Where the header starts.
        line: u64,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The header row has a stray quote.
    #[error("its header row has a quote on line {line} that {sign}; fix the header")]
    HeaderQuote {
        /// The quote's line.
        line: u64,
        /// What gave it away.
        sign: StraySign,
    },
    /// A cell is longer than its limit.
    #[error(
        "line {line} has a cell longer than {}, more than any lead needs: \
         is this the CSV file of leads?",
        size(*limit)
    )]
    Cell {
        /// The cell's line.
        line: u64,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A row is longer than its limit.
    #[error(
        "the row on line {line} is longer than {}, more than any lead needs: \
         is this the CSV file of leads?",
        size(*limit)
    )]
    Row {
        /// Where the row starts.
        line: u64,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// A size for people: `64 KiB`, `1 MiB`, or bytes.
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A fault that stops reading the input altogether.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// The file could not be opened.
    #[error("cannot open the input {path}: {cause}; check the path and its permissions")]
    Open {
        /// The input as named by the user.
        path: String,
        /// Why the open failed.
        cause: std::io::Error,
    },
    /// The input is a directory.
    #[error("the input {path} is a directory; name the CSV file of leads")]
    Directory {
        /// The input as named by the user.
        path: String,
    },
    /// The input is empty or its first line has no column names.
    #[error("the input {path} has no header row; its first line must name the columns, e.g. LeadId,Email")]
    NoHeader {
        /// The input as named by the user.
        path: String,
    },
    /// The header has no column with the LeadId column's name (or, when
    /// none was given, any of the names it goes by).
    #[error(
        "the input {path} has no {} column (found: {}); name the column with --lead-column",
        match column {
            Some(column) => format!("{column:?}"),
            None => format!("LeadId (nor {})", lead_column_names()),
        },
        found_list(found)
    )]
    MissingColumn {
        /// The input as named by the user.
        path: String,
        /// The column that was looked for, when one was named.
        column: Option<String>,
        /// The header names that are there.
        found: Vec<String>,
    },
    /// No LeadId column was named and more than one column has a name the
    /// LeadId column goes by.
    #[error(
        "the input {path} has more than one LeadId column: {}; name the one to use with \
         --lead-column",
        columns
            .iter()
            .map(|(name, at)| format!("{name:?} (column {at})"))
            .collect::<Vec<_>>()
            .join(" and ")
    )]
    LeadColumns {
        /// The input as named by the user.
        path: String,
        /// Each such column's name and place, from 1.
        columns: Vec<(String, usize)>,
    },
    /// Two columns have one name (trimmed, in any case): which of them a
    /// template or the run reads would be a guess.
    #[error(
        "the input {path} has more than one column named {}; rename or remove the extra \
         columns so that each name says which cell to use",
        same_names(names)
    )]
    SameName {
        /// The input as named by the user.
        path: String,
        /// Each repeated name, as first written, with the columns (from 1)
        /// that have it.
        names: Vec<(String, Vec<usize>)>,
    },
    /// The default portal (`--portal-id`) is not a GUID, so every row would fail.
    #[error("the default PortalId {value:?} is not a GUID; check --portal-id / LSQ_PORTAL_ID")]
    DefaultPortal {
        /// The value given.
        value: String,
    },
    /// Part of the input is larger than any leads file needs, or the header
    /// has a stray quote.
    #[error("cannot read the input {path}: {fault}")]
    Framing {
        /// The input as named by the user.
        path: String,
        /// What is wrong, and where.
        fault: Fault,
    },
    /// Reading failed part-way, typically an I/O error.
    #[error("cannot read the input {path} at line {line}: {cause}")]
    Read {
        /// The input as named by the user.
        path: String,
        /// The line being read when it failed.
        line: u64,
        /// The underlying error.
        cause: csv::Error,
    },
}

impl InputError {
    /// Whether the fault is the command's: a column named wrong, a workbook
    /// given for a CSV file, a file read in the wrong encoding, which the
    /// user fixes in the file or with a flag (exit 2; before any call, but
    /// for an encoding fault deep in a pipe, which no check can read ahead).
    pub(crate) fn is_usage(&self) -> bool {
        match self {
            InputError::MissingColumn { .. }
            | InputError::LeadColumns { .. }
            | InputError::SameName { .. } => true,
            InputError::Framing { fault, .. } => matches!(
                fault,
                Fault::Workbook(_) | Fault::NotUtf8 { .. } | Fault::NotInEncoding { .. }
            ),
            _ => false,
        }
    }
}

/// `"Email" (columns 2 and 4), "Name" (columns 1 and 3)`.
fn same_names(names: &[(String, Vec<usize>)]) -> String {
    let list = |columns: &[usize]| {
        let mut shown: Vec<String> = columns.iter().map(usize::to_string).collect();
        let last = shown.pop().unwrap_or_default();
        if shown.is_empty() {
            last
        } else {
            format!("{} and {last}", shown.join(", "))
        }
    };
    names
        .iter()
        .map(|(name, columns)| format!("{name:?} (columns {})", list(columns)))
        .collect::<Vec<_>>()
        .join(", ")
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
pub(crate) enum RowKind {
    /// The row can be processed.
    Valid,
    /// The row cannot be processed.
    Invalid(Invalid),
    /// Same lead and portal as an earlier valid row, at `first_line`.
    Duplicate {
        /// Line number of the earlier row.
        first_line: u64,
    },
}

/// Why an input row cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not as many cells as the header has columns.
    Ragged {
        /// Cells in the row.
        cells: usize,
        /// Columns in the header.
        columns: usize,
    },
    /// The LeadId cell is empty.
    Empty {
        /// The LeadId column's name.
        column: String,
    },
    /// A LeadId or PortalId that is not a GUID.
    NotGuid {
        /// The column.
        column: String,
        /// The cell as written.
        value: String,
    },
    /// A quote that opens a cell and is not closed where a cell can end:
    /// the row ends at the end of its line, and the lines after it are
    /// read as rows of their own.
    StrayQuote {
        /// The quote's line.
        line: u64,
        /// What gave it away.
        sign: StraySign,
    },
}

impl Invalid {
    /// The reason without the row's own values, the same for every row that
    /// is invalid the same way: what a plan counts invalid rows by.
    pub(crate) fn kind(&self) -> String {
        match self {
            Invalid::Ragged { .. } => "wrong number of cells".to_owned(),
            Invalid::Empty { column } => format!("{column} is empty"),
            Invalid::NotGuid { column, .. } => format!("{column} is not a GUID"),
            Invalid::StrayQuote { .. } => "stray quote".to_owned(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Ragged { cells, columns } => write!(
                f,
                "row has {cells} cell{}, header has {columns}",
                if *cells == 1 { "" } else { "s" }
            ),
            Invalid::Empty { column } => write!(f, "{column} is empty"),
            Invalid::NotGuid { column, value } => write!(f, "{column} {value:?} is not a GUID"),
            Invalid::StrayQuote { line, sign } => write!(
                f,
                "the quote that opens a cell on line {line} {sign}, so it is taken for a stray \
                 quote and the lines after line {line} are read as rows of their own; fix the \
                 cell (a quote inside a cell is written \"\")"
            ),
        }
    }
}

/// One row of the input with its classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputRow {
    /// Line number in the input where the row starts; the header is line 1.
    pub line: u64,
    /// Lower-case hyphenated GUID when valid; the trimmed cell as written otherwise.
    pub lead_id: String,
    /// The row's PortalId (normalised when valid), or the default portal.
    pub portal_id: Option<String>,
    /// Trimmed cells, aligned with [`LeadReader::headers`] as far as they go.
    pub fields: Vec<String>,
    /// The cells exactly as read (untrimmed, in the input's own encoding),
    /// when [`InputOptions::keep_raw`] asked for them.
    pub raw: Option<csv::ByteRecord>,
    /// Whether the row is valid, invalid or a duplicate.
    pub kind: RowKind,
}

impl InputRow {
    /// Bytes of the cells the row keeps ([`InputRow::fields`] and
    /// [`InputRow::raw`]).
    pub(crate) fn cell_bytes(&self) -> usize {
        let fields: usize = self.fields.iter().map(String::len).sum();
        fields + self.raw.as_ref().map_or(0, |raw| raw.as_slice().len())
    }

    /// The cell under the column `name` (case-insensitive), if the row has one.
    pub(crate) fn field(&self, headers: &[String], name: &str) -> Option<&str> {
        let idx = column_index(headers, name)?;
        self.fields.get(idx).map(String::as_str)
    }
}

/// The names the LeadId column goes by when `--lead-column` names none,
/// compared in any case and without spaces: LeadSquared's own exports call
/// it `ProspectID`, and people write `Lead ID`.
pub(crate) const LEAD_COLUMNS: [&str; 2] = ["LeadId", "ProspectID"];

/// "ProspectID, Lead ID" for messages.
fn lead_column_names() -> String {
    format!("{}, Lead ID", LEAD_COLUMNS[1..].join(", "))
}

/// Which column holds the LeadIds, and whether it was found by its name
/// rather than named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeadColumn {
    /// The column's name as the header writes it.
    pub(crate) name: String,
    /// Found among [`LEAD_COLUMNS`], not named by `--lead-column`.
    pub(crate) found: bool,
}

/// The columns whose names the LeadId column goes by, with their places
/// from 0.
fn lead_columns(headers: &[String]) -> Vec<usize> {
    let squeeze = |name: &str| -> String {
        name.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let known: Vec<String> = LEAD_COLUMNS.iter().map(|n| squeeze(n)).collect();
    (0..headers.len())
        .filter(|&i| known.contains(&squeeze(&headers[i])))
        .collect()
}

fn column_index(headers: &[String], name: &str) -> Option<usize> {
    let name = name.trim();
    headers.iter().position(|h| h.eq_ignore_ascii_case(name))
}
