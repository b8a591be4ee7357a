//! Micro-benchmarks of the protocol's hot paths: checksums over a 1 MiB body, header validation,
//! verifying a received 1 MiB prepare (what the bus and replica do per message), and journal
//! append bookkeeping. `cargo bench --bench protocol`; criterion prints time per iteration and
//! throughput, comparable between commits on the same machine.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;
use std::hint::black_box;
use vsr::config::Config;
use vsr::header::commands::Prepare;
use vsr::header::{Header, HEADER_SIZE};
use vsr::journal::Journal;
use vsr::message::MessagePool;
use vsr::storage::{IoCompletion, IoRequest, Layout, Storage};

fn checksum(c: &mut Criterion) {
    let mut group = c.benchmark_group("checksum");
    for size in [256usize, 64 * 1024, 1024 * 1024] {
        let data = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter(|| vsr::checksum::checksum(black_box(data)))
        });
    }
    group.finish();
}

fn prepare_header() -> Header {
    let mut h = prepare_at(100, 0).to_header(7);
    h.set_checksum();
    h
}

fn prepare_at(op: u64, parent: u128) -> Prepare {
    Prepare {
        view: 3,
        replica: 1,
        op,
        commit_max: op - 1,
        parent,
        client: 5,
        session: 1,
        request: 9,
        operation: 130,
        ..Prepare::default()
    }
}

fn header_validation(c: &mut Criterion) {
    let h = prepare_header();
    c.bench_function("header/valid_checksum+invalid", |b| {
        b.iter(|| {
            let h = black_box(&h);
            h.valid_checksum() && h.invalid(1024 * 1024).is_none()
        })
    });
}

fn verify_prepare(c: &mut Criterion) {
    let pool = MessagePool::new(1, 1024 * 1024);
    let mut m = pool.get().unwrap();
    *m.header_mut() = prepare_header();
    let body = 1024 * 1024 - HEADER_SIZE;
    m.buffer_mut()[HEADER_SIZE..].fill(3);
    m.seal(body);
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Bytes(1024 * 1024));
    group.bench_function("verify_1MiB_prepare", |b| {
        b.iter(|| {
            let h = black_box(&m).header();
            h.valid_checksum()
                && h.invalid(1024 * 1024).is_none()
                && h.valid_checksum_body(m.body())
        })
    });
    group.finish();
}

/// Completes every request at once, so the journal's own bookkeeping is what is measured.
struct InstantStorage {
    layout: Layout,
    done: VecDeque<IoCompletion>,
}

impl Storage for InstantStorage {
    fn layout(&self) -> &Layout {
        &self.layout
    }
    fn submit(&mut self, r: IoRequest) {
        self.done.push_back(IoCompletion {
            kind: r.kind,
            zone: r.zone,
            offset: r.offset,
            len: r.len,
            buffer: r.buffer,
            token: r.token,
        });
    }
    fn next_completion(&mut self) -> Option<IoCompletion> {
        self.done.pop_front()
    }
}

fn journal_append(c: &mut Criterion) {
    let mut config = Config::production(3);
    config.message_size_max = 64 * 1024;
    let layout = Layout::new(&config);
    let pool = MessagePool::new(64, config.message_size_max as usize);
    let mut storage = InstantStorage {
        layout,
        done: VecDeque::new(),
    };
    let mut journal = Journal::new(&config, 7);
    let mut op = 0u64;
    let mut parent = Header::root_prepare(7).checksum;
    c.bench_function("journal/append_prepare+header_ring", |b| {
        b.iter(|| {
            op += 1;
            let mut m = pool.get().unwrap();
            *m.header_mut() = prepare_at(op, parent).to_header(7);
            m.seal(4096 - HEADER_SIZE);
            parent = m.header().checksum;
            journal.set_header(m.header());
            journal.write_prepare(&mut storage, &m);
            while let Some(completion) = storage.next_completion() {
                journal.on_completion(&mut storage, &pool, completion);
            }
            let durable = journal.events().count();
            black_box(durable)
        })
    });
}

criterion_group!(
    benches,
    checksum,
    header_validation,
    verify_prepare,
    journal_append
);
criterion_main!(benches);
