//! The `lsq-dispatch sandbox` subcommand: runs the built-in LeadSquared
//! simulator (the `lsq-sandbox` crate) in the foreground until Ctrl-C or
//! SIGTERM, and prints what a user needs to point a run at it.

use anyhow::Context as _;
use lsq_sandbox::{
    Sandbox, SandboxArgs, DEFAULT_ACCESS_KEY, DEFAULT_PUBLIC_AUTH_KEY, DEFAULT_SECRET_KEY,
    DEFAULT_TENANT_AUTH_KEY, DEMO_LEAD_EMAIL, DEMO_LEAD_ID, DEMO_LEAD_PHONE, TENANT_KEY_PATH,
};

use crate::console::{say, shell_quote};

/// Runs `lsq-dispatch sandbox`: starts the sandbox, prints where it listens and
/// what to point a run at, and serves until Ctrl-C or SIGTERM.
pub async fn serve(args: SandboxArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let sandbox = Sandbox::start_logging(config).await?;
    let c = sandbox.config();
    // Only the documented defaults are printed; credentials taken from the
    // environment are secrets and stay out of the output. Every line pastes
    // into a shell: the values as quoted words, the rest as comments.
    let export = |var: &str, value: &str| say!("export {var}={}", shell_quote(value));
    let key = |var: &str, value: &str, default: &str| match value == default {
        true => export(var, value),
        false => say!("# {var}: the one in your environment (not shown)"),
    };
    say!("# lsq-dispatch sandbox listening on {}", sandbox.base_url());
    say!("# paste these lines into a shell to point lsq-dispatch at it:");
    export("LSQ_HOST", &sandbox.base_url());
    key("LSQ_ACCESS_KEY", &c.access_key, DEFAULT_ACCESS_KEY);
    key("LSQ_SECRET_KEY", &c.secret_key, DEFAULT_SECRET_KEY);
    key(
        "LSQ_TENANT_AUTH_KEY",
        &c.tenant_auth_key,
        DEFAULT_TENANT_AUTH_KEY,
    );
    key(
        "LSQ_PUBLIC_AUTH_KEY",
        &c.public_auth_key,
        DEFAULT_PUBLIC_AUTH_KEY,
    );
    export("LSQ_PORTAL_ID", &c.portal_ids[0]);
    for other in &c.portal_ids[1..] {
        say!("# also portal id {other}");
    }
    export("LSQ_PORTAL_URL", &sandbox.portal_url());
    export(
        "LSQ_KEY_LIFETIME",
        &humantime::format_duration(c.key_ttl).to_string(),
    );
    say!(
        "# tenant key: POST {}{TENANT_KEY_PATH}?accessKey=&secretKey=",
        sandbox.base_url()
    );
    say!("# demo lead: phone {DEMO_LEAD_PHONE}, LeadId {DEMO_LEAD_ID}, email {DEMO_LEAD_EMAIL}");
    say!(
        "# budget {}, key ttl {:?}, admin: {}/admin/stats",
        c.budget,
        c.key_ttl,
        sandbox.base_url()
    );

    wait_for_stop().await?;
    eprintln!("sandbox: stopping");
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    eprintln!(
        "sandbox: {} calls, by status {:?}, {} dropped, at most {} in one window",
        stats.calls, stats.by_status, stats.dropped, stats.max_in_window
    );
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot watch for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot watch for Ctrl-C")?;
    Ok(())
}
