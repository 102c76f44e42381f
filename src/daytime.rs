//! The recipients' day: the time zone people-facing times are shown in
//! (`--timezone`), their working hours (`--working-hours`), and whether login
//! links, which live 4 hours, would expire during their night, before anyone
//! reads the email.
//!
//! Machine-facing times (the report's `expires_at`, the summary, the state)
//! stay RFC 3339 UTC whatever the zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Local, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Working hours when `--working-hours` is not given.
pub(crate) const DEFAULT_WORKING_HOURS: &str = "08:00-20:00";

/// The recipients' time zone (`None`: UTC for readable times, and the
/// machine's own zone for the night check) and their working hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Daytime {
    /// `--timezone`.
    pub zone: Option<Tz>,
    /// `--working-hours`.
    pub hours: WorkingHours,
}

impl Default for Daytime {
    fn default() -> Daytime {
        Daytime {
            zone: None,
            hours: DEFAULT_WORKING_HOURS.parse().expect("valid default"),
        }
    }
}

/// The hours of the day people read their email, e.g. 08:00-20:00, local
/// time. The rest of the day is their night.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkingHours {
    /// When the working day starts.
    pub start: NaiveTime,
    /// When it ends, after `start` on the same day.
    pub end: NaiveTime,
}

impl FromStr for WorkingHours {
    type Err = String;

    fn from_str(s: &str) -> Result<WorkingHours, String> {
        let usage = || format!("{s:?}: use a start and an end of the same day, e.g. 08:00-20:00");
        let (start, end) = s.trim().split_once('-').ok_or_else(usage)?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| usage());
        let (start, end) = (time(start)?, time(end)?);
        if start >= end {
            return Err(usage());
        }
        Ok(WorkingHours { start, end })
    }
}

impl fmt::Display for WorkingHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// Parses an IANA time zone name such as `Europe/Berlin`; the error suggests
/// the names that differ only in case or that end the same way.
pub(crate) fn parse_zone(name: &str) -> Result<Tz, String> {
    let name = name.trim();
    if let Ok(zone) = name.parse::<Tz>() {
        return Ok(zone);
    }
    let lower = name.to_ascii_lowercase();
    let like: Vec<&str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|zone| zone.name())
        .filter(|known| {
            let known = known.to_ascii_lowercase();
            known == lower || known.ends_with(&format!("/{lower}"))
        })
        .take(5)
        .collect();
    let hint = match like.is_empty() {
        true => String::new(),
        false => format!(" (did you mean {}?)", like.join(", ")),
    };
    Err(format!(
        "{name:?} is not an IANA time zone name{hint}; use one such as Europe/Berlin, \
         America/New_York, Asia/Kolkata or UTC"
    ))
}

impl Daytime {
    /// A time for people, as email templates show `expires_at_readable`:
    /// `2 January 2030, 03:04 UTC`, or in the zone with its name:
    /// `2 January 2030, 04:04 CET (Europe/Berlin)`.
    pub fn readable(&self, t: DateTime<Utc>) -> String {
        match self.zone {
            None => t.format("%-d %B %Y, %H:%M UTC").to_string(),
            Some(zone) => {
                let local = t.with_timezone(&zone);
                let abbreviation = local.format("%Z").to_string();
                let shown = local.format("%-d %B %Y, %H:%M").to_string();
                match abbreviation == zone.name() {
                    true => format!("{shown} {abbreviation}"),
                    false => format!("{shown} {abbreviation} ({})", zone.name()),
                }
            }
        }
    }

    /// A warning when a link expiring at any moment from `first` to `last`
    /// would expire outside the recipients' working hours: the email would
    /// arrive, and the link die, before they start their day. `lifetime` is
    /// how long a link lives (`--key-lifetime`).
    pub fn night_warning(
        &self,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        lifetime: std::time::Duration,
    ) -> Option<String> {
        match self.zone {
            Some(zone) => self.night_warning_in(&zone, first, last, lifetime),
            None => self.night_warning_in(&Local, first, last, lifetime),
        }
    }

    fn night_warning_in<Z: TimeZone>(
        &self,
        zone: &Z,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        lifetime: std::time::Duration,
    ) -> Option<String>
    where
        Z::Offset: fmt::Display,
    {
        let at_night = self.first_night_moment(zone, first, last)?;
        let local = at_night.with_timezone(zone);
        let whose = match self.zone {
            Some(zone) => format!("in {}", zone.name()),
            None => "in this machine's time zone; set --timezone to the recipients'".to_owned(),
        };
        Some(format!(
            "emailed links would expire during the recipients' night: at {} {whose}, outside \
             the working hours {}; a link lives {} from when it is made, so schedule the run \
             for the recipients' morning (or set --working-hours)",
            local.format("%Y-%m-%d %H:%M %:z"),
            self.hours,
            crate::units::lifetime_text(lifetime)
        ))
    }

    /// The first moment from `first` to `last` that is outside working
    /// hours in `zone`, if any.
    fn first_night_moment<Z: TimeZone>(
        &self,
        zone: &Z,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let local = first.with_timezone(zone);
        let time = local.time();
        if time < self.hours.start || time >= self.hours.end {
            return Some(first);
        }
        // Within working hours: the night starts at today's end of them.
        let end = zone
            .from_local_datetime(&local.date_naive().and_time(self.hours.end))
            .earliest()
            .map(|end| end.with_timezone(&Utc))
            // An end that falls in a daylight-saving gap: an hour later.
            .unwrap_or_else(|| first + TimeDelta::hours(1));
        (end <= last).then_some(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR_HOURS: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn berlin() -> Daytime {
        Daytime {
            zone: Some(chrono_tz::Europe::Berlin),
            ..Daytime::default()
        }
    }

    #[test]
    fn working_hours_parse_and_show() {
        let hours: WorkingHours = " 07:30-18:00 ".parse().unwrap();
        assert_eq!(hours.to_string(), "07:30-18:00");
        for bad in [
            "",
            "8-20",
            "20:00-08:00",
            "08:00-08:00",
            "08:00",
            "25:00-26:00",
        ] {
            assert!(bad.parse::<WorkingHours>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zone_names_are_iana_names_with_hints_for_near_misses() {
        assert_eq!(parse_zone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
        let err = parse_zone("europe/berlin").unwrap_err();
        assert!(err.contains("did you mean Europe/Berlin?"), "{err}");
        let err = parse_zone("Kolkata").unwrap_err();
        assert!(err.contains("did you mean Asia/Kolkata?"), "{err}");
        let err = parse_zone("CEST+2").unwrap_err();
        assert!(err.contains("not an IANA time zone name;"), "{err}");
    }

    #[test]
    fn readable_times_are_local_with_the_zone_or_utc() {
        let t = utc("2024-05-04T08:05:09Z");
        assert_eq!(Daytime::default().readable(t), "4 May 2024, 08:05 UTC");
        assert_eq!(
            berlin().readable(t),
            "4 May 2024, 10:05 CEST (Europe/Berlin)"
        );
        let winter = utc("2024-01-04T08:05:09Z");
        assert_eq!(
            berlin().readable(winter),
            "4 January 2024, 09:05 CET (Europe/Berlin)"
        );
        let utc_zone = Daytime {
            zone: Some(chrono_tz::UTC),
            ..Daytime::default()
        };
        assert_eq!(utc_zone.readable(t), "4 May 2024, 08:05 UTC");
    }

    #[test]
    fn links_expiring_before_the_working_day_are_warned_about() {
        // Made at 02:00 Berlin (CET, UTC+1): dead at 06:00.
        let expires = utc("2026-01-15T05:00:00Z");
        let warning = berlin()
            .night_warning(expires, expires, FOUR_HOURS)
            .unwrap();
        assert!(
            warning.contains("at 2026-01-15 06:00 +01:00 in Europe/Berlin"),
            "{warning}"
        );
        assert!(warning.contains("08:00-20:00"), "{warning}");
        assert!(warning.contains("a link lives 4 h from"), "{warning}");
        let short = std::time::Duration::from_secs(90 * 60);
        let warning = berlin().night_warning(expires, expires, short).unwrap();
        assert!(warning.contains("a link lives 1h 30m from"), "{warning}");
        // Made at 07:30: good until 11:30.
        let morning = utc("2026-01-15T10:30:00Z");
        assert_eq!(berlin().night_warning(morning, morning, FOUR_HOURS), None);
    }

    #[test]
    fn a_run_whose_last_links_expire_after_the_working_day_is_warned_about() {
        // The first link expires at 18:00 Berlin, the last at 21:00.
        let first = utc("2026-01-15T17:00:00Z");
        let last = utc("2026-01-15T20:00:00Z");
        let warning = berlin().night_warning(first, last, FOUR_HOURS).unwrap();
        assert!(warning.contains("2026-01-15 20:00 +01:00"), "{warning}");
        let late = Daytime {
            hours: "08:00-22:00".parse().unwrap(),
            ..berlin()
        };
        assert_eq!(late.night_warning(first, last, FOUR_HOURS), None);
    }
}
