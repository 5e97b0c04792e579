//! Per-principal rate limit on GraphQL: a token bucket per bearer token, and one shared bucket for
//! all anonymous callers (without a trusted proxy the server cannot tell anonymous clients apart).
//! A request over the limit gets 429 `RATE_LIMITED` with `Retry-After`, before it is parsed.
//!
//! Memory is bounded: buckets that have refilled completely carry no state and are dropped when
//! the table grows past `MAX_BUCKETS` (10,000).

use crate::auth::Principal;
use crate::errors::{ApiError, ErrorKind};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_BUCKETS: usize = 10_000;

/// Requests per second and burst, for each token and for all anonymous callers together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_token_per_second: f64,
    pub per_token_burst: f64,
    pub anonymous_per_second: f64,
    pub anonymous_burst: f64,
}

impl RateLimit {
    /// `per_second` for each token, with a burst of twice that; all anonymous callers together get
    /// five times a token's share. `None` (no limit) for a rate of zero or less.
    pub fn per_token(per_second: f64) -> Option<RateLimit> {
        (per_second > 0.0).then(|| RateLimit {
            per_token_per_second: per_second,
            per_token_burst: (2.0 * per_second).max(1.0),
            anonymous_per_second: 5.0 * per_second,
            anonymous_burst: (10.0 * per_second).max(1.0),
        })
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::per_token(DEFAULT_PER_TOKEN_PER_SECOND).expect("a positive default")
    }
}

/// Requests per second each token may make by default.
pub const DEFAULT_PER_TOKEN_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets, keyed by token id (`None` = anonymous).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<Option<String>, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Arc<RateLimiter> {
        Arc::new(RateLimiter { limit, buckets: Mutex::new(HashMap::new()) })
    }

    /// Takes one request from the principal's bucket at `now`; on refusal, how long until the next
    /// request would pass.
    pub fn check(&self, principal: &Principal, now: Instant) -> Result<(), Duration> {
        let key = principal.token_id().map(|id| id.0.clone());
        let (rate, burst) = match key {
            Some(_) => (self.limit.per_token_per_second, self.limit.per_token_burst),
            None => (self.limit.anonymous_per_second, self.limit.anonymous_burst),
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|k, b| {
                let (rate, burst) = if k.is_some() {
                    (self.limit.per_token_per_second, self.limit.per_token_burst)
                } else {
                    (self.limit.anonymous_per_second, self.limit.anonymous_burst)
                };
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: burst, at: now });
        bucket.tokens = (bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate.max(f64::MIN_POSITIVE)))
        }
    }
}

/// The middleware: refuses a request over its principal's limit.
pub async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    principal: Principal,
    request: Request,
    next: Next,
) -> Response {
    match limiter.check(&principal, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let who =
                principal.token_id().map(|id| format!("token {id}")).unwrap_or_else(|| "anonymous callers".into());
            let (per_second, burst) = match principal.token_id() {
                Some(_) => (limiter.limit.per_token_per_second, limiter.limit.per_token_burst),
                None => (limiter.limit.anonymous_per_second, limiter.limit.anonymous_burst),
            };
            let e = ApiError::new(
                ErrorKind::RateLimited,
                format!(
                    "rate limit exceeded for {who}: {per_second} requests/s (burst {burst}); retry in {:.1}s",
                    wait.as_secs_f64()
                ),
            );
            let mut response = crate::graphql::refusal(e);
            let retry = wait.as_secs().max(1).to_string();
            if let Ok(v) = axum::http::HeaderValue::from_str(&retry) {
                response.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            response.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, TokenId};

    #[test]
    fn each_token_has_its_own_bucket_and_refills() {
        let limiter = RateLimiter::new(RateLimit {
            per_token_per_second: 10.0,
            per_token_burst: 3.0,
            anonymous_per_second: 1.0,
            anonymous_burst: 1.0,
        });
        let a = Principal::Token { id: TokenId("ta".into()), role: Role::Reader, partner: None };
        let b = Principal::Token { id: TokenId("tb".into()), role: Role::Reader, partner: None };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(&a, t0).is_ok());
        }
        let wait = limiter.check(&a, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(limiter.check(&b, t0).is_ok(), "another token is not affected");
        assert!(limiter.check(&Principal::Anonymous, t0).is_ok());
        assert!(limiter.check(&Principal::Anonymous, t0).is_err(), "anonymous callers share one bucket");
        assert!(limiter.check(&a, t0 + Duration::from_millis(100)).is_ok(), "refilled");
    }
}
