//! A real browser follows a mailed redirect link: headless Chromium opens
//! the link from the `.eml`, presses the page's button, and lands on the
//! sandbox portal page signed in as that lead. This is what proves the
//! page's form, its Content-Security-Policy (whose `form-action` must allow
//! the 303 on to the portal) and the redirect work together in a browser.

use crate::links_end_to_end::{mail_run, mailed_links, new_secret};
use crate::support::browser::Browser;
use crate::support::link_service::{admin_stats, LinkService};
use crate::support::{fast_config, lead_ids, run_ok, sandbox};

#[tokio::test(flavor = "multi_thread")]
async fn chromium_opens_a_mailed_link_presses_the_button_and_lands_signed_in_as_the_lead() {
    let Some(browser) = Browser::start(
        "chromium_opens_a_mailed_link_presses_the_button_and_lands_signed_in_as_the_lead",
    )
    .await
    else {
        return;
    };
    let sandbox = sandbox(fast_config()).await;
    let secret = new_secret();
    let service = LinkService::start(&sandbox, &secret, &[]);
    let dir = tempfile::tempdir().unwrap();
    run_ok(&mut mail_run(
        &sandbox,
        dir.path(),
        2,
        service.base(),
        &secret,
        "at-click",
    ));
    let lead = &lead_ids(2)[1];
    let link = &mailed_links(dir.path(), 2, service.base())[lead];

    browser.open(link).await;
    assert_eq!(browser.title().await, "Sign in to your portal");
    assert_eq!(admin_stats(&sandbox).await.calls, 0, "opening costs 0");

    browser.click("form button").await;
    let landed = browser.wait_for_url(&sandbox.portal_url()).await;
    assert!(landed.contains("authKey="), "{landed}");
    let text = browser.text().await;
    assert!(text.contains(lead.as_str()), "signed in as {lead}: {text}");
    assert!(!text.contains("refused"), "{text}");
    // The browser's own GET /favicon.ico at the portal's origin is no call.
    let stats = admin_stats(&sandbox).await;
    assert_eq!(stats.calls, 1, "one call, at the click: {stats:?}");
    let issued: u64 = stats.keys_issued.values().sum();
    assert_eq!(issued, 1, "one key, minted at the click: {stats:?}");
    assert_eq!(stats.keys_issued.get(lead), Some(&1), "{stats:?}");
    assert_eq!(stats.by_status.get(&200), Some(&1), "{stats:?}");
    browser.quit().await;
}
