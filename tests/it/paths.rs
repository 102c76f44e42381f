//! Where a run writes, and how it reads: no output is the input or another
//! output (compared as files, whatever the names), none is written through a
//! symbolic link, the sandbox's scratch state is private and gone however
//! the run ends, and the input is opened and read once, so a pipe or a FIFO
//! is read whole.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    fast_sandbox, lead_ids, leads_csv, leads_with_email, lsq, mode, read_report, run, run_ok,
    run_on_sandbox, sample, stderr, stdout, wait_until, with_email, write, RefusedPort,
};
use lsq_sandbox::Sandbox;

/// `run INPUT` on the sandbox, quiet, in `dir`.
fn command(sandbox: &Sandbox, dir: &Path, input: &Path) -> Command {
    let mut cmd = run_on_sandbox(sandbox, dir, input, &sandbox.portal_url());
    cmd.arg("--quiet");
    cmd
}

/// Every file under `dir` with its bytes, to show that a refused run wrote
/// nothing at all. SQLite's own `-wal` and `-shm` files are left out: a run
/// reads the campaign a retry file belongs to from the state before it
/// checks its outputs, and closing the database may tidy them away.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.to_string_lossy();
            if path.is_dir() {
                todo.push(path);
            } else if !name.ends_with("-wal") && !name.ends_with("-shm") {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

/// A file `name` in `dir` holding `text` with mode 0644, and a symbolic link
/// to it at `link`.
fn victim_behind(dir: &Path, link: &str) -> PathBuf {
    let victim = write(dir, "victim.txt", "not yours to write\n");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(link)).unwrap();
    victim
}

#[track_caller]
fn assert_victim_intact(victim: &Path) {
    assert_eq!(
        std::fs::read_to_string(victim).unwrap(),
        "not yours to write\n",
        "the file behind the link was written"
    );
    assert_eq!(mode(victim), 0o644, "the file behind the link was chmodded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_run_whose_outputs_are_its_own_input_is_refused_and_the_input_kept() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = lead_ids(20_000)
        .iter()
        .enumerate()
        .map(|(i, id)| format!("{id},row {i}"))
        .collect();
    let retry = write(
        dir.path(),
        "leads-retry.csv",
        &format!("LeadId,Note\n{}\n", rows.join("\n")),
    );
    let before = std::fs::read(&retry).unwrap();
    // The first run's report name makes the rows to retry go to the input;
    // the second names the input as the report under another spelling.
    for report in ["leads-report.csv", "./leads-retry.csv"] {
        let mut cmd = command(&sandbox, dir.path(), &retry);
        cmd.args(["--report", report, "--campaign", "leads"]);
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "--report {report}");
        let err = stderr(&out);
        assert!(
            err.contains("leads-retry.csv") && err.contains("input"),
            "{err}"
        );
        assert!(
            std::fs::read(&retry).ok() == Some(before.clone()),
            "--report {report}: the input changed"
        );
        assert_eq!(sandbox.stats().calls, 0, "--report {report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_that_are_the_input_or_one_another_are_refused_before_anything_is_written() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_csv(dir.path(), &lead_ids(30));
    // A campaign database with something in it.
    let mut first = command(&sandbox, dir.path(), &input);
    first.args(["--report", "first.csv", "--state", "st.sqlite"]);
    run_ok(&mut first);
    let calls = sandbox.stats().calls;

    let cases: &[(&[&str], &[&str])] = &[
        (&["--report", "leads.csv"], &["--report leads.csv", "input"]),
        (
            &["--dry-run", "--report", "./leads.csv"],
            &["--report ./leads.csv", "input"],
        ),
        (
            &["--report", "st.sqlite", "--state", "st.sqlite"],
            &["--report st.sqlite", "--state st.sqlite"],
        ),
        (
            &[
                "--dry-run",
                "--report",
                "st.sqlite",
                "--state",
                "./st.sqlite",
            ],
            &["--report st.sqlite", "--state ./st.sqlite"],
        ),
        (
            &["--report", "r.csv", "--summary-json", "./r.csv"],
            &["--report r.csv", "--summary-json ./r.csv"],
        ),
        (
            &["--report", "r.csv", "--summary-json", "r-retry.csv"],
            &["r-retry.csv", "--summary-json r-retry.csv"],
        ),
        (
            &["--summary-json", "leads.csv", "--report", "r.csv"],
            &["--summary-json leads.csv", "input"],
        ),
    ];
    for (args, named) in cases {
        let before = snapshot(dir.path());
        let mut cmd = command(&sandbox, dir.path(), &input);
        if !args.contains(&"--state") {
            cmd.args(["--state", "st.sqlite"]);
        }
        let out = run(cmd.args(*args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        for name in *named {
            assert!(err.contains(name), "{args:?} should name {name:?}: {err}");
        }
        let after = snapshot(dir.path());
        let changed: Vec<_> = after
            .iter()
            .filter(|(path, bytes)| before.get(*path) != Some(bytes))
            .map(|(path, _)| path)
            .chain(before.keys().filter(|path| !after.contains_key(*path)))
            .collect();
        assert!(
            changed.is_empty(),
            "{args:?}: written or changed: {changed:?}"
        );
        assert_eq!(sandbox.stats().calls, calls, "{args:?}: a call was made");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_where_an_output_goes_is_refused_and_the_file_behind_it_kept() {
    let sandbox = fast_sandbox().await;
    let cases: &[(&str, &[&str])] = &[
        ("leads-report.csv", &[]),
        ("leads-plan.csv", &["--dry-run"]),
        ("s.json", &["--summary-json", "s.json"]),
        ("leads-retry.csv", &[]),
        ("leads-invalid.csv", &[]),
    ];
    for (link, args) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = leads_csv(dir.path(), &lead_ids(5));
        let victim = victim_behind(dir.path(), link);
        let out = run(command(&sandbox, dir.path(), &input)
            .args(["--state", "st.sqlite"])
            .args(*args));
        assert_eq!(out.status.code(), Some(2), "{link}");
        let err = stderr(&out);
        assert!(
            err.contains(link) && err.contains("symbolic link"),
            "{link}: {err}"
        );
        assert_victim_intact(&victim);
        assert!(dir.path().join(link).is_symlink(), "{link}");
        assert_eq!(sandbox.stats().calls, 0, "{link}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outbox_file_that_is_a_symlink_is_refused_and_the_file_behind_it_kept() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let input = leads_with_email(dir.path(), 2);
    let review = |report: &str| {
        let mut cmd = command(&sandbox, dir.path(), &input);
        with_email(&mut cmd, "smtp://127.0.0.1:1", &sample("templates")).args([
            "--outbox",
            "outbox",
            "--campaign",
            "invite",
            "--report",
            report,
        ]);
        cmd
    };
    run_ok(&mut review("first.csv"));
    let outbox = dir.path().join("outbox");
    let names: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Links where the next review writes each message, under its final name
    // and under the name it is written under first.
    let victim = write(dir.path(), "victim.txt", "not yours to write\n");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    for name in &names {
        std::fs::remove_file(outbox.join(name)).unwrap();
        std::os::unix::fs::symlink(&victim, outbox.join(name)).unwrap();
        std::os::unix::fs::symlink(&victim, outbox.join(format!(".{name}.partial"))).unwrap();
    }
    let out = run(&mut review("second.csv"));
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("symbolic link"), "{err}");
    assert_victim_intact(&victim);
    for name in &names {
        assert!(outbox.join(name).is_symlink(), "{name}");
    }
}

/// The entries of the scratch `TMPDIR` a run was given.
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_scratch_state_is_private_and_gone_after_sigint_and_after_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let input = leads_with_email(dir.path(), 3);

    // One call every 10 s: the run is still going when it is interrupted.
    let mut child = lsq(dir.path())
        .arg("run")
        .arg(&input)
        .args(["--sandbox", "--rate", "1/10s", "--report", "report.csv"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let report = dir.path().join("report.csv");
    wait_until("the first row", || {
        std::fs::read_to_string(&report).is_ok_and(|r| r.lines().count() >= 2)
    })
    .await;
    let scratch = entries(&tmp);
    let inside: Vec<_> = scratch
        .iter()
        .filter(|p| p.is_dir())
        .flat_map(|p| entries(p))
        .collect();
    let private = scratch.len() == 1
        && scratch[0].is_dir()
        && mode(&scratch[0]) == 0o700
        && inside
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "sqlite"));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(private, "not one private directory: {scratch:?} {inside:?}");
    assert_eq!(status.code(), Some(130));
    assert_eq!(entries(&tmp), Vec::<PathBuf>::new(), "left after Ctrl-C");

    // Aborted before the first call: the SMTP server cannot be reached.
    let refused = RefusedPort::bind();
    let mut cmd = lsq(dir.path());
    cmd.arg("run")
        .arg(&input)
        .args(["--sandbox", "--report", "aborted.csv", "--quiet"])
        .env("TMPDIR", &tmp);
    let out = run(with_email(
        &mut cmd,
        &format!("smtp://{}", refused.addr),
        &sample("templates"),
    ));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(entries(&tmp), Vec::<PathBuf>::new(), "left after an abort");
}

/// Runs `cmd` and kills it if it has not finished within a minute: an
/// input read twice hangs instead of failing.
fn output_within_a_minute(mut cmd: Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the run hung; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run_output(child)
}

fn run_output(child: std::process::Child) -> std::process::Output {
    let out = child.wait_with_output().unwrap();
    eprintln!("--- stderr\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A dry run of `input` planning for the sandbox's first portal, its plan
/// in `dir/plan.csv`.
fn plan(dir: &Path, input: &Path) -> Command {
    let mut cmd = lsq(dir);
    cmd.arg("run")
        .arg(input)
        .args(["--dry-run", "--quiet", "--report", "plan.csv"])
        .args(["--portal-id", lsq_sandbox::DEFAULT_PORTAL_ID]);
    cmd
}

/// The text of a CSV of `n` leads, about 37 bytes a row.
fn csv_of(n: usize) -> String {
    format!("LeadId\n{}\n", lead_ids(n).join("\n"))
}

#[test]
fn a_fifo_input_is_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("leads.fifo");
    let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    let text = csv_of(10_000);
    let writer = {
        let (fifo, text) = (fifo.clone(), text.clone());
        std::thread::spawn(move || {
            // Errors are the run's to report: a reader that closes early
            // ends this write with a broken pipe.
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                let _ = f.write_all(text.as_bytes());
            }
        })
    };
    let out = output_within_a_minute(plan(dir.path(), &fifo));
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("plan.csv"));
    assert_eq!(rows.len(), 10_000);
    assert!(rows.iter().all(|r| r["status"] == "planned"));
}

#[test]
fn piped_stdin_of_more_than_256_kb_loses_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let text = csv_of(20_000);
    assert!(text.len() > 512 * 1024);
    let mut cmd = plan(dir.path(), Path::new("/dev/stdin"));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = run_output(child);
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let rows = read_report(&dir.path().join("plan.csv"));
    assert_eq!(rows.len(), 20_000);
    assert_eq!(rows[0]["row"], "2");
    assert_eq!(rows[19_999]["row"], "20001");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_on_stdout_leaves_its_side_files_in_the_working_directory() {
    let sandbox = fast_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let mut ids = lead_ids(3);
    ids.push("not-a-guid".into());
    let input = leads_csv(dir.path(), &ids);
    let strays = ["/dev/stdout-invalid.csv", "/dev/stdout-retry.csv"].map(Path::new);
    let stray_before: Vec<bool> = strays.iter().map(|p| p.exists()).collect();
    let out = run(
        run_on_sandbox(&sandbox, dir.path(), &input, &sandbox.portal_url())
            .args(["--report", "/dev/stdout", "--state", "st.sqlite"])
            .stdout(Stdio::piped()),
    );
    let made: Vec<&Path> = strays
        .iter()
        .zip(&stray_before)
        .filter(|(p, before)| !**before && p.exists())
        .map(|(p, _)| *p)
        .collect();
    for path in &made {
        let _ = std::fs::remove_file(path);
    }
    assert!(made.is_empty(), "side files beside a device: {made:?}");
    assert_eq!(out.status.code(), Some(5));
    let text = stdout(&out);
    assert!(text.starts_with("row,lead_id,"), "{text}");
    assert_eq!(text.matches(",linked,").count(), 3, "{text}");
    let invalid = std::fs::read_to_string(dir.path().join("leads-invalid.csv")).unwrap();
    assert_eq!(invalid, "LeadId\nnot-a-guid\n");
    assert!(
        text.contains("leads-invalid.csv"),
        "the last line names it: {text}"
    );
}
