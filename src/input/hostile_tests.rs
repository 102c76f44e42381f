//! The reader against hostile text: stray quotes, parts larger than any
//! lead needs, input that arrives a byte at a time, random text, and
//! well-formed files that must pass exactly as the csv parser reads them.

use std::io::Read;

use rand::{Rng, SeedableRng};

use super::lines::LineIndex;
use super::*;

const A: &str = "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84";
const B: &str = "a91c05d7-62e3-4f18-b7d2-8e4c3a1f6b09";
const C: &str = "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31";

/// Hands out its bytes one at a time, so every boundary falls somewhere.
struct OneByte(std::io::Cursor<Vec<u8>>);

impl Read for OneByte {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

fn reader(
    csv: impl AsRef<[u8]>,
    opts: InputOptions,
    byte_by_byte: bool,
) -> Result<LeadReader, InputError> {
    let bytes = std::io::Cursor::new(csv.as_ref().to_vec());
    let source: Box<dyn Read + Send> = if byte_by_byte {
        Box::new(OneByte(bytes))
    } else {
        Box::new(bytes)
    };
    LeadReader::from_reader(source, "leads.csv".to_owned(), opts)
}

/// Every item the reader gives, read whole and byte by byte (which must
/// agree).
fn items(csv: &str, limits: Limits) -> Vec<Result<InputRow, String>> {
    items_of(csv.as_bytes(), limits)
}

/// [`items`] of a file's bytes.
fn items_of(csv: &[u8], limits: Limits) -> Vec<Result<InputRow, String>> {
    let opts = InputOptions {
        limits,
        keep_raw: true,
        ..InputOptions::default()
    };
    let read = |byte_by_byte| -> Vec<Result<InputRow, String>> {
        reader(csv, opts.clone(), byte_by_byte)
            .unwrap()
            .map(|item| item.map_err(|e| e.to_string()))
            .collect()
    };
    let whole = read(false);
    let shown = String::from_utf8_lossy(csv);
    assert_eq!(whole, read(true), "read whole and byte by byte: {shown:?}");
    whole
}

fn rows(csv: &str) -> Vec<InputRow> {
    items(csv, Limits::default())
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// Limits small enough for a test to reach.
const SMALL: Limits = Limits {
    header: 100,
    cell: 60,
    row: 200,
};

fn stray(line: u64, sign: StraySign) -> RowKind {
    RowKind::Invalid(Invalid::StrayQuote { line, sign })
}

/// (line, kind) of each row.
fn verdicts(rows: &[InputRow]) -> Vec<(u64, RowKind)> {
    rows.iter().map(|r| (r.line, r.kind.clone())).collect()
}

#[test]
fn an_unclosed_quote_is_its_rows_fault_and_the_lines_after_it_are_rows() {
    for eol in ["\n", "\r\n", "\r"] {
        let csv = format!("LeadId,Name{eol}{A},\"Bob{eol}{B},Ann{eol}{eol}{C},Cy{eol}");
        let rows = rows(&csv);
        assert_eq!(
            verdicts(&rows),
            [
                (2, stray(2, StraySign::NeverClosed)),
                (3, RowKind::Valid),
                (5, RowKind::Valid)
            ],
            "{eol:?}"
        );
        assert_eq!(rows[0].fields, [A, "\"Bob"], "the quote stays in its cell");
        assert_eq!(
            rows[0].raw,
            Some(csv::ByteRecord::from(vec![A, "\"Bob"])),
            "{eol:?}"
        );
        assert_eq!(rows[1].fields, [B, "Ann"]);
    }
}

#[test]
fn the_stray_quote_message_names_its_line_and_what_to_do() {
    let rows = rows(&format!("LeadId,Name\n{A},x\n{B},\"Bo\"\"b\n{C},y\n"));
    let RowKind::Invalid(reason) = &rows[1].kind else {
        panic!("{:?}", rows[1]);
    };
    assert_eq!(
        reason.to_string(),
        "the quote that opens a cell on line 3 is never closed, so it is taken for a stray \
         quote and the lines after line 3 are read as rows of their own; fix the cell (a \
         quote inside a cell is written \"\")"
    );
    assert_eq!(reason.kind(), "stray quote");
    assert_eq!(rows[1].fields, [B, "\"Bo\"b"]);
    assert_eq!(rows[2].kind, RowKind::Valid);
}

#[test]
fn a_quote_closed_lines_later_with_text_after_it_is_a_stray_quote() {
    let csv = format!("LeadId,Name\n{A},\"Bob\n{B},Ann\n{C},\"Cy\" Smith\n");
    let rows = rows(&csv);
    assert_eq!(
        verdicts(&rows),
        [
            (2, stray(2, StraySign::ClosedWithText { line: 4 })),
            (3, RowKind::Valid),
            (4, RowKind::Valid)
        ]
    );
    assert_eq!(
        rows[2].fields,
        [C, "Cy Smith"],
        "on one line, text after a closing quote is the parser's to take"
    );
}

#[test]
fn a_quote_that_runs_into_a_row_of_other_width_is_a_stray_quote() {
    // Closed by `11"` before a comma, which a quoted cell may end with.
    let csv = format!("LeadId,Name\n{A},\"Bob\n{B},5'11\",x\n{C},Cy\n");
    let rows = rows(&csv);
    assert_eq!(
        verdicts(&rows),
        [
            (
                2,
                stray(
                    2,
                    StraySign::Cells {
                        cells: 3,
                        columns: 2
                    }
                )
            ),
            (
                3,
                RowKind::Invalid(Invalid::Ragged {
                    cells: 3,
                    columns: 2
                })
            ),
            (4, RowKind::Valid)
        ]
    );
}

#[test]
fn hostile_files_read_alike_in_utf16_and_with_semicolons() {
    let limits = SMALL;
    let long = "x".repeat(61);
    let cells = vec!["y"; 150].join(",");
    for csv in [
        format!("LeadId,Name\n{A},\"Bob\n{B},Ann\n\n{C},Cy\n"),
        format!("LeadId,Name\r\n{A},\"Bob\r\nx\" Jr,1\r\n{B},Ann\r\n"),
        format!("LeadId,Name\n{A},\"Bob\n{B},Ann,extra\n{C},Cy\n"),
        format!("LeadId,Name\n{A},\"Bob\n{B},Ann\n{C},Cy\n"),
        format!("LeadId,\"Na,me\"\n{A},\"two\r\nlines, \"\"quoted\"\"\"\n{B},O\"Brien\n"),
        format!("LeadId,Name\n{A},ok\n{B},{long}\n{C},ok\n"),
        format!("LeadId,Name\n{A},ok\n\n{B},{cells}\n"),
    ] {
        let plain = items(&csv, limits);
        let semicolons = items(&csv.replace(',', ";"), limits);
        // The cells, with the commas in their text put back.
        let cells_of = |items: Vec<Result<InputRow, String>>| -> Vec<Result<Vec<String>, String>> {
            let commas = |cells: Vec<String>| cells.iter().map(|c| c.replace(';', ",")).collect();
            items
                .into_iter()
                .map(|i| i.map(|row| commas(row.fields)))
                .collect()
        };
        assert_eq!(
            cells_of(semicolons),
            cells_of(plain.clone()),
            "{csv:?} with semicolons"
        );
        let mut utf16 = vec![0xFF, 0xFE];
        utf16.extend(csv.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(items_of(&utf16, limits), plain, "{csv:?} in UTF-16");
    }
}

#[test]
fn a_quote_that_runs_on_past_a_limit_is_a_stray_quote() {
    let limits = SMALL;
    let csv = format!("LeadId,Name\n{A},\"Bob\n{B},Ann\n{C},Cy\n");
    let rows: Vec<_> = items(&csv, limits)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        verdicts(&rows),
        [
            (2, stray(2, StraySign::TooLong { limit: 60 })),
            (3, RowKind::Valid),
            (4, RowKind::Valid)
        ]
    );
}

#[test]
fn sound_quoting_passes_untouched() {
    let csv = format!(
        "\u{feff}\"LeadId\",\"Na,me\"\n{A},\"two\r\nlines, \"\"quoted\"\"\"\n{B},O\"Brien\n{C},\"Cy\" Smith\n"
    );
    let rows = rows(&csv);
    assert!(rows.iter().all(|r| r.kind == RowKind::Valid), "{rows:?}");
    assert_eq!(rows[0].fields[1], "two\r\nlines, \"quoted\"");
    assert_eq!(
        rows[1].fields[1], "O\"Brien",
        "a quote inside a cell is text"
    );
    assert_eq!(rows[2].fields[1], "Cy Smith");
    assert_eq!(verdicts(&rows)[2].0, 5);
}

#[test]
fn well_formed_files_read_as_the_csv_parser_reads_them() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let pieces = ["a", " ", ",", "\"", "\n", "\r\n", "\r", "é", "x y"];
    for _ in 0..300 {
        let mut csv = String::from("LeadId,Note\n");
        for _ in 0..rng.random_range(1..6) {
            let mut cell = String::new();
            for _ in 0..rng.random_range(0..6) {
                cell.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            let quoted = format!("\"{}\"", cell.replace('"', "\"\""));
            let eol = ["\n", "\r\n", "\r"][rng.random_range(0..3)];
            csv.push_str(&format!("{A},{quoted}{eol}"));
        }
        let expected: Vec<Vec<String>> = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(csv.as_bytes())
            .byte_records()
            .map(|r| {
                r.unwrap()
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).trim().to_owned())
                    .collect()
            })
            .collect();
        let got: Vec<Vec<String>> = rows(&csv).into_iter().map(|r| r.fields).collect();
        assert_eq!(got, expected, "{csv:?}");
    }
}

#[test]
fn a_cell_or_row_past_its_limit_stops_the_input_at_its_line() {
    let limits = SMALL;
    let long = "x".repeat(61);
    let csv = format!("LeadId,Name\n{A},ok\n{B},{long}\n{C},ok\n");
    let got = items(&csv, limits);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].is_ok());
    assert_eq!(
        got[1].as_ref().unwrap_err(),
        "cannot read the input leads.csv: line 3 has a cell longer than 60 bytes, more than \
         any lead needs: is this the CSV file of leads?"
    );
    let cells = vec!["y"; 150].join(",");
    let csv = format!("LeadId,Name\n{A},ok\n\n{B},{cells}\n");
    let got = items(&csv, limits);
    let err = got.last().unwrap().as_ref().unwrap_err();
    assert!(
        err.contains("the row on line 4 is longer than 200 bytes"),
        "{err}"
    );
}

#[test]
fn a_header_past_its_limit_or_with_a_stray_quote_stops_before_any_row() {
    let limits = SMALL;
    let opts = InputOptions {
        limits,
        ..InputOptions::default()
    };
    let long = format!("LeadId,{}\n{A},x\n", vec!["Name"; 30].join(","));
    for byte_by_byte in [false, true] {
        let err = reader(long.as_bytes(), opts.clone(), byte_by_byte).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the input leads.csv: its header row (line 1) is longer than 100 bytes; \
             the first line must name the columns, e.g. LeadId,Email: is this the CSV file of \
             leads?"
        );
        let err = reader(
            format!("LeadId,\"Name\n{A},x\n"),
            opts.clone(),
            byte_by_byte,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("its header row has a quote on line 1 that is never closed"),
            "{err}"
        );
    }
}

#[test]
fn a_directory_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = LeadReader::open(dir.path(), InputOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the input {} is a directory; name the CSV file of leads",
            dir.path().display()
        )
    );
    let missing = LeadReader::open(&dir.path().join("nope.csv"), InputOptions::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing.matches("No such file").count(),
        1,
        "the cause once: {missing}"
    );
}

#[test]
fn blank_lines_by_the_million_keep_the_line_index_small() {
    let mut index = LineIndex::default();
    let blank = vec![b'\n'; 8192];
    for _ in 0..200 {
        index.note(&blank);
    }
    assert!(index.pending() <= 8192, "{}", index.pending());
    assert_eq!(index.breaks_before(200 * 8192), 200 * 8192);
    let rows = rows(&format!("LeadId\n{}{A}\n", "\n".repeat(100_000)));
    assert_eq!(rows[0].line, 100_002);
}

#[test]
fn any_text_reads_the_same_whole_and_byte_by_byte() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let pieces = ["a", ",", "\"", "\"\"", "\n", "\r\n", "\r", " x"];
    let limits = Limits {
        header: 40,
        cell: 12,
        row: 30,
    };
    for _ in 0..500 {
        let mut csv = String::from("LeadId,Name\n");
        for _ in 0..rng.random_range(0..30) {
            csv.push_str(pieces[rng.random_range(0..pieces.len())]);
        }
        // `items` reads both ways and compares them.
        items(&csv, limits);
        let lines: Vec<u64> = items(&csv, Limits::default())
            .iter()
            .map(|item| item.as_ref().unwrap().line)
            .collect();
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{csv:?}: {lines:?}");
    }
}
