//! [`FileBudget`]: a tenant's window log in a small file beside the campaign
//! state, shared by every process on the machine.
//!
//! Each take, release or pause opens the file (mode 0600, never through a
//! symbolic link), takes an exclusive `flock`, reads the log, changes it and
//! writes it back: a critical section of a few small reads and writes.
//! Times are wall-clock milliseconds, the one clock every process on the
//! machine shares; each process's monotonic clock means nothing to another.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::{log_name, ms, Held};
use crate::limiter::{
    BudgetError, LearntShare, Memory, SharedBudget, Taken, ACCEPTED_FOR, MAX_PAUSE,
    SHARE_REMEMBERED,
};
use crate::tenant::Tenant;

/// Milliseconds since 1970 on some clock.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock, in milliseconds since 1970.
fn wall_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The budget file of one tenant.
pub(crate) struct FileBudget {
    file: LogFile,
    held: Held,
}

impl std::fmt::Debug for FileBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBudget({})", self.file.path.display())
    }
}

impl FileBudget {
    /// The budget file of `tenant` in `dir` (created, 0700, when missing),
    /// opened once now so that a file that cannot be used stops the process
    /// before its first call. `window` is the budget's: an implausible
    /// pause the file holds is cut to one.
    pub(crate) fn open(
        dir: &Path,
        tenant: &Tenant,
        window: Duration,
    ) -> Result<FileBudget, BudgetError> {
        let fail = |path: &Path, e: io::Error| BudgetError {
            store: path.display().to_string(),
            reason: e.to_string(),
        };
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(dir, e))?;
        }
        let dir = fs::canonicalize(dir).map_err(|e| fail(dir, e))?;
        let path = dir.join(format!("{}.log", log_name(tenant)));
        FileBudget::with_clock(path, Arc::new(wall_clock), window)
    }

    fn with_clock(
        path: PathBuf,
        clock: Clock,
        window: Duration,
    ) -> Result<FileBudget, BudgetError> {
        let file = LogFile {
            path: Arc::new(path),
            clock,
            window: ms(window),
            warned_garbage: Arc::new(AtomicBool::new(false)),
        };
        file.change(|_, _| ()).map_err(|e| file.error(e))?;
        // Narrowed when an older file is wider: other users have no business
        // knowing when this tenant's calls go.
        let mode = fs::metadata(&*file.path)
            .map_err(|e| file.error(e))?
            .permissions();
        if mode.mode() & 0o777 != 0o600 {
            fs::set_permissions(&*file.path, fs::Permissions::from_mode(0o600))
                .map_err(|e| file.error(e))?;
        }
        Ok(FileBudget {
            file,
            held: Held::default(),
        })
    }

    /// Runs `change` on the log off the runtime's threads: the lock may wait
    /// for another process's critical section.
    fn change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Log, u64) -> T + Send + 'static,
    ) -> BoxFuture<'_, Result<T, BudgetError>> {
        let file = self.file.clone();
        Box::pin(async move {
            let changed = tokio::task::spawn_blocking({
                let file = file.clone();
                move || file.change(change)
            })
            .await;
            match changed {
                Ok(result) => result.map_err(|e| file.error(e)),
                Err(e) => Err(file.error(io::Error::other(e))),
            }
        })
    }
}

impl SharedBudget for FileBudget {
    fn describe(&self) -> String {
        format!("the budget file {}", self.file.path.display())
    }

    fn take(
        &self,
        allowed: u32,
        window: Duration,
        hold: Duration,
    ) -> BoxFuture<'_, Result<Taken, BudgetError>> {
        let token = rand::random::<u64>();
        let life = ms(hold + window);
        Box::pin(async move {
            let (taken, capped) = self
                .change(move |log, now| log.take(now, allowed, life, token))
                .await?;
            if capped > 0 {
                tracing::warn!(
                    "{}: {}",
                    self.describe(),
                    super::implausible_entries(capped, Duration::from_millis(life))
                );
            }
            if let Taken::Slot(token) = taken {
                self.held.add(token, window);
            }
            Ok(taken)
        })
    }

    fn release(&self, token: u64, blocked_for: Duration) -> BoxFuture<'_, Result<(), BudgetError>> {
        let blocked = ms(blocked_for);
        Box::pin(async move {
            self.change(move |log, now| log.release(now, token, blocked))
                .await?;
            self.held.remove(token);
            Ok(())
        })
    }

    fn pause(&self, wait: Duration) -> BoxFuture<'_, Result<(), BudgetError>> {
        let wait = ms(wait);
        self.change(move |log, now| log.pause(now, wait))
    }

    fn recall(&self) -> BoxFuture<'_, Result<Memory, BudgetError>> {
        self.change(|log, now| log.recall(now))
    }

    fn remember_share(
        &self,
        allowed: u32,
        failed_probes: u32,
    ) -> BoxFuture<'_, Result<(), BudgetError>> {
        self.change(move |log, now| log.share = Some((allowed, failed_probes, now)))
    }

    fn remember_accepted(&self, mark: String) -> BoxFuture<'_, Result<(), BudgetError>> {
        self.change(move |log, now| log.accepted = Some((mark, now)))
    }
}

impl Drop for FileBudget {
    fn drop(&mut self) {
        let held = self.held.drain();
        if !held.is_empty() {
            // Best effort: an entry left behind expires by itself.
            let _ = self.file.change(|log, now| {
                for (token, window) in held {
                    log.release(now, token, ms(window) + 1);
                }
            });
        }
    }
}

/// The file itself, the clock its times are read on, and the budget's
/// window (ms).
#[derive(Clone)]
struct LogFile {
    path: Arc<PathBuf>,
    clock: Clock,
    window: u64,
    /// Lines that did not read were said already: once a run is enough.
    warned_garbage: Arc<AtomicBool>,
}

impl LogFile {
    /// Reads the log under an exclusive lock, lets `change` change it at the
    /// clock's now, and writes it back when it changed.
    fn change<T>(&self, change: impl FnOnce(&mut Log, u64) -> T) -> io::Result<T> {
        let mut file = crate::paths::open_private(&self.path)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("it is not a regular file"));
        }
        lock(&file)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (before, garbage) = Log::parse(&String::from_utf8_lossy(&bytes));
        if !garbage.is_empty() && !self.warned_garbage.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the budget file {}: {} not read as budget lines (\"TOKEN EXPIRES\", \"pause \
                 UNTIL\", \"share CALLS FAILED_PROBES AT\", \"accepted MARK AT\") and dropped; \
                 the run goes on. A write cut short by a crash, or an edit, leaves such \
                 lines: nothing needs doing",
                self.path.display(),
                lines(&garbage)
            );
        }
        let mut log = before.clone();
        let now = (self.clock)();
        for why in log.cap(now, self.window) {
            tracing::warn!("the budget file {}: {why}", self.path.display());
        }
        let result = change(&mut log, now);
        if log != before || bytes.is_empty() || !garbage.is_empty() {
            let text = log.render();
            file.write_all_at(text.as_bytes(), 0)?;
            file.set_len(text.len() as u64)?;
        }
        // Closing the file lets the lock go.
        Ok(result)
    }

    fn error(&self, e: io::Error) -> BudgetError {
        BudgetError {
            store: self.path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// Takes an exclusive `flock` on `file`, waiting for it.
fn lock(file: &File) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What the first line of the file says to a person who opens it.
const HEADER: &str = "# lsq-dispatch: the API calls of one tenant, one \"TOKEN EXPIRES\" \
line each, \"pause UNTIL\", \"share CALLS FAILED_PROBES AT\" (learnt from 429s) and \
\"accepted MARK AT\" (credentials the API accepted); times in ms since 1970 (UTC)";

/// The window log: live entries and the pause, in wall-clock milliseconds,
/// and what later runs learn from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Log {
    paused_until: u64,
    /// `(token, expires at)`.
    entries: Vec<(u64, u64)>,
    /// `(calls a window, probes in a row that drew a 429, learnt at)`.
    share: Option<(u32, u32, u64)>,
    /// `(mark of the credentials, accepted at)`.
    accepted: Option<(String, u64)>,
}

impl Log {
    /// Reads the file's text, and gives the numbers (from 1) of the lines
    /// that do not read. Such a line (the tail of a write cut short by a
    /// crash, an edit) is dropped: the worst it can cost is one call's
    /// slot, and a 429 then pauses everyone.
    fn parse(text: &str) -> (Log, Vec<usize>) {
        let mut log = Log::default();
        let mut garbage = Vec::new();
        for (at, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |word: &str| word.parse::<u64>().ok();
            let read = match words.as_slice() {
                [] => true,
                [first, ..] if first.starts_with('#') => true,
                ["pause", until] => number(until)
                    .map(|until| log.paused_until = log.paused_until.max(until))
                    .is_some(),
                ["share", allowed, probes, at] => {
                    match (allowed.parse(), probes.parse(), number(at)) {
                        (Ok(allowed), Ok(probes), Some(at)) => {
                            log.share = Some((allowed, probes, at));
                            true
                        }
                        _ => false,
                    }
                }
                ["accepted", mark, at] => number(at)
                    .map(|at| log.accepted = Some(((*mark).to_owned(), at)))
                    .is_some(),
                [token, expires] => match (number(token), number(expires)) {
                    (Some(token), Some(expires)) => {
                        log.entries.push((token, expires));
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if !read {
                garbage.push(at + 1);
            }
        }
        (log, garbage)
    }

    fn render(&self) -> String {
        let mut text = format!("{HEADER}\n");
        if self.paused_until > 0 {
            text.push_str(&format!("pause {}\n", self.paused_until));
        }
        if let Some((allowed, probes, at)) = self.share {
            text.push_str(&format!("share {allowed} {probes} {at}\n"));
        }
        if let Some((mark, at)) = &self.accepted {
            text.push_str(&format!("accepted {mark} {at}\n"));
        }
        for (token, expires) in &self.entries {
            text.push_str(&format!("{token} {expires}\n"));
        }
        text
    }

    /// Caps the stored times against the clock, so that a clock set back or
    /// a file from a machine whose clock runs ahead never blocks a run: a
    /// pause longer than any run stores ([`MAX_PAUSE`]) is implausible and
    /// cut to one `window` (ms) from now, a share or an acceptance dated in
    /// the future dates from now. (Slots are capped as they are taken, see
    /// [`Log::expire`].) Says why for each thing it capped.
    fn cap(&mut self, now: u64, window: u64) -> Vec<String> {
        let mut why = Vec::new();
        if self.paused_until > now.saturating_add(ms(MAX_PAUSE)) {
            why.push(super::implausible_pause(
                &format!(
                    "it holds a pause {}s ahead of this machine's clock",
                    (self.paused_until - now) / 1000
                ),
                Duration::from_millis(window),
            ));
            self.paused_until = now.saturating_add(window);
        }
        let mut ahead = |at: &mut u64, what: &str| {
            if *at > now {
                why.push(format!(
                    "its {what} is dated {}s ahead of this machine's clock; taken as learnt now",
                    (*at - now) / 1000
                ));
                *at = now;
            }
        };
        if let Some((_, _, at)) = &mut self.share {
            ahead(at, "learnt share");
        }
        if let Some((_, at)) = &mut self.accepted {
            ahead(at, "last acceptance");
        }
        why
    }

    /// What later runs learn from, as ages at `now`; what is too old to
    /// matter is forgotten.
    fn recall(&mut self, now: u64) -> Memory {
        let age = |at: u64| Duration::from_millis(now.saturating_sub(at));
        if self
            .share
            .is_some_and(|(_, _, at)| age(at) >= SHARE_REMEMBERED)
        {
            self.share = None;
        }
        if self
            .accepted
            .as_ref()
            .is_some_and(|(_, at)| age(*at) >= ACCEPTED_FOR)
        {
            self.accepted = None;
        }
        Memory {
            share: self.share.map(|(allowed, failed_probes, at)| LearntShare {
                allowed,
                failed_probes,
                age: age(at),
            }),
            accepted: self
                .accepted
                .as_ref()
                .map(|(mark, at)| (mark.clone(), age(*at))),
        }
    }

    /// Forgets what expired by `now`. No entry outlives `now + longest`, so
    /// a wall clock set back cannot block the budget longer than that.
    /// Gives how many entries were implausible: dated more than the longest
    /// pause beyond that (no run writes one; a run with a longer timeout
    /// writes one a little beyond).
    fn expire(&mut self, now: u64, longest: u64) -> usize {
        self.entries.retain(|(_, expires)| *expires > now);
        let cap = now.saturating_add(longest);
        let implausible = self
            .entries
            .iter()
            .filter(|(_, expires)| *expires > cap.saturating_add(ms(MAX_PAUSE)))
            .count();
        for (_, expires) in &mut self.entries {
            *expires = (*expires).min(cap);
        }
        if self.paused_until <= now {
            self.paused_until = 0;
        }
        implausible
    }

    /// A slot for `token` lasting `life` when fewer than `allowed` are live
    /// and no pause holds, else how long until one may be; with the number
    /// of implausible entries capped (see [`Log::expire`]).
    fn take(&mut self, now: u64, allowed: u32, life: u64, token: u64) -> (Taken, usize) {
        let capped = self.expire(now, life);
        if self.paused_until > now {
            let left = Duration::from_millis(self.paused_until - now);
            return (Taken::Paused(left), capped);
        }
        if self.entries.len() < allowed as usize {
            self.entries.push((token, now.saturating_add(life)));
            return (Taken::Slot(token), capped);
        }
        let first = self.entries.iter().map(|(_, e)| *e).min().unwrap_or(now);
        let wait = Duration::from_millis(first.saturating_sub(now).max(1));
        (Taken::Wait(wait), capped)
    }

    /// The call holding `token` completed: its slot stays blocked for
    /// `blocked` from `now` (an entry lost meanwhile is put back).
    fn release(&mut self, now: u64, token: u64, blocked: u64) {
        let expires = now.saturating_add(blocked);
        match self.entries.iter_mut().find(|(t, _)| *t == token) {
            Some(entry) => entry.1 = expires,
            None => self.entries.push((token, expires)),
        }
    }

    /// Every process holds its calls for `wait` from `now`.
    fn pause(&mut self, now: u64, wait: u64) {
        self.paused_until = self.paused_until.max(now.saturating_add(wait));
    }
}

/// "line 2", "lines 2 and 5", "lines 2, 3 and 6", "lines 2, 3, … and 40
/// more": the lines a warning names.
fn lines(numbers: &[usize]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<String> = numbers.iter().take(SHOWN).map(usize::to_string).collect();
    let more = numbers.len().saturating_sub(SHOWN);
    match (shown.as_slice(), more) {
        ([one], _) => format!("line {one} was"),
        (_, 0) => {
            let (last, rest) = shown.split_last().expect("two or more");
            format!("lines {} and {last} were", rest.join(", "))
        }
        _ => format!("lines {} and {more} more were", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests;
