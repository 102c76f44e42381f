//! The error of a request the user can fix: a flag, setting, template, column
//! or path that is missing or malformed. Any module may return it; only the
//! top of the program turns it into exit code 2.

/// A flag, setting, template or column is missing or malformed: a usage
/// error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
