//! `vopr [SEED] [--ticks-max N] [--log=debug]`: one seeded simulation run. Exit 0 ok, 1 failure,
//! 2 usage. The last line carries the seed, the result and a digest of everything observed.

use clap::Parser;
use std::panic::{catch_unwind, AssertUnwindSafe};
use vsr_sim::cluster::Simulator;

#[derive(Parser)]
#[command(
    name = "vopr",
    about = "Deterministic fault-injecting simulator for the vsr replica"
)]
struct Cli {
    /// The seed (u64); random when omitted, always printed.
    seed: Option<u64>,
    /// Ticks of the fault phase (10 ms each).
    #[arg(long, default_value_t = 20_000)]
    ticks_max: u64,
    /// Ticks the healed cluster has to converge.
    #[arg(long, default_value_t = 30_000)]
    liveness_ticks_max: u64,
    /// `debug` prints a protocol trace to stderr.
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if cli.log != "info" && cli.log != "debug" {
        eprintln!("--log must be info or debug");
        std::process::exit(2);
    }
    let seed = cli.seed.unwrap_or_else(random_seed);
    println!("vopr seed={seed}");
    let trace = cli.log == "debug";
    let mut summary = (0usize, 0usize, 0u64, String::from("unknown"));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run(
            seed,
            cli.ticks_max,
            cli.liveness_ticks_max,
            trace,
            &mut summary,
        )
    }));
    let (replicas, clients, ticks, digest) = summary.clone();
    let result = match outcome {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(reason)) => format!("FAIL: {reason}"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            format!("FAIL: panic: {}", message.replace('\n', " "))
        }
    };
    let ok = result == "ok";
    println!("vopr seed={seed} replicas={replicas} clients={clients} ticks={ticks} result={result} digest={digest}");
    std::process::exit(if ok { 0 } else { 1 });
}

fn random_seed() -> u64 {
    // The only OS randomness in the simulator: choosing a seed when none is given.
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_le_bytes(bytes)
}

fn run(
    seed: u64,
    ticks_max: u64,
    liveness_ticks_max: u64,
    trace: bool,
    summary: &mut (usize, usize, u64, String),
) -> Result<(), String> {
    let mut sim = Simulator::new(seed, trace);
    let o = &sim.options;
    println!(
        "options: replicas={} clients={} message_size_max={} slots={} pipeline={} clients_max={} loss={:.3} replay={:.3} partitions={:?} crash={:.5} storage_faults={:.4}/{:.4}/{:.4}",
        o.replica_count,
        o.client_count,
        o.config.message_size_max,
        o.config.journal_slot_count,
        o.config.pipeline_max,
        o.config.clients_max,
        o.network.packet_loss_probability,
        o.network.packet_replay_probability,
        o.network.partition_mode,
        o.crash_probability,
        o.storage.read_fault_probability,
        o.storage.write_fault_probability,
        o.storage.write_misdirect_probability,
    );
    summary.0 = sim.replica_count();
    summary.1 = sim.options.client_count;
    let result = run_phases(&mut sim, ticks_max, liveness_ticks_max);
    summary.2 = sim.tick;
    summary.3 = sim.digest();
    print_counters(&sim);
    result
}

fn run_phases(sim: &mut Simulator, ticks_max: u64, liveness_ticks_max: u64) -> Result<(), String> {
    while sim.tick < ticks_max {
        sim.step()?;
    }
    sim.heal();
    let deadline = sim.tick + liveness_ticks_max;
    while sim.tick < deadline {
        sim.step()?;
        if sim.converged() {
            return Ok(());
        }
    }
    Err(format!(
        "liveness: no convergence {} ticks after healing:{}",
        liveness_ticks_max,
        sim.describe_state()
    ))
}

fn print_counters(sim: &Simulator) {
    let n = sim.network_stats();
    let s = sim.storage_stats();
    let f = sim.faults;
    let r = sim.replica_stats();
    println!(
        "faults: packets_dropped={} packets_replayed={} packets_corrupted={} partitions={} clogs={} sectors_corrupted={} misdirected_writes={} torn_writes={} lost_writes={} crashes={} restarts={} clock_excursions={} clock_epochs_failed={}",
        n.dropped_loss + n.dropped_capacity + n.dropped_partition,
        n.replayed,
        f.packets_corrupted,
        n.partitions,
        n.clogs,
        s.read_faults + s.write_faults,
        s.misdirects,
        s.torn_writes,
        s.lost_writes,
        f.crashes,
        f.restarts,
        f.clock_excursions,
        sim.clock_epochs_failed(),
    );
    println!(
        "stats: commits={} canonical_ops={} view_changes={} views_started={} repairs_headers={} repairs_prepares={} truncations={} evictions={} replies={} replies_checked={} dropped_invalid={} pool_exhausted={}",
        r.commits,
        sim.checker.history.len(),
        r.view_changes,
        r.views_started,
        r.repairs_headers,
        r.repairs_prepares,
        r.truncations,
        sim.evictions,
        sim.replies,
        sim.checker.replies_checked,
        r.messages_dropped_invalid,
        r.pool_exhausted,
    );
}
