//! `lsq-dispatch run --email` end to end: the real binary, the sandbox, and a
//! real SMTP server inside the test process on loopback.

use std::path::Path;

use crate::support::smtp_server::{ReceivedMessage, Silence, SmtpBehaviour, SmtpServer};
use crate::support::{
    fast_sandbox, lead_ids, leads_with_email, read_report, run, run_on_sandbox, sample, tenant_of,
    with_email, write, write_templates,
};
use lsq_dispatch::state::{LeadKey, LeadState, StateStore};
use lsq_sandbox::Sandbox;

fn email_command(
    sandbox: &Sandbox,
    smtp: &SmtpServer,
    dir: &Path,
    input: &Path,
) -> std::process::Command {
    email_command_with(sandbox, &smtp.url(), &sample("templates"), dir, input)
}

fn email_command_with(
    sandbox: &Sandbox,
    smtp_url: &str,
    templates: &Path,
    dir: &Path,
    input: &Path,
) -> std::process::Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.args(["--report", "report.csv", "--quiet"]);
    with_email(&mut cmd, smtp_url, templates);
    cmd
}

fn link_in(text: &str) -> String {
    let start = text
        .find("http://127.0.0.1")
        .expect("the message holds the link");
    text[start..].split_whitespace().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lead_gets_exactly_one_multipart_message_whose_link_logs_it_in() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 8);
    let out = run(&mut email_command(&sandbox, &smtp, dir.path(), &input));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 8);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 8, "one message per lead");
    for row in &rows {
        assert_eq!(row["status"], "sent");
        let to_lead: Vec<_> = messages
            .iter()
            .filter(|m| m.to == [row["email"].clone()])
            .collect();
        assert_eq!(to_lead.len(), 1, "exactly one message to {}", row["email"]);
        let message = to_lead[0];
        assert_eq!(message.header("Message-ID").unwrap(), row["message_id"]);
        let content_type = message.header("Content-Type").unwrap();
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        let text = message.text().unwrap();
        let link = link_in(&text);
        assert_eq!(link, row["portal_url"]);
        assert!(message.html().unwrap().contains("authKey="));
        let page: serde_json::Value = reqwest::get(&link).await.unwrap().json().await.unwrap();
        assert_eq!(page["LeadId"].as_str().unwrap(), row["lead_id"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4xx_reply_is_retried_and_delivered_once() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().data_replies(["451 4.3.0 try again later"]));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    let out = run(&mut email_command(&sandbox, &smtp, dir.path(), &input));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(smtp.messages().len(), 1);
    assert_eq!(smtp.data_attempts(), 2);
    assert_eq!(
        read_report(&dir.path().join("report.csv"))[0]["status"],
        "sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4xx_reply_to_rcpt_is_retried_and_delivered_once() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(
        SmtpBehaviour::new().rcpt_replies(["451 4.7.1 greylisted, try again later"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 2);
    let out = run(&mut email_command(&sandbox, &smtp, dir.path(), &input));
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("report.csv"));
    assert!(rows.iter().all(|r| r["status"] == "sent"), "{rows:?}");
    assert_eq!(
        smtp.payloads().len(),
        2,
        "the refused attempt sent no payload"
    );
    for row in &rows {
        let to_lead = smtp
            .messages()
            .into_iter()
            .filter(|m| m.to == [row["email"].clone()]);
        assert_eq!(to_lead.count(), 1, "{}", row["email"]);
    }
}

/// The server took the second lead's message in and then dropped the
/// connection before its reply: the message may have been delivered, so the
/// run neither retries it nor calls it failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_after_the_payload_leaves_the_lead_in_doubt_and_sends_it_once() {
    const LOST: &str = "lead1@example.com";
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().unanswered(Silence::HangUp, 1, Some(LOST)));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let state = dir.path().join("campaign.sqlite");
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input)
        .args(["--campaign", "leads", "--state"])
        .arg(&state));
    assert_eq!(out.status.code(), Some(3));

    let payloads = smtp.payloads();
    let lost: Vec<_> = payloads.iter().filter(|m| m.to == [LOST]).collect();
    assert_eq!(lost.len(), 1, "the lead's message reached the server once");
    assert_eq!(payloads.len(), 3);
    assert_eq!(smtp.messages().len(), 2);
    let lost_id = lost[0].header("Message-ID").unwrap();

    let rows = read_report(&dir.path().join("report.csv"));
    let store = StateStore::open(&state).unwrap();
    let tenant = tenant_of(&sandbox);
    for row in &rows {
        let key = LeadKey {
            campaign: "leads",
            tenant: &tenant,
            lead_id: &row["lead_id"],
            portal_id: &row["portal_id"],
        };
        let stored = store.get(&key).unwrap().unwrap().state;
        if row["email"] == LOST {
            assert_eq!(row["status"], "in_doubt", "{row:?}");
            assert_eq!(row["message_id"], lost_id);
            assert!(row["error"].contains("Message-ID"), "{}", row["error"]);
            match stored {
                LeadState::InDoubt { message_id, reason } => {
                    assert_eq!(message_id, lost_id);
                    assert!(reason.contains("connection"), "{reason}");
                }
                other => panic!("{other:?}"),
            }
        } else {
            assert_eq!(row["status"], "sent", "{row:?}");
            assert!(matches!(stored, LeadState::Sent { .. }), "{stored:?}");
        }
    }
    drop(store);

    // Sent again only when asked, and under the same Message-ID, so a mail
    // system that did get the first copy can drop this one.
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input)
        .args(["--campaign", "leads", "--state"])
        .arg(&state)
        .arg("--resend-in-doubt"));
    assert_eq!(out.status.code(), Some(0));
    let again: Vec<_> = smtp.payloads().into_iter().skip(3).collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].to, [LOST]);
    assert_eq!(again[0].header("Message-ID").unwrap(), lost_id);
}

/// The stage takes more rows than it has conversations, so that rows
/// waiting for their `sent` commit hold no connection; but a row records
/// `sending` only once it holds one, so a crash can still leave no more
/// leads in doubt than `--email-concurrency`.
#[tokio::test(flavor = "multi_thread")]
async fn no_more_messages_are_under_way_at_once_than_email_concurrency() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().delay(std::time::Duration::from_millis(100)));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 12);
    let out =
        run(email_command(&sandbox, &smtp, dir.path(), &input).args(["--email-concurrency", "3"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(smtp.messages().len(), 12);
    assert_eq!(
        smtp.most_open_transactions(),
        3,
        "every slot used, none more"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_5xx_reply_fails_the_row_and_the_run_goes_on() {
    let sandbox = fast_sandbox().await;
    let smtp =
        SmtpServer::start(SmtpBehaviour::new().data_replies(["550 5.1.1 mailbox unavailable"]));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let out =
        run(email_command(&sandbox, &smtp, dir.path(), &input).args(["--email-concurrency", "1"]));
    assert_eq!(out.status.code(), Some(3));
    let rows = read_report(&dir.path().join("report.csv"));
    let failed: Vec<_> = rows.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"].contains("550"), "{}", failed[0]["error"]);
    assert_eq!(rows.iter().filter(|r| r["status"] == "sent").count(), 2);
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authentication_failure_aborts_before_any_call() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new().auth("invites", "right-password"));
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input)
        .env("LSQ_SMTP_USER", "invites")
        .env("LSQ_SMTP_PASSWORD", "wrong-password"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LSQ_SMTP_PASSWORD"), "{stderr}");
    assert!(!stderr.contains("wrong-password"));
    assert!(smtp.messages().is_empty());
    assert_eq!(sandbox.stats().calls, 0, "no API call before SMTP works");
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_smtp_to_a_remote_host_is_refused() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 1);
    let out = run(&mut email_command_with(
        &sandbox,
        "smtp://mail.example.com:25",
        &sample("templates"),
        dir.path(),
        &input,
    ));
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("smtps://") || stderr.contains("tls=required"),
        "{stderr}"
    );
    assert_eq!(sandbox.stats().calls, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cr_lf_in_first_name_and_email_create_no_header() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let ids = lead_ids(2);
    let csv = format!(
        "LeadId,FirstName,Email\n{},\"Eve\r\nBcc: victim@example.net\",eve@example.com\n{},Mallory,\"m@example.com\r\nBcc: victim@example.net\"\n",
        ids[0], ids[1]
    );
    let input = write(dir.path(), "leads.csv", &csv);
    let out = run(&mut email_command(&sandbox, &smtp, dir.path(), &input));
    assert_eq!(
        out.status.code(),
        Some(5),
        "the bad address makes its row invalid, and the other lead is sent"
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, ["eve@example.com"]);
    assert!(messages[0].header("Bcc").is_none());
    assert!(messages
        .iter()
        .all(|m| !m.to.iter().any(|t| t.contains("victim"))));
    let rows = read_report(&dir.path().join("report.csv"));
    let invalid: Vec<_> = rows.iter().filter(|r| r["status"] == "invalid").collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0]["row"], "4", "the quoted cell spans lines 3-4");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_template_variable_fails_before_any_api_call() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let bad = write_templates(dir.path(), "Hello {{ Nickname }}", "{{ link }}");
    let input = leads_with_email(dir.path(), 2);
    let out = run(&mut email_command_with(
        &sandbox,
        &smtp.url(),
        &bad,
        dir.path(),
        &input,
    ));
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Nickname") && stderr.contains("subject.txt"),
        "{stderr}"
    );
    assert_eq!(sandbox.stats().calls, 0);
    assert!(smtp.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn test_email_sends_exactly_one_message_to_the_test_address() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 5);
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input)
        .args(["--test-email", "qa@acme.example"]));
    assert_eq!(out.status.code(), Some(0));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].to, ["qa@acme.example"]);
    let link = link_in(&messages[0].text().unwrap());
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 200);
    assert_eq!(
        sandbox.stats().keys_issued.len(),
        1,
        "only one lead was touched"
    );
    assert!(!dir.path().join("report.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_gets_one_eml_file_per_lead() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input).args(["--outbox", "outbox"]));
    assert_eq!(out.status.code(), Some(0));
    let files = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(files, 3);
    assert!(smtp.messages().is_empty());
}

/// A deliberate `--resend` sends a new copy: with the first copy's Message-ID
/// a mailbox could drop it as a duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn resend_gives_every_copy_a_new_message_id() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 3);
    let state = dir.path().join("campaign.sqlite");
    let campaign = |extra: &[&str]| {
        let mut cmd = email_command(&sandbox, &smtp, dir.path(), &input);
        cmd.arg("--state").arg(&state).args(extra);
        run(&mut cmd)
    };
    assert_eq!(campaign(&[]).status.code(), Some(0));
    assert_eq!(campaign(&["--resend"]).status.code(), Some(0));

    let messages = smtp.messages();
    assert_eq!(messages.len(), 6, "each lead twice");
    let (first, second) = messages.split_at(3);
    let rows = read_report(&dir.path().join("report.csv"));
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let to_lead = |copies: &[ReceivedMessage]| {
            let found: Vec<_> = copies
                .iter()
                .filter(|m| m.to == [row["email"].clone()])
                .map(|m| m.header("Message-ID").unwrap())
                .collect();
            assert_eq!(found.len(), 1, "{}", row["email"]);
            found[0].clone()
        };
        let (old, new) = (to_lead(first), to_lead(second));
        assert_ne!(old, new, "{}", row["email"]);
        assert_eq!(row["status"], "sent");
        assert_eq!(row["message_id"], new, "the report names the new copy");
    }
}

const UNSUBSCRIBE: &str = "https://acme.example/unsubscribe?who={email},mailto:leave@acme.example";

#[tokio::test(flavor = "multi_thread")]
async fn reply_to_and_one_click_list_unsubscribe_reach_the_smtp_server() {
    let sandbox = fast_sandbox().await;
    let smtp = SmtpServer::start(SmtpBehaviour::new());
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 2);
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input)
        .args(["--reply-to", "Acme Support <support@acme.example>"])
        .args(["--list-unsubscribe", UNSUBSCRIBE]));
    assert_eq!(out.status.code(), Some(0));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2);
    for message in &messages {
        let to = &message.to[0];
        assert_eq!(
            message.header("Reply-To").unwrap(),
            "\"Acme Support\" <support@acme.example>"
        );
        assert_eq!(
            message.header("List-Unsubscribe").unwrap(),
            format!(
                "<https://acme.example/unsubscribe?who={}>, <mailto:leave@acme.example>",
                to.replace('@', "%40")
            )
        );
        assert_eq!(
            message.header("List-Unsubscribe-Post").unwrap(),
            "List-Unsubscribe=One-Click"
        );
    }
}

/// One lead with an email address, a sandbox, an SMTP server, and a config
/// file `lsq.toml` holding `config`.
struct OneLead {
    sandbox: Sandbox,
    smtp: SmtpServer,
    dir: tempfile::TempDir,
    input: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl OneLead {
    async fn with_config(config: &str) -> OneLead {
        let dir = tempfile::tempdir().unwrap();
        OneLead {
            sandbox: fast_sandbox().await,
            smtp: SmtpServer::start(SmtpBehaviour::new()),
            input: leads_with_email(dir.path(), 1),
            config: write(dir.path(), "lsq.toml", config),
            dir,
        }
    }

    fn command(&self) -> std::process::Command {
        email_command(&self.sandbox, &self.smtp, self.dir.path(), &self.input)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_file_sets_reply_to_and_list_unsubscribe_and_the_outbox_shows_them() {
    let OneLead {
        sandbox,
        smtp,
        dir,
        input,
        config,
    } = OneLead::with_config(
        "reply_to = \"support@acme.example\"\nlist_unsubscribe = \"mailto:leave@acme.example?subject=unsubscribe\"\n",
    )
    .await;
    let out = run(email_command(&sandbox, &smtp, dir.path(), &input)
        .args(["--outbox", "outbox", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(0));
    let files: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let eml = ReceivedMessage {
        from: String::new(),
        to: Vec::new(),
        data: std::fs::read_to_string(&files[0]).unwrap(),
        user: None,
    };
    assert_eq!(eml.header("Reply-To").unwrap(), "support@acme.example");
    assert_eq!(
        eml.header("List-Unsubscribe").unwrap(),
        "<mailto:leave@acme.example?subject=unsubscribe>"
    );
    assert_eq!(eml.header("List-Unsubscribe-Post"), None, "mailto only");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_reply_to_or_list_unsubscribe_is_a_usage_error_naming_the_setting() {
    let one = OneLead::with_config("list_unsubscribe = \"http://acme.example/leave\"\n").await;
    let config = &one.config;
    let cases: [(&[&str], &str); 5] = [
        (
            &["--reply-to", "support at acme"],
            "--reply-to \"support at acme\" is not a valid address",
        ),
        (
            &["--list-unsubscribe", "http://acme.example/leave"],
            "neither a mailto: address nor an https:// URL",
        ),
        (
            &["--list-unsubscribe", "mailto:nobody"],
            "--list-unsubscribe: \"mailto:nobody\": invalid email address",
        ),
        (
            &[
                "--list-unsubscribe",
                "https://a.example/x,https://b.example/y",
            ],
            "two https:// URLs",
        ),
        (
            &["--config", config.to_str().unwrap()],
            "list_unsubscribe in ",
        ),
    ];
    for (args, expected) in cases {
        let out = run(one.command().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(one.sandbox.stats().calls, 0);
    assert!(one.smtp.messages().is_empty());
}
