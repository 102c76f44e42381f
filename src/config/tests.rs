//! Unit tests of settings merging and resolution.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::RunArgs;

fn resolve(args: &RunArgs) -> Settings {
    Settings::resolve(&merge(args.clone()).unwrap()).unwrap()
}

fn dry(args: RunArgs) -> RunArgs {
    RunArgs {
        input: "leads.csv".into(),
        dry_run: true,
        ..args
    }
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
    assert!(err.0.starts_with("--host \"http://"), "{err}");
    assert!(parse_host("ftp://x").is_err());
    assert!(parse_host("https://").is_err());
}

#[test]
fn flags_beat_the_file_and_the_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "host = \"portalapi-us11.leadsquared.com\"\nrate = \"10/5s\"\nconcurrency = 7\n\
         timeout = \"1m\"\nlink_ids = true\n",
    )
    .unwrap();
    let mut args = dry(RunArgs {
        config: Some(file.clone()),
        ..RunArgs::default()
    });
    let merged = merge(args.clone()).unwrap();
    assert_eq!(merged.timeout, Some(std::time::Duration::from_secs(60)));
    assert_eq!(
        merged.host.unwrap().as_str(),
        "https://portalapi-us11.leadsquared.com/"
    );
    let s = resolve(&args);
    assert_eq!(s.limiter.rate.calls, 10);
    assert_eq!(s.concurrency, 7);
    assert!(s.link_ids);
    assert_eq!(
        s.report,
        PathBuf::from("leads-plan.csv"),
        "a dry run's plan"
    );
    args.concurrency = Some(3);
    args.rate = Some("20/5s".parse().unwrap());
    let s = resolve(&args);
    assert_eq!((s.concurrency, s.limiter.rate.calls), (3, 20));
    let defaults = resolve(&dry(RunArgs::default()));
    assert_eq!(defaults.limiter.rate, crate::limiter::Rate::DEFAULT);
    assert_eq!(defaults.concurrency, 50);
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
fn default_names_keep_the_bytes_of_an_input_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt as _;
    let path = |bytes: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(bytes));
    assert_eq!(
        default_report_path(&path(b"/data/x\xff.csv"), false),
        path(b"x\xff-report.csv")
    );
    assert_eq!(
        default_report_path(&path(b"/data/x\xfe.csv"), true),
        path(b"/data/x\xfe-plan.csv")
    );
}

#[test]
fn unknown_keys_in_the_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "hots = \"x\"\n").unwrap();
    let err = load(&file).unwrap_err();
    assert!(err.0.contains("hots") && err.0.contains("c.toml"), "{err}");
}

#[test]
fn a_bad_value_in_the_file_is_named_by_its_key_and_worded_as_for_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let at = file.display();
    for (text, said) in [
        (
            "rate = \"25/2h\"",
            format!("rate in {at}: invalid rate \"25/2h\""),
        ),
        (
            "timeout = \"25h\"",
            format!("timeout in {at}: invalid duration \"25h\" (use e.g."),
        ),
        (
            "arrival_margin = \"2m\"",
            format!("arrival_margin in {at}: invalid duration \"2m\""),
        ),
        ("limit = 0", format!("limit in {at} must be at least 1")),
        (
            "delimiter = \";;\"",
            format!("delimiter in {at} \";;\": give one ASCII character"),
        ),
        (
            "encoding = \"ebcdic\"",
            format!("encoding in {at}: unknown encoding"),
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.0.starts_with(&said), "{text}: {err}");
    }
    std::fs::write(&file, "delimiter = \"\\t\"\nhost = \" \"\n").unwrap();
    let blank = load(&file).unwrap();
    assert_eq!((blank.delimiter, blank.host), (Some(b'\t'), None));
}

/// Every setting the sample config gives or comments out, uncommented.
fn sample_uncommented() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/lsq-dispatch.toml");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let setting = line.strip_prefix("# ").filter(|rest| {
                rest.split_once(" = ")
                    .is_some_and(|(key, _)| key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            });
            format!("{}\n", setting.unwrap_or(line))
        })
        .collect()
}

#[test]
fn the_sample_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/lsq-dispatch.toml");
    let sample = load(&path).unwrap();
    assert_eq!(sample.rate, Some(crate::limiter::Rate::DEFAULT));
    assert_eq!(
        sample.arrival_margin,
        Some(std::time::Duration::from_millis(120))
    );
}

#[test]
fn every_setting_the_sample_config_comments_out_is_a_real_one() {
    let uncommented = sample_uncommented();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("all.toml");
    std::fs::write(&file, &uncommented).unwrap();
    let all = load(&file).unwrap();
    assert!(
        uncommented.contains("\nlist_unsubscribe = "),
        "{uncommented}"
    );
    // Each typed value is read, not only its key known.
    assert_eq!(all.delimiter, Some(b';'));
    assert_eq!(all.smtp_rate.map(|r| r.calls), Some(10));
    assert_eq!(all.timezone, Some(chrono_tz::Europe::Berlin));
    assert!(all.budget_store.is_some() && all.list_unsubscribe.is_some());
    assert!(all.ping_url.is_some() && all.reply_to.is_some() && all.from.is_some());
}

#[test]
fn flag_beats_the_environment_beats_the_file_for_secrets_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "campaign = \"from-file\"\nemail_column = \"Mail\"\nsmtp_user = \"file-user\"\n",
    )
    .unwrap();
    let args = dry(RunArgs {
        config: Some(file),
        campaign: Some("from-flag".into()),
        ..RunArgs::default()
    });
    let merged = merge(args).unwrap();
    assert_eq!(merged.campaign.as_deref(), Some("from-flag"));
    assert_eq!(merged.email_column.as_deref(), Some("Mail"));
    // No test sets LSQ_SMTP_USER, so the file's stands.
    assert_eq!(merged.smtp_user.as_deref(), Some("file-user"));
}

#[test]
fn a_live_run_names_every_missing_setting() {
    let args = RunArgs {
        input: "leads.csv".into(),
        host: Some(parse_host("portalapi-in21.leadsquared.com").unwrap()),
        ..RunArgs::default()
    };
    let err = Settings::resolve(&args).unwrap_err();
    let text = err.to_string();
    assert!(err.is::<UsageError>(), "{text}");
    assert!(
        text.contains("--portal-url") && !text.contains("the API host"),
        "{text}"
    );
}

#[test]
fn a_sandbox_run_is_planned_here_and_started_by_the_run() {
    let args = RunArgs {
        input: "leads.csv".into(),
        sandbox: true,
        state: Some("state.sqlite".into()),
        ..RunArgs::default()
    };
    let s = Settings::resolve(&args).unwrap();
    let Mode::Sandbox(plan) = &s.mode else {
        panic!("no sandbox plan: {:?}", s.mode);
    };
    assert_eq!(plan.budget, crate::limiter::Rate::DEFAULT);
    assert!(s.connection().is_none() && !s.is_dry_run());
    assert_eq!(s.budget_store, BudgetStore::Own);
}

#[test]
fn the_budget_is_shared_beside_the_state_file_unless_a_redis_server_is_named() {
    let mut args = dry(RunArgs {
        state: Some("/var/lib/lsq-dispatch/state.sqlite".into()),
        ..RunArgs::default()
    });
    assert_eq!(
        resolve(&args).budget_store,
        BudgetStore::Machine("/var/lib/lsq-dispatch".into())
    );
    args.budget_store = Some(value::budget_store("redis://:pw-of-redis@10.0.0.5:6379/1").unwrap());
    let BudgetStore::Redis(url) = resolve(&args).budget_store else {
        panic!("no Redis store");
    };
    assert_eq!(url.to_string(), "redis://10.0.0.5:6379/1");
    let err = value::budget_store("http://10.0.0.5:6379").unwrap_err();
    assert!(
        err.named("--budget-store")
            .starts_with("--budget-store http://"),
        "{err:?}"
    );
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
    let mut args = dry(RunArgs {
        config: Some(file),
        ..RunArgs::default()
    });
    let s = resolve(&args);
    assert_eq!(s.encoding, Some(TextEncoding::Windows1252));
    assert_eq!(s.delimiter, Some(b'\t'));
    assert_eq!(s.limit, Some(50));
    assert_eq!(s.lead_column.as_deref(), Some("ProspectID"));
    args.encoding = Some(value::encoding("utf-16").unwrap());
    args.delimiter = Some(value::delimiter(";").unwrap());
    args.limit = Some(5);
    let s = resolve(&args);
    assert_eq!(
        (s.encoding, s.delimiter, s.limit),
        (Some(TextEncoding::Utf16), Some(b';'), Some(5))
    );
    let unset = resolve(&dry(RunArgs::default()));
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
fn bad_input_settings_are_named_by_the_flag() {
    let said = |invalid: value::Invalid, flag| invalid.named(flag);
    let cases = [
        (
            said(value::encoding("ebcdic").unwrap_err(), "--encoding"),
            "--encoding: unknown encoding \"ebcdic\": use utf-8, latin1, windows-1252 or utf-16",
        ),
        (
            said(value::delimiter(";;").unwrap_err(), "--delimiter"),
            "--delimiter \";;\": give one ASCII character other than a quote",
        ),
        (
            said(value::delimiter("\"").unwrap_err(), "--delimiter"),
            "--delimiter \"\\\"\"",
        ),
    ];
    for (message, expected) in cases {
        assert!(message.starts_with(expected), "{message}");
    }
    let zero = value::at_least_one::<u64>("0").unwrap_err();
    let zero = zero.downcast_ref::<value::Invalid>().unwrap();
    assert_eq!(zero.named("--limit"), "--limit must be at least 1");
    assert!(value::at_least_one::<u64>("x")
        .unwrap_err()
        .downcast_ref::<value::Invalid>()
        .is_none());
}

#[test]
fn a_tab_is_written_three_ways() {
    for tab in ["tab", "\\t", "\t"] {
        assert_eq!(value::delimiter(tab), Ok(b'\t'), "{tab:?}");
    }
}

#[test]
fn durations_keep_their_bounds() {
    let second = std::time::Duration::from_secs(1);
    assert_eq!(value::timeout("1.5s"), Ok(second + second / 2));
    assert_eq!(
        value::timeout("3"),
        Ok(second * 3),
        "a bare number is seconds"
    );
    assert!(value::timeout("0s").is_err() && value::timeout("25h").is_err());
    assert_eq!(value::margin("0ms"), Ok(std::time::Duration::ZERO));
    let long = value::margin("2m").unwrap_err().named("--arrival-margin");
    assert!(long.ends_with("at most 1m)"), "{long}");
}

#[test]
fn the_file_gives_the_key_lifetime_and_every_redirect_setting_typed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("links.toml");
    let secret = crate::redirect::new_secret();
    std::fs::write(
        &file,
        format!(
            "key_lifetime = \"90m\"\nlinks = \"redirect\"\nlink_base = \"https://go.example.com/\"\n\
             link_ttl = \"7d\"\nmint = \"at-click\"\nlink_secret = \"{secret}\"\n"
        ),
    )
    .unwrap();
    let loaded = load(&file).unwrap();
    assert_eq!(
        loaded.key_lifetime,
        Some(std::time::Duration::from_secs(5400))
    );
    assert_eq!(loaded.links, Some(crate::redirect::Links::Redirect));
    assert_eq!(loaded.mint, Some(crate::redirect::Mint::AtClick));
    assert_eq!(
        loaded.link_ttl,
        Some(std::time::Duration::from_secs(7 * 86400))
    );
    let settings = Settings::resolve(&RunArgs {
        input: "leads.csv".into(),
        ..loaded.clone()
    })
    .unwrap();
    assert!(
        matches!(settings.mode, Mode::Unminted),
        "{:?}",
        settings.mode
    );
    assert!(settings.mints_at_click() && settings.connection().is_none());
    assert_eq!(settings.key_lifetime, std::time::Duration::from_secs(5400));
    let (link, _) = settings.give_link("lead", "portal", None, chrono::Utc::now());
    assert!(link.starts_with("https://go.example.com/l/1"), "{link}");

    let concurrency_at = |rate: &str, mint, given| {
        let args = RunArgs {
            input: "leads.csv".into(),
            email: true,
            outbox: Some(dir.path().join("outbox")),
            templates: Some(dir.path().join("templates")),
            from: Some("a@acme.example".parse().unwrap()),
            // At send needs the API, here the built-in sandbox's.
            sandbox: mint == Some(crate::redirect::Mint::AtSend),
            mint,
            email_concurrency: given,
            rate: Some(rate.parse().unwrap()),
            ..loaded.clone()
        };
        Settings::resolve(&args).unwrap().email.unwrap().concurrency
    };
    let concurrency = |mint, given| concurrency_at("25/5s", mint, given);
    // At click the SMTP server alone sets the pace: more conversations.
    assert_eq!(concurrency(Some(crate::redirect::Mint::AtClick), None), 32);
    // At send, a window's calls: the links a window mints at once go out
    // together, and the run's last window does not wait on a queue of them.
    assert_eq!(concurrency(Some(crate::redirect::Mint::AtSend), None), 25);
    // Following --rate, from 8 to 32.
    for (rate, messages) in [("4/5s", 8), ("20/5s", 20), ("100/5s", 32)] {
        let at_send = Some(crate::redirect::Mint::AtSend);
        assert_eq!(concurrency_at(rate, at_send, None), messages, "{rate}");
    }
    assert_eq!(
        concurrency(Some(crate::redirect::Mint::AtClick), Some(4)),
        4
    );

    for (text, said) in [
        ("links = \"sideways\"", "unknown variant"),
        ("link_ttl = \"400d\"", "at most 366d"),
        ("link_base = \"https://go.example.com/?x=1\"", "no query"),
        ("key_lifetime = \"25h\"", "at most 24h"),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = load(&file).unwrap_err();
        assert!(err.0.contains(said), "{text}: {err}");
    }
}
