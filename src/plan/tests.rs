//! Unit tests of the plan: counts, estimates, warnings and rendering.

use super::*;
use crate::input::Invalid;
use chrono::{FixedOffset, TimeZone};

const R25: Rate = Rate::DEFAULT;

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

fn record(row: u64, status: Status, error: Option<RowError>) -> Record {
    Record {
        error,
        ..Record::new(
            row,
            format!("3f2b8c1e-9d4a-4e7b-a6c5-{row:012x}"),
            "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31".into(),
            status,
        )
    }
}

fn not_a_guid(value: &str) -> Option<RowError> {
    Some(RowError::Invalid(Invalid::NotGuid {
        column: "LeadId".into(),
        value: value.into(),
    }))
}

/// Ten rows, one of each situation a dry run meets, plus a real run's
/// outcome to show it counts as planned work.
fn fixture() -> Plan {
    let rows = [
        record(2, Status::Planned, None),
        record(3, Status::Invalid, not_a_guid("LD-20931")),
        record(4, Status::Planned, None),
        record(
            5,
            Status::Duplicate,
            Some(RowError::Duplicate { first_line: 2 }),
        ),
        record(
            6,
            Status::Invalid,
            Some(RowError::Invalid(Invalid::Empty {
                column: "LeadId".into(),
            })),
        ),
        record(
            7,
            Status::Skipped,
            Some(RowError::AlreadySent {
                campaign: "c".into(),
                sent_at: Utc.with_ymd_and_hms(2026, 6, 1, 10, 0, 0).unwrap(),
            }),
        ),
        record(
            8,
            Status::InDoubt,
            Some(RowError::InDoubt("a run stopped".into())),
        ),
        record(9, Status::Invalid, not_a_guid("{abc}")),
        record(10, Status::Planned, None),
        record(11, Status::Sent, None),
    ];
    let mut plan = Plan::new();
    for r in &rows {
        plan.record(r);
    }
    plan
}

fn at(offset_secs: i32, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<FixedOffset> {
    FixedOffset::east_opt(offset_secs)
        .unwrap()
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
}

fn hm(h: u32, m: u32) -> Option<NaiveTime> {
    NaiveTime::from_hms_opt(h, m, 0)
}

/// A plan of `planned` fresh leads with the tenant key given, so calls
/// equal leads.
fn planned(n: u64) -> Plan {
    Plan {
        rows_read: n,
        valid: n,
        planned: n,
        ..Plan::new()
    }
}

fn given(rate: Rate) -> PlanSettings {
    PlanSettings {
        rate,
        tenant_key_given: true,
        ..PlanSettings::default()
    }
}

#[test]
fn window_bound_at_the_default_budget() {
    let secs = |calls| window_bound(calls, R25).as_secs_f64();
    assert_eq!(secs(0), 0.0);
    assert_eq!(secs(1), 0.0);
    assert_eq!(secs(25), 0.0);
    assert_eq!(secs(26), 5.0);
    assert_eq!(secs(50), 5.0);
    assert_eq!(secs(51), 10.0);
    assert_eq!(secs(300), 55.0);
}

#[test]
fn window_bound_at_the_smallest_plan_and_sub_second_windows() {
    let two = rate("2/5s");
    let secs: Vec<u64> = (0..=5).map(|c| window_bound(c, two).as_secs()).collect();
    assert_eq!(secs, [0, 0, 0, 5, 5, 10]);
    assert_eq!(window_bound(21, rate("10/500ms")), Duration::from_secs(1));
    assert_eq!(
        window_bound(11, rate("10/500ms")),
        Duration::from_millis(500)
    );
}

#[test]
fn window_bound_saturates_instead_of_overflowing() {
    let slow = Rate {
        calls: 1,
        window: Duration::from_secs(u64::MAX / 2),
    };
    assert_eq!(window_bound(u64::MAX, slow).as_secs(), u64::MAX);
}

#[test]
fn fixture_counts_match_a_hand_count() {
    let mut plan = fixture();
    plan.finish_in(
        &PlanSettings {
            emails: true,
            ..PlanSettings::default()
        },
        at(0, 2026, 6, 15, 12, 0),
    );
    assert_eq!(plan.rows_read, 10);
    assert_eq!(plan.valid, 6);
    assert_eq!(plan.invalid, 3);
    assert_eq!(plan.duplicates, 1);
    assert_eq!(plan.already_done, 1);
    assert_eq!(plan.in_doubt, 1);
    assert_eq!(plan.planned, 4);
    assert_eq!(plan.valid, plan.planned + plan.already_done + plan.in_doubt);
    assert_eq!(plan.rows_read, plan.valid + plan.invalid + plan.duplicates);
    let reasons: Vec<_> = plan
        .invalid_by_reason
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        reasons,
        [("LeadId is empty", 1), ("LeadId is not a GUID", 2)]
    );
    // Four keys and the tenant key, which is not given.
    assert_eq!(plan.api_calls_needed, 5);
    assert_eq!(plan.emails_needed, 4);
    assert_eq!(plan.estimated_secs, 0.0);
    assert_eq!(plan.rate, "25/5s");
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(plan.warnings[0].starts_with("3 rows are invalid"));
    assert!(plan.warnings[1].contains("without --resend-in-doubt"));
}

#[test]
fn a_given_tenant_key_saves_its_call_and_no_emails_means_none_needed() {
    let mut plan = fixture();
    plan.finish_in(&given(R25), at(0, 2026, 6, 15, 12, 0));
    assert_eq!(plan.api_calls_needed, 4);
    assert_eq!(plan.emails_needed, 0);
}

#[test]
fn nothing_planned_needs_no_calls_and_makes_no_keys() {
    let mut plan = Plan::new();
    plan.record(&record(2, Status::Skipped, None));
    plan.finish_in(&PlanSettings::default(), at(0, 2026, 6, 15, 12, 0));
    assert_eq!(plan.api_calls_needed, 0);
    assert_eq!(plan.first_key_expires, None);
    assert_eq!(plan.last_key_expires, None);
    assert_eq!(plan.finish_by, None);
    assert!(plan.warnings.is_empty());
}

#[test]
fn key_expiries_follow_the_first_and_last_call() {
    let mut plan = planned(300);
    let now = at(3600, 2026, 6, 15, 12, 0);
    plan.finish_in(&given(R25), now);
    let start = now.with_timezone(&Utc);
    assert_eq!(plan.estimated_secs, 55.0);
    assert_eq!(plan.first_key_expires, Some(start + TimeDelta::hours(4)));
    assert_eq!(
        plan.last_key_expires,
        Some(start + TimeDelta::seconds(55) + TimeDelta::hours(4))
    );
    assert_eq!(plan.finish_by, Some(start + TimeDelta::seconds(55)));
}

#[test]
fn warns_when_the_run_outlasts_the_key_lifetime() {
    // 72,001 calls take exactly 2,880 windows of 5 s: 4 h, not more.
    let mut plan = planned(72_001);
    plan.finish_in(&given(R25), at(0, 2026, 6, 15, 12, 0));
    assert_eq!(plan.estimated_secs, 14_400.0);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

    let mut plan = planned(72_026);
    plan.finish_in(&given(R25), at(0, 2026, 6, 15, 12, 0));
    assert_eq!(plan.estimated_secs, 14_405.0);
    assert_eq!(
        plan.warnings,
        [
            "the run would outlast the 4 h key lifetime: the first links expire before the \
          last are made; split the CSV or raise --rate if your plan allows"
        ]
    );
}

#[test]
fn warns_when_the_run_finishes_after_send_before() {
    // 1,000 calls at 25/5s: 39 windows, 3m 15s, so 17:00 finishes at 17:03.
    let now = at(19_800, 2026, 6, 15, 17, 0);
    let run = |before| {
        let mut plan = planned(1000);
        plan.finish_in(
            &PlanSettings {
                send_before: before,
                ..given(R25)
            },
            now,
        );
        plan.warnings
    };
    assert_eq!(
        run(hm(17, 2)),
        ["the run would finish at 17:03, after --send-before 17:02"]
    );
    assert!(run(hm(17, 4)).is_empty());
    // 09:00 has passed today: tomorrow's 09:00 is the deadline.
    assert!(run(hm(9, 0)).is_empty());
    assert!(run(None).is_empty());
}

#[test]
fn send_before_just_after_midnight_is_tomorrows() {
    let mut plan = planned(1000);
    plan.finish_in(
        &PlanSettings {
            send_before: hm(0, 1),
            ..given(R25)
        },
        at(0, 2026, 6, 15, 23, 59),
    );
    assert_eq!(
        plan.warnings,
        ["the run would finish at 00:02, after --send-before 00:01"]
    );
}

#[test]
fn finish_in_local_time_starts_the_keys_now() {
    let now = Local::now();
    let mut plan = planned(1);
    plan.finish(&given(R25), now.with_timezone(&Utc));
    let start = now.with_timezone(&Utc);
    assert_eq!(plan.first_key_expires, Some(start + TimeDelta::hours(4)));
    assert_eq!(plan.last_key_expires, plan.first_key_expires);
}

#[test]
fn serialises_times_as_rfc3339_utc() {
    let mut plan = planned(26);
    plan.finish_in(&given(R25), at(7200, 2026, 6, 15, 12, 0));
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["first_key_expires"], "2026-06-15T14:00:00Z");
    assert_eq!(json["last_key_expires"], "2026-06-15T14:00:05Z");
    assert_eq!(json["finish_by"], "2026-06-15T10:00:05Z");
    assert_eq!(json["api_calls_needed"], 26);
    assert_eq!(json["estimated_secs"], 5.0);
    assert_eq!(json["rate"], "25/5s");
    assert_eq!(json["invalid_by_reason"], serde_json::json!({}));
    assert!(serde_json::to_value(Plan::new()).unwrap()["finish_by"].is_null());
}

#[test]
fn render_aligns_figures_and_lists_reasons_and_warnings() {
    let mut plan = fixture();
    plan.rows_read += 999_990;
    plan.planned += 995;
    plan.valid += 995;
    plan.finish_in(&PlanSettings::default(), at(0, 2026, 6, 15, 12, 0));
    let text = plan.render();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "rows read           1,000,000");
    assert_eq!(
        lines[2],
        "invalid                     3 (LeadId is not a GUID: 2, LeadId is empty: 1)"
    );
    assert!(lines.contains(&"API calls needed        1,000"), "{text}");
    assert!(
        lines.contains(&"estimated duration  3m 15s at 25/5s"),
        "{text}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("first key expires   2026-06-15 ")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with("last key expires    2026-06-15 ")));
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{text}");
}

#[test]
fn durations_and_counts_read_naturally() {
    assert_eq!(human_duration(0.0), "0s");
    assert_eq!(human_duration(0.5), "0.5s");
    assert_eq!(human_duration(55.0), "55s");
    assert_eq!(human_duration(195.0), "3m 15s");
    assert_eq!(human_duration(14_405.0), "4h 0m 5s");
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(1000), "1,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
}

#[test]
fn an_email_plan_warns_when_its_links_would_expire_in_the_recipients_night() {
    let daytime = crate::daytime::Daytime {
        zone: Some(chrono_tz::Asia::Kolkata),
        ..Default::default()
    };
    let run = |now, emails| {
        let mut plan = planned(100);
        plan.finish_in(
            &PlanSettings {
                emails,
                daytime,
                ..given(R25)
            },
            now,
        );
        plan.warnings
    };
    // 02:00 in Kolkata: the links die at 06:00 there.
    let night = at(19_800, 2026, 6, 15, 2, 0);
    let warnings = run(night, true);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("at 2026-06-15 06:00 +05:30 in Asia/Kolkata"),
        "{warnings:?}"
    );
    assert!(run(night, false).is_empty(), "no email, no warning");
    // 09:00 there: good until 13:00.
    assert!(run(at(19_800, 2026, 6, 15, 9, 0), true).is_empty());
}

#[test]
fn links_minted_at_click_need_no_call_and_have_no_key_to_expire() {
    let mut plan = Plan {
        planned: 100,
        valid: 100,
        rows_read: 100,
        ..Plan::default()
    };
    let settings = PlanSettings {
        links: crate::redirect::LinkMode::AtClick,
        ..PlanSettings::default()
    };
    plan.finish_in(&settings, at(0, 2026, 6, 15, 12, 0));
    assert_eq!(plan.api_calls_needed, 0);
    assert_eq!(plan.first_key_expires, None);
    let settings = PlanSettings {
        links: crate::redirect::LinkMode::AtSend,
        ..PlanSettings::default()
    };
    plan.finish_in(&settings, at(0, 2026, 6, 15, 12, 0));
    assert_eq!(
        plan.api_calls_needed, 101,
        "at-send mints, and a tenant key"
    );
    assert!(plan.first_key_expires.is_some());
}
