//! The `--config` TOML file: every setting a flag or variable can give, plus
//! the secrets and the few settings that have no flag.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{usage, UsageError};
use crate::secret::{Scrubber, Secret};

/// The `--config` TOML file. Unknown keys are an error, so a typo cannot be
/// silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub(super) host: Option<String>,
    pub(super) portal_id: Option<String>,
    pub(super) portal_url: Option<String>,
    pub(super) rate: Option<String>,
    pub(super) report: Option<PathBuf>,
    pub(super) summary_json: Option<PathBuf>,
    pub(super) lead_column: Option<String>,
    pub(super) link_ids: Option<bool>,
    pub(super) concurrency: Option<usize>,
    pub(super) max_attempts: Option<u32>,
    pub(super) timeout: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) arrival_margin: Option<String>,
    pub(super) burst: Option<u32>,
    pub(super) tenant_key_path: Option<String>,
    pub(super) tenant_key_method: Option<String>,
    pub(super) access_key: Option<Secret>,
    pub(super) secret_key: Option<Secret>,
    pub(super) tenant_auth_key: Option<Secret>,
    pub(super) public_auth_key: Option<Secret>,
    pub(super) email: Option<bool>,
    pub(super) smtp_url: Option<String>,
    pub(super) smtp_user: Option<String>,
    pub(super) smtp_password: Option<Secret>,
    pub(super) smtp_timeout: Option<String>,
    pub(super) smtp_rate: Option<String>,
    pub(super) email_concurrency: Option<usize>,
    pub(super) outbox: Option<PathBuf>,
    pub(super) templates: Option<PathBuf>,
    pub(super) from: Option<String>,
    pub(super) reply_to: Option<String>,
    pub(super) list_unsubscribe: Option<String>,
    pub(super) email_column: Option<String>,
    pub(super) campaign: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) working_hours: Option<String>,
    pub(super) state: Option<PathBuf>,
    pub(super) budget_store: Option<String>,
    pub(super) metrics_file: Option<PathBuf>,
    pub(super) ping_url: Option<Secret>,
}

impl FileConfig {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<FileConfig, UsageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| usage(parse_error(path, &text, &e)))
    }
}

/// Where the file is broken and why, without quoting it: the line the parser
/// would show may hold a key, and so may a value its message quotes, so every
/// value in the file is scrubbed from the message.
fn parse_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let place = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            let setting = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(key, _)| key.trim())
                // A name like ours; anything else might be a key pasted in.
                .filter(|key| {
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
                .map(|key| format!(" ({key})"))
                .unwrap_or_default();
            format!(", line {line}, column {column}{setting}")
        }
        None => String::new(),
    };
    let values: Vec<Secret> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(_, value)| Secret::new(value.trim().trim_matches(['"', '\''])))
        .collect();
    let message = Scrubber::new(&values).scrub(error.message().trim());
    format!(
        "config file {}{place}: {message} (the line is not shown, as it may hold a key)",
        path.display()
    )
}
