//! The email module against a real SMTP server on loopback: delivery, retries,
//! refusals, authentication, header injection, template checks, the outbox.

use std::time::Duration;

use crate::support::smtp_server::{ReceivedMessage, Silence, SmtpBehaviour, SmtpServer};
use crate::support::{mode, sample, write_templates, RefusedPort};
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lsq_dispatch::email::{
    build_message, check_address, message_id, send_with_retry, MessageContext, Rendered, SendError,
    Sender, SmtpSettings, Templates, Transport,
};
use lsq_dispatch::secret::Secret;

const CAMPAIGN: &str = "spring-invite";
const LINK: &str = "https://portal.example.com/login?leadId=l-1&portalId=p1&authKey=ab%2Bc%2Fd%3D";

fn columns() -> Vec<String> {
    ["LeadId", "FirstName", "LastName", "Email", "PortalId"]
        .map(String::from)
        .to_vec()
}

fn row(lead_id: &str, first: &str, email: &str) -> Vec<String> {
    [lead_id, first, "Lovelace", email, "p1"]
        .map(String::from)
        .to_vec()
}

fn sample_templates() -> Templates {
    let t = Templates::load(&sample("templates")).unwrap();
    t.check(&columns()).unwrap();
    t
}

fn expires_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn render(templates: &Templates, fields: &[String]) -> Rendered {
    templates
        .render(&MessageContext {
            columns: &columns(),
            fields,
            link: LINK,
            lead_id: &fields[0],
            portal_id: "p1",
            expires_at: expires_at(),
        })
        .unwrap()
}

fn from() -> Sender {
    "Acme Portal <portal@acme.example>"
        .parse::<Mailbox>()
        .unwrap()
        .into()
}

/// The sample invite for one row, with its Message-ID.
fn invite(fields: &[String]) -> (lettre::Message, String) {
    let rendered = render(&sample_templates(), fields);
    let to = check_address(&fields[3]).unwrap();
    let id = message_id(CAMPAIGN, &fields[0], "acme.example");
    (build_message(&from(), &to, &rendered, &id).unwrap(), id)
}

fn smtp(server: &SmtpServer, user: Option<&str>, password: Option<&str>) -> Transport {
    Transport::smtp(&SmtpSettings {
        url: server.url(),
        user: user.map(String::from),
        password: password.map(Secret::new),
        timeout: Duration::from_secs(10),
        helo_name: None,
        sender_domain: None,
        ca_file: None,
    })
    .unwrap()
}

/// How the link looks once minijinja has HTML-escaped it.
fn html_escaped(s: &str) -> String {
    s.replace('&', "&amp;").replace('/', "&#x2f;")
}

#[tokio::test]
async fn one_multipart_message_with_the_link_and_message_id() {
    let server = SmtpServer::start(SmtpBehaviour::new());
    let transport = smtp(&server, None, None);
    transport.check().await.unwrap();

    let (message, id) = invite(&row("l-1", "Ada", "ada@example.com"));
    let (outcome, attempts) = send_with_retry(&transport, &message, 3).await;
    outcome.unwrap();
    assert_eq!(attempts, 1);

    let received = server.messages();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.from, "portal@acme.example");
    assert_eq!(m.to, ["ada@example.com"]);
    assert_eq!(m.header("Message-ID").as_deref(), Some(id.as_str()));
    assert!(m
        .header("Content-Type")
        .unwrap()
        .starts_with("multipart/alternative"));
    assert_eq!(
        m.header("Subject").as_deref(),
        Some("Ada, your sign-in link for the customer portal")
    );
    let text = m.text().expect("a text/plain part");
    let html = m.html().expect("a text/html part");
    assert!(text.contains(LINK), "{text}");
    assert!(text.contains("2 January 2030, 03:04 UTC"), "{text}");
    assert!(
        html.contains(&format!("href=\"{}\"", html_escaped(LINK))),
        "{html}"
    );
}

#[tokio::test]
async fn text_only_without_an_html_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_templates(dir.path(), "Hi {{ FirstName }}", "{{ link }}\n");
    let templates = Templates::load(&path).unwrap();
    templates.check(&columns()).unwrap();

    let server = SmtpServer::start(SmtpBehaviour::new());
    let transport = smtp(&server, None, None);
    let fields = row("l-1", "Ada", "ada@example.com");
    let rendered = render(&templates, &fields);
    let to = check_address(&fields[3]).unwrap();
    let message = build_message(&from(), &to, &rendered, "<x@acme.example>").unwrap();
    transport.send(&message).await.unwrap();

    let m = &server.messages()[0];
    assert!(m.header("Content-Type").unwrap().starts_with("text/plain"));
    assert_eq!(m.text().unwrap().trim_end(), LINK);
    assert!(m.html().is_none());
}

#[tokio::test]
async fn a_4xx_then_success_delivers_once_in_two_attempts() {
    let server = SmtpServer::start(SmtpBehaviour::new().data_replies(["451 4.3.0 try later"]));
    let transport = smtp(&server, None, None);
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));

    let (outcome, attempts) = send_with_retry(&transport, &message, 3).await;
    outcome.unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(server.data_attempts(), 2);
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_4xx_to_mail_or_rcpt_is_retried_and_delivers_once() {
    let server = SmtpServer::start(
        SmtpBehaviour::new()
            .mail_replies(["450 4.2.1 busy, try later"])
            .rcpt_replies(["451 4.7.1 greylisted"]),
    );
    let transport = smtp(&server, None, None);
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));

    let (outcome, attempts) = send_with_retry(&transport, &message, 5).await;
    outcome.unwrap();
    assert_eq!(attempts, 3);
    assert_eq!(server.payloads().len(), 1);
    assert_eq!(server.messages().len(), 1);
}

/// The server took the payload in and then gave no reply: it may have the
/// message, so one attempt only, and the next message still goes.
async fn unanswered_payload_is_in_doubt(silence: Silence) {
    let server = SmtpServer::start(SmtpBehaviour::new().unanswered(silence, 1, None));
    let transport = Transport::smtp(&SmtpSettings {
        url: server.url(),
        user: None,
        password: None,
        timeout: Duration::from_secs(1),
        helo_name: None,
        sender_domain: None,
        ca_file: None,
    })
    .unwrap();
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));
    let (outcome, attempts) = send_with_retry(&transport, &message, 5).await;
    assert!(
        matches!(&outcome, Err(SendError::InDoubt(_))),
        "{silence:?}: {outcome:?}"
    );
    assert_eq!(attempts, 1, "{silence:?}");
    assert_eq!(server.payloads().len(), 1, "{silence:?}");
    // The next message goes at once, whatever the pool holds: a connection
    // the send gave up on must not be handed to it.

    let (message, _) = invite(&row("l-2", "Bob", "bob@example.com"));
    let (outcome, attempts) = send_with_retry(&transport, &message, 5).await;
    outcome.unwrap();
    assert_eq!(attempts, 1, "{silence:?}");
    let accepted: Vec<_> = server.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(accepted, [["bob@example.com"]], "{silence:?}");
}

#[tokio::test]
async fn a_hang_up_after_the_payload_is_in_doubt_and_not_retried() {
    unanswered_payload_is_in_doubt(Silence::HangUp).await;
}

#[tokio::test]
async fn a_stall_after_the_payload_is_in_doubt_and_spoils_no_later_message() {
    unanswered_payload_is_in_doubt(Silence::Stall).await;
}

#[tokio::test]
async fn transient_failures_stop_at_max_attempts() {
    let server = SmtpServer::start(SmtpBehaviour::new().data_replies(["451 a", "452 b", "421 c"]));
    let transport = smtp(&server, None, None);
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));

    let (outcome, attempts) = send_with_retry(&transport, &message, 2).await;
    assert_eq!(attempts, 2);
    assert!(
        matches!(&outcome, Err(SendError::Transient(s)) if s.contains("452")),
        "{outcome:?}"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_5xx_is_permanent_with_the_server_text_and_not_retried() {
    let server =
        SmtpServer::start(SmtpBehaviour::new().data_replies(["550 5.1.1 mailbox unavailable"]));
    let transport = smtp(&server, None, None);
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));

    let (outcome, attempts) = send_with_retry(&transport, &message, 3).await;
    assert_eq!(attempts, 1);
    match outcome {
        Err(SendError::Permanent(text)) => {
            assert!(
                text.contains("550") && text.contains("mailbox unavailable"),
                "{text}"
            )
        }
        other => panic!("expected Permanent, got {other:?}"),
    }
    assert!(server.messages().is_empty());

    // The connection was dropped after the refusal; the next message still goes.
    let (message, _) = invite(&row("l-2", "Bob", "bob@example.com"));
    send_with_retry(&transport, &message, 3).await.0.unwrap();
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn wrong_password_is_fatal_at_check_and_never_shown() {
    let server = SmtpServer::start(SmtpBehaviour::new().auth("mailer", "right-password"));
    let transport = smtp(&server, Some("mailer"), Some("s3cret-but-wrong"));

    let err = transport.check().await.unwrap_err();
    assert!(err.is_fatal(), "{err:?}");
    let shown = format!("{err} {err:?} {transport:?}");
    assert!(
        shown.contains("535") && shown.contains("LSQ_SMTP_PASSWORD"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret-but-wrong"), "{shown}");

    // Sending does not retry a refused login either.
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));
    let (outcome, attempts) = send_with_retry(&transport, &message, 5).await;
    assert!(matches!(outcome, Err(SendError::Fatal(_))), "{outcome:?}");
    assert_eq!(attempts, 1);
    assert!(server.messages().is_empty());
    assert_eq!(server.auth_failures(), 2);
}

#[tokio::test]
async fn right_password_from_settings_or_url_logs_in() {
    let server = SmtpServer::start(SmtpBehaviour::new().auth("mailer", "p@ss:word"));
    let transport = smtp(&server, Some("mailer"), Some("p@ss:word"));
    transport.check().await.unwrap();
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));
    transport.send(&message).await.unwrap();

    let url = format!("smtp://mailer:p%40ss%3Aword@{}", server.addr);
    let transport = Transport::smtp(&SmtpSettings {
        url,
        user: None,
        password: None,
        timeout: Duration::from_secs(10),
        helo_name: None,
        sender_domain: None,
        ca_file: None,
    })
    .unwrap();
    transport.check().await.unwrap();
    transport.send(&message).await.unwrap();

    let users: Vec<_> = server.messages().into_iter().map(|m| m.user).collect();
    assert_eq!(
        users,
        [Some("mailer".to_owned()), Some("mailer".to_owned())]
    );
}

#[tokio::test]
async fn no_server_is_unconnected_and_retried() {
    let refused = RefusedPort::bind();
    let transport = Transport::smtp(&SmtpSettings {
        url: format!("smtp://{}", refused.addr),
        user: None,
        password: None,
        timeout: Duration::from_secs(5),
        helo_name: None,
        sender_domain: None,
        ca_file: None,
    })
    .unwrap();
    let err = transport.check().await.unwrap_err();
    assert!(matches!(err, SendError::Unconnected(_)), "{err:?}");
    let refusal = format!("{} (connection refused)", refused.addr);
    assert!(err.to_string().contains(&refusal), "{err}");

    // Nothing reached a server, so a send is retried.
    let (message, _) = invite(&row("l-1", "Ada", "ada@example.com"));
    let (outcome, attempts) = send_with_retry(&transport, &message, 2).await;
    assert!(
        matches!(outcome, Err(SendError::Unconnected(_))),
        "{outcome:?}"
    );
    assert_eq!(attempts, 2);
}

#[test]
fn plaintext_to_a_remote_host_is_refused() {
    let err = Transport::smtp(&SmtpSettings {
        url: "smtp://mail.example.com:25".into(),
        user: None,
        password: None,
        timeout: Duration::from_secs(5),
        helo_name: None,
        sender_domain: None,
        ca_file: None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("refusing to send mail in plaintext"), "{err}");
    assert!(err.contains("smtps://mail.example.com:465"), "{err}");
    assert!(
        err.contains("smtp://mail.example.com:587?tls=required"),
        "{err}"
    );
}

#[tokio::test]
async fn crlf_in_first_name_and_email_adds_no_header() {
    // The Email cell is refused before any API call would be made.
    let evil_email = "ada@example.com\r\nBcc: eve@evil.example";
    assert!(check_address(evil_email).is_err());
    assert!(check_address("ada@example.com\nBcc: eve@evil.example").is_err());

    // FirstName feeds the subject: the line break is folded away.
    let server = SmtpServer::start(SmtpBehaviour::new());
    let transport = smtp(&server, None, None);
    let fields = row(
        "l-1",
        "Ada\r\nBcc: eve@evil.example\r\nX-Injected: yes",
        "ada@example.com",
    );
    let (message, _) = invite(&fields);
    transport.send(&message).await.unwrap();

    let m = &server.messages()[0];
    assert_eq!(m.to, ["ada@example.com"]);
    let names: Vec<String> = m
        .headers()
        .into_iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert!(!names.contains(&"bcc".to_owned()), "{names:?}");
    assert!(!names.contains(&"x-injected".to_owned()), "{names:?}");
    let subject = m.header("Subject").unwrap();
    assert!(
        subject.starts_with("Ada Bcc: eve@evil.example X-Injected: yes"),
        "{subject}"
    );
}

#[test]
fn an_unknown_template_variable_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_templates(
        dir.path(),
        "Hi {{ FirstName }}",
        "Dear {{ Title }} {{ LastName }}: {{ link }}",
    );
    let templates = Templates::load(&path).unwrap();
    let err = templates.check(&columns()).unwrap_err().to_string();
    assert!(err.contains("body.txt") && err.contains("Title"), "{err}");
}

#[test]
fn the_sample_templates_use_only_known_variables() {
    sample_templates();
}

#[tokio::test]
async fn outbox_writes_one_eml_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let transport = Transport::outbox(&outbox).unwrap();
    transport.check().await.unwrap();

    let mut ids = Vec::new();
    for (lead, name) in [("l-1", "Ada"), ("l-2", "Bob")] {
        let (message, id) = invite(&row(lead, name, &format!("{name}@example.com")));
        let (outcome, attempts) = send_with_retry(&transport, &message, 3).await;
        outcome.unwrap();
        assert_eq!(attempts, 1);
        ids.push(id);
    }

    let mut files: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<String> = ids
        .iter()
        .map(|id| format!("{}.eml", id.trim_matches(['<', '>'])))
        .collect();
    expected.sort();
    assert_eq!(files, expected);

    let first = std::fs::read_to_string(outbox.join(&expected[0])).unwrap();
    assert!(first.contains("Message-ID: <lsq-dispatch."), "{first}");
    let parsed = ReceivedMessage {
        from: String::new(),
        to: Vec::new(),
        data: first.replace("\r\n", "\n").replace('\n', "\r\n"),
        user: None,
    };
    assert!(parsed.text().unwrap().contains(LINK), "{first}");
    let mode = mode(&outbox.join(&expected[0]));
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

#[tokio::test]
async fn script_in_first_name_is_escaped_in_html_only() {
    let server = SmtpServer::start(SmtpBehaviour::new());
    let transport = smtp(&server, None, None);
    let (message, _) = invite(&row("l-1", "<script>alert(1)</script>", "ada@example.com"));
    transport.send(&message).await.unwrap();

    let m = &server.messages()[0];
    let html = m.html().unwrap();
    let text = m.text().unwrap();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "{html}"
    );
    assert!(text.contains("Hi <script>alert(1)</script>,"), "{text}");
}

#[tokio::test]
async fn concurrent_sends_share_the_pool() {
    let server = SmtpServer::start(SmtpBehaviour::new().delay(Duration::from_millis(50)));
    let transport = smtp(&server, None, None);
    let messages: Vec<_> = (0..8)
        .map(|i| invite(&row(&format!("l-{i}"), "Ada", &format!("a{i}@example.com"))).0)
        .collect();
    let outcomes =
        futures::future::join_all(messages.iter().map(|m| send_with_retry(&transport, m, 3))).await;
    for (outcome, attempts) in outcomes {
        outcome.unwrap();
        assert_eq!(attempts, 1);
    }
    assert_eq!(server.messages().len(), 8);
}
