//! Redirect links (`--links redirect`): instead of the portal URL with a key
//! that dies in hours, the mail carries `BASE/l/TOKEN`, a link to the link
//! service (`lsq-dispatch serve`) that sends the person on to the portal with
//! a live key when they click.
//!
//! Public for the tests, which seal links the service opens and open the
//! tokens a run wrote.

mod token;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

use crate::secret::Secret;

pub use token::{new_secret, LinkClaims, LinkSecrets, TokenError};

/// `--links`: what the report and the mail carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Links {
    /// The portal URL with the lead's key (the key dies with its lifetime).
    #[default]
    Direct,
    /// `BASE/l/TOKEN`, a signed link to `lsq-dispatch serve`.
    Redirect,
}

/// `--mint`: when a redirect link's key is minted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mint {
    /// By the run, as for direct links; the token carries the key.
    #[default]
    AtSend,
    /// By the link service when the person clicks: the run makes no API call.
    AtClick,
}

/// How one lead's link was made, as the campaign state records it and
/// `status` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// The portal URL with a key.
    Direct,
    /// A redirect link carrying the key minted at send time.
    AtSend,
    /// A redirect link whose key is minted at click time.
    AtClick,
}

impl LinkMode {
    /// Every mode, as stored.
    pub const NAMES: [&'static str; 3] = ["direct", "at-send", "at-click"];

    /// The mode's name, as stored in the state file.
    pub fn name(self) -> &'static str {
        match self {
            LinkMode::Direct => "direct",
            LinkMode::AtSend => "at-send",
            LinkMode::AtClick => "at-click",
        }
    }
}

/// What stands for the token in a dry run's planned links.
const PLANNED_TOKEN: &str = "PLANNED-TOKEN";

/// The settings of `--links redirect`.
#[derive(Debug, Clone)]
pub struct RedirectLinks {
    /// `--link-base`, without a trailing slash.
    base: String,
    /// `--link-ttl`: how long a link opens.
    pub ttl: Duration,
    /// `--mint`.
    pub mint: Mint,
    /// `LSQ_LINK_SECRET`; a dry run given none plans without it.
    secrets: Option<Arc<LinkSecrets>>,
}

impl RedirectLinks {
    /// Redirect links to `base`, sealed with `secrets` (`None` only for a
    /// plan).
    pub fn new(base: &Url, ttl: Duration, mint: Mint, secrets: Option<LinkSecrets>) -> Self {
        RedirectLinks {
            base: base.as_str().trim_end_matches('/').to_owned(),
            ttl,
            mint,
            secrets: secrets.map(Arc::new),
        }
    }

    /// The mode of the links made.
    pub fn mode(&self) -> LinkMode {
        match self.mint {
            Mint::AtSend => LinkMode::AtSend,
            Mint::AtClick => LinkMode::AtClick,
        }
    }

    /// The link for a lead, issued at `now`, carrying `key` (the lead's key
    /// and its expiry) when given; and when the link expires.
    pub fn link(
        &self,
        lead_id: &str,
        portal_id: &str,
        campaign: &str,
        key: Option<(&Secret, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let expires = now + self.ttl;
        let token = match &self.secrets {
            Some(secrets) => secrets.seal(&LinkClaims {
                lead_id: lead_id.to_owned(),
                portal_id: portal_id.to_owned(),
                campaign: campaign.to_owned(),
                issued: unix(now),
                expires: unix(expires),
                key: key.map(|(key, until)| (key.clone(), unix(until))),
            }),
            None => PLANNED_TOKEN.to_owned(),
        };
        (format!("{}/l/{token}", self.base), expires)
    }

    /// The link a dry run puts in a planned message.
    pub fn planned_link(&self) -> String {
        format!("{}/l/{PLANNED_TOKEN}", self.base)
    }
}

/// Unix seconds (none before 1970).
fn unix(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_the_base_then_l_then_a_token_that_opens_to_the_lead() {
        let secret = new_secret();
        let secrets = LinkSecrets::parse(&Secret::new(secret.clone())).unwrap();
        let base = Url::parse("https://go.example.com/").unwrap();
        let links = RedirectLinks::new(&base, Duration::from_secs(60), Mint::AtSend, Some(secrets));
        let now = Utc::now();
        let key = Secret::new("k+y/=");
        let (link, expires) = links.link("lead", "portal", "spring", Some((&key, now)), now);
        let token = link.strip_prefix("https://go.example.com/l/").unwrap();
        assert_eq!(expires, now + Duration::from_secs(60));
        let opener = LinkSecrets::parse(&Secret::new(secret)).unwrap();
        let claims = opener.open(token, unix(now)).unwrap();
        assert_eq!(claims.lead_id, "lead");
        assert_eq!(claims.campaign, "spring");
        assert_eq!(claims.expires, unix(expires));
        assert_eq!(claims.key.unwrap().0.expose(), "k+y/=");
    }
}
