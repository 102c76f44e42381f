//! Files made from the command line's own definition, for packaging: one man
//! page per subcommand and shell completions. `lsq-dispatch generate …` is
//! hidden from `--help`; `scripts/build-deb` calls it on the built binary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use clap_complete::Shell;

/// `lsq-dispatch generate`: what to write, and where.
#[derive(Debug, Clone, Subcommand)]
pub enum Generate {
    /// Man pages, one per subcommand (`lsq-dispatch.1`, `lsq-dispatch-run.1`, …).
    Man {
        /// The directory to write them in (created when missing).
        dir: PathBuf,
    },
    /// The completion script for one shell.
    Completions {
        /// The shell.
        shell: Shell,
        /// The directory to write it in (created when missing), under the
        /// shell's own name for it: `lsq-dispatch.bash`, `_lsq-dispatch`,
        /// `lsq-dispatch.fish`, ….
        dir: PathBuf,
    },
}

impl Generate {
    /// Writes the files for `command` (the whole command line) and prints
    /// each file's path on its own line.
    pub fn write(&self, mut command: clap::Command) -> anyhow::Result<()> {
        let dir = match self {
            Generate::Man { dir } | Generate::Completions { dir, .. } => dir,
        };
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
        let written = match self {
            Generate::Man { .. } => {
                let mut command = command.disable_help_subcommand(true);
                command.build();
                man_pages(&command, dir)
            }
            Generate::Completions { shell, .. } => {
                let name = command.get_name().to_owned();
                clap_complete::generate_to(*shell, &mut command, name, dir).map(|p| vec![p])
            }
        }
        .with_context(|| format!("cannot write into {}", dir.display()))?;
        for path in written {
            println!("{}", path.display());
        }
        Ok(())
    }
}

/// The page of `command` and of each of its subcommands that `--help` shows,
/// named after its path (`lsq-dispatch-otp-request.1`); `command` is built.
fn man_pages(command: &clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = vec![clap_mangen::Man::new(command.clone()).generate_to(dir)?];
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.extend(man_pages(sub, dir)?);
    }
    Ok(written)
}
