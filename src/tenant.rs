//! The tenant a run works for: one LeadSquared account, named by its API host
//! and access key. The campaign state keys every stored key, link and send by
//! a fingerprint of the two, so nothing recorded for one tenant is ever
//! reused or skipped for another.

use std::fmt;

use url::Url;

use crate::secret::Secret;

/// A non-reversible name for a tenant: SHA-256 over the host's origin and the
/// access key. It is stored in the state file; the key never is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    fingerprint: String,
    host: String,
}

impl Tenant {
    /// The tenant behind `host` (any path is ignored: one host, one API) and
    /// `access_key`.
    pub fn new(host: &Url, access_key: &Secret) -> Tenant {
        let origin = host.origin().ascii_serialization();
        let mut input = Vec::with_capacity(64);
        input.extend_from_slice(b"lsq-dispatch tenant v1\0");
        input.extend_from_slice(origin.as_bytes());
        input.push(0);
        input.extend_from_slice(access_key.expose().as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        Tenant {
            fingerprint: hex(digest.as_ref()),
            host: origin,
        }
    }

    /// The fingerprint, 64 hexadecimal digits.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The host's origin, e.g. `https://portalapi.leadsquared.com`: what a
    /// person is shown.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({} {})", self.host, &self.fingerprint[..12])
    }
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(host: &str, key: &str) -> Tenant {
        Tenant::new(&Url::parse(host).unwrap(), &Secret::new(key.to_owned()))
    }

    #[test]
    fn host_and_access_key_both_name_the_tenant() {
        let a = tenant("https://portalapi.leadsquared.com", "key$1");
        assert_eq!(a, tenant("https://portalapi.leadsquared.com/api/", "key$1"));
        assert_ne!(a, tenant("https://portalapi-us11.leadsquared.com", "key$1"));
        assert_ne!(a, tenant("https://portalapi.leadsquared.com", "key$2"));
        assert_ne!(a, tenant("http://127.0.0.1:8080", "key$1"));
        assert_eq!(a.fingerprint().len(), 64);
        assert_eq!(a.host(), "https://portalapi.leadsquared.com");
    }

    #[test]
    fn the_fingerprint_does_not_hold_the_key() {
        let a = tenant("https://h.example", "secretKEY");
        assert!(!a.fingerprint().contains("secretKEY"));
        assert!(!format!("{a:?}").contains("secretKEY"));
    }
}
