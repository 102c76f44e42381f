//! What the store holds about a lead: its state, its whole entry, and the
//! check that turns a raw `leads` row into an entry whose columns fit its
//! state.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::StateError;
use crate::report::{Record, RowError, Status};
use crate::secret::Secret;

/// Where a lead stands in its campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum LeadState {
    /// A login link was made.
    Linked,
    /// The email was written to an outbox for a person to review: not sent.
    Reviewed {
        /// The Message-ID of the reviewed email.
        message_id: String,
    },
    /// The email was being handed to the SMTP server.
    Sending {
        /// The Message-ID of the email.
        message_id: String,
    },
    /// The SMTP server accepted the email.
    Sent {
        /// The Message-ID of the email.
        message_id: String,
        /// When the server accepted it.
        sent_at: DateTime<Utc>,
    },
    /// The lead could not be completed.
    Failed {
        /// Why, as written in the report.
        reason: String,
    },
    /// The email may or may not have arrived: a run stopped while sending
    /// it, or the SMTP server's answer was lost.
    InDoubt {
        /// The Message-ID of the email, to look for in the mail server's log.
        message_id: String,
        /// Why it is in doubt, as the next run reports it.
        reason: String,
    },
}

impl LeadState {
    /// Every state name, as stored and as keyed in [`StateStore::counts`].
    pub const NAMES: [&'static str; 6] = [
        "linked", "reviewed", "sending", "sent", "failed", "in_doubt",
    ];

    /// The state's name, as stored and as keyed in [`StateStore::counts`].
    pub fn name(&self) -> &'static str {
        match self {
            LeadState::Linked => "linked",
            LeadState::Reviewed { .. } => "reviewed",
            LeadState::Sending { .. } => "sending",
            LeadState::Sent { .. } => "sent",
            LeadState::Failed { .. } => "failed",
            LeadState::InDoubt { .. } => "in_doubt",
        }
    }

    /// The Message-ID of the lead's last email, if the state carries one.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            LeadState::Reviewed { message_id }
            | LeadState::Sending { message_id }
            | LeadState::Sent { message_id, .. }
            | LeadState::InDoubt { message_id, .. } => Some(message_id),
            LeadState::Linked | LeadState::Failed { .. } => None,
        }
    }
}

/// Why a lead left in `sending` by a run that stopped is in doubt.
pub const STOPPED_WHILE_SENDING: &str =
    "a run stopped while this email was being sent: it may or may not have been delivered";

/// Why a lead is in doubt when the store did not record why (a state file
/// of an earlier version).
const UNKNOWN_DOUBT: &str = "an earlier run could not tell whether the SMTP server took this email";

/// Everything the store holds about one lead.
#[derive(Clone, Debug)]
pub struct LeadEntry {
    /// The campaign.
    pub campaign: String,
    /// The fingerprint of the tenant the entry was made for; empty for an
    /// entry carried over from a state file that did not record tenants.
    pub tenant: String,
    /// The normalised LeadId.
    pub lead_id: String,
    /// The portal.
    pub portal_id: String,
    /// The input line of the lead in the run that last touched it.
    pub row: u64,
    /// The recipient of the last email; empty when none was sent.
    pub email: String,
    /// API calls made for the lead's last link, retries included.
    pub attempts: u32,
    /// Where the lead stands.
    pub state: LeadState,
    /// The lead's last auth key, in every state, while it may still be good;
    /// cleared once it expired.
    pub auth_key: Option<Secret>,
    /// The login link last built from the key; stored with the key and
    /// cleared with it. A run rebuilds the link from the key and its own
    /// portal settings rather than reuse this one.
    pub link: Option<String>,
    /// When the lead's last key expires (kept after the key is cleared), in
    /// every state, so the pipeline can tell whether `link` is still good.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the entry last changed.
    pub updated_at: DateTime<Utc>,
}

impl LeadEntry {
    /// The entry as a report line, for `status --export`. A `sending` entry
    /// found outside a run is reported `in_doubt`, which is what it is.
    pub fn to_record(&self) -> Record {
        let (status, error) = match &self.state {
            LeadState::Linked | LeadState::Reviewed { .. } => (Status::Linked, None),
            LeadState::Sent { .. } => (Status::Sent, None),
            LeadState::Failed { reason } => {
                (Status::Failed, Some(RowError::Earlier(reason.clone())))
            }
            LeadState::Sending { .. } => (
                Status::InDoubt,
                Some(RowError::Earlier(STOPPED_WHILE_SENDING.to_owned())),
            ),
            LeadState::InDoubt { reason, .. } => {
                (Status::InDoubt, Some(RowError::Earlier(reason.clone())))
            }
        };
        Record {
            row: self.row,
            lead_id: self.lead_id.clone(),
            portal_id: self.portal_id.clone(),
            status,
            portal_url: self.link.clone().unwrap_or_default(),
            expires_at: self.expires_at,
            attempts: self.attempts,
            email: self.email.clone(),
            message_id: self.state.message_id().unwrap_or_default().to_owned(),
            error,
        }
    }
}

/// The `leads` columns in the order [`RawEntry::read`] takes them.
pub(super) const ENTRY_COLUMNS: &str =
    "campaign, tenant, lead_id, portal_id, row, email, attempts, state, \
     auth_key, link, expires_at, message_id, sent_at, reason, updated_at";

/// One `leads` row as SQLite gives it, before its columns are checked to fit
/// its state.
pub(super) struct RawEntry {
    campaign: String,
    tenant: String,
    lead_id: String,
    portal_id: String,
    row: u64,
    email: String,
    attempts: u32,
    state: String,
    auth_key: Option<String>,
    link: Option<String>,
    expires_at: Option<String>,
    message_id: Option<String>,
    sent_at: Option<String>,
    reason: Option<String>,
    updated_at: String,
}

impl RawEntry {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawEntry> {
        Ok(RawEntry {
            campaign: r.get(0)?,
            tenant: r.get(1)?,
            lead_id: r.get(2)?,
            portal_id: r.get(3)?,
            row: r.get(4)?,
            email: r.get(5)?,
            attempts: r.get(6)?,
            state: r.get(7)?,
            auth_key: r.get(8)?,
            link: r.get(9)?,
            expires_at: r.get(10)?,
            message_id: r.get(11)?,
            sent_at: r.get(12)?,
            reason: r.get(13)?,
            updated_at: r.get(14)?,
        })
    }

    pub(super) fn into_entry(self, path: &Path) -> Result<LeadEntry, StateError> {
        let bad = |what: &str| StateError::Corrupt {
            path: path.to_owned(),
            detail: format!(
                "lead {} of campaign {} in state {} has {what}",
                self.lead_id, self.campaign, self.state
            ),
        };
        let time = |text: &str, what: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad(&format!("an unreadable {what} {text:?}")))
        };
        let expires_at = self
            .expires_at
            .as_deref()
            .map(|t| time(t, "expires_at"))
            .transpose()?;
        let message_id = || self.message_id.clone().ok_or_else(|| bad("no message_id"));
        let state = match self.state.as_str() {
            "linked" if expires_at.is_none() => return Err(bad("no expires_at")),
            "linked" => LeadState::Linked,
            "reviewed" => LeadState::Reviewed {
                message_id: message_id()?,
            },
            "sending" => LeadState::Sending {
                message_id: message_id()?,
            },
            "sent" => LeadState::Sent {
                message_id: message_id()?,
                sent_at: time(
                    self.sent_at.as_deref().ok_or_else(|| bad("no sent_at"))?,
                    "sent_at",
                )?,
            },
            "failed" => LeadState::Failed {
                reason: self.reason.clone().unwrap_or_default(),
            },
            "in_doubt" => LeadState::InDoubt {
                message_id: message_id()?,
                reason: self
                    .reason
                    .clone()
                    .unwrap_or_else(|| UNKNOWN_DOUBT.to_owned()),
            },
            _ => return Err(bad("an unknown state")),
        };
        let updated_at = time(&self.updated_at, "updated_at")?;
        Ok(LeadEntry {
            campaign: self.campaign,
            tenant: self.tenant,
            auth_key: self.auth_key.map(Secret::new),
            lead_id: self.lead_id,
            portal_id: self.portal_id,
            row: self.row,
            email: self.email,
            attempts: self.attempts,
            state,
            link: self.link,
            expires_at,
            updated_at,
        })
    }
}
