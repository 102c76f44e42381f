//! Sign-in OTPs: the code handed out by `SigninOTP/Get`, the six digits that
//! would have gone by SMS, and the rules for redeeming them (once, within ten
//! minutes, for the same phone or email, a few wrong guesses at most).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng as _;
use serde::Serialize;

/// How long an OTP code can be redeemed.
pub(crate) const OTP_TTL: Duration = Duration::from_secs(10 * 60);

/// Wrong OTPs tolerated before the code is burnt, so the six digits cannot be
/// guessed by brute force.
const MAX_WRONG: u32 = 5;

/// One OTP request, as the admin endpoint and tests see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OtpRecord {
    /// The six digits that would have been sent to the lead.
    pub otp: String,
    /// The phone or email the OTP was requested for, as sent.
    pub field_content: String,
    /// The lead the OTP signs in.
    pub lead_id: String,
    /// The `x-lsq-portalid` header of the request, if any.
    pub portal_id: Option<String>,
    /// The `x-lsq-registertoken` header of the request, if any.
    pub register_token: Option<String>,
}

#[derive(Debug)]
struct Entry {
    record: OtpRecord,
    issued: Instant,
    used: bool,
    wrong: u32,
}

/// Why a sign-in was refused; the text goes into the error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    UnknownCode,
    Used,
    Expired,
    WrongField,
    WrongOtp,
    TooManyWrong,
}

impl Refusal {
    pub(super) fn message(self) -> &'static str {
        match self {
            Refusal::UnknownCode => "Invalid OTP code: request a new OTP",
            Refusal::Used => "OTP code has already been used: request a new OTP",
            Refusal::Expired => "OTP has expired: request a new OTP",
            Refusal::WrongField => "FieldContent does not match the OTP request",
            Refusal::WrongOtp => "Invalid OTP: the OTP entered is incorrect",
            Refusal::TooManyWrong => "Too many incorrect OTP attempts: request a new OTP",
        }
    }
}

/// Random bytes of an OTP Code: the documents show a base64 value of about
/// 400 characters; 298 bytes make 400, ending in `==`.
const CODE_BYTES: usize = 298;

/// A Code like the documented one: long base64 holding `+`, `/` and `=`,
/// so a client that mangles any of them in JSON or on a command line fails
/// here as it would against the service.
fn otp_code(rng: &mut impl rand::RngCore) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; CODE_BYTES];
    loop {
        rng.fill_bytes(&mut bytes);
        let code = base64::engine::general_purpose::STANDARD.encode(bytes);
        if code.contains('+') && code.contains('/') {
            return code;
        }
    }
}

/// Outstanding and spent OTP codes.
#[derive(Debug, Default)]
pub(crate) struct OtpStore {
    by_code: HashMap<String, Entry>,
}

impl OtpStore {
    /// Records a new OTP for `record` (whose `otp` is filled in here) and
    /// returns its code.
    pub(super) fn issue(&mut self, mut record: OtpRecord, now: Instant) -> (String, OtpRecord) {
        self.by_code
            .retain(|_, e| now.saturating_duration_since(e.issued) < OTP_TTL * 2);
        let mut rng = rand::rng();
        record.otp = format!("{:06}", rng.random_range(0..1_000_000u32));
        let code = otp_code(&mut rng);
        self.by_code.insert(
            code.clone(),
            Entry {
                record: record.clone(),
                issued: now,
                used: false,
                wrong: 0,
            },
        );
        (code, record)
    }

    /// The record behind `code`, spent or not.
    pub(super) fn get(&self, code: &str) -> Option<OtpRecord> {
        self.by_code.get(code).map(|e| e.record.clone())
    }

    /// Redeems `code`; succeeds once.
    pub(super) fn redeem(
        &mut self,
        code: &str,
        field_content: &str,
        otp: &str,
        now: Instant,
    ) -> Result<OtpRecord, Refusal> {
        let entry = self.by_code.get_mut(code).ok_or(Refusal::UnknownCode)?;
        if entry.used {
            return Err(Refusal::Used);
        }
        if now.saturating_duration_since(entry.issued) >= OTP_TTL {
            return Err(Refusal::Expired);
        }
        if entry.wrong >= MAX_WRONG {
            return Err(Refusal::TooManyWrong);
        }
        if entry.record.field_content != field_content {
            return Err(Refusal::WrongField);
        }
        if entry.record.otp != otp {
            entry.wrong += 1;
            return Err(Refusal::WrongOtp);
        }
        entry.used = true;
        Ok(entry.record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(store: &mut OtpStore, now: Instant) -> (String, String) {
        let record = OtpRecord {
            otp: String::new(),
            field_content: "+1-555".into(),
            lead_id: "lead".into(),
            portal_id: None,
            register_token: None,
        };
        let (code, record) = store.issue(record, now);
        (code, record.otp)
    }

    #[test]
    fn a_code_works_once() {
        let t0 = Instant::now();
        let mut store = OtpStore::default();
        let (code, otp) = issue(&mut store, t0);
        assert_eq!(otp.len(), 6);
        assert_eq!(
            store.redeem(&code, "+1-555", &otp, t0).unwrap().lead_id,
            "lead"
        );
        assert_eq!(store.redeem(&code, "+1-555", &otp, t0), Err(Refusal::Used));
    }

    #[test]
    fn refusals() {
        let t0 = Instant::now();
        let mut store = OtpStore::default();
        let (code, otp) = issue(&mut store, t0);
        let wrong = if otp == "000000" { "111111" } else { "000000" };
        assert_eq!(
            store.redeem("nope", "+1-555", &otp, t0),
            Err(Refusal::UnknownCode)
        );
        assert_eq!(
            store.redeem(&code, "+1-556", &otp, t0),
            Err(Refusal::WrongField)
        );
        assert_eq!(
            store.redeem(&code, "+1-555", wrong, t0),
            Err(Refusal::WrongOtp)
        );
        assert_eq!(
            store.redeem(&code, "+1-555", &otp, t0 + OTP_TTL),
            Err(Refusal::Expired)
        );
        // A wrong guess does not burn the code; the right OTP still works.
        assert!(store.redeem(&code, "+1-555", &otp, t0).is_ok());
    }

    #[test]
    fn guessing_burns_the_code() {
        let t0 = Instant::now();
        let mut store = OtpStore::default();
        let (code, otp) = issue(&mut store, t0);
        let wrong = if otp == "000000" { "111111" } else { "000000" };
        for _ in 0..MAX_WRONG {
            assert_eq!(
                store.redeem(&code, "+1-555", wrong, t0),
                Err(Refusal::WrongOtp)
            );
        }
        assert_eq!(
            store.redeem(&code, "+1-555", &otp, t0),
            Err(Refusal::TooManyWrong)
        );
    }
}
