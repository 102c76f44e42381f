//! One parser per kind of setting value, shared by the flag (as its clap
//! `value_parser`, which also reads its environment variable) and the
//! `--config` file (as its serde `deserialize_with`, in [`file`]). A bad value
//! is an [`Invalid`] worded around the setting's name, which whoever knows
//! where the value came from fills in: the flag, or the file's key.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use url::Url;

use super::RedisUrl;
use crate::daytime::WorkingHours;
use crate::email::ListUnsubscribe;
use crate::input::TextEncoding;
use crate::ping::PingUrl;
use crate::units::{parse_duration, Age, Rate};

/// Marks an [`Invalid`]'s text, so it is known again inside the TOML
/// parser's error; the setting's name stands between two of them.
const MARK: char = '\u{1}';
/// Where the setting's name goes in an [`Invalid`]'s text.
const NAME: &str = "\u{1}name\u{1}";

/// A value a setting cannot take. Printed only through [`Invalid::named`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid(String);

impl Invalid {
    /// A complaint built around the setting's name.
    pub(super) fn new(text: impl FnOnce(&str) -> String) -> Invalid {
        Invalid(text(NAME))
    }

    /// A complaint that names its setting itself.
    fn whole(text: String) -> Invalid {
        Invalid(text)
    }

    /// The complaint as the user reads it, `name` filled in.
    pub(crate) fn named(&self, name: &str) -> String {
        self.0.replace(NAME, name)
    }

    /// The complaint inside a message of the TOML parser, if it is one.
    pub(super) fn in_message(message: &str) -> Option<Invalid> {
        message
            .strip_prefix(MARK)
            .map(|text| Invalid(text.to_owned()))
    }
}

impl fmt::Display for Invalid {
    /// The marked text, for the TOML parser to carry; see [`Invalid::named`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MARK}{}", self.0)
    }
}

impl Error for Invalid {}

/// An API host: a URL, or a bare host meaning https; plain http only to
/// loopback, since the secret key travels in the query.
pub(crate) fn host(value: &str) -> Result<Url, Invalid> {
    super::credentials::host(value)
}

/// A PortalId: a GUID in any common spelling, normalised.
pub(crate) fn portal_id(value: &str) -> Result<String, Invalid> {
    crate::input::normalize_guid(value)
        .ok_or_else(|| Invalid::new(|name| format!("{name} {value:?} is not a GUID")))
}

/// The portal page links open.
pub(crate) fn portal_url(value: &str) -> Result<Url, Invalid> {
    crate::portal_url::parse_portal_url(value)
        .map_err(|e| Invalid::new(|name| format!("{name}: {e}")))
}

/// A budget given in the file (a flag's is worded by clap, from [`Rate`]).
fn rate(value: &str) -> Result<Rate, Invalid> {
    value
        .parse()
        .map_err(|e| Invalid::new(|name| format!("{name}: {e}")))
}

/// The input's encoding when it has no byte-order mark.
pub(crate) fn encoding(value: &str) -> Result<TextEncoding, Invalid> {
    value
        .parse()
        .map_err(|e| Invalid::new(|name| format!("{name}: {e}")))
}

/// A cell separator: one character other than a quote or a line break;
/// `tab` and `\t` name a tab.
pub(crate) fn delimiter(value: &str) -> Result<u8, Invalid> {
    let byte = match value {
        "tab" | "TAB" | "\\t" | "\t" => Some(b'\t'),
        v if v.len() == 1 => v.bytes().next().filter(|b| !b"\"\r\n".contains(b)),
        _ => None,
    };
    byte.ok_or_else(|| {
        Invalid::new(|name| {
            format!(
                "{name} {value:?}: give one ASCII character other than a quote, such as , ; | \
                 or tab"
            )
        })
    })
}

/// A whole number of at least 1; what is no number at all is worded by clap
/// for a flag, by the TOML parser in the file.
pub(crate) fn at_least_one<T>(value: &str) -> Result<T, Box<dyn Error + Send + Sync>>
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + PartialEq + From<u8>,
{
    Ok(positive(value.parse::<T>()?)?)
}

fn positive<T: PartialEq + From<u8>>(value: T) -> Result<T, Invalid> {
    match value == T::from(0) {
        true => Err(Invalid::new(|name| format!("{name} must be at least 1"))),
        false => Ok(value),
    }
}

/// A length of time `longest` at most, zero allowed or not.
fn duration(value: &str, zero: bool, longest: (Duration, &str)) -> Result<Duration, Invalid> {
    parse_duration(value)
        .filter(|d| (zero || !d.is_zero()) && *d <= longest.0)
        .ok_or_else(|| {
            Invalid::new(|name| {
                format!(
                    "{name}: invalid duration {value:?} (use e.g. 250ms, 30s, 2m; at most {})",
                    longest.1
                )
            })
        })
}

/// A timeout: above zero, at most 24h.
pub(crate) fn timeout(value: &str) -> Result<Duration, Invalid> {
    duration(value, false, (crate::units::MAX_DURATION, "24h"))
}

/// The arrival margin: it stands for network delay, so zero is allowed and
/// a minute is the most.
pub(crate) fn margin(value: &str) -> Result<Duration, Invalid> {
    duration(value, true, (Duration::from_secs(60), "1m"))
}

/// The lead key lifetime LeadSquared gives the tenant: above zero, at most
/// 24h.
pub(crate) fn key_lifetime(value: &str) -> Result<Duration, Invalid> {
    duration(value, false, (crate::units::MAX_DURATION, "24h"))
}

/// The longest a redirect link opens: a year.
const MAX_LINK_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// How long a redirect link opens: above zero, at most a year.
pub(crate) fn link_ttl(value: &str) -> Result<Duration, Invalid> {
    crate::units::parse_age(value)
        .filter(|d| *d <= MAX_LINK_TTL)
        .ok_or_else(|| {
            Invalid::new(|name| {
                format!("{name}: invalid duration {value:?} (use e.g. 12h, 7d, 30d; at most 366d)")
            })
        })
}

/// The link service's public address, for redirect links: https, or plain
/// http only to this machine, with no query, fragment or login in it.
pub(crate) fn link_base(value: &str) -> Result<Url, Invalid> {
    let bad = |why: &str| {
        let why = why.to_owned();
        Invalid::new(move |name| format!("{name} {value:?}: {why}"))
    };
    let url = Url::parse(value.trim()).map_err(|e| {
        bad(&format!(
            "not a URL ({e}); give one such as https://go.example.com"
        ))
    })?;
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" if !host.is_empty() => {}
        "http" if crate::portal_url::is_loopback(host) => {}
        "http" => {
            return Err(bad(
                "plain http is only allowed to this machine (localhost, 127.0.0.1, ::1);                  use https://",
            ))
        }
        _ => return Err(bad("give an https:// URL such as https://go.example.com")),
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a link base takes no query or #fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("a link base takes no user name or password"));
    }
    Ok(url)
}

/// A sender address.
pub(crate) fn from(value: &str) -> Result<Mailbox, Invalid> {
    value.parse().map_err(|e| {
        Invalid::new(|name| format!("{name} {value:?} is not a valid sender address: {e}"))
    })
}

/// The waits before the later tries of a deferred message.
pub(crate) fn smtp_defer(value: &str) -> Result<crate::email::DeferSchedule, Invalid> {
    value.parse().map_err(|e| {
        Invalid::new(|name| {
            format!("{name} {value:?}: {e}; give waits such as 1m,2m,4m,8m, or none")
        })
    })
}

/// The name given in EHLO.
pub(crate) fn helo_name(value: &str) -> Result<String, Invalid> {
    crate::email::check_helo_name(value).map_err(|e| Invalid::new(|name| format!("{name}: {e}")))
}

/// A Reply-To address.
pub(crate) fn reply_to(value: &str) -> Result<Mailbox, Invalid> {
    value.parse().map_err(|e| {
        Invalid::new(|name| {
            format!(
                "{name} {value:?} is not a valid address: {e}; give one such as \
                 \"Acme Support <support@acme.example>\""
            )
        })
    })
}

/// A List-Unsubscribe header.
pub(crate) fn list_unsubscribe(value: &str) -> Result<ListUnsubscribe, Invalid> {
    value
        .parse()
        .map_err(|e| Invalid::new(|name| format!("{name}: {e}")))
}

/// An IANA time zone.
pub(crate) fn timezone(value: &str) -> Result<chrono_tz::Tz, Invalid> {
    crate::daytime::parse_zone(value).map_err(|e| Invalid::new(|name| format!("{name}: {e}")))
}

/// Working hours, `HH:MM-HH:MM`.
pub(crate) fn working_hours(value: &str) -> Result<WorkingHours, Invalid> {
    value
        .parse()
        .map_err(|e| Invalid::new(|name| format!("{name} {e}")))
}

/// A local time of day, `HH:MM`.
pub(crate) fn time_of_day(value: &str) -> Result<chrono::NaiveTime, Invalid> {
    chrono::NaiveTime::parse_from_str(value.trim(), "%H:%M").map_err(|_| {
        Invalid::new(|name| format!("{name} {value:?}: use a 24-hour local time such as 06:30"))
    })
}

/// A Redis server sharing the budget. The complaint never repeats a
/// password.
pub(crate) fn budget_store(value: &str) -> Result<RedisUrl, Invalid> {
    RedisUrl::parse(value.trim())
}

/// A cron monitor's ping URL. It holds the check's token, so the complaint
/// (which names the flag and its variable itself) never quotes it.
pub(crate) fn ping_url(value: &str) -> Result<PingUrl, Invalid> {
    PingUrl::parse(value).map_err(Invalid::whole)
}

/// How long ago a campaign last ran, for `status --prune`.
pub(crate) fn age(value: &str) -> Result<Age, Invalid> {
    use crate::units::{BadAge, MAX_AGE_TEXT};
    let length = crate::units::read_age(value).map_err(|bad| {
        Invalid::new(|name| match bad {
            BadAge::TooLong => {
                format!("{name} {value:?} is too large: at most {MAX_AGE_TEXT} (a hundred years)")
            }
            BadAge::Zero => format!("{name} {value:?}: give an age above zero, such as 90d"),
            BadAge::Malformed => {
                format!("{name} {value:?}: use a number of days or hours such as 90d or 12h")
            }
        })
    })?;
    let given = value.trim().to_owned();
    Ok(Age { given, length })
}

/// The one recipient of a test message.
pub(crate) fn address(value: &str) -> Result<lettre::Address, Invalid> {
    crate::email::check_address(value)
        .map_err(|e| Invalid::new(|name| format!("{name} {value:?}: {e}")))
}

/// The settings file's values, read as the flags read them. Text that is
/// blank leaves its setting unset, as an absent key does.
pub(crate) mod file {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    use super::Invalid;

    /// Text parsed by `parse`; `blank` says which text leaves it unset.
    fn text<'de, D, T>(
        d: D,
        blank: fn(&str) -> bool,
        parse: fn(&str) -> Result<T, Invalid>,
    ) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?
            .filter(|text| !blank(text))
            .map(|text| parse(&text).map_err(D::Error::custom))
            .transpose()
    }

    macro_rules! from_text {
        ($($(#[$doc:meta])* $name:ident: $type:ty,)*) => {$(
            $(#[$doc])*
            pub(crate) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$type>, D::Error> {
                text(d, |t| t.trim().is_empty(), super::$name)
            }
        )*};
    }

    from_text! {
        /// `host`.
        host: url::Url,
        /// `portal_id`.
        portal_id: String,
        /// `portal_url`.
        portal_url: url::Url,
        /// `rate` and `smtp_rate`.
        rate: crate::units::Rate,
        /// `encoding`.
        encoding: crate::input::TextEncoding,
        /// `timeout`, `connect_timeout` and `smtp_timeout`.
        timeout: std::time::Duration,
        /// `arrival_margin`.
        margin: std::time::Duration,
        /// `from`.
        from: lettre::message::Mailbox,
        /// `reply_to`.
        reply_to: lettre::message::Mailbox,
        /// `list_unsubscribe`.
        list_unsubscribe: crate::email::ListUnsubscribe,
        /// `timezone`.
        timezone: chrono_tz::Tz,
        /// `working_hours`.
        working_hours: crate::daytime::WorkingHours,
        /// `budget_store`.
        budget_store: super::RedisUrl,
        /// `ping_url`.
        ping_url: crate::ping::PingUrl,
        /// `key_lifetime`.
        key_lifetime: std::time::Duration,
        /// `link_ttl`.
        link_ttl: std::time::Duration,
        /// `link_base`.
        link_base: url::Url,
        /// `helo_name`.
        helo_name: String,
        /// `smtp_defer`.
        smtp_defer: crate::email::DeferSchedule,
    }

    /// `delimiter`: a tab is blank, yet a separator.
    pub(crate) fn delimiter<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        text(d, str::is_empty, super::delimiter)
    }

    /// A count of at least 1.
    pub(crate) fn at_least_one<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + PartialEq + From<u8>,
    {
        Option::<T>::deserialize(d)?
            .map(|n| super::positive(n).map_err(D::Error::custom))
            .transpose()
    }

    /// Text kept as given; blank is unset.
    pub(crate) fn words<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        text(d, |t| t.trim().is_empty(), |t| Ok(t.to_owned()))
    }
}
