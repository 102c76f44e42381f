//! Why a row did not succeed, as a value: the report prints it, and the
//! summary and the plan count it by kind without reading its text.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::input::Invalid;

/// Why one row failed, was invalid or was not done in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// The input row cannot be processed; the reader's reason.
    Invalid(Invalid),
    /// Same lead and portal as an earlier row.
    Duplicate {
        /// Line of the earlier row.
        first_line: u64,
    },
    /// Neither a PortalId column nor a default portal.
    NoPortal,
    /// The recipient cell is no email address.
    BadAddress {
        /// The recipient column's name.
        column: String,
        /// The cell as written.
        cell: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A dry run could not build this row's message.
    Unrenderable(String),
    /// The API answered with a key for a different lead.
    OtherLead {
        /// The LeadId in the answer.
        answered: String,
    },
    /// The API call failed for this row.
    Api(String),
    /// The row's message could not be built.
    EmailNotBuilt(String),
    /// The SMTP server did not take the message.
    Email(String),
    /// An earlier run of the campaign sent this lead its email.
    AlreadySent {
        /// The campaign.
        campaign: String,
        /// When it was accepted.
        sent_at: DateTime<Utc>,
    },
    /// An earlier run could not tell whether this lead's email was
    /// delivered; the text says why.
    InDoubt(String),
    /// Past the rows `--limit` lets this run take on; a later run of the
    /// campaign does it.
    BeyondLimit {
        /// The limit.
        limit: u64,
        /// Whether the campaign state outlives the run, so that a later run
        /// can go on (a sandbox run's own state does not).
        kept: bool,
    },
    /// The lead is linked, but the run stopped before its email was started.
    NotEmailed,
    /// The SMTP connection failed or went silent when the server may already
    /// have had the message; holds what happened.
    EmailInDoubt(String),
    /// A reason recorded by an earlier run, read back from the campaign state.
    Earlier(String),
    /// Not a failure: the recipient's domain mixes scripts the way a
    /// look-alike of another domain does (`exаmple.com` with a Cyrillic
    /// `а`). The row goes on as it would; the note is for a person to check.
    LookAlike(String),
    /// The SMTP server accepted the message, but the campaign state could
    /// not record it as sent; holds the state's failure.
    SentUnrecorded(String),
}

impl RowError {
    /// The kind of reason, the same for every row that fails the same way:
    /// what the plan counts invalid rows by.
    pub fn kind(&self) -> String {
        match self {
            RowError::Invalid(reason) => reason.kind(),
            RowError::Earlier(_) => "recorded by an earlier run".into(),
            RowError::Duplicate { .. } => "duplicate".into(),
            RowError::NoPortal => "no PortalId".into(),
            RowError::BadAddress { column, .. } => format!("{column} is not a valid address"),
            RowError::Unrenderable(_) => "the email cannot be built for this row".into(),
            RowError::OtherLead { .. } => "the API answered for another lead".into(),
            RowError::Api(_) => "API call failed".into(),
            RowError::EmailNotBuilt(_) => "email not built".into(),
            RowError::Email(_) => "email not sent".into(),
            RowError::AlreadySent { .. } => "already sent".into(),
            RowError::BeyondLimit { .. } => "beyond --limit".into(),
            RowError::InDoubt(_) | RowError::EmailInDoubt(_) => "in doubt".into(),
            RowError::NotEmailed => "not emailed: the run was interrupted".into(),
            RowError::LookAlike(_) => "the email domain mixes scripts".into(),
            RowError::SentUnrecorded(_) => "sent, not recorded in the state".into(),
        }
    }

    /// True when the row's email was attempted and not taken by the server.
    pub fn is_email_failure(&self) -> bool {
        matches!(self, RowError::Email(_))
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::Invalid(reason) => reason.fmt(f),
            RowError::Earlier(reason) => f.write_str(reason),
            RowError::Duplicate { first_line } => write!(f, "duplicate of row {first_line}"),
            RowError::NoPortal => f.write_str(
                "no PortalId: set --portal-id (or LSQ_PORTAL_ID) or fill the PortalId column",
            ),
            RowError::BadAddress {
                column,
                cell,
                reason,
            } => write!(f, "{column} {cell:?} is not a valid address: {reason}"),
            RowError::Unrenderable(e) => {
                write!(f, "the email cannot be built for this row: {e}")
            }
            RowError::OtherLead { answered } => {
                write!(f, "the API answered for another lead ({answered})")
            }
            RowError::Api(e) => f.write_str(e),
            RowError::EmailNotBuilt(e) => write!(f, "email not built: {e}"),
            RowError::Email(e) => write!(f, "email: {e}"),
            RowError::AlreadySent { campaign, sent_at } => write!(
                f,
                "already sent in campaign {campaign} at {}",
                sent_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            RowError::BeyondLimit { limit, kept: true } => write!(
                f,
                "beyond --limit {limit}; a later run of this campaign continues with it"
            ),
            RowError::BeyondLimit { limit, kept: false } => write!(
                f,
                "beyond --limit {limit}; this sandbox run's campaign state is not kept, so a \
                 later run starts over (give --state to keep it)"
            ),
            RowError::InDoubt(why) => write!(
                f,
                "{why}; check the mailbox, then re-run with --resend-in-doubt to send it again"
            ),
            RowError::NotEmailed => f.write_str(
                "not emailed: the run was interrupted before this message was started; the lead \
                 stays linked and a re-run of the campaign emails it",
            ),
            RowError::LookAlike(note) => write!(f, "warning: {note}"),
            RowError::SentUnrecorded(e) => write!(
                f,
                "sent, but the state file could not record it ({e}): the next run of the \
                 campaign holds this lead in_doubt and does not send it again"
            ),
            RowError::EmailInDoubt(e) => write!(
                f,
                "email in doubt, not sent again: {e}; look for its Message-ID in the mail \
                 server's log or the mailbox, then re-run with --resend-in-doubt if it is missing"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_report_wording() {
        assert_eq!(
            RowError::Duplicate { first_line: 4 }.to_string(),
            "duplicate of row 4"
        );
        assert_eq!(
            RowError::Email("timed out".into()).to_string(),
            "email: timed out"
        );
        assert_eq!(
            RowError::BeyondLimit {
                limit: 50,
                kept: true
            }
            .to_string(),
            "beyond --limit 50; a later run of this campaign continues with it"
        );
        let bad = RowError::BadAddress {
            column: "Email".into(),
            cell: "ann@".into(),
            reason: "no domain".into(),
        };
        assert_eq!(
            bad.to_string(),
            "Email \"ann@\" is not a valid address: no domain"
        );
    }

    #[test]
    fn only_smtp_failures_count_as_failed_emails() {
        assert!(RowError::Email("x".into()).is_email_failure());
        assert!(!RowError::EmailNotBuilt("x".into()).is_email_failure());
        assert!(!RowError::Api("email".into()).is_email_failure());
    }

    fn not_a_guid(column: &str, value: &str) -> RowError {
        RowError::Invalid(Invalid::NotGuid {
            column: column.into(),
            value: value.into(),
        })
    }

    #[test]
    fn invalid_rows_group_by_kind_without_their_values() {
        let ragged = |cells| RowError::Invalid(Invalid::Ragged { cells, columns: 3 });
        let address = |cell: &str| RowError::BadAddress {
            column: "Email".into(),
            cell: cell.into(),
            reason: format!("invalid email address {cell:?}"),
        };
        let cases = [
            (not_a_guid("LeadId", "LD-1"), "LeadId is not a GUID"),
            (not_a_guid("LeadId", "{abc}"), "LeadId is not a GUID"),
            (not_a_guid("PortalId", "x"), "PortalId is not a GUID"),
            (
                RowError::Invalid(Invalid::Empty {
                    column: "LeadId".into(),
                }),
                "LeadId is empty",
            ),
            (ragged(1), "wrong number of cells"),
            (ragged(4), "wrong number of cells"),
            (address("ann@"), "Email is not a valid address"),
            (address("a:b\"c"), "Email is not a valid address"),
            (RowError::NoPortal, "no PortalId"),
            (
                RowError::BeyondLimit {
                    limit: 50,
                    kept: true,
                },
                "beyond --limit",
            ),
        ];
        for (error, kind) in cases {
            assert_eq!(error.kind(), kind, "{error}");
        }
    }

    #[test]
    fn invalid_rows_keep_their_values_in_the_report() {
        assert_eq!(
            not_a_guid("LeadId", "LD-1").to_string(),
            "LeadId \"LD-1\" is not a GUID"
        );
        let ragged = |cells| RowError::Invalid(Invalid::Ragged { cells, columns: 3 }).to_string();
        assert_eq!(ragged(1), "row has 1 cell, header has 3");
        assert_eq!(ragged(4), "row has 4 cells, header has 3");
    }
}
