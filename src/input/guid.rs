//! GUIDs as the input and the sandbox accept them: one normaliser for every
//! LeadId and PortalId, and the cheap hasher the input's de-duplication set
//! uses on them.

use std::hash::BuildHasher as _;

/// Normalises a GUID to lower-case hyphenated form.
///
/// Accepts surrounding spaces, any letter case, braces (`{…}`) and the 32-digit
/// form without hyphens, because spreadsheets and other CRMs export all of
/// these. Rejects everything else, including `urn:uuid:` prefixes and
/// misplaced hyphens, so a typo is reported rather than guessed at.
pub(crate) fn normalize_guid(s: &str) -> Option<String> {
    parse_guid(s).map(hyphenated)
}

/// Hashes de-duplication keys. GUIDs are mostly random already, so a
/// multiply-and-rotate mix of their bytes with a per-run random seed spreads
/// them as well as SipHash does, at a fraction of the cost per row.
#[derive(Clone)]
pub(super) struct GuidHashBuilder(u64);

impl GuidHashBuilder {
    pub(super) fn new() -> Self {
        GuidHashBuilder(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }
}

impl std::hash::BuildHasher for GuidHashBuilder {
    type Hasher = GuidHasher;

    fn build_hasher(&self) -> GuidHasher {
        GuidHasher(self.0)
    }
}

pub(super) struct GuidHasher(u64);

impl GuidHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for GuidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket from the low
        // bits and its tag from the high ones.
        self.0 ^ (self.0 >> 29)
    }
}

/// Lower-case hyphenated form, written straight into the string (the
/// formatting machinery costs more than the rest of a row's checks).
pub(super) fn hyphenated(u: uuid::Uuid) -> String {
    u.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

pub(super) fn parse_guid(s: &str) -> Option<uuid::Uuid> {
    let s = s.trim();
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => s,
    };
    let shape_ok = match inner.len() {
        32 => inner.bytes().all(|b| b.is_ascii_hexdigit()),
        36 => inner.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    };
    if !shape_ok {
        return None;
    }
    uuid::Uuid::try_parse(inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f2b8c1e-9d4a-4e7b-a6c5-1b0f7e2d9c84";

    #[test]
    fn normalize_guid_accepts_the_common_spellings() {
        let upper = A.to_uppercase();
        let braced = format!("{{{A}}}");
        let simple = A.replace('-', "");
        let padded = format!("  {upper}\t");
        for s in [
            A,
            &upper,
            &braced,
            &simple,
            &padded,
            &format!("{{{}}}", upper),
        ] {
            assert_eq!(normalize_guid(s).as_deref(), Some(A), "{s:?}");
        }
    }

    #[test]
    fn normalize_guid_rejects_everything_else() {
        let misplaced = "3f2b8c1e9-d4a-4e7b-a6c5-1b0f7e2d9c84";
        for s in [
            "",
            "abc",
            "12345",
            misplaced,
            &format!("urn:uuid:{A}"),
            &format!("{{{A}"),
            &format!("{A}}}"),
            &format!("{A}0"),
            &A.replace('3', "g"),
            &format!("{{ {A} }}"),
        ] {
            assert_eq!(normalize_guid(s), None, "{s:?}");
        }
    }

    #[test]
    fn the_sandbox_portal_id_normalises() {
        use lsq_sandbox::DEFAULT_PORTAL_ID;
        let want = Some(DEFAULT_PORTAL_ID.to_owned());
        assert_eq!(normalize_guid(&DEFAULT_PORTAL_ID.to_uppercase()), want);
        assert_eq!(normalize_guid(&format!("{{{DEFAULT_PORTAL_ID}}}")), want);
        assert_eq!(normalize_guid("not-a-guid"), None);
        assert_eq!(normalize_guid(""), None);
    }
}
