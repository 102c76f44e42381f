//! What the campaign state says to do with a valid row: skip it (sent, or in
//! doubt unless asked to resend), use a stored key again while it has long
//! enough to live, or mint one.

use chrono::{DateTime, TimeDelta, Utc};

use crate::report::{RowError, Status};
use crate::secret::Secret;
use crate::state::{LeadEntry, LeadState};

/// A stored key is used again only while it has at least this long to live,
/// so the lead has time to open its link: `min_link_life` when given; for an
/// emailed link three quarters of the key's lifetime (3 h of 4 h: a key
/// minted for a message that failed an hour ago still does, one from a run
/// hours before does not); otherwise an hour, or for a key lifetime under
/// two hours (`--key-lifetime`), half the lifetime.
pub(super) fn reuse_margin(
    key_lifetime: std::time::Duration,
    min_link_life: Option<std::time::Duration>,
    emailed: bool,
) -> TimeDelta {
    let hour = TimeDelta::hours(1);
    let lifetime = TimeDelta::from_std(key_lifetime);
    if let Some(margin) = min_link_life.and_then(|m| TimeDelta::from_std(m).ok()) {
        return margin;
    }
    match lifetime {
        Ok(lifetime) if emailed => lifetime * 3 / 4,
        Ok(lifetime) if lifetime >= hour * 2 => hour,
        Ok(lifetime) => lifetime / 2,
        Err(_) => hour,
    }
}

/// What the campaign state says to do with a valid row.
#[derive(Debug, PartialEq)]
pub(super) enum Resume {
    /// Nothing stored that saves work: mint a key.
    Mint,
    /// Finished earlier: report it, touch nothing.
    Report {
        status: Status,
        message_id: String,
        error: RowError,
    },
    /// A stored key of this tenant is still good: build the link from it
    /// instead of minting.
    Reuse(Secret, DateTime<Utc>),
}

/// The flags that change what a stored lead means for this run.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResumeFlags {
    pub(super) resend: bool,
    pub(super) resend_in_doubt: bool,
    /// A stored key is reused only with this long left (see [`reuse_margin`]).
    pub(super) reuse_margin: TimeDelta,
}

impl Default for ResumeFlags {
    fn default() -> Self {
        ResumeFlags {
            resend: false,
            resend_in_doubt: false,
            reuse_margin: reuse_margin(crate::api::KEY_LIFETIME, None, false),
        }
    }
}

/// The campaign's memory of a lead decides: skip it (sent, or in doubt unless
/// asked to resend), reuse a key that is still good, or mint. The store only
/// gives entries of this run's tenant, or entries carried over from a file
/// that did not record tenants, whose keys are never reused.
pub(super) fn resume(
    entry: Option<LeadEntry>,
    campaign: &str,
    flags: ResumeFlags,
    now: DateTime<Utc>,
) -> Resume {
    let Some(entry) = entry else {
        return Resume::Mint;
    };
    match entry.state {
        LeadState::Sent {
            message_id,
            sent_at,
        } if !flags.resend => Resume::Report {
            status: Status::Skipped,
            message_id,
            error: RowError::AlreadySent {
                campaign: campaign.to_owned(),
                sent_at,
            },
        },
        LeadState::InDoubt { message_id, reason } if !flags.resend && !flags.resend_in_doubt => {
            Resume::Report {
                status: Status::InDoubt,
                message_id,
                error: RowError::InDoubt(reason),
            }
        }
        // Only a run that stopped leaves a lead `sending` for the next one.
        LeadState::Sending { message_id } if !flags.resend && !flags.resend_in_doubt => {
            Resume::Report {
                status: Status::InDoubt,
                message_id,
                error: RowError::InDoubt(crate::state::STOPPED_WHILE_SENDING.to_owned()),
            }
        }
        _ => match (entry.auth_key, entry.expires_at) {
            (Some(key), Some(expires_at))
                if expires_at > now + flags.reuse_margin && !entry.tenant.is_empty() =>
            {
                Resume::Reuse(key, expires_at)
            }
            _ => Resume::Mint,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: &str = "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84";

    fn entry(state: LeadState, link: Option<&str>) -> Option<LeadEntry> {
        Some(LeadEntry {
            campaign: "march".into(),
            tenant: "t1".into(),
            lead_id: LEAD.into(),
            portal_id: LEAD.into(),
            row: 2,
            email: String::new(),
            attempts: 1,
            state,
            auth_key: None,
            link: link.map(str::to_owned),
            expires_at: None,
            updated_at: Utc::now(),
        })
    }

    /// An entry in `state` holding a key that lives `expires_in` more.
    fn keyed(state: LeadState, expires_in: TimeDelta) -> Option<LeadEntry> {
        entry(state, Some("https://p/?authKey=k")).map(|e| LeadEntry {
            auth_key: Some(Secret::new("k")),
            expires_at: Some(Utc::now() + expires_in),
            ..e
        })
    }

    fn linked(expires_in: TimeDelta) -> Option<LeadEntry> {
        keyed(LeadState::Linked, expires_in)
    }

    fn decide(entry: Option<LeadEntry>, flags: ResumeFlags) -> Resume {
        resume(entry, "march", flags, Utc::now())
    }

    #[test]
    fn a_new_lead_is_minted() {
        assert_eq!(decide(None, ResumeFlags::default()), Resume::Mint);
    }

    #[test]
    fn a_sent_lead_is_skipped_unless_resending() {
        let sent = || {
            entry(
                LeadState::Sent {
                    message_id: "<m@x>".into(),
                    sent_at: Utc::now(),
                },
                None,
            )
        };
        match decide(sent(), ResumeFlags::default()) {
            Resume::Report {
                status, message_id, ..
            } => assert_eq!((status, message_id.as_str()), (Status::Skipped, "<m@x>")),
            other => panic!("{other:?}"),
        }
        let resend = ResumeFlags {
            resend: true,
            ..ResumeFlags::default()
        };
        assert_eq!(decide(sent(), resend), Resume::Mint);
    }

    #[test]
    fn a_lead_in_doubt_is_reported_unless_asked_to_resend_it() {
        for state in [
            LeadState::InDoubt {
                message_id: "<m@x>".into(),
                reason: "the connection was lost".into(),
            },
            LeadState::Sending {
                message_id: "<m@x>".into(),
            },
        ] {
            let got = decide(entry(state.clone(), None), ResumeFlags::default());
            assert!(
                matches!(
                    got,
                    Resume::Report {
                        status: Status::InDoubt,
                        ..
                    }
                ),
                "{got:?}"
            );
            let flags = ResumeFlags {
                resend_in_doubt: true,
                ..ResumeFlags::default()
            };
            assert_eq!(decide(entry(state, None), flags), Resume::Mint);
        }
    }

    #[test]
    fn a_key_is_reused_only_with_an_hour_to_live() {
        let got = decide(linked(TimeDelta::hours(3)), ResumeFlags::default());
        assert!(matches!(got, Resume::Reuse(..)), "{got:?}");
        assert_eq!(
            decide(linked(TimeDelta::minutes(30)), ResumeFlags::default()),
            Resume::Mint
        );
    }

    #[test]
    fn a_short_key_lifetime_reuses_a_key_only_with_half_its_life_left() {
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            reuse_margin(secs(4 * 3600), None, false),
            TimeDelta::hours(1)
        );
        assert_eq!(
            reuse_margin(secs(2 * 3600), None, false),
            TimeDelta::hours(1)
        );
        assert_eq!(
            reuse_margin(secs(3600), None, false),
            TimeDelta::minutes(30)
        );
        assert_eq!(
            reuse_margin(secs(3), None, false),
            TimeDelta::milliseconds(1500)
        );
        // An emailed link needs most of a key's life; a setting says how much.
        assert_eq!(
            reuse_margin(secs(4 * 3600), None, true),
            TimeDelta::hours(3)
        );
        let asked = Some(secs(1800));
        assert_eq!(
            reuse_margin(secs(4 * 3600), asked, true),
            TimeDelta::minutes(30)
        );
        let flags = ResumeFlags {
            reuse_margin: reuse_margin(secs(3600), None, false),
            ..ResumeFlags::default()
        };
        let got = decide(linked(TimeDelta::minutes(40)), flags);
        assert!(matches!(got, Resume::Reuse(..)), "{got:?}");
        assert_eq!(decide(linked(TimeDelta::minutes(20)), flags), Resume::Mint);
        // A dead key, however short the lifetime, is never reused.
        let flags = ResumeFlags {
            reuse_margin: reuse_margin(secs(3), None, false),
            ..ResumeFlags::default()
        };
        assert_eq!(decide(linked(TimeDelta::seconds(-1)), flags), Resume::Mint);
    }

    #[test]
    fn a_reviewed_or_failed_lead_keeps_its_good_key() {
        let reviewed = LeadState::Reviewed {
            message_id: "<m@x>".into(),
        };
        let failed = LeadState::Failed {
            reason: "550".into(),
        };
        for state in [reviewed, failed] {
            let got = decide(keyed(state, TimeDelta::hours(3)), ResumeFlags::default());
            assert!(matches!(got, Resume::Reuse(..)), "{got:?}");
        }
    }

    #[test]
    fn a_key_of_unknown_tenant_is_never_reused() {
        let legacy = linked(TimeDelta::hours(3)).map(|e| LeadEntry {
            tenant: String::new(),
            ..e
        });
        assert_eq!(decide(legacy, ResumeFlags::default()), Resume::Mint);
    }
}
