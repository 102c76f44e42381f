//! What can go wrong with one API call: the [`ApiError`] kinds the caller
//! branches on, and the reading of a status, body and Retry-After into an
//! answer or one of them.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::Scrubber;

/// Why one API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ApiError {
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
    /// A 3xx: the API sent us elsewhere. Never followed, as the request's
    /// query and body carry the keys; fatal for the run.
    #[error("{status} from the API: a redirect to {to}, not followed, as it would carry the keys there; check --host (your region's portal API host, e.g. https://portalapi-in21.leadsquared.com)")]
    Redirected {
        /// HTTP status.
        status: u16,
        /// Where to: the Location's scheme, host and port only.
        to: String,
    },
    /// The request timed out: try again.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Connection refused, reset or dropped: try again.
    #[error("connection failed: {0}")]
    Transport(String),
    /// No connection could be made at all (DNS, refused, TLS): the call
    /// never reached the server. Try again, but several calls in a row like
    /// this stop the run.
    #[error("cannot connect: {0}")]
    Unconnected(String),
    /// Calls in a row could not connect to the host: fatal for the run.
    #[error(
        "cannot reach the API host {host} ({cause}): check --host (your region's portal \
         API host, e.g. https://portalapi-in21.leadsquared.com), DNS, firewall and proxy"
    )]
    Unreachable {
        /// The host's origin.
        host: String,
        /// The last connection error.
        cause: String,
    },
    /// A 2xx answer whose body is not what the API documents.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// Never sent: the run began stopping while the call waited for its turn.
    #[error("not sent: the run is stopping")]
    NotStarted,
    /// Never sent: the budget shared with other processes cannot be used;
    /// fatal for the run.
    #[error("not sent: {0}")]
    Budget(String),
}

impl ApiError {
    /// Worth another attempt.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Timeout(_)
                | ApiError::Transport(_)
                | ApiError::Unconnected(_)
        )
    }

    /// The error with every secret taken out of its text.
    pub(crate) fn scrubbed(mut self, scrubber: &Scrubber) -> ApiError {
        if let Some(text) = self.text_mut() {
            *text = scrubber.scrub(text);
        }
        self
    }

    /// The text the error carries from the server or the network.
    fn text_mut(&mut self) -> Option<&mut String> {
        match self {
            ApiError::RateLimited { message, .. }
            | ApiError::Unauthorized { message }
            | ApiError::NotFound { message }
            | ApiError::Rejected { message, .. }
            | ApiError::Server { message, .. }
            | ApiError::Redirected { to: message, .. }
            | ApiError::Timeout(message)
            | ApiError::Transport(message)
            | ApiError::Unconnected(message)
            | ApiError::Unreachable { cause: message, .. }
            | ApiError::Protocol(message)
            | ApiError::Budget(message) => Some(message),
            ApiError::NotStarted => None,
        }
    }

    /// Ends the whole run: no other row can succeed either.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            ApiError::Unauthorized { .. }
                | ApiError::NotFound { .. }
                | ApiError::Redirected { .. }
                | ApiError::Budget(_)
                | ApiError::Unreachable { .. }
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

/// Turns a status and body (scrubbed: a message may quote it) into the
/// answer or an [`ApiError`].
pub(crate) fn classify<T: serde::de::DeserializeOwned>(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Result<T, ApiError> {
    let error_body = serde_json::from_str::<ErrorBody>(body)
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
            serde_json::from_str(body).map_err(|e| {
                ApiError::Protocol(format!(
                    "cannot read the answer ({}): {}",
                    unreadable(&e),
                    shape(body)
                ))
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

/// Why an answer cannot be read, without serde's quote of a value.
fn unreadable(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match e.classify() {
        serde_json::error::Category::Data if text.starts_with("missing field") => {
            text.split(" at line").next().unwrap_or(&text).to_owned()
        }
        serde_json::error::Category::Data => "a field holds a value of an unexpected type".into(),
        _ => "not valid JSON".into(),
    }
}

/// What a successful answer that cannot be read looks like, without any of
/// its values: such an answer may hold a lead's key (a Generate answer that
/// lacks `LeadId` still has its `AuthKey`), which must not reach a report.
fn shape(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) => {
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            match names.is_empty() {
                true => "an empty JSON object".into(),
                false => format!(
                    "a JSON object with the fields {} (values not shown)",
                    names.join(", ")
                ),
            }
        }
        Ok(serde_json::Value::String(_)) => "a JSON string (not shown)".into(),
        Ok(serde_json::Value::Array(items)) => {
            format!("a JSON array of {} items (not shown)", items.len())
        }
        Ok(other) => format!("the JSON value {other}"),
        Err(_) if body.trim().is_empty() => "empty body".into(),
        Err(_) => format!("{} bytes that are not JSON (not shown)", body.len()),
    }
}

fn snippet(body: &str) -> String {
    let text = body.trim();
    if text.is_empty() {
        return "empty body".into();
    }
    text.chars().take(200).collect()
}

/// Classifies a transport failure. `without_url` drops the request URL, which
/// carries the secret key.
pub(super) fn transport_error(error: reqwest::Error) -> ApiError {
    let timeout = error.is_timeout();
    let connect = error.is_connect();
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
    } else if connect {
        ApiError::Unconnected(message)
    } else {
        ApiError::Transport(message)
    }
}

/// Reads Retry-After: delay seconds or an HTTP date. A delay too long for a
/// `Duration` reads as [`Duration::MAX`]; the limiter caps every pause.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return match secs {
            s if s.is_nan() || s < 0.0 => None,
            0.0 => Some(Duration::ZERO),
            s => Some(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)),
        };
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GeneratedKey;

    #[test]
    fn classifies_statuses_and_bodies() {
        let err = |status, body: &str| classify::<GeneratedKey>(status, None, body);
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
        let shown = err(200, r#"{"AuthKey":"k+ey/SECRET="}"#)
            .unwrap_err()
            .to_string();
        assert!(
            shown.contains("AuthKey") && !shown.contains("SECRET"),
            "{shown}"
        );
        let shown = err(200, "<html>k+ey/SECRET=</html>")
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("SECRET"), "{shown}");
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
        for huge in ["1e300", "inf", "18446744073709551616"] {
            assert!(parse_retry_after(huge).unwrap() >= Duration::from_secs(u64::MAX / 2));
        }
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").is_some());
    }
}
