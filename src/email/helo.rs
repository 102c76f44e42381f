//! The name this machine gives in EHLO. Many servers refuse a name that is
//! not fully qualified (Postfix's common `reject_non_fqdn_helo_hostname`
//! answers `504 5.5.2` to every message), and a bare host name such as `vm`
//! is what the operating system usually holds. In order of preference:
//! `--helo-name` (or `LSQ_HELO_NAME`, or `helo_name` in the file); the
//! machine's fully qualified name, as its resolver gives it; the domain of
//! the sender address, which a server that checks the name's form takes;
//! and `localhost.localdomain` when there is no sender either.

use std::time::Duration;

/// How long the resolver may take to qualify the host name: a slow or
/// unreachable DNS server must not hold up the run's start.
const RESOLVER_WAIT: Duration = Duration::from_secs(1);

/// The last resort, when nothing better is known.
const FALLBACK: &str = "localhost.localdomain";

/// The EHLO name to use: `configured` when given, else the machine's fully
/// qualified name, else `sender_domain`, else `localhost.localdomain`.
pub(super) fn helo_name(configured: Option<&str>, sender_domain: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_owned();
    }
    qualified_host_name()
        .or_else(|| sender_domain.filter(|d| d.contains('.')).map(str::to_owned))
        .unwrap_or_else(|| FALLBACK.to_owned())
}

/// Checks a configured EHLO name: a domain name or an address literal
/// (`[192.0.2.1]`), printable ASCII without spaces.
pub fn check_helo_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    match valid {
        true => Ok(name.to_owned()),
        false => Err(format!(
            "invalid EHLO name {name:?}: give this machine's fully qualified domain name, \
             e.g. mail.example.com"
        )),
    }
}

/// The host name when it has a dot, else the resolver's canonical name for
/// it when that has one; `None` when neither is fully qualified.
fn qualified_host_name() -> Option<String> {
    let host = hostname()?;
    if is_qualified(&host) {
        return Some(host);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    // getaddrinfo cannot be given a time limit; a thread left waiting on it
    // ends on its own when the resolver gives up.
    std::thread::spawn(move || {
        let _ = tx.send(canonical_name(&host));
    });
    rx.recv_timeout(RESOLVER_WAIT)
        .ok()
        .flatten()
        .filter(|name| is_qualified(name))
}

fn is_qualified(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.contains('.') && !name.ends_with(".localdomain") && name != FALLBACK
}

/// The machine's host name.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length.
    let done = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if done != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// The resolver's canonical name for `host` (getaddrinfo's AI_CANONNAME).
fn canonical_name(host: &str) -> Option<String> {
    let host = std::ffi::CString::new(host).ok()?;
    // SAFETY: all-zero is a valid addrinfo (null pointers, zero fields).
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    let mut found: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: host is NUL-terminated, hints and found are valid pointers.
    let status = unsafe { libc::getaddrinfo(host.as_ptr(), std::ptr::null(), &hints, &mut found) };
    if status != 0 || found.is_null() {
        return None;
    }
    // SAFETY: found is the list getaddrinfo returned; its first entry holds
    // ai_canonname (NUL-terminated) when AI_CANONNAME was asked for.
    let name = unsafe {
        let canon = (*found).ai_canonname;
        let name = (!canon.is_null()).then(|| {
            std::ffi::CStr::from_ptr(canon)
                .to_string_lossy()
                .into_owned()
        });
        libc::freeaddrinfo(found);
        name
    };
    name.map(|n| n.trim_end_matches('.').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_name_wins_and_a_bare_domain_is_never_chosen() {
        assert_eq!(
            helo_name(Some("mx.example.org"), Some("acme.example")),
            "mx.example.org"
        );
        let default = helo_name(None, Some("acme.example"));
        assert!(default.contains('.'), "{default}");
        let default = helo_name(None, Some("localhost"));
        assert!(default.contains('.'), "{default}");
    }

    #[test]
    fn names_with_spaces_or_angle_brackets_are_refused() {
        assert_eq!(
            check_helo_name(" mail.example.com ").unwrap(),
            "mail.example.com"
        );
        assert!(check_helo_name("[192.0.2.1]").is_ok());
        for bad in ["", "a b", "<x>", "mail\r\nRCPT"] {
            let err = check_helo_name(bad).unwrap_err();
            assert!(err.contains("fully qualified"), "{err}");
        }
    }
}
