//! The LeadSquared API client: typed requests and answers, and the
//! classification of every failure into an [`ApiError`] the caller can branch on.
//!
//! One call here is one attempt. Pacing and retrying live in `limiter` and
//! `retry`; the tenant key's lifetime lives in [`TenantKey`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio::time::Instant;
use url::Url;

use crate::secret::Secret;

/// How long LeadSquared keeps lead and tenant auth keys valid.
pub const KEY_LIFETIME: Duration = Duration::from_secs(4 * 3600);

/// Why one API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 429 (or a 403 saying the limit was exceeded): wait and try again.
    #[error("rate limited: {message}")]
    RateLimited {
        /// How long the server asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// 401: the credentials or the region host are wrong; fatal for the run.
    #[error("401 from the API ({message}): check LSQ_ACCESS_KEY / LSQ_SECRET_KEY / LSQ_TENANT_AUTH_KEY and that --host is your region's portal API host")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// 404: wrong host or path; fatal for the run.
    #[error("404 from the API ({message}): check --host (your region's portal API host, e.g. https://portalapi-in21.leadsquared.com) and the API path")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// 400 or another refusal of this one request; the row fails.
    #[error("{message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's ExceptionMessage.
        message: String,
    },
    /// 5xx: try again.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The request timed out: try again.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Connection refused, reset or dropped: try again.
    #[error("connection failed: {0}")]
    Transport(String),
    /// A 2xx answer whose body is not what the API documents.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl ApiError {
    /// Worth another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Timeout(_)
                | ApiError::Transport(_)
        )
    }

    /// Ends the whole run: no other row can succeed either.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized { .. } | ApiError::NotFound { .. }
        )
    }
}

/// LeadSquared's error body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    status: Option<String>,
    exception_type: Option<String>,
    exception_message: Option<String>,
}

/// Body of Generate lead-level auth key.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRequest<'a> {
    lead_id: &'a str,
    portal_id: &'a str,
}

/// Answer of Generate lead-level auth key.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GeneratedKey {
    /// The lead's auth key, valid 4 h.
    pub auth_key: String,
    /// The lead it logs in.
    pub lead_id: String,
}

/// How to reach the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Base URL, e.g. `https://portalapi-in21.leadsquared.com`.
    pub host: Url,
    /// Access key.
    pub access_key: Secret,
    /// Secret key.
    pub secret_key: Secret,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// A thin client over one connection pool.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    settings: ApiSettings,
}

impl ApiClient {
    /// Builds the client (no network yet).
    pub fn new(settings: ApiSettings) -> anyhow::Result<ApiClient> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("lsq-dispatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ApiClient { http, settings })
    }

    /// The API host.
    pub fn host(&self) -> &Url {
        &self.settings.host
    }

    /// A URL on the host with the given path and query pairs, each value
    /// percent-encoded (keys hold `$ + / = &`).
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.settings.host.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{}", path.trim_start_matches('/')));
        if query.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(query);
        }
        url
    }

    fn credentials(&self) -> [(&str, &str); 2] {
        [
            ("accessKey", self.settings.access_key.expose()),
            ("secretKey", self.settings.secret_key.expose()),
        ]
    }

    /// Generate lead-level auth key: one attempt.
    pub async fn generate(
        &self,
        tenant_key: &Secret,
        lead_id: &str,
        portal_id: &str,
    ) -> Result<GeneratedKey, ApiError> {
        let [a, s] = self.credentials();
        let url = self.url(
            "/api/AutoLogin/Generate",
            &[a, s, ("authkey", tenant_key.expose())],
        );
        let request = self
            .http
            .post(url)
            .json(&GenerateRequest { lead_id, portal_id });
        let key: GeneratedKey = self.send_json(request).await?;
        if key.auth_key.is_empty() {
            return Err(ApiError::Protocol("the answer holds no AuthKey".into()));
        }
        Ok(key)
    }

    /// Mints a tenant auth key through the configured endpoint (the path is not
    /// in the public docs); the answer is a bare JSON string.
    pub async fn mint_tenant_key(&self, path: &str, method: &str) -> Result<Secret, ApiError> {
        let url = self.url(path, &self.credentials());
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| ApiError::Protocol(format!("invalid tenant key method {method:?}")))?;
        let request = self.http.request(method, url);
        let key: String = self.send_json(request).await?;
        if key.is_empty() {
            return Err(ApiError::Protocol("the tenant key answer is empty".into()));
        }
        Ok(Secret::new(key))
    }

    /// Sends a request and decodes a 2xx JSON answer, classifying everything else.
    pub(crate) async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await.map_err(transport_error)?;
        classify(status, retry_after, &body)
    }
}

/// Turns a status and body into the answer or an [`ApiError`].
pub fn classify<T: serde::de::DeserializeOwned>(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<T, ApiError> {
    let error_body = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .filter(|e| e.status.as_deref() == Some("Error") || e.exception_message.is_some());
    let message = match &error_body {
        Some(e) => e
            .exception_message
            .clone()
            .or_else(|| e.exception_type.clone())
            .unwrap_or_else(|| "no message".into()),
        None => snippet(body),
    };
    let limit_message = message.to_ascii_lowercase().contains("exceeded the limit");
    match status {
        200..=299 => {
            if error_body.is_some() {
                // Some endpoints answer errors with 200.
                return Err(if limit_message {
                    ApiError::RateLimited {
                        retry_after,
                        message,
                    }
                } else {
                    ApiError::Rejected { status, message }
                });
            }
            serde_json::from_slice(body).map_err(|e| {
                ApiError::Protocol(format!("cannot read the answer ({e}): {}", snippet(body)))
            })
        }
        429 => Err(ApiError::RateLimited {
            retry_after,
            message,
        }),
        403 if limit_message => Err(ApiError::RateLimited {
            retry_after,
            message,
        }),
        401 => Err(ApiError::Unauthorized { message }),
        404 => Err(ApiError::NotFound { message }),
        408 => Err(ApiError::Timeout(message)),
        500..=599 => Err(ApiError::Server { status, message }),
        _ => Err(ApiError::Rejected { status, message }),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".into();
    }
    text.chars().take(200).collect()
}

/// Classifies a transport failure. `without_url` drops the request URL, which
/// carries the secret key.
fn transport_error(error: reqwest::Error) -> ApiError {
    let timeout = error.is_timeout();
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if timeout {
        ApiError::Timeout(message)
    } else {
        ApiError::Transport(message)
    }
}

/// Reads Retry-After: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Where the tenant auth key comes from.
#[derive(Debug, Clone)]
pub struct TenantKeySource {
    /// A key given in LSQ_TENANT_AUTH_KEY (its age counts from the run's start).
    pub given: Option<Secret>,
    /// The mint endpoint's path and method.
    pub mint_path: String,
    /// HTTP method of the mint endpoint.
    pub mint_method: String,
    /// How long a key lives.
    pub lifetime: Duration,
}

#[derive(Debug, Clone)]
struct HeldKey {
    key: Secret,
    since: Instant,
    generation: u64,
}

/// The tenant auth key in use, re-minted before it expires on long runs.
#[derive(Debug)]
pub struct TenantKey {
    source: TenantKeySource,
    held: RwLock<Option<HeldKey>>,
}

/// Re-mint this long before a key's end of life.
const RENEW_BEFORE: Duration = Duration::from_secs(15 * 60);

/// A tenant key as handed to one call, with the generation to name it when
/// asking for a replacement.
#[derive(Debug, Clone)]
pub struct TenantKeyLease {
    /// The key.
    pub key: Secret,
    generation: u64,
    age: Duration,
}

impl TenantKey {
    /// Starts with the given key, if any; otherwise the first [`TenantKey::lease`]
    /// needs a mint.
    pub fn new(source: TenantKeySource) -> TenantKey {
        let held = source.given.clone().map(|key| HeldKey {
            key,
            since: Instant::now(),
            generation: 0,
        });
        TenantKey {
            source,
            held: RwLock::new(held),
        }
    }

    /// The mint endpoint (path, method).
    pub fn mint_endpoint(&self) -> (&str, &str) {
        (&self.source.mint_path, &self.source.mint_method)
    }

    /// The key to use now, or `None` when one must be minted first (none yet,
    /// or the held one is within [`RENEW_BEFORE`] of its end).
    pub async fn lease(&self) -> Option<TenantKeyLease> {
        let held = self.held.read().await;
        let held = held.as_ref()?;
        let age = held.since.elapsed();
        if age + RENEW_BEFORE >= self.source.lifetime {
            return None;
        }
        Some(TenantKeyLease {
            key: held.key.clone(),
            generation: held.generation,
            age,
        })
    }

    /// Whether a 401 seen with this lease may come from the key's expiry, and
    /// so deserves one re-mint instead of ending the run.
    pub fn may_have_expired(&self, lease: &TenantKeyLease) -> bool {
        lease.age + RENEW_BEFORE * 2 >= self.source.lifetime
    }

    /// Installs a freshly minted key, unless another task already replaced the
    /// key `stale` named.
    pub async fn install(&self, key: Secret, stale: Option<&TenantKeyLease>) {
        let mut held = self.held.write().await;
        let current = held.as_ref().map(|h| h.generation);
        if let (Some(stale), Some(current)) = (stale, current) {
            if current != stale.generation {
                return;
            }
        }
        *held = Some(HeldKey {
            key,
            since: Instant::now(),
            generation: current.map_or(1, |g| g + 1),
        });
    }

    /// Forgets the key so the next lease mints one.
    pub async fn expire(&self, lease: &TenantKeyLease) {
        let mut held = self.held.write().await;
        if held.as_ref().map(|h| h.generation) == Some(lease.generation) {
            if let Some(h) = held.as_mut() {
                h.since = Instant::now() - self.source.lifetime;
            }
        }
    }
}

// ---- OTP sign-in: public auth key, sign-in OTP, sign in with OTP ----------
//
// Kept together at the end so the OTP flow can grow without touching the
// Generate path above.

/// The optional headers newer LeadSquared docs send on both OTP calls.
#[derive(Debug, Clone, Default)]
pub struct OtpHeaders {
    /// `x-lsq-portalid`: the portal the lead signs in to.
    pub portal_id: Option<String>,
    /// `x-lsq-registertoken`: the portal's register token.
    pub register_token: Option<Secret>,
}

/// Answer of Get sign-in OTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SigninOtp {
    /// The code that names this OTP request in the sign-in call.
    pub code: String,
    /// The phone or email the OTP went to, as the server read it.
    #[serde(default)]
    pub field_content: Option<String>,
    /// The server's message, e.g. `OTP sent`.
    #[serde(default)]
    pub message: Option<String>,
    /// The server's status, e.g. `Success`.
    #[serde(default)]
    pub status: Option<String>,
}

/// Answer of Sign in with OTP.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The lead that signed in.
    pub lead_id: String,
    /// The lead's auth key, valid [`KEY_LIFETIME`].
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
    pub async fn public_token(&self) -> Result<Secret, ApiError> {
        let url = self.url("/api/Access/PublicToken", &self.credentials());
        let answer: serde_json::Value = self.send_json(self.http.get(url)).await?;
        key_member(&answer, "PublicAuthKey").map(Secret::new)
    }

    /// The OTP calls' request: the public key in `Authorization`, the optional
    /// portal and register-token headers, and a JSON body.
    fn otp_request(
        &self,
        path: &str,
        public_key: &Secret,
        headers: &OtpHeaders,
        body: &impl Serialize,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
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
        Ok(request)
    }

    /// Get sign-in OTP: one attempt. The server sends the OTP to the lead and
    /// answers with the code that names this request.
    pub async fn signin_otp_get(
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
        let request = self.otp_request(
            "/api/Authentication/SigninOTP/Get",
            public_key,
            headers,
            &body,
        )?;
        let answer: SigninOtp = self.send_json(request).await?;
        if answer.code.is_empty() {
            return Err(ApiError::Protocol("the answer holds no Code".into()));
        }
        Ok(answer)
    }

    /// Sign in with OTP: one attempt. Answers the lead and its auth key.
    pub async fn signin(
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
        let request = self.otp_request("/api/Authentication/Signin", public_key, headers, &body)?;
        let answer: serde_json::Value = self.send_json(request).await?;
        Ok(SignedIn {
            lead_id: key_member(&answer, "LeadId")?,
            auth_key: Secret::new(key_member(&answer, "AuthKey")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses_and_bodies() {
        let err = |status, body: &str| classify::<GeneratedKey>(status, None, body.as_bytes());
        let body = r#"{"Status":"Error","ExceptionType":"MXInvalidInputException","ExceptionMessage":"Lead does not exist"}"#;
        assert_eq!(
            err(400, body).unwrap_err(),
            ApiError::Rejected {
                status: 400,
                message: "Lead does not exist".into()
            }
        );
        // An error body with HTTP 200 is still an error.
        assert!(matches!(err(200, body), Err(ApiError::Rejected { .. })));
        let limit = r#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 25 in 5 second(s)"}"#;
        assert!(matches!(err(429, limit), Err(ApiError::RateLimited { .. })));
        assert!(matches!(err(403, limit), Err(ApiError::RateLimited { .. })));
        assert!(matches!(
            err(403, body),
            Err(ApiError::Rejected { status: 403, .. })
        ));
        assert!(matches!(err(401, body), Err(ApiError::Unauthorized { .. })));
        assert!(matches!(
            err(404, "not here"),
            Err(ApiError::NotFound { .. })
        ));
        assert!(matches!(
            err(503, ""),
            Err(ApiError::Server { status: 503, .. })
        ));
        assert!(matches!(err(200, "{}"), Err(ApiError::Protocol(_))));
        let ok = err(200, r#"{"AuthKey":"a+b/c=","LeadId":"x"}"#).unwrap();
        assert_eq!(ok.auth_key, "a+b/c=");
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let soon = std::time::SystemTime::now() + Duration::from_secs(30);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(soon)).unwrap();
        assert!(parsed > Duration::from_secs(25) && parsed <= Duration::from_secs(30));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let client = ApiClient::new(ApiSettings {
            host: Url::parse("https://portalapi.leadsquared.com/").unwrap(),
            access_key: Secret::new("a$b"),
            secret_key: Secret::new("s+/=&x"),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let [a, s] = client.credentials();
        let url = client.url("/api/AutoLogin/Generate", &[a, s, ("authkey", "k +=")]);
        assert_eq!(
            url.as_str(),
            "https://portalapi.leadsquared.com/api/AutoLogin/Generate?accessKey=a%24b&secretKey=s%2B%2F%3D%26x&authkey=k+%2B%3D"
        );
        let pairs: Vec<_> = url.query_pairs().map(|(_, v)| v.into_owned()).collect();
        assert_eq!(pairs, ["a$b", "s+/=&x", "k +="]);
    }
}
