//! The sandbox is as strict as the service where a client's mistake would
//! otherwise pass: the portal page takes `authKey` as the documents spell
//! it, a wrong method gets one of the documented codes, and the OTP Code
//! looks like the documented one.

use crate::support::planted::{self, PUBLIC};
use lsq_sandbox::{SandboxConfig, DEMO_LEAD_PHONE};

/// A lead key from the sandbox's Generate.
async fn lead_key(sandbox: &lsq_sandbox::Sandbox) -> String {
    let config = sandbox.config();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/AutoLogin/Generate", sandbox.base_url()))
        .query(&[
            ("accessKey", config.access_key.as_str()),
            ("secretKey", config.secret_key.as_str()),
            ("authkey", config.tenant_auth_key.as_str()),
        ])
        .json(&serde_json::json!({
            "LeadId": "4c5e1a3d-2b7f-4e9a-8d61-0c9a7b3e5f12",
            "PortalId": config.portal_ids[0],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["AuthKey"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_portal_page_takes_the_key_only_as_authkey_spelt_as_documented() {
    let sandbox = crate::support::sandbox(SandboxConfig::default()).await;
    let key = lead_key(&sandbox).await;
    let page = |name: &str| {
        let mut url = url::Url::parse(&sandbox.portal_url()).unwrap();
        url.query_pairs_mut().append_pair(name, &key);
        url.to_string()
    };
    assert_eq!(reqwest::get(page("authKey")).await.unwrap().status(), 200);
    for name in ["authkey", "AUTHKEY", "AuthKey"] {
        let status = reqwest::get(page(name)).await.unwrap().status();
        assert_eq!(status, 401, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_gets_a_documented_status() {
    let sandbox = crate::support::sandbox(SandboxConfig::default()).await;
    let client = reqwest::Client::new();
    let generate = format!("{}/api/AutoLogin/Generate", sandbox.base_url());
    let portal = sandbox.portal_url();
    for answer in [
        client.get(&generate).send().await.unwrap(),
        client.post(&portal).send().await.unwrap(),
    ] {
        let status = answer.status().as_u16();
        assert!([200, 400, 401, 404, 429, 500].contains(&status), "{status}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["Status"], "Error", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_otp_code_is_long_base64_with_the_characters_that_need_care() {
    let sandbox = crate::support::sandbox(planted::sandbox_config()).await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/api/Authentication/SigninOTP/Get",
            sandbox.base_url()
        ))
        .header("Authorization", PUBLIC)
        .json(&serde_json::json!({"FieldSchemaName": "Phone", "FieldContent": DEMO_LEAD_PHONE}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = answer["Code"].as_str().unwrap();
    assert!(code.len() >= 300, "{code}");
    assert!(
        code.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)),
        "{code}"
    );
    assert!(
        code.contains('+') && code.contains('/') && code.ends_with('='),
        "{code}"
    );
}
