//! The `lsq-dispatch` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::CommandFactory;
use lsq_dispatch::cli::{Cli, Command};
use lsq_dispatch::config::{self, Settings};
use lsq_dispatch::exit::Exit;
use lsq_dispatch::{run, sandbox, serve, signin, status};

/// mimalloc frees memory made on another thread cheaply: rows are parsed on
/// the reader thread and dropped on the runtime's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    lsq_dispatch::logging::init(cli.log_settings());
    // A dry run makes no call: one thread does its work fastest.
    let mut runtime = match &cli.command {
        Command::Run(args) if args.dry_run => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let result = runtime
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(execute(cli)));
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            tracing::error!("{error:#}");
            Exit::of_error(&error).into()
        }
    }
}

/// One line per subcommand: settings, then the job; each says how it ended.
async fn execute(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Run(args) => run::execute(Settings::resolve(&config::merge(*args)?)?).await,
        Command::Status(args) => status::execute(&args),
        Command::Otp(command) => signin::execute(command).await,
        Command::Sandbox(args) => sandbox::serve(*args).await.map(|()| Exit::Success),
        Command::Serve(args) => serve::execute(*args).await,
        Command::Links(command) => Ok(serve::links(command)),
        Command::Generate(what) => what.write(Cli::command()).map(|()| Exit::Success),
    }
}
