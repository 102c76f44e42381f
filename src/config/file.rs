//! The `--config` TOML file (every setting a flag or variable can give, plus
//! the secrets and the few settings that have no flag), and the one place it
//! is merged under the flags and the environment.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::DeTable;

use super::value::Invalid;
use super::RunArgs;
use super::{env_secret, usage, Credentials, UsageError};
use crate::secret::{Scrubber, Secret};

/// Reads and parses a settings file into the settings it gives; warns when
/// it holds a secret that other users can read. Unknown keys are an error,
/// so a typo cannot be silently ignored.
pub fn load(path: &Path) -> Result<RunArgs, UsageError> {
    load_with::<NoKeys>(path).map(|(config, NoKeys {})| config)
}

/// Reads a settings file that may also hold the keys of `T`, the settings
/// of a subcommand besides `run`'s (`serve`'s, say), so one file can serve
/// both: `T`'s keys go to `T`, every other key to `run`'s settings, and a
/// key neither knows is an error that names it, as in [`load`].
pub fn load_with<T: DeserializeOwned>(path: &Path) -> Result<(RunArgs, T), UsageError> {
    let unreadable = |e| usage(format!("cannot read config file {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    // The mode of the file read, not of whatever the path names later.
    let mode = file.metadata().map_err(unreadable)?.permissions().mode();
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    let broken = |e: toml::de::Error| usage(parse_error(path, &text, &e));
    let document = DeTable::parse(&text).map_err(broken)?;
    let span = document.span();
    let theirs = keys_of::<T>();
    let (mut own, mut shared) = (DeTable::new(), DeTable::new());
    for (key, value) in document.into_inner() {
        let table = if theirs.contains(&key.get_ref().as_ref()) {
            &mut own
        } else {
            &mut shared
        };
        table.insert(key, value);
    }
    // Each part keeps the spans of the whole text, so a complaint names the
    // line and the key as for a file read in one piece.
    let part = |table| toml::de::Deserializer::from(toml::Spanned::new(span.clone(), table));
    let config = RunArgs::deserialize(part(shared)).map_err(broken)?;
    let extra = T::deserialize(part(own)).map_err(broken)?;
    if let Some(warning) = config.exposure(path, mode) {
        tracing::warn!("{warning}");
    }
    Ok((config, extra))
}

/// The settings of a file that holds `run`'s keys only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

/// The keys a settings struct reads from a file: the fields its derived
/// `Deserialize` names (skipped fields not among them).
fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    /// A deserializer that only notes the fields a struct asks for.
    struct Keys<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Keys<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("keys noted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(Keys(&mut keys));
    keys
}

/// The settings of a run: the flags (clap has folded in the environment for
/// the flags that have a variable), then the secrets' variables, then the
/// `--config` file. Defaults come after, where the settings are read.
pub fn merge(flags: RunArgs) -> Result<RunArgs, UsageError> {
    let file = match &flags.config {
        Some(path) => load(path)?,
        None => RunArgs::default(),
    };
    Ok(merge_file(flags, file))
}

/// `flags` (clap has folded in the environment for the flags that have a
/// variable), then the secrets' variables, then `file`, a settings file
/// already read.
pub fn merge_file(flags: RunArgs, file: RunArgs) -> RunArgs {
    let secrets = Credentials::load(Some(&file));
    let env = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let mut merged = flags;
    macro_rules! under_the_flags {
        ($($setting:ident),*; $($switch:ident),*) => {
            $(merged.$setting = merged.$setting.or(file.$setting);)*
            $(merged.$switch |= file.$switch;)*
        };
    }
    under_the_flags!(
        host, portal_id, portal_url, rate, report, summary_json, lead_column, encoding,
        delimiter, limit, concurrency, max_attempts, timeout, arrival_margin, burst,
        tenant_key_path, smtp_url, outbox, templates, from, reply_to, list_unsubscribe,
        email_column, smtp_rate, smtp_defer, helo_name, smtp_ca_file, email_concurrency, campaign, timezone, working_hours, state,
        budget_store, metrics_file, ping_url, connect_timeout, tenant_key_method,
        smtp_timeout, key_lifetime, min_link_life, links, link_base, link_ttl, mint;
        link_ids, email, refuse_night_links
    );
    merged.access_key = secrets.access_key;
    merged.secret_key = secrets.secret_key;
    merged.tenant_auth_key = secrets.tenant_auth_key;
    merged.public_auth_key = secrets.public_auth_key;
    merged.link_secret = env_secret("LSQ_LINK_SECRET").or(file.link_secret);
    merged.smtp_user = env("LSQ_SMTP_USER").or(file.smtp_user);
    merged.smtp_password = env_secret("LSQ_SMTP_PASSWORD").or(file.smtp_password);
    merged
}

impl RunArgs {
    /// The settings of the file that hold a secret: a key, a password, or a
    /// URL with a password in it.
    fn secrets(&self) -> Vec<&'static str> {
        let with_password = |url: Option<&str>| {
            url.and_then(|u| url::Url::parse(u).ok())
                .is_some_and(|u| u.password().is_some())
        };
        [
            ("access_key", self.access_key.is_some()),
            ("secret_key", self.secret_key.is_some()),
            ("tenant_auth_key", self.tenant_auth_key.is_some()),
            ("public_auth_key", self.public_auth_key.is_some()),
            ("smtp_password", self.smtp_password.is_some()),
            ("link_secret", self.link_secret.is_some()),
            ("smtp_url", with_password(self.smtp_url.as_deref())),
            (
                "budget_store",
                with_password(self.budget_store.as_ref().map(|u| u.expose().as_str())),
            ),
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
    let key = error.span().and_then(|span| {
        let line = text[..span.start.min(text.len())].matches('\n').count();
        text.lines()
            .nth(line)
            .and_then(|l| l.split_once('='))
            .map(|(key, _)| key.trim())
            // A name like ours; anything else might be a key pasted in.
            .filter(|key| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    });
    // A value of the wrong form, worded as for its flag; it quotes no secret.
    if let Some(invalid) = Invalid::in_message(error.message()) {
        let key = key.unwrap_or("a setting");
        return invalid.named(&format!("{key} in {}", path.display()));
    }
    let place = match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            let setting = key.map(|key| format!(" ({key})")).unwrap_or_default();
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
        let config: RunArgs = toml::from_str(text).unwrap();
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
