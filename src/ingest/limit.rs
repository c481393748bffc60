//! Rate limits: token buckets of clicks and of requests, per client id
//! and per client address.
//!
//! - Clicks per client: a request costs one token per click it carries
//!   (valid or not), so a batch of 1,000 weighs what 1,000 single clicks
//!   do. Known only once the body is decoded.
//! - Requests per client and per address: one token per request, taken
//!   from the headers alone, before the body is read, whatever the answer
//!   turns out to be (a refused request costs as much as an accepted one).
//! - Failed signatures per address: a stricter bucket that only a `401`
//!   takes from; while it is empty every request from the address is
//!   refused before any body is read or MAC computed, so guessing costs
//!   the guesser, not the server.
//!
//! A bucket holds at most its burst and refills at its rate. The number of
//! buckets of each kind is bounded ([`MAX_BUCKETS`]): when full, buckets
//! that have refilled completely (idle keys) are dropped, which loses
//! nothing since a full bucket is what a new one starts as.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most buckets of one kind kept at once.
pub const MAX_BUCKETS: usize = 10_000;

/// Longest `Retry-After` a bucket asks for.
const MAX_RETRY_AFTER_S: f64 = 3600.0;

/// A client's allowance of clicks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub clicks_per_s: f64,
    pub burst_clicks: f64,
}

/// An allowance of requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RequestRate {
    pub requests_per_s: f64,
    pub burst_requests: f64,
}

/// Tokens per second and most tokens held, whatever they count.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Allowance {
    per_s: f64,
    burst: f64,
}

impl From<Rate> for Allowance {
    fn from(rate: Rate) -> Allowance {
        Allowance { per_s: rate.clicks_per_s, burst: rate.burst_clicks }
    }
}

impl From<RequestRate> for Allowance {
    fn from(rate: RequestRate) -> Allowance {
        Allowance { per_s: rate.requests_per_s, burst: rate.burst_requests }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by key, bounded in number; `Sync`, shared by all connections.
#[derive(Debug)]
struct Buckets<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new() -> Buckets<K> {
        Buckets { buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `cost` tokens from `key`'s bucket at `now`, or says when to
    /// retry; a refused take takes nothing. `allowance` gives each key's.
    fn take(&self, key: &K, cost: f64, allowance: impl Fn(&K) -> Allowance, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(bucket) = bucket(&mut buckets, key, &allowance, now) else { return Err(Duration::from_secs(1)) };
        let rate = allowance(key);
        if cost <= bucket.tokens {
            bucket.tokens -= cost;
            return Ok(());
        }
        Err(Duration::from_secs_f64(((cost - bucket.tokens) / rate.per_s).min(MAX_RETRY_AFTER_S)))
    }

    /// When `key`'s bucket will hold one token: `None` if it holds one now.
    fn empty_for(&self, key: &K, allowance: impl Fn(&K) -> Allowance, now: Instant) -> Option<Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tokens = buckets.get(key).map_or(allowance(key).burst, |b| refilled(b, allowance(key), now));
        if tokens >= 1.0 {
            return None;
        }
        // Refresh the bucket, so that it is not dropped as idle.
        let bucket = bucket(&mut buckets, key, &allowance, now)?;
        Some(Duration::from_secs_f64(((1.0 - bucket.tokens) / allowance(key).per_s).min(MAX_RETRY_AFTER_S)))
    }

    /// Takes one token if there is one (a failure is counted even when the
    /// bucket is already empty: it stays empty).
    fn spend(&self, key: &K, allowance: impl Fn(&K) -> Allowance, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = bucket(&mut buckets, key, &allowance, now) {
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        }
    }
}

/// `key`'s bucket refilled up to `now`, made if missing; `None` when
/// `MAX_BUCKETS` are taken by keys that are not idle.
fn bucket<'b, K: Hash + Eq + Clone>(
    buckets: &'b mut HashMap<K, Bucket>,
    key: &K,
    allowance: &impl Fn(&K) -> Allowance,
    now: Instant,
) -> Option<&'b mut Bucket> {
    if !buckets.contains_key(key) && buckets.len() >= MAX_BUCKETS {
        buckets.retain(|k, bucket| refilled(bucket, allowance(k), now) < allowance(k).burst);
    }
    if !buckets.contains_key(key) {
        if buckets.len() >= MAX_BUCKETS {
            return None;
        }
        buckets.insert(key.clone(), Bucket { tokens: allowance(key).burst, at: now });
    }
    let bucket = buckets.get_mut(key)?;
    bucket.tokens = refilled(bucket, allowance(key), now);
    bucket.at = now;
    Some(bucket)
}

fn refilled(bucket: &Bucket, rate: Allowance, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate.per_s).min(rate.burst)
}

/// Clicks and requests by client id.
#[derive(Debug)]
pub struct RateLimiter {
    default: Rate,
    per_client: HashMap<String, Rate>,
    request_rate: RequestRate,
    clicks: Buckets<String>,
    requests: Buckets<String>,
}

/// A request over a rate: when enough tokens will be there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limited {
    pub retry_after: Duration,
    pub rate: Rate,
}

impl RateLimiter {
    pub fn new(default: Rate, per_client: HashMap<String, Rate>, request_rate: RequestRate) -> RateLimiter {
        RateLimiter { default, per_client, request_rate, clicks: Buckets::new(), requests: Buckets::new() }
    }

    pub fn rate(&self, client: &str) -> Rate {
        self.per_client.get(client).copied().unwrap_or(self.default)
    }

    pub fn request_rate(&self) -> RequestRate {
        self.request_rate
    }

    /// Takes `clicks` tokens from `client`'s bucket at time `now`, or says
    /// when to retry. A refused request takes nothing.
    pub fn take(&self, client: &str, clicks: usize, now: Instant) -> Result<(), Limited> {
        let rate = self.rate(client);
        let allowance = |id: &String| Allowance::from(self.rate(id));
        self.clicks.take(&client.to_owned(), clicks as f64, allowance, now).map_err(|retry_after| Limited { retry_after, rate })
    }

    /// Takes one request token from `client`'s bucket, or says when to retry.
    pub fn take_request(&self, client: &str, now: Instant) -> Result<(), Duration> {
        self.requests.take(&client.to_owned(), 1.0, |_| self.request_rate.into(), now)
    }
}

/// The allowances of one client address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddressRates {
    /// Every request.
    pub requests: RequestRate,
    /// Requests answered `401`.
    pub failures: RequestRate,
}

/// Why an address is refused, and when to retry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AddressLimited {
    /// Over its rate of requests.
    Requests(Duration),
    /// Its bucket of failed signatures is empty.
    Failures(Duration),
}

/// Requests and failed signatures by client address.
#[derive(Debug)]
pub struct AddressLimiter {
    rates: AddressRates,
    requests: Buckets<IpAddr>,
    failures: Buckets<IpAddr>,
}

impl AddressLimiter {
    pub fn new(rates: AddressRates) -> AddressLimiter {
        AddressLimiter { rates, requests: Buckets::new(), failures: Buckets::new() }
    }

    pub fn rates(&self) -> AddressRates {
        self.rates
    }

    /// Admits a request from `address` (taking a request token), or says
    /// why not: its failure bucket is empty, or it is over its rate.
    pub fn admit(&self, address: IpAddr, now: Instant) -> Result<(), AddressLimited> {
        if let Some(after) = self.failures.empty_for(&address, |_| self.rates.failures.into(), now) {
            return Err(AddressLimited::Failures(after));
        }
        self.requests.take(&address, 1.0, |_| self.rates.requests.into(), now).map_err(AddressLimited::Requests)
    }

    /// A request from `address` failed authentication.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        self.failures.spend(&address, |_| self.rates.failures.into(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate { clicks_per_s: 100.0, burst_clicks: 200.0 };
    const REQUESTS: RequestRate = RequestRate { requests_per_s: 10.0, burst_requests: 20.0 };

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(RATE, HashMap::new(), REQUESTS);
        let t0 = Instant::now();
        assert!(limiter.take("a", 150, t0).is_ok());
        let refused = limiter.take("a", 100, t0).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        // Refused requests took nothing: after 0.5 s there are exactly 100.
        assert!(limiter.take("a", 100, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.take("a", 1, t0 + Duration::from_millis(500)).is_err());
        // Other clients have their own bucket.
        assert!(limiter.take("b", 200, t0).is_ok());
    }

    #[test]
    fn per_client_rates_override_the_default() {
        let limiter = RateLimiter::new(RATE, HashMap::from([("big".to_owned(), Rate { clicks_per_s: 1e6, burst_clicks: 1e6 })]), REQUESTS);
        let t0 = Instant::now();
        assert!(limiter.take("big", 500_000, t0).is_ok());
        assert!(limiter.take("small", 500, t0).is_err());
    }

    #[test]
    fn buckets_are_bounded_and_idle_ones_are_dropped() {
        let limiter = RateLimiter::new(RATE, HashMap::new(), REQUESTS);
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS {
            limiter.take(&i.to_string(), 200, t0).unwrap();
        }
        // All buckets are empty: a new client cannot get one yet.
        assert!(limiter.take("new", 1, t0).is_err());
        // Two seconds later they have refilled and make room.
        assert!(limiter.take("new", 1, t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(limiter.clicks.buckets.lock().unwrap().len(), 1);
    }

    #[test]
    fn requests_per_client_are_counted_whatever_their_size() {
        let limiter = RateLimiter::new(RATE, HashMap::new(), REQUESTS);
        let t0 = Instant::now();
        for _ in 0..20 {
            limiter.take_request("a", t0).unwrap();
        }
        assert_eq!(limiter.take_request("a", t0), Err(Duration::from_millis(100)));
        assert!(limiter.take_request("b", t0).is_ok());
        assert!(limiter.take_request("a", t0 + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn an_address_whose_failures_ran_out_is_refused_until_one_refills() {
        let failures = RequestRate { requests_per_s: 2.0, burst_requests: 3.0 };
        let limiter = AddressLimiter::new(AddressRates { requests: REQUESTS, failures });
        let (bad, good): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.admit(bad, t0).unwrap();
            limiter.failed(bad, t0);
        }
        assert_eq!(limiter.admit(bad, t0), Err(AddressLimited::Failures(Duration::from_millis(500))));
        // Failing while refused keeps the bucket empty, not below empty.
        limiter.failed(bad, t0);
        assert!(limiter.admit(bad, t0 + Duration::from_millis(500)).is_ok());
        // Another address is untouched; its requests are bounded on their own.
        for _ in 0..20 {
            limiter.admit(good, t0).unwrap();
        }
        assert!(matches!(limiter.admit(good, t0), Err(AddressLimited::Requests(_))));
    }
}
