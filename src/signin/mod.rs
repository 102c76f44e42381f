//! Portal sign-in with a one-time password: request an OTP for a lead's phone,
//! then sign in with it to get the lead's auth key and login link.
//!
//! Support staff run the two steps by hand, so each prints what to do next and
//! each failure says what went wrong and how to go on. Both calls (and the
//! public-key fetch when `LSQ_PUBLIC_AUTH_KEY` is not set) take the same
//! limiter and retry path as Generate. The OTP, the public key and the
//! access and secret keys never reach the output.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::api::with_retry;
use crate::api::{ApiError, KEY_LIFETIME};
use crate::config::UsageError;
use crate::console::{say, shell_quote};
use crate::exit::Exit;
use crate::secret::Secret;

mod args;
mod client;

pub use args::{OtpCommand, OtpConnection, RequestArgs, SigninArgs};
#[cfg(test)]
use client::{describe_failure, needs_new_code};
use client::{Otp, Step};

/// Runs an `otp` subcommand and returns its exit code. Ctrl-C, SIGTERM or
/// SIGHUP ends it wherever it waits (130): it keeps no state to save.
pub async fn execute(command: OtpCommand) -> anyhow::Result<Exit> {
    let stop = crate::signal::StopSignal::new();
    let _signals = crate::signal::watch_signals(&stop);
    let work = async {
        match command {
            OtpCommand::Request(args) => request(*args).await,
            OtpCommand::Signin(args) => signin(*args).await,
        }
    };
    match stop.unless_stopping(work).await {
        Some(done) => done,
        None => {
            tracing::info!("interrupted: re-run the command to try again");
            Ok(Exit::Interrupted)
        }
    }
}

/// What `otp request --json` prints.
#[derive(Debug, Serialize)]
struct RequestOutput<'a> {
    field: &'a str,
    field_content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_file: Option<String>,
    message: Option<&'a str>,
    next: String,
}

/// What `otp signin --json` prints.
#[derive(Debug, Serialize)]
struct SigninOutput<'a> {
    lead_id: &'a str,
    expires_at: String,
    login_link: Option<&'a str>,
    /// Which key the link carries: `generate` or `signin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    link_key: Option<&'static str>,
}

/// The key a printed link carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkKey {
    /// The lead's portal key from Generate, as documented for links.
    Generate,
    /// The sign-in AuthKey, a session key.
    Signin,
}

impl LinkKey {
    fn name(self) -> &'static str {
        match self {
            LinkKey::Generate => "generate",
            LinkKey::Signin => "signin",
        }
    }
}

async fn request(args: RequestArgs) -> anyhow::Result<Exit> {
    let phone = required("--phone", &args.phone)?;
    let field = required("--field", &args.field)?;
    let mut otp = Otp::connect(&args.connection).await?;
    // Opened before any call, so an unwritable path costs no SMS.
    let code_file = args
        .code_file
        .as_deref()
        .map(CodeFile::create)
        .transpose()?;

    let public_key = otp.public_key().await?;
    let sent = with_retry(&otp.limiter, &otp.policy, || {
        otp.client
            .signin_otp_get(&public_key, &otp.headers, field, phone)
    })
    .await;
    let sent = match sent.result {
        Ok(sent) => sent,
        Err(error) => {
            if let Some(file) = code_file {
                file.discard();
            }
            return Err(otp.failure(Step::Request, &error, sent.attempts, false));
        }
    };

    // The Sign In document: pass the Code and FieldContent this answer holds.
    let content = sent
        .field_content
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(phone);
    let code_arg = match &code_file {
        Some(file) => {
            file.write(&sent.code)?;
            format!(
                "--code-file {}",
                shell_quote(&file.path.display().to_string())
            )
        }
        None => format!("--code {}", shell_quote(&sent.code)),
    };
    let portal_url = args.portal_url.as_deref().filter(|u| !u.trim().is_empty());
    let next = next_command(&otp, content, &code_arg, portal_url);
    if args.connection.json {
        let output = RequestOutput {
            field,
            field_content: content,
            code: code_file.is_none().then_some(sent.code.as_str()),
            code_file: code_file.as_ref().map(|f| f.path.display().to_string()),
            message: sent.message.as_deref(),
            next,
        };
        say!("{}", serde_json::to_string(&output)?);
        return Ok(Exit::Success);
    }
    let said = sent.message.as_deref().unwrap_or("OTP sent");
    say!("OTP requested for {field} {content} ({said}).");
    match &code_file {
        Some(file) => say!("Code written to {}.", file.path.display()),
        None => say!("Code: {}", sent.code),
    }
    say!("Next, sign in with the one-time password the lead received (replace OTP):");
    say!("  {next}");
    if otp.headers.register_token.is_some() {
        say!("with the same register token (--register-token or LSQ_REGISTER_TOKEN).");
    }
    say!("The code works once; if it has expired, run `otp request` again.");
    Ok(Exit::Success)
}

async fn signin(args: SigninArgs) -> anyhow::Result<Exit> {
    let phone = required("--phone", &args.phone)?;
    let code = match (&args.code, &args.code_file) {
        (_, Some(path)) => read_code(path)?,
        (Some(code), None) => required("--code", code)?.to_owned(),
        (None, None) => return Err(UsageError("--code or --code-file is required".into()).into()),
    };
    let otp_value = Secret::new(required("--otp", &args.otp)?);
    let portal_url = args
        .portal_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .map(|u| {
            crate::portal_url::parse_portal_url(u)
                .map_err(|e| UsageError(format!("--portal-url: {e}")))
        })
        .transpose()?;
    let mut otp = Otp::connect(&args.connection).await?;
    otp.secrets.push(otp_value.clone());

    let public_key = otp.public_key().await?;
    // A sign-in whose answer was lost may still have spent the code, so the
    // retry's "already used" deserves a different explanation.
    let lost = AtomicBool::new(false);
    let signed = with_retry(&otp.limiter, &otp.policy, || {
        let (otp, lost, public_key, otp_value, code) =
            (&otp, &lost, &public_key, &otp_value, &code);
        async move {
            let result = otp
                .client
                .signin(public_key, &otp.headers, phone, code, otp_value)
                .await;
            if matches!(result, Err(ApiError::Timeout(_) | ApiError::Transport(_))) {
                lost.store(true, Ordering::Relaxed);
            }
            result
        }
    })
    .await;
    let signed = signed.result.map_err(|error| {
        otp.failure(
            Step::Signin,
            &error,
            signed.attempts,
            lost.load(Ordering::Relaxed),
        )
    })?;

    let lifetime = args.key_lifetime.unwrap_or(KEY_LIFETIME);
    let expires_at = (Utc::now() + lifetime).to_rfc3339_opts(SecondsFormat::Secs, true);
    // Only the Generate key is documented for portal links; the sign-in
    // AuthKey is a session key, used for the link only when no Generate key
    // can be had, and then said plainly.
    let link = match &portal_url {
        Some(url) => {
            let (key, kind) = match otp.portal_key(&signed.lead_id).await? {
                Some(key) => (key, LinkKey::Generate),
                None => (signed.auth_key.clone(), LinkKey::Signin),
            };
            let link = crate::portal_url::login_link(url, key.expose(), None).to_string();
            Some((link, kind))
        }
        None => None,
    };
    if args.connection.json {
        let output = SigninOutput {
            lead_id: &signed.lead_id,
            expires_at,
            login_link: link.as_ref().map(|(link, _)| link.as_str()),
            link_key: link.as_ref().map(|(_, kind)| kind.name()),
        };
        say!("{}", serde_json::to_string(&output)?);
        return Ok(Exit::Success);
    }
    say!("Signed in lead {}.", signed.lead_id);
    say!("Key expires at {expires_at} (4 h from now).");
    match link {
        Some((link, LinkKey::Generate)) => {
            say!("Login link: {link}");
            say!("(its key is the lead's portal key from Generate, valid 4 h)");
        }
        Some((link, LinkKey::Signin)) => {
            say!("Session link: {link}");
            say!(
                "(its key is the sign-in AuthKey, which LeadSquared documents as a session \
                 key, not as a portal link key: the portal may refuse it; with LSQ_ACCESS_KEY, \
                 LSQ_SECRET_KEY, LSQ_TENANT_AUTH_KEY and --portal-id the link carries the \
                 lead's Generate key instead)"
            );
        }
        None => say!("No login link: pass --portal-url (or set LSQ_PORTAL_URL) to get one."),
    }
    Ok(Exit::Success)
}

/// The exact `otp signin` command to run next; only the OTP is left to fill
/// in, and no secret is in it.
fn next_command(otp: &Otp, phone: &str, code_arg: &str, portal_url: Option<&str>) -> String {
    let mut line = format!(
        "lsq-dispatch otp signin --host {} --phone {} {code_arg}",
        shell_quote(otp.host.as_str().trim_end_matches('/')),
        shell_quote(phone),
    );
    if let Some(portal_id) = &otp.headers.portal_id {
        line.push_str(&format!(" --portal-id {portal_id}"));
    }
    if let Some(url) = portal_url {
        line.push_str(&format!(" --portal-url {}", shell_quote(url.trim())));
    }
    line.push_str(" --otp OTP");
    line
}

/// A flag's value, trimmed, or a usage error when it is blank.
fn required<'a>(flag: &str, value: &'a str) -> Result<&'a str, UsageError> {
    let value = value.trim();
    if value.is_empty() {
        Err(UsageError(format!("{flag} must not be empty")))
    } else {
        Ok(value)
    }
}

fn read_code(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read --code-file {}: {e}", path.display())))?;
    Ok(required("the --code-file", &text)?.to_owned())
}

/// The `--code-file`, opened 0600 before the request is made.
struct CodeFile {
    path: PathBuf,
    file: fs::File,
    created: bool,
}

impl CodeFile {
    fn create(path: &Path) -> anyhow::Result<CodeFile> {
        let created = !path.exists();
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot write --code-file {}", path.display()))?;
        // `mode` only applies to a new file; an old one keeps its bits otherwise.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict --code-file {}", path.display()))?;
        Ok(CodeFile {
            path: path.to_owned(),
            file,
            created,
        })
    }

    fn write(&self, code: &str) -> anyhow::Result<()> {
        let mut file = &self.file;
        writeln!(file, "{code}")
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write --code-file {}", self.path.display()))
    }

    /// Leaves no empty file behind when the request failed.
    fn discard(self) {
        if self.created {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The `otp` subcommands as the command line parses them.
    #[derive(Parser)]
    struct Command {
        #[command(subcommand)]
        otp: OtpCommand,
    }

    #[test]
    fn refusals_that_need_a_new_code_are_told_apart_from_typos() {
        assert!(needs_new_code("OTP has expired: request a new OTP"));
        assert!(needs_new_code("OTP code has already been used"));
        assert!(needs_new_code("Too many incorrect OTP attempts"));
        assert!(!needs_new_code("Invalid OTP: the OTP entered is incorrect"));
        let text = describe_failure(
            Step::Signin,
            &ApiError::Rejected {
                status: 400,
                message: "OTP code has already been used".into(),
            },
            2,
            true,
        );
        assert!(
            text.contains("otp request") && text.contains("lost"),
            "{text}"
        );
    }

    #[test]
    fn a_signin_needs_a_code_and_only_one_form_of_it() {
        let base = ["otp", "signin", "--phone", "+1", "--otp", "1"];
        assert!(Command::try_parse_from(base).is_err());
        let both = [&base[..], &["--code", "c", "--code-file", "f"]].concat();
        assert!(Command::try_parse_from(both).is_err());
        let one = [&base[..], &["--code", "c"]].concat();
        let OtpCommand::Signin(args) = Command::try_parse_from(one).unwrap().otp else {
            panic!("parsed as another command");
        };
        assert_eq!(args.code.as_deref(), Some("c"));
        assert_eq!(args.connection.rate, crate::limiter::Rate::DEFAULT);
    }
}
