//! Rate limits: a token bucket of clicks per client id.
//!
//! A request costs one token per click it carries (valid or not), so a batch
//! of 1,000 weighs what 1,000 single clicks do. A bucket holds at most
//! `burst_clicks` tokens and refills at `clicks_per_s`. The number of
//! buckets is bounded ([`MAX_BUCKETS`]): when full, buckets that have
//! refilled completely (idle clients) are dropped, which loses nothing since
//! a full bucket is what a new one starts as.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most buckets kept at once.
pub const MAX_BUCKETS: usize = 10_000;

/// A client's allowance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub clicks_per_s: f64,
    pub burst_clicks: f64,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by client id; `Sync`, shared by all connections.
#[derive(Debug)]
pub struct RateLimiter {
    default: Rate,
    per_client: HashMap<String, Rate>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// A request over its client's rate: when enough tokens will be there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limited {
    pub retry_after: Duration,
    pub rate: Rate,
}

impl RateLimiter {
    pub fn new(default: Rate, per_client: HashMap<String, Rate>) -> RateLimiter {
        RateLimiter { default, per_client, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn rate(&self, client: &str) -> Rate {
        self.per_client.get(client).copied().unwrap_or(self.default)
    }

    /// Takes `clicks` tokens from `client`'s bucket at time `now`, or says
    /// when to retry. A refused request takes nothing.
    pub fn take(&self, client: &str, clicks: usize, now: Instant) -> Result<(), Limited> {
        let rate = self.rate(client);
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(client) && buckets.len() >= MAX_BUCKETS {
            buckets.retain(|id, bucket| refilled(bucket, self.rate(id), now) < self.rate(id).burst_clicks);
        }
        if !buckets.contains_key(client) {
            if buckets.len() >= MAX_BUCKETS {
                return Err(Limited { retry_after: Duration::from_secs(1), rate });
            }
            buckets.insert(client.to_owned(), Bucket { tokens: rate.burst_clicks, at: now });
        }
        let Some(bucket) = buckets.get_mut(client) else { unreachable!("inserted above") };
        bucket.tokens = refilled(bucket, rate, now);
        bucket.at = now;
        let cost = clicks as f64;
        if cost <= bucket.tokens {
            bucket.tokens -= cost;
            return Ok(());
        }
        let missing = cost - bucket.tokens;
        let retry_after = Duration::from_secs_f64((missing / rate.clicks_per_s).min(3600.0));
        Err(Limited { retry_after, rate })
    }
}

fn refilled(bucket: &Bucket, rate: Rate, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate.clicks_per_s).min(rate.burst_clicks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate { clicks_per_s: 100.0, burst_clicks: 200.0 };

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(RATE, HashMap::new());
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
        let limiter = RateLimiter::new(RATE, HashMap::from([("big".to_owned(), Rate { clicks_per_s: 1e6, burst_clicks: 1e6 })]));
        let t0 = Instant::now();
        assert!(limiter.take("big", 500_000, t0).is_ok());
        assert!(limiter.take("small", 500, t0).is_err());
    }

    #[test]
    fn buckets_are_bounded_and_idle_ones_are_dropped() {
        let limiter = RateLimiter::new(RATE, HashMap::new());
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS {
            limiter.take(&i.to_string(), 200, t0).unwrap();
        }
        // All buckets are empty: a new client cannot get one yet.
        assert!(limiter.take("new", 1, t0).is_err());
        // Two seconds later they have refilled and make room.
        assert!(limiter.take("new", 1, t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
