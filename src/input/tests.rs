//! The reader against CSV text: headers, line numbers, every verdict a row
//! can get, and the faults that stop the input.

use std::io::Read;
use std::path::Path;

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

fn invalid_reason(row: &InputRow) -> String {
    match &row.kind {
        RowKind::Invalid(reason) => reason.to_string(),
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
    assert!(rows.iter().all(|r| r.kind == RowKind::Valid));
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
fn a_file_not_in_utf8_stops_at_its_line_and_names_the_encoding_to_give() {
    // "Jérôme" saved as Latin-1, as older spreadsheet exports do: read as
    // UTF-8 it would reach templates garbled, so it is read only when asked.
    let mut bytes = format!("LeadId,FirstName\n{B},Ann\n{A},J").into_bytes();
    bytes.extend_from_slice(b"\xE9r\xF4me\n");
    let read = |encoding| {
        let r = LeadReader::from_reader(
            Box::new(std::io::Cursor::new(bytes.clone())),
            "leads.csv".into(),
            InputOptions {
                encoding,
                ..InputOptions::default()
            },
        )
        .unwrap();
        r.collect::<Result<Vec<_>, _>>()
    };
    let err = read(None).unwrap_err();
    assert!(err.is_usage());
    assert_eq!(
        err.to_string(),
        "cannot read the input leads.csv: line 3 is not UTF-8; if Excel or another Windows \
         program saved it, give --encoding windows-1252 (for Latin-1 text too), or save it as \
         \"CSV UTF-8\""
    );
    let rows = read(Some(TextEncoding::Windows1252)).unwrap();
    assert_eq!(rows[1].fields, [A, "Jérôme"]);
    assert_eq!(rows[1].kind, RowKind::Valid);
}

#[test]
fn a_workbook_is_refused_whatever_its_name() {
    let err = reader_with(
        "PK\u{3}\u{4}\u{14}\0\u{6}\0[Content_Types].xml",
        InputOptions::default(),
    )
    .unwrap_err();
    assert!(err.is_usage());
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot read the input leads.csv: it is an Excel workbook (.xlsx)"),
        "{msg}"
    );
    assert!(msg.contains("\"CSV UTF-8 (Comma delimited)\""), "{msg}");
}

#[test]
fn the_lead_column_is_found_by_the_names_it_goes_by() {
    for header in [
        "LeadId",
        "ProspectID",
        "ProspectId",
        "Lead ID",
        "lead id",
        " Lead Id ",
    ] {
        let r = reader_with(
            &format!("Email,{header}\nann@example.com,{A}\n"),
            InputOptions::default(),
        )
        .unwrap();
        assert_eq!(r.lead_column().name, header.trim());
        assert!(r.lead_column().found);
        let rows: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(rows[0].lead_id, A, "{header}");
    }
    let named = InputOptions {
        lead_column: Some("ProspectID".into()),
        ..InputOptions::default()
    };
    let r = reader_with(&format!("LeadId,ProspectID\nx,{A}\n"), named).unwrap();
    assert!(!r.lead_column().found, "named, not found");
}

#[test]
fn two_columns_that_could_hold_the_lead_are_a_usage_error_naming_them() {
    let err = reader_with("LeadId,Email,Prospect ID\n", InputOptions::default()).unwrap_err();
    assert!(err.is_usage());
    assert_eq!(
        err.to_string(),
        "the input leads.csv has more than one LeadId column: \"LeadId\" (column 1) and \
         \"Prospect ID\" (column 3); name the one to use with --lead-column"
    );
}

#[test]
fn the_separator_is_found_from_the_header_line() {
    for (sep, name) in [
        (",", "comma"),
        (";", "semicolon"),
        ("\t", "tab"),
        ("|", "bar"),
    ] {
        let csv = format!("LeadId{sep}\"First{sep}Name\"{sep}Email\n{A}{sep}Ann{sep}a@x.example\n");
        let r = reader_with(&csv, InputOptions::default()).unwrap();
        assert_eq!(
            r.headers(),
            ["LeadId", &format!("First{sep}Name"), "Email"],
            "{name}"
        );
        assert_eq!(r.header_line().delimiter, sep.as_bytes()[0], "{name}");
        let rows: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(rows[0].fields, [A, "Ann", "a@x.example"], "{name}");
    }
    assert_eq!(sniff("LeadId\n"), b',', "one column");
    assert_eq!(sniff("LeadId;Name,Email;x\n"), b';', "the most used");
    assert_eq!(sniff("LeadId,\"a;b;c\"\n"), b',', "outside quotes");
    let given = InputOptions {
        delimiter: Some(b'|'),
        ..InputOptions::default()
    };
    let r = reader_with(&format!("LeadId|Name,Surname;x\n{A}|Ann,B;x\n"), given).unwrap();
    assert_eq!(r.headers(), ["LeadId", "Name,Surname;x"]);
}

/// The separator found in `csv`, whose header names a LeadId column.
fn sniff(csv: &str) -> u8 {
    reader_with(csv, InputOptions::default())
        .unwrap()
        .header_line()
        .delimiter
}

#[test]
fn a_utf16_file_reads_as_its_utf8_twin() {
    let text = format!("LeadId;FirstName\r\n{A};Zoë\r\n");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let r = LeadReader::from_reader(
        Box::new(std::io::Cursor::new(bytes)),
        "leads.csv".into(),
        InputOptions::default(),
    )
    .unwrap();
    assert_eq!(r.headers(), ["LeadId", "FirstName"]);
    let line = r.header_line().clone();
    assert_eq!(
        (line.bytes, line.crlf, line.encoding, line.delimiter),
        (
            "\u{feff}LeadId;FirstName".as_bytes().to_vec(),
            true,
            super::Encoding::Utf16Le,
            b';'
        )
    );
    let rows: Vec<_> = r.map(Result::unwrap).collect();
    assert_eq!(
        (rows[0].line, &rows[0].fields[..]),
        (2, &[A.to_owned(), "Zoë".into()][..])
    );
}

#[test]
fn custom_lead_column_and_field_lookup() {
    let opts = InputOptions {
        lead_column: Some("Contact".into()),
        ..InputOptions::default()
    };
    let r = reader_with(&format!("Email,Contact\nann@example.com,{A}\n"), opts).unwrap();
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
            assert_eq!(column, &None);
            assert_eq!(found, &["Id", "Email"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        msg.contains("no LeadId (nor ProspectID, Lead ID) column"),
        "{msg}"
    );
    assert!(msg.contains("\"Id\", \"Email\""), "{msg}");
    assert!(msg.contains("--lead-column"), "{msg}");
    assert!(msg.contains("leads.csv"), "{msg}");
}

#[test]
fn columns_of_one_name_are_refused_naming_them() {
    let err = reader_with(
        " Email ,LeadId,Name,email,NAME,,,LEADID\n",
        InputOptions::default(),
    )
    .unwrap_err();
    assert!(err.is_usage());
    assert_eq!(
        err.to_string(),
        "the input leads.csv has more than one column named \"Email\" (columns 1 and 4), \
         \"LeadId\" (columns 2 and 8), \"Name\" (columns 3 and 5); rename or remove the extra \
         columns so that each name says which cell to use"
    );
    let unnamed = reader_with("LeadId,Name,,\n", InputOptions::default());
    assert!(unnamed.is_ok(), "unnamed columns are no one's to ask for");
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
    let err =
        LeadReader::open(Path::new("/nonexistent/leads.csv"), InputOptions::default()).unwrap_err();
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

#[test]
fn the_header_line_is_kept_as_it_is_in_the_file() {
    let line = |csv: &[u8]| {
        let r = LeadReader::from_reader(
            Box::new(std::io::Cursor::new(csv.to_vec())),
            "leads.csv".to_owned(),
            InputOptions::default(),
        )
        .unwrap();
        let line = r.header_line();
        (line.bytes.clone(), line.crlf)
    };
    let row = format!("{A},x");
    for (csv, header, crlf) in [
        (format!("LeadId,Name\n{row}\n"), "LeadId,Name", false),
        (format!("LeadId,Name\r\n{row}\r\n"), "LeadId,Name", true),
        (
            format!("\u{feff}LeadId, Name \r\n{row}"),
            "\u{feff}LeadId, Name ",
            true,
        ),
        (
            format!("\"LeadId\",\"a\nb\"\n{row}\n"),
            "\"LeadId\",\"a\nb\"",
            false,
        ),
        ("LeadId,Name".to_owned(), "LeadId,Name", false),
        ("LeadId,Name\r\n".to_owned(), "LeadId,Name", true),
    ] {
        assert_eq!(line(csv.as_bytes()), (header.into(), crlf), "{csv:?}");
    }
    let r = LeadReader::from_reader(
        Box::new(std::io::Cursor::new(b"LeadId,Pr\xe9nom\n".to_vec())),
        "leads.csv".to_owned(),
        InputOptions {
            encoding: Some(TextEncoding::Windows1252),
            ..InputOptions::default()
        },
    )
    .unwrap();
    let line = r.header_line();
    assert_eq!(line.bytes, "LeadId,Prénom".as_bytes(), "decoded");
    let mut bytes = Vec::new();
    line.encoding
        .encode(std::str::from_utf8(&line.bytes).unwrap(), &mut bytes);
    assert_eq!(bytes, b"LeadId,Pr\xe9nom", "and encoded back as it was");
}

#[test]
fn raw_cells_are_kept_only_when_asked_for() {
    let csv = format!("LeadId,Name\n {A} , Ann \n");
    assert_eq!(rows(&csv)[0].raw, None);
    let kept = rows_with(
        &csv,
        InputOptions {
            keep_raw: true,
            ..InputOptions::default()
        },
    );
    let raw = kept[0].raw.as_ref().unwrap();
    assert_eq!(
        raw,
        &csv::ByteRecord::from(vec![format!(" {A} "), " Ann ".into()])
    );
}

#[test]
fn the_check_of_a_files_text_stops_where_the_reader_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leads.csv");
    let check = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        check_text(file, &path, None, Limits::default())
    };
    let mut deep = format!("LeadId\n{}", format!("{A}\n").repeat(3000)).into_bytes();
    deep.extend_from_slice(b"\xe9\n");
    let err = check(&deep).unwrap_err();
    assert!(err.is_usage());
    assert!(err.to_string().contains("line 3002 is not UTF-8"), "{err}");
    // A row longer than any row may be is the reader's to stop at; the
    // check reads no further than the reader will.
    let mut long = b"LeadId\n".to_vec();
    long.resize(long.len() + (2 << 20), b'0');
    long.extend_from_slice(b"\xe9\n");
    assert!(check(&long).is_ok());
}
