//! Issued keys: lead-level auth keys (from Generate and OTP sign-in) and minted
//! tenant keys, with what each one is good for and until when. Every key is
//! base64 that contains `+`, `/` and `=` padding, so a client that forgets to
//! percent-encode a key in a link or a query is caught on its first call.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine as _;
use rand::RngCore as _;

/// Random bytes per key. Not a multiple of 3, so the base64 ends in `=`.
const KEY_BYTES: usize = 32;

/// A fresh key whose text contains `+`, `/` and ends with `=`.
pub(crate) fn mint() -> String {
    let mut rng = rand::rng();
    let mut bytes = [0u8; KEY_BYTES];
    loop {
        rng.fill_bytes(&mut bytes);
        // Each of the 42 free characters is `+` or `/` with chance 1/64, so
        // about one draw in four has both; the loop ends after a few rounds.
        let key = base64::engine::general_purpose::STANDARD.encode(bytes);
        if key.contains('+') && key.contains('/') && key.ends_with('=') {
            return key;
        }
    }
}

/// What a lead-level key logs in to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeadKey {
    pub lead_id: String,
    pub portal_id: String,
    pub expires: Instant,
}

/// Every key the sandbox has issued.
#[derive(Debug, Default)]
pub(crate) struct KeyStore {
    lead_keys: HashMap<String, LeadKey>,
    tenant_keys: HashMap<String, Instant>,
}

impl KeyStore {
    /// Issues a lead key valid for `ttl`.
    pub(super) fn issue_lead_key(
        &mut self,
        lead_id: &str,
        portal_id: &str,
        ttl: Duration,
        now: Instant,
    ) -> String {
        self.purge(now);
        let key = mint();
        self.lead_keys.insert(
            key.clone(),
            LeadKey {
                lead_id: lead_id.to_owned(),
                portal_id: portal_id.to_owned(),
                expires: now + ttl,
            },
        );
        key
    }

    /// Issues a tenant key valid for `ttl`.
    pub(super) fn issue_tenant_key(&mut self, ttl: Duration, now: Instant) -> String {
        self.purge(now);
        let key = mint();
        self.tenant_keys.insert(key.clone(), now + ttl);
        key
    }

    /// The lead key `key`, if it was issued here and has not expired.
    pub(super) fn lead_key(&self, key: &str, now: Instant) -> Option<&LeadKey> {
        self.lead_keys.get(key).filter(|k| now < k.expires)
    }

    /// True when `key` is a minted tenant key that has not expired.
    pub(super) fn tenant_key_valid(&self, key: &str, now: Instant) -> bool {
        self.tenant_keys.get(key).is_some_and(|&exp| now < exp)
    }

    /// Drops expired keys once the store has grown, so a sandbox left running
    /// for days does not hold every key it ever issued.
    fn purge(&mut self, now: Instant) {
        const PURGE_ABOVE: usize = 100_000;
        if self.lead_keys.len() > PURGE_ABOVE {
            self.lead_keys.retain(|_, k| now < k.expires);
        }
        if self.tenant_keys.len() > PURGE_ABOVE {
            self.tenant_keys.retain(|_, &mut exp| now < exp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_needs_percent_encoding() {
        for _ in 0..200 {
            let key = mint();
            assert!(key.contains('+') && key.contains('/') && key.ends_with('='));
            assert!(base64::engine::general_purpose::STANDARD
                .decode(&key)
                .is_ok());
        }
    }

    #[test]
    fn keys_expire() {
        let t0 = Instant::now();
        let mut store = KeyStore::default();
        let ttl = Duration::from_secs(10);
        let lead = store.issue_lead_key("lead", "portal", ttl, t0);
        let tenant = store.issue_tenant_key(ttl, t0);
        assert_eq!(store.lead_key(&lead, t0).unwrap().lead_id, "lead");
        assert!(store.tenant_key_valid(&tenant, t0));
        let later = t0 + ttl;
        assert!(store.lead_key(&lead, later).is_none());
        assert!(!store.tenant_key_valid(&tenant, later));
        assert!(!store.tenant_key_valid(&lead, t0));
    }
}
