//! The link stage: one row to its login link, or to the reason it has none.
//! The campaign state is asked first ([`resume`]): a lead already sent is
//! reported and left alone, a key of this tenant still good is used again
//! (its link rebuilt from this run's portal settings), anything else is
//! minted through the one request path.

use chrono::{DateTime, Utc};
use lettre::Address;

use crate::api::{ApiError, GeneratedKey};
use crate::api::{Attempted, Caller};
use crate::input::{InputRow, RowKind};
use crate::report::{Record, RowError, Status};
use crate::secret::Secret;
use crate::state::{LeadEntry, LeadKey};

use super::gate::Pass;
use super::prepare::Job;
use super::resume::{resume, reuse_margin, Resume, ResumeFlags};
use super::Finished;

/// A row after the link stage.
pub(super) enum Step {
    /// Nothing more to do.
    Done(Finished),
    /// Linked; its email is next.
    Email {
        record: Record,
        row: InputRow,
        to: Address,
    },
}

/// A report record for `row`, with its ids moved in (a million-row plan
/// notices every copy); the row keeps its cells for the email and the rows
/// to re-run.
fn start_record(row: &mut InputRow) -> Record {
    Record::new(
        row.line,
        std::mem::take(&mut row.lead_id),
        row.portal_id.take().unwrap_or_default(),
        Status::Invalid,
    )
}

/// A row whose fate is decided, before anything that waits: its record so
/// far, the address to email once linked, and what is left to do.
pub(super) struct Decided {
    record: Record,
    to: Option<Address>,
    next: Next,
}

/// What is left to do for a decided row.
enum Next {
    /// Nothing: the record is final.
    Nothing,
    /// Build the link from a stored key of this tenant that is still good.
    Reuse(Secret, DateTime<Utc>),
    /// Mint a key.
    Mint,
}

impl Decided {
    fn done(record: Record) -> Decided {
        Decided {
            record,
            to: None,
            next: Next::Nothing,
        }
    }
}

impl Job {
    /// Decides a row read from the input, or passes on the fault that
    /// stopped the reading. Rows are decided one after another, in input
    /// order, before their tasks start, so that `--limit` takes the first
    /// rows however the tasks interleave.
    pub(super) async fn decide_read(
        &self,
        item: Result<InputRow, anyhow::Error>,
    ) -> anyhow::Result<(InputRow, Decided)> {
        let mut row = item?;
        let decided = self.decide(&mut row).await?;
        Ok((row, decided))
    }

    /// The link stage: one decided row to a report record (or to its email
    /// step), or `Err` for a run-level fault.
    pub(super) async fn process(
        &self,
        mut row: InputRow,
        decided: Decided,
    ) -> anyhow::Result<Step> {
        let (record, to) = self.carry_out(&mut row, decided).await?;
        Ok(match to {
            Some(to) if record.status == Status::Linked => Step::Email { record, row, to },
            _ => Step::Done(Finished {
                fatal: None,
                record,
                raw: row.raw,
            }),
        })
    }

    /// Decides and does one row's link: its record, and the address to email
    /// next when the row is linked in an email run.
    pub(super) async fn link(
        &self,
        row: &mut InputRow,
    ) -> anyhow::Result<(Record, Option<Address>)> {
        let decided = self.decide(row).await?;
        self.carry_out(row, decided).await
    }

    /// What becomes of a row, as far as can be known without a call: its
    /// verdict, its recipient, what the campaign state holds for it and
    /// whether `--limit` leaves room for it.
    async fn decide(&self, row: &mut InputRow) -> anyhow::Result<Decided> {
        let has_portal = row.portal_id.is_some();
        let mut record = start_record(row);
        let problem = match &row.kind {
            RowKind::Invalid(reason) => Some((Status::Invalid, RowError::Invalid(reason.clone()))),
            RowKind::Duplicate { first_line } => Some((
                Status::Duplicate,
                RowError::Duplicate {
                    first_line: *first_line,
                },
            )),
            RowKind::Valid if !has_portal => Some((Status::Invalid, RowError::NoPortal)),
            RowKind::Valid => None,
        };
        if let Some((status, error)) = problem {
            record.status = status;
            record.error = Some(error);
            return Ok(Decided::done(record));
        }
        let to = match self.recipient(row, &mut record) {
            Ok(to) => to,
            Err(error) => {
                record.error = Some(error);
                return Ok(Decided::done(record));
            }
        };
        let stored = self
            .stored(&self.key(&record.lead_id, &record.portal_id))
            .await?;
        let resume = resume(stored, &self.settings.campaign, self.flags(), Utc::now());
        // Work for this run (a key to mint, or an email to send with a key
        // kept) counts against --limit; a row past it is left untouched for
        // a later run.
        let work = match &resume {
            Resume::Mint => true,
            Resume::Reuse(..) => self.mail.is_some(),
            Resume::Report { .. } => false,
        };
        if work && !self.take_on() {
            record.status = Status::Skipped;
            record.error = self.settings.limit.map(|limit| RowError::BeyondLimit {
                limit,
                kept: self.settings.state.is_kept(),
            });
            return Ok(Decided::done(record));
        }
        let next = match resume {
            Resume::Report {
                status,
                message_id,
                error,
            } => {
                record.status = status;
                record.message_id = message_id;
                record.error = Some(error);
                return Ok(Decided::done(record));
            }
            Resume::Reuse(auth_key, expires_at) => Next::Reuse(auth_key, expires_at),
            Resume::Mint => Next::Mint,
        };
        if let Some(to) = &to {
            self.note_look_alike(&mut record, to);
        }
        Ok(Decided { record, to, next })
    }

    /// A recipient whose domain mixes scripts, as a look-alike of another
    /// domain does, is mailed all the same (the address may be real): the
    /// log and the report's error column say so, for a person to check.
    fn note_look_alike(&self, record: &mut Record, to: &Address) {
        let (Some(mail), Some(mix)) = (&self.mail, crate::email::mixed_scripts(to.domain())) else {
            return;
        };
        let note = format!(
            "the domain of {} {:?} {mix}, as look-alikes of other domains do: check the address",
            mail.column, record.email
        );
        tracing::warn!(row = record.row, "row {}: {note}", record.row);
        record.error = Some(RowError::LookAlike(note));
    }

    /// Does what is left of a decided row: uses a stored key again, mints
    /// one, or, in a dry run, plans.
    async fn carry_out(
        &self,
        row: &mut InputRow,
        decided: Decided,
    ) -> anyhow::Result<(Record, Option<Address>)> {
        let Decided {
            mut record,
            to,
            next,
        } = decided;
        match next {
            Next::Nothing => Ok((record, None)),
            Next::Reuse(_, expires_at) if self.settings.is_dry_run() => {
                // The plan tells a reused key by its expiry: no call needed.
                record.expires_at = Some(expires_at);
                self.plan(record, row, to).await
            }
            // A link minted at click carries no key, stored or new.
            Next::Reuse(..) | Next::Mint if self.settings.mints_at_click() => {
                self.hand_out(&mut record, row, None).await?;
                Ok((record, to))
            }
            Next::Reuse(auth_key, expires_at) => {
                self.hand_out(&mut record, row, Some((auth_key, expires_at)))
                    .await?;
                Ok((record, to))
            }
            Next::Mint => self.mint(record, row, to).await,
        }
    }

    /// Makes the lead's link from its key (none for `--mint at-click`),
    /// records it in the ledger as last given out, and in the record, which
    /// shows when the link expires.
    async fn hand_out(
        &self,
        record: &mut Record,
        row: &InputRow,
        key: Option<(Secret, DateTime<Utc>)>,
    ) -> anyhow::Result<()> {
        let given = key
            .as_ref()
            .map(|(auth_key, expires_at)| (auth_key, *expires_at));
        let (link, link_expires) =
            self.settings
                .give_link(&record.lead_id, &record.portal_id, given, Utc::now());
        // The ledger keeps the key's expiry, which says whether the key can
        // be reused; a link with no key, its own.
        let stored_expiry = key
            .as_ref()
            .map_or(link_expires, |(_, expires_at)| *expires_at);
        let (line, attempts, mode) = (row.line, record.attempts, self.settings.link_mode());
        let shown = link.clone();
        self.ledger()
            .with_lead(&record.lead_id, &record.portal_id, move |store, lead| {
                store.mark_link_given(
                    lead,
                    line,
                    key.as_ref().map(|(auth_key, _)| auth_key),
                    &shown,
                    stored_expiry,
                    attempts,
                    mode,
                )
            })
            .await?;
        record.status = Status::Linked;
        record.portal_url = link;
        record.expires_at = Some(link_expires);
        Ok(())
    }

    fn flags(&self) -> ResumeFlags {
        ResumeFlags {
            resend: self.settings.resend,
            resend_in_doubt: self.settings.resend_in_doubt,
            reuse_margin: reuse_margin(
                self.settings.key_lifetime,
                self.settings.min_link_life,
                self.settings.email.is_some(),
            ),
        }
    }

    /// The store's key for a lead, under this run's campaign and
    /// tenant (a dry run without one plans for none in particular).
    pub(super) fn key<'a>(&'a self, lead_id: &'a str, portal_id: &'a str) -> LeadKey<'a> {
        LeadKey {
            campaign: &self.settings.campaign,
            tenant: self
                .settings
                .tenant
                .as_ref()
                .map_or("", |t| t.fingerprint()),
            lead_id,
            portal_id,
        }
    }

    /// What the campaign holds for the lead: a dry run looks in the table it
    /// read at the start, a real run asks the store.
    async fn stored(&self, key: &LeadKey<'_>) -> anyhow::Result<Option<LeadEntry>> {
        if let Some(known) = &self.known {
            let id = (key.lead_id.to_owned(), key.portal_id.to_owned());
            return Ok(known.get(&id).cloned());
        }
        match &self.state {
            Some(ledger) => Ok(ledger.look_up(key.lead_id, key.portal_id).await?),
            None => Ok(None),
        }
    }

    /// A dry run's row: planned, with its message built when it has one.
    async fn plan(
        &self,
        mut record: Record,
        row: &InputRow,
        to: Option<Address>,
    ) -> anyhow::Result<(Record, Option<Address>)> {
        record.status = Status::Planned;
        if let (Some(mail), Some(to)) = (&self.mail, &to) {
            Box::pin(self.plan_email(mail, &mut record, row, to)).await?;
        }
        Ok((record, None))
    }

    /// The row's recipient in an email run, checked; `None` without email.
    fn recipient(&self, row: &InputRow, record: &mut Record) -> Result<Option<Address>, RowError> {
        let Some(mail) = &self.mail else {
            return Ok(None);
        };
        let cell = row.field(&self.headers, &mail.column).unwrap_or_default();
        record.email = cell.to_owned();
        crate::email::check_address(cell)
            .map(Some)
            .map_err(|reason| RowError::BadAddress {
                column: mail.column.clone(),
                cell: cell.to_owned(),
                reason: reason.to_string(),
            })
    }

    /// Mints the row's key and builds its link; a dry run only plans it.
    async fn mint(
        &self,
        mut record: Record,
        row: &InputRow,
        to: Option<Address>,
    ) -> anyhow::Result<(Record, Option<Address>)> {
        let Some(caller) = self.caller.as_ref().filter(|_| !self.settings.is_dry_run()) else {
            return self.plan(record, row, to).await;
        };
        // Boxed: the call's state is large, and unboxed it would be copied
        // into every row's future, dry runs included.
        let done = Box::pin(self.generate(caller, &record.lead_id, &record.portal_id)).await;
        record.attempts = done.attempts;
        let key = self.key(&record.lead_id, &record.portal_id);
        let error = match done.result {
            Ok(generated) if same_lead(&generated, key.lead_id) => {
                let expires_at = Utc::now() + self.settings.key_lifetime;
                let auth_key = Secret::new(generated.auth_key);
                self.hand_out(&mut record, row, Some((auth_key, expires_at)))
                    .await?;
                return Ok((record, to));
            }
            Ok(generated) => RowError::OtherLead {
                answered: generated.lead_id,
            },
            Err(e @ ApiError::Unauthorized { .. }) => return Err(self.unauthorized(e)),
            Err(e) if e.is_fatal() => return Err(e.into()),
            // The run began stopping before the call was sent: the row was
            // not started, so it is neither recorded nor reported.
            Err(e @ ApiError::NotStarted) => return Err(e.into()),
            Err(e) => RowError::Api(e.to_string()),
        };
        let (line, reason, attempts) = (row.line, error.to_string(), record.attempts);
        self.ledger()
            .with_lead(key.lead_id, key.portal_id, move |store, key| {
                store.mark_failed(key, line, &reason, attempts)
            })
            .await?;
        record.status = Status::Failed;
        record.error = Some(error);
        Ok((record, None))
    }

    /// A 401, with advice on quoting when a key the run was given holds a
    /// character a shell treats specially: set unquoted, such a key reaches
    /// the run changed (`$r` expanded, cut at `&`), and the API refuses it.
    fn unauthorized(&self, error: ApiError) -> anyhow::Error {
        let Some(connection) = self.settings.connection() else {
            return error.into();
        };
        let keys = [
            ("LSQ_ACCESS_KEY", Some(&connection.api.access_key)),
            ("LSQ_SECRET_KEY", Some(&connection.api.secret_key)),
            ("LSQ_TENANT_AUTH_KEY", connection.tenant.given.as_ref()),
        ];
        let special: Vec<&str> = keys
            .iter()
            .filter(|(_, key)| key.is_some_and(|key| shell_special(key.expose())))
            .map(|(name, _)| *name)
            .collect();
        match special.as_slice() {
            [] => error.into(),
            names => anyhow::anyhow!(
                "{error}; {} {} characters a shell treats specially ($, &, a space, …): \
                 set unquoted, in a shell or an env file read with `.`, a key reaches the run \
                 changed, so put each value in single quotes ({}='…', as \
                 samples/lsq-dispatch.env does)",
                names.join(" and "),
                if names.len() == 1 { "holds" } else { "hold" },
                names[0]
            ),
        }
    }

    /// Generates one key; the run's first call goes ahead (see
    /// [`Gate`](super::gate::Gate)).
    async fn generate(
        &self,
        caller: &Caller,
        lead_id: &str,
        portal_id: &str,
    ) -> Attempted<GeneratedKey> {
        let pass = self.gate.pass().await;
        if pass == Pass::Refused {
            return Attempted {
                result: Err(ApiError::Unauthorized {
                    message: "an earlier call was refused".into(),
                }),
                attempts: 0,
                rate_limited: 0,
            };
        }
        let call = caller.generate(lead_id, portal_id, &self.stop);
        let done = match pass {
            Pass::First => {
                let done = crate::api::noting_retries(self.gate.retrying(), call).await;
                self.gate
                    .decide(matches!(&done.result, Err(e) if e.is_fatal()));
                done
            }
            _ => call.await,
        };
        self.note_accepted(caller, &done);
        done
    }

    /// The run's first key tells the budget store that the API accepts
    /// these credentials, so that the next runs need not prove them again.
    fn note_accepted(&self, caller: &Caller, done: &Attempted<GeneratedKey>) {
        if let (Ok(_), Some((mark, noted))) = (&done.result, &self.credentials) {
            if !noted.swap(true, std::sync::atomic::Ordering::Relaxed) {
                caller.limiter.note_accepted(mark.clone());
            }
        }
    }
}

/// The answer is for the lead asked about (an answer naming no lead is
/// taken at its word).
fn same_lead(key: &GeneratedKey, lead_id: &str) -> bool {
    key.lead_id.is_empty() || crate::input::normalize_guid(&key.lead_id).as_deref() == Some(lead_id)
}

/// Whether `value` holds a character a POSIX shell would act on if the
/// value were set unquoted.
fn shell_special(value: &str) -> bool {
    value.contains(|c: char| c.is_whitespace() || "$&;|<>()`'\"\\*?!#~".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAD: &str = "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84";

    #[test]
    fn an_answer_for_another_lead_is_caught() {
        let key = |id: &str| GeneratedKey {
            auth_key: "k".into(),
            lead_id: id.into(),
        };
        assert!(same_lead(&key(LEAD), LEAD));
        assert!(same_lead(&key(&LEAD.to_uppercase()), LEAD));
        assert!(same_lead(&key(""), LEAD));
        assert!(!same_lead(
            &key("00000000-0000-4000-8000-000000000000"),
            LEAD
        ));
    }
}
