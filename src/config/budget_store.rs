//! Where a live run shares the tenant's API budget with other processes: the
//! budget file beside the campaign state, for every process on this machine.

use std::path::{Path, PathBuf};

/// Where the tenant's API budget is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetStore {
    /// Nowhere: the process has the budget to itself, as a `--sandbox` run
    /// has its private sandbox.
    Own,
    /// A budget file per tenant in this directory, for every process on
    /// this machine.
    Machine(PathBuf),
}

impl BudgetStore {
    /// The budget file in the directory of the campaign state file `state`.
    pub fn beside(state: &Path) -> BudgetStore {
        BudgetStore::Machine(match state.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_file_is_in_the_state_files_directory() {
        let beside = |state: &str| BudgetStore::beside(Path::new(state));
        assert_eq!(beside("d/state.sqlite"), BudgetStore::Machine("d".into()));
        assert_eq!(beside("state.sqlite"), BudgetStore::Machine(".".into()));
    }
}
