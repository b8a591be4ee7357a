//! Simulated clocks. The simulator's shared "true" time is `ticks * tick_ns`; each replica's
//! `SimTime` runs off it with its own drift (its oscillator is fast or slow by `drift_ppm` parts
//! per million), a fixed wall-clock offset, and optional excursions (temporary wall-clock jumps
//! far outside the tolerance, which cluster time must detect and not believe).
//!
//! Readings are computed from the tick count each time, not accumulated, so there is no rounding
//! creep: `monotonic = origin + elapsed + drift(elapsed)`, and
//! `realtime = EPOCH_NS + elapsed + offset + clamp(drift(elapsed)) + excursion`: the wall clock
//! drifts with its oscillator until the drift reaches `realtime_drift_max_ns`, where time
//! synchronization (NTP) holds it (unbounded, two clocks 100 ppm apart in opposite directions
//! would be further apart than any tolerance after half an hour of simulated time, and no
//! majority could agree on time at all).

use crate::rng;
use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha8Rng;
use vsr::time::Time;

/// The simulated wall clock starts here (2023-11-14T22:13:20Z), in ns since the Unix epoch.
pub const EPOCH_NS: i64 = 1_700_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Excursion {
    offset_ns: i64,
    /// The tick at which it ends.
    until: u64,
}

pub struct SimTime {
    tick_ns: u64,
    offset_ns: i64,
    drift_ppm: i64,
    /// The wall clock's drift never exceeds this, either way (`set_realtime_drift_max_ns`).
    realtime_drift_max_ns: i64,
    /// The monotonic clock's arbitrary origin (seeded), so nothing may assume it starts at 0.
    origin_ns: u64,
    ticks: u64,
    excursion: Option<Excursion>,
    excursions: u64,
    rng: ChaCha8Rng,
}

impl SimTime {
    /// `drift_ppm` must be in `(-1_000_000, 1_000_000)`: a clock may run slow, never backwards.
    pub fn new(tick_ns: u64, offset_ns: i64, drift_ppm: i64, seed: u64) -> Self {
        assert!(tick_ns > 0);
        assert!(
            drift_ppm.abs() < 1_000_000,
            "drift {drift_ppm} ppm out of range"
        );
        let mut rng = rng::seeded(seed);
        // Up to about 18 minutes: far from 0, far from overflow.
        let origin_ns = rng.next_u64() >> 24;
        SimTime {
            tick_ns,
            offset_ns,
            drift_ppm,
            realtime_drift_max_ns: i64::MAX,
            origin_ns,
            ticks: 0,
            excursion: None,
            excursions: 0,
            rng,
        }
    }

    /// Bounds the wall clock's accumulated drift (the module docs); unbounded by default.
    pub fn set_realtime_drift_max_ns(&mut self, drift_max_ns: u64) {
        self.realtime_drift_max_ns = i64::try_from(drift_max_ns).unwrap_or(i64::MAX);
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
        if let Some(excursion) = self.excursion {
            if self.ticks >= excursion.until {
                self.excursion = None;
            }
        }
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    pub fn drift_ppm(&self) -> i64 {
        self.drift_ppm
    }

    pub fn offset_ns(&self) -> i64 {
        self.offset_ns
    }

    /// The simulator's true elapsed time.
    pub fn true_elapsed_ns(&self) -> u64 {
        self.ticks * self.tick_ns
    }

    /// The true wall-clock time now, which every replica's `realtime` approximates.
    pub fn true_realtime(&self) -> i64 {
        EPOCH_NS + self.true_elapsed_ns() as i64
    }

    /// How far `realtime()` is from the truth right now (offset + drift + excursion).
    pub fn error_ns(&self) -> i64 {
        self.realtime() - self.true_realtime()
    }

    /// For the next `duration_ticks` ticks, shifts the wall clock by a further `extra_offset_ns`
    /// (replacing any excursion in progress). Monotonic time is unaffected.
    pub fn excursion(&mut self, extra_offset_ns: i64, duration_ticks: u64) {
        assert!(duration_ticks > 0);
        self.excursion = Some(Excursion {
            offset_ns: extra_offset_ns,
            until: self.ticks + duration_ticks,
        });
        self.excursions += 1;
    }

    /// An excursion of random sign and magnitude in `magnitude_min_ns..=magnitude_max_ns`, lasting
    /// `1..=duration_max_ticks` ticks. Returns the offset chosen.
    pub fn random_excursion(
        &mut self,
        magnitude_min_ns: u64,
        magnitude_max_ns: u64,
        duration_max_ticks: u64,
    ) -> i64 {
        assert!(magnitude_max_ns <= i64::MAX as u64);
        let magnitude = rng::range(&mut self.rng, magnitude_min_ns, magnitude_max_ns) as i64;
        let offset = if rng::chance(&mut self.rng, 0.5) {
            magnitude
        } else {
            -magnitude
        };
        let duration = rng::range(&mut self.rng, 1, duration_max_ticks);
        self.excursion(offset, duration);
        offset
    }

    pub fn excursion_active(&self) -> bool {
        self.excursion.is_some()
    }

    /// Excursions started so far.
    pub fn excursions(&self) -> u64 {
        self.excursions
    }

    /// The drift accumulated over the elapsed true time (rounded toward negative infinity).
    fn drift_ns(&self) -> i64 {
        let elapsed = self.true_elapsed_ns() as i128;
        (elapsed * self.drift_ppm as i128).div_euclid(1_000_000) as i64
    }
}

impl Time for SimTime {
    fn monotonic(&self) -> u64 {
        // elapsed + drift is non-decreasing in elapsed because |drift_ppm| < 10^6.
        let local = self.true_elapsed_ns() as i64 + self.drift_ns();
        assert!(local >= 0);
        self.origin_ns + local as u64
    }

    fn realtime(&self) -> i64 {
        let excursion = self.excursion.map_or(0, |e| e.offset_ns);
        let bound = self.realtime_drift_max_ns;
        self.true_realtime() + self.offset_ns + self.drift_ns().clamp(-bound, bound) + excursion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK_NS: u64 = 10_000_000;

    #[test]
    fn no_drift_tracks_true_time() {
        let mut t = SimTime::new(TICK_NS, 0, 0, 1);
        let m0 = t.monotonic();
        assert_eq!(t.realtime(), EPOCH_NS);
        for _ in 0..100 {
            t.tick();
        }
        assert_eq!(t.monotonic() - m0, 100 * TICK_NS);
        assert_eq!(t.realtime(), EPOCH_NS + 100 * TICK_NS as i64);
        assert_eq!(t.error_ns(), 0);
    }

    #[test]
    fn offset_and_drift() {
        // 100 ppm fast, 5 ms ahead.
        let mut fast = SimTime::new(TICK_NS, 5_000_000, 100, 2);
        // 250 ppm slow, 3 ms behind.
        let mut slow = SimTime::new(TICK_NS, -3_000_000, -250, 3);
        let (f0, s0) = (fast.monotonic(), slow.monotonic());
        for _ in 0..100_000 {
            fast.tick();
            slow.tick();
        }
        // 1000 s of true time.
        let elapsed = 100_000 * TICK_NS;
        assert_eq!(fast.monotonic() - f0, elapsed + elapsed / 10_000);
        assert_eq!(slow.monotonic() - s0, elapsed - elapsed / 4_000);
        assert_eq!(fast.error_ns(), 5_000_000 + 100_000_000);
        assert_eq!(slow.error_ns(), -3_000_000 - 250_000_000);
    }

    #[test]
    fn monotonic_never_goes_backwards() {
        for drift in [-999_999, -500_000, -1, 0, 1, 999_999] {
            let mut t = SimTime::new(3, -7, drift, 4);
            let mut last = t.monotonic();
            for i in 0..10_000 {
                t.tick();
                if i == 17 || i == 500 || i == 9_000 {
                    t.excursion(-1_000_000_000, 5);
                }
                let now = t.monotonic();
                assert!(now >= last, "drift {drift}: {now} < {last}");
                last = now;
            }
        }
    }

    #[test]
    fn excursion_is_temporary() {
        let mut t = SimTime::new(TICK_NS, 1_000, 0, 5);
        t.tick();
        let base = t.error_ns();
        assert_eq!(base, 1_000);
        let m = t.monotonic();
        t.excursion(-60_000_000_000, 3);
        assert!(t.excursion_active());
        assert_eq!(t.error_ns(), base - 60_000_000_000);
        assert_eq!(t.monotonic(), m);
        t.tick();
        t.tick();
        assert_eq!(t.error_ns(), base - 60_000_000_000);
        t.tick();
        assert!(!t.excursion_active());
        assert_eq!(t.error_ns(), base);
        assert_eq!(t.excursions(), 1);

        let offset = t.random_excursion(1_000, 2_000, 10);
        assert!((1_000..=2_000).contains(&offset.abs()));
        assert_eq!(t.error_ns(), base + offset);
        assert_eq!(t.excursions(), 2);
        for _ in 0..10 {
            t.tick();
        }
        assert!(!t.excursion_active());
    }

    #[test]
    fn deterministic_per_seed() {
        let run = |seed| {
            let mut t = SimTime::new(TICK_NS, 0, 37, seed);
            let mut v = Vec::new();
            for i in 0..100 {
                if i % 10 == 0 {
                    t.random_excursion(1, 1_000_000_000, 20);
                }
                t.tick();
                v.push((t.monotonic(), t.realtime()));
            }
            v
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
