//! The process's exit codes: one type that `main`, the run's outcome, the
//! signal path and `--help` all read, so the codes cannot drift apart.

use crate::state::StateError;
use crate::usage::UsageError;

/// How a command ended, as the exit code scripts and cron read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: every row succeeded.
    Success,
    /// 1: the run was aborted by a fatal error; the report keeps what was done.
    Aborted,
    /// 2: a usage error (a flag, setting, template or column is wrong).
    Usage,
    /// 3: the run finished, but some leads failed or are in doubt.
    Attention,
    /// 4: the campaign is busy in another run.
    Busy,
    /// 5: every lead succeeded, but some input rows were invalid or
    /// duplicates: the input needs fixing, not the delivery.
    InputRejected,
    /// 130: interrupted; what was done is saved and a re-run resumes.
    Interrupted,
}

/// The exit codes as `run --help` prints them, as the README's table has
/// them.
pub const HELP: &str = "Exit codes:
  0    every row succeeded
  1    aborted by a fatal error (the report keeps what was done)
  2    usage error (a flag, setting, template or column is missing or malformed)
  3    finished, but some leads failed or are in doubt (rows may also be invalid)
  4    the campaign is busy in another run
  5    finished, every lead succeeded, but some input rows were invalid or duplicates
  130  interrupted (what was done is saved and a re-run resumes)";

impl Exit {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Aborted => 1,
            Exit::Usage => 2,
            Exit::Attention => 3,
            Exit::Busy => 4,
            Exit::InputRejected => 5,
            Exit::Interrupted => 130,
        }
    }

    /// The code for a command that returned an error: a signal that
    /// stopped it is 130, usage mistakes (an
    /// input column missing or named twice among them) are 2,
    /// a state file held by another run is 4, a signal while the run waited
    /// for a FIFO's reader before doing anything is 130, every other fault
    /// aborted the run (1).
    pub fn of_error(error: &anyhow::Error) -> Exit {
        if error
            .chain()
            .any(|e| e.is::<crate::paths::StoppedWaiting>())
        {
            return Exit::Interrupted;
        }
        let locked = error.chain().any(|e| {
            matches!(
                e.downcast_ref(),
                Some(StateError::OtherName { .. } | StateError::Busy { .. })
            )
        });
        let usage = error.chain().any(|e| {
            e.is::<UsageError>()
                || e.downcast_ref::<crate::input::InputError>()
                    .is_some_and(crate::input::InputError::is_usage)
        });
        if error.chain().any(|e| e.is::<crate::signal::Interrupted>()) {
            Exit::Interrupted
        } else if usage {
            Exit::Usage
        } else if locked {
            Exit::Busy
        } else {
            Exit::Aborted
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_code() {
        for exit in [
            Exit::Success,
            Exit::Aborted,
            Exit::Usage,
            Exit::Attention,
            Exit::Busy,
            Exit::InputRejected,
            Exit::Interrupted,
        ] {
            assert!(HELP.contains(&format!("\n  {} ", exit.code())), "{exit:?}");
        }
    }

    #[test]
    fn errors_map_to_their_codes() {
        let usage = anyhow::Error::from(UsageError("bad flag".into()));
        assert_eq!(Exit::of_error(&usage), Exit::Usage);
        assert_eq!(
            Exit::of_error(&usage.context("while starting")),
            Exit::Usage
        );
        assert_eq!(Exit::of_error(&anyhow::anyhow!("401")), Exit::Aborted);
    }
}
