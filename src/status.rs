//! The `status` subcommand: what the state file holds, campaign by campaign,
//! and the export of one campaign's leads as a report CSV.

use std::path::Path;

use crate::cli::StatusArgs;
use crate::console::say;
use crate::exit::Exit;
use crate::state::StateStore;

/// `lsq-dispatch status`: prints the campaign counts (and exports).
pub fn execute(args: &StatusArgs) -> anyhow::Result<Exit> {
    let path = args.state.clone().unwrap_or_else(StateStore::default_path);
    say!(
        "{}",
        status(&path, args.campaign.as_deref(), args.export.as_deref())?
    );
    Ok(Exit::Success)
}

/// `lsq-dispatch status`: counts by state for one campaign (or every
/// campaign), and with `export` the campaign's leads as a report CSV.
pub fn status(
    path: &Path,
    campaign: Option<&str>,
    export: Option<&Path>,
) -> anyhow::Result<String> {
    if !path.exists() {
        anyhow::bail!(
            "no state file at {}: no campaign has run with it yet (or pass --state)",
            path.display()
        );
    }
    let store = StateStore::open_to_read(path)?;
    let campaigns = match campaign {
        Some(name) => vec![name.to_owned()],
        None => store.campaigns()?,
    };
    let mut out = String::new();
    if campaigns.is_empty() {
        out.push_str(&format!("no campaign in {}\n", path.display()));
    }
    for name in &campaigns {
        let counts = store.counts(name)?;
        let total: u64 = counts.values().sum();
        let parts: Vec<String> = counts
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect();
        out.push_str(&format!("{name}: {total} leads: {}\n", parts.join(", ")));
    }
    if let Some(target) = export {
        let Some(name) = campaign else {
            anyhow::bail!("--export needs --campaign NAME");
        };
        let mut writer = crate::report::ReportWriter::create(target)?;
        for entry in store.entries(name)? {
            writer.write(&entry.to_record())?;
        }
        out.push_str(&format!(
            "exported campaign {name} to {}\n",
            target.display()
        ));
    }
    Ok(out.trim_end().to_owned())
}
