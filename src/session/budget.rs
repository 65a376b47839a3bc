//! A session's budget for what its client asks of the hub: a token bucket of *units*, refilled
//! at `ws.frame_rate` units per second up to `ws.frame_burst`.
//!
//! Every frame the client sends costs units before the hub does anything with it
//! ([`frame_cost`]: one, plus one per 4 KiB); a frame the budget cannot pay for is dropped
//! unread and answered with a `rate_limited` error. A `resume` also costs the events it may
//! replay ([`replay_cost`]), estimated before the log is read and settled once it has been
//! ([`Budget::charge`] may leave the budget in debt: later frames wait until it is paid off).
//! So however a client floods, the hub's work for it is bounded by the rate, whatever each
//! frame asks for.

use tokio::time::Instant;

use crate::config::WsSettings;

/// How fast a budget refills, and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per second; 0 turns the budget off (every frame is paid for).
    pub per_second: u32,
    /// The most units a session may have saved.
    pub burst: u32,
}

impl From<&WsSettings> for Rate {
    fn from(ws: &WsSettings) -> Rate {
        Rate {
            per_second: ws.frame_rate,
            burst: ws.frame_burst,
        }
    }
}

/// Bytes of a frame that cost one more unit.
const BYTES_PER_UNIT: usize = 4096;
/// Events a `resume` may replay per unit.
const EVENTS_PER_UNIT: u64 = 100;

/// What a client frame of `bytes` costs: one unit, plus one per 4 KiB.
pub fn frame_cost(bytes: usize) -> u32 {
    1 + (bytes / BYTES_PER_UNIT).min(u32::MAX as usize - 1) as u32
}

/// What replaying up to `events` costs on top of the `resume` frame: one unit per 100 events,
/// at most what a full budget holds beside the frame's own unit (so that the largest replay
/// `ws.replay_limit` allows stays possible, once a full budget's worth of time apart).
pub fn replay_cost(events: u64, rate: Rate) -> u32 {
    (events / EVENTS_PER_UNIT).min(u64::from(rate.burst.saturating_sub(1))) as u32
}

/// The budget as one number (the generic cell rate algorithm): the instant, in nanoseconds
/// since [`epoch`], by which everything taken so far has been earned back. The budget holds
/// `burst - (tat - now) × rate` units; a `tat` further ahead than the burst is debt. One
/// `u64` per session, where a level and a timestamp would take three times that.
#[derive(Debug, Clone)]
pub struct Budget {
    tat: u64,
}

/// The instant budgets count from: the first time one was asked for it.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(t: Instant) -> u64 {
    t.saturating_duration_since(epoch())
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64
}

/// Nanoseconds one unit takes to earn back.
fn period(rate: Rate) -> u64 {
    1_000_000_000 / u64::from(rate.per_second.max(1))
}

impl Budget {
    /// A full budget.
    pub fn new(now: Instant) -> Budget {
        Budget { tat: nanos(now) }
    }

    /// Takes `cost` units if the budget holds them now; otherwise takes nothing and says no.
    pub fn try_take(&mut self, cost: u32, rate: Rate, now: Instant) -> bool {
        if rate.per_second == 0 {
            return true;
        }
        let (now, period) = (nanos(now), period(rate));
        let tat = self.tat.max(now).saturating_add(u64::from(cost).saturating_mul(period));
        if tat - now > u64::from(rate.burst).saturating_mul(period) {
            return false;
        }
        self.tat = tat;
        true
    }

    /// Takes `cost` more units for work already done (a replay that turned out longer than
    /// estimated), into debt if need be.
    pub fn charge(&mut self, cost: u32, rate: Rate, now: Instant) {
        if rate.per_second == 0 {
            return;
        }
        let (now, period) = (nanos(now), period(rate));
        self.tat = self.tat.max(now).saturating_add(u64::from(cost).saturating_mul(period));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_second: 10,
        burst: 30,
    };

    #[test]
    fn frames_cost_one_unit_and_one_more_per_4_kib() {
        let cases = [(0, 1), (40, 1), (4095, 1), (4096, 2), (65_536, 17)];
        for (bytes, units) in cases {
            assert_eq!(frame_cost(bytes), units, "{bytes} bytes");
        }
    }

    #[test]
    fn a_replay_costs_a_unit_per_100_events_and_never_more_than_a_full_budget_beside_its_frame() {
        let cases = [(0, 0), (99, 0), (100, 1), (2_000, 20), (10_000, 29)];
        for (events, units) in cases {
            assert_eq!(replay_cost(events, RATE), units, "{events} events");
        }
    }

    /// An instant well after the epoch (as every session's is).
    fn start() -> Instant {
        epoch() + Duration::from_secs(60)
    }

    #[test]
    fn a_full_budget_pays_for_the_burst_then_refills_at_the_rate() {
        let t0 = start();
        let mut b = Budget::new(t0);
        let paid = (0..100).filter(|_| b.try_take(1, RATE, t0)).count();
        assert_eq!(paid, 30, "the burst, at once");
        let t1 = t0 + Duration::from_millis(500);
        let paid = (0..100).filter(|_| b.try_take(1, RATE, t1)).count();
        assert_eq!(paid, 5, "half a second at 10 per second");
        let t2 = t1 + Duration::from_secs(3600);
        let paid = (0..100).filter(|_| b.try_take(1, RATE, t2)).count();
        assert_eq!(paid, 30, "never more than the burst saved");
    }

    #[test]
    fn a_cost_the_budget_cannot_pay_takes_nothing() {
        let t0 = start();
        let mut b = Budget::new(t0);
        assert!(b.try_take(25, RATE, t0));
        assert!(!b.try_take(6, RATE, t0), "5 left");
        assert!(b.try_take(5, RATE, t0), "the refused cost took nothing");
    }

    #[test]
    fn a_charge_may_leave_debt_that_later_frames_wait_for() {
        let t0 = start();
        let mut b = Budget::new(t0);
        b.charge(50, RATE, t0);
        assert!(!b.try_take(1, RATE, t0), "20 units in debt");
        assert!(
            !b.try_take(1, RATE, t0 + Duration::from_millis(2_000)),
            "paid off, nothing saved"
        );
        assert!(b.try_take(1, RATE, t0 + Duration::from_millis(2_100)));
    }

    #[test]
    fn a_rate_of_zero_pays_for_everything() {
        let off = Rate {
            per_second: 0,
            burst: 0,
        };
        let t0 = start();
        let mut b = Budget::new(t0);
        b.charge(1_000, off, t0);
        assert!((0..1_000).all(|_| b.try_take(100, off, t0)));
    }
}
