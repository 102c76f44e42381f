//! Campaign names: what a run is called in the state file when the operator
//! does not name it.

use std::path::Path;

/// The campaign a run gets when `--campaign` is not given.
///
/// - A retry file a run wrote resumes the campaign it was written for, as
///   the state file at `state` records it.
/// - Any other input gets its file name without extension and a short
///   fingerprint of its full real path: `/x/march/leads.csv` and
///   `/x/april/leads.csv` are two campaigns, and re-running the same file
///   resumes the same one.
///
/// A retry file whose path is not UTF-8 is not looked up: see
/// `Job::register_retry_file`, which does not record one.
pub(crate) fn default_campaign(input: &Path, state: &Path) -> String {
    let real = std::fs::canonicalize(input).unwrap_or_else(|_| input.to_owned());
    // The state file knows a retry file by its path as text: a path that is
    // not UTF-8 reads there like others of its shape, so it is not asked.
    if real.to_str().is_some() {
        if let Some(campaign) = crate::state::retry_file_campaign(state, input) {
            return campaign;
        }
    }
    // The stem is only for people to read: the fingerprint of the path's
    // bytes keeps apart names that read alike once their bad bytes are
    // replaced.
    let stem = match input.file_stem() {
        Some(stem) if !stem.is_empty() => stem.to_string_lossy().into_owned(),
        _ => "default".to_owned(),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, real.as_os_str().as_encoded_bytes());
    format!("{stem}-{}", crate::tenant::hex(&digest.as_ref()[..4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_file_stem_and_a_fingerprint_of_the_full_path() {
        let none = Path::new("/nonexistent/state.sqlite");
        let march = default_campaign(Path::new("/x/march/leads.csv"), none);
        let april = default_campaign(Path::new("/x/april/leads.csv"), none);
        assert!(march.starts_with("leads-"), "{march}");
        assert_eq!(march.len(), "leads-".len() + 8);
        assert_ne!(march, april);
        assert_eq!(
            march,
            default_campaign(Path::new("/x/march/leads.csv"), none)
        );
        assert!(
            default_campaign(Path::new("march.invites.csv"), none).starts_with("march.invites-")
        );
        assert!(default_campaign(Path::new("/"), none).starts_with("default-"));
    }
}
