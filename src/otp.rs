//! Portal sign-in with a one-time password: request an OTP for a lead's phone,
//! then sign in with it to get the lead's auth key and login link.

use clap::Subcommand;

/// `lsq-dispatch otp …`.
#[derive(Debug, Clone, Subcommand)]
pub enum OtpCommand {}

/// Runs an `otp` subcommand and returns its exit code.
pub async fn execute(command: OtpCommand) -> anyhow::Result<u8> {
    match command {}
}
