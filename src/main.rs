//! The `lsq-dispatch` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use lsq_dispatch::cli::{Cli, Command};
use lsq_dispatch::config::{Settings, UsageError};
use lsq_dispatch::state::StateError;
use lsq_dispatch::{otp, pipeline, sandbox, status};

/// mimalloc frees memory made on another thread cheaply: rows are parsed on
/// the reader thread and dropped on the runtime's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// One line per subcommand: settings, then the job; each returns its exit code.
async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => pipeline::execute(Settings::resolve(&args)?).await,
        Command::Status(args) => status::execute(&args),
        Command::Otp(command) => otp::execute(command).await,
        Command::Sandbox(args) => sandbox::serve(*args).await.map(|()| 0),
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
