//! The flags of the `lsq-dispatch sandbox` subcommand, and turning them into
//! a [`SandboxConfig`]. Durations are written as `humantime` reads them
//! (`300ms`, `5s`, `4h`), at most a day.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::{guid, Budget, SandboxConfig, SandboxLead};

/// Flags of `lsq-dispatch sandbox`. Credentials are not flags: they come from
/// `LSQ_ACCESS_KEY`, `LSQ_SECRET_KEY`, `LSQ_TENANT_AUTH_KEY` and
/// `LSQ_PUBLIC_AUTH_KEY`, or the documented defaults.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SandboxArgs {
    /// Loopback port to listen on (0 = any free port; the URL is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// A portal GUID the sandbox knows (repeatable; default: the two built-in ones).
    #[arg(long = "portal-id", value_name = "GUID")]
    pub portal_ids: Vec<String>,

    /// API budget: calls per sliding window.
    #[arg(long, value_name = "CALLS/WINDOW", default_value = "25/5s")]
    pub budget: Option<Budget>,

    /// Lifetime of issued lead keys and minted tenant keys.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "4h")]
    pub key_ttl: Option<Duration>,

    /// Inbound network delay before a call is counted, e.g. 0-100ms.
    #[arg(long, value_name = "RANGE", value_parser = parse_range)]
    pub jitter: Option<(Duration, Duration)>,

    /// Time to serve an accepted call, e.g. 50-300ms.
    #[arg(long, value_name = "RANGE", value_parser = parse_range)]
    pub service_time: Option<(Duration, Duration)>,

    /// Fraction of accepted calls answered 500, e.g. 0.1.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Fraction of accepted calls whose connection is dropped, e.g. 0.05.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub drop_rate: f64,

    /// A competing integration takes K of the budget's calls in every window.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub competitor: u32,

    /// The first call of this fraction of new connections arrives this much
    /// later, unseen by the client (a lost SYN shows in the client's connect
    /// time: see --slow-accept): FRACTION:DELAY, e.g. 0.7:1s.
    #[arg(long, value_name = "FRACTION:DELAY", value_parser = parse_late)]
    pub late_connections: Option<(f64, Duration)>,

    /// A listener with this small an accept backlog that accepts one
    /// connection per DELAY, so the kernel drops the SYNs of a burst beyond
    /// it and they arrive a second or more late: BACKLOG:DELAY, e.g. 5:20ms.
    #[arg(long, value_name = "BACKLOG:DELAY", value_parser = parse_slow_accept)]
    pub slow_accept: Option<(u32, Duration)>,

    /// Count calls answered 429 toward the window, as some gateways do.
    #[arg(long)]
    pub count_rejected: bool,

    /// Seed for the fault RNG, to replay the same faults.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// A LeadId that answers 400 "Lead does not exist" (repeatable).
    #[arg(long = "unknown-lead", value_name = "GUID")]
    pub unknown_leads: Vec<String>,

    /// CSV of extra OTP leads with header LeadId,Phone,Email.
    #[arg(long, value_name = "FILE")]
    pub leads: Option<PathBuf>,

    /// Send Retry-After (seconds) with every 429.
    #[arg(long, value_name = "SECS")]
    pub retry_after: Option<u64>,

    /// Close a connection that has been idle this long.
    #[arg(long, value_name = "DURATION", value_parser = duration_arg, default_value = "60s")]
    pub idle_timeout: Option<Duration>,
}

impl SandboxArgs {
    /// The configuration these flags describe, on top of
    /// [`SandboxConfig::from_env`].
    pub fn into_config(self) -> anyhow::Result<SandboxConfig> {
        let mut config = SandboxConfig::from_env();
        config.port = self.port;
        if !self.portal_ids.is_empty() {
            config.portal_ids = self.portal_ids;
        }
        if let Some(budget) = self.budget {
            config.budget = budget;
        }
        if let Some(ttl) = self.key_ttl {
            if ttl.is_zero() {
                bail!("--key-ttl must be above zero");
            }
            config.key_ttl = ttl;
        }
        if let Some(jitter) = self.jitter {
            config.jitter = jitter;
        }
        if let Some(service_time) = self.service_time {
            config.service_time = service_time;
        }
        config.error_rate = self.error_rate;
        config.drop_rate = self.drop_rate;
        config.competitor = self.competitor;
        config.count_rejected = self.count_rejected;
        config.seed = self.seed;
        config.unknown_leads = self.unknown_leads;
        if let Some(path) = &self.leads {
            config.leads = read_leads(path)?;
        }
        config.retry_after = self.retry_after.map(Duration::from_secs);
        if let Some(late) = self.late_connections {
            config.late_connections = late;
        }
        config.slow_accept = self.slow_accept;
        if let Some(idle) = self.idle_timeout {
            if idle.is_zero() {
                bail!("--idle-timeout must be above zero");
            }
            config.idle_timeout = idle;
        }
        Ok(config)
    }
}

/// Parses `--late-connections`: a fraction in 0..=1, a colon and a delay.
fn parse_late(text: &str) -> Result<(f64, Duration), String> {
    let bad = || format!("invalid value {text:?}: expected FRACTION:DELAY such as 0.7:1s");
    let (fraction, delay) = text.trim().split_once(':').ok_or_else(bad)?;
    let fraction: f64 = fraction.trim().parse().map_err(|_| bad())?;
    let delay = parse_duration(delay).ok_or_else(bad)?;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(bad());
    }
    Ok((fraction, delay))
}

/// Parses `--slow-accept`: a backlog of at least 1, a colon and a delay.
fn parse_slow_accept(text: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("invalid value {text:?}: expected BACKLOG:DELAY such as 5:20ms");
    let (backlog, delay) = text.trim().split_once(':').ok_or_else(bad)?;
    let backlog: u32 = backlog.trim().parse().map_err(|_| bad())?;
    let delay = parse_duration(delay).ok_or_else(bad)?;
    if backlog == 0 {
        return Err(bad());
    }
    Ok((backlog, delay))
}

/// Parses a delay range: `0-100ms`, `50ms-300ms`, `1s-2s`, or one value for a
/// fixed delay. A bare number before the dash takes the unit after it, so
/// `0-100ms` means 0 ms to 100 ms, not 0 s to 100 ms.
fn parse_range(text: &str) -> Result<(Duration, Duration), String> {
    let bad =
        || format!("invalid range {text:?}: expected e.g. 0-100ms, 50ms-300ms or 1s, at most 24h");
    let text = text.trim();
    let (lo, hi) = match text.split_once('-') {
        None => {
            let d = parse_duration(text).ok_or_else(bad)?;
            return Ok((d, d));
        }
        Some((lo, hi)) => (lo.trim(), hi.trim()),
    };
    let hi_d = parse_duration(hi).ok_or_else(bad)?;
    let lo_d = if !lo.is_empty() && lo.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let unit = hi.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
        parse_duration(&format!("{lo}{unit}"))
    } else {
        parse_duration(lo)
    }
    .ok_or_else(bad)?;
    if lo_d > hi_d {
        return Err(format!(
            "invalid range {text:?}: the low end is above the high end"
        ));
    }
    Ok((lo_d, hi_d))
}

/// The longest duration a flag takes: a longer delay or lifetime is a typo.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration as `humantime` writes it, up to [`MAX_DURATION`].
fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| {
        format!("invalid duration {text:?}: expected e.g. 300ms, 5s, 4h, at most 24h")
    })
}

/// Reads OTP leads from a CSV with header `LeadId,Phone,Email`.
fn read_leads(path: &Path) -> anyhow::Result<Vec<SandboxLead>> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot read --leads file {shown}"))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{shown}: cannot read the header row"))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
            .with_context(|| {
                format!("{shown}: header has no {name} column (want LeadId,Phone,Email)")
            })
    };
    let (id_col, phone_col, email_col) = (column("LeadId")?, column("Phone")?, column("Email")?);

    let mut leads = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{shown}: malformed CSV"))?;
        let line = record.position().map_or(0, |p| p.line());
        let cell = |i: usize| record.get(i).unwrap_or("").to_owned();
        let lead = SandboxLead {
            lead_id: cell(id_col),
            phone: cell(phone_col),
            email: cell(email_col),
        };
        if guid::parse(&lead.lead_id).is_none() {
            bail!(
                "{shown} line {line}: LeadId {:?} is not a GUID",
                lead.lead_id
            );
        }
        if lead.phone.is_empty() && lead.email.is_empty() {
            bail!("{shown} line {line}: a lead needs a Phone or an Email to sign in by OTP");
        }
        leads.push(lead);
    }
    Ok(leads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEMO_LEAD_ID;
    use std::io::Write as _;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_slow_accept() {
        assert_eq!(parse_slow_accept("5:20ms"), Ok((5, ms(20))));
        for bad in ["0:20ms", "5", "x:1s", "5:soon"] {
            assert!(parse_slow_accept(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_late_connections() {
        assert_eq!(parse_late("0.7:1s"), Ok((0.7, Duration::from_secs(1))));
        assert_eq!(parse_late("1:250ms"), Ok((1.0, Duration::from_millis(250))));
        for bad in ["0.7", "2:1s", "-0.1:1s", "0.5:x", ":1s"] {
            assert!(parse_late(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-100ms"), Ok((ms(0), ms(100))));
        assert_eq!(parse_range("50ms-300ms"), Ok((ms(50), ms(300))));
        assert_eq!(parse_range("1-2s"), Ok((ms(1000), ms(2000))));
        assert_eq!(parse_range("1s"), Ok((ms(1000), ms(1000))));
        assert_eq!(parse_range("250ms-1s"), Ok((ms(250), ms(1000))));
        for bad in ["", "x", "3s-1s", "1s-", "-1s", "1y-2y"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SandboxArgs,
    }

    #[test]
    fn flags_parse() {
        use clap::{CommandFactory as _, Parser as _};
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "sandbox",
            "--port",
            "8080",
            "--jitter",
            "0-100ms",
            "--portal-id",
            "a",
            "--portal-id",
            "b",
            "--unknown-lead",
            "x",
            "--count-rejected",
            "--budget",
            "10/1s",
        ])
        .unwrap();
        assert_eq!(cli.args.port, 8080);
        assert_eq!(cli.args.jitter, Some((ms(0), ms(100))));
        assert_eq!(cli.args.portal_ids, ["a", "b"]);
        assert_eq!(cli.args.key_ttl, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(cli.args.budget.unwrap().calls, 10);
        assert!(Cli::try_parse_from(["sandbox", "--jitter", "5s-1s"]).is_err());
    }

    #[test]
    fn flags_become_config() {
        let args = SandboxArgs {
            port: 0,
            portal_ids: vec![],
            budget: Some("5/1s".parse().unwrap()),
            key_ttl: Some(ms(300)),
            jitter: Some((ms(0), ms(100))),
            service_time: None,
            error_rate: 0.1,
            drop_rate: 0.05,
            competitor: 2,
            count_rejected: true,
            seed: Some(9),
            unknown_leads: vec![],
            leads: None,
            retry_after: Some(2),
            late_connections: Some((0.5, ms(1000))),
            slow_accept: Some((5, ms(20))),
            idle_timeout: Some(ms(500)),
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.idle_timeout, ms(500));
        assert_eq!(c.budget.calls, 5);
        assert_eq!(c.key_ttl, ms(300));
        assert_eq!(c.jitter, (ms(0), ms(100)));
        assert_eq!(c.service_time, (Duration::ZERO, Duration::ZERO));
        assert_eq!(c.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(c.late_connections, (0.5, ms(1000)));
        assert_eq!(c.slow_accept, Some((5, ms(20))));
        assert_eq!(
            c.portal_ids,
            vec![
                crate::DEFAULT_PORTAL_ID.to_owned(),
                crate::SECOND_PORTAL_ID.to_owned()
            ]
        );
        assert!(c.count_rejected);
    }

    #[test]
    fn leads_file_errors_name_the_line() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "LeadId,Phone,Email").unwrap();
        writeln!(file, "{DEMO_LEAD_ID},+1-555,a@example.com").unwrap();
        writeln!(file, "not-a-guid,+1-556,b@example.com").unwrap();
        let err = read_leads(file.path()).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("not-a-guid"),
            "{err}"
        );
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn leads_file_is_read() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "\u{feff}LeadId, Phone ,Email\r").unwrap();
        writeln!(file, "{DEMO_LEAD_ID}, +1-555 ,a@example.com\r").unwrap();
        let leads = read_leads(file.path()).unwrap();
        assert_eq!(leads.len(), 1);
        assert_eq!(leads[0].phone, "+1-555");
    }
}
