//! Portal login links: validates the portal page URL and appends a lead's auth
//! key (and, for newer portals, its lead and portal ids) so the key reaches the
//! portal byte for byte.
//!
//! Keys are base64-like: a bare `+` would be read back as a space and `=` or `&`
//! would split the query, so every appended value is percent-encoded with
//! everything but the RFC 3986 unreserved characters escaped.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

/// Everything except `A-Z a-z 0-9 - . _ ~`: the only characters that mean the
/// same to every query decoder, form-urlencoded ones included.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The login link for one lead: `portal_url` with `authKey=<key>` appended, or
/// `leadId=…&portalId=…&authKey=…` when `ids` (lead, portal) are given.
///
/// The page's path, its existing query (left exactly as written) and any
/// `#fragment` are kept; the new pairs go after the existing query.
pub(crate) fn login_link(portal_url: &Url, auth_key: &str, ids: Option<(&str, &str)>) -> Url {
    let mut query = portal_url.query().unwrap_or("").to_owned();
    let mut push = |name: &str, value: &str| {
        if !query.is_empty() && !query.ends_with('&') {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        query.extend(utf8_percent_encode(value, QUERY_VALUE));
    };
    if let Some((lead, portal)) = ids {
        push("leadId", lead);
        push("portalId", portal);
    }
    push("authKey", auth_key);
    let mut link = portal_url.clone();
    // The string holds only already-encoded text, so url leaves it untouched.
    link.set_query(Some(&query));
    link
}

/// Parses the portal page URL (`--portal-url`), which must be `http` or `https`
/// with a host. The error says what is wrong and how to write it.
pub(crate) fn parse_portal_url(s: &str) -> Result<Url, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(
            "the portal URL is empty; set --portal-url or LSQ_PORTAL_URL to the portal's \
             login page, e.g. https://portal.example.com/login"
                .to_owned(),
        );
    }
    if let Some(meant) = mistyped_scheme(s) {
        return Err(format!(
            "the portal URL {s:?} is not a URL: its scheme needs \"://\"; write it as {meant}"
        ));
    }
    let url = match Url::parse(s) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            return Err(format!(
                "the portal URL {s:?} has no scheme; write it in full, e.g. https://{s}"
            ))
        }
        Err(e) => return Err(format!("the portal URL {s:?} is not a valid URL: {e}")),
    };
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!(
            "the portal URL {s:?} must start with https:// (or http:// to this machine), not {}:",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("the portal URL {s:?} has no host"));
    }
    if url.scheme() == "http" && !is_loopback(host) {
        let mut secure = url.clone();
        let _ = secure.set_scheme("https");
        return Err(format!(
            "the portal URL {s:?} is plain http: every lead's login key would cross the \
             network unencrypted (plain http is only allowed to this machine: localhost, \
             127.0.0.1, ::1); use {secure}"
        ));
    }
    // Every lead receives the link, so credentials in it would go to all of
    // them; for the same reason the message does not repeat them.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the portal URL contains a user name or password; remove them, \
             the link is sent to every lead"
                .to_owned(),
        );
    }
    if let Some(name) = login_parameter(&url) {
        return Err(format!(
            "the portal URL's query already holds {name:?}, which every login link \
             adds itself; remove it from the URL (a portal that reads the first \
             value would log every lead in with the one in the URL)"
        ));
    }
    Ok(url)
}

/// For a URL whose scheme lacks its colon or has the wrong number of
/// slashes (`https//x`, `http:/x`, `https:x`, `https:///x`), the URL it was
/// meant to be. A URL parser reads some of these as a host name (`https`)
/// and others as the right URL, so they are caught by hand.
pub(crate) fn mistyped_scheme(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let scheme = ["https", "http"]
        .into_iter()
        .find(|p| lower.starts_with(p))?;
    let rest = &s[scheme.len()..];
    let end = rest.find(|c| c != ':' && c != '/').unwrap_or(rest.len());
    let (separator, tail) = rest.split_at(end);
    // At most one colon, first, then slashes: `//`, `:/`, `:`, `:///`.
    let slashes = separator.strip_prefix(':').unwrap_or(separator);
    let typo =
        !separator.is_empty() && separator != "://" && !slashes.contains(':') && !tail.is_empty();
    typo.then(|| format!("{scheme}://{tail}"))
}

/// The query parameters [`login_link`] appends.
const LINK_PARAMETERS: [&str; 3] = ["authKey", "leadId", "portalId"];

/// The first query parameter of `url` that a login link appends itself,
/// named as the portal reads it: decoded, in any case. The value is left out
/// of any message, as it may be a lead's key.
fn login_parameter(url: &Url) -> Option<String> {
    url.query_pairs()
        .map(|(name, _)| name)
        .find(|name| LINK_PARAMETERS.iter().any(|p| p.eq_ignore_ascii_case(name)))
        .map(|name| name.into_owned())
}

/// True for `localhost` and loopback addresses.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a+b/c=d&e$f%g h~i.j_k-l==";

    fn portal(s: &str) -> Url {
        parse_portal_url(s).unwrap()
    }

    fn pairs(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn key_with_base64_and_query_characters_round_trips() {
        let link = login_link(&portal("https://portal.example.com/login"), KEY, None);
        assert_eq!(pairs(&link), [("authKey".to_owned(), KEY.to_owned())]);
        let query = link.query().unwrap();
        for (raw, encoded) in [("+", "%2B"), ("/", "%2F"), ("=", "%3D"), (" ", "%20")] {
            assert!(query.contains(encoded), "{raw:?} not encoded in {query}");
        }
        assert_eq!(query.matches('=').count(), 1, "{query}");
    }

    #[test]
    fn key_survives_a_reparse_of_the_link() {
        let link = login_link(&portal("https://portal.example.com/p"), KEY, None);
        let reparsed = Url::parse(link.as_str()).unwrap();
        assert_eq!(pairs(&reparsed), [("authKey".to_owned(), KEY.to_owned())]);
    }

    #[test]
    fn path_and_existing_query_are_kept_exactly() {
        let page =
            portal("https://portal.example.com/en/login.aspx?utm_source=mail%20x&a=b+c&flag");
        let link = login_link(&page, "k+1", None);
        assert_eq!(link.path(), "/en/login.aspx");
        assert_eq!(
            link.query(),
            Some("utm_source=mail%20x&a=b+c&flag&authKey=k%2B1")
        );
    }

    #[test]
    fn fragment_stays_after_the_query() {
        let link = login_link(
            &portal("https://portal.example.com/app?x=1#/dashboard"),
            "k=",
            None,
        );
        assert_eq!(
            link.as_str(),
            "https://portal.example.com/app?x=1&authKey=k%3D#/dashboard"
        );
    }

    #[test]
    fn ids_come_before_the_key() {
        let link = login_link(
            &portal("https://portal.example.com/"),
            "K/1",
            Some((
                "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84",
                "c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31",
            )),
        );
        assert_eq!(
            link.query(),
            Some(
                "leadId=3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84\
                 &portalId=c4e8a2f1-7b3d-4a96-8e15-2d9f0b6c7a31&authKey=K%2F1"
            )
        );
    }

    #[test]
    fn empty_or_dangling_query_gets_no_extra_ampersand() {
        for page in ["https://p.example.com/x?", "https://p.example.com/x?a=1&"] {
            let link = login_link(&portal(page), "k", None);
            assert!(
                !link.as_str().contains("&&") && !link.as_str().contains("?&"),
                "{link}"
            );
            assert!(link.as_str().ends_with("authKey=k"), "{link}");
        }
    }

    #[test]
    fn portal_url_accepts_http_and_https() {
        assert_eq!(
            portal(" https://portal.example.com/login ").host_str(),
            Some("portal.example.com")
        );
        assert_eq!(portal("http://127.0.0.1:8080/portal").port(), Some(8080));
    }

    #[test]
    fn portal_url_errors_say_what_is_wrong() {
        for (input, expect) in [
            ("", "empty"),
            ("portal.example.com/login", "no scheme"),
            ("ftp://portal.example.com/", "must start with https://"),
            ("portal.example.com:8080/login", "must start with https://"),
            ("https://", "not a valid URL"),
            (
                "https://user:pw@portal.example.com/",
                "user name or password",
            ),
            ("https://p.example.com/?authKey=X", "\"authKey\""),
            ("https://p.example.com/?a=1&LEADID=L", "\"LEADID\""),
            ("https://p.example.com/?portal%49d=P", "\"portalId\""),
            (
                "http://portal.example.com/",
                "use https://portal.example.com/",
            ),
        ] {
            let err = parse_portal_url(input).unwrap_err();
            assert!(err.contains(expect), "{input:?}: {err}");
            assert!(!err.contains("pw@") && !err.contains("=X"), "{err}");
        }
        for harmless in [
            "https://p.example.com/?auth=1&key=2",
            "https://p.example.com/#authKey=X",
        ] {
            assert!(parse_portal_url(harmless).is_ok(), "{harmless}");
        }
    }

    #[test]
    fn a_scheme_without_its_colon_or_slashes_is_caught() {
        for (typed, meant) in [
            ("https//a.example", Some("https://a.example")),
            ("HTTP//a.example", Some("http://a.example")),
            ("http:/a.example/x", Some("http://a.example/x")),
            ("https:a.example", Some("https://a.example")),
            ("https:///a.example", Some("https://a.example")),
            ("https/a.example", Some("https://a.example")),
            ("https://a.example", None),
            ("httpbin.org", None),
            ("http.example.com", None),
            ("https-portal.example.com", None),
            ("https//", None),
            ("https:/:x", None),
        ] {
            assert_eq!(mistyped_scheme(typed).as_deref(), meant, "{typed}");
        }
    }
}
