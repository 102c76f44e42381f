//! Secrets (access key, secret key, tenant and public auth keys, SMTP password):
//! a wrapper whose `Debug` and `Display` print `***`, so a secret cannot reach a
//! log line, an error message or a report by accident; and the [`Scrubber`]
//! that takes them out of any text that came from outside (an API answer, an
//! SMTP reply, a config file's parse error) before it is printed, reported or
//! stored, since a server may echo what it was sent.

use std::fmt;

use base64::Engine as _;

/// A secret string. Read it with [`Secret::expose`] only where it must go on the
/// wire.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// What a scrubbed secret reads as.
const MASK: &str = "***";

/// Secrets shorter than this are not scrubbed: they would blank out ordinary
/// words, and are no key.
const SHORTEST: usize = 3;

/// A secret cut off by the end of a text (a truncated echo) is scrubbed when at
/// least this much of it is there.
const CUT_OFF: usize = 8;

/// Takes secrets out of text from outside, in every form a server may echo
/// them in: as they are; percent-encoded in either case, with `+` or `%20`
/// for a space, or twice (`%2524`); escaped in JSON (`\/`, `\u0024`) or HTML
/// (`&amp;`, `&#36;`); base64-encoded alone or inside a longer base64 text
/// (an SMTP `AUTH PLAIN` echo); or cut off by the end of the text.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<Vec<u8>>,
    /// For each secret, the stretches of its base64 that stay the same
    /// wherever it starts inside a longer base64 text.
    base64: Vec<String>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

impl Scrubber {
    /// A scrubber for these secrets.
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Scrubber {
        Scrubber::default().with(secrets)
    }

    /// This scrubber with more secrets.
    pub(crate) fn with<'a>(&self, more: impl IntoIterator<Item = &'a Secret>) -> Scrubber {
        let mut scrubber = self.clone();
        for secret in more {
            let bytes = secret.expose().as_bytes();
            if bytes.len() >= SHORTEST && !scrubber.secrets.iter().any(|s| s == bytes) {
                scrubber.secrets.push(bytes.to_vec());
                scrubber.base64.extend(base64_cores(bytes));
            }
        }
        // Longest first, so a secret inside another never leaves a piece of it.
        scrubber.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        scrubber
    }

    /// `text` with every secret, in every form, replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        if self.secrets.is_empty() {
            return text.to_owned();
        }
        // Whole base64 runs first: a core replaced first would split a run
        // and leave the rest of it (an `AUTH PLAIN` blob's user name).
        let mut text = self.scrub_base64_runs(&self.scrub_encoded(text));
        for core in &self.base64 {
            if text.contains(core.as_str()) {
                text = text.replace(core.as_str(), MASK);
            }
        }
        text
    }

    /// Bytes from outside (invalid UTF-8 included) as scrubbed text.
    pub(crate) fn scrub_bytes(&self, bytes: &[u8]) -> String {
        self.scrub(&String::from_utf8_lossy(bytes))
    }

    /// Replaces each secret found raw or escaped (see [`match_at`]).
    fn scrub_encoded(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let found = self
                .secrets
                .iter()
                .find_map(|secret| match_at(bytes, i, secret, 0));
            match found {
                Some(end) => {
                    out.extend_from_slice(MASK.as_bytes());
                    i = end;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        // A match starts and ends on ASCII or on whole escapes, never inside
        // a multi-byte character.
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    /// Replaces every run of base64 characters whose decoding holds a secret
    /// (an `AUTH PLAIN` blob names the user beside the password).
    fn scrub_base64_runs(&self, text: &str) -> String {
        let is_b64 = |c: char| c.is_ascii_alphanumeric() || "+/-_=".contains(c);
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(is_b64) {
            out.push_str(&rest[..start]);
            let len = rest[start..]
                .find(|c| !is_b64(c))
                .unwrap_or(rest.len() - start);
            let run = &rest[start..start + len];
            let decoded = decode_base64(run);
            let holds = decoded.as_deref().is_some_and(|d| {
                (0..d.len()).any(|i| self.secrets.iter().any(|s| match_at(d, i, s, 0).is_some()))
            });
            out.push_str(if holds { MASK } else { run });
            rest = &rest[start + len..];
        }
        out + rest
    }
}

/// Where a match of `secret[si..]` that starts at `text[ti..]` ends. Each
/// byte of the secret may appear as itself or in any escape a server might
/// echo it in; a secret cut off by the end of the text matches once
/// [`CUT_OFF`] bytes of it are in.
fn match_at(text: &[u8], ti: usize, secret: &[u8], si: usize) -> Option<usize> {
    let Some(&want) = secret.get(si) else {
        return Some(ti);
    };
    let Some(&first) = text.get(ti) else {
        return (si >= CUT_OFF).then_some(ti);
    };
    // Every form begins with the byte itself or one of these.
    if first != want && !matches!(first, b'+' | b'%' | b'\\' | b'&') {
        return None;
    }
    let rest = &text[ti..];
    let found = escapes(rest, want)
        .into_iter()
        .flatten()
        .find_map(|used| match_at(text, ti + used, secret, si + 1));
    // An escape cut short by the end of the text (`%2`) ends a cut-off secret.
    let unfinished = rest.len() < 6 && matches!(first, b'%' | b'\\' | b'&');
    found.or((si >= CUT_OFF && unfinished).then_some(text.len()))
}

/// The lengths of the forms of byte `want` that `text` starts with.
fn escapes(text: &[u8], want: u8) -> [Option<usize>; 5] {
    let hex = |at: usize| text.get(at..at + 2).and_then(hex_number);
    let starts = |prefix: &[u8]| {
        text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    [
        (text[0] == want || (text[0] == b'+' && want == b' ')).then_some(1),
        (text[0] == b'%' && hex(1) == Some(want)).then_some(3),
        (starts(b"%25") && hex(3) == Some(want)).then_some(5),
        // JSON: \/ \\ \" and \u00XX.
        match text {
            [b'\\', c, ..] if *c == want && b"/\\\"".contains(c) => Some(2),
            _ if starts(b"\\u00") && hex(4) == Some(want) => Some(6),
            _ => None,
        },
        html_entity(text, want),
    ]
}

/// The length of an HTML character reference to `want` at the start of
/// `text`: `&amp;`, `&quot;`, `&lt;`, `&gt;`, `&apos;`, `&#36;` or `&#x24;`.
fn html_entity(text: &[u8], want: u8) -> Option<usize> {
    if text.first() != Some(&b'&') {
        return None;
    }
    let end = text.iter().take(10).position(|&c| c == b';')?;
    let code = match &text[1..end] {
        b"amp" => b'&',
        b"quot" => b'"',
        b"lt" => b'<',
        b"gt" => b'>',
        b"apos" => b'\'',
        [b'#', b'x' | b'X', digits @ ..] => hex_number(digits)?,
        [b'#', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            std::str::from_utf8(digits).ok()?.parse().ok()?
        }
        _ => return None,
    };
    (code == want).then_some(end + 1)
}

/// Hex digits (and nothing else) as a byte.
fn hex_number(digits: &[u8]) -> Option<u8> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// The stretches of `secret`'s base64, in the standard and the URL-safe
/// alphabet, that are the same wherever the secret starts in a longer
/// encoded text (its offset from a 3-byte boundary being 0, 1 or 2).
fn base64_cores(secret: &[u8]) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut cores = Vec::new();
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(secret);
        // Characters carry 6 bits: skip those touching the padding in
        // front, and a last one that the following bytes would change.
        let start = (offset * 8).div_ceil(6);
        let end = bytes.len() * 8 / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&bytes);
            if end > start + 3 {
                cores.push(encoded[start..end].to_owned());
            }
        }
    }
    cores.sort();
    cores.dedup();
    cores
}

/// A run of base64 characters decoded, in either alphabet, padded or not.
fn decode_base64(run: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::NO_PAD
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    if run.len() < CUT_OFF {
        return None;
    }
    let standard: String = run
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let usable = standard.len() - usize::from(standard.len() % 4 == 1);
    LENIENT.decode(&standard[..usable]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKplantA$+/=&1";

    fn scrubbed(text: &str) -> String {
        Scrubber::new([&Secret::new(KEY), &Secret::new("SKplantS&=+/$2")]).scrub(text)
    }

    #[test]
    fn every_form_of_a_secret_is_scrubbed() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let url_b64 = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        let forms = [
            KEY.to_owned(),
            "AKplantA%24%2B%2F%3D%261".into(),
            "AKplantA%24%2b%2f%3d%261".into(),
            "%41%4B%70lantA$+/=&1".into(),
            "AKplantA%2524%252B%252F%253D%25261".into(),
            "AKplantA$+\\/=&1".into(),
            "AKplantA\\u0024\\u002B/=\\u00261".into(),
            "AKplantA&#36;&#x2B;/&#61;&amp;1".into(),
            b64(KEY),
            url_b64(KEY),
            b64(&format!("\0user\0{KEY}")),
            format!("{}{}", b64(&format!("\0user\0{KEY}")), b64("more")),
            b64(&format!("x{KEY}yz")),
            b64(&format!("xy{KEY}z")),
        ];
        for form in forms {
            let text = format!("before {form} after");
            let clean = scrubbed(&text);
            assert!(
                !clean.contains("AKplant") && clean.contains("***"),
                "{text} -> {clean}"
            );
            assert!(
                clean.starts_with("before ") && clean.ends_with(" after"),
                "{clean}"
            );
            for core in base64_cores(KEY.as_bytes()) {
                assert!(!clean.contains(&core), "{text} -> {clean}");
            }
        }
    }

    #[test]
    fn a_secret_cut_off_by_the_end_of_the_text_is_scrubbed() {
        assert_eq!(
            scrubbed("url: x?accessKey=AKplantA%24%2"),
            "url: x?accessKey=***"
        );
        // Too little of it to tell from other text.
        assert_eq!(scrubbed("AKplant"), "AKplant");
    }

    #[test]
    fn other_text_is_left_alone() {
        let text = "Invalid credentials: 100% sure & \\u00e9t\u{e9} + more; &amp; QUtwbGFudA==";
        assert_eq!(scrubbed(text), text);
        assert_eq!(Scrubber::default().scrub(text), text);
        // Too short to be a key.
        assert_eq!(Scrubber::new([&Secret::new("ab")]).scrub("abab"), "abab");
    }

    #[test]
    fn a_space_may_be_a_plus_or_percent_20() {
        let scrubber = Scrubber::new([&Secret::new("pass word/x")]);
        for text in ["pass+word%2Fx", "pass%20word%2fx", "pass word/x"] {
            assert_eq!(scrubber.scrub(text), "***", "{text}");
        }
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
