//! Per-token rate limits (429): a runaway client loop must not starve everyone else. Keyed
//! GCRA limiters from `governor`, one for members and one for services.

use std::{num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use crate::{
    auth::{Principal, Role},
    config::LimitSettings,
    domain::{TenantId, UserId},
};

type Limiter = DefaultKeyedRateLimiter<(TenantId, UserId)>;

pub struct RateLimits {
    members: Option<Limiter>,
    services: Option<Limiter>,
}

fn limiter(per_second: u32, burst: u32) -> Option<Limiter> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Limiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl RateLimits {
    pub fn new(s: &LimitSettings) -> RateLimits {
        RateLimits {
            members: limiter(s.user_per_second, s.user_burst),
            services: limiter(s.service_per_second, s.service_burst),
        }
    }

    /// Counts one request by `p`; `Err(wait)` when over the limit.
    pub fn check(&self, p: &Principal) -> Result<(), Duration> {
        let limiter = if p.has(Role::Service) {
            &self.services
        } else {
            &self.members
        };
        let Some(limiter) = limiter else { return Ok(()) };
        limiter
            .check_key(&(p.tenant.clone(), p.user.clone()))
            .map_err(|not_until| not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::Id;

    fn principal(user: &str, role: Role) -> Principal {
        Principal {
            tenant: TenantId::parse("acme").unwrap(),
            user: UserId::parse(user).unwrap(),
            name: None,
            roles: vec![role],
            locations: Arc::from(Vec::new()),
            exp: u64::MAX,
        }
    }

    #[test]
    fn a_member_over_the_burst_is_limited_and_others_are_not() {
        let limits = RateLimits::new(&LimitSettings {
            user_per_second: 1,
            user_burst: 2,
            service_per_second: 0,
            service_burst: 0,
        });
        let sam = principal("sam", Role::User);
        assert!(limits.check(&sam).is_ok());
        assert!(limits.check(&sam).is_ok());
        assert!(limits.check(&sam).is_err(), "the third request in the same instant");
        assert!(
            limits.check(&principal("sue", Role::User)).is_ok(),
            "limits are per user"
        );
        for _ in 0..100 {
            assert!(
                limits.check(&principal("ingest", Role::Service)).is_ok(),
                "services are unlimited by default"
            );
        }
    }
}
