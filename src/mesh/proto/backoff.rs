//! Reconnect backoff for one peer, free of clocks and randomness.
//!
//! This module owns how long a peer's supervisor waits before dialing again. It uses
//! "decorrelated jitter" (each delay is drawn between the initial delay and three times the
//! previous one, capped): delays grow roughly 1.5× per failure on average from about 1 s to
//! the 60 s cap, and peers that failed together spread out instead of redialing in step. A
//! link that stayed up for [`BackoffConfig::stable_after`] counts as healthy: the next
//! failure starts again from the initial delay, while a link that flaps keeps backing off.
//!
//! The caller supplies the random number and the link's uptime, so tests are deterministic:
//! [`Backoff::next_delay`] takes a value in `[0, 1]` (the mesh core draws it from its seeded
//! generator). The first dial of a peer is not delayed; the backoff applies after failures.

use std::time::Duration;

/// Tuning of a [`Backoff`]. `Default` gives the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Smallest delay, and the scale of the first one (default 1 s).
    pub initial: Duration,
    /// Largest delay (default 60 s).
    pub max: Duration,
    /// A link up at least this long resets the backoff when it drops (default 60 s).
    pub stable_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// Backoff state of one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// The previous delay; `initial` when reset.
    prev: Duration,
    /// Failed attempts since the last reset.
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BackoffConfig::default())
    }
}

impl Backoff {
    /// A fresh backoff (no failures yet).
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            prev: config.initial,
            failures: 0,
        }
    }

    /// The delay before the next dial, after a failed dial or a dropped link. `r` is a
    /// uniform random value in `[0, 1]` (clamped; NaN counts as 0). The result lies in
    /// `[initial, max]`.
    pub fn next_delay(&mut self, r: f64) -> Duration {
        let r = if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        let lo = self.config.initial.as_secs_f64();
        let hi = (self.prev.as_secs_f64() * 3.0).max(lo);
        let max = self.config.max.as_secs_f64().max(lo);
        let delay = Duration::from_secs_f64((lo + r * (hi - lo)).min(max));
        self.prev = delay;
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Reports that an established link closed after `uptime`. A link that was stable
    /// (up at least `stable_after`) resets the backoff; returns whether it did.
    pub fn link_closed(&mut self, uptime: Duration) -> bool {
        let stable = uptime >= self.config.stable_after;
        if stable {
            self.reset();
        }
        stable
    }

    /// Forgets past failures (e.g. the peer's address changed, or an operator asked to
    /// reconnect now).
    pub fn reset(&mut self) {
        self.prev = self.config.initial;
        self.failures = 0;
    }

    /// Failures since the last reset (for status: "retry 5").
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The tuning in use.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn delays_stay_within_bounds_for_any_random_values() {
        let mut b = Backoff::default();
        // A cheap deterministic sequence covering [0, 1], plus edge values.
        let mut x = 0.5f64;
        for i in 0..10_000 {
            x = (x * 3.9 * (1.0 - x)).clamp(0.0, 1.0);
            let r = match i % 7 {
                0 => 0.0,
                1 => 1.0,
                2 => f64::NAN,
                3 => -5.0,
                4 => 7.0,
                _ => x,
            };
            let d = secs(b.next_delay(r));
            assert!((1.0..=60.0).contains(&d), "delay {d} out of bounds at {i}");
        }
    }

    #[test]
    fn grows_to_the_cap_and_stays_there() {
        let mut b = Backoff::default();
        let got: Vec<f64> = (0..6).map(|_| secs(b.next_delay(1.0))).collect();
        assert_eq!(got, vec![3.0, 9.0, 27.0, 60.0, 60.0, 60.0]);
        assert_eq!(b.failures(), 6);
        // The lowest draw is always the initial delay, never zero.
        assert_eq!(secs(b.next_delay(0.0)), 1.0);
        // A middle draw scales between initial and 3 × previous.
        let mut b = Backoff::default();
        assert_eq!(secs(b.next_delay(0.5)), 2.0);
        assert_eq!(secs(b.next_delay(0.5)), 3.5);
    }

    #[test]
    fn on_average_it_reaches_the_cap_quickly() {
        let mut b = Backoff::default();
        let mut x = 0.3f64;
        let mut total = 0.0;
        for _ in 0..40 {
            x = (x * 3.7 * (1.0 - x)).clamp(0.0, 1.0);
            total += secs(b.next_delay(x));
        }
        // 40 failures at 1 s each would be 40 s; a peer that stays down costs far less.
        assert!(total > 600.0, "total wait {total}");
    }

    #[test]
    fn stable_links_reset_flapping_ones_do_not() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay(1.0);
        }
        assert!(!b.link_closed(Duration::from_secs(59)));
        assert_eq!(b.failures(), 5);
        assert_eq!(secs(b.next_delay(1.0)), 60.0);
        assert!(b.link_closed(Duration::from_secs(60)));
        assert_eq!(b.failures(), 0);
        assert_eq!(secs(b.next_delay(1.0)), 3.0);
        b.reset();
        assert_eq!(secs(b.next_delay(0.0)), 1.0);
    }

    #[test]
    fn custom_config_is_respected() {
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            stable_after: Duration::from_secs(1),
        });
        let got: Vec<u128> = (0..4).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(got, vec![300, 500, 500, 500]);
        assert_eq!(b.config().max, Duration::from_millis(500));
    }
}
