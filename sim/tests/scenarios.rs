//! Scripted scenarios: deterministic tests of one protocol behaviour each, on the VOPR's simulator
//! with random faults off (`SimOptions::quiet`) and the faults injected by the script. Every step
//! runs the VOPR's safety checker (canonical history, replies, exactly-once, state digests,
//! journal hash chains), and each scenario ends with `run_until_converged`, which also checks
//! that no acknowledged op was lost. Each waits with a tick deadline, never a sleep.

use vsr::header::commands::{
    Ping, Prepare, RequestCheckpointChunk, RequestHeaders, RequestPrepare,
};
use vsr::header::{Header, HEADER_SIZE};
use vsr::message::MessagePool;
use vsr::replica::Status;
use vsr::storage::Zone;
use vsr_sim::cluster::Simulator;
use vsr_sim::options::SimOptions;
use vsr_sim::scenario::Cut;

/// Generous: a quiet cluster commits a request in a few ticks and converges in a few hundred.
const DEADLINE: u64 = 5_000;

/// Every scenario runs on each of these seeds (network delays, disk latencies, timeouts' jitter
/// and client bodies differ), so none passes by one lucky interleaving.
const SEEDS: std::ops::Range<u64> = 0..50;

/// `SCENARIO_SEED=<n>` runs only that seed, `SCENARIO_SEEDS=<n>` seeds `0..n` instead of
/// `SEEDS`; `SCENARIO_TRACE=1` prints the protocol trace (use it with one seed).
fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("SCENARIO_SEED") {
        return vec![seed.parse().expect("SCENARIO_SEED is a u64")];
    }
    if let Ok(count) = std::env::var("SCENARIO_SEEDS") {
        return (0..count.parse().expect("SCENARIO_SEEDS is a u64")).collect();
    }
    SEEDS.collect()
}

fn trace() -> bool {
    std::env::var_os("SCENARIO_TRACE").is_some()
}

/// Runs `scenario` on every seed of `SEEDS`; a failure names its seed.
fn for_each_seed(scenario: fn(u64)) {
    for seed in seeds() {
        if std::panic::catch_unwind(|| scenario(seed)).is_err() {
            panic!("scenario failed on seed {seed} (its panic message is above)");
        }
    }
}

fn ok<T>(result: Result<T, String>) -> T {
    result.unwrap_or_else(|reason| panic!("{reason}"))
}

fn quiet(seed: u64, replicas: u8, clients: usize) -> Simulator {
    Simulator::with_options(seed, SimOptions::quiet(replicas, clients), trace())
}

/// A cluster that has elected a primary and committed `requests` requests of every client.
fn warmed_up(seed: u64, replicas: u8, clients: usize, requests: u64) -> Simulator {
    let mut sim = quiet(seed, replicas, clients);
    for c in 0..clients {
        sim.set_client_workload(c, requests);
    }
    ok(sim.run_until_converged(DEADLINE));
    sim
}

fn primary(sim: &Simulator) -> usize {
    sim.primary()
        .unwrap_or_else(|| panic!("no primary:{}", sim.describe_state()))
}

/// The op at which `client`'s request number `request` was committed in the canonical history.
fn committed_ops(sim: &Simulator, client: u128, request: u64) -> Vec<u64> {
    sim.checker
        .history
        .iter()
        .filter(|(_, c)| {
            c.client == client
                && c.request == request
                && c.operation == vsr::state_machine::HASHING_OPERATION
        })
        .map(|(&op, _)| op)
        .collect()
}

/// Cuts everything `primary` sends and has client 0 send `request`: the primary prepares it at
/// the op after its head and makes it durable, and no other replica sees it. Returns its header.
fn prepare_alone(sim: &mut Simulator, primary: usize, request: u64) -> Header {
    let head = sim.replica_op(primary).unwrap();
    sim.partition_replica(primary, Cut::Outgoing);
    sim.set_client_workload(0, request);
    ok(sim.run_until(
        |s| {
            let r = s.replica(primary).unwrap();
            r.op() == head + 1
                && r.journal()
                    .has_clean(head + 1, r.journal().header(head + 1).unwrap().checksum)
        },
        40,
    ));
    let header = *sim
        .replica(primary)
        .unwrap()
        .journal()
        .header(head + 1)
        .unwrap();
    let prepare = Prepare::from_header(&header);
    assert_eq!(
        (prepare.client, prepare.request),
        (sim.client(0).id, request)
    );
    header
}

/// (a) The primary crashes while its pipeline holds prepares: a new primary is elected in a
/// higher view, the cluster keeps committing without it, and after it restarts every client
/// finishes and every acknowledged reply is still in the canonical history and in every log.
#[test]
fn primary_crash_mid_pipeline() {
    for_each_seed(primary_crash_mid_pipeline_seed);
}

fn primary_crash_mid_pipeline_seed(seed: u64) {
    let mut sim = quiet(seed, 3, 4);
    for c in 0..4 {
        sim.set_client_workload(c, 40);
    }
    ok(sim.run_until(
        |s| {
            s.primary().is_some_and(|p| {
                let r = s.replica(p).unwrap();
                r.pipeline_len() >= 2 && r.commit_min() >= 20
            })
        },
        DEADLINE,
    ));
    let old = primary(&sim);
    let view = sim.replica_view(old).unwrap();
    let (op, commit_max) = (
        sim.replica_op(old).unwrap(),
        sim.replica_commit_max(old).unwrap(),
    );
    assert!(
        op > commit_max,
        "the pipeline must hold uncommitted prepares"
    );
    let acknowledged = sim.checker.acknowledged.clone();
    sim.crash_replica(old);

    ok(sim.run_until(
        |s| {
            s.primary()
                .is_some_and(|p| p != old && s.replica_view(p).unwrap() > view)
        },
        DEADLINE,
    ));
    let new = primary(&sim);
    assert_ne!(new, old);
    assert!(sim.replica_view(new).unwrap() > view);
    // Progress without the old primary.
    let commit = sim.replica_commit_max(new).unwrap();
    ok(sim.run_until(
        |s| s.replica_commit_max(new).is_some_and(|c| c >= commit + 10),
        DEADLINE,
    ));

    sim.restart_replica(old);
    ok(sim.run_until_converged(4 * DEADLINE));
    for c in 0..4 {
        assert_eq!(sim.client_requests_done(c), 40, "client {c} did not finish");
        assert_eq!(sim.client_replies_accepted(c), 40);
    }
    for (op, checksum) in acknowledged {
        assert_eq!(sim.checker.history[&op].checksum, checksum, "op {op} lost");
    }
    assert!(sim.replica_view(old).unwrap() > view);
}

/// (b) The primary is cut off from the other replicas (both directions): they elect a new
/// primary and keep committing; when the partition heals the old primary joins the new view and
/// converges to the same log.
#[test]
fn partitioned_primary_rejoins() {
    for_each_seed(partitioned_primary_rejoins_seed);
}

fn partitioned_primary_rejoins_seed(seed: u64) {
    let mut sim = quiet(seed, 3, 3);
    for c in 0..3 {
        sim.set_client_workload(c, 60);
    }
    ok(sim.run_until(
        |s| {
            s.primary()
                .is_some_and(|p| s.replica_commit_min(p).unwrap() >= 15)
        },
        DEADLINE,
    ));
    let old = primary(&sim);
    let view = sim.replica_view(old).unwrap();
    let old_op = sim.replica_op(old).unwrap();
    sim.partition_replica(old, Cut::Both);
    ok(sim.run_until(
        |s| {
            s.primary()
                .is_some_and(|p| p != old && s.replica_view(p).unwrap() > view)
        },
        DEADLINE,
    ));
    let new = primary(&sim);
    let commit = sim.replica_commit_max(new).unwrap();
    ok(sim.run_until(
        |s| s.replica_commit_max(new).is_some_and(|c| c >= commit + 20),
        DEADLINE,
    ));
    // Cut off from every acknowledgement, the old primary committed nothing it prepared after
    // the partition (it may still complete ops whose backup acknowledgements came before it).
    assert!(
        sim.replica_commit_max(old).unwrap() <= old_op,
        "an isolated primary committed alone"
    );

    sim.heal_partition();
    ok(sim.run_until_converged(4 * DEADLINE));
    let new_view = sim.replica_view(new).unwrap();
    assert_eq!(sim.replica_view(old), Some(new_view));
    assert_eq!(sim.replica_status(old), Some(Status::Normal));
    assert_eq!(sim.replica_op(old), sim.replica_op(new));
    assert_eq!(sim.replica_commit_min(old), sim.replica_op(new));
    for c in 0..3 {
        assert_eq!(sim.client_requests_done(c), 60);
    }
}

/// (c) A committed prepare is corrupted on a backup's disk while it is down: recovery finds the
/// slot faulty (the header ring still names the prepare), the backup repairs it from its peers,
/// the slot becomes clean with the canonical prepare, and the cluster converges.
#[test]
fn backup_repairs_corrupt_committed_slot() {
    for_each_seed(backup_repairs_corrupt_committed_slot_seed);
}

fn backup_repairs_corrupt_committed_slot_seed(seed: u64) {
    let mut sim = warmed_up(seed, 3, 2, 10);
    let p = primary(&sim);
    let backup = (p + 1) % 3;
    let op = 5;
    assert!(sim.replica_commit_min(backup).unwrap() >= op);
    let checksum = sim.checker.history[&op].checksum;

    sim.crash_replica(backup);
    sim.corrupt_prepare(backup, op);
    sim.restart_replica(backup);
    ok(sim.run_until(
        |s| {
            s.replica_status(backup)
                .is_some_and(|st| st != Status::Recovering)
        },
        DEADLINE,
    ));
    {
        let r = sim.replica(backup).unwrap();
        let report = r.recovery_report().expect("recovery report");
        assert_eq!(report.faulty_known, 1, "{report:?}");
        assert_eq!(report.faulty_ops, vec![op]);
        assert!(r.journal().is_faulty_slot(op));
        assert!(r.journal().is_dirty(op));
        assert_eq!(r.journal().header(op).map(|h| h.checksum), Some(checksum));
        assert!(
            r.commit_min() < op,
            "a faulty op must not be applied before repair"
        );
    }

    // More work while it repairs.
    for c in 0..2 {
        sim.set_client_workload(c, 20);
    }
    ok(sim.run_until(
        |s| {
            let r = s.replica(backup).unwrap();
            r.journal().faulty_count() == 0 && r.journal().has_clean(op, checksum)
        },
        DEADLINE,
    ));
    ok(sim.run_until_converged(4 * DEADLINE));
    let r = sim.replica(backup).unwrap();
    assert!(r.commit_min() > op);
    assert_eq!(r.journal().faulty_count(), 0);
    assert!(r.journal().has_clean(op, checksum));
    // Repaired on disk, not only in memory.
    let config = &sim.options.config;
    let offset = (op % config.journal_slot_count as u64) * config.message_size_max as u64;
    let on_disk = Header::read_from(r.storage().read_raw(Zone::WalPrepares, offset, HEADER_SIZE));
    assert!(on_disk.valid_checksum());
    assert_eq!(on_disk.checksum, checksum);
}

/// (d) The primary crashes with the write of its newest prepare torn on disk: recovery finds the
/// slot damaged with no header-ring entry naming it and drops it as never acknowledged; the
/// cluster converges and no acknowledged op is lost.
#[test]
fn torn_head_write_is_truncated() {
    for_each_seed(torn_head_write_is_truncated_seed);
}

fn torn_head_write_is_truncated_seed(seed: u64) {
    let mut sim = quiet(seed, 3, 3);
    for c in 0..3 {
        sim.set_client_workload(c, 40);
    }
    ok(sim.run_until(
        |s| {
            s.primary().is_some_and(|p| {
                let r = s.replica(p).unwrap();
                r.commit_min() >= 10
                    && r.op() > r.commit_max()
                    && s.prepare_write_in_flight(p, r.op())
            })
        },
        DEADLINE,
    ));
    let p = primary(&sim);
    let head = sim.replica_op(p).unwrap();
    let torn_before = sim.storage_stats().torn_writes;
    ok(sim.crash_replica_tearing_prepare(p, head));
    assert_eq!(sim.storage_stats().torn_writes, torn_before + 1);

    sim.restart_replica(p);
    ok(sim.run_until(
        |s| {
            s.replica_status(p)
                .is_some_and(|st| st != Status::Recovering)
        },
        DEADLINE,
    ));
    {
        let r = sim.replica(p).unwrap();
        let report = r.recovery_report().unwrap();
        assert!(
            report.op_head < head,
            "the torn head op {head} was recovered as intact: {report:?}"
        );
        assert!(report.head_certain, "{report:?}");
        assert_eq!(report.faulty_unknown, 0, "{report:?}");
    }
    ok(sim.run_until_converged(4 * DEADLINE));
    for c in 0..3 {
        assert_eq!(sim.client_requests_done(c), 40);
    }
    // Whatever op `head` became, the replica that tore it now holds it clean.
    let canonical = sim.checker.history[&head].checksum;
    assert!(sim.replica(p).unwrap().journal().has_clean(head, canonical));
}

/// (e) The old primary prepares an op that no backup receives, then crashes and loses its copy
/// of it. In the view change the new primary sees the op in the old primary's log but cannot
/// fetch it; the do_view_changes of the two replicas that never had it form a nack quorum, so it
/// truncates the op, and the op number is reused by a different prepare. The client retries and
/// its request is executed exactly once.
#[test]
fn nack_quorum_truncates_uncommitted_op() {
    for_each_seed(nack_quorum_truncates_uncommitted_op_seed);
}

fn nack_quorum_truncates_uncommitted_op_seed(seed: u64) {
    let mut options = SimOptions::quiet(3, 1);
    // Views must not move on while the scenario holds a replica apart.
    options.config.view_change_status_timeout_ticks = 3_000;
    let mut sim = Simulator::with_options(seed, options, trace());
    sim.set_client_workload(0, 5);
    ok(sim.run_until_converged(DEADLINE));
    let old = primary(&sim);
    let view = sim.replica_view(old).unwrap();
    let next = (old + 1) % 3; // primary of view + 1
    let other = (old + 2) % 3;
    assert_eq!(
        sim.replica(old).unwrap().primary_index(view + 1) as usize,
        next
    );
    let head = sim.replica_op(old).unwrap();
    let client = sim.client(0).id;

    // The old primary still hears everyone (so requests are forwarded to it), but nothing it
    // sends reaches a replica: its prepare of the next request stays its own.
    let lost = prepare_alone(&mut sim, old, 6);
    for r in [next, other] {
        assert!(sim.replica(r).unwrap().journal().header(head + 1).is_none());
        assert_eq!(
            sim.replica_view(r),
            Some(view),
            "the backups moved on too early"
        );
    }

    // It crashes, and its copy is lost to corruption (the op was never acknowledged by anyone
    // else, so the cluster may lose it). `other` is held apart so that the view change needs the
    // old primary's do_view_change, which names the op.
    sim.crash_replica(old);
    sim.corrupt_prepare(old, head + 1);
    sim.partition_replica(other, Cut::Both);
    sim.restart_replica(old);
    ok(sim.run_until(
        |s| {
            s.replica(next).is_some_and(|r| {
                r.status() == Status::ViewChange
                    && r.view() == view + 1
                    && r.journal().has_header(head + 1, lost.checksum)
            })
        },
        DEADLINE,
    ));
    // The new primary holds the op's header from the old primary's do_view_change and waits:
    // nobody can give it the prepare, and one nack (its own) is not a quorum.
    ok(sim.run_for(100));
    assert_eq!(sim.replica_status(next), Some(Status::ViewChange));
    assert_eq!(sim.replica(next).unwrap().stats().truncations, 0);

    // The third replica's do_view_change completes the nack quorum.
    sim.heal_partition();
    ok(sim.run_until(|s| s.primary() == Some(next), DEADLINE));
    assert!(sim.replica(next).unwrap().stats().truncations >= 1);
    ok(sim.run_until_converged(4 * DEADLINE));

    let reused = sim.checker.history[&(head + 1)];
    assert_ne!(
        reused.checksum, lost.checksum,
        "the truncated op was committed"
    );
    assert_eq!(sim.client_requests_done(0), 6);
    assert_eq!(sim.client_replies_accepted(0), 6);
    assert_eq!(
        committed_ops(&sim, client, 6).len(),
        1,
        "request 6 not executed exactly once"
    );
    // The old primary's faulty slot is rewritten with the prepare that reused its op number.
    ok(sim.run_until(
        |s| {
            let r = s.replica(old).unwrap();
            r.journal().has_clean(head + 1, reused.checksum) && r.journal().faulty_count() == 0
        },
        DEADLINE,
    ));
}

/// (f) With room for two sessions, a third client's register evicts the session with the oldest
/// latest commit on every replica; that client is told (`eviction`), and a request it sends in
/// its old session afterwards is refused with another eviction and never executed.
#[test]
fn session_eviction() {
    for_each_seed(session_eviction_seed);
}

fn session_eviction_seed(seed: u64) {
    let mut options = SimOptions::quiet(3, 3);
    options.config.clients_max = 2;
    let mut sim = Simulator::with_options(seed, options, trace());
    // One client at a time, so the order of sessions is known.
    for c in 0..3 {
        sim.set_client_workload(c, 2);
        ok(sim.run_until_converged(DEADLINE));
    }
    let ids: Vec<u128> = (0..3).map(|c| sim.client(c).id).collect();
    assert!(
        sim.client(0).evicted(),
        "the oldest session was not evicted"
    );
    assert!(sim.client_evictions_received(0) >= 1);
    assert!(!sim.client(1).evicted() && !sim.client(2).evicted());
    assert_eq!(sim.client_requests_done(1), 2);
    assert_eq!(sim.client_requests_done(2), 2);
    for r in 0..3 {
        let table = sim.replica(r).unwrap().clients();
        assert!(
            table.get(ids[0]).is_none(),
            "replica {r} kept the evicted session"
        );
        assert!(table.get(ids[1]).is_some() && table.get(ids[2]).is_some());
    }

    // Its next request, in the evicted session, is refused.
    let evictions = sim.client_evictions_received(0);
    let p = primary(&sim) as u8;
    let request = sim.client_send_raw_request(0, p, b"after eviction");
    assert_eq!(request.request, 3);
    ok(sim.run_until(|s| s.client_evictions_received(0) > evictions, DEADLINE));
    ok(sim.run_for(200));
    assert!(
        committed_ops(&sim, ids[0], 3).is_empty(),
        "an evicted session's request ran"
    );
    assert!(sim
        .checker
        .history
        .values()
        .all(|c| c.client != ids[0] || c.request < 3));
    ok(sim.run_until_converged(DEADLINE));
}

/// (g) A request is in flight when the primary crashes (prepared by it, maybe not yet by
/// anyone else): the client times out, retries to the other replicas, and gets exactly one
/// reply; the request is executed exactly once.
#[test]
fn client_retry_across_view_change() {
    for_each_seed(client_retry_across_view_change_seed);
}

fn client_retry_across_view_change_seed(seed: u64) {
    let mut sim = warmed_up(seed, 3, 1, 3);
    let client = sim.client(0).id;
    let p = primary(&sim);
    let view = sim.replica_view(p).unwrap();
    let sent = sim.client_requests_sent(0);
    sim.set_client_workload(0, 4);
    ok(sim.run_until(
        |s| {
            let r = s.replica(p).unwrap();
            r.journal()
                .header(r.op())
                .map(Prepare::from_header)
                .is_some_and(|prepare| prepare.client == client && prepare.request == 4)
        },
        DEADLINE,
    ));
    assert!(sim.client(0).busy(), "the reply must still be outstanding");
    sim.crash_replica(p);
    ok(sim.run_until(|s| s.client_requests_done(0) == 4, DEADLINE));
    assert!(
        sim.client_requests_sent(0) >= sent + 2,
        "the client never retried its request"
    );
    let new = primary(&sim);
    assert!(sim.replica_view(new).unwrap() > view);
    sim.restart_replica(p);
    ok(sim.run_until_converged(DEADLINE));
    assert_eq!(sim.client_replies_accepted(0), 4);
    assert_eq!(committed_ops(&sim, client, 4).len(), 1);
    assert!(!sim.client(0).busy());
}

/// A paused replica keeps its memory, receives the messages held for it when it resumes, and
/// catches up; a paused primary is replaced while it sleeps.
#[test]
fn paused_primary_resumes_and_catches_up() {
    for_each_seed(paused_primary_resumes_and_catches_up_seed);
}

fn paused_primary_resumes_and_catches_up_seed(seed: u64) {
    let mut sim = quiet(seed, 3, 2);
    for c in 0..2 {
        sim.set_client_workload(c, 30);
    }
    ok(sim.run_until(
        |s| {
            s.primary()
                .is_some_and(|p| s.replica_commit_min(p).unwrap() >= 10)
        },
        DEADLINE,
    ));
    let p = primary(&sim);
    let view = sim.replica_view(p).unwrap();
    let op = sim.replica_op(p).unwrap();
    sim.pause_replica(p, 400);
    ok(sim.run_for(399));
    assert!(sim.replica_paused(p));
    // Frozen: not a tick of progress, yet the others moved on without it.
    assert_eq!(sim.replica_view(p), Some(view));
    assert_eq!(sim.replica_op(p), Some(op));
    assert!(sim.view_max() > view);
    ok(sim.run_until(|s| !s.replica_paused(p), 10));
    ok(sim.run_until_converged(4 * DEADLINE));
    assert!(sim.replica_view(p).unwrap() > view);
    assert_eq!(sim.faults.pauses, 1);
}

/// (i) A lost disk rejoins safely (`vsr recover`; TigerBeetle issue #2767). Ops are committed
/// by the primary and one backup only (the third replica is cut off); that backup then loses its
/// disk and comes back from a recover image, and the primary crashes. The re-created backup may
/// have acknowledged those ops, so it must not help the cut-off replica form a view that lacks
/// them: no view starts until the old primary returns, then the re-created backup catches up
/// and everything acknowledged is still there.
#[test]
fn lost_disk_rejoins_without_losing_acknowledged_ops() {
    for_each_seed(lost_disk_rejoins_without_losing_acknowledged_ops_seed);
}

fn lost_disk_rejoins_without_losing_acknowledged_ops_seed(seed: u64) {
    let mut sim = warmed_up(seed, 3, 1, 3);
    let a = primary(&sim);
    let b = (a + 1) % 3;
    let c = (a + 2) % 3;
    let view = sim.replica_view(a).unwrap();
    sim.partition_replica(c, Cut::Both);
    let before = sim.replica_commit_max(a).unwrap();
    sim.set_client_workload(0, 3 + 20);
    ok(sim.run_until(
        |s| s.replica_commit_max(a).is_some_and(|m| m >= before + 10),
        DEADLINE,
    ));
    let acknowledged = sim.replica_commit_max(a).unwrap();
    assert!(
        sim.replica_op(c).unwrap() < acknowledged,
        "the cut-off replica holds the ops"
    );

    sim.crash_replica(b);
    sim.lose_disk(b);
    sim.restart_replica(b);
    sim.crash_replica(a);
    sim.heal_partition();
    // The re-created replica waits for a start_view; the cut-off one alone is no quorum.
    ok(sim.run_for(DEADLINE / 2));
    for r in [b, c] {
        let started =
            sim.replica_status(r) == Some(Status::Normal) && sim.replica_view(r).unwrap() > view;
        assert!(
            !started,
            "replica {r} started a view without the ops only the lost disk and the crashed primary acknowledged:{}",
            sim.describe_state()
        );
    }

    sim.restart_replica(a);
    ok(sim.run_until_converged(4 * DEADLINE));
    assert_eq!(sim.client_requests_done(0), 3 + 20);
    assert!(sim.replica_commit_min(b).unwrap() >= acknowledged);
    assert!(
        sim.replica_stats().rejoins_completed >= 1,
        "the re-created replica never finished rejoining"
    );
}

/// (j) The replica after the primary in the replication ring is down: once it has been silent
/// for two ping intervals, prepares skip past it, so the cluster commits at full speed with no
/// prepare timeouts (before, every op waited for the primary's prepare timeout).
#[test]
fn ring_skips_a_replica_that_is_down() {
    for_each_seed(ring_skips_a_replica_that_is_down_seed);
}

fn ring_skips_a_replica_that_is_down_seed(seed: u64) {
    // A prepare timeout well above a commit's latency: any resend is a prepare that waited.
    let mut options = SimOptions::quiet(3, 1);
    options.config.prepare_timeout_ticks = 100;
    let mut sim = Simulator::with_options(seed, options, trace());
    sim.set_client_workload(0, 3);
    ok(sim.run_until_converged(DEADLINE));
    let p = primary(&sim);
    let next = (p + 1) % 3;
    sim.crash_replica(next);
    let ping = sim.options.config.ping_timeout_ticks;
    ok(sim.run_for(3 * ping));
    assert_eq!(primary(&sim), p, "the primary changed");
    let resent = sim.replica_stats().prepares_resent;
    sim.set_client_workload(0, 3 + 30);
    ok(sim.run_until(|s| s.client_requests_done(0) == 3 + 30, DEADLINE));
    assert_eq!(
        sim.replica_stats().prepares_resent,
        resent,
        "prepares waited for the prepare timeout"
    );
    sim.restart_replica(next);
    ok(sim.run_until_converged(4 * DEADLINE));
}

/// (k) Two replicas. The primary prepares an op its backup never receives, and its own copy of
/// that prepare then rots on disk unnoticed. A view change (which empties the in-memory pipeline)
/// makes it primary again with the op in its log; only when it reads the op does it find the
/// damage, and the backup cannot supply it. It must step down: in the next view change its slot
/// is reported faulty, the backup's nack proves the op uncommitted, and the op is truncated.
/// Before, it stayed primary with heartbeats that kept its backup content, and nothing committed.
#[test]
fn primary_lacking_its_own_prepare_steps_down() {
    for_each_seed(primary_lacking_its_own_prepare_steps_down_seed);
}

fn primary_lacking_its_own_prepare_steps_down_seed(seed: u64) {
    let mut sim = warmed_up(seed, 2, 1, 5);
    let old = primary(&sim);
    let backup = 1 - old;
    let view = sim.replica_view(old).unwrap();
    let head = sim.replica_op(old).unwrap();
    let client = sim.client(0).id;

    // Nothing the primary sends arrives: its prepare of request 6 stays its own.
    let lost = prepare_alone(&mut sim, old, 6);
    sim.corrupt_prepare(old, head + 1);

    // The backup times out and its start_view_change pulls the old primary into a view change.
    // Cut off both ways before the backup's start_view of that view arrives, the old primary
    // times out in its turn and, alone (a view-change quorum of two replicas is one), starts the
    // next view as its primary with the damaged op in its log, unread.
    ok(sim.run_until(
        |s| s.replica_status(old) == Some(Status::ViewChange),
        2 * DEADLINE,
    ));
    sim.partition_replica(old, Cut::Both);
    ok(sim.run_until(
        |s| {
            s.replica(old).is_some_and(|r| {
                r.view() > view + 1
                    && r.status() == Status::Normal
                    && r.is_primary()
                    && r.op() == head + 1
            })
        },
        2 * DEADLINE,
    ));
    assert!(sim
        .replica(backup)
        .unwrap()
        .journal()
        .header(head + 1)
        .is_none_or(|h| h.checksum != lost.checksum));
    assert_eq!(
        sim.replica(old).unwrap().journal().faulty_count(),
        0,
        "the damage is already known"
    );
    sim.heal_partition();
    ok(sim.run_until_converged(4 * DEADLINE));

    assert!(sim.replica(old).unwrap().stats().primary_step_downs >= 1);
    let reused = sim.checker.history[&(head + 1)];
    assert_ne!(
        reused.checksum, lost.checksum,
        "the damaged op was committed"
    );
    assert_eq!(sim.client_requests_done(0), 6);
    assert_eq!(
        committed_ops(&sim, client, 6).len(),
        1,
        "request 6 not executed exactly once"
    );
}

/// (l) Three replicas, one of them gone for good. The other two hold each checkpoint with a
/// different chunk damaged: the lagging one its checkpoint C1, the furthest one its C2 (the only
/// C2 anywhere). Both find out on restart and lose their state. The only whole state is C1,
/// across the two: the furthest still holds its C1 in the other area and serves it (recorded in
/// its superblock, so across its restart), and the lagging one counts its own intact chunks. The
/// lagging one must sync to C1, not to the newest checkpoint C2 (no whole copy of it exists),
/// replay the journal to C2 and write an intact C2 of its own; the furthest then syncs to that.
/// Before, the lagging one asked for C2 forever and nothing committed again.
#[test]
fn damaged_checkpoints_sync_to_the_one_a_quorum_holds() {
    for_each_seed(damaged_checkpoints_sync_to_the_one_a_quorum_holds_seed);
}

/// Three replicas with a small journal (a checkpoint every 19 ops), one client, every replica
/// at its first checkpoint. Returns the checkpoint interval too.
fn at_first_checkpoint(seed: u64) -> (Simulator, u64) {
    let mut options = SimOptions::quiet(3, 1);
    options.config.journal_slot_count = 48;
    let interval = options.config.checkpoint_interval();
    let mut sim = Simulator::with_options(seed, options, trace());
    sim.set_client_workload(0, interval + 5);
    ok(sim.run_until_converged(DEADLINE));
    ok(sim.run_until(
        |s| (0..3).all(|r| s.replica_checkpoint(r).unwrap().op == interval),
        DEADLINE,
    ));
    (sim, interval)
}

fn damaged_checkpoints_sync_to_the_one_a_quorum_holds_seed(seed: u64) {
    let (mut sim, interval) = at_first_checkpoint(seed);
    let c2 = 2 * interval;
    let furthest = primary(&sim);
    let lagging = (furthest + 1) % 3;
    let gone = (furthest + 2) % 3;

    sim.partition_replica(lagging, Cut::Both);
    sim.set_client_workload(0, c2 + 5);
    ok(sim.run_until(
        |s| s.client_requests_done(0) == c2 + 5 && s.replica_checkpoint(furthest).unwrap().op == c2,
        DEADLINE,
    ));
    let lagging_c1 = sim.replica_checkpoint(lagging).unwrap();
    let furthest_c2 = sim.replica_checkpoint(furthest).unwrap();
    assert_eq!((lagging_c1.op, furthest_c2.op), (interval, c2));
    sim.crash_replica(gone);
    sim.crash_replica(lagging);
    sim.crash_replica(furthest);
    sim.corrupt_checkpoint_chunk(lagging, lagging_c1.area, 0);
    sim.corrupt_checkpoint_chunk(furthest, furthest_c2.area, 0);
    sim.heal_partition();
    sim.restart_replica(lagging);
    sim.restart_replica(furthest);

    ok(sim.run_until(
        |s| {
            [lagging, furthest].iter().all(|&r| {
                s.replica(r).is_some_and(|x| x.state_available())
                    && s.replica_checkpoint(r).unwrap().op == c2
                    && s.replica_commit_min(r).unwrap() >= c2 + 5
            })
        },
        4 * DEADLINE,
    ));
    let stats = sim.replica_stats();
    assert!(stats.checkpoints_unusable >= 2, "{stats:?}");
    assert!(stats.syncs_completed >= 2, "{stats:?}");
    // The two go on committing without the third.
    sim.set_client_workload(0, c2 + 15);
    ok(sim.run_until(|s| s.client_requests_done(0) == c2 + 15, 4 * DEADLINE));
    sim.restart_replica(gone);
    ok(sim.run_until_converged(4 * DEADLINE));
}

/// (m) Three replicas, one down. Of the two left, one has lost its state and cannot get one
/// back (every copy of a checkpoint it could sync to is damaged): it still acknowledges prepares,
/// so the other commits, reaching checkpoint C2 alone. At C3's op that one must not write C3
/// over C1 while C2 is held by no quorum: its commits wait there. When the third replica comes
/// back and writes its own C2, C3 is written and everyone converges.
#[test]
fn checkpoint_waits_until_a_quorum_holds_the_one_before() {
    for_each_seed(checkpoint_waits_until_a_quorum_holds_the_one_before_seed);
}

fn checkpoint_waits_until_a_quorum_holds_the_one_before_seed(seed: u64) {
    let (mut sim, interval) = at_first_checkpoint(seed);
    let (c2, c3) = (2 * interval, 3 * interval);
    let furthest = primary(&sim);
    let lost = (furthest + 1) % 3;
    let gone = (furthest + 2) % 3;
    sim.crash_replica(gone);
    sim.crash_replica(lost);
    let lost_c1 = sim.replica_checkpoint(furthest).unwrap();
    sim.corrupt_checkpoint_chunk(lost, lost_c1.area, 0);
    sim.corrupt_checkpoint_chunk(furthest, lost_c1.area, 0);
    sim.restart_replica(lost);

    // C2 is written by the furthest alone; damage it there too, so the lost one stays lost.
    sim.set_client_workload(0, c3 + 5);
    ok(sim.run_until(
        |s| s.replica_checkpoint(furthest).unwrap().op == c2,
        2 * DEADLINE,
    ));
    let c2_area = sim.replica_checkpoint(furthest).unwrap().area;
    sim.corrupt_checkpoint_chunk(furthest, c2_area, 0);
    ok(sim.run_until(
        |s| s.replica_commit_min(furthest).unwrap() == c3,
        2 * DEADLINE,
    ));
    ok(sim.run_for(DEADLINE / 5));
    assert_eq!(
        sim.replica_commit_min(furthest),
        Some(c3),
        "commits went on"
    );
    assert_eq!(
        sim.replica_checkpoint(furthest).unwrap().op,
        c2,
        "checkpoint C3 overwrote C1 while C2 was held by no quorum"
    );
    assert!(sim.replica_stats().checkpoints_held_back >= 1);
    assert!(!sim.replica(lost).unwrap().state_available());

    sim.restart_replica(gone);
    ok(sim.run_until(
        |s| (0..3).all(|r| s.replica_checkpoint(r).is_some_and(|c| c.op >= c3)),
        4 * DEADLINE,
    ));
    ok(sim.run_until_converged(4 * DEADLINE));
    assert_eq!(sim.client_requests_done(0), c3 + 5);
}

#[test]
fn messages_naming_a_replica_outside_the_cluster_are_dropped() {
    for_each_seed(messages_naming_a_replica_outside_the_cluster_are_dropped_seed);
}

/// A well-formed message (valid checksums, this cluster) whose `replica` is no replica of the
/// cluster is dropped and counted, never handed to a handler that indexes by it.
fn messages_naming_a_replica_outside_the_cluster_are_dropped_seed(seed: u64) {
    let mut sim = warmed_up(seed, 3, 1, 2);
    let p = sim.primary().unwrap();
    let cluster = sim.replica(p).unwrap().cluster();
    let view = sim.view_max();
    let stranger = 7u8;
    let headers = [
        Ping {
            view,
            replica: stranger,
            ..Ping::default()
        }
        .to_header(cluster),
        RequestHeaders {
            view,
            replica: stranger,
            op_min: 1,
            op_max: 2,
        }
        .to_header(cluster),
        RequestPrepare {
            view,
            replica: stranger,
            op: 1,
            ..RequestPrepare::default()
        }
        .to_header(cluster),
        RequestCheckpointChunk {
            view,
            replica: stranger,
            op: 1,
            checkpoint_id: 1,
            index: 0,
        }
        .to_header(cluster),
    ];
    let dropped_before = sim.replica_stats().messages_dropped_invalid;
    let pool = MessagePool::new(1, 4096);
    for header in headers {
        assert_eq!(header.invalid(HEADER_SIZE), None, "{header:?}");
        let mut message = pool.get().unwrap();
        *message.header_mut() = header;
        message.seal(0);
        let bytes = message.bytes().to_vec();
        sim.send_raw_to_replica(((p + 1) % 3) as u8, p as u8, bytes);
    }
    ok(sim.run_until(
        |s| s.replica_stats().messages_dropped_invalid >= dropped_before + headers.len() as u64,
        DEADLINE,
    ));
    sim.set_client_workload(0, 4);
    ok(sim.run_until_converged(DEADLINE));
}

/// (n) A backup restarted after missing many ops repairs them at the speed of the network: each
/// answer refills the repair window at once (and headers that extend the proven chain ask their
/// sender for the next ones), instead of one window per repair timeout, which caught up at
/// ~10 ops/s with real processes. Ticks from its restart until it holds all 120 missed ops
/// durably, over seeds 0-49: 172-214 now, 369-395 with one window per timeout.
#[test]
fn restarted_backup_catches_up_without_waiting_for_repair_timeouts() {
    for_each_seed(restarted_backup_catches_up_without_waiting_for_repair_timeouts_seed);
}

fn restarted_backup_catches_up_without_waiting_for_repair_timeouts_seed(seed: u64) {
    let mut sim = warmed_up(seed, 3, 4, 1);
    let p = primary(&sim);
    let b = (p + 1) % 3;
    sim.crash_replica(b);
    let missed_before = sim.replica_op(p).unwrap();
    for c in 0..4 {
        sim.set_client_workload(c, 31);
    }
    ok(sim.run_until(
        |s| (0..4).all(|c| s.client_requests_done(c) >= 31),
        DEADLINE,
    ));
    let p = primary(&sim);
    let head = sim.replica_op(p).unwrap();
    assert!(
        head - missed_before >= 120,
        "missed {}",
        head - missed_before
    );
    sim.restart_replica(b);
    // Repaired: every op up to the head held durably (commits follow, one disk read each).
    let ticks = ok(sim.run_until(
        |s| {
            s.replica(b).is_some_and(|r| {
                r.status() == Status::Normal
                    && (r.commit_min() + 1..=head)
                        .all(|op| r.journal().header(op).is_some() && !r.journal().is_dirty(op))
            })
        },
        DEADLINE,
    ));
    assert!(
        ticks <= 280,
        "repaired {} ops in {ticks} ticks",
        head - missed_before
    );
}
