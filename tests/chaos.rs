//! The chaos test: a 3-replica cluster of real `vsr` processes on 127.0.0.1 under load from
//! several client sessions (one thread and one `NetClient` each, unique transfer ids), while a
//! nemesis faults one replica at a time (never more than f = 1): kill -9 then restart, SIGSTOP
//! then SIGCONT, or kill -9, corrupt sectors of its journal (the data file's WAL zones) and
//! restart. After each fault it waits until the replica has caught up (`vsr inspect`: it holds
//! an op prepared after it came back, and no op between its checkpoint and its head is missing).
//!
//! At the end the load stops and the ledger is checked against what the clients were told:
//! every acknowledged transfer is present exactly as sent, no failed one (an error result, or a
//! definite error) is present, indeterminate ones (timed out) are present as sent or absent,
//! and every account's balances are the sums of the transfers present. The replicas must
//! converge to the same head, with nothing missing, and the same checkpoint (op and id). Any of
//! these failing fails the run (exit 1). It prints the longest interval without any reply and
//! the request latencies, against the targets (<= 3 s, p99 <= 250 ms), which do not fail it.
//!
//! `cargo test --release --test chaos` runs 60 s of faults (CI does, within the README's test
//! command). Longer: `cargo test --release --test chaos -- --seconds 600`; also `--seed N` (the
//! fault schedule and workload), `--clients N`, `--faults kill,stop,corrupt` (the kinds to draw
//! from), `--keep` (keep the data files and logs).

mod common;

use common::TestCluster;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vsr::client::net::{NetClient, NetError};
use vsr::ledger::{Account, LedgerOperation, Transfer};
use vsr::storage::{Layout, Zone};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

const REPLICAS: usize = 3;
const ACCOUNTS: u128 = 64;
const MESSAGE_SIZE_MAX: usize = 65536;
const EVENT_SIZE: usize = 128;
/// Each worker's request timeout: longer than a view change after a stopped primary (2 s of
/// silence) or a killed one (~0.3 s), so a request outlives the fault that delayed it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the nemesis waits for a faulted replica to catch up before it says so.
const CATCH_UP_MAX: Duration = Duration::from_secs(120);
const TARGET_GAP: Duration = Duration::from_secs(3);
const TARGET_P99: Duration = Duration::from_millis(250);

struct Options {
    seconds: u64,
    seed: u64,
    clients: usize,
    keep: bool,
    /// The fault kinds to draw from: 0 kill -9, 1 SIGSTOP, 2 journal corruption.
    faults: Vec<u64>,
}

/// None: not selected (`cargo test <filter>` passes its filter to every test binary).
fn options() -> Option<Options> {
    let mut options = Options {
        seconds: 60,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        clients: 4,
        keep: false,
        faults: vec![0, 1, 2],
    };
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| -> String {
            inline
                .clone()
                .or_else(|| args.next())
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match name.as_str() {
            "--seconds" => options.seconds = value("--seconds").parse().expect("--seconds N"),
            "--seed" => options.seed = value("--seed").parse().expect("--seed N"),
            "--clients" => options.clients = value("--clients").parse().expect("--clients N"),
            "--keep" => options.keep = true,
            "--faults" => {
                options.faults = value("--faults")
                    .split(',')
                    .map(|f| match f {
                        "kill" => 0,
                        "stop" => 1,
                        "corrupt" => 2,
                        other => panic!("--faults {other:?}: kill, stop, corrupt"),
                    })
                    .collect()
            }
            "--list" => {
                println!("chaos: test");
                return None;
            }
            "--ignored" | "--exact" => {}
            // libtest's options that take a value.
            "--test-threads" | "--skip" | "--format" | "--color" | "--logfile" | "-Z" => {
                value(&name);
            }
            other if other.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    if !filters.is_empty() && !filters.iter().any(|f| "chaos".contains(f.as_str())) {
        return None;
    }
    Some(options)
}

/// What the client was told about one transfer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// Created (its reply listed no error for it).
    Acked,
    /// Not created: an error result, or a definite error for its request.
    Failed,
    /// Timed out, or evicted after sending: it may or may not exist.
    Indeterminate,
}

#[derive(Default)]
struct WorkerLog {
    transfers: Vec<(Transfer, Fate)>,
    /// Every reply's arrival, in ms since the load started.
    replies_ms: Vec<f64>,
    /// Every call's duration (a timed-out call counts its whole wait).
    latencies: Vec<Duration>,
    requests_ok: u64,
    timeouts: u64,
    definite_errors: u64,
    resolved_late: u64,
    evictions: u64,
}

impl WorkerLog {
    /// Applies a create_transfers reply (failed events as (index, result) pairs) to the batch
    /// at `first..first + count`.
    fn apply_reply(&mut self, first: usize, count: usize, reply: &[u8]) {
        for i in first..first + count {
            self.transfers[i].1 = Fate::Acked;
        }
        for pair in reply.chunks_exact(8) {
            let index = u32::from_le_bytes(pair[..4].try_into().unwrap()) as usize;
            assert!(
                index < count,
                "result index {index} beyond the batch of {count}"
            );
            self.transfers[first + index].1 = Fate::Failed;
        }
    }
}

fn worker(
    worker: u64,
    cluster: u128,
    addresses: Vec<SocketAddr>,
    seed: u64,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> WorkerLog {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ worker.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut log = WorkerLog::default();
    let mut client = NetClient::new(cluster, &addresses, MESSAGE_SIZE_MAX);
    // The request that timed out and may still be answered: (number, first transfer, count).
    let mut pending: Option<(u64, usize, usize)> = None;
    let mut next_id = 0u64;
    let mut batch_number = 0u32;
    while !stop.load(Ordering::Relaxed) {
        batch_number += 1;
        let count = 1 + (rng.next_u64() % 8) as usize;
        let first = log.transfers.len();
        let mut body = Vec::with_capacity(count * EVENT_SIZE);
        for _ in 0..count {
            next_id += 1;
            let debit = 1 + (rng.next_u64() % ACCOUNTS as u64) as u128;
            let credit = 1 + (debit + (rng.next_u64() % (ACCOUNTS as u64 - 1)) as u128) % ACCOUNTS;
            let mut t = Transfer::new_zeroed();
            t.id = (worker as u128 + 1) << 64 | next_id as u128;
            t.debit_account_id = debit;
            t.credit_account_id = credit;
            t.amount = 1 + (rng.next_u64() % 100) as u128;
            t.user_data_64 = worker;
            t.user_data_32 = batch_number;
            t.ledger = 700;
            t.code = 10;
            body.extend_from_slice(t.as_bytes());
            log.transfers.push((t, Fate::Indeterminate));
        }
        let sent = Instant::now();
        let result = client.request(
            LedgerOperation::CreateTransfers as u8,
            &body,
            REQUEST_TIMEOUT,
        );
        log.latencies.push(sent.elapsed());
        let now_ms = || start.elapsed().as_secs_f64() * 1000.0;
        // A reply to the request that timed out, received while this call waited for it.
        if let Some((number, reply)) = client.take_late_reply() {
            let (pending_number, pending_first, pending_count) = pending
                .take()
                .expect("a late reply without a request that timed out");
            assert_eq!(
                number, pending_number,
                "the late reply is not the pending one"
            );
            log.apply_reply(pending_first, pending_count, reply.body());
            log.replies_ms.push(now_ms());
            log.resolved_late += 1;
        }
        match result {
            Ok(reply) => {
                log.apply_reply(first, count, reply.body());
                log.replies_ms.push(now_ms());
                log.requests_ok += 1;
            }
            Err(error) => {
                if error.definite() {
                    log.definite_errors += 1;
                    for i in first..first + count {
                        log.transfers[i].1 = Fate::Failed;
                    }
                } else {
                    log.timeouts += 1;
                }
                match error {
                    NetError::Timeout { request, .. } => pending = Some((request, first, count)),
                    NetError::Evicted { .. } => {
                        log.evictions += 1;
                        pending = None;
                        client = NetClient::new(cluster, &addresses, MESSAGE_SIZE_MAX);
                    }
                    _ => {}
                }
            }
        }
        if !client.busy() {
            // Nothing in flight: a pending request was answered (above) or cancelled.
            pending = None;
        }
        // Pace the load (a few hundred requests a second in all): the ledger must hold every
        // transfer of a long run.
        std::thread::sleep(Duration::from_millis(10));
    }
    log
}

/// What `vsr inspect` says about a replica's journal and checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Journal {
    head: u64,
    missing: u64,
    checkpoint: (u64, String),
}

fn journal(inspect: &str) -> Journal {
    let field = |prefix: &str| -> Option<&str> {
        inspect
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
    };
    let head = field("ops present: ")
        .map(|r| r.rsplit("..=").next().unwrap().trim().parse().unwrap())
        .unwrap_or(0);
    let missing = field("ops missing between the checkpoint and the head: ")
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0);
    let checkpoint = match field("checkpoint: op=") {
        Some(rest) => {
            let op = rest.split_whitespace().next().unwrap().parse().unwrap();
            let id = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("id="))
                .unwrap()
                .to_string();
            (op, id)
        }
        None => (0, String::new()),
    };
    Journal {
        head,
        missing,
        checkpoint,
    }
}

/// Overwrites `count` random sectors of the WAL zones (header ring, and the first two sectors
/// of prepare slots) with random bytes, never zeros. The replica must not be running.
fn corrupt_journal(path: &std::path::Path, rng: &mut ChaCha8Rng, count: usize) -> Vec<String> {
    let sb = vsr::cli::read_superblock(path).unwrap_or_else(|e| panic!("{}", e.message));
    let config = vsr::cli::Sizes {
        message_size_max: sb.message_size_max,
        journal_slot_count: sb.journal_slot_count,
        pipeline_max: sb.pipeline_max,
        clients_max: sb.clients_max,
    }
    .config(sb.replica_count);
    let layout = Layout::new(&config);
    let sector = vsr::config::SECTOR_SIZE as u64;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut done = Vec::new();
    for _ in 0..count {
        let (zone, offset) = if rng.next_u64() % 2 == 0 {
            let sectors = layout.zone_size(Zone::WalHeaders) / sector;
            (Zone::WalHeaders, (rng.next_u64() % sectors) * sector)
        } else {
            let slot = rng.next_u64() % layout.slot_count;
            let within = (rng.next_u64() % 2) * sector;
            (Zone::WalPrepares, slot * layout.message_size_max + within)
        };
        let mut bytes = vec![0u8; sector as usize];
        for b in bytes.iter_mut() {
            *b = (rng.next_u64() as u8) | 1;
        }
        file.write_at(&bytes, layout.zone_offset(zone) + offset)
            .unwrap();
        done.push(format!("{zone:?}+{offset}"));
    }
    file.sync_all().unwrap();
    done
}

struct Event {
    at: f64,
    what: String,
}

/// Restarts any replica whose process exited on its own (a crash: a bug), noting it.
fn restart_crashed(cluster: &mut TestCluster, at: f64, crashes: &mut Vec<String>) {
    for r in 0..REPLICAS {
        if let Some(status) = cluster.exited(r) {
            let log = cluster.log(r);
            let lines: Vec<&str> = log.lines().collect();
            let panic = lines
                .iter()
                .position(|l| l.contains("panicked"))
                .map(|i| format!(": {} {}", lines[i], lines.get(i + 1).unwrap_or(&"")))
                .unwrap_or_default();
            crashes.push(format!(
                "replica {r} exited on its own at {at:.1} s ({status}){panic}"
            ));
            cluster.start(r);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Requests with retries until `deadline` (the cluster is healed, but may still be electing).
fn request_until(
    client: &mut NetClient,
    operation: LedgerOperation,
    body: &[u8],
    deadline: Instant,
) -> Vec<u8> {
    loop {
        match client.request(operation as u8, body, Duration::from_secs(10)) {
            Ok(reply) => return reply.body().to_vec(),
            Err(e) => assert!(
                Instant::now() < deadline,
                "the healed cluster did not answer {operation:?}: {e}"
            ),
        }
    }
}

fn main() {
    let Some(options) = options() else {
        return;
    };
    let failures = run(&options);
    if failures.is_empty() {
        println!("chaos: PASS");
    } else {
        println!("chaos: FAIL");
        for f in &failures {
            println!("chaos:   {f}");
        }
        std::process::exit(1);
    }
}

fn run(options: &Options) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    println!(
        "chaos: seed {} ({} s of faults, {} clients; replay the schedule with --seed {})",
        options.seed, options.seconds, options.clients, options.seed
    );
    let mut cluster = TestCluster::format("chaos", REPLICAS);
    // Room for every transfer of the run (a few thousand a second at most).
    let transfers_max = (200_000 + options.seconds * 3_000).min(16 << 20);
    cluster.start_args = vec![
        "--accounts-max=1024".into(),
        format!("--transfers-max={transfers_max}"),
    ];
    cluster.start_all();
    let addresses = cluster.addresses();
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    let mut checker = NetClient::new(cluster.cluster, &addresses, MESSAGE_SIZE_MAX);
    let mut accounts = Vec::new();
    for id in 1..=ACCOUNTS {
        let mut a = Account::new_zeroed();
        a.id = id;
        a.ledger = 700;
        a.code = 10;
        accounts.extend_from_slice(a.as_bytes());
    }
    let created = request_until(
        &mut checker,
        LedgerOperation::CreateAccounts,
        &accounts,
        setup_deadline,
    );
    assert!(created.is_empty(), "creating the accounts failed some");

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..options.clients as u64)
        .map(|w| {
            let (addresses, stop) = (addresses.clone(), stop.clone());
            let (cluster, seed) = (cluster.cluster, options.seed);
            std::thread::spawn(move || worker(w, cluster, addresses, seed, start, stop))
        })
        .collect();

    // The nemesis: one replica at a time, each fault healed and caught up before the next.
    let mut events: Vec<Event> = Vec::new();
    let at = || start.elapsed().as_secs_f64();
    let phase = Duration::from_secs(options.seconds);
    let pause = |rng: &mut ChaCha8Rng, low_ms: u64, high_ms: u64| {
        std::thread::sleep(Duration::from_millis(
            low_ms + rng.next_u64() % (high_ms - low_ms),
        ))
    };
    let mut catch_up_max = (Duration::ZERO, String::new());
    let mut crashes: Vec<String> = Vec::new();
    let mut not_caught_up = Vec::new();
    let (mut kills, mut stops, mut corruptions, mut sectors) = (0, 0, 0, 0);
    // Leave the last seconds of the phase for the last fault to heal under load.
    while start.elapsed() + Duration::from_secs(10) < phase {
        pause(&mut rng, 500, 2000);
        restart_crashed(&mut cluster, at(), &mut crashes);
        let replica = (rng.next_u64() % REPLICAS as u64) as usize;
        let primary = (0..REPLICAS)
            .map(|r| common::view(&cluster.inspect(r)))
            .max()
            .unwrap() as usize
            % REPLICAS;
        let role = if replica == primary {
            "the primary"
        } else {
            "a backup"
        };
        match options.faults[(rng.next_u64() % options.faults.len() as u64) as usize] {
            0 => {
                kills += 1;
                events.push(Event {
                    at: at(),
                    what: format!("kill -9 replica {replica} ({role})"),
                });
                cluster.kill9(replica);
                pause(&mut rng, 1000, 4000);
                cluster.start(replica);
            }
            1 => {
                stops += 1;
                events.push(Event {
                    at: at(),
                    what: format!("SIGSTOP replica {replica} ({role})"),
                });
                cluster.signal(replica, libc::SIGSTOP);
                pause(&mut rng, 1000, 4000);
                cluster.signal(replica, libc::SIGCONT);
            }
            _ => {
                corruptions += 1;
                cluster.kill9(replica);
                let count = 1 + (rng.next_u64() % 8) as usize;
                sectors += count;
                let damaged = corrupt_journal(&cluster.path(replica), &mut rng, count);
                events.push(Event {
                    at: at(),
                    what: format!(
                        "kill -9 replica {replica} ({role}), corrupt {count} journal sector(s): {}",
                        damaged.join(" ")
                    ),
                });
                pause(&mut rng, 200, 2000);
                cluster.start(replica);
            }
        }
        // Healed: wait until it holds an op prepared after it came back (so the cluster has a
        // primary again, and it follows it) with nothing missing below: only then may another
        // replica fail.
        let healed = Instant::now();
        let target = 1
            + (0..REPLICAS)
                .map(|r| journal(&cluster.inspect(r)).head)
                .max()
                .unwrap();
        let fault = events.last().unwrap().what.clone();
        let caught_up = loop {
            restart_crashed(&mut cluster, at(), &mut crashes);
            let j = journal(&cluster.inspect(replica));
            if j.head >= target && j.missing == 0 {
                break true;
            }
            if start.elapsed() >= phase {
                // The load stops now; the final convergence waits for the rest.
                events.push(Event {
                    at: at(),
                    what: format!(
                        "the phase ends with replica {replica} still catching up (head {} of \
                         {target}, {} ops missing)",
                        j.head, j.missing
                    ),
                });
                break false;
            }
            if healed.elapsed() > CATCH_UP_MAX {
                not_caught_up.push(format!(
                    "replica {replica} had not caught up {} s after: {fault} (head {} of \
                     {target}, {} ops missing)",
                    CATCH_UP_MAX.as_secs(),
                    j.head,
                    j.missing
                ));
                break false;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if caught_up {
            let took = healed.elapsed();
            events.push(Event {
                at: at(),
                what: format!(
                    "replica {replica} caught up (to op {target}) in {:.1} s",
                    took.as_secs_f64()
                ),
            });
            if took > catch_up_max.0 {
                catch_up_max = (took, fault);
            }
        }
    }
    while start.elapsed() < phase {
        restart_crashed(&mut cluster, at(), &mut crashes);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<WorkerLog> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let load_ms = start.elapsed().as_secs_f64() * 1000.0;

    // Figures.
    let mut replies: Vec<f64> = logs.iter().flat_map(|l| l.replies_ms.clone()).collect();
    replies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut gap = (0.0f64, 0.0f64);
    let mut previous = 0.0;
    for &t in replies.iter().chain(std::iter::once(&load_ms)) {
        if t - previous > gap.0 {
            gap = (t - previous, previous);
        }
        previous = t;
    }
    let mut latencies: Vec<Duration> = logs.iter().flat_map(|l| l.latencies.clone()).collect();
    latencies.sort();
    let sum = |f: fn(&WorkerLog) -> u64| logs.iter().map(f).sum::<u64>();
    let fates: Vec<(Transfer, Fate)> = logs.iter().flat_map(|l| l.transfers.clone()).collect();
    let count = |fate: Fate| fates.iter().filter(|(_, f)| *f == fate).count();
    println!(
        "chaos: faults: {} ({kills} kill -9, {stops} SIGSTOP, {corruptions} journal corruptions of \
         {sectors} sectors in all), one replica at a time",
        kills + stops + corruptions
    );
    for e in &events {
        println!("chaos:   {:7.1} s  {}", e.at, e.what);
    }
    println!(
        "chaos: requests: {} answered, {} timed out (outcome unknown; {} answered later), {} \
         failed definitely, {} evictions",
        sum(|l| l.requests_ok),
        sum(|l| l.timeouts),
        sum(|l| l.resolved_late),
        sum(|l| l.definite_errors),
        sum(|l| l.evictions)
    );
    println!(
        "chaos: transfers: {} acknowledged, {} failed, {} indeterminate",
        count(Fate::Acked),
        count(Fate::Failed),
        count(Fate::Indeterminate)
    );
    let gap_s = gap.0 / 1000.0;
    let fault_before = events
        .iter()
        .rev()
        .find(|e| e.at * 1000.0 <= gap.1 + 1.0)
        .map(|e| format!(" (last event before it: {})", e.what))
        .unwrap_or_default();
    println!(
        "chaos: longest interval without any reply: {gap_s:.2} s, from {:.1} s{fault_before}",
        gap.1 / 1000.0
    );
    let p99 = percentile(&latencies, 99.0);
    println!(
        "chaos: request latency: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms ({} \
         requests; a timed-out one counts its whole wait)",
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        percentile(&latencies, 99.9).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        latencies.len()
    );
    println!(
        "chaos: slowest catch-up after a fault: {:.1} s ({})",
        catch_up_max.0.as_secs_f64(),
        catch_up_max.1
    );
    println!(
        "chaos: targets (reported, not enforced): longest gap <= {} s: {}; p99 <= {} ms: {}",
        TARGET_GAP.as_secs(),
        if gap_s <= TARGET_GAP.as_secs_f64() {
            "met"
        } else {
            "MISSED"
        },
        TARGET_P99.as_millis(),
        if p99 <= TARGET_P99 { "met" } else { "MISSED" }
    );
    for n in &not_caught_up {
        println!("chaos: WARNING: {n}");
    }

    // Safety: the ledger against what the clients were told.
    let mut failures = Vec::new();
    for c in &crashes {
        println!("chaos: CRASH: {c}");
        failures.push(format!("crash: {c}"));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut found: HashMap<u128, Transfer> = HashMap::new();
    for chunk in fates.chunks(400) {
        let ids: Vec<u8> = chunk.iter().flat_map(|(t, _)| t.id.to_le_bytes()).collect();
        let reply = request_until(
            &mut checker,
            LedgerOperation::LookupTransfers,
            &ids,
            deadline,
        );
        for record in reply.chunks_exact(EVENT_SIZE) {
            let t = Transfer::read_from_bytes(record).unwrap();
            found.insert(t.id, t);
        }
    }
    let (mut lost, mut phantom, mut altered) = (0, 0, 0);
    let (mut present_indeterminate, mut expected) = (0, HashMap::<u128, (u128, u128)>::new());
    for (sent, fate) in &fates {
        let present = found.get(&sent.id).map(|t| {
            let mut t = *t;
            t.timestamp = 0;
            t
        });
        let problem = match (fate, present) {
            (Fate::Acked, None) => {
                lost += 1;
                Some("acknowledged but absent")
            }
            (Fate::Failed, Some(_)) => {
                phantom += 1;
                Some("failed but present")
            }
            (_, Some(t)) if t != *sent => {
                altered += 1;
                Some("present but not as sent")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            if failures.len() < 20 {
                failures.push(format!("transfer {:#x} ({fate:?}): {problem}", sent.id));
            }
        }
        if present.is_some() {
            if *fate == Fate::Indeterminate {
                present_indeterminate += 1;
            }
            expected.entry(sent.debit_account_id).or_default().0 += sent.amount;
            expected.entry(sent.credit_account_id).or_default().1 += sent.amount;
        }
    }
    let ids: Vec<u8> = (1..=ACCOUNTS).flat_map(|id| id.to_le_bytes()).collect();
    let reply = request_until(
        &mut checker,
        LedgerOperation::LookupAccounts,
        &ids,
        deadline,
    );
    let mut mismatches = 0;
    let accounts: Vec<Account> = reply
        .chunks_exact(EVENT_SIZE)
        .map(|r| Account::read_from_bytes(r).unwrap())
        .collect();
    if accounts.len() != ACCOUNTS as usize {
        failures.push(format!("{} of {ACCOUNTS} accounts found", accounts.len()));
    }
    for a in &accounts {
        let (debits, credits) = expected.get(&a.id).copied().unwrap_or_default();
        if a.debits_posted != debits
            || a.credits_posted != credits
            || a.debits_pending != 0
            || a.credits_pending != 0
        {
            mismatches += 1;
            failures.push(format!(
                "account {}: debits_posted {} credits_posted {} (pending {}/{}), the transfers \
                 present sum to {debits}/{credits}",
                a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending
            ));
        }
    }
    println!(
        "chaos: safety: {lost} lost, {phantom} phantom, {altered} altered, {mismatches} balance \
         mismatches; {present_indeterminate} of {} indeterminate transfers present",
        count(Fate::Indeterminate)
    );

    // Convergence: the same head, nothing missing, the same checkpoint, on every replica.
    let converge_start = Instant::now();
    let converged = loop {
        restart_crashed(&mut cluster, at(), &mut failures);
        let journals: Vec<Journal> = (0..REPLICAS)
            .map(|r| journal(&cluster.inspect(r)))
            .collect();
        if journals.iter().all(|j| *j == journals[0] && j.missing == 0) {
            break Some(journals[0].clone());
        }
        if converge_start.elapsed() > Duration::from_secs(120) {
            failures.push(format!(
                "the replicas did not converge within 120 s of the load stopping: {journals:?}"
            ));
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(checker);
    for r in 0..REPLICAS {
        if cluster.stop(r) != Some(0) {
            failures.push(format!("replica {r} did not exit 0 on SIGTERM"));
        }
    }
    let stopped: Vec<Journal> = (0..REPLICAS)
        .map(|r| journal(&cluster.inspect(r)))
        .collect();
    if let Some(j) = &converged {
        println!(
            "chaos: converged in {:.1} s: head op {}, checkpoint op {} id {}",
            converge_start.elapsed().as_secs_f64(),
            j.head,
            j.checkpoint.0,
            j.checkpoint.1
        );
        if stopped.iter().any(|s| s != j) {
            failures.push(format!(
                "after SIGTERM the data files disagree with the converged state: {stopped:?}"
            ));
        }
    }
    for r in 0..REPLICAS {
        let log = cluster.log(r);
        if log.contains("panicked") {
            failures.push(format!(
                "replica {r} panicked (see {})",
                cluster.dir.display()
            ));
        }
    }
    if !failures.is_empty() || options.keep {
        // Keep the data files and logs: the harness removes them only on success.
        println!(
            "chaos: data files and logs kept in {}",
            cluster.dir.display()
        );
        std::mem::forget(cluster);
    }
    failures
}
