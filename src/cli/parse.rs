//! What the command line says when clap's own words would not do: a secret
//! given as a flag, and a value one of our parsers refused.

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::config::value::Invalid;

/// Our message for a parse error, when we have one; else clap's stands.
pub(super) fn our_message(error: &clap::Error) -> Option<String> {
    secret_flag(error).or_else(|| ours(error))
}

/// A blank `LSQ_…` variable counts as unset, as a blank value in the config
/// file does (an environment file often keeps `LSQ_HOST=` lines for later).
/// Called before any other thread runs.
pub(super) fn forget_blank_variables() {
    for (name, value) in std::env::vars_os() {
        let ours = name.to_str().is_some_and(|n| n.starts_with("LSQ_"));
        if ours && value.to_string_lossy().trim().is_empty() {
            std::env::remove_var(name);
        }
    }
}

/// Secrets that have a variable (and a config file key) but no flag, by the
/// flag a user might try.
const SECRET_FLAGS: [(&str, &str, &str); 6] = [
    ("accesskey", "LSQ_ACCESS_KEY", "access_key"),
    ("secretkey", "LSQ_SECRET_KEY", "secret_key"),
    ("tenantauthkey", "LSQ_TENANT_AUTH_KEY", "tenant_auth_key"),
    ("publicauthkey", "LSQ_PUBLIC_AUTH_KEY", "public_auth_key"),
    ("smtpuser", "LSQ_SMTP_USER", "smtp_user"),
    ("smtppassword", "LSQ_SMTP_PASSWORD", "smtp_password"),
];

/// For an unknown flag that names a secret (`--access-key`, `--secret_key`,
/// `--accessKey=…`), where that secret comes from instead. Clap's own advice
/// (pass it after `--`) would make the run read it as a file name. The
/// value is never repeated.
fn secret_flag(error: &clap::Error) -> Option<String> {
    if error.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(given)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = given.split('=').next().unwrap_or_default();
    let name: String = flag
        .trim_start_matches('-')
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (_, variable, key) = SECRET_FLAGS.iter().find(|(n, _, _)| *n == name)?;
    Some(format!(
        "{flag}: secrets are never given as flags, which other users see in `ps` and \
         which stay in the shell history; set {variable} in the environment (`run` also \
         reads {key} from its --config file, which should have mode 0600)"
    ))
}

/// A bad value our own parser refused, named by its flag and worded as
/// ours are (clap would quote the value, which may hold a secret).
fn ours(error: &clap::Error) -> Option<String> {
    use std::error::Error as _;
    let invalid = error.source()?.downcast_ref::<Invalid>()?;
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    Some(invalid.named(arg.split([' ', '=']).next().unwrap_or_default()))
}
