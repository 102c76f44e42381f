//! The sandbox's tests, in one binary: the sandbox over real HTTP, every
//! documented answer of every call, the key alphabet, the portal page and the
//! OTP flow; `budget` covers the sliding-window budget and each fault setting,
//! asserted by counts; `idle` the closing of idle connections.

mod budget;
mod idle;

use std::time::Duration;

use lsq_sandbox::{
    Budget, Sandbox, SandboxConfig, SandboxLead, DEFAULT_ACCESS_KEY, DEFAULT_PORTAL_ID,
    DEFAULT_PUBLIC_AUTH_KEY, DEFAULT_SECRET_KEY, DEFAULT_TENANT_AUTH_KEY, DEMO_LEAD_ID,
    DEMO_LEAD_PHONE, TENANT_KEY_PATH,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

const LEAD: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const GENERATE: &str = "/api/AutoLogin/Generate";

/// A running sandbox and a client for it.
struct Api {
    sandbox: Sandbox,
    http: reqwest::Client,
}

impl Api {
    async fn start(config: SandboxConfig) -> Api {
        Api {
            sandbox: Sandbox::start(config).await.expect("the sandbox starts"),
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> Api {
        Api::start(SandboxConfig::default()).await
    }

    /// A sandbox with the defaults but for what `change` sets.
    async fn with(change: impl FnOnce(&mut SandboxConfig)) -> Api {
        let mut config = SandboxConfig::default();
        change(&mut config);
        Api::start(config).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url())
    }

    /// A GET of `path` on the sandbox, for the caller to fill in and [`send`].
    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(self.url(path))
    }

    /// A POST to `path` on the sandbox, for the caller to fill in and [`send`].
    fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(self.url(path))
    }

    /// Generate with the default credentials, portal and tenant key.
    async fn generate(&self, lead_id: &str) -> Result<Response, reqwest::Error> {
        self.post(GENERATE)
            .query(&creds())
            .json(&body(lead_id))
            .send()
            .await
    }

    async fn generate_status(&self, lead_id: &str) -> StatusCode {
        self.generate(lead_id).await.expect("an answer").status()
    }

    async fn generate_key(&self, lead_id: &str) -> String {
        let response = self.generate(lead_id).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["AuthKey"].as_str().unwrap().to_owned()
    }

    /// Generate with an explicit query and body.
    async fn generate_raw(&self, query: &[(&str, &str)], body: Value) -> Response {
        send(self.post(GENERATE).query(query).json(&body)).await
    }

    async fn portal(&self, query: &[(&str, &str)]) -> Response {
        send(self.http.get(self.sandbox.portal_url()).query(query)).await
    }

    async fn otp_get(&self, phone: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .post("/api/Authentication/SigninOTP/Get")
            .header("Authorization", DEFAULT_PUBLIC_AUTH_KEY)
            .json(&json!({ "FieldSchemaName": "Phone", "FieldContent": phone }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    async fn signin(&self, code: &str, phone: &str, otp: &str) -> Response {
        send(
            self.post("/api/Authentication/Signin")
                .header("Authorization", DEFAULT_PUBLIC_AUTH_KEY)
                .json(&json!({
                    "OTPSigninRequest": true,
                    "OTPSigninData": { "Otp": otp, "FieldContent": phone, "Code": code }
                })),
        )
        .await
    }

    async fn admin_otp(&self, code: &str) -> String {
        let body: Value = send(self.get("/admin/otp").query(&[("code", code)]))
            .await
            .json()
            .await
            .unwrap();
        body["Otp"].as_str().unwrap().to_owned()
    }
}

/// Sends the request and returns the answer; these tests are about the
/// answer, so a transport error just fails the test.
async fn send(request: RequestBuilder) -> Response {
    request.send().await.unwrap()
}

fn creds() -> Vec<(&'static str, &'static str)> {
    vec![
        ("accessKey", DEFAULT_ACCESS_KEY),
        ("secretKey", DEFAULT_SECRET_KEY),
        ("authkey", DEFAULT_TENANT_AUTH_KEY),
    ]
}

fn body(lead: &str) -> Value {
    json!({ "LeadId": lead, "PortalId": DEFAULT_PORTAL_ID })
}

fn budget(calls: u32, ms: u64) -> Budget {
    Budget {
        calls,
        window: Duration::from_millis(ms),
    }
}

fn range(ms: u64) -> (Duration, Duration) {
    (Duration::from_millis(ms), Duration::from_millis(ms))
}

/// Asserts LeadSquared's error shape and returns (status, type, message).
async fn error_of(response: Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["Status"], "Error", "{body}");
    let kind = body["ExceptionType"].as_str().expect("ExceptionType");
    assert!(kind.starts_with("MX"), "{kind}");
    let message = body["ExceptionMessage"].as_str().expect("ExceptionMessage");
    assert!(!message.is_empty());
    (status, kind.to_owned(), message.to_owned())
}

fn count(statuses: &[StatusCode], want: StatusCode) -> usize {
    statuses.iter().filter(|&&s| s == want).count()
}

// ---- Generate -----------------------------------------------------------------

#[tokio::test]
async fn generate_issues_keys_that_need_percent_encoding() {
    let api = Api::default().await;
    let braced_upper = format!("{{{}}}", LEAD.to_uppercase());
    for _ in 0..20 {
        let response = api.generate(&braced_upper).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["LeadId"], LEAD, "LeadId comes back normalised");
        let key = body["AuthKey"].as_str().unwrap();
        assert!(
            key.contains('+') && key.contains('/') && key.ends_with('='),
            "{key}"
        );
    }
    assert_eq!(api.sandbox.stats().keys_issued[LEAD], 20);
}

#[tokio::test]
async fn generate_refuses_bad_credentials_with_401() {
    let api = Api::default().await;
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("accessKey", "wrong"),
            ("secretKey", DEFAULT_SECRET_KEY),
            ("authkey", DEFAULT_TENANT_AUTH_KEY),
        ],
        vec![
            ("accessKey", DEFAULT_ACCESS_KEY),
            ("secretKey", "wrong"),
            ("authkey", DEFAULT_TENANT_AUTH_KEY),
        ],
        vec![
            ("accessKey", DEFAULT_ACCESS_KEY),
            ("authkey", DEFAULT_TENANT_AUTH_KEY),
        ],
        vec![
            ("accessKey", DEFAULT_ACCESS_KEY),
            ("secretKey", DEFAULT_SECRET_KEY),
            ("authkey", "wrong"),
        ],
        vec![
            ("accessKey", DEFAULT_ACCESS_KEY),
            ("secretKey", DEFAULT_SECRET_KEY),
        ],
    ];
    for query in cases {
        let response = api.generate_raw(&query, body(LEAD)).await;
        assert_eq!(error_of(response).await.0, 401, "{query:?}");
    }
}

#[tokio::test]
async fn unencoded_credentials_are_refused() {
    // `+` decodes to a space, `&` and `=` split the value: the keys no longer match.
    let api = Api::default().await;
    let raw = format!(
        "{}?accessKey={DEFAULT_ACCESS_KEY}&secretKey={DEFAULT_SECRET_KEY}&authkey={DEFAULT_TENANT_AUTH_KEY}",
        api.url(GENERATE)
    );
    let response = send(api.http.post(raw).json(&body(LEAD))).await;
    assert_eq!(error_of(response).await.0, 401);
}

/// A key that lives this long has died by the next call, with no waiting.
const DEAD_ON_ARRIVAL: Duration = Duration::from_nanos(1);

/// Mints a tenant key, then answers Generate's status with it.
async fn generate_with_minted_key(api: &Api) -> u16 {
    let response = send(api.post(TENANT_KEY_PATH).query(&[
        ("accessKey", DEFAULT_ACCESS_KEY),
        ("secretKey", DEFAULT_SECRET_KEY),
    ]))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let minted: String = response.json().await.expect("a bare JSON string");
    assert!(minted.contains('+') && minted.contains('/') && minted.ends_with('='));
    let query = [
        ("accessKey", DEFAULT_ACCESS_KEY),
        ("secretKey", DEFAULT_SECRET_KEY),
        ("authkey", &minted),
    ];
    let response = send(api.post(GENERATE).query(&query).json(&body(LEAD))).await;
    response.status().as_u16()
}

#[tokio::test]
async fn minted_tenant_keys_work_until_they_expire() {
    let api = Api::default().await;
    assert_eq!(generate_with_minted_key(&api).await, 200);
    let short_lived = Api::with(|c| c.key_ttl = DEAD_ON_ARRIVAL).await;
    assert_eq!(generate_with_minted_key(&short_lived).await, 401);
    // The configured tenant key never expires.
    let configured = send(short_lived.post(GENERATE).query(&creds()).json(&body(LEAD))).await;
    assert_eq!(configured.status(), StatusCode::OK);

    let bad = send(
        api.post(TENANT_KEY_PATH)
            .query(&[("accessKey", DEFAULT_ACCESS_KEY), ("secretKey", "nope")]),
    )
    .await;
    assert_eq!(error_of(bad).await.0, 401);
}

#[tokio::test]
async fn generate_refuses_bad_bodies_with_400() {
    let api = Api::with(|c| c.unknown_leads = vec![LEAD.to_uppercase()]).await;
    let other = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    let cases = [
        json!({ "PortalId": DEFAULT_PORTAL_ID }),
        json!({ "LeadId": "not-a-guid", "PortalId": DEFAULT_PORTAL_ID }),
        json!({ "LeadId": 42, "PortalId": DEFAULT_PORTAL_ID }),
        json!({ "LeadId": other }),
        json!({ "LeadId": other, "PortalId": "portal" }),
        json!({ "LeadId": other, "PortalId": other }),
        json!([other, DEFAULT_PORTAL_ID]),
    ];
    for case in cases {
        let response = api.generate_raw(&creds(), case.clone()).await;
        assert_eq!(error_of(response).await.0, 400, "{case}");
    }

    let malformed = send(
        api.post(GENERATE)
            .query(&creds())
            .header("Content-Type", "application/json")
            .body("{\"LeadId\": "),
    )
    .await;
    assert_eq!(error_of(malformed).await.0, 400);

    let not_json = send(
        api.post(GENERATE)
            .query(&creds())
            .header("Content-Type", "text/plain")
            .body(body(other).to_string()),
    )
    .await;
    assert_eq!(error_of(not_json).await.0, 400);

    let unknown = api.generate_raw(&creds(), body(LEAD)).await;
    assert_eq!(
        error_of(unknown).await,
        (
            400,
            "MXInvalidEntityException".into(),
            "Lead does not exist".into()
        )
    );
    // Any other GUID is a lead.
    assert_eq!(api.generate_status(other).await, StatusCode::OK);
}

#[tokio::test]
async fn query_names_and_paths_ignore_case() {
    let api = Api::default().await;
    let response = send(
        api.post("/API/autologin/GENERATE")
            .query(&[
                ("ACCESSKEY", DEFAULT_ACCESS_KEY),
                ("SecretKey", DEFAULT_SECRET_KEY),
                ("AuthKey", DEFAULT_TENANT_AUTH_KEY),
            ])
            .json(&body(LEAD)),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_404() {
    let api = Api::default().await;
    let missing = send(api.get("/api/Nope")).await;
    assert_eq!(error_of(missing).await.0, 404);
    // The documents list no 405: the service answers a wrong method 404.
    let wrong = send(api.get(GENERATE).query(&creds())).await;
    assert_eq!(error_of(wrong).await.0, 404);
    // Neither reaches the tenant, so neither is budgeted.
    assert!(api.sandbox.arrivals().is_empty());
}

#[tokio::test]
async fn what_a_browser_asks_of_the_portal_host_is_no_api_call() {
    let api = Api::default().await;
    for path in ["/favicon.ico", "/robots.txt", "/"] {
        let response = send(api.get(path)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(api.sandbox.stats().calls, 0);
    // A wrong path under /api/ is a client's mistake, and counted.
    send(api.get("/api/Nope")).await;
    assert_eq!(api.sandbox.stats().calls, 1);
}

#[tokio::test]
async fn public_token_returns_the_configured_key() {
    let api = Api::default().await;
    let good = send(api.get("/api/Access/PublicToken").query(&[
        ("accessKey", DEFAULT_ACCESS_KEY),
        ("secretKey", DEFAULT_SECRET_KEY),
    ]))
    .await;
    assert_eq!(good.status(), StatusCode::OK);
    let body: Value = good.json().await.unwrap();
    assert_eq!(body, json!({ "PublicAuthKey": DEFAULT_PUBLIC_AUTH_KEY }));
    let bad = send(
        api.get("/api/Access/PublicToken")
            .query(&[("accessKey", DEFAULT_ACCESS_KEY)]),
    )
    .await;
    assert_eq!(error_of(bad).await.0, 401);
}

// ---- the portal page ---------------------------------------------------------

#[tokio::test]
async fn portal_page_tells_which_lead_a_key_logs_in() {
    let api = Api::with(|c| c.budget = budget(1, 60_000)).await;
    let key = api.generate_key(LEAD).await;

    let page = api.portal(&[("authKey", &key)]).await;
    assert_eq!(page.status(), StatusCode::OK);
    let body: Value = page.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "LeadId": LEAD, "PortalId": DEFAULT_PORTAL_ID })
    );

    let upper_lead = LEAD.to_uppercase();
    let full = [
        ("leadId", upper_lead.as_str()),
        ("portalId", DEFAULT_PORTAL_ID),
        ("authKey", &key),
    ];
    assert_eq!(api.portal(&full).await.status(), StatusCode::OK);
    // Spelt otherwise than the documents, the key is not read.
    let lower = [("authkey", key.as_str())];
    assert_eq!(api.portal(&lower).await.status(), StatusCode::UNAUTHORIZED);

    let other = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    for query in [
        vec![("leadId", other), ("authKey", key.as_str())],
        vec![("portalId", other), ("authKey", key.as_str())],
        vec![("authKey", "bm90LWEta2V5")],
        vec![],
    ] {
        assert_eq!(error_of(api.portal(&query).await).await.0, 401, "{query:?}");
    }

    // The key pasted into a link without encoding no longer matches.
    let raw = format!("{}?authKey={key}", api.sandbox.portal_url());
    let response = send(api.http.get(raw)).await;
    assert_eq!(error_of(response).await.0, 401);

    // Budget 1/60s was spent by the Generate: the portal page is not budgeted.
    let stats = api.sandbox.stats();
    assert_eq!(stats.calls, 1);
    assert_eq!(stats.max_in_window, 1);
}

#[tokio::test]
async fn portal_page_refuses_expired_keys() {
    let api = Api::with(|c| c.key_ttl = DEAD_ON_ARRIVAL).await;
    let key = api.generate_key(LEAD).await;
    let (status, _, message) = error_of(api.portal(&[("authKey", &key)]).await).await;
    assert_eq!(status, 401);
    assert!(message.contains("expired"), "{message}");
    // The same call with a live key is let in.
    let api = Api::default().await;
    let key = api.generate_key(LEAD).await;
    assert_eq!(
        api.portal(&[("authKey", &key)]).await.status(),
        StatusCode::OK
    );
}

// ---- OTP ----------------------------------------------------------------------

#[tokio::test]
async fn otp_sign_in_works_once() {
    let second_portal = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    let api =
        Api::with(|c| c.portal_ids = vec![DEFAULT_PORTAL_ID.into(), second_portal.to_uppercase()])
            .await;

    let response = api
        .otp_get(
            DEMO_LEAD_PHONE,
            &[
                ("x-lsq-registertoken", "reg-token-1"),
                ("x-lsq-portalid", second_portal),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["Status"], "Success");
    assert_eq!(body["Message"], "OTP sent");
    assert_eq!(body["FieldContent"], DEMO_LEAD_PHONE);
    let code = body["Code"].as_str().unwrap().to_owned();

    let record = api.sandbox.otp(&code).unwrap();
    assert_eq!(record.register_token.as_deref(), Some("reg-token-1"));
    assert_eq!(record.portal_id.as_deref(), Some(second_portal));
    let otp = api.admin_otp(&code).await;
    assert_eq!(otp, record.otp);
    assert_eq!(otp.len(), 6);

    let wrong = if otp == "000000" { "111111" } else { "000000" };
    let (status, _, message) = error_of(api.signin(&code, DEMO_LEAD_PHONE, wrong).await).await;
    assert_eq!(status, 400);
    assert!(message.contains("Invalid OTP"), "{message}");

    let response = api.signin(&code, DEMO_LEAD_PHONE, &otp).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["LeadId"], DEMO_LEAD_ID);
    let key = body["AuthKey"].as_str().unwrap();
    let page: Value = api.portal(&[("authKey", key)]).await.json().await.unwrap();
    assert_eq!(
        page,
        json!({ "LeadId": DEMO_LEAD_ID, "PortalId": second_portal })
    );

    let (status, _, message) = error_of(api.signin(&code, DEMO_LEAD_PHONE, &otp).await).await;
    assert_eq!(status, 400);
    assert!(message.contains("already been used"), "{message}");
    assert_eq!(api.sandbox.stats().keys_issued[DEMO_LEAD_ID], 1);
}

#[tokio::test]
async fn otp_refusals() {
    let lead = SandboxLead {
        lead_id: LEAD.into(),
        phone: "+91-9876543210".into(),
        email: "lead@example.com".into(),
    };
    let api = Api::with(|c| c.leads = vec![lead]).await;
    assert_eq!(
        api.otp_get("+91-9876543210", &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(error_of(api.otp_get("+1-000", &[]).await).await.0, 400);
    let foreign_portal = [("x-lsq-portalid", "6ba7b810-9dad-11d1-80b4-00c04fd430c8")];
    assert_eq!(
        error_of(api.otp_get(DEMO_LEAD_PHONE, &foreign_portal).await)
            .await
            .0,
        400
    );
    assert_eq!(
        error_of(api.signin("no-such-code", DEMO_LEAD_PHONE, "123456").await)
            .await
            .0,
        400
    );

    let url = api.url("/api/Authentication/SigninOTP/Get");
    let otp_body = json!({ "FieldSchemaName": "Phone", "FieldContent": DEMO_LEAD_PHONE });
    let no_auth = send(api.http.post(&url).json(&otp_body)).await;
    assert_eq!(error_of(no_auth).await.0, 401);
    let bad_auth = send(
        api.http
            .post(&url)
            .header("Authorization", "wrong")
            .json(&otp_body),
    )
    .await;
    assert_eq!(error_of(bad_auth).await.0, 401);
    let signin_no_auth = send(
        api.post("/api/Authentication/Signin")
            .json(&json!({ "OTPSigninRequest": true, "OTPSigninData": {} })),
    )
    .await;
    assert_eq!(error_of(signin_no_auth).await.0, 401);
}

// ---- the budget -------------------------------------------------------------------
