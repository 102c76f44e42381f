//! Campaign names: what a run is called in the state file when the operator
//! does not name it.

use std::path::Path;

/// The campaign name a run gets when `--campaign` is not given: the input
/// file's name without its extension, so `/x/leads.csv` is `leads` and
/// re-running the same file resumes the same campaign.
pub fn default_campaign(input: &Path) -> String {
    match input.file_stem() {
        Some(stem) if !stem.is_empty() => stem.to_string_lossy().into_owned(),
        _ => "default".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_campaign_is_the_file_stem() {
        assert_eq!(default_campaign(Path::new("/x/leads.csv")), "leads");
        assert_eq!(
            default_campaign(Path::new("march.invites.csv")),
            "march.invites"
        );
        assert_eq!(default_campaign(Path::new("/")), "default");
    }
}
