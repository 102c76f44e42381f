//! Where a live run shares the tenant's API budget with other processes: the
//! budget file beside the campaign state (every process on this machine), or
//! a Redis server (every machine that names it).

use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

use super::value::Invalid;
use super::{usage, UsageError};

/// Where the tenant's API budget is shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetStore {
    /// Nowhere: the process has the budget to itself, as a `--sandbox` run
    /// has its private sandbox.
    Own,
    /// A budget file per tenant in this directory, for every process on
    /// this machine.
    Machine(PathBuf),
    /// A Redis server, for every process on every machine that names it.
    Redis(RedisUrl),
}

impl BudgetStore {
    /// The budget file in the directory of the campaign state file `state`.
    pub fn beside(state: &Path) -> BudgetStore {
        BudgetStore::Machine(match state.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
    }

    /// `--budget-store URL` when given, else the budget file beside `state`.
    pub fn from_setting(url: Option<&str>, state: &Path) -> Result<BudgetStore, UsageError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => RedisUrl::parse(url)
                .map(BudgetStore::Redis)
                .map_err(|e| usage(e.named("--budget-store"))),
            None => Ok(BudgetStore::beside(state)),
        }
    }
}

/// A `redis://HOST:PORT[/DB]` or `rediss://…` (TLS) URL. It prints, in
/// `Display` and `Debug` alike, without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    /// Checks the form: a Redis scheme, a host, at most a database number.
    pub(crate) fn parse(text: &str) -> Result<RedisUrl, Invalid> {
        let form = "expected redis://HOST:PORT[/DB], or rediss://… for TLS";
        // The text may hold a password: it is not repeated in a complaint.
        let url = Url::parse(text)
            .map_err(|e| Invalid::new(|name| format!("{name}: not a URL ({e}); {form}")))?;
        let url = RedisUrl(url);
        let db = url.0.path().trim_start_matches('/');
        let fine = matches!(url.0.scheme(), "redis" | "rediss")
            && url.0.host_str().is_some_and(|h| !h.is_empty())
            && (db.is_empty() || db.parse::<u32>().is_ok())
            && url.0.query().is_none();
        if !fine {
            return Err(Invalid::new(|name| format!("{name} {url}: {form}")));
        }
        Ok(url)
    }

    /// The URL itself, password included, for the one place that connects.
    pub fn expose(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Only a URL with a host can carry a password, so this holds.
            let _ = shown.set_password(None);
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_is_shown_without_its_password() {
        let url = RedisUrl::parse("redis://app:s3cret-pw@10.0.0.5:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://app@10.0.0.5:6380/2");
        assert!(!format!("{url:?}").contains("s3cret-pw"));
        assert_eq!(url.expose().password(), Some("s3cret-pw"));
        let url = RedisUrl::parse("rediss://:s3cret-pw@cache.example").unwrap();
        assert_eq!(url.to_string(), "rediss://cache.example");
    }

    #[test]
    fn only_redis_urls_are_budget_stores() {
        for bad in [
            "http://h:6379",
            "redis://",
            "redis://h:6379/db",
            "redis://h/1?x=1",
            "h:6379",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        let err = RedisUrl::parse("ftp://u:s3cret-pw@h").unwrap_err();
        let err = err.named("--budget-store");
        assert!(!err.contains("s3cret-pw"), "{err}");
        let blank = BudgetStore::from_setting(Some(" "), Path::new("d/state.sqlite"));
        assert_eq!(blank.unwrap(), BudgetStore::Machine("d".into()));
    }

    #[test]
    fn the_budget_file_is_in_the_state_files_directory() {
        let beside = |state: &str| BudgetStore::beside(Path::new(state));
        assert_eq!(beside("d/state.sqlite"), BudgetStore::Machine("d".into()));
        assert_eq!(beside("state.sqlite"), BudgetStore::Machine(".".into()));
    }
}
