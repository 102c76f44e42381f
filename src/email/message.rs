//! Building one lead's message: addresses, the Message-ID (deterministic, or
//! new for a deliberate resend), and the MIME structure.
//!
//! Only lettre's typed builder writes headers. Addresses are parsed into
//! [`Address`] (which cannot hold CR or LF) and the subject is folded onto one
//! line, so nothing taken from the CSV can add a header such as `Bcc:`.
//!
//! Every header line fits RFC 5322's limits: lettre folds a subject at its
//! spaces, and a subject with a word too long to fold there is written as
//! RFC 2047 encoded words instead, one short line each. A message with a line
//! over 998 characters is refused here, so the outbox shows only what an SMTP
//! server would take.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use rand::Rng as _;

use super::template::{one_line, Rendered};

/// The Message-ID for one lead in one campaign:
/// `<lsq-dispatch.{hash of campaign}.{lead_id}@{domain}>`.
///
/// Deterministic, so a message sent again because its first copy is in doubt
/// carries the same id: a mail system that did get the first copy can drop the
/// second, and the report can be matched with the mailbox. `domain` is the
/// domain of the From address. Characters that a Message-ID cannot hold are
/// replaced with `_`. A deliberate resend uses [`resend_message_id`] instead.
pub fn message_id(campaign: &str, lead_id: &str, domain: &str) -> String {
    let lead: String = lead_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let domain: String = domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let domain = domain.trim_matches('.');
    let domain = if domain.is_empty() {
        "lsq-dispatch.invalid"
    } else {
        domain
    };
    format!("<lsq-dispatch.{:016x}.{lead}@{domain}>", fnv1a(campaign))
}

/// A Message-ID for a deliberate new copy (`--resend`): the lead's
/// [`message_id`] with a random part, different on every call, since a mail
/// system that deduplicates on the id would drop a copy that reused it.
pub fn resend_message_id(campaign: &str, lead_id: &str, domain: &str) -> String {
    let id = message_id(campaign, lead_id, domain);
    let at = id.rfind('@').expect("a Message-ID always has a domain");
    format!(
        "{}.{:016x}{}",
        &id[..at],
        rand::rng().random::<u64>(),
        &id[at..]
    )
}

/// FNV-1a, 64-bit: stable across Rust releases and platforms, unlike std's
/// `DefaultHasher`, which a Message-ID must be to stay the same between runs.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Parses a recipient address from a CSV cell, for checking every row's Email
/// column before the first API call. The error is ready for the report's
/// `error` column (the cell is shown escaped, so a CR or LF stays visible).
///
/// Only addresses a message can be delivered to pass: lettre's parser takes
/// an IP address in place of the domain (`u@[127.0.0.1]`), but its message
/// headers cannot carry one, and mail systems do not route to it, so such a
/// row would mint a key and then fail. The address must also read back from
/// the To header, since that is where the recipient is taken from.
pub fn check_address(s: &str) -> Result<Address, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("no email address".to_owned());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid email address {s:?}: contains whitespace or control characters"
        ));
    }
    let address = s
        .parse::<Address>()
        .map_err(|e| format!("invalid email address {s:?}: {e}"))?;
    let domain = address.domain();
    if domain.starts_with('[') || domain.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "invalid email address {s:?}: an IP address in place of the domain cannot \
             be delivered to; use the address with its domain name"
        ));
    }
    // The recipient is the address as read back: the one the message goes
    // to (`"ann"@example.com` reads back as the same mailbox, `ann@…`).
    let in_header = Mailbox::new(None, address).to_string();
    in_header
        .parse::<Mailbox>()
        .map(|read_back| read_back.email)
        .map_err(|_| format!("invalid email address {s:?}: a message header cannot carry it"))
}

/// Who every message of a run is from, where replies go, and how a reader
/// unsubscribes.
#[derive(Clone, Debug, PartialEq)]
pub struct Sender {
    /// The From address.
    pub from: Mailbox,
    /// `--reply-to`: the Reply-To address.
    pub reply_to: Option<Mailbox>,
    /// `--list-unsubscribe`: the List-Unsubscribe header.
    pub list_unsubscribe: Option<ListUnsubscribe>,
}

impl From<Mailbox> for Sender {
    fn from(from: Mailbox) -> Sender {
        Sender {
            from,
            reply_to: None,
            list_unsubscribe: None,
        }
    }
}

/// The ways a reader unsubscribes (RFC 2369): a `mailto:` address, an
/// `https://` URL, or one of each. With a URL, the message also says that
/// one POST to it unsubscribes (RFC 8058 one-click), which large mailbox
/// providers require of bulk senders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListUnsubscribe {
    mailto: Option<String>,
    https: Option<String>,
}

/// Stands for the recipient's address, percent-encoded, in an unsubscribe
/// URL, so the URL can say who unsubscribes.
const RECIPIENT: &str = "{email}";

impl std::str::FromStr for ListUnsubscribe {
    type Err = String;

    /// Parses `mailto:ADDRESS`, `https://…`, or both separated by a comma.
    /// An `https` URL may hold `{email}`, which each message replaces with its
    /// recipient's address.
    fn from_str(value: &str) -> Result<ListUnsubscribe, String> {
        let mut parsed = ListUnsubscribe {
            mailto: None,
            https: None,
        };
        let usage = "use mailto:ADDRESS or an https:// URL, or one of each separated by a comma";
        for uri in value.split(',').map(str::trim) {
            if uri
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c))
            {
                return Err(format!(
                    "{uri:?} holds a space, a quote or an angle bracket, which a URI cannot; {usage}"
                ));
            }
            let lower = uri.to_ascii_lowercase();
            if let Some(rest) = lower.strip_prefix("mailto:").map(|_| &uri[7..]) {
                let address = rest.split('?').next().unwrap_or_default();
                check_address(&percent_encoding::percent_decode_str(address).decode_utf8_lossy())
                    .map_err(|e| format!("{uri:?}: {e}"))?;
                if parsed.mailto.replace(uri.to_owned()).is_some() {
                    return Err(format!("two mailto: addresses; {usage}"));
                }
            } else if lower.starts_with("https://") {
                let probe = uri.replace(RECIPIENT, "ann%40example.com");
                let url = url::Url::parse(&probe).map_err(|e| format!("{uri:?}: {e}; {usage}"))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("{uri:?} names no host; {usage}"));
                }
                if parsed.https.replace(uri.to_owned()).is_some() {
                    return Err(format!("two https:// URLs; {usage}"));
                }
            } else {
                return Err(format!(
                    "{uri:?} is neither a mailto: address nor an https:// URL (plain http:// \
                     is not one-click safe); {usage}"
                ));
            }
        }
        Ok(parsed)
    }
}

impl ListUnsubscribe {
    /// The List-Unsubscribe value for a message to `to`: the URL first, as
    /// mailbox providers prefer it.
    fn header(&self, to: &Address) -> String {
        // Everything but RFC 3986's unreserved characters.
        const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let email = percent_encoding::utf8_percent_encode(to.as_ref(), ESCAPED).to_string();
        self.https
            .iter()
            .map(|url| url.replace(RECIPIENT, &email))
            .chain(self.mailto.iter().cloned())
            .map(|uri| format!("<{uri}>"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Builds the message: From, To, Subject, Date and Message-ID, Reply-To and
/// List-Unsubscribe (with List-Unsubscribe-Post for a URL) when the sender
/// has them, with a multipart/alternative body (text and HTML) or a
/// text-only body when there is no HTML template.
pub fn build_message(
    sender: &Sender,
    to: &Address,
    rendered: &Rendered,
    message_id: &str,
) -> anyhow::Result<Message> {
    if message_id
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("invalid Message-ID {message_id:?}");
    }
    let mut builder = Message::builder()
        .from(sender.from.clone())
        .to(Mailbox::new(None, to.clone()))
        // `Rendered::subject` is already one line; folding again keeps that
        // true for a `Rendered` built by hand.
        .raw_header(subject_header(one_line(&rendered.subject)))
        .date_now()
        .message_id(Some(message_id.to_owned()));
    if let Some(reply_to) = &sender.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    if let Some(unsubscribe) = &sender.list_unsubscribe {
        let header = |name, value| HeaderValue::new(HeaderName::new_from_ascii_str(name), value);
        builder = builder.raw_header(header("List-Unsubscribe", unsubscribe.header(to)));
        if unsubscribe.https.is_some() {
            builder = builder.raw_header(header(
                "List-Unsubscribe-Post",
                "List-Unsubscribe=One-Click".to_owned(),
            ));
        }
    }
    let message = match &rendered.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            rendered.text.clone(),
            html.clone(),
        )),
        None => builder.singlepart(SinglePart::plain(rendered.text.clone())),
    }
    .with_context(|| format!("cannot build the message to {to}"))?;
    check_header_lines(&message)?;
    Ok(message)
}

/// RFC 5322's limit on any line, without its CRLF.
const MAX_LINE: usize = 998;
/// The line length RFC 5322 recommends; lettre folds at spaces to it.
const FOLDED_LINE: usize = 78;
/// Bytes of text per encoded word: 56 characters of base64, so
/// `Subject: =?utf-8?b?…?=` is 77 characters and a folded line 69.
const ENCODED_WORD_BYTES: usize = 42;

/// The Subject header for a one-line `subject`. lettre folds only at spaces
/// (encoding non-ASCII words, which it also splits), so an ASCII word too long
/// for one line would stay one line, however long. Such a subject is written
/// as RFC 2047 encoded words, one per line, which a mail reader joins back
/// into the same text. So is a subject holding `=?`: lettre leaves ASCII
/// text as it is, and a mail reader would decode a cell such as
/// `=?utf-8?q?hi?=` to `hi`; encoded, it shows as typed.
fn subject_header(subject: String) -> HeaderValue {
    let name = HeaderName::new_from_ascii_str("Subject");
    let room = FOLDED_LINE - "Subject: ".len();
    let unfoldable = subject
        .split(' ')
        .any(|word| word.is_ascii() && word.len() > room);
    if !unfoldable && !subject.contains("=?") {
        return HeaderValue::new(name, subject);
    }
    let encoded = encoded_words(&subject).join("\r\n ");
    // Safe: the text is base64 and the fixed RFC 2047 markers, folded by hand.
    HeaderValue::dangerous_new_pre_encoded(name, subject, encoded)
}

/// `text` as RFC 2047 encoded words (UTF-8, base64) of whole characters, so
/// each decodes on its own.
fn encoded_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(ENCODED_WORD_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
        words.push(format!("=?utf-8?b?{b64}?="));
        rest = tail;
    }
    words
}

/// Refuses a message with a header line no SMTP server has to accept.
/// lettre encodes bodies itself (quoted-printable or base64 for long lines),
/// so only the headers can hold one, from a value no header can fold.
fn check_header_lines(message: &Message) -> anyhow::Result<()> {
    let headers = message.headers().to_string();
    if let Some(line) = headers.split("\r\n").find(|l| l.len() > MAX_LINE) {
        let name = line.split(':').next().unwrap_or_default();
        bail!(
            "the {name} header would be a {}-character line, over the {MAX_LINE} characters \
             SMTP allows; shorten the value it is made from",
            line.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(subject: &str, html: Option<&str>) -> Rendered {
        Rendered {
            subject: subject.to_owned(),
            text: "Hello\nhttps://p.example.com/?authKey=a%2Bb%3D\n".to_owned(),
            html: html.map(str::to_owned),
        }
    }

    fn headers(raw: &str) -> Vec<String> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        head.split("\r\n")
            .filter(|l| !l.starts_with([' ', '\t']))
            .map(|l| l.split(':').next().unwrap().to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn a_resend_id_is_new_each_time_and_names_the_lead() {
        let first = message_id("spring", "4f1c-AB", "example.com");
        let a = resend_message_id("spring", "4f1c-AB", "example.com");
        let b = resend_message_id("spring", "4f1c-AB", "example.com");
        assert_ne!(a, first);
        assert_ne!(a, b);
        let stem = first.trim_end_matches("@example.com>");
        assert!(
            a.starts_with(&format!("{stem}.")) && a.ends_with("@example.com>"),
            "{a}"
        );
    }

    #[test]
    fn message_id_is_deterministic_and_safe() {
        let a = message_id("spring", "4f1c-AB", "Example.com");
        assert_eq!(a, message_id("spring", "4f1c-AB", "Example.com"));
        assert_ne!(a, message_id("autumn", "4f1c-AB", "Example.com"));
        assert!(a.starts_with("<lsq-dispatch.") && a.ends_with(".4f1c-AB@example.com>"));
        let b = message_id("c", "x>\r\ny@z", "");
        assert_eq!(
            b,
            format!(
                "<lsq-dispatch.{:016x}.x___y_z@lsq-dispatch.invalid>",
                fnv1a("c")
            )
        );
    }

    #[test]
    fn fnv1a_matches_reference_values() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn addresses() {
        for (cell, address) in [
            (" ann@example.com ", "ann@example.com"),
            ("o'brien+tag@example.com", "o'brien+tag@example.com"),
            ("\"ann\"@example.com", "ann@example.com"),
        ] {
            assert_eq!(check_address(cell).unwrap().to_string(), address);
        }
        for bad in [
            "",
            "ann",
            "ann@example.com\r\nBcc: eve@example.com",
            "ann@example.com\nX: y",
            "Ann <ann@example.com>",
            "ann@@example.com",
            "u@[127.0.0.1]",
            "u@[IPv6:::1]",
            "u@[::1]",
            "u@127.0.0.1",
            "\"a@b\"@example.com",
        ] {
            let err = check_address(bad).unwrap_err();
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn multipart_when_html_else_text_only() {
        let from: Sender = "Acme <noreply@acme.example>"
            .parse::<Mailbox>()
            .unwrap()
            .into();
        let to = check_address("ann@example.com").unwrap();
        let id = message_id("c", "l1", "acme.example");

        let m = build_message(&from, &to, &rendered("Hi", Some("<p>Hi</p>")), &id).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(
            raw.contains("text/plain") && raw.contains("text/html"),
            "{raw}"
        );
        assert!(raw.contains(&format!("Message-ID: {id}\r\n")), "{raw}");
        for h in ["from", "to", "subject", "date", "message-id"] {
            assert!(headers(&raw).iter().any(|x| x == h), "{h} in {raw}");
        }

        let m = build_message(&from, &to, &rendered("Hi", None), &id).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            !raw.contains("multipart") && raw.contains("text/plain"),
            "{raw}"
        );
    }

    #[test]
    fn crlf_in_subject_adds_no_header() {
        let from: Sender = "noreply@acme.example".parse::<Mailbox>().unwrap().into();
        let to = check_address("ann@example.com").unwrap();
        let r = rendered("Hi Ann\r\nBcc: eve@example.com\nX-Evil: 1", None);
        let m = build_message(&from, &to, &r, "<a@b>").unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let hs = headers(&raw);
        assert!(!hs.iter().any(|h| h == "bcc" || h == "x-evil"), "{raw}");
        assert!(m.envelope().to().len() == 1);
    }

    /// The Subject header's lines, as written.
    fn subject_lines(raw: &str) -> Vec<&str> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        let mut lines = head
            .split("\r\n")
            .skip_while(|l| !l.starts_with("Subject: "));
        let first = lines.next().unwrap();
        std::iter::once(first)
            .chain(lines.take_while(|l| l.starts_with(' ')))
            .collect()
    }

    #[test]
    fn a_subject_with_an_unbroken_long_word_is_encoded_in_short_lines() {
        let from: Sender = "noreply@acme.example".parse::<Mailbox>().unwrap().into();
        let to = check_address("ann@example.com").unwrap();
        let subject = format!("Hi {} ü{}", "x".repeat(3000), "y".repeat(100));
        let m = build_message(&from, &to, &rendered(&subject, None), "<a@b>").unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let lines = subject_lines(&raw);
        assert!(lines.len() > 3000 / ENCODED_WORD_BYTES, "{raw}");
        let mut text = Vec::new();
        for line in &lines {
            assert!(line.len() <= FOLDED_LINE, "{line}");
            let word = line.trim_start_matches("Subject:").trim();
            let b64 = word.strip_prefix("=?utf-8?b?").unwrap();
            let b64 = b64.strip_suffix("?=").unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            text.push(String::from_utf8(bytes).expect("whole characters in each word"));
        }
        assert_eq!(text.concat(), subject);
    }

    #[test]
    fn a_subject_lettre_can_fold_is_left_to_lettre() {
        let from: Sender = "noreply@acme.example".parse::<Mailbox>().unwrap().into();
        let to = check_address("ann@example.com").unwrap();
        let subject = ["word"; 60].join(" ");
        let m = build_message(&from, &to, &rendered(&subject, None), "<a@b>").unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        let lines = subject_lines(&raw);
        assert!(lines.len() > 1 && lines.iter().all(|l| l.len() <= FOLDED_LINE));
        assert!(!raw.contains("=?utf-8?"), "{raw}");
    }

    #[test]
    fn a_header_line_over_998_characters_is_refused() {
        let long = format!("{}@acme.example", "n".repeat(60));
        let name = "N".repeat(1000);
        let from: Sender = format!("{name} <{long}>")
            .parse::<Mailbox>()
            .unwrap()
            .into();
        let to = check_address("ann@example.com").unwrap();
        let err = build_message(&from, &to, &rendered("Hi", None), "<a@b>").unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("From header") && err.contains("998"), "{err}");
    }

    #[test]
    fn message_id_with_newline_is_refused() {
        let from: Sender = "noreply@acme.example".parse::<Mailbox>().unwrap().into();
        let to = check_address("ann@example.com").unwrap();
        assert!(build_message(&from, &to, &rendered("s", None), "<a@b>\r\nBcc: x").is_err());
    }
}
