//! The integration tests, in one binary so they build and link once.
//!
//! They cover the real `lsq-dispatch` binary end to end against the built-in
//! sandbox, a wiremock server and an in-process SMTP server (`run`, `run
//! --dry-run`, `run --email`, campaign state across runs and kills, the rows
//! left to retry and to fix, `otp`, secrets kept out of every output, the API
//! budget shared by runs through its file and through Redis, what a run tells
//! its watchers: logs, summary, exit codes, metrics and pings, the messages
//! for the commonest mistakes, redirect links from a run's outbox through
//! `serve` to the sandbox portal page, in headless Chromium too), and the
//! library's email module and state store directly (the sandbox's own tests
//! live with it, in `crates/lsq-sandbox`). Shared helpers live once, in `support`.
//!
//! Every test works in its own temporary directory and on ports the kernel
//! picks, and a spawned binary gets its environment per `Command`, so the
//! tests can run on parallel threads of this one process.

mod support;

mod daytime;
mod delivery;
mod device_outputs;
mod dry_run;
mod email;
mod exit_codes;
mod full_disk;
mod greylisting;
mod hostile;
mod input_hostile;
mod install_steps;
mod key_reuse;
mod layout;
mod ledger;
mod links_browser;
mod links_end_to_end;
mod links_shared_budget;
mod messages;
mod metrics_file;
mod monitoring;
mod names;
mod odd_inputs;
mod otp;
mod otp_documents;
mod paths;
mod readme;
mod real_files;
mod redirect_links;
mod reference;
mod rerun_files;
mod run_email;
mod run_help;
mod run_sandbox;
mod run_state;
mod run_wiremock;
mod samples;
mod sandbox_strict;
mod secrets;
mod serve;
mod serve_config;
mod shared_budget;
mod state_faults;
mod state_locks;
mod state_store;
mod status;
mod stop_waits;
mod stopping;
mod stored_pause;
