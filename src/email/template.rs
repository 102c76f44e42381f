//! Email templates: a folder holding `subject.txt`, `body.txt` and optionally
//! `body.html`, rendered with minijinja for each lead.
//!
//! Every template is checked against the input's columns before the first API
//! call, so a typo in a variable name aborts the run before any key is minted or
//! any message is sent, instead of failing on every row.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context as _};
use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};

use crate::daytime::Daytime;

const SUBJECT: &str = "subject.txt";
const TEXT: &str = "body.txt";
const HTML: &str = "body.html";

/// The variables every template may use besides the CSV columns. They win over a
/// CSV column of the same name, so a `link` column cannot replace the real link.
pub const FIXED_VARIABLES: [&str; 5] = [
    "link",
    "lead_id",
    "portal_id",
    "expires_at",
    "expires_at_readable",
];

/// The loaded templates, compiled once and rendered for every lead.
pub struct Templates {
    env: Environment<'static>,
    has_html: bool,
    daytime: Daytime,
}

/// What one lead's message is rendered from.
#[derive(Clone, Copy, Debug)]
pub struct MessageContext<'a> {
    /// The CSV header names, in input order.
    pub columns: &'a [String],
    /// This row's cells, parallel to `columns`.
    pub fields: &'a [String],
    /// The lead's auto-login link.
    pub link: &'a str,
    /// The lead id, normalised.
    pub lead_id: &'a str,
    /// The portal the link logs into.
    pub portal_id: &'a str,
    /// When the link's key stops working.
    pub expires_at: DateTime<Utc>,
}

/// A rendered message, ready for [`build_message`](super::build_message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// One line: CR, LF and other control characters are already replaced.
    pub subject: String,
    /// The plain-text body, not escaped.
    pub text: String,
    /// The HTML body, auto-escaped; `None` when there is no `body.html`.
    pub html: Option<String>,
}

impl Templates {
    /// Loads `subject.txt`, `body.txt` and, if present, `body.html` from `dir`.
    /// Errors name the file that could not be read or parsed.
    pub fn load(dir: &Path) -> anyhow::Result<Templates> {
        let mut env = Environment::new();
        // A misspelt variable must be an error, never an empty string in a
        // message that goes out to thousands of leads.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        // Bodies keep their final newline; the subject is trimmed when rendered.
        env.set_keep_trailing_newline(true);

        let mut has_html = false;
        for (name, required) in [(SUBJECT, true), (TEXT, true), (HTML, false)] {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => source,
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot read email template {} (--templates needs a folder with \
                             subject.txt, body.txt and optionally body.html)",
                            path.display()
                        )
                    })
                }
            };
            env.add_template_owned(name, source)
                .map_err(|e| anyhow::anyhow!("email template {}: {e}", path.display()))?;
            has_html |= name == HTML;
        }
        Ok(Templates {
            env,
            has_html,
            daytime: Daytime::default(),
        })
    }

    /// Shows `expires_at_readable` in the recipients' time zone (`--timezone`)
    /// rather than UTC.
    pub fn for_recipients(mut self, daytime: Daytime) -> Templates {
        self.daytime = daytime;
        self
    }

    /// True when a `body.html` was found, so messages are multipart/alternative.
    pub fn has_html(&self) -> bool {
        self.has_html
    }

    /// Checks, before any API call, that every variable the templates use is a
    /// CSV column or one of [`FIXED_VARIABLES`]; the error names the template file
    /// and the variable. A probe render also catches unknown filters, tests and
    /// functions, which minijinja only reports when rendering.
    pub fn check(&self, columns: &[String]) -> anyhow::Result<()> {
        let known: BTreeSet<&str> = columns
            .iter()
            .map(String::as_str)
            .chain(FIXED_VARIABLES)
            .collect();
        let globals: BTreeSet<String> = self.env.globals().map(|(k, _)| k.to_owned()).collect();
        for name in self.names() {
            let template = self.env.get_template(name)?;
            let mut unknown: Vec<String> = template
                .undeclared_variables(false)
                .into_iter()
                .filter(|v| !known.contains(v.as_str()) && !globals.contains(v))
                .collect();
            unknown.sort();
            if !unknown.is_empty() {
                let vars = unknown
                    .iter()
                    .map(|v| format!("{{{{ {v} }}}}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                bail!(
                    "email template {name} uses {vars}, which is neither a column of the input \
                     ({}) nor one of {}",
                    columns.join(", "),
                    FIXED_VARIABLES.join(", ")
                );
            }
        }

        let probe: Vec<String> = columns.iter().map(|c| format!("probe {c}")).collect();
        let ctx = MessageContext {
            columns,
            fields: &probe,
            link: "https://portal.example.com/?authKey=probe",
            lead_id: "00000000-0000-0000-0000-000000000000",
            portal_id: "probe",
            expires_at: DateTime::UNIX_EPOCH,
        };
        let value = ctx.to_value(&self.daytime);
        for name in self.names() {
            if let Err(e) = self.env.get_template(name)?.render(&value) {
                if matches!(
                    e.kind(),
                    ErrorKind::UnknownFilter
                        | ErrorKind::UnknownTest
                        | ErrorKind::UnknownFunction
                        | ErrorKind::UnknownMethod
                        | ErrorKind::UndefinedError
                ) {
                    bail!("email template {name}: {e}");
                }
            }
        }
        Ok(())
    }

    /// Renders one lead's message. The subject is folded onto one line, so a
    /// CR or LF in a CSV field cannot start a new header.
    pub fn render(&self, ctx: &MessageContext) -> Result<Rendered, minijinja::Error> {
        let value = ctx.to_value(&self.daytime);
        let subject = self.env.get_template(SUBJECT)?.render(&value)?;
        let text = self.env.get_template(TEXT)?.render(&value)?;
        let html = if self.has_html {
            Some(self.env.get_template(HTML)?.render(&value)?)
        } else {
            None
        };
        Ok(Rendered {
            subject: one_line(&subject),
            text,
            html,
        })
    }

    fn names(&self) -> impl Iterator<Item = &'static str> {
        [SUBJECT, TEXT]
            .into_iter()
            .chain(self.has_html.then_some(HTML))
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("has_html", &self.has_html)
            .finish_non_exhaustive()
    }
}

impl MessageContext<'_> {
    fn to_value(self, daytime: &Daytime) -> Value {
        let expires_at = self.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let readable = daytime.readable(self.expires_at);
        let fixed = [
            ("link", self.link.to_owned()),
            ("lead_id", self.lead_id.to_owned()),
            ("portal_id", self.portal_id.to_owned()),
            ("expires_at", expires_at),
            ("expires_at_readable", readable),
        ];
        // Later pairs win in a map built from an iterator, so the fixed variables
        // go last.
        self.columns
            .iter()
            .cloned()
            .zip(self.fields.iter().cloned())
            .chain(fixed.into_iter().map(|(k, v)| (k.to_owned(), v)))
            .map(|(k, v)| (k, Value::from(v)))
            .collect()
    }
}

/// Folds a rendered subject onto one line: every run of whitespace or control
/// characters (CR and LF included) becomes one space.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        dir
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn missing_required_template_names_the_file() {
        let d = dir(&[("subject.txt", "Hi")]);
        let err = format!("{:#}", Templates::load(d.path()).unwrap_err());
        assert!(err.contains("body.txt"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_file() {
        let d = dir(&[("subject.txt", "Hi {{ FirstName"), ("body.txt", "x")]);
        let err = format!("{:#}", Templates::load(d.path()).unwrap_err());
        assert!(err.contains("subject.txt"), "{err}");
    }

    #[test]
    fn unknown_variable_names_template_and_variable() {
        let d = dir(&[
            ("subject.txt", "Hi {{ FirstName }}"),
            ("body.txt", "{{ link }}"),
            ("body.html", "<a href=\"{{ link }}\">{{ Frist_Name }}</a>"),
        ]);
        let t = Templates::load(d.path()).unwrap();
        let err = t
            .check(&cols(&["LeadId", "FirstName"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("body.html") && err.contains("Frist_Name"),
            "{err}"
        );
        t.check(&cols(&["LeadId", "FirstName", "Frist_Name"]))
            .unwrap();
    }

    #[test]
    fn unknown_filter_fails_the_check() {
        let d = dir(&[("subject.txt", "{{ link | shout }}"), ("body.txt", "x")]);
        let t = Templates::load(d.path()).unwrap();
        let err = t.check(&[]).unwrap_err().to_string();
        assert!(
            err.contains("subject.txt") && err.contains("shout"),
            "{err}"
        );
    }

    #[test]
    fn loops_and_builtins_are_not_unknown_variables() {
        let d = dir(&[
            ("subject.txt", "{% for i in range(2) %}{{ i }}{% endfor %}"),
            ("body.txt", "{% set who = FirstName | upper %}{{ who }}"),
        ]);
        let t = Templates::load(d.path()).unwrap();
        t.check(&cols(&["FirstName"])).unwrap();
    }

    #[test]
    fn html_is_escaped_text_is_not_and_subject_is_one_line() {
        let d = dir(&[
            ("subject.txt", "Hello {{ FirstName }}\n"),
            ("body.txt", "Hi {{ FirstName }}: {{ link }}\n"),
            (
                "body.html",
                "<p>Hi {{ FirstName }}</p><a href=\"{{ link }}\">go</a>",
            ),
        ]);
        let t = Templates::load(d.path()).unwrap();
        let columns = cols(&["FirstName", "link"]);
        let fields = cols(&["<b>Ann</b>\r\nBcc: x@example.com", "https://evil.example"]);
        let expires_at = DateTime::parse_from_rfc3339("2024-05-14T18:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = t
            .render(&MessageContext {
                columns: &columns,
                fields: &fields,
                link: "https://p.example.com/?authKey=a%2Bb",
                lead_id: "l1",
                portal_id: "p1",
                expires_at,
            })
            .unwrap();
        assert_eq!(r.subject, "Hello <b>Ann</b> Bcc: x@example.com");
        assert_eq!(
            r.text,
            "Hi <b>Ann</b>\r\nBcc: x@example.com: https://p.example.com/?authKey=a%2Bb\n"
        );
        let html = r.html.unwrap();
        assert!(html.contains("&lt;b&gt;Ann&lt;&#x2f;b&gt;"), "{html}");
        assert!(html.contains("https:&#x2f;&#x2f;p.example.com"), "{html}");
    }

    #[test]
    fn expiry_in_both_forms() {
        let d = dir(&[
            ("subject.txt", "{{ expires_at }}"),
            ("body.txt", "{{ expires_at_readable }}"),
        ]);
        let t = Templates::load(d.path()).unwrap();
        let expires_at = DateTime::parse_from_rfc3339("2024-05-04T08:05:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = t
            .render(&MessageContext {
                columns: &[],
                fields: &[],
                link: "",
                lead_id: "",
                portal_id: "",
                expires_at,
            })
            .unwrap();
        assert_eq!(r.subject, "2024-05-04T08:05:09Z");
        assert_eq!(r.text, "4 May 2024, 08:05 UTC");
        assert_eq!(r.html, None);
    }

    #[test]
    fn one_line_folds_control_characters() {
        assert_eq!(one_line(" a\r\n\tb \u{0}c \n"), "a b c");
    }
}
