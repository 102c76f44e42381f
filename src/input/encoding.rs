//! The input's encoding: which one a file is written in (a byte-order mark,
//! NUL bytes, or `--encoding` say), [`Decode`], which hands the rest of the
//! reader UTF-8 and stops at the first line that is not in the encoding, and
//! [`Encoding::encode`], which writes text back in the file's own encoding
//! for the files of input rows.
//!
//! A spreadsheet saved as a workbook instead of CSV is caught here too, by
//! its first bytes, whatever its name.

use std::io::{self, Read};
use std::str::FromStr;

use super::lines::count_breaks_after;
use super::Fault;

/// An encoding `--encoding` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8, the default.
    Utf8,
    /// Windows-1252, which `latin1` names too: as in browsers, ISO-8859-1 is
    /// read as its superset, where 0x80–0x9F are `€`, `‘`, `’` and the like.
    Windows1252,
    /// UTF-16, little- or big-endian as a byte-order mark or the file's NUL
    /// bytes say; little-endian, as Windows writes it, when neither does.
    Utf16,
}

impl FromStr for TextEncoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(TextEncoding::Utf8),
            "latin1" | "latin-1" | "iso-8859-1" | "windows-1252" | "cp1252" => {
                Ok(TextEncoding::Windows1252)
            }
            "utf-16" | "utf16" => Ok(TextEncoding::Utf16),
            _ => Err(format!(
                "unknown encoding {s:?}: use utf-8, latin1, windows-1252 or utf-16"
            )),
        }
    }
}

/// The encoding a file is written in, as found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8.
    #[default]
    Utf8,
    /// Windows-1252 (and Latin-1).
    Windows1252,
    /// UTF-16, little-endian.
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Windows1252 => "windows-1252",
            Encoding::Utf16Le => "UTF-16LE",
            Encoding::Utf16Be => "UTF-16BE",
        })
    }
}

impl Encoding {
    /// The file's encoding from its first bytes and `--encoding`, and how
    /// long its byte-order mark is. A byte-order mark is taken at its word
    /// over `--encoding`; without one, UTF-16 shows by its NUL bytes (the
    /// header's letters are ASCII).
    fn sniff(head: &[u8], asked: Option<TextEncoding>) -> (Encoding, usize) {
        if head.starts_with(b"\xEF\xBB\xBF") {
            return (Encoding::Utf8, 3);
        }
        if head.starts_with(b"\xFF\xFE") {
            return (Encoding::Utf16Le, 2);
        }
        if head.starts_with(b"\xFE\xFF") {
            return (Encoding::Utf16Be, 2);
        }
        let nul = |i: usize| head.get(i) == Some(&0);
        let (le, be) = (nul(1) && !nul(0), nul(0) && !nul(1));
        let found = match asked {
            Some(TextEncoding::Utf8) => Encoding::Utf8,
            Some(TextEncoding::Windows1252) => Encoding::Windows1252,
            Some(TextEncoding::Utf16) if be => Encoding::Utf16Be,
            Some(TextEncoding::Utf16) => Encoding::Utf16Le,
            None if le => Encoding::Utf16Le,
            None if be => Encoding::Utf16Be,
            None => Encoding::Utf8,
        };
        (found, 0)
    }

    fn decoder(self) -> Option<encoding_rs::Decoder> {
        let encoding = match self {
            Encoding::Utf8 => return None,
            Encoding::Windows1252 => encoding_rs::WINDOWS_1252,
            Encoding::Utf16Le => encoding_rs::UTF_16LE,
            Encoding::Utf16Be => encoding_rs::UTF_16BE,
        };
        Some(encoding.new_decoder_without_bom_handling())
    }

    /// Appends `text` to `out` in this encoding. Text read from a file in it
    /// goes back to the same bytes (a BOM is the character U+FEFF).
    pub(crate) fn encode(self, text: &str, out: &mut Vec<u8>) {
        match self {
            Encoding::Utf8 => out.extend_from_slice(text.as_bytes()),
            Encoding::Windows1252 => {
                out.extend_from_slice(&encoding_rs::WINDOWS_1252.encode(text).0);
            }
            Encoding::Utf16Le => out.extend(text.encode_utf16().flat_map(u16::to_le_bytes)),
            Encoding::Utf16Be => out.extend(text.encode_utf16().flat_map(u16::to_be_bytes)),
        }
    }
}

/// The UTF-8 byte-order mark, which [`Decode`] puts ahead of a file's text
/// when the file had a mark of its own.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes read from the file at a time when decoding.
const CHUNK: usize = 64 << 10;

/// A reader that hands on the input as UTF-8: a UTF-8 file as it is, after
/// checking it, any other decoded. The first line that is not in the
/// file's encoding is a [`Fault`], after the lines before it.
pub(super) struct Decode {
    inner: Box<dyn Read + Send>,
    asked: Option<TextEncoding>,
    encoding: Encoding,
    decoder: Option<encoding_rs::Decoder>,
    /// Bytes read but not handed on yet: the first ones, read to find the
    /// encoding, and, when decoding, the file's bytes not decoded yet.
    raw: Vec<u8>,
    raw_at: usize,
    /// Decoded bytes not handed on yet.
    out: Vec<u8>,
    out_at: usize,
    /// The start of a UTF-8 character that the last read cut in two.
    cut: Vec<u8>,
    /// Line breaks handed on, and whether the last byte was a `\r`.
    breaks: u64,
    after_cr: bool,
    started: bool,
    eof: bool,
    /// The decoder has had the file's last bytes.
    flushed: bool,
    fault: Option<Fault>,
}

impl Decode {
    /// Decodes `inner`, in the encoding its first bytes show or, when they
    /// show none, `asked`.
    pub(super) fn new(inner: Box<dyn Read + Send>, asked: Option<TextEncoding>) -> Decode {
        Decode {
            inner,
            asked,
            encoding: Encoding::Utf8,
            decoder: None,
            raw: Vec::new(),
            raw_at: 0,
            out: Vec::new(),
            out_at: 0,
            cut: Vec::new(),
            breaks: 0,
            after_cr: false,
            started: false,
            eof: false,
            flushed: false,
            fault: None,
        }
    }

    /// The encoding found; known once the first read has been made.
    pub(super) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Reads the first bytes (enough to see a byte-order mark, NULs or a
    /// workbook's signature) and settles the encoding.
    fn start(&mut self) -> io::Result<()> {
        self.started = true;
        self.raw.resize(CHUNK, 0);
        let mut end = 0;
        while end < 8 && !self.eof {
            match self.inner.read(&mut self.raw[end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.raw.truncate(end);
        if let Some(workbook) = Workbook::of(&self.raw) {
            self.fault = Some(Fault::Workbook(workbook));
            return Ok(());
        }
        let (encoding, bom) = Encoding::sniff(&self.raw, self.asked);
        self.encoding = encoding;
        self.decoder = encoding.decoder();
        if self.decoder.is_some() {
            self.raw_at = bom;
            if bom > 0 {
                self.out.extend_from_slice(BOM);
            }
        }
        Ok(())
    }

    /// Decodes the next bytes of the file into `out`; the file's end
    /// flushes the decoder.
    fn decode(&mut self) -> io::Result<()> {
        if self.raw_at >= self.raw.len() && !self.eof {
            self.raw.resize(CHUNK, 0);
            let n = loop {
                match self.inner.read(&mut self.raw) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            self.raw.truncate(n);
            self.raw_at = 0;
            self.eof = n == 0;
        }
        let Some(decoder) = &mut self.decoder else {
            return Ok(());
        };
        let src = &self.raw[self.raw_at..];
        let room = decoder
            .max_utf8_buffer_length_without_replacement(src.len())
            .unwrap_or(CHUNK * 3)
            .max(4);
        self.out.clear();
        self.out_at = 0;
        self.out.resize(room, 0);
        let (result, read, written) =
            decoder.decode_to_utf8_without_replacement(src, &mut self.out, self.eof);
        self.raw_at += read;
        self.out.truncate(written);
        self.flushed = self.eof && self.raw_at >= self.raw.len();
        if let encoding_rs::DecoderResult::Malformed(..) = result {
            self.fault = Some(Fault::NotInEncoding {
                line: self.line_in(&self.out),
                encoding: self.encoding,
            });
        }
        Ok(())
    }

    /// The line `bytes` end on, counting from the bytes handed on so far.
    fn line_in(&self, bytes: &[u8]) -> u64 {
        1 + self.breaks + count_breaks_after(bytes, self.after_cr)
    }

    /// Notes the breaks in bytes handed on.
    fn passed(&mut self, bytes: &[u8]) {
        self.breaks += count_breaks_after(bytes, self.after_cr);
        if let Some(&last) = bytes.last() {
            self.after_cr = last == b'\r';
        }
    }

    /// Checks that the bytes just read into `buf` continue the UTF-8 so far;
    /// hands back how many of them may be passed on.
    fn check_utf8(&mut self, buf: &[u8]) -> usize {
        let mut from = 0;
        if !self.cut.is_empty() {
            // Complete the character the last read cut, then check it.
            let width = utf8_width(self.cut[0]);
            let take = (width - self.cut.len()).min(buf.len());
            self.cut.extend_from_slice(&buf[..take]);
            from = take;
            if self.cut.len() < width && from == buf.len() {
                return buf.len();
            }
            if std::str::from_utf8(&self.cut).is_err() {
                self.not_utf8(&buf[..0]);
                return 0;
            }
            self.cut.clear();
        }
        match std::str::from_utf8(&buf[from..]) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() => {
                self.cut.extend_from_slice(&buf[from + e.valid_up_to()..]);
                buf.len()
            }
            Err(e) => {
                let good = from + e.valid_up_to();
                self.not_utf8(&buf[..good]);
                good
            }
        }
    }

    /// The file is not UTF-8 after `good`, the last good bytes read.
    fn not_utf8(&mut self, good: &[u8]) {
        self.fault = Some(Fault::NotUtf8 {
            line: self.line_in(good),
        });
    }
}

/// The length of the UTF-8 character that starts with `lead` (1 for a byte
/// no character starts with, which then fails the check).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

impl Read for Decode {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.start()?;
        }
        loop {
            if self.out_at < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_at);
                buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
                self.out_at += n;
                self.passed(&buf[..n]);
                return Ok(n);
            }
            if let Some(fault) = &self.fault {
                return Err(io::Error::new(io::ErrorKind::InvalidData, fault.clone()));
            }
            if buf.is_empty() {
                return Ok(0);
            }
            if self.decoder.is_some() {
                if self.flushed {
                    return Ok(0);
                }
                self.decode()?;
                continue;
            }
            // UTF-8: the bytes read to find the encoding, then straight from
            // the file into `buf`, checked there.
            let n = if self.raw_at < self.raw.len() {
                let n = buf.len().min(self.raw.len() - self.raw_at);
                buf[..n].copy_from_slice(&self.raw[self.raw_at..self.raw_at + n]);
                self.raw_at += n;
                n
            } else if self.eof {
                0
            } else {
                match self.inner.read(buf) {
                    Ok(0) => {
                        self.eof = true;
                        0
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                if !self.cut.is_empty() {
                    self.cut.clear();
                    self.fault = Some(Fault::NotUtf8 {
                        line: self.line_in(&[]),
                    });
                    continue;
                }
                return Ok(0);
            }
            let good = self.check_utf8(&buf[..n]);
            self.passed(&buf[..good]);
            if good > 0 {
                return Ok(good);
            }
        }
    }
}

/// A spreadsheet saved as a workbook, which no CSV reader can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workbook {
    /// An Excel 2007+ workbook, a zip file (`.xlsx`, also `.ods` and other
    /// zipped formats).
    Zip,
    /// An Excel 97–2003 workbook (`.xls`), an OLE compound file.
    Ole,
}

impl Workbook {
    fn of(head: &[u8]) -> Option<Workbook> {
        if head.starts_with(b"PK\x03\x04") {
            Some(Workbook::Zip)
        } else if head.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
            Some(Workbook::Ole)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Workbook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Workbook::Zip => "an Excel workbook (.xlsx) or another zip file",
            Workbook::Ole => "an Excel 97-2003 workbook (.xls)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8], asked: Option<TextEncoding>) -> Result<(String, Encoding), Fault> {
        let mut decode = Decode::new(Box::new(io::Cursor::new(bytes.to_vec())), asked);
        let mut out = Vec::new();
        match decode.read_to_end(&mut out) {
            Ok(_) => Ok((String::from_utf8(out).unwrap(), decode.encoding())),
            Err(e) => Err(e
                .into_inner()
                .unwrap()
                .downcast::<Fault>()
                .map(|f| *f)
                .unwrap()),
        }
    }

    fn utf16le(text: &str, bom: bool) -> Vec<u8> {
        let mut out = if bom { vec![0xFF, 0xFE] } else { Vec::new() };
        out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        out
    }

    #[test]
    fn utf16_is_found_by_its_mark_or_its_nuls() {
        let text = "LeadId;Prénom\r\nx;Zoë\r\n";
        assert_eq!(
            decoded(&utf16le(text, true), None).unwrap(),
            (format!("\u{feff}{text}"), Encoding::Utf16Le)
        );
        assert_eq!(
            decoded(&utf16le(text, false), None).unwrap(),
            (text.to_owned(), Encoding::Utf16Le)
        );
        let mut be = vec![0xFE, 0xFF];
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(decoded(&be, None).unwrap().1, Encoding::Utf16Be);
    }

    #[test]
    fn latin1_is_read_when_asked_for() {
        let bytes = b"LeadId,Pr\xe9nom\nx,Zo\xeb \x80\n";
        assert_eq!(
            decoded(bytes, Some(TextEncoding::Windows1252)).unwrap(),
            ("LeadId,Prénom\nx,Zoë €\n".to_owned(), Encoding::Windows1252)
        );
        assert_eq!(
            decoded(bytes, None).unwrap_err(),
            Fault::NotUtf8 { line: 1 },
            "not UTF-8, and not said otherwise"
        );
    }

    #[test]
    fn the_first_line_not_in_utf8_is_named() {
        let mut bytes = b"LeadId\r\na\r\n\"b\nc\"\r\n".to_vec();
        bytes.extend_from_slice(b"J\xe9r\xf4me\r\n");
        assert_eq!(
            decoded(&bytes, None).unwrap_err(),
            Fault::NotUtf8 { line: 5 }
        );
        // A character cut at the end of the file, and one cut by a read.
        assert_eq!(
            decoded(b"LeadId\n\xc3", None).unwrap_err(),
            Fault::NotUtf8 { line: 2 }
        );
        let text = "LeadId\nZoë\n".repeat(20_000);
        let mut decode = Decode::new(Box::new(io::Cursor::new(text.clone().into_bytes())), None);
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = decode.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, text.as_bytes());
    }

    #[test]
    fn a_utf16_file_with_a_lone_surrogate_is_named_at_its_line() {
        let mut bytes = utf16le("LeadId\nx\n", true);
        bytes.extend_from_slice(&[0x00, 0xD8, b'y', 0]);
        assert_eq!(
            decoded(&bytes, None).unwrap_err(),
            Fault::NotInEncoding {
                line: 3,
                encoding: Encoding::Utf16Le
            }
        );
    }

    #[test]
    fn workbooks_are_known_by_their_first_bytes() {
        let xlsx = b"PK\x03\x04\x14\x00\x06\x00rest";
        assert_eq!(
            decoded(xlsx, None).unwrap_err(),
            Fault::Workbook(Workbook::Zip)
        );
        let xls = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\x00\x00";
        assert_eq!(
            decoded(xls, Some(TextEncoding::Utf8)).unwrap_err(),
            Fault::Workbook(Workbook::Ole)
        );
    }

    #[test]
    fn text_goes_back_to_the_files_bytes() {
        let text = "\u{feff}Prénom,Zoë €\r\n";
        let mut be = Vec::new();
        be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
        for (encoding, bytes) in [
            (Encoding::Utf8, text.as_bytes().to_vec()),
            (Encoding::Utf16Le, utf16le(text, false)),
            (Encoding::Utf16Be, be),
        ] {
            let mut out = Vec::new();
            encoding.encode(text, &mut out);
            assert_eq!(out, bytes, "{encoding}");
        }
        let latin1 = b"Pr\xe9nom,Zo\xeb \x80\x81\r\n";
        let (text, _) = decoded(latin1, Some(TextEncoding::Windows1252)).unwrap();
        let mut out = Vec::new();
        Encoding::Windows1252.encode(&text, &mut out);
        assert_eq!(out, latin1, "every byte goes back to itself");
    }

    #[test]
    fn encodings_are_named_as_people_write_them() {
        for (name, encoding) in [
            ("UTF-8", TextEncoding::Utf8),
            ("latin1", TextEncoding::Windows1252),
            ("ISO-8859-1", TextEncoding::Windows1252),
            ("windows-1252", TextEncoding::Windows1252),
            ("utf-16", TextEncoding::Utf16),
        ] {
            assert_eq!(name.parse::<TextEncoding>(), Ok(encoding), "{name}");
        }
        let err = "ebcdic".parse::<TextEncoding>().unwrap_err();
        assert!(
            err.contains("utf-8, latin1, windows-1252 or utf-16"),
            "{err}"
        );
    }
}
