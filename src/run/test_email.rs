//! `--test-email`: the first row that can be linked gets its message, with a
//! real link, sent to the test address only. No other row is touched and no
//! report is written.

use anyhow::Context;

use crate::config::Settings;
use crate::email::Transport;
use crate::input::RowKind;
use crate::report::Status;
use crate::signal::{watch_signals, Interrupted, StopSignal};

use super::prepare::prepare;

/// Sends the test message; says which lead it was made for. A signal
/// ends it wherever it waits, with [`Interrupted`].
pub(super) async fn send_test(settings: Settings) -> anyhow::Result<String> {
    let signal = StopSignal::new();
    let _signals = watch_signals(&signal);
    signal
        .unless_stopping(send(settings, signal.clone()))
        .await
        .ok_or(Interrupted)?
}

async fn send(settings: Settings, stop: StopSignal) -> anyhow::Result<String> {
    let prepared = prepare(settings, stop).await?;
    let job = prepared.job;
    job.check_mail().await?;
    let mail = job
        .mail
        .as_ref()
        .context("--test-email needs the email settings")?;
    let to = job
        .settings
        .test_address()
        .cloned()
        .context("--test-email needs an address")?;
    // Why the rows tried so far could not be linked: how many, and the first.
    let mut tried = 0usize;
    let mut first_reason = None;
    for item in prepared.reader {
        let mut row = item?;
        if row.kind != RowKind::Valid || row.portal_id.is_none() {
            continue;
        }
        let (record, _) = job.link(&mut row).await?;
        if record.status != Status::Linked {
            // An invalid address, a failed key, a lead already done: try the
            // next row, and say why if none works.
            tried += 1;
            if let (None, Some(error)) = (&first_reason, &record.error) {
                first_reason = Some(format!("row {}: {error}", record.row));
            }
            continue;
        }
        let message_id = crate::email::message_id(
            &format!("{}/test", job.settings.campaign),
            &record.lead_id,
            mail.sender.from.email.domain(),
        );
        let message = job.message(mail, &record, &row, &to, &message_id)?;
        let (result, _) =
            crate::email::send_with_retry(mail.transport(), &message, mail.max_attempts).await;
        result.map_err(|e| anyhow::anyhow!("the test message was not sent: {e}"))?;
        let delivered = match mail.transport() {
            Transport::Outbox(dir) => format!(
                "written to the outbox {} (give --smtp-url to send it), addressed to {to}",
                dir.display()
            ),
            Transport::Smtp(_) => format!("sent to {to}"),
        };
        return Ok(format!(
            "test message for the lead on row {} ({}) {delivered}, Message-ID {message_id}",
            record.row, record.lead_id
        ));
    }
    match first_reason {
        Some(first) => anyhow::bail!(
            "no row could be linked for a test message ({tried} tried; the first: {first})"
        ),
        None => anyhow::bail!(
            "no row could be linked for a test message: the input has no valid row with a PortalId"
        ),
    }
}
