//! The `lsq-dispatch` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use lsq_dispatch::cli::{Cli, Command};
use lsq_dispatch::config::{Settings, UsageError};
use lsq_dispatch::state::{self, StateError, StateStore};
use lsq_dispatch::{otp, pipeline, sandbox};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A dry run makes no call: one thread does its work fastest.
    let mut runtime = match &cli.command {
        Command::Run(args) if args.dry_run => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let result = runtime
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    exit_code(result)
}

/// Settings, then the job, then its summary.
async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => {
            let settings = Settings::resolve(&args)?;
            if settings
                .email
                .as_ref()
                .is_some_and(|e| e.test_address.is_some())
            {
                println!("{}", pipeline::send_test(settings).await?);
                return Ok(0);
            }
            let outcome = pipeline::run(settings).await?;
            println!("{}", outcome.describe());
            Ok(outcome.exit_code())
        }
        Command::Status(args) => {
            let path = args.state.unwrap_or_else(StateStore::default_path);
            let text = state::status(&path, args.campaign.as_deref(), args.export.as_deref())?;
            println!("{text}");
            Ok(0)
        }
        Command::Otp(command) => otp::execute(command).await,
        Command::Sandbox(args) => {
            sandbox::serve(*args).await?;
            Ok(0)
        }
    }
}

/// 2 for usage errors, 4 when another run holds the state file, 1 for every
/// other fault (the run was aborted).
fn exit_code(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            let locked = error
                .chain()
                .any(|e| matches!(e.downcast_ref(), Some(StateError::Locked { .. })));
            ExitCode::from(match () {
                _ if error.is::<UsageError>() => 2,
                _ if locked => 4,
                _ => 1,
            })
        }
    }
}
