//! Helpers both benches use, kept once; each bench includes this with
//! `mod common;`.

use std::str::FromStr;

/// The number in environment variable `name`, or `default` when it is unset
/// or not a number. Underscores are ignored, so `BENCH_ROWS=1_000_000` reads
/// as written.
pub fn env_number<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The median of `values`, which it sorts; the upper one of the middle two
/// for an even count. Benches report medians so one slow run does not move
/// the figure.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
