//! The `--config` TOML file: every setting a flag or variable can give, plus
//! the secrets and the few settings that have no flag.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
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
    pub(super) encoding: Option<String>,
    pub(super) delimiter: Option<String>,
    pub(super) limit: Option<u64>,
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
    /// Reads and parses a settings file; warns when it holds a secret that
    /// other users can read.
    pub fn load(path: &Path) -> Result<FileConfig, UsageError> {
        let unreadable = |e| usage(format!("cannot read config file {}: {e}", path.display()));
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        // The mode of the file read, not of whatever the path names later.
        let mode = file.metadata().map_err(unreadable)?.permissions().mode();
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(unreadable)?;
        let config: FileConfig =
            toml::from_str(&text).map_err(|e| usage(parse_error(path, &text, &e)))?;
        if let Some(warning) = config.exposure(path, mode) {
            tracing::warn!("{warning}");
        }
        Ok(config)
    }

    /// The settings of the file that hold a secret: a key, a password, or a
    /// URL with a password in it.
    fn secrets(&self) -> Vec<&'static str> {
        let with_password = |url: &Option<String>| {
            url.as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .is_some_and(|u| u.password().is_some())
        };
        [
            ("access_key", self.access_key.is_some()),
            ("secret_key", self.secret_key.is_some()),
            ("tenant_auth_key", self.tenant_auth_key.is_some()),
            ("public_auth_key", self.public_auth_key.is_some()),
            ("smtp_password", self.smtp_password.is_some()),
            ("smtp_url", with_password(&self.smtp_url)),
            ("budget_store", with_password(&self.budget_store)),
        ]
        .into_iter()
        .filter_map(|(name, held)| held.then_some(name))
        .collect()
    }

    /// What to say when the file holds a secret and its group or other users
    /// may read it (`mode`, as the file system gives it).
    fn exposure(&self, path: &Path, mode: u32) -> Option<String> {
        let secrets = self.secrets();
        if mode & 0o044 == 0 || secrets.is_empty() {
            return None;
        }
        Some(format!(
            "the config file {path} holds secrets ({}) and other users can read it (mode \
             {:04o}): run chmod 600 {path}",
            secrets.join(", "),
            mode & 0o7777,
            path = path.display()
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(text: &str, mode: u32) -> Option<String> {
        let config: FileConfig = toml::from_str(text).unwrap();
        config.exposure(Path::new("/etc/lsq.toml"), mode)
    }

    #[test]
    fn a_secret_others_can_read_is_named_without_its_value() {
        let warning = exposure("secret_key = \"s3cret\"\nrate = \"25/5s\"", 0o100644).unwrap();
        assert!(warning.contains("(secret_key)"), "{warning}");
        assert!(warning.contains("mode 0644"), "{warning}");
        assert!(warning.ends_with("chmod 600 /etc/lsq.toml"), "{warning}");
        assert!(!warning.contains("s3cret"), "{warning}");
        assert!(exposure("secret_key = \"s3cret\"", 0o100600).is_none());
        assert!(exposure("secret_key = \"s3cret\"", 0o100640).is_some());
    }

    #[test]
    fn a_password_in_a_url_is_a_secret_too() {
        for text in [
            "smtp_url = \"smtps://me:pw@mail.example.com\"",
            "budget_store = \"redis://:pw@10.0.0.5:6379\"",
        ] {
            assert!(exposure(text, 0o644).is_some(), "{text}");
        }
        for text in [
            "smtp_url = \"smtps://mail.example.com\"",
            "budget_store = \"redis://10.0.0.5:6379\"",
            "host = \"portalapi.leadsquared.com\"",
        ] {
            assert!(exposure(text, 0o644).is_none(), "{text}");
        }
    }
}
