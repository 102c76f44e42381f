//! The command line: the subcommands, each with the flags its own module
//! defines (`config::RunArgs`, `status::StatusArgs`, `signin::OtpCommand`,
//! the sandbox's), and what a parse error says. Nothing below imports it.

use clap::{Parser, Subcommand};

mod parse;

pub use crate::config::RunArgs;
pub use crate::signin::{OtpCommand, OtpConnection, RequestArgs, SigninArgs};
pub use crate::status::StatusArgs;

/// Turn a CSV of LeadSquared LeadIds into portal auto-login links, paced to the
/// tenant's API budget, optionally email each lead its link, and write a
/// per-lead report.
#[derive(Debug, Parser)]
#[command(name = "lsq-dispatch", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, or exits: 0 after `--help` or `--version`,
    /// 2 for a usage error. A secret given as a flag is told where secrets go.
    pub fn parse_or_exit() -> Cli {
        parse::forget_blank_variables();
        Cli::try_parse().unwrap_or_else(|error| match parse::our_message(&error) {
            Some(message) => {
                eprintln!("error: {message}");
                std::process::exit(2)
            }
            None => error.exit(),
        })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a login link for every lead in a CSV (and optionally email it).
    Run(Box<RunArgs>),
    /// Show each campaign's progress from the state file (--json for scripts),
    /// export one as a report, or prune finished ones.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Sign a lead in to the portal with a one-time password.
    #[command(subcommand)]
    Otp(OtpCommand),
    /// Serve the built-in LeadSquared simulator on loopback.
    Sandbox(Box<lsq_sandbox::SandboxArgs>),
    /// The link service: verify redirect links (BASE/l/TOKEN) and send each
    /// person on to the portal with a live key.
    Serve(Box<crate::serve::ServeArgs>),
    /// Redirect link secrets.
    #[command(subcommand)]
    Links(crate::serve::LinksCommand),
    /// Write the man pages or a shell's completions (for packaging).
    #[command(subcommand, hide = true)]
    Generate(crate::generate::Generate),
}

impl Cli {
    /// The logging flags: a run's, the defaults for other commands.
    pub fn log_settings(&self) -> crate::logging::LogSettings {
        match &self.command {
            Command::Run(args) => crate::logging::LogSettings {
                format: args.log_format,
                verbose: args.verbose,
                quiet: args.quiet,
            },
            Command::Serve(args) => args.log_settings(),
            _ => crate::logging::LogSettings::default(),
        }
    }
}

const STATUS_HELP: &str = "Exit codes: 0 done; 1 the state file is missing or cannot be read; \
2 usage error, such as a --campaign the state file does not hold (the message lists those it \
does).";
