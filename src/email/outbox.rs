//! The outbox: a folder that receives one `.eml` file per message, for a
//! person to review. Each file is written whole and fsynced on tokio's
//! blocking pool, so a slow disk never holds an async worker.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lettre::Message;
use rand::Rng as _;

/// Creates the folder and checks it is writable now, before any API call.
pub(super) fn open(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the outbox folder {}", dir.display()))?;
    // A new file of a random name, removed when dropped: nothing that
    // was in the folder is touched.
    tempfile::Builder::new()
        .prefix(".lsq-dispatch-write-check")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write to the outbox folder {}", dir.display()))?;
    Ok(dir.to_owned())
}

/// Writes `message` to `dir` as `<message id>.eml` (mode 0600: the files
/// hold login links), and returns once it is on disk.
pub(super) async fn write(dir: &Path, message: &Message) -> anyhow::Result<()> {
    let path = dir.join(format!("{}.eml", file_stem(message)));
    let bytes = message.formatted();
    tokio::task::spawn_blocking(move || {
        // Written under a new name and renamed, so a crash never leaves a
        // half-written message that looks complete, and a link where the
        // message goes is refused rather than written through.
        crate::paths::write_whole(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))
    })
    .await
    .unwrap_or_else(|e| match e.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(e) => Err(anyhow::Error::new(e).context("the run shut down before the write began")),
    })
}

/// The message's Message-ID made safe as a file name, or a random name for a
/// message without one.
fn file_stem(message: &Message) -> String {
    let id = message
        .headers()
        .get_raw("Message-ID")
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|id| !id.is_empty());
    match id {
        Some(id) => id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@') {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        None => format!("message-{:016x}", rand::rng().random::<u64>()),
    }
}
