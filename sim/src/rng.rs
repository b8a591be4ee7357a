//! Small, deterministic helpers over the simulator's seeded PRNG.
//!
//! Every random decision in the VOPR goes through a `ChaCha8Rng` that was seeded by the caller, so
//! a run is a pure function of its seed. These helpers draw a fixed number of values for a given
//! call (except `range`, which rejects to stay unbiased), and never touch OS randomness.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generator seeded from a `u64`.
pub fn seeded(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A uniform `f64` in `[0, 1)`, built from the top 53 bits of one `next_u64`.
pub fn unit(rng: &mut ChaCha8Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

/// True with `probability` (in `0..=1`). Always draws one value, so the stream of draws does not
/// depend on the probability: `chance(rng, 0.0)` is false and `chance(rng, 1.0)` is true.
pub fn chance(rng: &mut ChaCha8Rng, probability: f64) -> bool {
    assert!(
        (0.0..=1.0).contains(&probability),
        "probability {probability} outside 0..=1"
    );
    unit(rng) < probability
}

/// A uniform integer in `lo..=hi_inclusive`, without modulo bias.
pub fn range(rng: &mut ChaCha8Rng, lo: u64, hi_inclusive: u64) -> u64 {
    assert!(lo <= hi_inclusive, "empty range {lo}..={hi_inclusive}");
    let span = hi_inclusive - lo;
    if span == u64::MAX {
        return rng.next_u64();
    }
    let n = span + 1;
    // 2^64 mod n: values below it would make the low residues more likely.
    let threshold = n.wrapping_neg() % n;
    loop {
        let x = rng.next_u64();
        if x >= threshold {
            return lo + x % n;
        }
    }
}

/// A uniform index in `0..len` (`len > 0`).
pub fn index(rng: &mut ChaCha8Rng, len: usize) -> usize {
    assert!(len > 0, "index into an empty collection");
    range(rng, 0, len as u64 - 1) as usize
}

/// A uniformly chosen element of a non-empty slice.
pub fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[index(rng, items.len())]
}

/// An exponentially distributed integer with the given mean (0 when `mean == 0`). Bounded by
/// about `37 * mean`, since the uniform draw has 53 bits.
pub fn exponential(rng: &mut ChaCha8Rng, mean: u64) -> u64 {
    let u = unit(rng);
    if mean == 0 {
        return 0;
    }
    // 1 - u is in (0, 1], so the logarithm is finite and not positive.
    let x = -(mean as f64) * (1.0 - u).ln();
    x.round() as u64
}

/// Fisher-Yates, in place.
pub fn shuffle<T>(rng: &mut ChaCha8Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = range(rng, 0, i as u64) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed() {
        let draw = |seed| {
            let mut rng = seeded(seed);
            (0..100)
                .map(|i| match i % 4 {
                    0 => chance(&mut rng, 0.3) as u64,
                    1 => range(&mut rng, 5, 17),
                    2 => *pick(&mut rng, &[1u64, 2, 3]),
                    _ => exponential(&mut rng, 50),
                })
                .collect::<Vec<u64>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn unit_is_in_range() {
        let mut rng = seeded(1);
        for _ in 0..10_000 {
            let u = unit(&mut rng);
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn chance_extremes_and_rate() {
        let mut rng = seeded(2);
        for _ in 0..1000 {
            assert!(!chance(&mut rng, 0.0));
            assert!(chance(&mut rng, 1.0));
        }
        let hits = (0..100_000).filter(|_| chance(&mut rng, 0.25)).count();
        assert!((23_500..26_500).contains(&hits), "hits={hits}");
    }

    #[test]
    #[should_panic(expected = "outside 0..=1")]
    fn chance_rejects_bad_probability() {
        chance(&mut seeded(0), 1.5);
    }

    #[test]
    fn range_covers_bounds_uniformly() {
        let mut rng = seeded(3);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            let x = range(&mut rng, 10, 15);
            assert!((10..=15).contains(&x));
            counts[(x - 10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "counts={counts:?}");
        }
        assert_eq!(range(&mut rng, 4, 4), 4);
        let _ = range(&mut rng, 0, u64::MAX);
        let x = range(&mut rng, u64::MAX - 1, u64::MAX);
        assert!(x >= u64::MAX - 1);
    }

    #[test]
    fn pick_and_shuffle() {
        let mut rng = seeded(4);
        let items = ["a", "b", "c"];
        let mut seen = [false; 3];
        for _ in 0..100 {
            let p = pick(&mut rng, &items);
            seen[items.iter().position(|x| x == p).unwrap()] = true;
        }
        assert!(seen.iter().all(|&s| s));

        let mut v: Vec<u32> = (0..50).collect();
        shuffle(&mut rng, &mut v);
        assert_ne!(v, (0..50).collect::<Vec<u32>>());
        v.sort();
        assert_eq!(v, (0..50).collect::<Vec<u32>>());
    }

    #[test]
    fn exponential_mean() {
        let mut rng = seeded(5);
        assert_eq!(exponential(&mut rng, 0), 0);
        let n = 100_000u64;
        let sum: u64 = (0..n).map(|_| exponential(&mut rng, 100)).sum();
        let mean = sum as f64 / n as f64;
        assert!((95.0..105.0).contains(&mean), "mean={mean}");
    }
}
