//! The service's figures, served at `/metrics` in Prometheus' text
//! exposition format: clicks by outcome, keys minted, cache hits, time spent
//! waiting for a key, and 429s met.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What became of a click (a POST), or of a page view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The key in the token was alive.
    TokenKey,
    /// A key from the cache.
    Cached,
    /// A key minted for this click.
    Minted,
    /// The budget stayed spent past `--budget-wait`.
    Busy,
    /// The API failed.
    Failed,
    /// The link is past its expiry.
    Expired,
    /// Not a link of ours.
    Invalid,
    /// The client made too many POSTs.
    Limited,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::TokenKey,
        Outcome::Cached,
        Outcome::Minted,
        Outcome::Busy,
        Outcome::Failed,
        Outcome::Expired,
        Outcome::Invalid,
        Outcome::Limited,
    ];

    /// The label value, and the word in the click's log line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::TokenKey => "token_key",
            Outcome::Cached => "cached",
            Outcome::Minted => "minted",
            Outcome::Busy => "busy",
            Outcome::Failed => "failed",
            Outcome::Expired => "expired",
            Outcome::Invalid => "invalid",
            Outcome::Limited => "limited",
        }
    }
}

/// The counters, updated by every request.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    clicks: [AtomicU64; 8],
    views: AtomicU64,
    minted: AtomicU64,
    cache_hits: AtomicU64,
    waited_micros: AtomicU64,
    rate_limited: AtomicU64,
}

impl Metrics {
    /// Counts a POST's outcome.
    pub(crate) fn click(&self, outcome: Outcome) {
        let at = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.clicks[at].fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Minted => self.minted.fetch_add(1, Ordering::Relaxed),
            Outcome::Cached => self.cache_hits.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Counts a GET or HEAD of a link.
    pub(crate) fn view(&self) {
        self.views.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a click's wait for its key to be minted (the budget, and the
    /// API's answer) and the 429s its calls met.
    pub(crate) fn minting(&self, waited: Duration, rate_limited: u32) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.waited_micros.fetch_add(micros, Ordering::Relaxed);
        self.rate_limited
            .fetch_add(u64::from(rate_limited), Ordering::Relaxed);
    }

    /// The text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.push_str(
            "# HELP lsq_dispatch_serve_clicks_total Link POSTs answered, by outcome.\n\
             # TYPE lsq_dispatch_serve_clicks_total counter\n",
        );
        for (outcome, count) in Outcome::ALL.iter().zip(&self.clicks) {
            let _ = writeln!(
                out,
                "lsq_dispatch_serve_clicks_total{{outcome=\"{}\"}} {}",
                outcome.name(),
                get(count)
            );
        }
        let single = [
            (
                "lsq_dispatch_serve_views_total",
                "Link pages shown (GET and HEAD); they never mint.",
                "counter",
                get(&self.views) as f64,
            ),
            (
                "lsq_dispatch_serve_keys_minted_total",
                "Lead keys minted for clicks.",
                "counter",
                get(&self.minted) as f64,
            ),
            (
                "lsq_dispatch_serve_cache_hits_total",
                "Clicks answered with a key from the cache.",
                "counter",
                get(&self.cache_hits) as f64,
            ),
            (
                "lsq_dispatch_serve_mint_wait_seconds_total",
                "Seconds clicks waited for a key to be minted: for a slot of the budget, then for the API.",
                "counter",
                get(&self.waited_micros) as f64 / 1e6,
            ),
            (
                "lsq_dispatch_serve_rate_limited_total",
                "429 answers the API gave to this service's calls.",
                "counter",
                get(&self.rate_limited) as f64,
            ),
        ];
        for (name, help, kind, value) in single {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_each_outcome_under_its_label() {
        let metrics = Metrics::default();
        metrics.click(Outcome::Minted);
        metrics.click(Outcome::Cached);
        metrics.click(Outcome::Cached);
        metrics.minting(Duration::from_millis(1500), 2);
        let text = metrics.render();
        assert!(
            text.contains("lsq_dispatch_serve_clicks_total{outcome=\"cached\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_dispatch_serve_keys_minted_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_dispatch_serve_cache_hits_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_dispatch_serve_mint_wait_seconds_total 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_dispatch_serve_rate_limited_total 2\n"),
            "{text}"
        );
    }
}
