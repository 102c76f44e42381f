//! GUIDs as the service reads them: the forms .NET's `Guid.Parse` takes
//! for a LeadId or PortalId (hyphenated, 32 digits, or hyphenated in braces
//! or parentheses; any case; spaces around), compared in one spelling.

/// The lower-case hyphenated form of `text`, or `None` when the service
/// would refuse it as a GUID.
pub(crate) fn parse(text: &str) -> Option<String> {
    let text = text.trim();
    let enclosed = [('{', '}'), ('(', ')')]
        .into_iter()
        .find_map(|(open, close)| text.strip_prefix(open)?.strip_suffix(close));
    let shaped = match enclosed {
        Some(inner) => inner.len() == 36,
        None => matches!(text.len(), 32 | 36),
    };
    let uuid = uuid::Uuid::try_parse(enclosed.unwrap_or(text)).ok();
    uuid.filter(|_| shaped).map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::parse;

    const ID: &str = "9b2c4f6e-1d3a-4c5b-8e7f-a0b1c2d3e4f5";

    #[test]
    fn takes_the_forms_the_service_takes() {
        let upper = ID.to_uppercase();
        for text in [
            ID.to_owned(),
            format!(" {upper}\t"),
            ID.replace('-', ""),
            format!("{{{ID}}}"),
            format!("({upper})"),
        ] {
            assert_eq!(parse(&text).as_deref(), Some(ID), "{text:?}");
        }
    }

    #[test]
    fn refuses_what_the_service_refuses() {
        let simple = ID.replace('-', "");
        for text in [
            "",
            "portal",
            &ID[1..],
            &format!("{{{simple}}}"),
            &format!("{{{ID})"),
            &format!("urn:uuid:{ID}"),
            &ID.replace('9', "g"),
            &ID.replacen('-', "", 1),
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
