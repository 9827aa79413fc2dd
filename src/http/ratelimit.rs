//! The rate limit of the public link routes: each client address may make
//! `http.link_burst` requests at once and then one per `http.link_rate`; more get 429
//! with `Retry-After`. The client is the peer address, or, for a peer listed in
//! `http.trusted_proxies`, the last address in `X-Forwarded-For` that is not a trusted
//! proxy itself. IPv6 clients are counted by their /64 network.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::AppState;
use crate::config::http::HttpConfig;

/// Every this many requests, addresses back at a full burst are forgotten.
const SWEEP_EVERY: u64 = 4096;

struct Limiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    trusted: Vec<IpAddr>,
    seen: AtomicU64,
}

/// `router`'s routes are rate-limited per client address by `config.link_rate`.
pub fn limited(router: Router<AppState>, config: &HttpConfig) -> Router<AppState> {
    let rate = config.link_rate;
    let quota = Quota::with_period(rate.period)
        .expect("the period is checked above zero")
        .allow_burst(rate.burst);
    let limiter = Arc::new(Limiter {
        limiter: DefaultKeyedRateLimiter::keyed(quota),
        clock: DefaultClock::default(),
        trusted: config.trusted_proxies.clone(),
        seen: AtomicU64::new(0),
    });
    router.layer(middleware::from_fn_with_state(limiter, limit))
}

async fn limit(State(l): State<Arc<Limiter>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = client(peer, req.headers(), &l.trusted);
    if l.seen.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
        l.limiter.retain_recent();
    }
    match l.limiter.check_key(&client) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(l.clock.now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::debug!(client = %client, wait_s = secs, "link rate limit");
            let mut res = (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many requests from this address; try again in {secs} s.\n"),
            )
                .into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            res
        }
    }
}

/// The address a request is counted under.
pub(crate) fn client(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let unknown = IpAddr::from([0, 0, 0, 0]);
    // A dual-stack listener shows IPv4 peers as `::ffff:a.b.c.d`.
    let mut ip = peer.unwrap_or(unknown).to_canonical();
    if trusted.contains(&ip) {
        // The proxies append: read from the right and stop at the first untrusted hop.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            // Some proxies add the client's port: `192.0.2.1:5678`, `[2001:db8::1]:443`.
            let hop = hop
                .parse::<IpAddr>()
                .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
                .map(|ip| ip.to_canonical());
            match hop {
                Ok(hop) if trusted.contains(&hop) => ip = hop,
                Ok(hop) => {
                    ip = hop;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy = [ip("10.0.0.2")];
        let h = xff("203.0.113.9, 198.51.100.7");
        // Not from the proxy: the header is anyone's to write.
        assert_eq!(client(Some(ip("192.0.2.1")), &h, &proxy), ip("192.0.2.1"));
        // From the proxy: the hop it saw, not what the client wrote before it.
        assert_eq!(client(Some(ip("10.0.0.2")), &h, &proxy), ip("198.51.100.7"));
        // Two trusted proxies in a row.
        let two = [ip("10.0.0.2"), ip("10.0.0.3")];
        let h = xff("198.51.100.7, 10.0.0.3");
        assert_eq!(client(Some(ip("10.0.0.2")), &h, &two), ip("198.51.100.7"));
        // A hop with its port.
        assert_eq!(
            client(Some(ip("10.0.0.2")), &xff("198.51.100.7:4711"), &proxy),
            ip("198.51.100.7")
        );
        // No header: the proxy itself.
        assert_eq!(
            client(Some(ip("10.0.0.2")), &HeaderMap::new(), &proxy),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv6_clients_count_by_network() {
        let a = client(Some(ip("2001:db8:1:2::5")), &HeaderMap::new(), &[]);
        let b = client(Some(ip("2001:db8:1:2:ffff::9")), &HeaderMap::new(), &[]);
        assert_eq!(a, b);
        assert_eq!(
            client(Some(ip("::ffff:192.0.2.4")), &HeaderMap::new(), &[]),
            ip("192.0.2.4")
        );
    }
}
