//! The campaigns of a state file as wholes, for `status`: which there are,
//! where each stands, and pruning the finished ones.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::store::StateStore;
use super::{LeadState, StateError};
use crate::redirect::LinkMode;

impl StateStore {
    /// The number of the campaign's leads in each state, every state name
    /// present (zero included) so a summary always has the same lines.
    pub fn counts(&self, campaign: &str) -> Result<BTreeMap<String, u64>, StateError> {
        self.count_by(
            &LeadState::NAMES,
            "SELECT state, COUNT(*) FROM leads WHERE campaign = ?1 GROUP BY state",
            campaign,
        )
    }

    /// How many of the campaign's leads were last given a link in each mode
    /// (`direct`, `at-send`, `at-click`), every mode named (zero included).
    pub fn link_modes(&self, campaign: &str) -> Result<BTreeMap<String, u64>, StateError> {
        self.count_by(
            &LinkMode::NAMES,
            "SELECT link_mode, COUNT(*) FROM leads \
             WHERE campaign = ?1 AND link_mode IS NOT NULL GROUP BY link_mode",
            campaign,
        )
    }

    /// The counts a `GROUP BY` query gives for the campaign, under every one
    /// of `names` (zero for those it does not give).
    fn count_by(
        &self,
        names: &[&str],
        query: &str,
        campaign: &str,
    ) -> Result<BTreeMap<String, u64>, StateError> {
        let mut counts: BTreeMap<String, u64> =
            names.iter().map(|name| ((*name).to_owned(), 0)).collect();
        let mut stmt = self.conn.prepare(query)?;
        let rows = stmt.query_map([campaign], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?))
        })?;
        for row in rows {
            let (name, n) = row?;
            counts.insert(name, n);
        }
        Ok(counts)
    }

    /// The names of all campaigns in the file, sorted: those with leads
    /// and those a run claimed that recorded none.
    pub fn campaigns(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self.conn.prepare(
            "SELECT campaign FROM leads UNION SELECT campaign FROM campaigns ORDER BY campaign",
        )?;
        let names = stmt.query_map([], |r| r.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// Where the campaign stands as a whole, or `None` when the file has no
    /// such campaign.
    pub fn overview(&self, campaign: &str) -> Result<Option<CampaignOverview>, StateError> {
        let last: Option<String> = self.conn.query_row(
            "SELECT MAX(t) FROM ( \
                 SELECT MAX(updated_at) AS t FROM leads WHERE campaign = ?1 \
                 UNION ALL SELECT last_run_at FROM campaigns WHERE campaign = ?1)",
            [campaign],
            |r| r.get(0),
        )?;
        let Some(last) = last else {
            return Ok(None);
        };
        let last_activity = DateTime::parse_from_rfc3339(&last)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| StateError::Corrupt {
                path: self.path.clone(),
                detail: format!("campaign {campaign} has an unreadable time {last:?}"),
            })?;
        let counts = self.counts(campaign)?;
        Ok(Some(CampaignOverview {
            name: campaign.to_owned(),
            leads: counts.values().sum(),
            running: self.lock.claimed_elsewhere(campaign)?,
            links: self.link_modes(campaign)?,
            counts,
            last_activity,
        }))
    }

    /// Removes every entry of each campaign whose last activity is before
    /// `cutoff` and that is finished: no run holds it (it is claimed here
    /// first, so none can start meanwhile) and none of its leads is in
    /// `sending`. With `only`, that campaign alone is considered. Returns
    /// the campaigns removed and those left alone because they are in
    /// progress.
    pub fn prune(&self, cutoff: DateTime<Utc>, only: Option<&str>) -> Result<Pruning, StateError> {
        let mut pruning = Pruning::default();
        let names = match only {
            Some(name) => vec![name.to_owned()],
            None => self.campaigns()?,
        };
        let sending = |o: &CampaignOverview| o.counts.get("sending").is_some_and(|n| *n > 0);
        for name in names {
            let Some(overview) = self.inactive_since(&name, cutoff)? else {
                continue;
            };
            if sending(&overview) || !self.lock.claim(&name)? {
                pruning.in_progress.push(overview);
                continue;
            }
            // Looked at again under the lock: a run may have come and gone.
            let Some(overview) = self.inactive_since(&name, cutoff)? else {
                continue;
            };
            if sending(&overview) {
                pruning.in_progress.push(overview);
                continue;
            }
            let tx = self.conn.unchecked_transaction()?;
            for table in ["leads", "retry_files", "campaigns"] {
                tx.execute(&format!("DELETE FROM {table} WHERE campaign = ?1"), [&name])?;
            }
            tx.commit()?;
            pruning.removed.push(overview);
        }
        Ok(pruning)
    }

    /// The campaign's overview when it was last active before `cutoff`.
    fn inactive_since(
        &self,
        campaign: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<CampaignOverview>, StateError> {
        Ok(self
            .overview(campaign)?
            .filter(|overview| overview.last_activity < cutoff))
    }
}

/// One campaign as a whole, for `status`.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignOverview {
    /// The campaign's name.
    pub name: String,
    /// Its leads, whatever their state.
    pub leads: u64,
    /// Its leads per state, every state named.
    pub counts: BTreeMap<String, u64>,
    /// Its leads given a link, per link mode, every mode named.
    pub links: BTreeMap<String, u64>,
    /// When a run last claimed it or changed one of its leads.
    pub last_activity: DateTime<Utc>,
    /// A run holds it now.
    pub running: bool,
}

/// What [`StateStore::prune`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pruning {
    /// The campaigns removed, as they were.
    pub removed: Vec<CampaignOverview>,
    /// Campaigns old enough that were kept: a run holds them, or a lead is
    /// in `sending`.
    pub in_progress: Vec<CampaignOverview>,
}
