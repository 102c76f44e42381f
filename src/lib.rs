//! lsq-dispatch: turns a CSV of LeadSquared LeadIds into portal auto-login links,
//! paced to the tenant's API budget, optionally emails each lead its link, and
//! writes a per-lead report.
//!
//! The binary (`src/main.rs`) only parses, runs and maps the outcome to an exit
//! code; everything else lives in the modules below, each named after the concept
//! it owns.

#![warn(unreachable_pub, missing_docs)]

mod api;
mod budget;
pub mod campaign;
pub mod cli;
pub mod config;
mod console;
pub mod daytime;
pub mod email;
pub mod exit;
pub mod generate;
mod input;
pub mod limiter;
mod link;
pub mod logging;
mod metrics;
pub mod otp;
mod paths;
pub mod ping;
pub mod plan;
mod progress;
pub mod report;
mod retry;
pub mod run;
pub mod sandbox;
pub mod secret;
mod signal;
pub mod state;
pub mod status;
pub mod summary;
pub mod tenant;
