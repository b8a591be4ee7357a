//! The VOPR is deterministic: a seed replays bit for bit (the same digest, which covers the
//! canonical history, the final replica states and every fault and protocol counter), and
//! different seeds explore different runs. Both runs happen in this one process, so nothing
//! process-global (hash seeds, allocation addresses, time) may leak into a run.

use vsr_sim::cluster::Simulator;
use vsr_sim::options::SimOptions;

const TICKS_MAX: u64 = 20_000;
const LIVENESS_TICKS_MAX: u64 = 30_000;

/// (result, digest, ticks) of a whole VOPR run of `seed`, as `vopr <seed>` runs it.
fn run(seed: u64) -> (Result<(), String>, String, u64) {
    let mut sim = Simulator::new(seed, false);
    let result = sim.run(TICKS_MAX, LIVENESS_TICKS_MAX);
    (result, sim.digest(), sim.tick)
}

#[test]
fn same_seed_same_digest() {
    let seeds = [1, 7_001, 0xdead_beef, u64::MAX];
    let mut digests = Vec::new();
    for seed in seeds {
        let first = run(seed);
        let second = run(seed);
        assert_eq!(first.0, Ok(()), "seed {seed} failed");
        assert_eq!(first, second, "seed {seed} is not deterministic");
        digests.push(first.1);
    }
    for (i, a) in digests.iter().enumerate() {
        for (j, b) in digests.iter().enumerate().skip(i + 1) {
            assert_ne!(
                a, b,
                "seeds {} and {} gave the same digest",
                seeds[i], seeds[j]
            );
        }
    }
}

#[test]
fn different_seeds_different_digests() {
    // Neighbouring seeds: the digest must depend on every bit of the seed.
    let digests: Vec<String> = (500..504).map(|seed| run(seed).1).collect();
    for i in 0..digests.len() {
        for j in i + 1..digests.len() {
            assert_ne!(digests[i], digests[j], "seeds {} and {}", 500 + i, 500 + j);
        }
    }
}

#[test]
fn scenario_runs_are_deterministic() {
    // A scripted run with the same seed and options: same history, same digest, step by step.
    let run = |seed| {
        let mut sim = Simulator::with_options(seed, SimOptions::quiet(5, 3), false);
        for c in 0..3 {
            sim.set_client_workload(c, 20);
        }
        let mut trail = Vec::new();
        for _ in 0..10 {
            sim.run_for(50).unwrap();
            trail.push(sim.digest());
        }
        let primary = sim.primary().expect("a primary");
        sim.crash_replica(primary);
        sim.run_for(200).unwrap();
        sim.restart_replica(primary);
        sim.run_until_converged(10_000)
            .map_or_else(|e| panic!("{e}"), |_| ());
        trail.push(sim.digest());
        trail
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}
