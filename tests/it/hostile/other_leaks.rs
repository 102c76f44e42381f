//! No key leaks from what the API answers the `otp` steps.

use std::process::Output;

use super::leaks::error_body;
use crate::support::hostile_server::{Answer, HostileServer, Request};
use crate::support::planted::{self, ACCESS, PUBLIC, REGISTER, SECRET};
use crate::support::{lsq, run};

/// The OTP the tests sign in with.
const OTP: &str = "918273";

/// `otp STEP` against a server that answers every call with a 400 echoing
/// the request (its Authorization and register-token headers included);
/// with a public key in the environment, or the access and secret keys
/// that fetch one.
fn otp(step: &str, public_key: bool) -> Output {
    let echo = |r: &Request| Answer::new(400, error_body(&r.echo()));
    let server = HostileServer::start(echo);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lsq(dir.path());
    cmd.args([
        "otp",
        step,
        "--host",
        &server.url(),
        "--phone",
        "+14-157415569",
    ])
    .args(["--rate", "1000/1s", "--register-token", REGISTER]);
    if step == "signin" {
        cmd.args(["--code", "c0de", "--otp", OTP]);
    }
    if public_key {
        cmd.env("LSQ_PUBLIC_AUTH_KEY", PUBLIC);
    } else {
        cmd.env("LSQ_ACCESS_KEY", ACCESS)
            .env("LSQ_SECRET_KEY", SECRET);
    }
    let out = run(&mut cmd);
    assert!(!server.requests().is_empty());
    out
}

#[test]
fn no_key_leaks_when_the_api_echoes_an_otp_step() {
    for (step, public_key) in [("request", false), ("request", true), ("signin", true)] {
        let out = otp(step, public_key);
        assert_eq!(out.status.code(), Some(1), "{step}");
        planted::assert_absent(&planted::outputs(&out), &[OTP]);
    }
}
