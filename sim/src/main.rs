//! `vopr [SEED] [--ticks-max N] [--liveness-ticks-max N] [--log=debug]`: one seeded simulation
//! run. Exit 0 ok, 1 failure, 2 usage. The last line carries the seed, the result and a digest of
//! everything observed. `vopr --help` documents every flag and the output.

use clap::Parser;
use std::panic::{catch_unwind, AssertUnwindSafe};
use vsr_sim::cluster::Simulator;
use vsr_sim::options::Corruption;

const AFTER_HELP: &str = "\
A run has two phases. Fault phase (--ticks-max ticks of 10 ms): the seed draws the options (cluster
size, clients, configuration, fault probabilities: swarm testing), then clients send requests while
replicas crash and restart, pause (not run for a while, packets to them held, clocks running),
suffer corrupt, misdirected, torn and lost writes, and the network loses, replays, corrupts, delays,
clogs and partitions packets, and clocks jump. Liveness phase: every replica is restarted and
resumed, faults stop, and the cluster must converge (all replicas normal in one view with every op
committed, every client done): it fails if --liveness-ticks-max ticks pass without progress (no
commit, no request completed), or if it has not converged after four times that. Safety is checked throughout:
every commit against the canonical history, every accepted reply, exactly-once execution, state
digests, and every replica's journal hash chain.

Output (stdout):
  vopr seed=<seed>
  options: replicas=.. clients=.. ... (the swarm options this seed drew)
  timing: the clock and network timing it drew
  corrupted: targeted corruptions, by class
  faults: key=value ... (every fault injected, by kind: docs/testing.md, The fault model)
  stats: key=value ... (commits, canonical_ops, view_changes, ..., replies_checked)
  vopr seed=<seed> replicas=<n> clients=<n> ticks=<n> result=<ok|FAIL: reason> digest=<hex>
The digest covers the canonical history, final replica states and every counter: the same seed
gives the same last line, bit for bit.

Exit status: 0 ok, 1 a safety or liveness failure (or a replica panic), 2 usage error.

Examples:
  vopr 42                 replay seed 42
  vopr 42 --log=debug     the same run with a protocol trace on stderr
  vopr --ticks-max 5000   a random seed (printed), shorter fault phase";

#[derive(Parser)]
#[command(
    name = "vopr",
    about = "Deterministic fault-injecting simulator for the vsr replica (the VOPR)",
    long_about = "Deterministic fault-injecting simulator for the vsr replica (the VOPR): runs a whole \
cluster of the production replica code on a simulated network, disk and clocks, injects faults, \
and checks safety and liveness. One seed, one run; the same seed replays it exactly.",
    after_long_help = AFTER_HELP
)]
struct Cli {
    /// The seed (a decimal u64) to run or replay; random when omitted, always printed.
    seed: Option<u64>,
    /// Ticks (10 ms of simulated time each) of the fault phase.
    #[arg(long, value_name = "TICKS", default_value_t = 20_000)]
    ticks_max: u64,
    /// Ticks without progress after which the healed cluster fails for liveness (it has four
    /// times this in all to converge).
    #[arg(long, value_name = "TICKS", default_value_t = 30_000)]
    liveness_ticks_max: u64,
    /// Log level: `info` (the summary lines only) or `debug` (also a protocol trace of every
    /// replica and simulator event on stderr; large).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
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
        "options: state_machine={} replicas={} clients={} message_size_max={} slots={} pipeline={} clients_max={} loss={:.3} replay={:.3} slow_packets={:.4}/{} partitions={:?} crash={:.5} io_crash={:.5} superblock_crash={:.3} corrupt={:.4}/{:?} disk_loss={:.2} pause={:.5} pause_ticks={}..={} storage_faults={:.4}/{:.4}/{:.4} slow_io={:.4}/{:.5}/{} lost_writes={:.4}{}",
        if o.ledger { "ledger" } else { "hashing" },
        o.replica_count,
        o.client_count,
        o.config.message_size_max,
        o.config.journal_slot_count,
        o.config.pipeline_max,
        o.config.clients_max,
        o.network.packet_loss_probability,
        o.network.packet_replay_probability,
        o.network.slow_packet_probability,
        o.network.slow_packet_ticks_max,
        o.network.partition_mode,
        o.crash_probability,
        o.io_crash_probability,
        o.superblock_crash_probability,
        o.corruption_probability,
        Corruption::EVERY
            .into_iter()
            .filter(|c| c.on(o.corruption_classes))
            .collect::<Vec<_>>(),
        o.disk_loss_probability,
        o.pause_probability,
        o.pause_ticks_min,
        o.pause_ticks_max,
        o.storage.read_fault_probability,
        o.storage.write_fault_probability,
        o.storage.write_misdirect_probability,
        o.storage.slow_io_probability,
        o.storage.stall_probability,
        o.storage.slow_io_ticks_max,
        o.lost_write_probability,
        if o.lost_write_primary_crash { "+primary_crash" } else { "" },
    );
    println!(
        "timing: clock_tolerance_ms={} clock_epoch_ms={} clock_window_ms={} one_way_delay_ticks={}/{} ping_ticks={} tick_ms={} clock_offsets_ms={:?} excursions={:.5}/shared={:.5}",
        o.config.clock_offset_tolerance_max_ns / 1_000_000,
        o.config.clock_epoch_ns / 1_000_000,
        o.config.clock_synchronization_window_ns / 1_000_000,
        o.network.one_way_delay_min,
        o.network.one_way_delay_mean,
        o.config.ping_timeout_ticks,
        vsr::config::TICK_MS,
        o.clock_offsets_ns
            .iter()
            .map(|ns| ns / 1_000_000)
            .collect::<Vec<_>>(),
        o.clock_excursion_probability,
        o.clock_shared_excursion_probability,
    );
    summary.0 = sim.replica_count();
    summary.1 = sim.options.client_count;
    let result = sim.run(ticks_max, liveness_ticks_max);
    summary.2 = sim.tick;
    summary.3 = sim.digest();
    print_counters(&sim);
    result
}

fn print_counters(sim: &Simulator) {
    let n = sim.network_stats();
    let s = sim.storage_stats();
    let f = sim.faults;
    let r = sim.replica_stats();
    let c = f.corrupted;
    println!(
        "corrupted: committed_prepares={} view_change_heads={} header_ring_sectors={} superblock_copies={} checkpoint_chunks={}",
        c[0], c[1], c[2], c[3], c[4]
    );
    println!(
        "faults: packets_dropped={} packets_replayed={} packets_corrupted={} partitions={} clogs={} slow_packets={} sectors_corrupted={} misdirected_writes={} torn_writes={} faults_spared_journal={} lost_writes={} slow_ios={} stalls={} crashes={} outages={} io_crashes_write_submitted={} io_crashes_write_completed={} io_crashes_send={} crashes_between_superblock_copies={} restarts={} disks_lost={} pauses={} clock_excursions={} clock_shared_excursions={} clock_epochs_failed={} acknowledged_writes_lost={}/{}/{} primary_crashes_after_lost_write={}",
        n.dropped_loss + n.dropped_capacity + n.dropped_partition,
        n.replayed,
        f.packets_corrupted,
        n.partitions,
        n.clogs,
        n.slow_packets,
        s.read_faults + s.write_faults,
        s.misdirects,
        s.torn_writes,
        s.faults_spared_journal,
        s.lost_writes,
        s.slow_ios,
        s.stalls,
        f.crashes,
        f.outages,
        f.crashes_after_write_submitted,
        f.crashes_after_write_completed,
        f.crashes_after_send,
        f.crashes_between_superblock_copies,
        f.restarts,
        f.disks_lost,
        f.pauses,
        f.clock_excursions,
        f.clock_shared_excursions,
        sim.clock_epochs_failed(),
        f.acknowledged_writes_lost[0],
        f.acknowledged_writes_lost[1],
        f.acknowledged_writes_lost[2],
        f.primary_crashes_after_lost_write,
    );
    println!(
        "stats: commits={} canonical_ops={} view_changes={} views_started={} repairs_headers={} repairs_prepares={} truncations={} evictions={} replies={} replies_checked={} dropped_invalid={} pool_exhausted={} primary_step_downs={} primary_disconnects={} status_probes={}",
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
        r.primary_step_downs,
        r.primary_disconnects,
        f.status_probes,
    );
    println!(
        "checkpoints: checkpoints={} checkpoint_ids_checked={} checkpoints_unusable={} checkpoints_held_back={} syncs_started={} syncs_completed={} syncs_aborted={} sync_chunks={} start_views_deferred={} rejoins_completed={}",
        r.checkpoints,
        sim.checker.checkpoints_observed,
        r.checkpoints_unusable,
        r.checkpoints_held_back,
        r.syncs_started,
        r.syncs_completed,
        r.syncs_aborted,
        r.sync_chunks,
        r.start_views_deferred,
        r.rejoins_completed,
    );
    println!(
        "cluster_time: prepares_checked={} prepares_held_ahead={} error_max_permille_of_tolerance={}",
        sim.cluster_time.prepares_checked,
        sim.cluster_time.prepares_held_ahead,
        sim.cluster_time.error_max_permille
    );
    let d = sim.durability.stats;
    println!(
        "durability: acknowledgements={} do_view_changes={} nacks={} start_views={} replies={} checkpoints={} checkpoint_chunks_checked={} opens_superblock_split={} recoveries_checked={} checkpoint_holds_checked={}",
        d.acknowledgements, d.do_view_changes, d.nacks, d.start_views, d.replies, d.checkpoints,
        d.checkpoint_chunks_checked,
        d.opens_superblock_split,
        d.recoveries_checked,
        d.checkpoint_holds_checked,
    );
    let v = sim.view_logs.stats;
    println!("view_log: recorded={} checked={}", v.recorded, v.checked);
    match (&sim.liveness_excused, sim.heal_to_converge_ticks) {
        (Some(reason), _) => println!("liveness: excused_stalls=1 ({reason})"),
        (None, Some(ticks)) => println!("liveness: heal_to_converge_ticks={ticks}"),
        (None, None) => {}
    }
}
