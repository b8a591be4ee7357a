//! Checkpoints: every `checkpoint_interval` ops each replica writes its state (client sessions and
//! the state machine snapshot) into the inactive one of two checkpoint areas, then records it in
//! the superblock. Only then may the journal overwrite the slots of ops the checkpoint covers, so
//! a crash at any point leaves a checkpoint plus a journal that replays from it.
//!
//! Loading reads the chunks back in order, verifies each (checksums, identity) and the whole (the
//! id in the superblock), and restores the state machine; its digest must then equal the one the
//! superblock recorded. A checkpoint that fails verification leaves the replica without a state
//! (`state_lost`): it keeps its journal and its vote, and fetches a checkpoint from a peer (sync).

use super::client_table::{decode_client_section, encode_client_section, ClientTable};
use super::{Event, Replica, Status};
use crate::bus::MessageBus;
use crate::checkpoint_content::{
    checkpoint_id, chunk_count, chunk_count_checked, chunk_len, chunk_payload, ChunkIdentity,
};
use crate::io_token::{Purpose, Token};
use crate::message::{Message, MessagePool};
use crate::state_machine::StateMachine;
use crate::storage::{IoCompletion, IoKind, IoRequest, Storage, Zone};
use crate::superblock::CheckpointRef;
use crate::time::Time;

/// Chunk reads or writes in flight for one checkpoint write or load.
pub(super) const CHECKPOINT_IO_MAX: usize = 4;

/// Buffers for checkpoint chunks: one write or load, the reads served to syncing peers, and a
/// few spare.
pub(super) fn checkpoint_pool(config: &crate::config::Config) -> MessagePool {
    MessagePool::new(
        CHECKPOINT_IO_MAX + super::sync::SYNC_SERVE_MAX + 4,
        config.message_size_max as usize,
    )
}

pub(super) struct CheckpointWrite {
    identity: ChunkIdentity,
    area: u8,
    /// The content's first bytes: the client section with its length prefix.
    prefix: Vec<u8>,
    checksums: Vec<u128>,
    next: u32,
    durable: u32,
    /// `Time::monotonic` when it started, for the operator event.
    started: u64,
    /// Every chunk is durable and the superblock update is requested (commits still wait at
    /// the next checkpoint op until that update is durable and the write is dropped).
    pub(super) recorded: bool,
}

/// What to do once a checkpoint is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterLoad {
    /// Restart: go on to read the journal.
    Recovery,
    /// State sync installed it: resume committing from its op.
    Sync,
}

pub(super) struct CheckpointLoad {
    checkpoint: CheckpointRef,
    identity: ChunkIdentity,
    then: AfterLoad,
    next_read: u32,
    next_apply: u32,
    /// Read chunks waiting for their turn, by index modulo the window.
    window: Vec<Option<Message>>,
    checksums: Vec<u128>,
    /// Content position, and the client section as it is assembled.
    position: u64,
    client_len: Option<u64>,
    prefix: Vec<u8>,
    failed: Option<String>,
    started: u64,
}

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    /// Ops between checkpoints (see `Config::checkpoint_interval`).
    pub fn checkpoint_interval(&self) -> u64 {
        self.config.checkpoint_interval()
    }

    /// The newest durable checkpoint.
    pub fn checkpoint(&self) -> CheckpointRef {
        self.superblock
            .as_ref()
            .map(|sb| sb.vsr_state.checkpoint)
            .unwrap_or_default()
    }

    /// The highest op the journal may hold: its slot's previous occupant is covered by the
    /// durable checkpoint, so overwriting it loses nothing a restart needs.
    pub(super) fn op_limit(&self) -> u64 {
        self.checkpoint().op + self.journal.slot_count()
    }

    /// Commits wait while a checkpoint loads, and while the state is lost or being synced. Not
    /// while one is written (that reads a frozen snapshot, see `checkpoint_maybe_start`), unless
    /// the next op to commit is the next checkpoint's: two writes never overlap.
    pub(super) fn commits_paused(&self) -> bool {
        let next_is_checkpoint = (self.commit_min + 1) % self.checkpoint_interval() == 0;
        (self.checkpoint_write.is_some() && next_is_checkpoint)
            || self.checkpoint_due()
            || self.checkpoint_load.is_some()
            || self.state_lost
            || self.sync.is_some()
    }

    // ---- Writing --------------------------------------------------------------------------

    /// The op just committed is a checkpoint op newer than the durable checkpoint.
    fn checkpoint_op_reached(&self) -> bool {
        let op = self.commit_min;
        op > 0 && op % self.checkpoint_interval() == 0 && op > self.checkpoint().op
    }

    /// True when the op just committed is a checkpoint op whose write has not started: it waits
    /// for the durable checkpoint to be held by a replication quorum, and commits wait with it
    /// (the write must snapshot the state at exactly this op).
    pub(super) fn checkpoint_due(&self) -> bool {
        self.checkpoint_op_reached()
            && self.checkpoint_write.is_none()
            && self.checkpoint_load.is_none()
            && self.sync.is_none()
            && !self.state_lost
    }

    /// Whether the durable checkpoint is held by a replication quorum (this replica and the
    /// peers advertising it or a newer one). Until it is, the next checkpoint must not overwrite
    /// the one before: that may be the newest checkpoint a quorum holds, the one a peer whose
    /// own copy is damaged syncs to. The fault model promises each block of a checkpoint intact
    /// on some replica of a quorum that wrote it, not on the one replica that got furthest.
    pub(super) fn checkpoint_durable_on_quorum(&self) -> bool {
        let durable = self.checkpoint().op;
        if durable == 0 {
            return true;
        }
        let holders = 1
            + (0..self.replica_count)
                .filter(|&r| r != self.replica && self.peers[r as usize].checkpoint_op >= durable)
                .count();
        holders >= self.quorum_replication
    }

    /// Called after each commit: at a checkpoint op, start writing the checkpoint once the
    /// durable one is held by a quorum (`checkpoint_durable_on_quorum`).
    pub(super) fn checkpoint_maybe_start(&mut self) {
        if !self.checkpoint_op_reached() {
            return;
        }
        let op = self.commit_min;
        assert!(self.checkpoint_write.is_none(), "checkpoint {op} overlaps");
        assert!(self.sync.is_none() && !self.state_lost);
        if self.sync_writes_in_flight > 0 {
            // An abandoned sync's chunk write could land on ours: commits wait for it (the
            // last completion starts this again).
            return;
        }
        if !self.checkpoint_durable_on_quorum() {
            if !self.checkpoint_held_back {
                self.checkpoint_held_back = true;
                self.stats.checkpoints_held_back += 1;
                self.event(format_args!(
                    "checkpoint op={op} waits: checkpoint op={} is not yet held by a quorum",
                    self.checkpoint().op
                ));
            }
            return;
        }
        self.checkpoint_held_back = false;
        let durable = self.checkpoint();
        let area = if durable.op == 0 { 0 } else { 1 - durable.area };
        // The chunks go into the area of our previous checkpoint: stop serving it.
        self.checkpoint_previous = None;
        let mut prefix = Vec::new();
        encode_client_section(&self.clients, &mut prefix);
        // Commits go on while the chunks are written: they read this frozen state.
        self.state_machine.snapshot_freeze();
        let size = prefix.len() as u64 + self.state_machine.snapshot_size();
        let chunks = chunk_count(size, self.config.message_size_max);
        let identity = ChunkIdentity {
            cluster: self.cluster,
            op,
            size,
            chunks,
            digest: self.state_machine.digest(),
        };
        self.log(format_args!(
            "checkpoint start: op={op} size={size} chunks={chunks} area={area}"
        ));
        self.checkpoint_write = Some(CheckpointWrite {
            identity,
            area,
            prefix,
            checksums: vec![0; chunks as usize],
            next: 0,
            durable: 0,
            started: self.time.monotonic(),
            recorded: false,
        });
        self.checkpoint_write_continue();
    }

    fn checkpoint_write_continue(&mut self) {
        let message_size_max = self.config.message_size_max;
        loop {
            let Some(write) = self.checkpoint_write.as_mut() else {
                return;
            };
            if write.next == write.identity.chunks
                || (write.next - write.durable) as usize >= CHECKPOINT_IO_MAX
            {
                return;
            }
            let Some(mut buffer) = self.checkpoint_pool.get() else {
                return;
            };
            let index = write.next;
            write.next += 1;
            let len = chunk_len(write.identity.size, message_size_max, index);
            let start = index as u64 * chunk_payload(message_size_max) as u64;
            {
                let body = &mut buffer.buffer_mut()[crate::header::HEADER_SIZE..][..len];
                fill_content(&write.prefix, &self.state_machine, start, body);
            }
            let header = write
                .identity
                .header(index, &buffer.buffer()[crate::header::HEADER_SIZE..][..len]);
            write.checksums[index as usize] = header.checksum_body;
            *buffer.header_mut() = header;
            let offset = self
                .storage
                .layout()
                .checkpoint_block_offset(write.area, index);
            self.storage.submit(IoRequest {
                kind: IoKind::Write,
                zone: Zone::Checkpoint,
                offset,
                len: buffer.size_sectors(),
                buffer,
                token: Token::new(Purpose::CheckpointWrite, index).encode(),
            });
        }
    }

    pub(super) fn on_checkpoint_written(&mut self) {
        let write = self.checkpoint_write.as_mut().expect("checkpoint write");
        write.durable += 1;
        if write.durable < write.identity.chunks {
            self.checkpoint_write_continue();
            return;
        }
        let checkpoint = CheckpointRef {
            op: write.identity.op,
            id: checkpoint_id(&write.checksums),
            size: write.identity.size,
            chunks: write.identity.chunks,
            area: write.area,
            digest: write.identity.digest,
        };
        write.recorded = true;
        write.prefix = Vec::new();
        self.state_machine.snapshot_thaw();
        self.log(format_args!("checkpoint written: {checkpoint:?}"));
        self.checkpoint_record(checkpoint);
        self.commit_journal();
    }

    /// Serves the checkpoint before the durable one, as the superblock records it (it stays
    /// intact in the other area until a write goes there).
    pub(super) fn checkpoint_previous_serve(&mut self) {
        let previous = self.durable_state().checkpoint_previous;
        self.checkpoint_previous = (previous.op > 0).then_some(previous);
    }

    /// Makes `checkpoint` the durable one (the superblock switch is the atomic step).
    pub(super) fn checkpoint_record(&mut self, checkpoint: CheckpointRef) {
        let mut state = self.vsr_state_now();
        // The one it replaces stays intact in the other area until the next write goes there.
        let before = state.checkpoint;
        state.checkpoint_previous = if before.precedes(&checkpoint) {
            before
        } else {
            CheckpointRef::default()
        };
        state.checkpoint = checkpoint;
        state.commit_max = state.commit_max.max(checkpoint.op);
        self.superblock_update(state);
    }

    /// The superblock became durable: a recorded checkpoint is now the one to restart from.
    pub(super) fn checkpoint_on_superblock_durable(&mut self) {
        let durable = self.checkpoint();
        if durable.op != self.checkpoint_seen.op || durable.id != self.checkpoint_seen.id {
            self.checkpoint_seen = durable;
            self.checkpoint_held_back = false;
            self.checkpoint_previous_serve();
        }
        if self
            .checkpoint_write
            .as_ref()
            .is_some_and(|w| w.recorded && w.identity.op == durable.op)
        {
            let write = self.checkpoint_write.take().unwrap();
            let duration_ns = self.time.monotonic().saturating_sub(write.started);
            self.latencies.checkpoint.observe(duration_ns);
            self.event(format_args!(
                "checkpoint op={} durable: {} bytes in {} chunks, {} ms",
                durable.op,
                durable.size,
                durable.chunks,
                self.ms_since(write.started)
            ));
            self.stats.checkpoints += 1;
            self.emit(Event::CheckpointDurable {
                op: durable.op,
                id: durable.id,
                synced: false,
            });
            // The journal may now take ops up to the new limit.
            self.commit_journal();
            self.start_view_deferred_retry();
        }
        self.sync_on_superblock_durable();
    }

    // ---- Loading --------------------------------------------------------------------------

    pub(super) fn checkpoint_load_start(&mut self, checkpoint: CheckpointRef, then: AfterLoad) {
        assert!(checkpoint.op > 0);
        assert!(self.checkpoint_load.is_none());
        self.log(format_args!(
            "checkpoint load: {checkpoint:?} then {then:?}"
        ));
        self.checkpoint_load = Some(CheckpointLoad {
            checkpoint,
            identity: ChunkIdentity {
                cluster: self.cluster,
                op: checkpoint.op,
                size: checkpoint.size,
                chunks: checkpoint.chunks,
                digest: checkpoint.digest,
            },
            then,
            next_read: 0,
            next_apply: 0,
            window: (0..CHECKPOINT_IO_MAX).map(|_| None).collect(),
            checksums: Vec::with_capacity(checkpoint.chunks as usize),
            position: 0,
            client_len: None,
            prefix: Vec::new(),
            failed: None,
            started: self.time.monotonic(),
        });
        // The superblock passed its checksum, but a size no chunk count describes is refused
        // here, not a panic.
        if chunk_count_checked(checkpoint.size, self.config.message_size_max)
            != Some(checkpoint.chunks)
        {
            self.checkpoint_load.as_mut().unwrap().failed =
                Some("chunk count does not match its size".into());
            self.checkpoint_load_fail();
            return;
        }
        self.checkpoint_load_continue();
    }

    fn checkpoint_load_continue(&mut self) {
        loop {
            let Some(load) = self.checkpoint_load.as_mut() else {
                return;
            };
            if load.failed.is_some()
                || load.next_read == load.identity.chunks
                || (load.next_read - load.next_apply) as usize >= CHECKPOINT_IO_MAX
            {
                return;
            }
            let Some(buffer) = self.checkpoint_pool.get() else {
                return;
            };
            let index = load.next_read;
            load.next_read += 1;
            let len = chunk_len(load.identity.size, self.config.message_size_max, index);
            let offset = self
                .storage
                .layout()
                .checkpoint_block_offset(load.checkpoint.area, index);
            self.storage.submit(IoRequest {
                kind: IoKind::Read,
                zone: Zone::Checkpoint,
                offset,
                len: (crate::header::HEADER_SIZE + len)
                    .next_multiple_of(crate::config::SECTOR_SIZE),
                buffer,
                token: Token::new(Purpose::CheckpointRead, index).encode(),
            });
        }
    }

    pub(super) fn on_checkpoint_read(&mut self, index: u32, completion: IoCompletion) {
        let message_size_max = self.config.message_size_max;
        let load = self.checkpoint_load.as_mut().expect("checkpoint load");
        let slot = index as usize % CHECKPOINT_IO_MAX;
        assert!(load.window[slot].is_none());
        load.window[slot] = Some(completion.buffer);
        // Apply every chunk that is next in order.
        while let Some(buffer) = load.window[load.next_apply as usize % CHECKPOINT_IO_MAX].take() {
            let index = load.next_apply;
            load.next_apply += 1;
            if load.failed.is_some() {
                continue;
            }
            let h = *buffer.header();
            let intact = h.valid_checksum()
                && (h.size as usize) <= message_size_max as usize
                && (h.size as usize) >= crate::header::HEADER_SIZE
                && h.valid_checksum_body(buffer.body())
                && load.identity.matches(&h, index, message_size_max);
            if !intact {
                load.failed = Some(format!("chunk {index} is damaged or stale"));
                continue;
            }
            load.checksums.push(h.checksum_body);
            if let Err(e) = load_feed(load, &mut self.state_machine, buffer.body()) {
                load.failed = Some(e);
            }
        }
        if load.failed.is_some() {
            // Stop reading; give up once the reads in flight are back.
            if load.next_apply == load.next_read {
                self.checkpoint_load_fail();
            }
            return;
        }
        if load.next_apply < load.identity.chunks {
            self.checkpoint_load_continue();
            return;
        }
        let load = self.checkpoint_load.take().unwrap();
        self.checkpoint_load_finish(load);
    }

    fn checkpoint_load_finish(&mut self, load: CheckpointLoad) {
        let checkpoint = load.checkpoint;
        if checkpoint_id(&load.checksums) != checkpoint.id {
            let mut load = load;
            load.failed = Some("chunks do not add up to the checkpoint id".into());
            self.checkpoint_load = Some(load);
            self.checkpoint_load_fail();
            return;
        }
        // Every chunk passed its checksums and the whole matches the id this replica or a peer
        // recorded after writing it: what follows can only fail through a bug.
        let client_len = load.client_len.expect("client section length");
        assert_eq!(load.position, checkpoint.size);
        assert_eq!(load.prefix.len() as u64, client_len);
        let clients =
            decode_client_section(&load.prefix, &self.pool, self.config.clients_max as usize)
                .unwrap_or_else(|e| {
                    panic!("checkpoint {} verified but unreadable: {e}", checkpoint.op)
                });
        self.clients = clients;
        if let Err(e) = self.state_machine.restore_finish() {
            panic!(
                "checkpoint {} verified but the state machine refused it: {e}",
                checkpoint.op
            );
        }
        assert_eq!(
            self.state_machine.digest(),
            checkpoint.digest,
            "checkpoint {} restored to a different state digest",
            checkpoint.op
        );
        self.state_lost = false;
        self.event(format_args!(
            "checkpoint op={} loaded: {} bytes, {} ms",
            checkpoint.op,
            checkpoint.size,
            self.ms_since(load.started)
        ));
        match load.then {
            AfterLoad::Recovery => self.journal.recover_start(&mut self.storage, &self.pool),
            AfterLoad::Sync => self.sync_finish(checkpoint),
        }
    }

    /// The checkpoint cannot be read back (no reads of it are in flight any more). The journal
    /// and the vote are intact; the state must come from a peer.
    fn checkpoint_load_fail(&mut self) {
        let load = self.checkpoint_load.take().expect("checkpoint load");
        assert_eq!(load.next_read, load.next_apply);
        self.event(format_args!(
            "checkpoint op={} unusable ({}): the state will be fetched from a peer",
            load.checkpoint.op,
            load.failed.as_deref().unwrap_or("?")
        ));
        self.stats.checkpoints_unusable += 1;
        self.state_lost = true;
        self.clients = ClientTable::new(self.config.clients_max as usize);
        match load.then {
            AfterLoad::Recovery => self.journal.recover_start(&mut self.storage, &self.pool),
            AfterLoad::Sync => self.sync_abort("installed checkpoint unreadable"),
        }
    }

    /// True when the replica has a state to commit on top of.
    pub fn state_available(&self) -> bool {
        !self.state_lost && self.checkpoint_load.is_none() && self.status != Status::Recovering
    }
}

/// Copies content bytes `[start, start + out.len())`: the prefix, then the snapshot.
fn fill_content<M: StateMachine>(prefix: &[u8], state_machine: &M, start: u64, out: &mut [u8]) {
    let prefix_len = prefix.len() as u64;
    let mut at = 0usize;
    if start < prefix_len {
        let n = ((prefix_len - start) as usize).min(out.len());
        out[..n].copy_from_slice(&prefix[start as usize..start as usize + n]);
        at = n;
    }
    if at < out.len() {
        let offset = start + at as u64 - prefix_len;
        state_machine.snapshot_read(offset, &mut out[at..]);
    }
}

/// Feeds content bytes in order: the client section length, the client section, the snapshot.
fn load_feed<M: StateMachine>(
    load: &mut CheckpointLoad,
    state_machine: &mut M,
    mut bytes: &[u8],
) -> Result<(), String> {
    let size = load.checkpoint.size;
    while !bytes.is_empty() {
        if load.position < 8 {
            let n = ((8 - load.position) as usize).min(bytes.len());
            load.prefix.extend_from_slice(&bytes[..n]);
            load.position += n as u64;
            bytes = &bytes[n..];
            if load.position == 8 {
                let len = u64::from_le_bytes(load.prefix[..8].try_into().unwrap());
                if len > size - 8 {
                    return Err("client section longer than the checkpoint".into());
                }
                load.client_len = Some(len);
                load.prefix.clear();
                if len == 0 {
                    state_machine.restore_begin(size - 8);
                }
            }
            continue;
        }
        let client_len = load.client_len.unwrap();
        let client_end = 8 + client_len;
        if load.position < client_end {
            let n = ((client_end - load.position) as usize).min(bytes.len());
            load.prefix.extend_from_slice(&bytes[..n]);
            load.position += n as u64;
            bytes = &bytes[n..];
            if load.position == client_end {
                state_machine.restore_begin(size - client_end);
            }
            continue;
        }
        state_machine.restore_write(bytes);
        load.position += bytes.len() as u64;
        bytes = &[];
    }
    Ok(())
}
