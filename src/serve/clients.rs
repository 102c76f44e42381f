//! Who the client is, and how often it may click: the socket's peer, or the
//! address a trusted reverse proxy put in `X-Forwarded-For`; and a cap on
//! each client's POSTs (`--client-rate`) so that one client cannot drain the
//! tenant's budget by clicking many links.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;

use crate::limiter::Rate;

/// The client of a request that came from `peer`: `peer` itself unless it is
/// a trusted proxy; then the right-most `X-Forwarded-For` address that is
/// not a trusted proxy (the left ones are the client's word, and a client
/// can write anything there).
pub(crate) fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(address) = hop.parse::<IpAddr>() else {
            break;
        };
        client = address.to_canonical();
        if !trusted.contains(&client) {
            break;
        }
    }
    client
}

/// Each client's recent POSTs, in a sliding window.
pub(crate) struct ClientCap {
    rate: Rate,
    seen: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl ClientCap {
    /// At most `rate` POSTs per client.
    pub(crate) fn new(rate: Rate) -> ClientCap {
        ClientCap {
            rate,
            seen: Mutex::default(),
        }
    }

    /// Counts a POST of `client` at `now`; false when it is over the cap
    /// (and then it is not counted, so a client that waits gets in again).
    pub(crate) fn admit(&self, client: IpAddr, now: Instant) -> bool {
        let window = self.rate.window;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= 10_000 {
            seen.retain(|_, times| times.back().is_some_and(|t| now - *t < window));
        }
        let times = seen.entry(client).or_default();
        while times.front().is_some_and(|t| now - *t >= window) {
            times.pop_front();
        }
        if times.len() >= self.rate.calls as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn only_a_trusted_proxy_is_believed_and_only_its_own_hop() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let headers = forwarded("1.1.1.1, 198.51.100.7");
        assert_eq!(client_of(stranger, &headers, &[proxy]), stranger);
        assert_eq!(
            client_of(proxy, &headers, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let chained = forwarded("198.51.100.7, 10.0.0.2");
        let both = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(
            client_of(proxy, &chained, &both),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_of(proxy, &forwarded("junk"), &[proxy]), proxy);
        assert_eq!(client_of(proxy, &HeaderMap::new(), &[proxy]), proxy);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            client_of(mapped, &headers, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_client_over_its_cap_waits_out_the_window_and_others_do_not() {
        let cap = ClientCap::new("2/1m".parse().unwrap());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let t = Instant::now();
        assert!(cap.admit(a, t));
        assert!(cap.admit(a, t + Duration::from_secs(1)));
        assert!(!cap.admit(a, t + Duration::from_secs(2)));
        assert!(cap.admit(b, t + Duration::from_secs(2)));
        assert!(cap.admit(a, t + Duration::from_secs(60)));
    }
}
