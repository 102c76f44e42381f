//! The `otp` subcommands' flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::limiter::Rate;

const CREDENTIALS_HELP: &str = "Credentials come from the environment: LSQ_PUBLIC_AUTH_KEY, or \
LSQ_ACCESS_KEY and LSQ_SECRET_KEY to fetch it. Exit codes: 0 done; 1 the API refused or could \
not be reached (the message says why and what to do); 2 usage error.";

/// `lsq-dispatch otp …`. The arguments are boxed so the enum of every
/// subcommand stays small.
#[derive(Debug, Clone, Subcommand)]
pub enum OtpCommand {
    /// Have LeadSquared send a lead a one-time password; prints the Code that
    /// `otp signin` needs.
    #[command(after_help = CREDENTIALS_HELP)]
    Request(Box<RequestArgs>),
    /// Sign a lead in with the one-time password it received; prints its
    /// LeadId, the key's expiry and, with --portal-url, its login link.
    #[command(after_help = CREDENTIALS_HELP)]
    Signin(Box<SigninArgs>),
}

/// Flags both `otp` steps share.
#[derive(Debug, Clone, Args)]
pub struct OtpConnection {
    /// API host, a URL or a bare host (https assumed), e.g. portalapi-in21.leadsquared.com.
    #[arg(long, env = "LSQ_HOST", hide_env_values = true)]
    pub host: Option<String>,

    /// Portal GUID, sent as the x-lsq-portalid header.
    #[arg(
        long,
        env = "LSQ_PORTAL_ID",
        hide_env_values = true,
        value_name = "GUID"
    )]
    pub portal_id: Option<String>,

    /// The portal's register token, sent as the x-lsq-registertoken header.
    #[arg(
        long,
        env = "LSQ_REGISTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub register_token: Option<String>,

    /// The tenant's API budget, CALLS/WINDOW.
    #[arg(long, value_name = "N/W", default_value = "25/5s")]
    pub rate: Rate,

    /// Share the tenant's API budget with runs on other machines through this
    /// Redis server: redis://HOST:PORT[/DB], or rediss://… for TLS [default:
    /// the budget file beside the default campaign state, shared on this machine].
    #[arg(
        long,
        env = "LSQ_BUDGET_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub budget_store: Option<String>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `lsq-dispatch otp request`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// The lead's phone exactly as stored on the lead, e.g. +14-157415569
    /// (with --field EmailAddress, its email address).
    #[arg(long, value_name = "PHONE")]
    pub phone: String,

    /// The lead field the phone is looked up in.
    #[arg(long, value_name = "NAME", default_value = "Phone")]
    pub field: String,

    /// Write the Code to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "PATH")]
    pub code_file: Option<PathBuf>,

    /// The portal page URL, passed on in the printed `otp signin` command so
    /// that it prints the lead's login link.
    #[arg(
        long,
        env = "LSQ_PORTAL_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub portal_url: Option<String>,

    /// Host, headers, budget and output form.
    #[command(flatten)]
    pub connection: OtpConnection,
}

/// `lsq-dispatch otp signin`.
#[derive(Debug, Clone, Args)]
pub struct SigninArgs {
    /// The phone the OTP was requested for, as the service answered it (the
    /// `--phone` of the command `otp request` printed).
    #[arg(long, value_name = "PHONE")]
    pub phone: String,

    /// The Code `otp request` printed.
    #[arg(
        long,
        value_name = "CODE",
        required_unless_present = "code_file",
        conflicts_with = "code_file"
    )]
    pub code: Option<String>,

    /// Read the Code from the file `otp request --code-file` wrote.
    #[arg(long, value_name = "PATH")]
    pub code_file: Option<PathBuf>,

    /// The one-time password the lead received (LSQ_OTP keeps it out of the
    /// shell history).
    #[arg(long, env = "LSQ_OTP", hide_env_values = true, value_name = "OTP")]
    pub otp: String,

    /// The portal page URL, to print a link to it: with the lead's Generate
    /// key when LSQ_ACCESS_KEY, LSQ_SECRET_KEY, LSQ_TENANT_AUTH_KEY and
    /// --portal-id are set, else with the sign-in key (a session key; said so).
    #[arg(
        long,
        env = "LSQ_PORTAL_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub portal_url: Option<String>,

    /// How long LeadSquared keeps the lead's key valid for this tenant, for
    /// the expiry printed [default: 4h].
    #[arg(
        long,
        env = "LSQ_KEY_LIFETIME",
        hide_env_values = true,
        value_name = "DURATION",
        value_parser = crate::config::value::key_lifetime
    )]
    pub key_lifetime: Option<std::time::Duration>,

    /// Host, headers, budget and output form.
    #[command(flatten)]
    pub connection: OtpConnection,
}
