//! Tick-based timeouts with exponential backoff and seeded jitter.

use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Debug)]
pub struct Timeout {
    pub name: &'static str,
    base: u64,
    /// The longest wait `backoff` grows to (before jitter): `base * 64` unless set.
    backoff_max: u64,
    after: u64,
    ticks: u64,
    pub ticking: bool,
    pub attempts: u32,
}

impl Timeout {
    pub fn new(name: &'static str, base: u64) -> Timeout {
        assert!(base > 0);
        Timeout {
            name,
            base,
            backoff_max: base.saturating_mul(64),
            after: base,
            ticks: 0,
            ticking: false,
            attempts: 0,
        }
    }

    /// Caps the wait `backoff` grows to (at least `base`).
    pub fn set_backoff_max(&mut self, ticks: u64) {
        self.backoff_max = ticks.max(self.base);
    }

    pub fn start(&mut self) {
        self.ticking = true;
        self.ticks = 0;
        self.attempts = 0;
        self.after = self.base;
    }

    pub fn stop(&mut self) {
        self.ticking = false;
        self.ticks = 0;
        self.attempts = 0;
        self.after = self.base;
    }

    /// Restarts the countdown without forgetting the backoff.
    pub fn reset(&mut self) {
        assert!(self.ticking, "reset of stopped timeout {}", self.name);
        self.ticks = 0;
    }

    pub fn tick(&mut self) {
        if self.ticking {
            self.ticks += 1;
        }
    }

    pub fn fired(&self) -> bool {
        self.ticking && self.ticks >= self.after
    }

    /// After firing: wait longer next time (doubling, capped), plus jitter so that replicas that
    /// fired together do not retry together.
    pub fn backoff(&mut self, prng: &mut ChaCha8Rng) {
        assert!(self.ticking);
        self.attempts = self.attempts.saturating_add(1);
        let exponent = self.attempts.min(6);
        let base = self
            .base
            .saturating_mul(1 << exponent)
            .min(self.backoff_max);
        let jitter = prng.next_u64() % (self.base.max(2) / 2 + 1);
        self.after = base + jitter;
        self.ticks = 0;
    }

    /// After firing: same period again, with a little jitter.
    pub fn rearm(&mut self, prng: &mut ChaCha8Rng) {
        assert!(self.ticking);
        let jitter = prng.next_u64() % (self.base / 4 + 1);
        self.after = self.base + jitter;
        self.ticks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn fires_and_backs_off() {
        let mut prng = ChaCha8Rng::seed_from_u64(1);
        let mut t = Timeout::new("t", 10);
        t.start();
        for _ in 0..9 {
            t.tick();
        }
        assert!(!t.fired());
        t.tick();
        assert!(t.fired());
        t.backoff(&mut prng);
        assert!(!t.fired());
        for _ in 0..19 {
            t.tick();
        }
        assert!(!t.fired(), "backoff doubles the wait");
        t.stop();
        t.tick();
        assert!(!t.fired());
    }

    #[test]
    fn backoff_stops_growing_at_its_cap() {
        let mut prng = ChaCha8Rng::seed_from_u64(1);
        let mut t = Timeout::new("t", 10);
        t.set_backoff_max(30);
        t.start();
        for _ in 0..10 {
            t.backoff(&mut prng);
        }
        // Cap 30 plus at most base/2 of jitter.
        for _ in 0..35 {
            t.tick();
        }
        assert!(t.fired(), "the wait grew past its cap");
    }
}
