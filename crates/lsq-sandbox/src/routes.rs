//! The HTTP surface: routing (paths and query parameter names matched without
//! regard to case, as IIS does), the order in which a call meets jitter, the
//! budget, service time and faults, and the five API calls, the portal page
//! and the admin endpoints themselves.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::conn::Conn;
use super::faults::Fault;
use super::otp::OtpRecord;
use super::request::*;
use super::{guid, window, Shared};

/// The whole app: one fallback handler, because routing by lower-cased path
/// is simpler than teaching a router to ignore case.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// The budgeted API calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Generate,
    TenantKey,
    PublicToken,
    OtpGet,
    Signin,
}

/// Lower-case path, method, call.
const API_ROUTES: [(&str, Method, Api); 5] = [
    ("/api/autologin/generate", Method::POST, Api::Generate),
    (
        "/api/authentication/tenantauthkey",
        Method::POST,
        Api::TenantKey,
    ),
    ("/api/access/publictoken", Method::GET, Api::PublicToken),
    (
        "/api/authentication/signinotp/get",
        Method::POST,
        Api::OtpGet,
    ),
    ("/api/authentication/signin", Method::POST, Api::Signin),
];

/// Every request: admin and portal pages first, then an API call meets, in
/// order, the route check, jitter (and a late first arrival on a new
/// connection), the budget, service time and any injected fault before it is
/// served.
async fn dispatch(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _serving = conn.serving();
    let path = uri.path().to_ascii_lowercase();
    let query = Query::parse(&uri);
    if let Some(rest) = path.strip_prefix("/admin/") {
        return admin(&shared, rest, &method, &query);
    }
    if path.starts_with("/portal/") {
        return portal_page(&shared, &method, &uri, &query);
    }
    if !path.starts_with("/api/") {
        // What a browser asks of the portal's host (a favicon) is no call.
        return StatusCode::NOT_FOUND.into_response();
    }

    shared.ledger().calls += 1;
    let api = match find_api(&path, &method, &uri) {
        Ok(api) => api,
        Err(refusal) => return answer(&shared, *refusal),
    };

    let jitter = {
        let mut faults = shared.faults();
        faults.jitter() + faults.late_arrival(conn.first_request())
    };
    pause(jitter).await;
    if !admit(&shared) {
        shared.log(format_args!(
            "429 for {:?}: budget {} is spent",
            api, shared.config.budget
        ));
        return answer(&shared, rate_limited(&shared));
    }

    let service = shared.faults().service_time();
    pause(service).await;
    if let Some(response) = inject_fault(&shared, api, &conn) {
        return response;
    }
    answer(&shared, serve(&shared, api, &query, &headers, &body))
}

/// The API call at `path`, or the 404 that answers it instead.
fn find_api(path: &str, method: &Method, uri: &Uri) -> Result<Api, Box<Response>> {
    let Some((allowed, api)) = API_ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, m, api)| (m, *api))
    else {
        let err = ApiError::not_found(format!(
            "No API at {}: check the path and the host",
            uri.path()
        ));
        return Err(Box::new(err.into_response()));
    };
    if method != allowed {
        return Err(Box::new(method_not_allowed(method, uri, allowed)));
    }
    Ok(api)
}

/// Whether the budget's window takes one more call now; a counted arrival is
/// noted in the ledger for the admin endpoints.
pub(crate) fn admit(shared: &Shared) -> bool {
    let mut ledger = shared.ledger();
    let now = Instant::now();
    let admission = ledger.window.admit(now);
    if admission.counted {
        let since_start = now.saturating_duration_since(shared.started);
        ledger.arrivals.push(since_start);
    }
    admission.accepted
}

/// The fault drawn for this call, if any, as the whole answer to it: a cut
/// connection or an injected 500.
fn inject_fault(shared: &Shared, api: Api, conn: &Conn) -> Option<Response> {
    match shared.faults().fault() {
        Fault::None => None,
        Fault::Drop => {
            shared.log(format_args!("dropping the connection of a {api:?} call"));
            shared.ledger().dropped += 1;
            conn.cut();
            // Never reaches the client: the cut socket fails the write.
            Some(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Fault::ServerError => {
            shared.log(format_args!("injected 500 for a {api:?} call"));
            let err = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "MXUnknownException",
                "An unexpected error occurred while processing the request",
            );
            Some(answer(shared, err.into_response()))
        }
    }
}

/// The API call itself, once it got through; a 401 is logged, as the
/// operator watching the sandbox usually wants to know why.
fn serve(shared: &Shared, api: Api, query: &Query, headers: &HeaderMap, body: &Bytes) -> Response {
    let result = match api {
        Api::Generate => generate(shared, query, headers, body),
        Api::TenantKey => tenant_key(shared, query),
        Api::PublicToken => public_token(shared, query),
        Api::OtpGet => otp_get(shared, headers, body),
        Api::Signin => signin(shared, headers, body),
    };
    result.unwrap_or_else(|err| {
        if err.status == StatusCode::UNAUTHORIZED {
            shared.log(format_args!("401 for {api:?}: {}", err.message));
        }
        err.into_response()
    })
}

/// Sleeps, but skips the timer entirely for a zero delay, which would otherwise
/// still cost a timer tick on every call.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A call with the wrong method. The documents list 200, 400, 401, 404, 429
/// and 500 as the codes the API answers, so this is a 404 (no such API for
/// that method) in the error shape, not a 405 a client would never meet.
fn method_not_allowed(method: &Method, uri: &Uri, allowed: &Method) -> Response {
    ApiError::not_found(format!(
        "No API at {method} {}: this path takes {allowed}",
        uri.path()
    ))
    .into_response()
}

/// Counts the answer by status on its way out.
fn answer(shared: &Shared, response: Response) -> Response {
    *shared
        .ledger()
        .by_status
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

fn rate_limited(shared: &Shared) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "MXAPIRateLimitExceededException",
        window::limit_message(shared.config.budget),
    )
    .into_response();
    if let Some(after) = shared.config.retry_after {
        let secs = after.as_secs_f64().ceil() as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

// ---- the API calls ------------------------------------------------------

fn generate(shared: &Shared, query: &Query, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    check_admin_keys(shared, query)?;
    let tenant_ok = query.get("authkey").is_some_and(|key| {
        key == shared.config.tenant_auth_key || shared.keys().tenant_key_valid(&key, Instant::now())
    });
    if !tenant_ok {
        return Err(ApiError::unauthorized(
            "Invalid or expired authkey (tenant auth key): mint a new one",
        ));
    }
    let body = json_object(headers, body)?;
    let lead_id = guid_field(&body, "LeadId")?;
    let portal_id = guid_field(&body, "PortalId")?;
    if !shared.portals.contains(&portal_id) {
        return Err(ApiError::bad_input(format!(
            "PortalId {portal_id} is not a portal of this account"
        )));
    }
    if shared.unknown_leads.contains(&lead_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MXInvalidEntityException",
            "Lead does not exist",
        ));
    }
    let key = issue_lead_key(shared, &lead_id, &portal_id);
    Ok(Json(json!({ "AuthKey": key, "LeadId": lead_id })).into_response())
}

fn tenant_key(shared: &Shared, query: &Query) -> ApiResult {
    check_admin_keys(shared, query)?;
    let key = shared
        .keys()
        .issue_tenant_key(shared.config.key_ttl, Instant::now());
    Ok(Json(key).into_response())
}

fn public_token(shared: &Shared, query: &Query) -> ApiResult {
    check_admin_keys(shared, query)?;
    Ok(Json(json!({ "PublicAuthKey": shared.config.public_auth_key })).into_response())
}

fn otp_get(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    check_public_key(shared, headers)?;
    let portal_id = portal_header(shared, headers)?;
    let register_token = header_text(headers, "x-lsq-registertoken");
    let body = json_object(headers, body)?;
    let field = string_field(&body, "FieldSchemaName")?;
    let content = string_field(&body, "FieldContent")?;
    let lead = find_lead(shared, &field, &content)?;
    // The service answers the field as the lead holds it, and the sign-in
    // must send that form (the Sign In document: "pass the FieldContent").
    let content = match field.as_str() {
        "Phone" => lead.phone.clone(),
        _ => lead.email.clone(),
    };

    let record = OtpRecord {
        otp: String::new(),
        field_content: content.clone(),
        lead_id: lead.lead_id.clone(),
        portal_id,
        register_token,
    };
    let (code, record) = shared.otps().issue(record, Instant::now());
    // Always logged: without SMS this is the only way a person gets the OTP.
    eprintln!(
        "sandbox: OTP {} for {} (lead {}, code {code})",
        record.otp, content, lead.lead_id
    );
    Ok(Json(json!({
        "Code": code,
        "FieldContent": content,
        "Message": "OTP sent",
        "Status": "Success",
    }))
    .into_response())
}

fn signin(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> ApiResult {
    check_public_key(shared, headers)?;
    let header_portal = portal_header(shared, headers)?;
    let body = json_object(headers, body)?;
    if body.get("OTPSigninRequest") != Some(&Value::Bool(true)) {
        return Err(ApiError::bad_input(
            "OTPSigninRequest must be true for an OTP sign-in",
        ));
    }
    let data = match body.get("OTPSigninData") {
        Some(Value::Object(data)) => data,
        _ => {
            return Err(ApiError::bad_input(
                "OTPSigninData must be an object with Otp, FieldContent and Code",
            ))
        }
    };
    let otp = string_field(data, "Otp")?;
    let content = string_field(data, "FieldContent")?;
    let code = string_field(data, "Code")?;
    let record = shared
        .otps()
        .redeem(&code, &content, &otp, Instant::now())
        .map_err(|refusal| ApiError::bad_input(refusal.message()))?;
    let portal_id = record
        .portal_id
        .or(header_portal)
        .unwrap_or_else(|| shared.config.portal_ids[0].clone());
    let key = issue_lead_key(shared, &record.lead_id, &portal_id);
    Ok(Json(json!({ "LeadId": record.lead_id, "AuthKey": key })).into_response())
}

fn issue_lead_key(shared: &Shared, lead_id: &str, portal_id: &str) -> String {
    let key =
        shared
            .keys()
            .issue_lead_key(lead_id, portal_id, shared.config.key_ttl, Instant::now());
    *shared
        .ledger()
        .keys_issued
        .entry(lead_id.to_owned())
        .or_default() += 1;
    key
}

// ---- the portal page and admin --------------------------------------------

/// What a portal would do with a link: say which lead the key logs in, or
/// refuse it. Not an API call, so not budgeted.
fn portal_page(shared: &Shared, method: &Method, uri: &Uri, query: &Query) -> Response {
    if method != Method::GET {
        return method_not_allowed(method, uri, &Method::GET);
    }
    let refuse = |why: &str| {
        ApiError::unauthorized(format!("Portal sign-in refused: {why}")).into_response()
    };
    // The documents spell it authKey; a portal reads no other spelling.
    let Some(key) = query.get_exact("authKey") else {
        return refuse("no authKey in the link (spelt authKey, as the documents do)");
    };
    let Some(found) = shared.keys().lead_key(&key, Instant::now()).cloned() else {
        return refuse("authKey unknown or expired (was it percent-encoded?)");
    };
    for (name, want) in [("leadId", &found.lead_id), ("portalId", &found.portal_id)] {
        if let Some(given) = query.get_exact(name) {
            if guid::parse(&given).as_ref() != Some(want) {
                return refuse(&format!("{name} in the link does not match the authKey"));
            }
        }
    }
    Json(json!({ "LeadId": found.lead_id, "PortalId": found.portal_id })).into_response()
}

fn admin(shared: &Shared, rest: &str, method: &Method, query: &Query) -> Response {
    match (method.as_str(), rest) {
        ("GET", "stats") => Json(shared.stats()).into_response(),
        ("GET", "arrivals") => {
            let ms: Vec<u64> = shared
                .ledger()
                .arrivals
                .iter()
                .map(|d| d.as_millis() as u64)
                .collect();
            Json(ms).into_response()
        }
        ("GET", "otp") => match query.get("code").and_then(|code| shared.otps().get(&code)) {
            Some(record) => Json(record).into_response(),
            None => ApiError::not_found("No OTP was issued with that code").into_response(),
        },
        ("POST", "reset") => {
            shared.reset();
            StatusCode::NO_CONTENT.into_response()
        }
        _ => ApiError::not_found(
            "Admin endpoints: GET stats, GET arrivals, GET otp?code=, POST reset",
        )
        .into_response(),
    }
}

// ---- request checks ---------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_ignore_case_and_values_are_form_decoded() {
        let uri: Uri = "/x?AccessKey=a%2Bb&SECRETKEY=c+d&secretkey=e"
            .parse()
            .unwrap();
        let q = Query::parse(&uri);
        assert_eq!(q.get("accesskey").as_deref(), Some("a+b"));
        assert_eq!(q.get("secretKey").as_deref(), Some("c d,e"));
        assert_eq!(q.get("authkey"), None);
    }
}
