//! The dry run's plan: what a run over this CSV would do, counted from the
//! report rows as they stream past, and what could go wrong with it.
//!
//! The plan answers the questions an operator asks before a campaign: how many
//! rows are usable and why the others are not, how many API calls the run
//! needs, how long the tenant's budget makes it take, when the links it makes
//! would expire, and whether it would outlast the keys or a `--send-before`
//! deadline. It holds counters only (invalid reasons are grouped into a few
//! kinds), so planning a million rows costs no memory per row.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Local, NaiveTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use serde::{Serialize, Serializer};

use crate::limiter::Rate;
use crate::report::{Record, RowError, Status};

/// What the plan needs to know besides the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSettings {
    /// The tenant's API budget (`--rate`).
    pub rate: Rate,
    /// `LSQ_TENANT_AUTH_KEY` is set; otherwise the run spends one extra call
    /// minting it.
    pub tenant_key_given: bool,
    /// `--send-before HH:MM`, local time: every email should be out by then.
    pub send_before: Option<NaiveTime>,
    /// `--email`: each planned lead also gets an email.
    pub emails: bool,
    /// The recipients' time zone and working hours, for the night check.
    pub daytime: crate::daytime::Daytime,
    /// How long a key lives (`--key-lifetime`).
    pub key_lifetime: Duration,
    /// How the links are made: at-click links need no call, and redirect
    /// links outlive their keys.
    pub links: crate::redirect::LinkMode,
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings {
            rate: Rate::default(),
            tenant_key_given: false,
            send_before: None,
            emails: false,
            daytime: crate::daytime::Daytime::default(),
            key_lifetime: crate::api::KEY_LIFETIME,
            links: crate::redirect::LinkMode::Direct,
        }
    }
}

/// The plan of a run: counts from the rows, then the estimates that
/// [`Plan::finish`] derives from them. Serialised under `"plan"` in
/// `--summary-json`, times as RFC 3339 UTC.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Data rows read from the CSV, whatever became of them.
    pub rows_read: u64,
    /// Usable rows: planned + already done + in doubt + beyond the limit.
    pub valid: u64,
    /// Rows that cannot be processed.
    pub invalid: u64,
    /// Invalid rows per kind of reason (see [`RowError::kind`]).
    pub invalid_by_reason: BTreeMap<String, u64>,
    /// Rows repeating an earlier lead and portal.
    pub duplicates: u64,
    /// Leads sent in an earlier run of the campaign, which this run skips.
    pub already_done: u64,
    /// Leads whose email's fate is unknown after a crash; not re-sent.
    pub in_doubt: u64,
    /// Usable rows past `--limit`, left for a later run.
    pub beyond_limit: u64,
    /// Leads this run would link (and email, in an email run).
    pub planned: u64,
    /// Of those, leads whose stored key of this tenant is still good: their
    /// link is rebuilt without a call.
    pub links_reused: u64,
    /// Generate calls plus the tenant key, if it has to be minted.
    pub api_calls_needed: u64,
    /// Emails the run would send.
    pub emails_needed: u64,
    /// The shortest time the budget allows for the calls (see [`window_bound`]).
    pub estimated_secs: f64,
    /// The budget the estimate assumes, as written for `--rate`.
    pub rate: String,
    /// When the first key made would expire.
    #[serde(serialize_with = "rfc3339")]
    pub first_key_expires: Option<DateTime<Utc>>,
    /// When the last key made would expire.
    #[serde(serialize_with = "rfc3339")]
    pub last_key_expires: Option<DateTime<Utc>>,
    /// When the run would make its last call.
    #[serde(serialize_with = "rfc3339")]
    pub finish_by: Option<DateTime<Utc>>,
    /// Planned recipients whose domain mixes scripts as look-alikes do.
    pub look_alike_domains: u64,
    /// The first of them: its row and address, for the warning.
    #[serde(skip)]
    pub first_look_alike: Option<(u64, String)>,
    /// Things the operator should know before running it for real.
    pub warnings: Vec<String>,
    /// The recipients' time zone (`--timezone`), in which the plan shows its
    /// times; the machine's when none is set.
    #[serde(skip)]
    pub zone: Option<chrono_tz::Tz>,
}

/// Writes a time the way the report writes `expires_at`, so a script reads one
/// format everywhere (chrono's own serde support is not compiled in).
fn rfc3339<S: Serializer>(time: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        None => s.serialize_none(),
    }
}

impl Plan {
    /// An empty plan, before any row.
    pub fn new() -> Plan {
        Plan::default()
    }

    /// Counts one report row, whatever its status. The outcomes of a real run
    /// (linked, sent, failed) count as planned: they are work the run had to do.
    pub fn record(&mut self, record: &Record) {
        self.rows_read += 1;
        match record.status {
            Status::Planned | Status::Linked | Status::Sent | Status::Failed => {
                self.valid += 1;
                self.planned += 1;
                // A planned row carries an expiry only when its stored key
                // would be used again.
                if record.status == Status::Planned && record.expires_at.is_some() {
                    self.links_reused += 1;
                }
                if let Some(RowError::LookAlike(_)) = record.error {
                    self.look_alike_domains += 1;
                    self.first_look_alike
                        .get_or_insert_with(|| (record.row, record.email.clone()));
                }
            }
            Status::Skipped => {
                self.valid += 1;
                match record.error {
                    Some(RowError::BeyondLimit { .. }) => self.beyond_limit += 1,
                    _ => self.already_done += 1,
                }
            }
            Status::InDoubt => {
                self.valid += 1;
                self.in_doubt += 1;
            }
            Status::Invalid => {
                self.invalid += 1;
                let kind = record
                    .error
                    .as_ref()
                    .map_or_else(|| "no reason given".to_owned(), RowError::kind);
                *self.invalid_by_reason.entry(kind).or_insert(0) += 1;
            }
            Status::Duplicate => self.duplicates += 1,
        }
    }

    /// Derives the calls, the duration, the key expiries and the warnings from
    /// the counts, for a run starting at `now`.
    /// `--send-before` is read in the recipients' time zone when one is set.
    pub fn finish(&mut self, settings: &PlanSettings, now: DateTime<Utc>) {
        self.zone = settings.daytime.zone;
        match settings.daytime.zone {
            Some(zone) => self.finish_in(settings, now.with_timezone(&zone)),
            None => self.finish_in(settings, now.with_timezone(&Local)),
        }
    }

    /// [`Plan::finish`] in any time zone, so tests can pin one and not depend
    /// on the machine's.
    fn finish_in<Tz: TimeZone>(&mut self, settings: &PlanSettings, now: DateTime<Tz>) {
        let generate = match settings.links {
            crate::redirect::LinkMode::AtClick => 0,
            _ => self.planned - self.links_reused,
        };
        let key_lifetime = settings.key_lifetime;
        let direct = settings.links == crate::redirect::LinkMode::Direct;
        let mint_tenant_key = !settings.tenant_key_given && generate > 0;
        self.api_calls_needed = generate + u64::from(mint_tenant_key);
        self.emails_needed = if settings.emails { self.planned } else { 0 };
        let duration = window_bound(self.api_calls_needed, settings.rate);
        self.estimated_secs = duration.as_secs_f64();
        self.rate = settings.rate.to_string();

        let start = now.with_timezone(&Utc);
        let lifetime = delta(key_lifetime);
        let finish = start.checked_add_signed(delta(duration));
        self.warnings.clear();
        // At-click links carry no key: the link service mints it later.
        let keys = settings.links != crate::redirect::LinkMode::AtClick;
        if self.planned > 0 && keys {
            // The first call goes out at once; the last one when the window
            // bound says, and each key lives --key-lifetime from its call.
            self.first_key_expires = start.checked_add_signed(lifetime);
            self.last_key_expires = finish.and_then(|f| f.checked_add_signed(lifetime));
            self.finish_by = finish;
        } else if self.planned > 0 {
            self.first_key_expires = None;
            self.last_key_expires = None;
            self.finish_by = finish;
        } else {
            self.first_key_expires = None;
            self.last_key_expires = None;
            self.finish_by = None;
        }

        // A redirect link outlives its key: the link service mints another.
        if direct && duration > key_lifetime {
            self.warnings.push(format!(
                "the run would outlast the {} key lifetime: the first links expire before \
                 the last are made; split the CSV or raise --rate if your plan allows",
                crate::units::lifetime_text(key_lifetime)
            ));
        }
        if let Some(before) = settings.send_before.filter(|_| self.planned > 0) {
            let end = now.clone().checked_add_signed(delta(duration));
            match (end, next_occurrence(&now, before)) {
                (Some(end), Some(deadline)) if end > deadline => {
                    self.warnings.push(format!(
                        "the run would finish at {}, after --send-before {}",
                        end.naive_local().format("%H:%M"),
                        before.format("%H:%M")
                    ));
                }
                _ => {}
            }
        }
        if let (true, Some(first), Some(last)) = (
            settings.emails && direct,
            self.first_key_expires,
            self.last_key_expires,
        ) {
            self.warnings
                .extend(settings.daytime.night_warning(first, last, key_lifetime));
        }
        if self.invalid > 0 {
            self.warnings.push(format!(
                "{} invalid: see the error column of the report; a run skips {} and \
                 exits with code 5 (3 if a lead fails too)",
                rows(self.invalid),
                if self.invalid == 1 { "it" } else { "them" }
            ));
        }
        if let Some((row, address)) = &self.first_look_alike {
            let n = self.look_alike_domains;
            self.warnings.push(format!(
                "{} a domain that mixes scripts, as look-alikes of other domains do (the \
                 first: row {row}, {address:?}): check {} in the error column of the plan; \
                 a run mails {} all the same",
                match n {
                    1 => "1 address has".to_owned(),
                    n => format!("{} addresses have", thousands(n)),
                },
                if n == 1 { "it" } else { "them" },
                if n == 1 { "it" } else { "them" },
            ));
        }
        if self.in_doubt > 0 {
            self.warnings.push(format!(
                "{} in doubt (an earlier run could not tell whether {} delivered): {} not \
                 be re-sent without --resend-in-doubt",
                leads(self.in_doubt),
                if self.in_doubt == 1 {
                    "it was"
                } else {
                    "they were"
                },
                if self.in_doubt == 1 {
                    "it will"
                } else {
                    "they will"
                }
            ));
        }
    }

    /// The plan for a person: one aligned line per figure, then one line per
    /// warning. Times are shown in the recipients' time zone, named, or
    /// else in the machine's.
    pub fn render(&self) -> String {
        let mut counts = vec![
            ("rows read", self.rows_read),
            ("valid", self.valid),
            ("invalid", self.invalid),
            ("duplicates", self.duplicates),
            ("already done", self.already_done),
            ("in doubt", self.in_doubt),
            ("beyond --limit", self.beyond_limit),
            ("planned", self.planned),
            ("links reused", self.links_reused),
            ("API calls needed", self.api_calls_needed),
            ("emails needed", self.emails_needed),
        ];
        // Only a run with --limit has rows beyond it.
        counts.retain(|(label, n)| *n > 0 || *label != "beyond --limit");
        let width = counts
            .iter()
            .map(|(_, n)| thousands(*n).len())
            .max()
            .unwrap_or(1);
        let mut out = String::new();
        for (label, n) in counts {
            let _ = write!(out, "{label:<LABEL$}{:>width$}", thousands(n));
            if label == "invalid" && !self.invalid_by_reason.is_empty() {
                let _ = write!(out, " ({})", self.reasons());
            }
            out.push('\n');
        }
        let at = if self.rate.is_empty() {
            String::new()
        } else {
            format!(" at {}", self.rate)
        };
        let _ = writeln!(
            out,
            "{:<LABEL$}{}{at}",
            "estimated duration",
            human_duration(self.estimated_secs)
        );
        for (label, time) in [
            ("finish by", self.finish_by),
            ("first key expires", self.first_key_expires),
            ("last key expires", self.last_key_expires),
        ] {
            let Some(t) = time else { continue };
            let shown = match self.zone {
                Some(zone) => format!(
                    "{} ({})",
                    t.with_timezone(&zone).format("%Y-%m-%d %H:%M %:z"),
                    zone.name()
                ),
                None => t
                    .with_timezone(&Local)
                    .format("%Y-%m-%d %H:%M %:z")
                    .to_string(),
            };
            let _ = writeln!(out, "{label:<LABEL$}{shown}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }

    /// Invalid reasons, commonest first, as `kind: count`.
    fn reasons(&self) -> String {
        let mut reasons: Vec<_> = self.invalid_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        reasons
            .iter()
            .map(|(kind, n)| format!("{kind}: {}", thousands(**n)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Width of the label column in [`Plan::render`]: the longest label and a gap.
const LABEL: usize = 20;

/// The shortest time `calls` can take under a budget of `N` per sliding `W`:
/// `W·⌊(calls−1)/N⌋`. The first `N` go at once, and each later group of `N`
/// must wait a full window after the group before it. Zero for 0 or 1 call.
pub(crate) fn window_bound(calls: u64, rate: Rate) -> Duration {
    let groups = calls.saturating_sub(1) / u64::from(rate.calls.max(1));
    let nanos = rate.window.as_nanos().saturating_mul(u128::from(groups));
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below a second, so it fits.
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// `std::time::Duration` to chrono's, saturating for absurd lengths.
fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The first moment at or after `now` whose local time is `time`. A time that
/// does not exist that day (a daylight-saving gap) moves to an hour later.
fn next_occurrence<Tz: TimeZone>(now: &DateTime<Tz>, time: NaiveTime) -> Option<DateTime<Tz>> {
    let tz = now.timezone();
    let today = now.date_naive();
    [today, today.succ_opt()?].into_iter().find_map(|day| {
        let naive = day.and_time(time);
        let at = tz.from_local_datetime(&naive).earliest().or_else(|| {
            tz.from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
        })?;
        (at > *now).then_some(at)
    })
}

/// `n` with thousands separators: 1,000,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// "1 row is" / "3 rows are", with separators.
fn rows(n: u64) -> String {
    match n {
        1 => "1 row is".to_owned(),
        n => format!("{} rows are", thousands(n)),
    }
}

/// "1 lead is" / "3 leads are", with separators.
fn leads(n: u64) -> String {
    match n {
        1 => "1 lead is".to_owned(),
        n => format!("{} leads are", thousands(n)),
    }
}

/// A duration the way a person says it: `0s`, `2.5s`, `3m 15s`, `4h 0m 5s`.
fn human_duration(secs: f64) -> String {
    if secs < 60.0 && secs.fract() != 0.0 {
        return format!("{secs:.1}s");
    }
    // Round up: an estimate that is a lower bound should not shrink.
    let total = secs.ceil() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests;
