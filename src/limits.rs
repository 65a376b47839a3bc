//! Per-token rate limits (429): a runaway client loop must not starve everyone else. Keyed
//! GCRA limiters from `governor`, one for members and one for services.
//!
//! Which limiter counts a call is decided by the token's roles alone, because the check runs
//! when the token is verified, before any handler knows which role it will use (and several
//! calls accept more than one role). The rule is `limiters_for`: every limiter whose role the
//! token carries counts the call, and it passes only when all of them let it through. So a
//! token that may act as a user (`user` or `admin`) is always held to the user limit, whatever
//! else it carries — `[service, user]` can no longer reach the Message Center at the service
//! rate (unlimited by default) — and one that may act as a service is held to the service
//! limit as well when that is configured.

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

    /// Counts one request by `p`; `Err(wait)` when over a limit.
    ///
    /// When the first limiter refuses, the second does not count the call; when the second
    /// refuses, the first has counted it (governor cannot take a cell back). A refused call
    /// costing a mixed token a little of its other budget is the price of a simple rule.
    pub fn check(&self, p: &Principal) -> Result<(), Duration> {
        let key = (p.tenant.clone(), p.user.clone());
        for kind in limiters_for(&p.roles) {
            let limiter = match kind {
                LimiterKind::Members => &self.members,
                LimiterKind::Services => &self.services,
            };
            if let Some(limiter) = limiter {
                limiter
                    .check_key(&key)
                    .map_err(|not_until| not_until.wait_time_from(governor::clock::DefaultClock::default().now()))?;
            }
        }
        Ok(())
    }
}

/// One of the two budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterKind {
    /// `limits.user_*`: tokens that may use the Message Center.
    Members,
    /// `limits.service_*`: tokens that may call ingestion and the directory.
    Services,
}

/// The limiters that count a call by a token with `roles`: the member limiter when the token
/// carries `user` or `admin`, the service limiter when it carries `service` (both for a token
/// with both). A token with no role is counted as a member: it can call nothing but is still
/// verified, and must not be a free way to make the hub work.
pub fn limiters_for(roles: &[Role]) -> Vec<LimiterKind> {
    let member = roles.iter().any(|r| matches!(r, Role::User | Role::Admin));
    let service = roles.contains(&Role::Service);
    let mut out = Vec::with_capacity(2);
    if member || !service {
        out.push(LimiterKind::Members);
    }
    if service {
        out.push(LimiterKind::Services);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::Id;

    fn principal(user: &str, role: Role) -> Principal {
        with_roles(user, &[role])
    }

    fn with_roles(user: &str, roles: &[Role]) -> Principal {
        Principal {
            tenant: TenantId::parse("acme").unwrap(),
            user: UserId::parse(user).unwrap(),
            name: None,
            roles: roles.to_vec(),
            locations: Arc::from(Vec::new()),
            exp: u64::MAX,
        }
    }

    #[test]
    fn every_limiter_whose_role_the_token_carries_counts_it() {
        use LimiterKind::*;
        use Role::*;
        let table: [(&[Role], &[LimiterKind]); 8] = [
            (&[User], &[Members]),
            (&[Admin], &[Members]),
            (&[User, Admin], &[Members]),
            (&[Service], &[Services]),
            (&[Service, User], &[Members, Services]),
            (&[User, Service], &[Members, Services]),
            (&[Admin, Service], &[Members, Services]),
            (&[], &[Members]),
        ];
        for (roles, want) in table {
            assert_eq!(limiters_for(roles), want, "{roles:?}");
        }
    }

    #[test]
    fn a_token_that_is_both_service_and_user_is_held_to_the_user_limit() {
        let limits = RateLimits::new(&LimitSettings {
            user_per_second: 1,
            user_burst: 3,
            service_per_second: 0,
            service_burst: 0,
        });
        let both = with_roles("bot", &[Role::Service, Role::User]);
        for _ in 0..3 {
            assert!(limits.check(&both).is_ok());
        }
        assert!(limits.check(&both).is_err(), "the fourth request in the same instant");
    }

    #[test]
    fn a_token_that_is_both_is_also_held_to_a_configured_service_limit() {
        let limits = RateLimits::new(&LimitSettings {
            user_per_second: 100,
            user_burst: 100,
            service_per_second: 1,
            service_burst: 2,
        });
        let both = with_roles("bot", &[Role::Service, Role::Admin]);
        assert!(limits.check(&both).is_ok());
        assert!(limits.check(&both).is_ok());
        assert!(limits.check(&both).is_err(), "over the service burst");
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
