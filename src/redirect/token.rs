//! The redirect link's token: what the link service needs to send one lead
//! to its portal (lead, portal, campaign, when the link was issued and when it
//! expires, and with `--mint at-send` the lead's key and its expiry), sealed
//! with ChaCha20-Poly1305 under the operator's link secret.
//!
//! The whole payload is encrypted and authenticated, so a token reveals
//! nothing, and one changed byte, a token of another secret, or a token
//! moved to another lead fails to open. Opening checks the tag in constant
//! time (ring's AEAD).
//!
//! Layout, version 1: the character `1`, then base64url without padding of
//! `secret id (4) | nonce (12) | sealed payload | tag (16)`. The secret id
//! picks which of the operator's secrets sealed it, so a new secret can sign
//! while links of the old one still open.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::secret::Secret;

/// The first character of every version-1 token.
const VERSION: char = '1';

/// Bytes of the secret id at the token's start.
const ID_LEN: usize = 4;

/// Bytes a secret must hold at least.
pub(crate) const SECRET_MIN_BYTES: usize = 32;

/// The longest token opened: a larger one is refused before any work.
const MAX_TOKEN: usize = 2048;

/// What a token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    /// The lead.
    pub lead_id: String,
    /// The portal.
    pub portal_id: String,
    /// The campaign.
    pub campaign: String,
    /// Unix seconds.
    pub issued: u64,
    /// Unix seconds after which the link answers 410.
    pub expires: u64,
    /// The lead's key minted at send time, with its expiry (Unix seconds).
    pub key: Option<(Secret, u64)>,
}

/// Why a token did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of ours: wrong shape, unknown secret, or altered.
    #[error("the link is not valid")]
    Invalid,
    /// A real link, past its expiry.
    #[error("the link has expired")]
    Expired,
}

/// The operator's link secrets: the first seals new links, every one opens.
pub struct LinkSecrets {
    keys: Vec<([u8; ID_LEN], LessSafeKey)>,
}

impl std::fmt::Debug for LinkSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LinkSecrets({} secrets)", self.keys.len())
    }
}

impl LinkSecrets {
    /// Reads `LSQ_LINK_SECRET`'s value: one or more secrets, each base64 (or
    /// base64url) of at least 32 random bytes, separated by commas or spaces;
    /// the first seals new links.
    pub fn parse(value: &Secret) -> Result<LinkSecrets, String> {
        let mut keys = Vec::new();
        for (n, part) in value
            .expose()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let bytes = decode_secret(part).ok_or_else(|| {
                format!(
                    "LSQ_LINK_SECRET: secret {} is not base64; make one with `lsq-dispatch links new-secret`",
                    n + 1
                )
            })?;
            if bytes.len() < SECRET_MIN_BYTES {
                return Err(format!(
                    "LSQ_LINK_SECRET: secret {} holds {} bytes; each needs at least {SECRET_MIN_BYTES} random bytes (make one with `lsq-dispatch links new-secret`)",
                    n + 1,
                    bytes.len()
                ));
            }
            keys.push(derive(&bytes));
        }
        if keys.is_empty() {
            return Err(
                "LSQ_LINK_SECRET is empty; make a secret with `lsq-dispatch links new-secret`"
                    .into(),
            );
        }
        Ok(LinkSecrets { keys })
    }

    /// Seals `claims` into a token with the first secret.
    pub fn seal(&self, claims: &LinkClaims) -> String {
        let (id, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut body = encode(claims);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(id)),
            &mut body,
        )
        .expect("a payload this small seals");
        let mut raw = Vec::with_capacity(ID_LEN + NONCE_LEN + body.len());
        raw.extend_from_slice(id);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&body);
        let mut token = String::with_capacity(1 + raw.len() * 4 / 3 + 4);
        token.push(VERSION);
        URL_SAFE_NO_PAD.encode_string(&raw, &mut token);
        token
    }

    /// Opens `token`, and says whether it is past its expiry at `now`
    /// (Unix seconds).
    pub fn open(&self, token: &str, now: u64) -> Result<LinkClaims, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Invalid);
        }
        let rest = token.strip_prefix(VERSION).ok_or(TokenError::Invalid)?;
        let raw = URL_SAFE_NO_PAD
            .decode(rest)
            .map_err(|_| TokenError::Invalid)?;
        if raw.len() < ID_LEN + NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(TokenError::Invalid);
        }
        let (id, rest) = raw.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (id, key) = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .ok_or(TokenError::Invalid)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TokenError::Invalid)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(aad(id)), &mut sealed)
            .map_err(|_| TokenError::Invalid)?;
        let claims = decode(plain).ok_or(TokenError::Invalid)?;
        if now >= claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// A new secret: 32 random bytes, base64url.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_MIN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_secret(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// The sealing key and the id of one secret, each its own HMAC of the
/// secret, so the id tells nothing of the key.
fn derive(secret: &[u8]) -> ([u8; ID_LEN], LessSafeKey) {
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let key = ring::hmac::sign(&mac, b"lsq-dispatch link key v1");
    let id = ring::hmac::sign(&mac, b"lsq-dispatch link id v1");
    let key = UnboundKey::new(&CHACHA20_POLY1305, &key.as_ref()[..32])
        .expect("32 bytes make a ChaCha20 key");
    let mut short = [0u8; ID_LEN];
    short.copy_from_slice(&id.as_ref()[..ID_LEN]);
    (short, LessSafeKey::new(key))
}

fn aad(id: &[u8; ID_LEN]) -> [u8; ID_LEN + 1] {
    let mut aad = [VERSION as u8; ID_LEN + 1];
    aad[1..].copy_from_slice(id);
    aad
}

/// A text field: a GUID in 16 bytes, anything else as UTF-8 with its length.
fn put_text(out: &mut Vec<u8>, text: &str) {
    match uuid::Uuid::try_parse(text) {
        Ok(guid) if guid.hyphenated().to_string() == text => {
            out.push(1);
            out.extend_from_slice(guid.as_bytes());
        }
        _ => {
            let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
            out.push(0);
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

fn encode(claims: &LinkClaims) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&claims.issued.to_be_bytes());
    out.extend_from_slice(&claims.expires.to_be_bytes());
    put_text(&mut out, &claims.lead_id);
    put_text(&mut out, &claims.portal_id);
    put_text(&mut out, &claims.campaign);
    match &claims.key {
        Some((key, expires)) => {
            out.push(1);
            out.extend_from_slice(&expires.to_be_bytes());
            put_text(&mut out, key.expose());
        }
        None => out.push(0),
    }
    out
}

/// Reads what [`encode`] wrote.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<String> {
        match self.take(1)?[0] {
            1 => {
                let guid = uuid::Uuid::from_slice(self.take(16)?).ok()?;
                Some(guid.hyphenated().to_string())
            }
            0 => {
                let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
                String::from_utf8(self.take(len)?.to_vec()).ok()
            }
            _ => None,
        }
    }
}

fn decode(bytes: &[u8]) -> Option<LinkClaims> {
    let mut r = Reader(bytes);
    let issued = r.u64()?;
    let expires = r.u64()?;
    let lead_id = r.text()?;
    let portal_id = r.text()?;
    let campaign = r.text()?;
    let key = match r.take(1)?[0] {
        0 => None,
        1 => {
            let expires = r.u64()?;
            Some((Secret::new(r.text()?), expires))
        }
        _ => return None,
    };
    r.0.is_empty().then_some(LinkClaims {
        lead_id,
        portal_id,
        campaign,
        issued,
        expires,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[&str]) -> LinkSecrets {
        LinkSecrets::parse(&Secret::new(values.join(","))).unwrap()
    }

    fn claims(key: Option<&str>) -> LinkClaims {
        LinkClaims {
            lead_id: "4c5e1a3d-2b7f-4e9a-8d61-0c9a7b3e5f12".into(),
            portal_id: "9b2c4f6e-0000-4000-8000-000000000001".into(),
            campaign: "march invite".into(),
            issued: 1_000,
            expires: 2_000,
            key: key.map(|k| (Secret::new(k), 1_500)),
        }
    }

    const A: &str = "BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY";
    const B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn a_sealed_token_opens_to_what_was_sealed() {
        let s = secrets(&[A]);
        for key in [None, Some("k+y/with=and&$")] {
            let token = s.seal(&claims(key));
            assert!(token.starts_with('1'));
            assert!(token[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
            assert_eq!(s.open(&token, 1_999).unwrap(), claims(key));
            assert!(!token.contains("4c5e1a3d"), "the lead is not readable");
        }
    }

    #[test]
    fn an_expired_link_says_so() {
        let s = secrets(&[A]);
        let token = s.seal(&claims(None));
        assert_eq!(s.open(&token, 2_000), Err(TokenError::Expired));
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let s = secrets(&[A]);
        let token = s.seal(&claims(Some("key")));
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for at in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            let was = bytes[at];
            bytes[at] = *alphabet.iter().find(|&&c| c != was).unwrap();
            let altered = String::from_utf8(bytes).unwrap();
            // The last character may carry only padding bits.
            if at + 1 == token.len()
                && URL_SAFE_NO_PAD.decode(&altered[1..]).ok()
                    == URL_SAFE_NO_PAD.decode(&token[1..]).ok()
            {
                continue;
            }
            assert_eq!(s.open(&altered, 1_000), Err(TokenError::Invalid), "at {at}");
        }
        assert_eq!(s.open("", 0), Err(TokenError::Invalid));
        assert_eq!(s.open("1", 0), Err(TokenError::Invalid));
        assert_eq!(s.open(&"1A".repeat(2000), 0), Err(TokenError::Invalid));
    }

    #[test]
    fn another_secrets_token_is_refused_and_a_rotated_secret_still_opens_old_links() {
        let old = secrets(&[A]);
        let other = secrets(&[B]);
        let token = old.seal(&claims(None));
        assert_eq!(other.open(&token, 1_000), Err(TokenError::Invalid));
        let rotated = secrets(&[B, A]);
        assert_eq!(rotated.open(&token, 1_000).unwrap(), claims(None));
        let new = rotated.seal(&claims(None));
        assert_eq!(other.open(&new, 1_000).unwrap(), claims(None));
        assert_eq!(old.open(&new, 1_000), Err(TokenError::Invalid));
    }

    #[test]
    fn short_or_malformed_secrets_are_refused_with_what_to_do() {
        let short = LinkSecrets::parse(&Secret::new("c2hvcnQ")).unwrap_err();
        assert!(short.contains("at least 32 random bytes"), "{short}");
        assert!(short.contains("links new-secret"), "{short}");
        let bad = LinkSecrets::parse(&Secret::new("not base64 !!")).unwrap_err();
        assert!(bad.contains("secret 1"), "{bad}");
        assert!(LinkSecrets::parse(&Secret::new(" , ")).is_err());
        let fresh = new_secret();
        assert!(LinkSecrets::parse(&Secret::new(fresh.clone())).is_ok());
        assert_ne!(fresh, new_secret());
    }
}
