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

/// How fast a budget refills, and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per second; 0 turns the budget off (every frame is paid for).
    pub per_second: u32,
    /// The most units a session may have saved.
    pub burst: u32,
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

#[derive(Debug, Clone)]
pub struct Budget {
    /// Units saved (negative: in debt).
    level: f64,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl Budget {
    /// A full budget.
    pub fn new(rate: Rate, now: Instant) -> Budget {
        Budget {
            level: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * f64::from(rate.per_second);
        self.level = (self.level + earned).min(f64::from(rate.burst));
        self.at = now;
    }

    /// Takes `cost` units if the budget holds them now; otherwise takes nothing and says no.
    pub fn try_take(&mut self, cost: u32, rate: Rate, now: Instant) -> bool {
        if rate.per_second == 0 {
            return true;
        }
        self.refill(rate, now);
        if self.level < f64::from(cost) {
            return false;
        }
        self.level -= f64::from(cost);
        true
    }

    /// Takes `cost` more units for work already done (a replay that turned out longer than
    /// estimated), into debt if need be.
    pub fn charge(&mut self, cost: u32, rate: Rate, now: Instant) {
        if rate.per_second == 0 {
            return;
        }
        self.refill(rate, now);
        self.level -= f64::from(cost);
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

    #[test]
    fn a_full_budget_pays_for_the_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(RATE, t0);
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
        let t0 = Instant::now();
        let mut b = Budget::new(RATE, t0);
        assert!(b.try_take(25, RATE, t0));
        assert!(!b.try_take(6, RATE, t0), "5 left");
        assert!(b.try_take(5, RATE, t0), "the refused cost took nothing");
    }

    #[test]
    fn a_charge_may_leave_debt_that_later_frames_wait_for() {
        let t0 = Instant::now();
        let mut b = Budget::new(RATE, t0);
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
        let t0 = Instant::now();
        let mut b = Budget::new(off, t0);
        b.charge(1_000, off, t0);
        assert!((0..1_000).all(|_| b.try_take(100, off, t0)));
    }
}
