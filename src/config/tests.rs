//! Unit tests of settings resolution.

use std::path::{Path, PathBuf};

use super::*;
use crate::cli::RunArgs;

fn resolve(args: &RunArgs) -> Settings {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(Settings::resolve(args))
        .unwrap()
}

#[test]
fn host_forms() {
    assert_eq!(
        parse_host("portalapi-in21.leadsquared.com")
            .unwrap()
            .as_str(),
        "https://portalapi-in21.leadsquared.com/"
    );
    assert!(parse_host("http://127.0.0.1:8080").is_ok());
    assert!(parse_host("http://localhost:8080").is_ok());
    let err = parse_host("http://portalapi.leadsquared.com").unwrap_err();
    assert!(err.0.contains("unencrypted"), "{err}");
    assert!(parse_host("ftp://x").is_err());
    assert!(parse_host("https://").is_err());
}

#[test]
fn flags_beat_the_file_and_the_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "host = \"portalapi-us11.leadsquared.com\"\nrate = \"10/5s\"\nconcurrency = 7\n",
    )
    .unwrap();
    let mut args = RunArgs {
        input: "leads.csv".into(),
        config: Some(file.clone()),
        dry_run: true,
        ..RunArgs::default()
    };
    let s = resolve(&args);
    assert_eq!(s.limiter.rate.calls, 10);
    assert_eq!(s.concurrency, 7);
    assert_eq!(
        s.report,
        PathBuf::from("leads-plan.csv"),
        "a dry run's plan"
    );
    args.concurrency = Some(3);
    let s = resolve(&args);
    assert_eq!(s.concurrency, 3);
}

#[test]
fn a_plan_and_a_report_default_to_different_files() {
    let input = std::path::Path::new("/data/leads.csv");
    assert_eq!(
        default_report_path(input, false),
        PathBuf::from("leads-report.csv")
    );
    assert_eq!(
        default_report_path(input, true),
        PathBuf::from("/data/leads-plan.csv")
    );
    // No file goes beside a device.
    assert_eq!(
        default_report_path(std::path::Path::new("/dev/stdin"), true),
        PathBuf::from("stdin-plan.csv")
    );
}

#[test]
fn unknown_keys_in_the_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "hots = \"x\"\n").unwrap();
    let err = FileConfig::load(&file).unwrap_err();
    assert!(err.0.contains("hots") && err.0.contains("c.toml"), "{err}");
}

#[test]
fn the_sample_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/lsq-dispatch.toml");
    FileConfig::load(&path).unwrap();
}

#[test]
fn every_setting_the_sample_config_comments_out_is_a_real_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/lsq-dispatch.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| {
            let setting = line.strip_prefix("# ").filter(|rest| {
                rest.split_once(" = ")
                    .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            });
            format!("{}\n", setting.unwrap_or(line))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, &uncommented).unwrap();
    FileConfig::load(&file).unwrap();
    assert!(
        uncommented.contains("\nlist_unsubscribe = "),
        "{uncommented}"
    );
}

#[test]
fn flag_beats_file_for_every_picked_setting() {
    let flag = Some("flag".to_owned());
    let file = Some("file".to_owned());
    assert_eq!(resolve::pick(&flag, &file).as_deref(), Some("flag"));
    assert_eq!(resolve::pick(&None, &file).as_deref(), Some("file"));
    assert_eq!(resolve::pick(&Some("  ".into()), &None), None);
}

#[test]
fn a_live_run_names_every_missing_setting() {
    let args = RunArgs {
        input: "leads.csv".into(),
        host: Some("portalapi-in21.leadsquared.com".into()),
        ..RunArgs::default()
    };
    let err = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(Settings::resolve(&args))
        .unwrap_err();
    let text = err.to_string();
    assert!(err.is::<UsageError>(), "{text}");
    assert!(
        text.contains("--portal-url") && !text.contains("the API host"),
        "{text}"
    );
}

#[test]
fn the_budget_is_shared_beside_the_state_file_unless_a_redis_server_is_named() {
    let mut args = RunArgs {
        input: "leads.csv".into(),
        dry_run: true,
        state: Some("/var/lib/lsq-dispatch/state.sqlite".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        resolve(&args).budget_store,
        BudgetStore::Machine("/var/lib/lsq-dispatch".into())
    );
    args.budget_store = Some("redis://:pw-of-redis@10.0.0.5:6379/1".into());
    let BudgetStore::Redis(url) = resolve(&args).budget_store else {
        panic!("no Redis store");
    };
    assert_eq!(url.to_string(), "redis://10.0.0.5:6379/1");
    args.budget_store = Some("http://10.0.0.5:6379".into());
    let err = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(Settings::resolve(&args))
        .unwrap_err();
    assert!(err.is::<UsageError>(), "{err}");
    assert!(err.to_string().contains("--budget-store"), "{err}");
}

#[test]
fn the_input_settings_come_from_flags_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "encoding = \"latin1\"\ndelimiter = \"tab\"\nlimit = 50\nlead_column = \"ProspectID\"\n",
    )
    .unwrap();
    let mut args = RunArgs {
        input: "leads.csv".into(),
        config: Some(file),
        dry_run: true,
        ..RunArgs::default()
    };
    let s = resolve(&args);
    assert_eq!(s.encoding, Some(TextEncoding::Windows1252));
    assert_eq!(s.delimiter, Some(b'\t'));
    assert_eq!(s.limit, Some(50));
    assert_eq!(s.lead_column.as_deref(), Some("ProspectID"));
    args.encoding = Some("utf-16".into());
    args.delimiter = Some(";".into());
    args.limit = Some(5);
    let s = resolve(&args);
    assert_eq!(
        (s.encoding, s.delimiter, s.limit),
        (Some(TextEncoding::Utf16), Some(b';'), Some(5))
    );
    let unset = resolve(&RunArgs {
        input: "leads.csv".into(),
        dry_run: true,
        ..RunArgs::default()
    });
    assert_eq!(
        (
            unset.encoding,
            unset.delimiter,
            unset.limit,
            unset.lead_column
        ),
        (None, None, None, None),
        "found from the file itself"
    );
}

#[test]
fn bad_input_settings_are_usage_errors_naming_the_flag() {
    let error = |args: RunArgs| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let args = RunArgs {
            input: "leads.csv".into(),
            dry_run: true,
            ..args
        };
        let err = runtime.block_on(Settings::resolve(&args)).unwrap_err();
        assert!(err.is::<UsageError>(), "{err}");
        err.to_string()
    };
    for (given, said) in [
        (
            RunArgs {
                encoding: Some("ebcdic".into()),
                ..RunArgs::default()
            },
            "--encoding: unknown encoding \"ebcdic\": use utf-8, latin1, windows-1252 or utf-16",
        ),
        (
            RunArgs {
                delimiter: Some(";;".into()),
                ..RunArgs::default()
            },
            "--delimiter \";;\": give one ASCII character other than a quote",
        ),
        (
            RunArgs {
                delimiter: Some("\"".into()),
                ..RunArgs::default()
            },
            "--delimiter \"\\\"\"",
        ),
        (
            RunArgs {
                limit: Some(0),
                ..RunArgs::default()
            },
            "--limit must be at least 1",
        ),
    ] {
        let message = error(given);
        assert!(message.starts_with(said), "{message}");
    }
}

#[test]
fn a_tab_is_written_three_ways() {
    for tab in ["tab", "\\t", "\t"] {
        let s = resolve(&RunArgs {
            input: "leads.csv".into(),
            dry_run: true,
            delimiter: Some(tab.into()),
            ..RunArgs::default()
        });
        assert_eq!(s.delimiter, Some(b'\t'), "{tab:?}");
    }
}
