//! Property tests ("fuzzing" on stable Rust) of everything that parses bytes a peer, a disk or a
//! user can hand us: message headers (`Header::invalid` and each command's fields), checkpoint
//! chunk identities, the checkpoint's client section, the ledger's snapshot and request bodies,
//! and the client's JSON and text input. Properties: nothing panics on arbitrary or mutated
//! input, and what an encoder wrote decodes to what it encoded. (The TCP bus's framing is
//! fuzzed in src/io/tcp_bus.rs, where its connections are reachable.)
//!
//! Inputs come from a seeded ChaCha generator: random bytes, and valid encodings with bytes
//! flipped, truncated, extended or spliced. Each test prints its seed on failure; replay one
//! with `VSR_FUZZ_SEED=<seed>`. `VSR_FUZZ_ITERATIONS=<n>` multiplies the iterations (default 1:
//! a few seconds in all, as CI runs them).

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vsr::checkpoint_content::{chunk_count, chunk_count_checked, chunk_len, ChunkIdentity};
use vsr::cli::ledger_text;
use vsr::header::commands::{
    Block, CheckpointChunk, Commit, DoViewChange, Eviction, Headers, Ping, PingClient, Pong,
    PongClient, Prepare, PrepareOk, Reply, Request, RequestCheckpointChunk, RequestHeaders,
    RequestPrepare, RequestStartView, RequestStatus, StartView, StartViewChange, StatusReport,
};
use vsr::header::{Header, HEADER_SIZE, PROTOCOL_VERSION};
use vsr::ledger::{Account, Ledger, LedgerConfig, LedgerOperation, Transfer};
use vsr::replica::client_table::{decode_client_section, encode_client_section, ClientTable};
use vsr::state_machine::StateMachine;
use vsr::MessagePool;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

const MESSAGE_SIZE_MAX: usize = 8192;

fn multiplier() -> u64 {
    std::env::var("VSR_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Runs `property` `iterations * VSR_FUZZ_ITERATIONS` times with a generator each; a panic
/// names the seed to replay.
fn check(name: &str, iterations: u64, mut property: impl FnMut(&mut ChaCha8Rng)) {
    let base = std::env::var("VSR_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    let (first, count) = match base {
        Some(seed) => (seed, 1),
        None => (0xf022_0000u64, iterations * multiplier()),
    };
    for seed in first..first + count {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property(&mut rng)));
        if let Err(panic) = outcome {
            eprintln!("{name}: failed at seed {seed}: replay with VSR_FUZZ_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// Random bytes, fewer than `max` of them.
fn bytes_below(rng: &mut ChaCha8Rng, max: u64) -> Vec<u8> {
    let len = below(rng, max) as usize;
    bytes(rng, len)
}

fn bytes(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// A random value, often a small or boundary one (so equality checks can pass).
fn value(rng: &mut ChaCha8Rng) -> u128 {
    match below(rng, 4) {
        0 => 0,
        1 => below(rng, 8) as u128,
        2 => u128::MAX - below(rng, 2) as u128,
        _ => (rng.next_u64() as u128) << 64 | rng.next_u64() as u128,
    }
}

/// `valid` with a few bytes flipped, cut short, extended or spliced with random bytes.
fn mutate(rng: &mut ChaCha8Rng, valid: &[u8]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for _ in 0..1 + below(rng, 4) {
        match below(rng, 5) {
            0 | 1 if !out.is_empty() => {
                let at = below(rng, out.len() as u64) as usize;
                out[at] ^= 1 << below(rng, 8);
            }
            2 if !out.is_empty() => out.truncate(below(rng, out.len() as u64) as usize),
            3 => {
                let extra = bytes_below(rng, 64);
                out.extend_from_slice(&extra);
            }
            _ if !out.is_empty() => {
                let at = below(rng, out.len() as u64) as usize;
                let len = (below(rng, 32) as usize).min(out.len() - at);
                let noise = bytes(rng, len);
                out[at..at + len].copy_from_slice(&noise);
            }
            _ => {}
        }
    }
    out
}

/// A header that passes the frame checks (protocol, size, reserved) more often than not, so
/// each command's own checks are reached; its command fields random.
fn header_candidate(rng: &mut ChaCha8Rng) -> Header {
    let raw = bytes(rng, HEADER_SIZE);
    let mut h = Header::read_from(&raw);
    if below(rng, 8) != 0 {
        h.protocol = PROTOCOL_VERSION;
        h.reserved = [0; 103];
        h.size = (HEADER_SIZE as u64 + below(rng, 2 * MESSAGE_SIZE_MAX as u64)) as u32;
        // Every command, and one past the last (unknown).
        h.command = below(rng, 24) as u8;
        if below(rng, 2) == 0 {
            h.size = HEADER_SIZE as u32;
        }
        for field in [&mut h.op, &mut h.commit, &mut h.request, &mut h.session] {
            if below(rng, 2) == 0 {
                *field = below(rng, 16);
            }
        }
        if below(rng, 2) == 0 {
            h.replica = below(rng, 8) as u8;
            h.operation = below(rng, 4) as u8 * 64;
        }
    }
    h
}

/// Every command struct read from a valid header writes back the same fields: reading is the
/// inverse of writing on every header `invalid()` accepts.
macro_rules! roundtrip {
    ($h:expr, $($command:ident),*) => {
        match $h.command().unwrap() {
            $(vsr::Command::$command => {
                let fields = $command::from_header(&$h);
                let mut again = $h;
                fields.write(&mut again);
                assert_eq!(again, $h, "{} does not write back what it read", stringify!($command));
                assert_eq!($command::from_header(&again), fields);
            })*
            vsr::Command::Reserved => {}
        }
    };
}

#[test]
fn headers_never_panic_and_valid_ones_round_trip() {
    check("headers", 800_000, |rng| {
        let mut h = header_candidate(rng);
        let _ = h.valid_checksum();
        let _ = h.client_id();
        let _ = format!("{h:?}");
        if h.invalid(MESSAGE_SIZE_MAX).is_none() {
            roundtrip!(
                h,
                Ping,
                Pong,
                PingClient,
                PongClient,
                Request,
                Prepare,
                PrepareOk,
                Reply,
                Commit,
                StartViewChange,
                DoViewChange,
                StartView,
                RequestStartView,
                RequestHeaders,
                RequestPrepare,
                Headers,
                Eviction,
                CheckpointChunk,
                RequestCheckpointChunk,
                Block,
                RequestStatus,
                StatusReport
            );
            // Sealing does not change what is valid, and the checksum then verifies.
            h.set_checksum();
            assert!(h.valid_checksum());
            assert_eq!(h.invalid(MESSAGE_SIZE_MAX), None);
        }
    });
}

#[test]
fn checkpoint_chunk_identities_never_panic_and_round_trip() {
    check("checkpoint chunks", 80_000, |rng| {
        let message_size_max = 4096 * (1 + below(rng, 16)) as u32;
        // A checkpoint is never empty (ledger snapshot and client section).
        let size = 1 + match below(rng, 3) {
            0 => below(rng, 4 * message_size_max as u64),
            1 => (rng.next_u64() >> below(rng, 64)).min(u64::MAX - 1),
            _ => below(rng, 1 << 30),
        };
        // A size from outside may be beyond any chunk count: checked, never a panic.
        let Some(chunks) = chunk_count_checked(size, message_size_max) else {
            assert!(size / (message_size_max as u64 - HEADER_SIZE as u64) >= u32::MAX as u64);
            return;
        };
        assert_eq!(chunks, chunk_count(size, message_size_max));
        assert!(chunks >= 1);
        let mut total = 0u64;
        if chunks < 64 {
            for index in 0..chunks {
                let len = chunk_len(size, message_size_max, index);
                assert!(len <= message_size_max as usize - HEADER_SIZE);
                total += len as u64;
            }
            assert_eq!(total, size, "the chunks cover the checkpoint exactly");
        }
        let identity = ChunkIdentity {
            cluster: value(rng),
            op: 1 + below(rng, u64::MAX - 1),
            size,
            chunks,
            digest: value(rng),
        };
        let index = below(rng, chunks as u64) as u32;
        let len = chunk_len(size, message_size_max, index);
        let body = bytes(rng, len.min(256));
        let h = identity.header(index, &body);
        if len <= 256 {
            assert!(identity.matches(&h, index, message_size_max));
            assert_eq!(h.invalid(message_size_max as usize), None);
        }
        // A damaged or foreign header never panics the check.
        let damaged = Header::read_from(&mutate(rng, h.as_bytes()).resize_to(HEADER_SIZE));
        let _ = identity.matches(&damaged, index, message_size_max);
        let _ = damaged.invalid(message_size_max as usize);
        let random = header_candidate(rng);
        let _ = identity.matches(&random, index, message_size_max);
    });
}

trait ResizeTo {
    fn resize_to(self, len: usize) -> Vec<u8>;
}

impl ResizeTo for Vec<u8> {
    fn resize_to(mut self, len: usize) -> Vec<u8> {
        self.resize(len, 0);
        self
    }
}

/// A client table with random sessions whose replies are sealed, as commits make them.
fn client_table(rng: &mut ChaCha8Rng, pool: &MessagePool, clients_max: usize) -> ClientTable {
    let mut table = ClientTable::new(clients_max);
    for op in 1..=below(rng, clients_max as u64 + 3) {
        let client = 1 + below(rng, 6) as u128;
        let mut reply = pool.get().unwrap();
        let body = bytes_below(rng, 300);
        let fields = Reply {
            client,
            session: op,
            request: below(rng, 5),
            op,
            commit: op,
            operation: 130,
            ..Reply::default()
        };
        *reply.header_mut() = fields.to_header(7);
        reply.buffer_mut()[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(&body);
        reply.seal(body.len());
        if table.get(client).is_some() {
            let request = table.get(client).unwrap().request + 1;
            table.update(client, request, op, reply);
        } else {
            table.register(client, op, reply);
        }
    }
    table
}

#[test]
fn client_sections_never_panic_and_round_trip() {
    let pool = MessagePool::new(64, MESSAGE_SIZE_MAX);
    check("client section", 20_000, |rng| {
        let clients_max = 1 + below(rng, 8) as usize;
        let table = client_table(rng, &pool, clients_max);
        let mut encoded = Vec::new();
        encode_client_section(&table, &mut encoded);
        let section = &encoded[8..];
        assert_eq!(
            u64::from_le_bytes(encoded[..8].try_into().unwrap()) as usize,
            section.len()
        );
        let decoded = decode_client_section(section, &pool, clients_max).expect("round trip");
        assert_eq!(decoded.digest(), table.digest());
        assert_eq!(decoded.len(), table.len());
        drop(decoded);
        // Damaged, or random: an error, never a panic (and never a pool leak).
        let available = pool.available();
        for damaged in [mutate(rng, section), bytes_below(rng, 512)] {
            let _ = decode_client_section(&damaged, &pool, clients_max);
        }
        assert_eq!(pool.available(), available);
    });
}

fn ledger() -> Ledger {
    Ledger::new(LedgerConfig {
        accounts_max: 64,
        transfers_max: 256,
        message_size_max: MESSAGE_SIZE_MAX as u32,
    })
}

fn random_account(rng: &mut ChaCha8Rng) -> Account {
    let mut a = Account::new_zeroed();
    a.id = 1 + below(rng, 16) as u128;
    a.ledger = 1 + below(rng, 2) as u32;
    a.code = 1 + below(rng, 2) as u16;
    a.flags = if below(rng, 4) == 0 {
        below(rng, 64) as u16
    } else {
        0
    };
    a.user_data_64 = below(rng, 3);
    a
}

fn random_transfer(rng: &mut ChaCha8Rng) -> Transfer {
    let mut t = Transfer::new_zeroed();
    t.id = 1 + below(rng, 64) as u128;
    t.debit_account_id = 1 + below(rng, 16) as u128;
    t.credit_account_id = 1 + below(rng, 16) as u128;
    t.amount = below(rng, 100) as u128;
    t.pending_id = if below(rng, 4) == 0 {
        1 + below(rng, 64) as u128
    } else {
        0
    };
    t.timeout = below(rng, 3) as u32;
    t.ledger = 1 + below(rng, 2) as u32;
    t.code = 1 + below(rng, 2) as u16;
    t.flags = if below(rng, 3) == 0 {
        below(rng, 512) as u16
    } else {
        0
    };
    t
}

fn snapshot_of(ledger: &Ledger) -> Vec<u8> {
    let mut out = vec![0u8; ledger.snapshot_size() as usize];
    ledger.snapshot_read(0, &mut out);
    out
}

/// Arbitrary and mutated request bodies for every operation: `input_valid` decides, and what it
/// accepts is applied without panicking. Snapshots restore to the same state; damaged ones are
/// refused or restore, never panic.
#[test]
fn ledger_bodies_and_snapshots_never_panic_and_snapshots_round_trip() {
    let mut output = vec![0u8; MESSAGE_SIZE_MAX];
    let mut timestamp = 1_000_000_000u64;
    check("ledger", 1_200, |rng| {
        let mut ledger = ledger();
        for op in 1..=1 + below(rng, 24) {
            let operation = LedgerOperation::ALL[below(rng, 8) as usize] as u8;
            let mut body = Vec::new();
            let events = below(rng, 6) as usize;
            match below(rng, 4) {
                0 => body = bytes_below(rng, 600),
                _ if operation == LedgerOperation::CreateAccounts as u8 => {
                    for _ in 0..events {
                        body.extend_from_slice(random_account(rng).as_bytes());
                    }
                }
                _ if operation == LedgerOperation::CreateTransfers as u8 => {
                    for _ in 0..events {
                        body.extend_from_slice(random_transfer(rng).as_bytes());
                    }
                }
                _ => {
                    for _ in 0..events {
                        body.extend_from_slice(&(1 + below(rng, 64) as u128).to_le_bytes());
                    }
                    if below(rng, 2) == 0 {
                        body = mutate(rng, &body);
                    }
                }
            }
            if below(rng, 5) == 0 {
                body = mutate(rng, &body);
            }
            if ledger.input_valid(operation, &body) {
                let count = ledger.prepare_timestamps(operation, &body);
                timestamp += count.max(1) + below(rng, 3_000_000_000);
                let n = ledger.commit(9, op, timestamp, operation, &body, &mut output);
                assert!(n <= output.len());
                let kind = LedgerOperation::ALL
                    .into_iter()
                    .find(|o| *o as u8 == operation)
                    .unwrap();
                if let Ok(reply) = ledger_text::decode(kind, &output[..n]) {
                    // Both styles: any decoded reply renders, and as JSON that parses.
                    for wide_as_strings in [true, false] {
                        let style = ledger_text::JsonStyle {
                            wide_as_strings,
                            flags_as_names: wide_as_strings,
                        };
                        let json = ledger_text::reply_json(&reply, style);
                        serde_json::from_str::<serde_json::Value>(&json).unwrap();
                    }
                }
            }
        }
        let snapshot = snapshot_of(&ledger);
        let mut restored = self::ledger();
        restored.restore_begin(snapshot.len() as u64);
        let mut at = 0;
        while at < snapshot.len() {
            let n = (1 + below(rng, 1000) as usize).min(snapshot.len() - at);
            restored.restore_write(&snapshot[at..at + n]);
            at += n;
        }
        restored.restore_finish().expect("a snapshot restores");
        assert_eq!(restored.digest(), ledger.digest());
        assert_eq!(
            snapshot_of(&restored),
            snapshot,
            "the restored state snapshots the same"
        );
        for damaged in [mutate(rng, &snapshot), bytes_below(rng, 2048)] {
            let mut target = self::ledger();
            target.restore_begin(damaged.len() as u64);
            target.restore_write(&damaged);
            let _ = target.restore_finish();
        }
    });
}

fn json_account(a: &Account) -> String {
    format!(
        r#"{{"id":{},"user_data_128":{},"user_data_64":{},"user_data_32":{},"ledger":{},"code":{},"flags":{}}}"#,
        a.id, a.user_data_128, a.user_data_64, a.user_data_32, a.ledger, a.code, a.flags
    )
}

fn json_transfer(t: &Transfer) -> String {
    format!(
        r#"{{"id":{},"debit_account_id":{},"credit_account_id":{},"amount":{},"pending_id":{},"user_data_128":{},"user_data_64":{},"user_data_32":{},"timeout":{},"ledger":{},"code":{},"flags":{}}}"#,
        t.id,
        t.debit_account_id,
        t.credit_account_id,
        t.amount,
        t.pending_id,
        t.user_data_128,
        t.user_data_64,
        t.user_data_32,
        t.timeout,
        t.ledger,
        t.code,
        t.flags
    )
}

/// The JSON a `vsr client` reads and the statements the REPL reads: arbitrary and mutated lines
/// are answered with an error, never a panic; events written as JSON encode to the same bytes.
#[test]
fn client_input_never_panics_and_json_round_trips() {
    check("client input", 80_000, |rng| {
        let mut accounts = Vec::new();
        let mut transfers = Vec::new();
        let create_accounts = below(rng, 2) == 0;
        let mut expected = Vec::new();
        for _ in 0..1 + below(rng, 4) {
            if create_accounts {
                let mut a = random_account(rng);
                a.id = value(rng);
                a.user_data_128 = value(rng);
                a.user_data_64 = rng.next_u64();
                a.user_data_32 = rng.next_u32();
                expected.extend_from_slice(a.as_bytes());
                accounts.push(json_account(&a));
            } else {
                let mut t = random_transfer(rng);
                t.id = value(rng);
                t.amount = value(rng);
                t.user_data_128 = value(rng);
                t.timeout = rng.next_u32();
                expected.extend_from_slice(t.as_bytes());
                transfers.push(json_transfer(&t));
            }
        }
        let (operation, events) = if create_accounts {
            ("create_accounts", accounts.join(","))
        } else {
            ("create_transfers", transfers.join(","))
        };
        let line = format!(r#"{{"operation":"{operation}","events":[{events}]}}"#);
        let (op, parsed) = ledger_text::parse_json_request(&line).expect("a valid line parses");
        let body = ledger_text::encode(op, &parsed, MESSAGE_SIZE_MAX - HEADER_SIZE)
            .expect("valid events encode");
        assert_eq!(
            body, expected,
            "JSON events encode to the structs they name"
        );
        for input in [
            String::from_utf8_lossy(&mutate(rng, line.as_bytes())).into_owned(),
            String::from_utf8_lossy(&bytes_below(rng, 200)).into_owned(),
        ] {
            if let Ok((op, events)) = ledger_text::parse_json_request(&input) {
                let _ = ledger_text::encode(op, &events, MESSAGE_SIZE_MAX - HEADER_SIZE);
            }
            if let Ok((op, events)) = ledger_text::parse_statement(&input) {
                let _ = ledger_text::encode(op, &events, MESSAGE_SIZE_MAX - HEADER_SIZE);
            }
        }
        let statement = format!("lookup_accounts {}, {};", value(rng), below(rng, 100));
        let mutated = String::from_utf8_lossy(&mutate(rng, statement.as_bytes())).into_owned();
        if let Ok((op, events)) = ledger_text::parse_statement(&mutated) {
            let _ = ledger_text::encode(op, &events, MESSAGE_SIZE_MAX - HEADER_SIZE);
        }
        // Replies from a replica are decoded too: arbitrary bodies give an error or a reply.
        let reply = bytes_below(rng, 600);
        for operation in LedgerOperation::ALL {
            if let Ok(decoded) = ledger_text::decode(operation, &reply) {
                let _ = ledger_text::reply_json(&decoded, ledger_text::JsonStyle::default());
            }
        }
    });
}

#[test]
fn events_decode_from_any_bytes() {
    check("events", 200_000, |rng| {
        let raw = bytes(rng, 128);
        let account = Account::read_from_bytes(&raw).unwrap();
        let transfer = Transfer::read_from_bytes(&raw).unwrap();
        assert_eq!(account.as_bytes(), &raw[..]);
        assert_eq!(transfer.as_bytes(), &raw[..]);
    });
}
