//! Writing a budget and a length of time: `25/5s`, `250ms`, `1.5s`, `4h`,
//! `90d` (humantime's forms, and a bare number of seconds), and the limits
//! that keep an absurd value (a typo, an extra digit) a usage error instead
//! of a panic or a limiter that reserves memory for billions of calls.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A budget of `calls` per sliding `window`, written `25/5s` (also `10/500ms`,
/// `100/1m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed in any window.
    pub calls: u32,
    /// The window's length.
    pub window: Duration,
}

impl Rate {
    /// LeadSquared's default tenant budget: 25 calls in 5 seconds.
    pub const DEFAULT: Rate = Rate {
        calls: 25,
        window: Duration::from_secs(5),
    };
    /// The most calls a budget may allow in one window. The limiter keeps a
    /// slot per call, and no LeadSquared plan comes near this.
    pub const MAX_CALLS: u32 = 10_000;
    /// The shortest window: a budget is paced in whole milliseconds.
    pub const MIN_WINDOW: Duration = Duration::from_millis(1);
    /// The longest window. LeadSquared's budgets are per 5 s; an hour leaves
    /// room for an SMTP provider's hourly quota.
    pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
}

impl Default for Rate {
    fn default() -> Self {
        Rate::DEFAULT
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.window.as_millis();
        if ms % 60_000 == 0 {
            write!(f, "{}/{}m", self.calls, ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}/{}s", self.calls, ms / 1000)
        } else {
            write!(f, "{}/{}ms", self.calls, ms)
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid rate {s:?}: expected CALLS/WINDOW such as 25/5s, 10/500ms or 100/1m")
        };
        let (calls, window) = s.trim().split_once('/').ok_or_else(bad)?;
        let digits = calls.trim();
        let calls = match digits.parse::<u32>() {
            Ok(calls) => calls,
            // All digits, yet no u32: far too many.
            Err(_) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => u32::MAX,
            Err(_) => return Err(bad()),
        };
        let window = match length(window) {
            Ok(window) => window,
            Err(Length::TooLong) => Rate::MAX_WINDOW * 2,
            Err(Length::Malformed) => return Err(bad()),
        };
        if calls == 0 || window.is_zero() {
            return Err(format!(
                "invalid rate {s:?}: calls and window must be above zero"
            ));
        }
        if calls > Rate::MAX_CALLS {
            return Err(format!(
                "invalid rate {s:?}: at most {} calls in a window",
                Rate::MAX_CALLS
            ));
        }
        if !(Rate::MIN_WINDOW..=Rate::MAX_WINDOW).contains(&window) {
            return Err(format!(
                "invalid rate {s:?}: the window must be from 1ms to 1h"
            ));
        }
        Ok(Rate { calls, window })
    }
}

/// The longest duration any setting takes: a longer timeout, key lifetime
/// or delay is a typo, and a much longer one would overflow the clock.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A key lifetime as messages show it: `4 h` for whole hours, as LeadSquared
/// words it, else as humantime writes it (`90m`, `3s`).
pub(crate) fn lifetime_text(d: Duration) -> String {
    match d.as_secs() {
        secs if secs > 0 && secs % 3600 == 0 && d.subsec_nanos() == 0 => {
            format!("{} h", secs / 3600)
        }
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Parses a length of time no longer than [`MAX_DURATION`]: `None` when
/// malformed or longer.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    length(s).ok().filter(|d| *d <= MAX_DURATION)
}

/// The longest age [`parse_age`] takes: about a hundred years.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// [`MAX_AGE`] as a user writes it.
pub(crate) const MAX_AGE_TEXT: &str = "36500d";

/// Why an age was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadAge {
    /// Not written as a length of time.
    Malformed,
    /// Zero.
    Zero,
    /// Longer than [`MAX_AGE`], or than any length of time holds.
    TooLong,
}

/// Reads an age such as `90d`, `12h` or `30m`, longer than a day if need
/// be, for `status --prune --older-than`: above zero, at most a hundred
/// years.
pub(crate) fn read_age(s: &str) -> Result<Duration, BadAge> {
    match length(s) {
        Err(Length::Malformed) => Err(BadAge::Malformed),
        Err(Length::TooLong) => Err(BadAge::TooLong),
        Ok(d) if d.is_zero() => Err(BadAge::Zero),
        Ok(d) if d > MAX_AGE => Err(BadAge::TooLong),
        Ok(d) => Ok(d),
    }
}

/// [`read_age`], `None` for any refusal.
pub(crate) fn parse_age(s: &str) -> Option<Duration> {
    read_age(s).ok()
}

/// An age as given (for messages and output) and as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Age {
    /// The text given, trimmed.
    pub given: String,
    /// What it says.
    pub length: Duration,
}

/// Why a length of time was refused.
#[derive(Debug, PartialEq, Eq)]
enum Length {
    /// Not written as one.
    Malformed,
    /// More than a `Duration` holds.
    TooLong,
}

/// A length of time as humantime writes it (`250ms`, `1.5s`, `2m`, `4h`,
/// `90d`, `1h 30m`); a bare number is seconds, as earlier releases took it.
fn length(s: &str) -> Result<Duration, Length> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = s.parse().map_err(|_| Length::Malformed)?;
        return Duration::try_from_secs_f64(seconds).map_err(|_| Length::TooLong);
    }
    humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => Length::TooLong,
        _ => Length::Malformed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!("25/5s".parse::<Rate>().unwrap(), Rate::DEFAULT);
        let r: Rate = "10/500ms".parse().unwrap();
        assert_eq!((r.calls, r.window), (10, Duration::from_millis(500)));
        assert_eq!(
            "100/1m".parse::<Rate>().unwrap().window,
            Duration::from_secs(60)
        );
        assert_eq!(Rate::DEFAULT.to_string(), "25/5s");
    }

    #[test]
    fn rejects_bad_rates() {
        for bad in ["", "25", "0/5s", "25/0s", "x/5s", "25/5y", "-1/5s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_absurd_rates_saying_the_limit() {
        for (absurd, limit) in [
            ("4294967295/5s", "at most 10000 calls"),
            ("99999999999999999999/5s", "at most 10000 calls"),
            ("10001/5s", "at most 10000 calls"),
            ("25/2h", "from 1ms to 1h"),
            ("25/99999999999999999999h", "from 1ms to 1h"),
            ("25/0.5ms", "from 1ms to 1h"),
        ] {
            let err = absurd.parse::<Rate>().unwrap_err();
            assert!(err.contains(limit), "{absurd}: {err}");
        }
        let widest: Rate = "10000/1h".parse().unwrap();
        assert_eq!(
            (widest.calls, widest.to_string().as_str()),
            (10_000, "10000/60m")
        );
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("4h"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(24 * 3600)));
        assert_eq!(parse_duration("2d"), None, "over the 24h any setting takes");
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(parse_duration("24h"), Some(MAX_DURATION));
        for too_long in ["24.001h", "1441m", "99999999999999999999999h", "1e400"] {
            assert_eq!(parse_duration(too_long), None, "{too_long}");
        }
    }

    #[test]
    fn parses_ages_of_days() {
        assert_eq!(parse_age("90d"), Some(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_age("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_age(" 1.5d "), Some(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("1y"), Some(Duration::from_secs(31_557_600)));
        assert_eq!(parse_age("90 days"), parse_age("90d"));
        for bad in ["", "0d", "d", "90 dayz", "-1d", "99999d", "3 moons"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
        assert_eq!(parse_age(MAX_AGE_TEXT), Some(MAX_AGE));
        for too_long in ["36501d", "100000d", "99999999999999999999999d"] {
            assert_eq!(read_age(too_long), Err(BadAge::TooLong), "{too_long}");
        }
        assert_eq!(read_age("0h"), Err(BadAge::Zero));
        assert_eq!(read_age("3 moons"), Err(BadAge::Malformed));
    }
}
