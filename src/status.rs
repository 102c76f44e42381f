//! The `status` subcommand: what the state file holds, campaign by campaign
//! (as text or JSON), the export of one campaign's leads as a report CSV, and
//! the pruning of finished campaigns no run has touched for a while.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::Args;
use serde_json::json;

use crate::console::say;
use crate::exit::Exit;
use crate::state::{CampaignOverview, StateStore};
use crate::units::Age;
use crate::usage::UsageError;

/// `lsq-dispatch status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The campaign [default: every campaign in the state file].
    #[arg(long, value_name = "NAME")]
    pub campaign: Option<String>,

    /// Campaign state file [default: $XDG_STATE_HOME/lsq-dispatch/state.sqlite].
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// Write the campaign's leads as a report CSV (needs --campaign).
    #[arg(long, value_name = "PATH", conflicts_with = "prune")]
    pub export: Option<PathBuf>,

    /// Print one JSON object on stdout: counts per campaign, or what
    /// --prune removed.
    #[arg(long)]
    pub json: bool,

    /// Remove the leads of finished campaigns (or of --campaign) whose last
    /// activity is older than --older-than; a campaign a run holds, or with
    /// leads in `sending`, is kept.
    #[arg(long, requires = "older_than")]
    pub prune: bool,

    /// With --prune: how long ago a campaign last ran, e.g. 90d or 12h.
    #[arg(long, value_name = "AGE", requires = "prune", value_parser = crate::config::value::age)]
    pub older_than: Option<crate::units::Age>,
}

/// `lsq-dispatch status`: prints the campaign counts (and exports, or prunes).
pub fn execute(args: &StatusArgs) -> anyhow::Result<Exit> {
    let path = args.state.clone().unwrap_or_else(StateStore::default_path);
    let text = match (args.prune, &args.older_than) {
        (true, Some(age)) => prune(&path, args.campaign.as_deref(), age, args.json)?,
        _ => status(
            &path,
            args.campaign.as_deref(),
            args.export.as_deref(),
            args.json,
        )?,
    };
    say!("{text}");
    Ok(Exit::Success)
}

/// `lsq-dispatch status`: counts by state for one campaign (or every
/// campaign), as text or as one JSON object, and with `export` the
/// campaign's leads as a report CSV. A campaign the file does not hold is a
/// usage error that lists those it does.
pub fn status(
    path: &Path,
    campaign: Option<&str>,
    export: Option<&Path>,
    json: bool,
) -> anyhow::Result<String> {
    let store = open(path, false)?;
    let overviews = overviews(&store, campaign)?;
    let mut out = if json {
        json!({
            "state_file": store.path(),
            "campaigns": overviews.iter().map(overview_json).collect::<Vec<_>>(),
        })
        .to_string()
    } else {
        text(&overviews, store.path())
    };
    if let Some(target) = export {
        let Some(name) = campaign else {
            return Err(UsageError("--export needs --campaign NAME".into()).into());
        };
        let mut writer = crate::report::ReportWriter::create(target)?;
        for entry in store.entries(name)? {
            writer.write(&entry.to_record())?;
        }
        // With --json, stdout stays one JSON object; the note goes to stderr.
        let note = format!("exported campaign {name} to {}", target.display());
        match json {
            true => eprintln!("{note}"),
            false => out.push_str(&format!("\n{note}")),
        }
    }
    Ok(out)
}

/// `status --prune --older-than AGE`: removes the finished campaigns (or
/// `campaign` alone) whose last activity is older than `age`, and says what
/// it removed and what it kept because a run is in progress.
pub fn prune(path: &Path, campaign: Option<&str>, age: &Age, json: bool) -> anyhow::Result<String> {
    let cutoff = TimeDelta::from_std(age.length)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| {
            UsageError(format!(
                "--older-than {:?}: use a number of days or hours such as 90d or 12h",
                age.given
            ))
        })?;
    let store = open(path, true)?;
    if let Some(name) = campaign {
        overviews(&store, Some(name))?;
    }
    let pruning = store.prune(cutoff, campaign)?;
    if json {
        return Ok(json!({
            "state_file": store.path(),
            "older_than": age.given,
            "cutoff": rfc3339(&cutoff),
            "removed": pruning.removed.iter().map(overview_json).collect::<Vec<_>>(),
            "in_progress": pruning.in_progress.iter().map(overview_json).collect::<Vec<_>>(),
        })
        .to_string());
    }
    let mut lines: Vec<String> = pruning
        .removed
        .iter()
        .map(|c| {
            format!(
                "removed campaign {}: {} leads, last active {}",
                c.name,
                c.leads,
                rfc3339(&c.last_activity)
            )
        })
        .collect();
    lines.extend(pruning.in_progress.iter().map(|c| {
        let why = match c.running {
            true => "a run holds it".to_owned(),
            false => format!(
                "{} lead(s) in sending (a run stopped mid-send; the next run of the campaign \
                 marks them in doubt)",
                c.counts.get("sending").copied().unwrap_or(0)
            ),
        };
        format!("kept campaign {}: in progress, {why}", c.name)
    }));
    let leads: u64 = pruning.removed.iter().map(|c| c.leads).sum();
    lines.push(format!(
        "pruned {} campaign(s), {leads} lead(s), last active before {} from {}",
        pruning.removed.len(),
        rfc3339(&cutoff),
        store.path().display()
    ));
    Ok(lines.join("\n"))
}

/// Opens an existing state file: to read, or to prune.
fn open(path: &Path, write: bool) -> anyhow::Result<StateStore> {
    if !path.exists() {
        anyhow::bail!(
            "no state file at {}: no campaign has run with it yet (or pass --state)",
            path.display()
        );
    }
    let store = match write {
        true => StateStore::open(path),
        false => StateStore::open_to_read(path),
    };
    store.with_context(|| format!("reading the state file {}", path.display()))
}

/// The campaign asked for, or every campaign; a name the file does not hold
/// is a usage error listing the names it does.
fn overviews(store: &StateStore, campaign: Option<&str>) -> anyhow::Result<Vec<CampaignOverview>> {
    let names = match campaign {
        Some(name) => vec![name.to_owned()],
        None => store.campaigns()?,
    };
    let mut overviews = Vec::with_capacity(names.len());
    for name in &names {
        match store.overview(name)? {
            Some(overview) => overviews.push(overview),
            None => {
                let known = store.campaigns()?;
                let there = match known.is_empty() {
                    true => "it holds no campaign yet".to_owned(),
                    false => format!("its campaigns: {}", known.join(", ")),
                };
                return Err(UsageError(format!(
                    "no campaign {name:?} in the state file {} ({there}); check --campaign \
                     and --state",
                    store.path().display()
                ))
                .into());
            }
        }
    }
    Ok(overviews)
}

/// One line per campaign.
fn text(overviews: &[CampaignOverview], path: &Path) -> String {
    if overviews.is_empty() {
        return format!("no campaign in {}", path.display());
    }
    let lines: Vec<String> = overviews
        .iter()
        .map(|c| {
            let parts: Vec<String> = c
                .counts
                .iter()
                .map(|(state, n)| format!("{state} {n}"))
                .collect();
            format!(
                "{}: {} leads: {}{}; last active {}{}",
                c.name,
                c.leads,
                parts.join(", "),
                links_text(c),
                rfc3339(&c.last_activity),
                if c.running {
                    "; a run holds it now"
                } else {
                    ""
                }
            )
        })
        .collect();
    lines.join("\n")
}

/// "; links: 2 direct, 5 redirect at-click" for the modes the campaign's
/// links were made in; nothing for a campaign that gave out none.
fn links_text(c: &CampaignOverview) -> String {
    let parts: Vec<String> = c
        .links
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(mode, n)| match mode.as_str() {
            "direct" => format!("{n} direct"),
            redirect => format!("{n} redirect {redirect}"),
        })
        .collect();
    match parts.is_empty() {
        true => String::new(),
        false => format!("; links: {}", parts.join(", ")),
    }
}

fn overview_json(c: &CampaignOverview) -> serde_json::Value {
    json!({
        "campaign": c.name,
        "leads": c.leads,
        "counts": c.counts,
        "links": c.links,
        "last_activity": rfc3339(&c.last_activity),
        "running": c.running,
    })
}

/// RFC 3339 UTC to the second, as the report writes times.
fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
