//! A message the test SMTP server received, and reading it back: its
//! headers, unfolded, and its MIME parts, decoded.

use base64::Engine as _;

/// One message the server took in: its envelope and payload.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// The envelope sender (MAIL FROM), without angle brackets.
    pub from: String,
    /// The envelope recipients (RCPT TO), without angle brackets.
    pub to: Vec<String>,
    /// The message as sent after DATA, dot-unstuffed, without the final `.` line.
    pub data: String,
    /// The user that logged in on this connection, if any.
    pub user: Option<String>,
}

/// A leaf MIME part with its body decoded.
#[derive(Clone, Debug)]
pub struct MimePart {
    /// The media type, lower case, without parameters (`text/plain`).
    pub content_type: String,
    /// The decoded body.
    pub body: String,
}

impl ReceivedMessage {
    /// The top-level headers, unfolded, in order.
    pub fn headers(&self) -> Vec<(String, String)> {
        parse_headers(split_head(&self.data).0)
    }

    /// The first top-level header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every leaf part, decoded; a message without MIME parts is one part.
    pub fn parts(&self) -> Vec<MimePart> {
        let mut out = Vec::new();
        collect_parts(&self.data, &mut out);
        out
    }

    /// The decoded `text/plain` part.
    pub fn text(&self) -> Option<String> {
        self.part("text/plain")
    }

    /// The decoded `text/html` part.
    pub fn html(&self) -> Option<String> {
        self.part("text/html")
    }

    fn part(&self, content_type: &str) -> Option<String> {
        self.parts()
            .into_iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.body)
    }
}

pub(super) fn b64(s: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Splits at the first empty line into (headers, body).
fn split_head(data: &str) -> (&str, &str) {
    match data.find("\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => (data, ""),
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn collect_parts(entity: &str, out: &mut Vec<MimePart>) {
    let (head, body) = split_head(entity);
    let headers = parse_headers(head);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_type = get("Content-Type").unwrap_or_else(|| "text/plain".to_owned());
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.starts_with("multipart/") {
        let Some(boundary) = param(&content_type, "boundary") else {
            return;
        };
        let delimiter = format!("--{boundary}");
        for chunk in body.split(&delimiter).skip(1) {
            if chunk.starts_with("--") {
                break;
            }
            collect_parts(chunk.trim_start_matches("\r\n"), out);
        }
        return;
    }
    let encoding = get("Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            b64(&compact)
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_owned(),
    };
    out.push(MimePart {
        content_type: media,
        body,
    });
}

fn quoted_printable(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if let Some(hex) = s.get(i + 1..i + 3) {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
