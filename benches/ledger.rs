//! The ledger's apply cost: `create_transfers` batches of 8190 transfers (a full 1 MiB request)
//! against 10,000 accounts, committed through `StateMachine::commit` as the replica does.
//! Reported as time per batch and throughput in transfers per second; ns/transfer is
//! batch time / 8190. Time is the thread's CPU time (page faults included), so that other work on a
//! shared machine does not inflate it.
//!
//! The snapshot: `snapshot_read` of the whole state in 1 MiB pieces (as the replica's checkpoint
//! reads it) and `restore_*` of it into another ledger, at 1M transfers
//! (`LEDGER_SNAPSHOT_TRANSFERS` sets the number), reported in bytes per second.
//!
//! Run: `cargo bench --bench ledger`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vsr::ledger::{account_flags, transfer_flags, Account, Ledger, LedgerConfig, Transfer};
use vsr::state_machine::StateMachine;
use zerocopy::IntoBytes;

const ACCOUNTS: u128 = 10_000;
const BATCH: usize = 8190;
const MESSAGE_SIZE_MAX: u32 = 1 << 20;
const TRANSFERS_MAX: u32 = 1 << 22;

/// This thread's CPU time (user and system, so page faults count): unlike wall time, it does not
/// grow when other processes share the machine's cores.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Bench {
    ledger: Ledger,
    timestamp: u64,
    next_id: u128,
    body: Vec<u8>,
    output: Vec<u8>,
    /// xorshift state for picking accounts (outside the timed region).
    x: u64,
}

fn config(transfers_max: u32) -> LedgerConfig {
    LedgerConfig {
        accounts_max: ACCOUNTS as u32,
        transfers_max,
        message_size_max: MESSAGE_SIZE_MAX,
    }
}

impl Bench {
    fn new(history: bool) -> Bench {
        Bench::with_capacity(history, TRANSFERS_MAX)
    }

    fn with_capacity(history: bool, transfers_max: u32) -> Bench {
        let mut ledger = Ledger::new(config(transfers_max));
        let mut output = vec![0u8; MESSAGE_SIZE_MAX as usize - 256];
        let mut timestamp = 1_000_000_000;
        let accounts: Vec<Account> = (1..=ACCOUNTS)
            .map(|id| Account {
                id,
                ledger: 1,
                code: 1,
                flags: if history { account_flags::HISTORY } else { 0 },
                ..Account::default()
            })
            .collect();
        for chunk in accounts.chunks(BATCH) {
            let body = chunk.as_bytes();
            timestamp += chunk.len() as u64;
            let size = ledger.commit(0, 1, timestamp, 129, body, &mut output);
            assert_eq!(size, 0, "accounts created");
        }
        Bench {
            ledger,
            timestamp,
            next_id: 1,
            body: vec![0u8; BATCH * 128],
            output,
            x: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn account(&mut self) -> u128 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        1 + u128::from(self.x) % ACCOUNTS
    }

    /// Fills the body with a batch of new transfers; `pending` makes every other one a pending
    /// transfer followed by its post.
    fn fill(&mut self, two_phase: bool) {
        for i in 0..BATCH {
            let id = self.next_id;
            self.next_id += 1;
            let debit = self.account();
            let mut credit = self.account();
            if credit == debit {
                credit = debit % ACCOUNTS + 1;
            }
            let t = if two_phase && i % 2 == 1 {
                Transfer {
                    id,
                    pending_id: id - 1,
                    amount: u128::MAX,
                    flags: transfer_flags::POST_PENDING_TRANSFER,
                    ..Transfer::default()
                }
            } else {
                Transfer {
                    id,
                    debit_account_id: debit,
                    credit_account_id: credit,
                    amount: 1 + (id % 100),
                    ledger: 1,
                    code: 1,
                    flags: if two_phase {
                        transfer_flags::PENDING
                    } else {
                        0
                    },
                    ..Transfer::default()
                }
            };
            self.body[i * 128..(i + 1) * 128].copy_from_slice(t.as_bytes());
        }
    }

    /// Commits one batch; returns the CPU time the commit took.
    fn commit(&mut self) -> Duration {
        self.timestamp += BATCH as u64 + 1;
        let start = thread_cpu_time();
        let size = self
            .ledger
            .commit(0, 1, self.timestamp, 130, &self.body, &mut self.output);
        let elapsed = thread_cpu_time() - start;
        assert_eq!(size, 0, "every transfer created");
        elapsed
    }
}

fn run(c: &mut Criterion, name: &str, history: bool, two_phase: bool) {
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    let mut bench = Bench::new(history);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if bench.ledger.transfers_count() + BATCH > TRANSFERS_MAX as usize {
                    bench = Bench::new(history);
                }
                bench.fill(two_phase);
                total += bench.commit();
            }
            total
        })
    });
    group.finish();
}

fn ledger(c: &mut Criterion) {
    run(c, "create_transfers_8190", false, false);
    run(c, "create_transfers_8190_history", true, false);
    run(c, "create_transfers_8190_pending_then_post", false, true);
}

/// A piece of the snapshot as the replica moves it.
const PIECE: usize = 1 << 20;

fn snapshot(c: &mut Criterion) {
    let transfers: usize = std::env::var("LEDGER_SNAPSHOT_TRANSFERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let transfers_max = (transfers + BATCH).max(TRANSFERS_MAX as usize) as u32;
    // Plain transfers, and every fourth batch pending transfers each followed by its post.
    let mut bench = Bench::with_capacity(false, transfers_max);
    let mut batch = 0;
    while bench.ledger.transfers_count() < transfers {
        bench.fill(batch % 4 == 3);
        bench.commit();
        batch += 1;
    }
    let ledger = &bench.ledger;
    let size = ledger.snapshot_size();
    eprintln!(
        "ledger snapshot: {} accounts, {} transfers: {size} bytes ({:.1} MB)",
        ledger.accounts_count(),
        ledger.transfers_count(),
        size as f64 / 1e6
    );
    let mut group = c.benchmark_group("ledger_snapshot");
    group.throughput(Throughput::Bytes(size));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    let mut piece = vec![0u8; PIECE];
    group.bench_function("snapshot_read_1m_transfers", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                let mut offset = 0;
                while offset < size {
                    let n = (size - offset).min(PIECE as u64) as usize;
                    ledger.snapshot_read(offset, &mut piece[..n]);
                    std::hint::black_box(&piece);
                    offset += n as u64;
                }
            }
            thread_cpu_time() - start
        })
    });

    let mut bytes = vec![0u8; size as usize];
    ledger.snapshot_read(0, &mut bytes);
    let mut target = Ledger::new(config(transfers_max));
    // Once into the fresh ledger, whose pages are not yet backed (criterion's runs reuse them).
    let start = thread_cpu_time();
    target.restore_begin(size);
    for piece in bytes.chunks(PIECE) {
        target.restore_write(piece);
    }
    target.restore_finish().expect("restore");
    eprintln!(
        "ledger snapshot: first restore, into untouched memory: {:?}",
        thread_cpu_time() - start
    );
    group.bench_function("restore_1m_transfers", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                target.restore_begin(size);
                for piece in bytes.chunks(PIECE) {
                    target.restore_write(piece);
                }
                target.restore_finish().expect("restore");
            }
            let elapsed = thread_cpu_time() - start;
            assert_eq!(target.digest(), ledger.digest());
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, ledger, snapshot);
criterion_main!(benches);
