//! When to try again a message the SMTP server deferred (a 4xx that
//! outlasted the quick retries): greylisting servers ask the sender to come
//! back in minutes, so the waits are minutes, spent while the other leads
//! go on.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest the waits of a schedule may add up to.
const MOST: Duration = Duration::from_secs(24 * 3600);

/// The waits before each later try of a deferred message, in order
/// (`--smtp-defer 1m,2m,4m,8m`, the default). Empty (`none`): a message
/// deferred past its quick retries fails at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferSchedule(pub Vec<Duration>);

impl Default for DeferSchedule {
    fn default() -> Self {
        DeferSchedule([1, 2, 4, 8].map(|m| Duration::from_secs(60 * m)).to_vec())
    }
}

impl DeferSchedule {
    /// The waits added up: how long a deferred message may keep a run
    /// going.
    pub fn total(&self) -> Duration {
        self.0.iter().sum()
    }
}

impl FromStr for DeferSchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("none") || text == "0" {
            return Ok(DeferSchedule(Vec::new()));
        }
        let waits = text
            .split(',')
            .map(|wait| {
                humantime::parse_duration(wait.trim())
                    .map_err(|e| format!("{wait:?} is not a duration ({e})"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = DeferSchedule(waits);
        if schedule.total() > MOST {
            return Err(format!(
                "the waits add up to {}, over the most of 24h",
                humantime::format_duration(schedule.total())
            ));
        }
        Ok(schedule)
    }
}

impl fmt::Display for DeferSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let waits: Vec<String> = self
            .0
            .iter()
            .map(|w| humantime::format_duration(*w).to_string())
            .collect();
        f.write_str(&waits.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_read_as_written_and_are_bounded() {
        let default = DeferSchedule::default();
        assert_eq!(default.to_string(), "1m,2m,4m,8m");
        assert_eq!(default.total(), Duration::from_secs(15 * 60));
        assert_eq!("1m, 2m,4m,8m".parse::<DeferSchedule>().unwrap(), default);
        assert_eq!("none".parse::<DeferSchedule>().unwrap().0, []);
        assert!("1m,soon"
            .parse::<DeferSchedule>()
            .unwrap_err()
            .contains("\"soon\""));
        assert!("20h,5h"
            .parse::<DeferSchedule>()
            .unwrap_err()
            .contains("24h"));
    }
}
