//! Injected misbehaviour: network jitter before a call is counted, service time
//! before it is answered, and the 500s and dropped connections that a busy
//! service produces. One RNG, seeded when asked, so a failing run can be
//! replayed with the same faults.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// What happens to an accepted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Served normally.
    None,
    /// Answered 500.
    ServerError,
    /// Connection cut without an answer.
    Drop,
}

/// The fault settings and the RNG that draws them.
#[derive(Debug)]
pub(crate) struct Faults {
    rng: StdRng,
    jitter: (Duration, Duration),
    service_time: (Duration, Duration),
    error_rate: f64,
    drop_rate: f64,
    late_connections: (f64, Duration),
    slow_calls: (f64, (Duration, Duration)),
}

impl Faults {
    pub(super) fn new(
        seed: Option<u64>,
        jitter: (Duration, Duration),
        service_time: (Duration, Duration),
        error_rate: f64,
        drop_rate: f64,
    ) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        Faults {
            rng,
            jitter,
            service_time,
            error_rate,
            drop_rate,
            late_connections: (0.0, Duration::ZERO),
            slow_calls: (0.0, (Duration::ZERO, Duration::ZERO)),
        }
    }

    /// Delays the first call of this fraction of new connections.
    pub(super) fn with_late_connections(mut self, late: (f64, Duration)) -> Self {
        self.late_connections = late;
        self
    }

    /// Serves this fraction of calls in this range instead: a long tail.
    pub(super) fn with_slow_calls(mut self, slow: (f64, (Duration, Duration))) -> Self {
        self.slow_calls = slow;
        self
    }

    /// The extra inbound delay of a call: the set delay for the first call
    /// of a connection drawn late, else none.
    pub(super) fn late_arrival(&mut self, first_on_connection: bool) -> Duration {
        let (fraction, delay) = self.late_connections;
        if first_on_connection && fraction > 0.0 && self.rng.random::<f64>() < fraction {
            delay
        } else {
            Duration::ZERO
        }
    }

    /// The inbound delay for one call.
    pub(super) fn jitter(&mut self) -> Duration {
        let range = self.jitter;
        self.pick(range)
    }

    /// The time to serve one accepted call.
    pub(super) fn service_time(&mut self) -> Duration {
        let (fraction, slow) = self.slow_calls;
        if fraction > 0.0 && self.rng.random::<f64>() < fraction {
            return self.pick(slow);
        }
        let range = self.service_time;
        self.pick(range)
    }

    /// One draw decides both faults, so the two rates are exact fractions of
    /// the same calls and never overlap.
    pub(super) fn fault(&mut self) -> Fault {
        if self.drop_rate <= 0.0 && self.error_rate <= 0.0 {
            return Fault::None;
        }
        let u: f64 = self.rng.random();
        if u < self.drop_rate {
            Fault::Drop
        } else if u < self.drop_rate + self.error_rate {
            Fault::ServerError
        } else {
            Fault::None
        }
    }

    fn pick(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_nanos() as u64;
        lo + Duration::from_nanos(self.rng.random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: (Duration, Duration) = (Duration::ZERO, Duration::ZERO);

    #[test]
    fn rates_are_fractions_of_calls() {
        let mut f = Faults::new(Some(7), ZERO, ZERO, 0.25, 0.25);
        let draws: Vec<Fault> = (0..4000).map(|_| f.fault()).collect();
        let count = |x| draws.iter().filter(|&&d| d == x).count();
        assert!((800..1200).contains(&count(Fault::Drop)));
        assert!((800..1200).contains(&count(Fault::ServerError)));
    }

    #[test]
    fn a_seed_replays_the_same_faults() {
        let mut a = Faults::new(Some(42), ZERO, ZERO, 0.5, 0.0);
        let mut b = Faults::new(Some(42), ZERO, ZERO, 0.5, 0.0);
        for _ in 0..100 {
            assert_eq!(a.fault(), b.fault());
        }
    }

    #[test]
    fn delays_stay_in_range() {
        let range = (Duration::from_millis(50), Duration::from_millis(300));
        let mut f = Faults::new(Some(1), range, range, 0.0, 0.0);
        for _ in 0..100 {
            let d = f.jitter();
            assert!(d >= range.0 && d <= range.1);
        }
        let tail = (Duration::from_secs(2), Duration::from_secs(3));
        let mut tailed = Faults::new(Some(3), ZERO, range, 0.0, 0.0).with_slow_calls((0.05, tail));
        let slow = (0..2000)
            .map(|_| tailed.service_time())
            .filter(|d| *d >= tail.0 && *d <= tail.1)
            .count();
        assert!((50..150).contains(&slow), "{slow} of 2000 in the tail");
        let mut fixed = Faults::new(None, ZERO, (range.1, range.1), 0.0, 0.0);
        assert_eq!(fixed.service_time(), range.1);
        assert_eq!(fixed.jitter(), Duration::ZERO);
    }
}
