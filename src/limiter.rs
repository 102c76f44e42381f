//! The API budget: `N` calls in any sliding window of `W`, shared by every task.

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
        let calls: u32 = calls.trim().parse().map_err(|_| bad())?;
        let window = parse_duration(window.trim()).ok_or_else(bad)?;
        if calls == 0 || window.is_zero() {
            return Err(format!(
                "invalid rate {s:?}: calls and window must be above zero"
            ));
        }
        Ok(Rate { calls, window })
    }
}

/// Parses `250ms`, `5s`, `1.5s`, `2m`, `4h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
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
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("4h"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("abc"), None);
    }
}
