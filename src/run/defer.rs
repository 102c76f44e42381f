//! Messages the SMTP server deferred. A 4xx that outlasts a message's
//! quick retries is most often greylisting, which asks the sender to come
//! back in minutes: the message waits on the `--smtp-defer` schedule,
//! holding no slot of the email stage, while the other leads go on. One
//! still deferred when the schedule is over, or when the run ends first,
//! is `failed` (the report's statuses are a contract other scripts read,
//! so there is no status of its own), with an error that says it was
//! deferred and that a re-run retries it, and it is listed to retry.

use lettre::Address;

use crate::input::InputRow;
use crate::report::{Record, RowError, Status};

use super::prepare::Job;
use super::Finished;

/// Where a row's email stands once the email stage has handled it.
// Each value is moved once, from a row's task to the stage's loop; boxing
// the common case would cost an allocation per row for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Sending {
    /// Its final record.
    Done(Finished),
    /// Deferred by the server: tried again after the schedule's next wait.
    Deferred(Box<Deferral>),
}

/// A row's message on its way, with what is needed to try it again.
pub(super) struct Deferral {
    pub(super) record: Record,
    pub(super) row: InputRow,
    pub(super) to: Address,
    pub(super) message: lettre::Message,
    pub(super) message_id: String,
    /// The later tries made so far, each after a wait of the schedule.
    pub(super) tries: usize,
    /// The server's last reply.
    pub(super) reason: String,
}

impl Deferral {
    /// The row's error once it is deferred: the server's reply, how often
    /// it was deferred, `why` it is not tried again in this run, and that a
    /// re-run does.
    pub(super) fn deferred(&self, why: &str) -> String {
        let later = match self.tries {
            0 => String::new(),
            1 => " and at 1 later try".to_owned(),
            n => format!(" and at {n} later tries"),
        };
        format!(
            "deferred by the server (greylisting or a temporary refusal) at its quick \
             retries{later}: {}; not sent, as {why}; a re-run of the campaign retries it",
            self.reason
        )
    }

    /// The final record of a row not tried again because `why`. The
    /// campaign state holds it failed since it was deferred.
    pub(super) fn give_up(self, why: &str) -> Finished {
        let error = RowError::Email(self.deferred(why));
        let mut record = self.record;
        record.status = Status::Failed;
        record.error = Some(error);
        Finished {
            record,
            raw: self.row.raw,
            fatal: None,
        }
    }
}

impl Job {
    /// Waits for the schedule's next wait, then tries the message once
    /// more. A run that begins stopping ends the wait: the row is reported
    /// failed, for the next run to retry.
    pub(super) async fn retry_deferred(&self, mut deferral: Deferral) -> anyhow::Result<Sending> {
        let mail = self.mail.as_ref().expect("an email run");
        let wait = mail.defer.0[deferral.tries];
        deferral.tries += 1;
        let waited = self.stop.unless_stopping(tokio::time::sleep(wait)).await;
        if waited.is_none() {
            return Ok(Sending::Done(deferral.give_up("the run was ending")));
        }
        self.attempt(deferral, 1).await
    }
}
