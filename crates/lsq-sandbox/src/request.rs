//! What a call to the simulated API brings, read as the service reads it: the
//! query (names in any case), the JSON body, the headers that carry keys, and
//! the error answer in the service's shape.

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{guid, SandboxLead, Shared};

pub(crate) fn check_admin_keys(shared: &Shared, query: &Query) -> Result<(), ApiError> {
    let access = query.get("accesskey");
    let secret = query.get("secretkey");
    if access.as_deref() == Some(shared.config.access_key.as_str())
        && secret.as_deref() == Some(shared.config.secret_key.as_str())
    {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "Invalid accessKey or secretKey (each must be percent-encoded in the query)",
        ))
    }
}

pub(crate) fn check_public_key(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    match header_text(headers, header::AUTHORIZATION.as_str()) {
        Some(key) if key == shared.config.public_auth_key => Ok(()),
        Some(_) => Err(ApiError::unauthorized(
            "Invalid public auth key in Authorization",
        )),
        None => Err(ApiError::unauthorized(
            "Authorization header with the public auth key is missing",
        )),
    }
}

/// The optional `x-lsq-portalid` header, normalised; it must name a known portal.
pub(crate) fn portal_header(
    shared: &Shared,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Some(given) = header_text(headers, "x-lsq-portalid") else {
        return Ok(None);
    };
    match guid::parse(&given) {
        Some(id) if shared.portals.contains(&id) => Ok(Some(id)),
        _ => Err(ApiError::bad_input(format!(
            "x-lsq-portalid {given:?} is not a portal of this account"
        ))),
    }
}

pub(crate) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A phone number's digits: the service finds a lead whatever spaces,
/// dashes or brackets the number is typed with, and answers the form it
/// holds.
pub(crate) fn phone_digits(phone: &str) -> String {
    phone.chars().filter(char::is_ascii_digit).collect()
}

pub(crate) fn find_lead(
    shared: &Shared,
    field: &str,
    content: &str,
) -> Result<SandboxLead, ApiError> {
    let found = match field {
        "Phone" => shared.leads_by_phone.get(&phone_digits(content)),
        "EmailAddress" => shared.leads_by_email.get(&content.to_lowercase()),
        _ => {
            return Err(ApiError::bad_input(format!(
            "FieldSchemaName {field:?} cannot be used for OTP sign-in: use Phone or EmailAddress"
        )))
        }
    };
    found.cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MXInvalidEntityException",
            format!("No lead found with {field} {content:?}"),
        )
    })
}

/// The body as a JSON object, after insisting on `Content-Type: application/json`.
pub(crate) fn json_object(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    let is_json = header_text(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(ApiError::bad_input(
            "The request body must be sent with Content-Type: application/json",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_input(
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_input(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

pub(crate) fn string_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match body.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::bad_input(format!(
            "{name} must be a non-empty string"
        ))),
        None => Err(ApiError::bad_input(format!("{name} is required"))),
    }
}

pub(crate) fn guid_field(body: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    let text = string_field(body, name)?;
    guid::parse(&text)
        .ok_or_else(|| ApiError::bad_input(format!("{name} {text:?} is not a valid GUID")))
}

// ---- plumbing ---------------------------------------------------------------

/// Query parameters with names compared without regard to case. Values are
/// form-decoded as ASP.NET does, so an unencoded `+` arrives as a space and an
/// unencoded `&` or `=` splits the value: exactly the client bugs to catch.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(uri: &Uri) -> Query {
        let raw = uri.query().unwrap_or("");
        Query(
            url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of `name` spelt exactly so, as a portal page reads its own
    /// parameters (`authKey`, not `authkey`): the first one given.
    pub(crate) fn get_exact(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The value of `name`; repeated names are joined with `,` as ASP.NET
    /// does, which makes a duplicated credential fail as it would there.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// An error answer in LeadSquared's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "MXInvalidInputException", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "MXResourceNotFoundException",
            message,
        )
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "MXUnAuthorizedAccessException",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "Status": "Error",
            "ExceptionType": self.kind,
            "ExceptionMessage": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}
