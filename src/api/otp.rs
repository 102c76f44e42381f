//! The OTP sign-in calls: get the public auth key, ask for a sign-in OTP, and
//! sign in with it. Kept apart so the OTP flow can grow without touching the
//! Generate path.

use serde::{Deserialize, Serialize};

use super::{ApiClient, ApiError};
use crate::secret::Secret;

/// The optional headers newer LeadSquared docs send on both OTP calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct OtpHeaders {
    /// `x-lsq-portalid`: the portal the lead signs in to.
    pub portal_id: Option<String>,
    /// `x-lsq-registertoken`: the portal's register token.
    pub register_token: Option<Secret>,
}

/// Answer of Get sign-in OTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SigninOtp {
    /// The code that names this OTP request in the sign-in call.
    pub code: String,
    /// The phone or email as the service holds it; the sign-in must send
    /// this, not the form typed.
    #[serde(default)]
    pub field_content: Option<String>,
    /// The server's message, e.g. `OTP sent`.
    #[serde(default)]
    pub message: Option<String>,
}

/// Answer of Sign in with OTP.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    /// The lead that signed in.
    pub lead_id: String,
    /// The lead's auth key, valid [`KEY_LIFETIME`](super::KEY_LIFETIME).
    pub auth_key: Secret,
}

/// Body of Get sign-in OTP.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SigninOtpRequest<'a> {
    field_schema_name: &'a str,
    field_content: &'a str,
}

/// Body of Sign in with OTP.
#[derive(Debug, Serialize)]
struct SigninRequest<'a> {
    #[serde(rename = "OTPSigninRequest")]
    otp_signin_request: bool,
    #[serde(rename = "OTPSigninData")]
    otp_signin_data: SigninData<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SigninData<'a> {
    otp: &'a str,
    field_content: &'a str,
    code: &'a str,
}

/// A header value marked sensitive, so no layer below us ever shows it.
fn secret_header(name: &str, value: &str) -> Result<reqwest::header::HeaderValue, ApiError> {
    let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        ApiError::Protocol(format!(
            "the value for the {name} header has characters HTTP headers cannot carry"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A string member of an answer that holds a key. The answer is read as plain
/// JSON first because a failed typed decode quotes the body, key included.
fn key_member(answer: &serde_json::Value, name: &str) -> Result<String, ApiError> {
    match answer.get(name) {
        Some(serde_json::Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        _ => Err(ApiError::Protocol(format!("the answer holds no {name}"))),
    }
}

impl ApiClient {
    /// Get public auth key: one attempt, with the access and secret keys.
    pub(crate) async fn public_token(&self) -> Result<Secret, ApiError> {
        let url = self.url("/api/Access/PublicToken", &self.credentials());
        let answer: serde_json::Value = self.send_json(self.http.get(url), &[]).await?;
        key_member(&answer, "PublicAuthKey").map(Secret::new)
    }

    /// One OTP call: posts `body` as JSON with the public key in
    /// `Authorization` and the optional portal and register-token headers,
    /// and decodes the answer.
    async fn otp_call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        public_key: &Secret,
        headers: &OtpHeaders,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        let mut request = self
            .http
            .post(self.url(path, &[]))
            .header(
                reqwest::header::AUTHORIZATION,
                secret_header("Authorization", public_key.expose())?,
            )
            .json(body);
        if let Some(portal_id) = &headers.portal_id {
            request = request.header("x-lsq-portalid", portal_id.as_str());
        }
        if let Some(token) = &headers.register_token {
            request = request.header(
                "x-lsq-registertoken",
                secret_header("x-lsq-registertoken", token.expose())?,
            );
        }
        let secrets: Vec<&Secret> = [Some(public_key), headers.register_token.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        self.send_json(request, &secrets).await
    }

    /// Get sign-in OTP: one attempt. The server sends the OTP to the lead and
    /// answers with the code that names this request.
    pub(crate) async fn signin_otp_get(
        &self,
        public_key: &Secret,
        headers: &OtpHeaders,
        field: &str,
        content: &str,
    ) -> Result<SigninOtp, ApiError> {
        let body = SigninOtpRequest {
            field_schema_name: field,
            field_content: content,
        };
        let answer: SigninOtp = self
            .otp_call(
                "/api/Authentication/SigninOTP/Get",
                public_key,
                headers,
                &body,
            )
            .await?;
        if answer.code.is_empty() {
            return Err(ApiError::Protocol("the answer holds no Code".into()));
        }
        Ok(answer)
    }

    /// Sign in with OTP: one attempt. Answers the lead and its auth key.
    pub(crate) async fn signin(
        &self,
        public_key: &Secret,
        headers: &OtpHeaders,
        content: &str,
        code: &str,
        otp: &Secret,
    ) -> Result<SignedIn, ApiError> {
        let body = SigninRequest {
            otp_signin_request: true,
            otp_signin_data: SigninData {
                otp: otp.expose(),
                field_content: content,
                code,
            },
        };
        let answer: serde_json::Value = self
            .otp_call("/api/Authentication/Signin", public_key, headers, &body)
            .await?;
        Ok(SignedIn {
            lead_id: key_member(&answer, "LeadId")?,
            auth_key: Secret::new(key_member(&answer, "AuthKey")?),
        })
    }
}
