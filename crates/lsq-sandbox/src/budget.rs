//! The tenant's API budget as the sandbox enforces it: `calls` in any
//! sliding `window`, written `25/5s` on the command line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// At most `calls` counted API calls in any sliding `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Calls allowed in any window.
    pub calls: u32,
    /// The window's length.
    pub window: Duration,
}

impl Budget {
    /// LeadSquared's default tenant budget: 25 calls in 5 seconds.
    pub const DEFAULT: Budget = Budget {
        calls: 25,
        window: Duration::from_secs(5),
    };
    /// The window log keeps a slot per call: no plan comes near this.
    const MAX_CALLS: u32 = 10_000;
    /// From 1 ms (arrivals are told apart in milliseconds) to an hour.
    const WINDOWS: std::ops::RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(3600);

    /// The budget, or why the sandbox cannot enforce it.
    pub(crate) fn checked(self) -> Result<Budget, String> {
        if self.calls == 0 || self.calls > Budget::MAX_CALLS {
            return Err(format!("from 1 to {} calls in a window", Budget::MAX_CALLS));
        }
        if !Budget::WINDOWS.contains(&self.window) {
            return Err("the window must be from 1ms to 1h".to_owned());
        }
        Ok(self)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::DEFAULT
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = humantime::format_duration(self.window);
        write!(f, "{}/{}", self.calls, window)
    }
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (calls, window) = text.trim().split_once('/').ok_or_else(|| {
            format!(
                "invalid budget {text:?}: expected CALLS/WINDOW such as 25/5s, 10/500ms or 100/1m"
            )
        })?;
        let calls = calls.trim().parse::<u32>();
        let window = humantime::parse_duration(window.trim());
        let budget = match (calls, window) {
            (Ok(calls), Ok(window)) => Budget { calls, window },
            (Err(e), _) => return Err(format!("invalid budget {text:?}: calls: {e}")),
            (_, Err(e)) => return Err(format!("invalid budget {text:?}: window: {e}")),
        };
        budget
            .checked()
            .map_err(|why| format!("invalid budget {text:?}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_budgets() {
        assert_eq!("25/5s".parse::<Budget>(), Ok(Budget::DEFAULT));
        let budget: Budget = " 10 / 500ms ".parse().unwrap();
        assert_eq!(budget.window, Duration::from_millis(500));
        assert_eq!(budget.to_string(), "10/500ms");
        assert_eq!("100/1m".parse::<Budget>().unwrap().to_string(), "100/1m");
        assert_eq!(Budget::DEFAULT.to_string(), "25/5s");
    }

    #[test]
    fn refuses_budgets_it_cannot_enforce() {
        for text in [
            "25",
            "x/5s",
            "25/x",
            "0/5s",
            "25/0s",
            "10001/5s",
            "25/2h",
            "-1/5s",
            "4294967296/5s",
            "25/99999999999999999999h",
        ] {
            let err = text.parse::<Budget>().unwrap_err();
            assert!(
                err.starts_with(&format!("invalid budget {text:?}")),
                "{err}"
            );
        }
    }
}
