//! The email stage: one linked row to its message, sent (or, in a dry run,
//! built with a stand-in link and maybe previewed). The state records
//! `sending` before the SMTP step, so a crash never leaves a lead silently
//! unsent or sent twice; a message the server may have although the send
//! failed is recorded in doubt the same way, and not sent again. Once the run
//! is stopping no message is started: the lead stays `linked` in the state and
//! is reported `linked`, with the reason in its error cell, so a re-run emails
//! it, reusing the key while it is good.

use std::sync::atomic::Ordering;

use chrono::Utc;
use lettre::Address;

use crate::email::{MessageContext, SendError};
use crate::input::InputRow;
use crate::report::{Record, RowError, Status};

use super::defer::{Deferral, Sending};
use super::link::Step;
use super::prepare::{Job, Mail};
use super::Finished;

/// What one send attempt means for the row and the run.
#[derive(Debug, PartialEq)]
pub(super) enum Delivered {
    /// The server took the message.
    Sent,
    /// This row's message failed; the run goes on.
    Failed(RowError),
    /// The server may or may not have this row's message; it is not sent
    /// again, and the run goes on.
    InDoubt(RowError),
    /// The server refuses every message (authentication, TLS, no
    /// connection): stop the run.
    Fatal(SendError),
    /// Not attempted: the run began stopping first. The lead stays `linked`.
    NotStarted,
    /// The server still answered 4xx after the quick retries (greylisting,
    /// say): holds its reply. Tried again on the `--smtp-defer` schedule.
    Deferred(String),
}

/// Classifies the outcome of sending one message.
pub(super) fn delivered(result: Result<(), SendError>) -> Delivered {
    match result {
        Ok(()) => Delivered::Sent,
        Err(e) if e.is_fatal() => Delivered::Fatal(e),
        Err(SendError::InDoubt(what)) => Delivered::InDoubt(RowError::EmailInDoubt(what)),
        Err(SendError::Transient(reply)) => Delivered::Deferred(reply),
        Err(e) => Delivered::Failed(RowError::Email(e.to_string())),
    }
}

impl Job {
    /// Takes a row from the link stage towards its final record: sends its
    /// email when it has one to send. A message the server defers comes
    /// back to be tried again later (see `defer`).
    pub(super) async fn finish(&self, step: Step) -> anyhow::Result<Sending> {
        match step {
            Step::Done(finished) => Ok(Sending::Done(finished)),
            Step::Email { record, row, to } => {
                let mail = self
                    .mail
                    .as_ref()
                    .expect("only linked rows of an email run get here");
                let message_id = self.message_id(mail, &record.lead_id);
                match self.message(mail, &record, &row, &to, &message_id) {
                    Err(e) => {
                        let failed = Delivered::Failed(RowError::EmailNotBuilt(format!("{e:#}")));
                        let (record, fatal) =
                            Box::pin(self.conclude(mail, record, &to, message_id, failed)).await?;
                        Ok(Sending::Done(Finished {
                            record,
                            raw: row.raw,
                            fatal,
                        }))
                    }
                    Ok(message) => {
                        let deferral = Deferral {
                            record,
                            row,
                            to,
                            message,
                            message_id,
                            tries: 0,
                            reason: String::new(),
                        };
                        Box::pin(self.attempt(deferral, mail.max_attempts)).await
                    }
                }
            }
        }
    }

    /// Sends a row's message (up to `max_attempts` quick tries), and then
    /// records what came of it, or hands it back to be tried again later
    /// when the server deferred it and the schedule has a try left. The
    /// row's `attempts` counts every SMTP attempt beside its API calls.
    pub(super) async fn attempt(
        &self,
        mut deferral: Deferral,
        max_attempts: u32,
    ) -> anyhow::Result<Sending> {
        let mail = self.mail.as_ref().expect("an email run");
        let d = &mut deferral;
        let (outcome, tries) = self
            .deliver(
                mail,
                &d.record,
                &d.to,
                &d.message,
                &d.message_id,
                max_attempts,
            )
            .await?;
        d.record.attempts += tries;
        let outcome = match outcome {
            Delivered::Deferred(reason) => {
                d.reason = reason;
                if d.tries < mail.defer.0.len() && !self.stop.is_stopping() {
                    self.mark_deferred(d).await?;
                    return Ok(Sending::Deferred(Box::new(deferral)));
                }
                let why = match self.stop.is_stopping() {
                    true => "the run was ending".to_owned(),
                    false => format!("the --smtp-defer schedule ({}) is over", mail.defer),
                };
                Delivered::Failed(RowError::Email(d.deferred(&why)))
            }
            // A later try the run stopped before: the lead is failed in the
            // state since it was deferred, and is reported so.
            Delivered::NotStarted if d.tries > 0 => {
                return Ok(Sending::Done(deferral.give_up("the run was ending")));
            }
            other => other,
        };
        let Deferral {
            record,
            row,
            to,
            message_id,
            ..
        } = deferral;
        let (record, fatal) = self
            .conclude(mail, record, &to, message_id, outcome)
            .await?;
        Ok(Sending::Done(Finished {
            record,
            raw: row.raw,
            fatal,
        }))
    }

    /// Records a deferred lead as failed in the campaign state until a later
    /// try sends it: a run that ends meanwhile, or crashes, leaves it for
    /// the next run to retry, never in doubt.
    async fn mark_deferred(&self, d: &Deferral) -> anyhow::Result<()> {
        let reason = d.deferred("waiting for its next try");
        let (line, attempts) = (d.record.row, d.record.attempts);
        self.ledger()
            .with_lead(&d.record.lead_id, &d.record.portal_id, move |store, key| {
                store.mark_failed(key, line, &reason, attempts)
            })
            .await?;
        Ok(())
    }

    /// Records the outcome of a row's email in the campaign state and in its
    /// record. An SMTP fault that stops every message (authentication, TLS,
    /// a server gone) comes back beside the row's record, which is reported
    /// `failed` like any other: every input row reaches the report and the
    /// rows to retry, even on an abort. So does a state that cannot record a
    /// message the server accepted: the row is reported `sent`, saying so.
    async fn conclude(
        &self,
        mail: &Mail,
        mut record: Record,
        to: &Address,
        message_id: String,
        outcome: Delivered,
    ) -> anyhow::Result<(Record, Option<anyhow::Error>)> {
        let review = mail.reviews();
        let ledger = self.ledger();
        let (lead, portal) = (&record.lead_id, &record.portal_id);
        let (line, attempts) = (record.row, record.attempts);
        match outcome {
            Delivered::Sent if review => {
                let (email, id) = (to.to_string(), message_id.clone());
                ledger
                    .with_lead(lead, portal, move |store, key| {
                        store.mark_reviewed(key, line, &email, &id)
                    })
                    .await?;
                record.message_id = message_id;
            }
            Delivered::Sent => {
                let id = message_id.clone();
                let recorded = ledger
                    .with_lead(lead, portal, move |store, key| store.mark_sent(key, &id))
                    .await;
                record.status = Status::Sent;
                record.message_id = message_id;
                // The message is out whatever the state says: the lead stays
                // `sending` there, which the next run holds in doubt.
                if let Err(e) = recorded {
                    self.stop.raise(crate::signal::Stop::Finish);
                    record.error = Some(RowError::SentUnrecorded(e.to_string()));
                    return Ok((record, Some(e.into())));
                }
            }
            // Still `linked`, in the state as in the report.
            Delivered::NotStarted => record.error = Some(RowError::NotEmailed),
            Delivered::InDoubt(error) => {
                let id = message_id.clone();
                let reason = match &error {
                    RowError::EmailInDoubt(what) => {
                        format!("an earlier run could not tell whether the server took this email: {what}")
                    }
                    other => other.to_string(),
                };
                ledger
                    .with_lead(lead, portal, move |store, key| {
                        store.mark_in_doubt(key, &id, &reason)
                    })
                    .await?;
                record.status = Status::InDoubt;
                record.message_id = message_id;
                record.error = Some(error);
            }
            Delivered::Fatal(error) => {
                // No message may start now. This one was not sent (no
                // login, no TLS, no connection): the lead is not in doubt,
                // and the next run sends it.
                self.stop.raise(crate::signal::Stop::Finish);
                let reason = error.to_string();
                if !review {
                    ledger
                        .with_lead(lead, portal, move |store, key| {
                            store.mark_failed(key, line, &reason, attempts)
                        })
                        .await?;
                }
                record.status = Status::Failed;
                record.error = Some(RowError::Email(error.to_string()));
                return Ok((record, Some(error.into())));
            }
            Delivered::Deferred(reason) => {
                // `attempt` turns a deferral into a try later or a failure.
                let error = RowError::Email(format!("deferred: {reason}"));
                let text = error.to_string();
                ledger
                    .with_lead(lead, portal, move |store, key| {
                        store.mark_failed(key, line, &text, attempts)
                    })
                    .await?;
                record.status = Status::Failed;
                record.error = Some(error);
            }
            Delivered::Failed(error) => {
                let reason = error.to_string();
                ledger
                    .with_lead(lead, portal, move |store, key| {
                        store.mark_failed(key, line, &reason, attempts)
                    })
                    .await?;
                record.status = Status::Failed;
                record.error = Some(error);
            }
        }
        Ok((record, None))
    }

    /// Waits for the SMTP budget and a free conversation, records `sending`
    /// and sends (up to `max_attempts` quick tries), unless the run begins
    /// stopping before the transaction starts. The conversation is free
    /// again once the server has answered, before the outcome is committed.
    /// Also returns the SMTP attempts made.
    async fn deliver(
        &self,
        mail: &Mail,
        record: &Record,
        to: &Address,
        message: &lettre::Message,
        message_id: &str,
        max_attempts: u32,
    ) -> anyhow::Result<(Delivered, u32)> {
        let permit = match &mail.limiter {
            Some(limiter) => match self.stop.unless_stopping(limiter.acquire()).await {
                // The SMTP budget is this process's own: never shared.
                Some(permit) => Some(permit?),
                None => return Ok((Delivered::NotStarted, 0)),
            },
            None => None,
        };
        // Taken before `sending` is recorded, so that no more leads than
        // there are conversations can be left in doubt by a crash.
        let conversation = self.stop.unless_stopping(mail.conversations.acquire());
        let Some(Ok(_conversation)) = conversation.await else {
            return Ok((Delivered::NotStarted, 0));
        };
        if self.stop.is_stopping() {
            return Ok((Delivered::NotStarted, 0));
        }
        // On disk before the SMTP step: a crash from here on leaves the lead
        // in doubt, never silently unsent or sent twice.
        if !mail.reviews() {
            let (line, email, id) = (record.row, to.to_string(), message_id.to_owned());
            self.ledger()
                .with_lead(&record.lead_id, &record.portal_id, move |store, key| {
                    store.mark_sending(key, line, &email, &id)
                })
                .await?;
        }
        let (result, attempts) = crate::email::send_with_retry_until(
            mail.transport(),
            message,
            max_attempts,
            &self.stop,
        )
        .await;
        if let Some(permit) = permit {
            permit.completed();
        }
        Ok((delivered(mail.give_up_on_a_dead_server(result)), attempts))
    }

    /// Dry run: builds the row's message with a stand-in link, so a template
    /// that cannot render for this row shows up now; the first `--preview N`
    /// messages go to the outbox for a person to read.
    pub(super) async fn plan_email(
        &self,
        mail: &Mail,
        record: &mut Record,
        row: &InputRow,
        to: &Address,
    ) -> anyhow::Result<()> {
        let lives = match &self.settings.redirect {
            Some(redirect) => redirect.ttl,
            None => self.settings.key_lifetime,
        };
        let planned = Record {
            portal_url: self.settings.planned_link(),
            expires_at: Some(Utc::now() + lives),
            ..record.clone()
        };
        let message_id = self.message_id(mail, &record.lead_id);
        match self.message(mail, &planned, row, to, &message_id) {
            Ok(message) => {
                let previewed = self.previews.fetch_add(1, Ordering::Relaxed);
                if let (Some(outbox), true) = (&mail.preview, previewed < self.settings.preview()) {
                    outbox
                        .send(&message)
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot write the preview: {e}"))?;
                }
            }
            Err(e) => {
                record.status = Status::Invalid;
                record.error = Some(RowError::Unrenderable(format!("{e:#}")));
            }
        }
        Ok(())
    }

    /// The Message-ID of the lead's message in this run. The same in every run
    /// (a first send, or `--resend-in-doubt`), so that a mail system that
    /// deduplicates on it drops a second copy of a message it may already
    /// have. A deliberate `--resend` is a new copy that such a system must
    /// not drop, so it gets a new id.
    fn message_id(&self, mail: &Mail, lead_id: &str) -> String {
        let domain = mail.sender.from.email.domain();
        if self.settings.resend {
            crate::email::resend_message_id(&self.settings.campaign, lead_id, domain)
        } else {
            crate::email::message_id(&self.settings.campaign, lead_id, domain)
        }
    }

    /// One row's message, rendered from its cells and its link.
    pub(super) fn message(
        &self,
        mail: &Mail,
        record: &Record,
        row: &InputRow,
        to: &Address,
        message_id: &str,
    ) -> anyhow::Result<lettre::Message> {
        let rendered = mail.templates.render(&MessageContext {
            columns: &self.headers,
            fields: &row.fields,
            link: &record.portal_url,
            lead_id: &record.lead_id,
            portal_id: &record.portal_id,
            expires_at: record.expires_at.unwrap_or_else(Utc::now),
        })?;
        crate::email::build_message(&mail.sender, to, &rendered, message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_message_is_sent() {
        assert_eq!(delivered(Ok(())), Delivered::Sent);
    }

    #[test]
    fn a_refused_message_fails_its_row_only() {
        let got = delivered(Err(SendError::Permanent("550 no such user".into())));
        match got {
            Delivered::Failed(error) => {
                assert!(error.is_email_failure());
                assert!(error.to_string().contains("550 no such user"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_message_the_server_may_have_is_in_doubt_not_failed() {
        let got = delivered(Err(SendError::InDoubt(
            "smtp.example.com:465: no answer within 30s".into(),
        )));
        match got {
            Delivered::InDoubt(error) => {
                assert!(!error.is_email_failure(), "not counted as a failed email");
                assert_eq!(error.kind(), "in doubt");
                let shown = error.to_string();
                assert!(shown.contains("no answer within 30s"), "{shown}");
                assert!(shown.contains("--resend-in-doubt"), "{shown}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_temporary_failure_that_outlasted_its_quick_retries_is_deferred() {
        let got = delivered(Err(SendError::Transient("451 4.7.1 greylisted".into())));
        assert_eq!(got, Delivered::Deferred("451 4.7.1 greylisted".into()));
    }

    #[test]
    fn a_login_failure_stops_the_run() {
        let got = delivered(Err(SendError::Fatal("535 authentication failed".into())));
        assert!(matches!(&got, Delivered::Fatal(_)), "{got:?}");
    }
}
