//! lsq-dispatch: turns a CSV of LeadSquared LeadIds into portal auto-login links,
//! paced to the tenant's API budget, optionally emails each lead its link, and
//! writes a per-lead report.
//!
//! The binary (`src/main.rs`) only parses, runs and maps the outcome to an exit
//! code; everything else lives in the modules below, each named after the concept
//! it owns.
//!
//! Modules are private unless the binary or the tests in `tests/` need them:
//! `cli`, `config`, `exit`, `generate`, `logging`, `run`, `sandbox`, `serve`,
//! `signin` and `status` for `main.rs`; `email`, `limiter` (`Rate`),
//! `report` (`Status`), `secret`, `state` and `tenant` for the tests that
//! drive a part on its own (an SMTP send, a ledger opened by two runs, a
//! budget); `redirect` for the tests that seal links for `serve` and open the
//! links a run wrote.

#![warn(unreachable_pub, missing_docs)]

mod api;
mod budget;
mod campaign;
pub mod cli;
pub mod config;
mod console;
mod daytime;
pub mod email;
pub mod exit;
pub mod generate;
mod input;
pub mod limiter;
pub mod logging;
mod metrics;
mod paths;
mod ping;
mod plan;
mod portal_url;
mod progress;
pub mod redirect;
pub mod report;
mod retry;
pub mod run;
pub mod sandbox;
pub mod secret;
pub mod serve;
mod signal;
pub mod signin;
pub mod state;
pub mod status;
mod summary;
pub mod tenant;
mod units;
mod usage;
