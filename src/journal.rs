//! The journal (write-ahead log): a ring of prepare slots plus a redundant ring of their headers.
//!
//! Write order per slot: the prepare first, then the header-ring sector holding its header. A
//! slot is clean (and the replica may acknowledge it) only once both are durable. That order is
//! what makes every slot classifiable after a crash (see `classify` and docs/protocol.md):
//! a header-ring entry never names a prepare that was not durably written.
//!
//! At most one prepare write per slot is in flight; a newer write for a busy slot waits in
//! `pending_write`. Header-ring sectors are written from an in-memory image, one write per sector
//! at a time, so a slow write can never land over a newer one.

use crate::config::{Config, SECTOR_SIZE};
use crate::header::{Command, Header, HEADER_SIZE};
use crate::io_token::{Purpose, Token};
use crate::message::{Message, MessagePool};
use crate::storage::{IoCompletion, IoKind, IoRequest, Storage, Zone};
use crate::superblock::VsrState;

const HEADERS_PER_SECTOR: usize = SECTOR_SIZE / HEADER_SIZE;

/// `JournalEvent::Durable` events one completion yields at most: a header sector write makes
/// durable at most the prepares whose ring entries it holds; a prepare write, its own one.
pub const DURABLE_EVENTS_PER_COMPLETION_MAX: usize = HEADERS_PER_SECTOR;

/// What the replica reads a prepare back for; the journal hands it back with the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPurpose {
    /// The next op to commit.
    Commit,
    /// A pipeline entry whose message the primary no longer holds, to resend it.
    Pipeline,
    /// A peer's request_prepare: the prepare goes to `replica`.
    Repair { replica: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRecovery {
    /// Prepare (and maybe header) intact: trust it.
    Clean(Header),
    /// The slot should hold this op but its prepare is damaged or missing: repair from a peer.
    FaultyKnown(Header),
    /// Damaged beyond telling which op it held: repair, and the log head is uncertain.
    FaultyUnknown,
    /// Never written, or a torn write that was never acknowledged.
    Empty,
}

/// What recovery found, for the replica and for `vsr inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub op_head: u64,
    pub head_certain: bool,
    pub clean: u64,
    pub faulty_known: u64,
    pub faulty_unknown: u64,
    pub empty: u64,
    pub discarded: u64,
    pub header_ring_repairs: u64,
    /// Ops between the checkpoint and the head that no slot holds, whose slot's header-ring
    /// entry was damaged beside an older intact prepare: marked faulty.
    pub gaps_faulty: u64,
    /// The first few faulty ops with a known header (for logs and `vsr inspect`).
    pub faulty_ops: Vec<u64>,
}

#[derive(Debug)]
pub enum JournalEvent {
    /// The prepare is durably written (prepare and header ring): the replica may acknowledge it.
    Durable { op: u64, checksum: u128 },
    /// A read finished; `message` is None if the slot no longer holds that prepare intact.
    Read {
        op: u64,
        checksum: u128,
        purpose: ReadPurpose,
        message: Option<Message>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub prepare_writes: u64,
    pub header_writes: u64,
    pub reads: u64,
    pub reads_faulty: u64,
}

struct Recovery {
    ring: Vec<Option<Header>>,
    /// Per slot: the ring entry is a faulty marker (`Header::reserved_faulty`), read as damaged.
    ring_faulty_marker: Vec<bool>,
    prepares: Vec<Option<Option<Header>>>,
    headers_chunks_done: usize,
    headers_chunks: usize,
    next_slot: usize,
    prepares_done: usize,
}

pub struct Journal {
    cluster: u128,
    slot_count: usize,
    message_size_max: usize,
    /// The log as this replica believes it: one header per slot, `Reserved` when empty.
    headers: Vec<Header>,
    /// Header-ring image to write: updated when a slot's prepare is durable.
    ring: Vec<Header>,
    /// Header ring as durable on disk (as far as this replica knows).
    ring_durable: Vec<Header>,
    /// Checksum of the prepare durably in each slot (0: none known).
    prepare_durable: Vec<u128>,
    /// `headers[slot]` is not yet durable here.
    dirty: Vec<bool>,
    /// Held clean (the prepare is durable here, so it counts as held in a view change) but its
    /// header-ring entry is being rewritten after recovery found it stale or damaged: not
    /// acknowledged until that write lands (`acknowledgeable`), because the promise of an
    /// acknowledgement is that both are durable.
    ring_pending: Vec<bool>,
    /// The slot's disk content is damaged: it must never be reported as a nack.
    faulty: Vec<bool>,
    writing: Vec<Option<u128>>,
    pending_write: Vec<Option<Message>>,
    sector_writing: Vec<bool>,
    sector_again: Vec<bool>,
    reads_in_flight: usize,
    /// The (op, checksum, purpose) each read in flight was started for, by read id (the token's
    /// index): the slot may hold another op by the time the read completes (the journal wraps).
    reads: Vec<Option<(u64, u128, ReadPurpose)>>,
    io_max: usize,
    events: Vec<JournalEvent>,
    recovery: Option<Recovery>,
    /// Every header installed by `set_header`, (op, checksum), when a checker asks for them (the
    /// simulator's view-log checker); None in production.
    installs: Option<Vec<(u64, u128)>>,
    pub stats: JournalStats,
}

impl Journal {
    pub fn new(config: &Config, cluster: u128) -> Journal {
        let slot_count = config.journal_slot_count as usize;
        let sectors = (slot_count * HEADER_SIZE).div_ceil(SECTOR_SIZE);
        let reserved: Vec<Header> = (0..slot_count)
            .map(|slot| Header::reserved(cluster, slot as u64))
            .collect();
        Journal {
            cluster,
            slot_count,
            message_size_max: config.message_size_max as usize,
            headers: reserved.clone(),
            ring: reserved.clone(),
            ring_durable: reserved,
            prepare_durable: vec![0; slot_count],
            dirty: vec![false; slot_count],
            ring_pending: vec![false; slot_count],
            faulty: vec![false; slot_count],
            writing: vec![None; slot_count],
            pending_write: (0..slot_count).map(|_| None).collect(),
            sector_writing: vec![false; sectors],
            sector_again: vec![false; sectors],
            reads_in_flight: 0,
            reads: vec![None; crate::config::journal_io_max(config)],
            io_max: crate::config::journal_io_max(config),
            events: Vec::with_capacity(slot_count + 16),
            recovery: None,
            installs: None,
            stats: JournalStats::default(),
        }
    }

    pub fn slot_count(&self) -> u64 {
        self.slot_count as u64
    }

    pub fn slot(&self, op: u64) -> usize {
        (op % self.slot_count as u64) as usize
    }

    /// The header for `op`, if the journal has one (clean or not).
    pub fn header(&self, op: u64) -> Option<&Header> {
        let h = &self.headers[self.slot(op)];
        (h.command == Command::Prepare as u8 && h.op == op).then_some(h)
    }

    pub fn has_header(&self, op: u64, checksum: u128) -> bool {
        self.header(op).is_some_and(|h| h.checksum == checksum)
    }

    /// The prepare for `op` with `checksum` is durable here.
    pub fn has_clean(&self, op: u64, checksum: u128) -> bool {
        self.has_header(op, checksum) && !self.dirty[self.slot(op)]
    }

    /// The prepare for `op` with `checksum` and its header-ring entry are durable here: it may
    /// be acknowledged.
    pub fn acknowledgeable(&self, op: u64, checksum: u128) -> bool {
        self.has_clean(op, checksum) && !self.ring_pending[self.slot(op)]
    }

    pub fn is_dirty(&self, op: u64) -> bool {
        self.header(op).is_some() && self.dirty[self.slot(op)]
    }

    pub fn is_faulty_slot(&self, op: u64) -> bool {
        self.faulty[self.slot(op)]
    }

    pub fn faulty_count(&self) -> usize {
        self.faulty.iter().filter(|&&f| f).count()
    }

    pub fn dirty_count(&self) -> usize {
        self.dirty.iter().filter(|&&d| d).count()
    }

    pub fn writing(&self, op: u64) -> bool {
        self.header(op)
            .is_some_and(|h| self.writing[self.slot(op)] == Some(h.checksum))
    }

    /// Sets the header for its op, replacing whatever the slot held. The prepare is not durable
    /// until written (`dirty`), unless the slot already holds it durably.
    pub fn set_header(&mut self, header: &Header) {
        assert_eq!(header.command, Command::Prepare as u8);
        assert!(header.valid_checksum());
        let slot = self.slot(header.op);
        if self.headers[slot].checksum == header.checksum
            && self.headers[slot].command == header.command
        {
            return;
        }
        self.headers[slot] = *header;
        if let Some(installs) = &mut self.installs {
            installs.push((header.op, header.checksum));
        }
        // Durable, and not about to be overwritten by a write of another prepare to the slot
        // (VOPR seed 388616834044111587: a start_view's op 18 of view 1 taken as durable while
        // the write of view 2's op 18, queued behind it, was about to land over it; the replica
        // acknowledged it and its do_view_change flagged it clean).
        let durable = self.prepare_durable[slot] == header.checksum
            && self.ring_durable[slot].checksum == header.checksum
            && self.writing[slot].is_none_or(|c| c == header.checksum);
        self.dirty[slot] = !durable;
        self.ring_pending[slot] = false;
        if durable {
            self.faulty[slot] = false;
        }
    }

    /// From now on, record every header `set_header` installs, for `installs_drain` (checkers).
    pub fn installs_trace(&mut self) {
        self.installs
            .get_or_insert_with(|| Vec::with_capacity(self.slot_count));
    }

    /// Hands each header installed since the last drain to `each`, oldest first.
    pub fn installs_drain(&mut self, mut each: impl FnMut(u64, u128)) {
        if let Some(installs) = &mut self.installs {
            for (op, checksum) in installs.drain(..) {
                each(op, checksum);
            }
        }
    }

    /// Forgets `op` (truncation or a header proven stale). Disk content stays; on restart the
    /// superblock's view headers tell truncated ops apart.
    pub fn remove(&mut self, op: u64) {
        let slot = self.slot(op);
        if self.header(op).is_some() {
            self.headers[slot] = Header::reserved(self.cluster, slot as u64);
            self.dirty[slot] = false;
            self.ring_pending[slot] = false;
        }
    }

    /// Forgets every header of an op above `head`, whatever the replica's own op: a view
    /// change's new log (staged here by a would-be primary whose view never started, or repaired
    /// into it) can leave headers above any later head, and a start_view's head is the end of
    /// the log.
    pub fn remove_above(&mut self, head: u64) {
        for slot in 0..self.slot_count {
            let h = self.headers[slot];
            if h.command == Command::Prepare as u8 && h.op > head {
                self.remove(h.op);
            }
        }
        debug_assert!(self
            .headers
            .iter()
            .all(|h| h.command != Command::Prepare as u8 || h.op <= head));
    }

    /// A replica re-created by `vsr recover` may have acknowledged any op before its disk was
    /// lost: every slot it does not hold durably is marked faulty, so its do_view_change never
    /// counts as a nack there. A slot stops being faulty when a prepare is written to it.
    pub fn mark_unheld_faulty(&mut self) {
        for slot in 0..self.slot_count {
            let held = self.headers[slot].command == Command::Prepare as u8 && !self.dirty[slot];
            if !held {
                self.faulty[slot] = true;
            }
        }
    }

    /// An op between the checkpoint and the head whose slot holds no copy of it is a gap. Most
    /// gaps are ops this replica never received. But where the slot's header-ring entry was
    /// damaged, the op may have been acknowledged: a prepare write that completed and was then
    /// lost (misdirected) leaves the older prepare, or the zeros of a slot never written before,
    /// and the damaged ring entry hides that anything newer was written (recovery reads the slot
    /// as the older prepare, or as empty). Such a gap is faulty (never a nack in a
    /// do_view_change) until repaired; the older prepare is history the checkpoint covers. Only
    /// the damaged-ring case: a gap that is simply absent stays a nack, or a view change could
    /// never truncate an op nobody received. (VOPR seed 3682551280352272998: a two-replica
    /// cluster's new primary, alone a view-change quorum, nacked its own lost copy of committed
    /// op 157 and truncated it; seed 4553301784644258954: the same with a zeroed slot, its first
    /// write lost and a crash tearing its ring sector, and op 10.) The same holds of an op whose
    /// header the superblock's view headers restored but whose prepare the slot does not hold
    /// (seed 2535531701955569641: a primary's op 209): present but dirty beside a damaged ring
    /// entry is faulty, not a nack.
    fn mark_gaps_faulty(
        &mut self,
        checkpoint_op: u64,
        recovery: &Recovery,
        report: &mut RecoveryReport,
    ) {
        let window = report.op_head.saturating_sub(self.slot_count as u64);
        for op in checkpoint_op.max(window) + 1..=report.op_head {
            let slot = self.slot(op);
            let ring_damaged = recovery.ring[slot].is_none();
            let held_clean = self.header(op).is_some() && !self.dirty[slot];
            if held_clean || self.faulty[slot] || !ring_damaged {
                continue;
            }
            if self.header(op).is_none() {
                let held = self.headers[slot];
                assert!(
                    held.command != Command::Prepare as u8 || held.op < op,
                    "a gap's slot holds an op above the head"
                );
                self.headers[slot] = Header::reserved(self.cluster, slot as u64);
                self.dirty[slot] = false;
            }
            self.faulty[slot] = true;
            self.ring_mark_faulty(slot);
            report.gaps_faulty += 1;
        }
    }

    /// Replaces a damaged header-ring entry by the faulty marker (`Header::reserved_faulty`),
    /// durably (its sector is rewritten): otherwise the next write of the sector would store a
    /// plain reserved entry there, and a later recovery would read the slot as never written and
    /// count it as a nack (VOPR seed 1701470187001554108: a replica's ring repair after one
    /// crash erased a faulty slot's evidence; after a second crash its do_view_change nacked
    /// committed op 83, which it had acknowledged).
    fn ring_mark_faulty(&mut self, slot: usize) {
        self.ring[slot] = Header::reserved_faulty(self.cluster, slot as u64);
        self.sector_again[slot / HEADERS_PER_SECTOR] = true;
    }

    /// Marks the slot of `op` faulty (a read found it damaged).
    pub fn set_faulty(&mut self, op: u64) {
        let slot = self.slot(op);
        if self.header(op).is_some() {
            self.dirty[slot] = true;
            self.faulty[slot] = true;
            self.prepare_durable[slot] = 0;
        }
    }

    pub fn events(&mut self) -> std::vec::Drain<'_, JournalEvent> {
        self.events.drain(..)
    }

    /// Writes a prepare whose header is already set. Returns false if nothing was submitted
    /// (already durable or being written, or queued behind the slot's current write).
    pub fn write_prepare<S: Storage>(&mut self, storage: &mut S, message: &Message) -> bool {
        let header = *message.header();
        let slot = self.slot(header.op);
        assert_eq!(
            self.headers[slot].checksum, header.checksum,
            "write of a prepare whose header is not set"
        );
        if !self.dirty[slot] || self.writing[slot] == Some(header.checksum) {
            return false;
        }
        if self.prepare_durable[slot] == header.checksum {
            // Already durable, only its header-ring entry is pending. Never rewrite it: a torn
            // rewrite would destroy the copy this replica may already have acknowledged.
            if self.ring[slot].checksum != header.checksum {
                self.ring[slot] = header;
                self.sector_again[slot / HEADERS_PER_SECTOR] = true;
            }
            return false;
        }
        if self.writing[slot].is_some() {
            self.pending_write[slot] = Some(message.clone());
            return false;
        }
        self.writing[slot] = Some(header.checksum);
        self.stats.prepare_writes += 1;
        storage.submit(IoRequest {
            kind: IoKind::Write,
            zone: Zone::WalPrepares,
            offset: slot as u64 * self.message_size_max as u64,
            len: message.size_sectors(),
            buffer: message.clone(),
            token: Token::new(Purpose::PrepareWrite, slot as u32).encode(),
        });
        true
    }

    /// Reads the prepare `op`/`checksum` from disk; the result comes back as `JournalEvent::Read`
    /// with `purpose`. Returns false if the read cannot be started now (busy or no buffer).
    pub fn read_prepare<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        op: u64,
        checksum: u128,
        purpose: ReadPurpose,
    ) -> bool {
        if self.reads_in_flight >= self.io_max || !self.has_clean(op, checksum) {
            return false;
        }
        let Some(buffer) = pool.get() else {
            return false;
        };
        let slot = self.slot(op);
        let size = self.headers[slot].size as usize;
        let id = self
            .reads
            .iter()
            .position(|r| r.is_none())
            .expect("a read id per read in flight");
        self.reads[id] = Some((op, checksum, purpose));
        self.reads_in_flight += 1;
        self.stats.reads += 1;
        storage.submit(IoRequest {
            kind: IoKind::Read,
            zone: Zone::WalPrepares,
            offset: slot as u64 * self.message_size_max as u64,
            len: size.next_multiple_of(SECTOR_SIZE),
            buffer,
            token: Token::new(Purpose::PrepareRead, id as u32).encode(),
        });
        true
    }

    pub fn on_completion<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        completion: IoCompletion,
    ) {
        let token = Token::decode(completion.token);
        let slot = token.index as usize;
        match token.purpose {
            Purpose::PrepareWrite => {
                self.on_prepare_written(storage, pool, slot, completion.buffer)
            }
            Purpose::HeaderSectorWrite => {
                self.on_sector_written(storage, pool, slot, completion.buffer)
            }
            Purpose::PrepareRead => self.on_prepare_read(token.index as usize, completion.buffer),
            Purpose::RecoveryHeaders => {
                self.on_recovery_headers(storage, pool, slot, completion.buffer)
            }
            Purpose::RecoveryPrepare { whole } => {
                self.on_recovery_prepare(storage, pool, slot, whole, completion.buffer)
            }
            other => panic!("journal got a completion for {other:?}"),
        }
    }

    fn on_prepare_written<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        slot: usize,
        message: Message,
    ) {
        let header = *message.header();
        assert_eq!(self.writing[slot], Some(header.checksum));
        self.writing[slot] = None;
        self.prepare_durable[slot] = header.checksum;
        let held = self.headers[slot];
        if held.command == Command::Prepare as u8 && held.checksum != header.checksum {
            // Another prepare landed over the one the slot's header names (a write queued
            // before a view change replaced that header): the header's copy is gone.
            self.dirty[slot] = true;
        }
        if self.headers[slot].checksum == header.checksum {
            self.ring[slot] = header;
            self.write_sector(storage, pool, slot / HEADERS_PER_SECTOR);
        }
        if let Some(next) = self.pending_write[slot].take() {
            if self.headers[slot].checksum == next.header().checksum {
                self.write_prepare(storage, &next);
            }
        }
    }

    fn write_sector<S: Storage>(&mut self, storage: &mut S, pool: &MessagePool, sector: usize) {
        if self.sector_writing[sector] {
            self.sector_again[sector] = true;
            return;
        }
        let Some(mut buffer) = pool.get() else {
            // Retried from `flush`, called every tick.
            self.sector_again[sector] = true;
            return;
        };
        self.sector_again[sector] = false;
        self.sector_writing[sector] = true;
        let first = sector * HEADERS_PER_SECTOR;
        let last = (first + HEADERS_PER_SECTOR).min(self.slot_count);
        let bytes = buffer.buffer_mut();
        bytes[..SECTOR_SIZE].fill(0);
        for slot in first..last {
            let at = (slot - first) * HEADER_SIZE;
            bytes[at..at + HEADER_SIZE]
                .copy_from_slice(zerocopy::IntoBytes::as_bytes(&self.ring[slot]));
        }
        self.stats.header_writes += 1;
        storage.submit(IoRequest {
            kind: IoKind::Write,
            zone: Zone::WalHeaders,
            offset: (sector * SECTOR_SIZE) as u64,
            len: SECTOR_SIZE,
            buffer,
            token: Token::new(Purpose::HeaderSectorWrite, sector as u32).encode(),
        });
    }

    /// Retries header-ring writes that found no buffer. Called every tick.
    pub fn flush<S: Storage>(&mut self, storage: &mut S, pool: &MessagePool) {
        for sector in 0..self.sector_again.len() {
            if self.sector_again[sector] && !self.sector_writing[sector] {
                self.write_sector(storage, pool, sector);
            }
        }
    }

    fn on_sector_written<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        sector: usize,
        buffer: Message,
    ) {
        assert!(self.sector_writing[sector]);
        self.sector_writing[sector] = false;
        let first = sector * HEADERS_PER_SECTOR;
        let last = (first + HEADERS_PER_SECTOR).min(self.slot_count);
        for slot in first..last {
            let at = (slot - first) * HEADER_SIZE;
            self.ring_durable[slot] = Header::read_from(&buffer.buffer()[at..at + HEADER_SIZE]);
            let h = self.headers[slot];
            if h.command == Command::Prepare as u8
                && (self.dirty[slot] || self.ring_pending[slot])
                && self.prepare_durable[slot] == h.checksum
                && self.ring_durable[slot].checksum == h.checksum
            {
                self.dirty[slot] = false;
                self.faulty[slot] = false;
                self.ring_pending[slot] = false;
                self.events.push(JournalEvent::Durable {
                    op: h.op,
                    checksum: h.checksum,
                });
            }
        }
        if self.sector_again[sector] {
            self.write_sector(storage, pool, sector);
        }
    }

    fn on_prepare_read(&mut self, id: usize, buffer: Message) {
        self.reads_in_flight -= 1;
        let (op, checksum, purpose) = self.reads[id].take().expect("read in flight");
        let h = *buffer.header();
        let intact = h.valid_checksum()
            && h.checksum == checksum
            && h.op == op
            && h.size as usize <= self.message_size_max
            && h.valid_checksum_body(buffer.body());
        if !intact && self.has_clean(op, checksum) {
            // The disk lost or damaged a prepare we had written: repair it from a peer.
            self.stats.reads_faulty += 1;
            self.set_faulty(op);
        }
        self.events.push(JournalEvent::Read {
            op,
            checksum,
            purpose,
            message: intact.then_some(buffer),
        });
    }

    // ---- Recovery -------------------------------------------------------------------------

    /// Starts reading the whole journal. `recovery_done()` turns true once every read finished.
    pub fn recover_start<S: Storage>(&mut self, storage: &mut S, pool: &MessagePool) {
        assert!(self.recovery.is_none());
        let ring_bytes = storage.layout().wal_headers_size as usize;
        let chunks = ring_bytes.div_ceil(self.message_size_max);
        self.recovery = Some(Recovery {
            ring: vec![None; self.slot_count],
            ring_faulty_marker: vec![false; self.slot_count],
            prepares: vec![None; self.slot_count],
            headers_chunks_done: 0,
            headers_chunks: chunks,
            next_slot: 0,
            prepares_done: 0,
        });
        for chunk in 0..chunks {
            let offset = chunk * self.message_size_max;
            let len = (ring_bytes - offset).min(self.message_size_max);
            let buffer = pool.get().expect("message pool too small for recovery");
            storage.submit(IoRequest {
                kind: IoKind::Read,
                zone: Zone::WalHeaders,
                offset: offset as u64,
                len,
                buffer,
                token: Token::new(Purpose::RecoveryHeaders, chunk as u32).encode(),
            });
        }
        self.recover_prepares_continue(storage, pool);
    }

    fn recover_prepares_continue<S: Storage>(&mut self, storage: &mut S, pool: &MessagePool) {
        let recovery = self.recovery.as_mut().unwrap();
        while recovery.next_slot < self.slot_count
            && recovery.next_slot - recovery.prepares_done < self.io_max
        {
            let Some(buffer) = pool.get() else { break };
            let slot = recovery.next_slot;
            recovery.next_slot += 1;
            // The first sector holds the header; the rest is read only for an intact header of a
            // larger prepare (a fresh or mostly empty journal costs a sector per slot).
            storage.submit(IoRequest {
                kind: IoKind::Read,
                zone: Zone::WalPrepares,
                offset: (slot * self.message_size_max) as u64,
                len: SECTOR_SIZE,
                buffer,
                token: Token::new(Purpose::RecoveryPrepare { whole: false }, slot as u32).encode(),
            });
        }
    }

    fn on_recovery_headers<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        chunk: usize,
        buffer: Message,
    ) {
        let slot_count = self.slot_count;
        let per_chunk = self.message_size_max / HEADER_SIZE;
        let recovery = self.recovery.as_mut().unwrap();
        for i in 0..per_chunk {
            let slot = chunk * per_chunk + i;
            if slot >= slot_count {
                break;
            }
            let h = Header::read_from(&buffer.buffer()[i * HEADER_SIZE..(i + 1) * HEADER_SIZE]);
            let valid =
                ring_header_valid(&h, self.cluster, self.message_size_max, slot_count, slot);
            let marker = valid
                && h.command == Command::Reserved as u8
                && h.operation == crate::header::commands::RESERVED_FAULTY_OPERATION;
            recovery.ring_faulty_marker[slot] = marker;
            recovery.ring[slot] = (valid && !marker).then_some(h);
            if valid {
                self.ring_durable[slot] = h;
                self.ring[slot] = h;
            }
        }
        recovery.headers_chunks_done += 1;
        let _ = (storage, pool);
    }

    fn on_recovery_prepare<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        slot: usize,
        whole: bool,
        buffer: Message,
    ) {
        let h = *buffer.header();
        let header_valid = prepare_header_valid(
            &h,
            self.cluster,
            self.message_size_max,
            self.slot_count,
            slot,
        );
        if !whole && header_valid && h.size as usize > SECTOR_SIZE {
            let mut buffer = buffer;
            buffer.buffer_mut()[..SECTOR_SIZE].fill(0);
            storage.submit(IoRequest {
                kind: IoKind::Read,
                zone: Zone::WalPrepares,
                offset: (slot * self.message_size_max) as u64,
                len: (h.size as usize).next_multiple_of(SECTOR_SIZE),
                buffer,
                token: Token::new(Purpose::RecoveryPrepare { whole: true }, slot as u32).encode(),
            });
            return;
        }
        let valid = header_valid && h.valid_checksum_body(buffer.body());
        let recovery = self.recovery.as_mut().unwrap();
        recovery.prepares[slot] = prepare_state(&buffer.buffer()[..HEADER_SIZE], h, valid);
        recovery.prepares_done += 1;
        if valid {
            self.prepare_durable[slot] = h.checksum;
        }
        self.recover_prepares_continue(storage, pool);
    }

    pub fn recovery_done(&self) -> bool {
        self.recovery.as_ref().is_some_and(|r| {
            r.headers_chunks_done == r.headers_chunks && r.prepares_done == self.slot_count
        })
    }

    /// Classifies every slot from what recovery read, installs the result, and returns the report.
    /// `vsr_state` comes from the superblock: its view headers are authoritative for their ops,
    /// and journal ops above them from an older view were truncated by that view change.
    pub fn recover_finish<S: Storage>(
        &mut self,
        storage: &mut S,
        pool: &MessagePool,
        vsr_state: &VsrState,
    ) -> RecoveryReport {
        assert!(self.recovery_done());
        let recovery = self.recovery.take().unwrap();
        let mut report = RecoveryReport {
            head_certain: true,
            ..Default::default()
        };
        let mut results: Vec<SlotRecovery> = (0..self.slot_count)
            .map(|slot| classify(recovery.ring[slot], recovery.prepares[slot]))
            .collect();
        for (slot, result) in results.iter_mut().enumerate() {
            // A slot recovery once found faulty and whose entry it replaced by the marker: a
            // prepare that now reads as never written was lost (the slot held one), never empty.
            if recovery.ring_faulty_marker[slot] && *result == SlotRecovery::Empty {
                *result = SlotRecovery::FaultyUnknown;
            }
        }
        for result in results.iter_mut() {
            if recovery_discards(result, vsr_state) {
                report.discarded += 1;
                *result = SlotRecovery::Empty;
            }
        }
        for (slot, result) in results.iter().enumerate() {
            self.recovery_install(slot, *result, &mut report);
        }
        self.recovery_view_headers(vsr_state);
        report.op_head = report.op_head.max(vsr_state.view_head_op());
        self.mark_gaps_faulty(vsr_state.checkpoint.op, &recovery, &mut report);
        self.flush(storage, pool);
        assert!(report.op_head >= vsr_state.view_head_op());
        report
    }

    /// Takes one slot's classification into the journal and counts it in `report`.
    fn recovery_install(&mut self, slot: usize, result: SlotRecovery, report: &mut RecoveryReport) {
        match result {
            SlotRecovery::Clean(h) => {
                report.clean += 1;
                self.headers[slot] = h;
                self.dirty[slot] = false;
                report.op_head = report.op_head.max(h.op);
                if self.ring_durable[slot].checksum != h.checksum {
                    // The crash came between the prepare write and its header-ring write (the
                    // prepare was never acknowledged), or tore a later write of the ring sector
                    // (it may have been): held clean either way, so never a nack, but not
                    // acknowledged again until the ring entry is rewritten.
                    report.header_ring_repairs += 1;
                    self.ring[slot] = h;
                    self.ring_pending[slot] = true;
                    self.sector_again[slot / HEADERS_PER_SECTOR] = true;
                }
            }
            SlotRecovery::FaultyKnown(h) => {
                report.faulty_known += 1;
                if report.faulty_ops.len() < 8 {
                    report.faulty_ops.push(h.op);
                }
                self.headers[slot] = h;
                self.dirty[slot] = true;
                self.faulty[slot] = true;
                report.op_head = report.op_head.max(h.op);
            }
            SlotRecovery::FaultyUnknown => {
                report.faulty_unknown += 1;
                report.head_certain = false;
                self.faulty[slot] = true;
                self.ring_mark_faulty(slot);
            }
            SlotRecovery::Empty => report.empty += 1,
        }
    }

    /// The superblock's view headers (the durable head of the log) override what the slots
    /// hold, except where the journal has wrapped past them.
    fn recovery_view_headers(&mut self, vsr_state: &VsrState) {
        for vh in &vsr_state.view_headers {
            let slot = self.slot(vh.op);
            let held = self.headers[slot];
            // The journal wraps: a view header the checkpoint covers, or whose slot already holds
            // a later op that survived the rules above, is history.
            let covered = vsr_state.checkpoint.op > 0 && vh.op <= vsr_state.checkpoint.op;
            let overwritten = held.command == Command::Prepare as u8 && held.op > vh.op;
            if covered || overwritten {
                continue;
            }
            if self.headers[slot].checksum != vh.checksum {
                let was_faulty = self.faulty[slot];
                self.set_header(vh);
                // The ring names this prepare, and a ring entry is written only once its prepare
                // is durable: the prepare was here and may have been acknowledged. A slot that
                // now holds another one lost it (a lost or misdirected write), so it is faulty,
                // never a nack (VOPR seed 1971068892604625808: view 3's op 9, repaired and
                // acknowledged in view 5, lost; the slot read back as view 4's op 9, which the
                // recovery table takes as the newer write, and the view header made it a nack).
                let lost = self.dirty[slot] && self.ring_durable[slot].checksum == vh.checksum;
                self.faulty[slot] = was_faulty || lost;
            }
        }
    }

    // ---- View change support --------------------------------------------------------------

    /// Flags describing what this replica has for `op` (for do_view_change bodies).
    pub fn view_change_flags(&self, op: u64) -> u8 {
        let mut flags = 0;
        if self.header(op).is_some() {
            flags |= FLAG_PRESENT;
            if !self.dirty[self.slot(op)] {
                flags |= FLAG_CLEAN;
            }
        }
        if self.faulty[self.slot(op)] {
            flags |= FLAG_FAULTY;
        }
        flags
    }

    /// Every header the journal holds as a prepare (for checkers and inspect).
    pub fn headers(&self) -> impl Iterator<Item = &Header> {
        self.headers
            .iter()
            .filter(|h| h.command == Command::Prepare as u8)
    }
}

pub const FLAG_PRESENT: u8 = 1;
pub const FLAG_CLEAN: u8 = 2;
pub const FLAG_FAULTY: u8 = 4;

/// Whether `h`, read from entry `slot` of the header ring, is a valid entry for that slot: sound
/// (checksum, cluster, fields), and either a prepare of an op that maps to the slot or the
/// slot's own reserved header. `inspect` reads a data file by the same rule.
pub fn ring_header_valid(
    h: &Header,
    cluster: u128,
    message_size_max: usize,
    slot_count: usize,
    slot: usize,
) -> bool {
    h.valid_checksum()
        && h.cluster == cluster
        && h.invalid(message_size_max).is_none()
        && match h.command() {
            Some(Command::Prepare) => h.op % slot_count as u64 == slot as u64,
            Some(Command::Reserved) => h.op == slot as u64,
            _ => false,
        }
}

/// Whether `h`, read from the start of prepare slot `slot`, is a valid prepare header for that
/// slot: the header ring's rule, less its reserved case (the body's checksum is checked once the
/// whole prepare is read).
pub fn prepare_header_valid(
    h: &Header,
    cluster: u128,
    message_size_max: usize,
    slot_count: usize,
    slot: usize,
) -> bool {
    h.command() == Some(Command::Prepare)
        && ring_header_valid(h, cluster, message_size_max, slot_count, slot)
}

/// A prepare slot as `classify` takes it, from the slot's header bytes, the header they hold,
/// and whether that header and its body were valid for the slot: Some(Some(h)) intact,
/// Some(None) damaged, None never written (all zero, which is never a valid header).
pub fn prepare_state(header_bytes: &[u8], h: Header, valid: bool) -> Option<Option<Header>> {
    if valid {
        Some(Some(h))
    } else if header_bytes.iter().all(|&b| b == 0) {
        None
    } else {
        Some(None)
    }
}

/// Whether recovery drops a slot's classification as no part of the log.
fn recovery_discards(result: &SlotRecovery, vsr_state: &VsrState) -> bool {
    let header = match *result {
        SlotRecovery::Clean(h) | SlotRecovery::FaultyKnown(h) => h,
        _ => return false,
    };
    // Above the view's head, an op from an older view was truncated by that view change; an op
    // from a newer view was written while installing that view's start_view and never
    // acknowledged (acks need log_view durable first).
    if (header.op > vsr_state.view_head_op() && header.view < vsr_state.log_view)
        || header.view > vsr_state.log_view
    {
        return true;
    }
    // The journal wraps: a slot naming an op the checkpoint covers is needed for nothing.
    // Faulty there, it is the torn write of a newer op into the slot, never acknowledged (an
    // acknowledged one would have its own header-ring entry), or damage to the old op: either
    // way the slot is empty for the log.
    let below_checkpoint = header.op <= vsr_state.checkpoint.op && header.op > 0;
    below_checkpoint && matches!(*result, SlotRecovery::FaultyKnown(_))
}

/// The recovery decision for one slot, from its header-ring entry (`ring`: None if damaged) and
/// its prepare (`prepare`: None = never written, Some(None) = damaged, Some(Some(h)) = intact).
/// The table and its reasons are in docs/protocol.md.
pub fn classify(ring: Option<Header>, prepare: Option<Option<Header>>) -> SlotRecovery {
    let ring_prepare = ring.filter(|h| h.command == Command::Prepare as u8);
    let ring_reserved = ring.is_some_and(|h| h.command == Command::Reserved as u8);
    match (ring_prepare, prepare) {
        (Some(r), Some(Some(p))) if r.checksum == p.checksum => SlotRecovery::Clean(p),
        // The prepare is newer than the ring: the crash came between the two writes.
        (Some(r), Some(Some(p))) if p.op > r.op || (p.op == r.op && p.view > r.view) => {
            SlotRecovery::Clean(p)
        }
        // The ring names a newer prepare than the slot holds: the prepare write was lost or
        // misdirected after the ring said it was there.
        (Some(r), Some(Some(_))) => SlotRecovery::FaultyKnown(r),
        (Some(r), Some(None)) | (Some(r), None) => SlotRecovery::FaultyKnown(r),
        (None, Some(Some(p))) => SlotRecovery::Clean(p),
        // The ring was never written for this slot, so no prepare here was ever acknowledged:
        // a damaged prepare is a torn first write.
        (None, Some(None)) if ring_reserved => SlotRecovery::Empty,
        // The prepare slot reads as never written. Nothing here was acknowledged unless a
        // completed write was lost; a gap below the head beside a damaged ring entry is marked
        // faulty for that (`mark_gaps_faulty`).
        (None, None) => SlotRecovery::Empty,
        (None, Some(None)) => SlotRecovery::FaultyUnknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(op: u64, view: u32) -> Header {
        let prepare = crate::header::commands::Prepare {
            view,
            op,
            client: 5,
            operation: 128,
            ..Default::default()
        };
        let mut h = prepare.to_header(1);
        h.set_checksum();
        h
    }

    #[test]
    fn classification_table() {
        let a = prepare(3, 1);
        let b = prepare(3, 2);
        let reserved = Header::reserved(1, 3);
        use SlotRecovery::*;
        assert_eq!(classify(Some(a), Some(Some(a))), Clean(a));
        assert_eq!(classify(Some(a), Some(Some(b))), Clean(b));
        assert_eq!(classify(Some(b), Some(Some(a))), FaultyKnown(b));
        assert_eq!(classify(Some(a), Some(None)), FaultyKnown(a));
        assert_eq!(classify(Some(a), None), FaultyKnown(a));
        assert_eq!(classify(Some(reserved), Some(Some(a))), Clean(a));
        assert_eq!(classify(Some(reserved), Some(None)), Empty);
        assert_eq!(classify(Some(reserved), None), Empty);
        assert_eq!(classify(None, Some(Some(a))), Clean(a));
        assert_eq!(classify(None, Some(None)), FaultyUnknown);
        assert_eq!(classify(None, None), Empty);
    }
}
