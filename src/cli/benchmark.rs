//! `vsr benchmark`: load a cluster with transfers and report throughput and latency the way a
//! user sees them (whole requests through the real binary and network). Without `--addresses` it
//! formats and starts temporary replicas as child processes on 127.0.0.1, and removes them after.

use super::ledger_text;
use super::Failure;
use crate::client::net::NetClient;
use crate::ledger::{Account, LedgerOperation, Transfer};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromZeros, IntoBytes};

pub struct BenchmarkOptions {
    pub addresses: Option<Vec<SocketAddr>>,
    /// None: 0 for `--addresses`, a random id for a temporary cluster.
    pub cluster: Option<u128>,
    pub replica_count: u8,
    pub account_count: u64,
    pub transfer_count: u64,
    pub transfer_batch_size: usize,
    pub seed: u64,
    /// Client sessions sending batches in parallel.
    pub clients: usize,
    pub validate: bool,
    pub query_count: u64,
    /// Accounts keep balance history (`account_flags::HISTORY`).
    pub account_history: bool,
    /// Where the temporary replicas' logs are kept (none: deleted with the replicas).
    pub log_dir: Option<PathBuf>,
}

/// A client thread's batch latencies and the balances its transfers should produce.
type WorkerResult = Result<(Vec<Duration>, Vec<(u128, u128)>), String>;

struct Temporary {
    dir: PathBuf,
    children: Vec<Child>,
    pids: Vec<u32>,
    logs: Vec<PathBuf>,
}

impl Temporary {
    /// The replicas that have exited on their own, each with the end of its log: a benchmark
    /// during which a replica died measured a smaller cluster (or a crash), not this one.
    fn exited(&mut self) -> Option<String> {
        let mut report = String::new();
        for (replica, child) in self.children.iter_mut().enumerate() {
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let log = std::fs::read_to_string(&self.logs[replica]).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            report.push_str(&format!(
                "replica {replica} exited during the benchmark ({status}); its log ({}) ends:\n{tail}\n",
                self.logs[replica].display()
            ));
        }
        (!report.is_empty()).then_some(report)
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        // SIGTERM first, so each replica logs its closing counters (view changes, resends);
        // SIGKILL whatever has not exited within two seconds.
        for child in &mut self.children {
            // Only a child not yet reaped: its pid cannot have been reused.
            if matches!(child.try_wait(), Ok(None)) {
                // Safety: kill(2) with a pid that is still our child's.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A temporary replica must not outlive the benchmark: an orphan goes on dialing its peers'
/// ports, and a later cluster listening there would take its connection for a peer's.
trait DieWithParent {
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // Safety: prctl and sigprocmask are async-signal-safe and touch nothing of the parent's.
        unsafe {
            self.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The benchmark blocks SIGINT and SIGTERM (see `exit_on_signal`); the mask is
                // inherited across exec, and a replica must stop on SIGTERM.
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            })
        }
    }
}

/// A cluster id no other cluster on this host has: the bus accepts any peer that names the
/// cluster id, so two clusters with the same id (a leftover one, a test's, a development
/// replica's 0) whose ports meet would take each other's connections for their peers'.
fn random_cluster_id() -> u128 {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    u128::from_le_bytes(bytes) | 1 << 127
}

/// On SIGINT or SIGTERM, removes the temporary data files and exits (the replicas die with the
/// process, see `DieWithParent`). The signals are blocked in every thread and taken by one that
/// waits for them, so it can do what a signal handler may not. Call before any other thread or
/// child starts: both inherit the mask.
fn exit_on_signal(dir: PathBuf) {
    // Safety: signal-set calls on a local set; the waiting thread owns a copy.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        std::thread::spawn(move || {
            let mut signal = 0;
            libc::sigwait(&set, &mut signal);
            let _ = std::fs::remove_dir_all(&dir);
            // Not eprintln: stderr may be a pipe whose reader is gone (the signal often comes
            // with its death), and a panic here would leave the process running.
            let _ = writeln!(
                std::io::stderr(),
                "benchmark: interrupted (signal {signal}); temporary replicas stopped and removed"
            );
            std::process::exit(128 + signal);
        });
    }
}

/// Removes the temporary directories of benchmarks that were killed (SIGKILL leaves no chance to
/// clean up; their replicas died with them): each holds a data file per replica.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("vsr-benchmark-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            eprintln!(
                "benchmark: removed {}, left by a benchmark that was killed",
                entry.path().display()
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(3000)
}

fn start_temporary(
    options: &BenchmarkOptions,
    accounts_max: u32,
    transfers_max: u32,
) -> Result<(Temporary, Vec<SocketAddr>), Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::runtime(format!("current_exe: {e}")))?;
    let dir = std::env::temp_dir().join(format!("vsr-benchmark-{}", std::process::id()));
    exit_on_signal(dir.clone());
    remove_leftovers();
    let _ = std::fs::remove_dir_all(&dir);
    for d in std::iter::once(&dir).chain(&options.log_dir) {
        std::fs::create_dir_all(d)
            .map_err(|e| Failure::runtime(format!("{}: {e}", d.display())))?;
    }
    let mut temporary = Temporary {
        dir: dir.clone(),
        children: Vec::new(),
        pids: Vec::new(),
        logs: Vec::new(),
    };
    let n = options.replica_count;
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let addresses: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let addresses_arg = addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for replica in 0..n {
        let path = dir.join(format!("{replica}.vsr"));
        let status = Command::new(&exe)
            .args([
                "format",
                &format!("--cluster={}", options.cluster.unwrap_or(0)),
                &format!("--replica={replica}"),
            ])
            .arg(format!("--replica-count={n}"))
            .arg(&path)
            .stderr(Stdio::null())
            .die_with_parent()
            .status()
            .map_err(|e| Failure::runtime(format!("format: {e}")))?;
        if !status.success() {
            return Err(Failure::runtime("format of a temporary replica failed"));
        }
        let log_path = match &options.log_dir {
            Some(logs) => logs.join(format!("replica-{replica}.log")),
            None => dir.join(format!("{replica}.log")),
        };
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Failure::runtime(format!("{}: {e}", log_path.display())))?;
        let child = Command::new(&exe)
            .args(["start", &format!("--addresses={addresses_arg}")])
            .arg(format!("--accounts-max={accounts_max}"))
            .arg(format!("--transfers-max={transfers_max}"))
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .die_with_parent()
            .spawn()
            .map_err(|e| Failure::runtime(format!("start: {e}")))?;
        temporary.pids.push(child.id());
        temporary.children.push(child);
        temporary.logs.push(log_path);
    }
    Ok((temporary, addresses))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn run(mut options: BenchmarkOptions) -> Result<(), Failure> {
    if options.addresses.is_none() && options.cluster.is_none() {
        options.cluster = Some(random_cluster_id());
    }
    let batch = options.transfer_batch_size;
    if batch == 0 {
        return Err(Failure::usage("--transfer-batch-size must be at least 1"));
    }
    if options.account_count < 2 {
        return Err(Failure::usage("--account-count must be at least 2"));
    }
    // The temporary cluster is sized to the load exactly: the ledger's resident memory is its
    // capacity (touched at start), so a power-of-two round-up would cost up to twice as much.
    let accounts_max = options.account_count.clamp(1 << 10, 1 << 30) as u32;
    let transfers_max = options.transfer_count.clamp(1 << 10, 1 << 30) as u32;
    let (mut temporary, addresses) = match &options.addresses {
        Some(addresses) => (None, addresses.clone()),
        None => {
            let (t, a) = start_temporary(&options, accounts_max, transfers_max)?;
            (Some(t), a)
        }
    };
    let result = drive(&options, &addresses, temporary.as_ref());
    // Whatever the load's outcome, a replica that died first is the news.
    if let Some(exited) = temporary.as_mut().and_then(Temporary::exited) {
        let load = match &result {
            Ok(()) => "the figures above are not this cluster's".to_string(),
            Err(failure) => failure.message.clone(),
        };
        return Err(Failure::runtime(format!("{exited}({load})")));
    }
    result
}

/// Creates the accounts, runs the load and the queries, and prints the figures.
fn drive(
    options: &BenchmarkOptions,
    addresses: &[SocketAddr],
    temporary: Option<&Temporary>,
) -> Result<(), Failure> {
    let batch = options.transfer_batch_size;
    let message_size_max = crate::config::Config::production(1).message_size_max as usize;
    let cluster = options.cluster.unwrap_or(0);
    let mut client = NetClient::new(cluster, addresses, message_size_max);
    let timeout = Duration::from_secs(60);
    client
        .register(timeout)
        .map_err(|e| Failure::runtime(format!("register: {e}")))?;
    // The cluster's message size is known once registered.
    let events_max = client.body_size_max() / 128;
    if batch > events_max {
        return Err(Failure::usage(format!(
            "--transfer-batch-size {batch} exceeds the {events_max} events that fit this \
             cluster's message"
        )));
    }
    create_accounts(&mut client, options, events_max, timeout)?;

    let clients = options.clients.max(1);
    let load = TransferLoad {
        cluster,
        addresses: addresses.to_vec(),
        message_size_max,
        timeout,
        seed: options.seed,
        account_count: options.account_count,
        transfer_count: options.transfer_count,
        batch,
        batches: options.transfer_count.div_ceil(batch as u64),
        clients,
        progress: Arc::new(AtomicU64::new(0)),
    };
    let mut sent = send_transfers(&load)?;
    let mut query_latencies = query_accounts(&mut client, options, timeout)?;
    sent.latencies.sort();
    query_latencies.sort();
    print_latencies(
        options,
        clients,
        sent.elapsed,
        &sent.latencies,
        &query_latencies,
    );

    if options.validate {
        validate_balances(&mut client, options, events_max, &sent.balances, timeout)?;
    }
    if let Some(t) = temporary {
        print_replica_figures(t);
    }
    Ok(())
}

fn create_accounts(
    client: &mut NetClient,
    options: &BenchmarkOptions,
    events_max: usize,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut created = 0u64;
    while created < options.account_count {
        let n = (options.account_count - created).min(events_max as u64);
        let mut body = Vec::with_capacity(n as usize * 128);
        for i in 0..n {
            let mut account = Account::new_zeroed();
            account.id = (created + i + 1) as u128;
            account.ledger = 2;
            account.code = 1;
            if options.account_history {
                account.flags = crate::ledger::account_flags::HISTORY;
            }
            body.extend_from_slice(account.as_bytes());
        }
        let reply = client
            .request(LedgerOperation::CreateAccounts as u8, &body, timeout)
            .map_err(|e| Failure::runtime(format!("create_accounts: {e}")))?;
        if !reply.body().is_empty() {
            return Err(Failure::runtime(
                "create_accounts failed for some accounts (is the cluster empty?)",
            ));
        }
        created += n;
    }
    Ok(())
}

/// The transfer load, as each client thread gets it (its own copy).
#[derive(Clone)]
struct TransferLoad {
    cluster: u128,
    addresses: Vec<SocketAddr>,
    message_size_max: usize,
    timeout: Duration,
    seed: u64,
    account_count: u64,
    transfer_count: u64,
    /// Transfers per batch (the last batch may hold fewer).
    batch: usize,
    batches: u64,
    clients: usize,
    /// Transfers acknowledged so far, by all clients.
    progress: Arc<AtomicU64>,
}

/// What the transfer load measured, and the balances it should have produced.
struct Sent {
    elapsed: Duration,
    /// Every batch's latency.
    latencies: Vec<Duration>,
    /// The debits and credits the transfers should have posted, by account id.
    balances: Vec<(u128, u128)>,
}

/// Sends the transfers from `load.clients` sessions in parallel, printing progress each second.
fn send_transfers(load: &TransferLoad) -> Result<Sent, Failure> {
    let started = Instant::now();
    let workers: Vec<_> = (0..load.clients)
        .map(|c| {
            let load = load.clone();
            std::thread::spawn(move || transfer_worker(&load, c))
        })
        .collect();
    let mut last_progress = Instant::now();
    while workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if last_progress.elapsed() > Duration::from_secs(1) {
            last_progress = Instant::now();
            let sent = load.progress.load(Ordering::Relaxed);
            // Progress is best effort: a closed stderr must not stop the run.
            let _ = writeln!(
                std::io::stderr(),
                "benchmark: {sent}/{} transfers, {:.0} tx/s",
                load.transfer_count,
                sent as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(load.batches as usize);
    let mut balances = vec![(0u128, 0u128); load.account_count as usize + 1];
    for worker in workers {
        let (l, b) = worker
            .join()
            .map_err(|_| Failure::runtime("a client thread panicked"))?
            .map_err(Failure::runtime)?;
        latencies.extend(l);
        for (total, part) in balances.iter_mut().zip(b) {
            total.0 += part.0;
            total.1 += part.1;
        }
    }
    Ok(Sent {
        elapsed,
        latencies,
        balances,
    })
}

/// Client thread `c`: sends batches c, c + clients, c + 2 * clients, ... in its own session.
fn transfer_worker(load: &TransferLoad, c: usize) -> WorkerResult {
    let mut client = NetClient::new(load.cluster, &load.addresses, load.message_size_max);
    let mut latencies = Vec::new();
    let mut balances = vec![(0u128, 0u128); load.account_count as usize + 1];
    let mut body = Vec::with_capacity(load.batch * 128);
    let mut k = c as u64;
    while k < load.batches {
        let first = k * load.batch as u64;
        let n = (load.transfer_count - first).min(load.batch as u64);
        transfer_batch(load, k, first, n, &mut body, &mut balances);
        let t0 = Instant::now();
        let reply = client
            .request(LedgerOperation::CreateTransfers as u8, &body, load.timeout)
            .map_err(|e| format!("create_transfers: {e}"))?;
        latencies.push(t0.elapsed());
        if !reply.body().is_empty() {
            let decoded = ledger_text::decode(LedgerOperation::CreateTransfers, reply.body())?;
            return Err(format!(
                "{} transfers failed, first: {:?}",
                decoded.records.len(),
                decoded.records[0]
            ));
        }
        load.progress.fetch_add(n, Ordering::Relaxed);
        k += load.clients as u64;
    }
    Ok((latencies, balances))
}

/// Fills `body` with batch `k` (`n` transfers between uniform random accounts, ids from
/// `first + 1`) and adds them to `balances`. Its contents depend only on (seed, k), so runs are
/// reproducible whatever the interleaving of the clients.
fn transfer_batch(
    load: &TransferLoad,
    k: u64,
    first: u64,
    n: u64,
    body: &mut Vec<u8>,
    balances: &mut [(u128, u128)],
) {
    let accounts = load.account_count;
    let mut rng = ChaCha8Rng::seed_from_u64(load.seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    body.clear();
    for i in 0..n {
        let debit = rng.next_u64() % accounts + 1;
        let mut credit = rng.next_u64() % accounts + 1;
        if credit == debit {
            credit = debit % accounts + 1;
        }
        let mut transfer = Transfer::new_zeroed();
        transfer.id = (first + i + 1) as u128;
        transfer.debit_account_id = debit as u128;
        transfer.credit_account_id = credit as u128;
        transfer.amount = rng.next_u64() as u128 % 100 + 1;
        transfer.ledger = 2;
        transfer.code = 1;
        balances[debit as usize].0 += transfer.amount;
        balances[credit as usize].1 += transfer.amount;
        body.extend_from_slice(transfer.as_bytes());
    }
}

/// Single lookups of random accounts; returns their latencies.
fn query_accounts(
    client: &mut NetClient,
    options: &BenchmarkOptions,
    timeout: Duration,
) -> Result<Vec<Duration>, Failure> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut query_latencies = Vec::with_capacity(options.query_count as usize);
    for _ in 0..options.query_count {
        let id = (rng.next_u64() % options.account_count + 1) as u128;
        let t0 = Instant::now();
        client
            .request(
                LedgerOperation::LookupAccounts as u8,
                &id.to_le_bytes(),
                timeout,
            )
            .map_err(|e| Failure::runtime(format!("lookup_accounts: {e}")))?;
        query_latencies.push(t0.elapsed());
    }
    Ok(query_latencies)
}

/// Prints the load and its latencies (sorted).
fn print_latencies(
    options: &BenchmarkOptions,
    clients: usize,
    elapsed: Duration,
    latencies: &[Duration],
    query_latencies: &[Duration],
) {
    println!(
        "load offered = {} tx in batches of {} from {clients} client(s)",
        options.transfer_count, options.transfer_batch_size
    );
    println!(
        "load accepted = {:.0} tx/s",
        options.transfer_count as f64 / elapsed.as_secs_f64()
    );
    println!(
        "batch latency p1 = {:.1} ms, p50 = {:.1} ms, p99 = {:.1} ms, p100 = {:.1} ms",
        percentile(latencies, 0.01),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        percentile(latencies, 1.0)
    );
    println!(
        "query latency p1 = {:.2} ms, p50 = {:.2} ms, p99 = {:.2} ms, p100 = {:.2} ms",
        percentile(query_latencies, 0.01),
        percentile(query_latencies, 0.5),
        percentile(query_latencies, 0.99),
        percentile(query_latencies, 1.0)
    );
}

/// Looks up every account and checks its posted balances against the transfers sent.
fn validate_balances(
    client: &mut NetClient,
    options: &BenchmarkOptions,
    events_max: usize,
    balances: &[(u128, u128)],
    timeout: Duration,
) -> Result<(), Failure> {
    let mut checked = 0u64;
    let mut id = 1u64;
    while id <= options.account_count {
        let n = (options.account_count - id + 1)
            .min(events_max as u64 / 8 * 8)
            .min(8190);
        let mut ids = Vec::with_capacity(n as usize * 16);
        for i in 0..n {
            ids.extend_from_slice(&((id + i) as u128).to_le_bytes());
        }
        let reply = client
            .request(LedgerOperation::LookupAccounts as u8, &ids, timeout)
            .map_err(|e| Failure::runtime(format!("lookup_accounts: {e}")))?;
        for chunk in reply.body().chunks(128) {
            let account = <Account as zerocopy::FromBytes>::read_from_bytes(chunk).unwrap();
            let (debits, credits) = balances[account.id as usize];
            if account.debits_posted != debits || account.credits_posted != credits {
                return Err(Failure::runtime(format!(
                    "validate: account {} has debits {} credits {}, expected {debits} {credits}",
                    account.id, account.debits_posted, account.credits_posted
                )));
            }
            checked += 1;
        }
        id += n;
    }
    if checked != options.account_count {
        return Err(Failure::runtime(format!(
            "validate: {checked} of {} accounts found",
            options.account_count
        )));
    }
    println!("validate: ok ({checked} accounts match the transfers sent)");
    Ok(())
}

/// The temporary replicas' peak memory and data file size.
fn print_replica_figures(t: &Temporary) {
    let rss: Vec<String> = t
        .pids
        .iter()
        .map(|&pid| {
            peak_rss_kib(pid)
                .map(|k| format!("{} MiB", k / 1024))
                .unwrap_or("?".into())
        })
        .collect();
    println!("replica peak RSS = {}", rss.join(", "));
    let size: u64 = std::fs::read_dir(&t.dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "vsr"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "data file size = {} MiB per replica",
        size / (1024 * 1024) / t.pids.len().max(1) as u64
    );
}
