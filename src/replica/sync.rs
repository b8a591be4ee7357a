//! State sync: a replica that needs ops its peers have already overwritten (it was away for
//! longer than the journal covers), or whose own checkpoint is unreadable, fetches a peer's
//! latest checkpoint chunk by chunk and installs it.
//!
//! Every replica advertises its durable checkpoint (op, id) and its log head in pings and commit
//! heartbeats. The syncing replica asks any peer advertising the target for chunks, a window at
//! a time and round-robin, re-asking on the repair timeout, so chunks come from several peers
//! and lost messages or a crashed peer only slow it down. Each chunk is verified by its own
//! checksums and identity and written into the inactive checkpoint area; when all are durable
//! and add up to the target id, the superblock records the checkpoint (the atomic switch) and
//! the replica loads it from disk exactly as a restart would. Its journal and its vote are never
//! touched: only the state jumps forward, and the journal suffix is repaired as usual.
//!
//! A checkpoint holds only committed state, and every replica's checkpoint at one op is
//! byte-identical, so any peer's is as good as any other's.

use super::checkpoint::AfterLoad;
use super::{Event, Replica, ReplicaSet, Status};
use crate::bus::MessageBus;
use crate::checkpoint_content::{checkpoint_id, chunk_len, chunk_payload, ChunkIdentity};
use crate::config::REPLICAS_MAX;
use crate::header::commands::{CheckpointChunk, CheckpointName, RequestCheckpointChunk};
use crate::header::{Command, HEADER_SIZE};
use crate::io_token::{Purpose, Token};
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::storage::{IoCompletion, IoKind, IoRequest, Storage, Zone};
use crate::superblock::CheckpointRef;
use crate::time::Time;

/// Chunk requests outstanding at once.
const SYNC_WINDOW: u32 = 8;
/// Chunk reads in flight to serve peers.
pub(super) const SYNC_SERVE_MAX: usize = 4;
/// Ticks without a chunk arriving before outstanding requests are asked again (a peer drops a
/// request when it is already serving `SYNC_SERVE_MAX` reads; waiting for the repair timeout
/// then lets a fast cluster's next checkpoint overtake the sync).
const SYNC_RETRY_TICKS: u64 = 5;

/// What a peer last said about itself.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PeerState {
    pub checkpoint_op: u64,
    pub checkpoint_id: u128,
    /// The checkpoint before: a peer serves it too while its area is not being rewritten.
    pub previous_op: u64,
    pub previous_id: u128,
    pub op: u64,
}

pub(super) struct SyncProgress {
    pub(super) op: u64,
    id: u128,
    area: u8,
    /// Learned from the first chunk that arrives.
    identity: Option<ChunkIdentity>,
    received: Vec<bool>,
    durable: Vec<bool>,
    checksums: Vec<u128>,
    durable_count: u32,
    /// Chunks below this have been requested at least once.
    next_request: u32,
    /// Repair timeouts without any chunk arriving.
    idle_rounds: u32,
    /// All chunks durable and verified; the superblock update is requested.
    recorded: bool,
    /// Ticks of the last chunk arrival and of the last quick re-request.
    arrived_tick: u64,
    retried_tick: u64,
    /// `Time::monotonic` at the start, for the operator events.
    started: u64,
}

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    /// A peer's head, as a start_view names it.
    pub(super) fn peer_advertised_head(&mut self, replica: u8, op: u64) {
        if (replica as usize) < REPLICAS_MAX {
            let peer = &mut self.peers[replica as usize];
            peer.op = peer.op.max(op);
        }
    }

    /// Records a peer's advertised checkpoint and head (from a ping or a commit heartbeat).
    pub(super) fn peer_advertised(
        &mut self,
        replica: u8,
        op: u64,
        checkpoint: CheckpointName,
        checkpoint_previous: Option<CheckpointName>,
    ) {
        let peer = &mut self.peers[replica as usize];
        // Messages may arrive out of order: an older checkpoint never replaces a newer one,
        // except none at all. A replica advertises none only before its first checkpoint or
        // after `vsr recover` re-created its data file: it must stop counting as a holder of its
        // old checkpoint (a late old message only makes us wait for its next ping).
        if checkpoint.op >= peer.checkpoint_op || checkpoint.op == 0 {
            let previous = checkpoint_previous.unwrap_or_default();
            peer.checkpoint_op = checkpoint.op;
            peer.checkpoint_id = checkpoint.id;
            peer.previous_op = previous.op;
            peer.previous_id = previous.id;
        }
        peer.op = peer.op.max(op);
        // A checkpoint held back until the durable one is held by a quorum may start now.
        if self.checkpoint_due() && self.checkpoint_durable_on_quorum() {
            self.checkpoint_maybe_start();
            self.commit_journal();
        }
    }

    /// Called on the repair timeout: start a sync if one is needed, or push one along.
    pub(super) fn sync_tick(&mut self) {
        if self.sync.is_some() {
            self.sync_request_chunks(true, true);
            return;
        }
        if self.status == Status::Recovering
            || self.checkpoint_write.is_some()
            || self.checkpoint_load.is_some()
            || self.sync_writes_in_flight > 0
            || self.replica_count == 1
        {
            return;
        }
        let slot_count = self.journal.slot_count();
        let durable = self.checkpoint();
        // The next op to commit is gone from a peer's journal: repair cannot supply it.
        let overwritten = (0..self.replica_count).any(|r| {
            r != self.replica
                && self.peers[r as usize].op >= self.commit_min + 1 + slot_count
                && self.peers[r as usize].checkpoint_op > self.commit_min
        });
        // A view's log does not fit our journal: only a checkpoint that covers all but its
        // newest `slot_count` ops makes room (our own next one may, when we commit that far).
        let room_wanted = self.sync_head_wanted > self.op_limit();
        if !self.state_lost && !overwritten && !room_wanted {
            return;
        }
        let mut floor = if self.state_lost {
            durable.op.max(1)
        } else {
            self.commit_min + 1
        };
        if room_wanted {
            floor = floor.max(self.sync_head_wanted - slot_count);
        }
        let Some((op, id)) = self.sync_target(floor) else {
            return;
        };
        self.sync_start(op, id);
    }

    /// The checkpoint to sync to, at `floor` or above: the newest that a replication quorum
    /// holds (as `sync_sources` counts them), since the fault model keeps each of its chunks
    /// intact on one of them; else the newest any peer advertises. A checkpoint only the
    /// furthest replica wrote may be damaged there with no other copy, and a sync to it would
    /// never finish; the quorum's is never overwritten before a newer one reaches a quorum
    /// (`checkpoint_durable_on_quorum`). After a sync is abandoned the next one tries the other
    /// choice first: some of the quorum's holders may be down with the only intact copy of a
    /// chunk, while the newest is whole.
    fn sync_target(&self, floor: u64) -> Option<(u64, u128)> {
        let mut newest: Option<(u64, u128)> = None;
        let mut newest_on_quorum: Option<(u64, u128)> = None;
        for r in (0..self.replica_count).filter(|&r| r != self.replica) {
            let peer = self.peers[r as usize];
            for (op, id) in [
                (peer.checkpoint_op, peer.checkpoint_id),
                (peer.previous_op, peer.previous_id),
            ] {
                if op < floor || op == 0 || id == 0 {
                    continue;
                }
                if newest.is_none_or(|(o, _)| op > o) {
                    newest = Some((op, id));
                }
                if self.sync_sources(op, id).reached(self.quorum_replication)
                    && newest_on_quorum.is_none_or(|(o, _)| op > o)
                {
                    newest_on_quorum = Some((op, id));
                }
            }
        }
        let choices = [newest_on_quorum, newest];
        let first = choices.into_iter().flatten().next();
        choices
            .into_iter()
            .flatten()
            .find(|&choice| Some(choice) != self.sync_abandoned)
            .or(first)
    }

    fn sync_start(&mut self, op: u64, id: u128) {
        // No write of an abandoned sync may land in the area this one fills (docs/storage.md).
        assert_eq!(self.sync_writes_in_flight, 0);
        let durable = self.checkpoint();
        let area = if durable.op == 0 { 0 } else { 1 - durable.area };
        self.event(format_args!(
            "state sync: fetching checkpoint op={op} from peers (committed here: op {})",
            self.commit_min
        ));
        self.log(format_args!("sync target id={id:x} area={area}"));
        self.sync_generation = (self.sync_generation + 1) % (1 << 24);
        // The chunks go into the area of our previous checkpoint: stop serving it.
        self.checkpoint_previous = None;
        self.stats.syncs_started += 1;
        self.sync = Some(SyncProgress {
            op,
            id,
            area,
            identity: None,
            received: Vec::new(),
            durable: Vec::new(),
            checksums: Vec::new(),
            durable_count: 0,
            next_request: 0,
            idle_rounds: 0,
            recorded: false,
            arrived_tick: self.ticks,
            retried_tick: self.ticks,
            started: self.time.monotonic(),
        });
        self.sync_request_chunks(false, false);
    }

    /// Every tick: if no chunk arrived for a while, ask again for the outstanding ones.
    pub(super) fn sync_retry_soon(&mut self) {
        let ticks = self.ticks;
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        if sync.recorded
            || ticks - sync.arrived_tick < SYNC_RETRY_TICKS
            || ticks - sync.retried_tick < SYNC_RETRY_TICKS
        {
            return;
        }
        sync.retried_tick = ticks;
        self.sync_request_chunks(true, false);
    }

    pub(super) fn sync_abort(&mut self, reason: &str) {
        self.event(format_args!("state sync abandoned: {reason}"));
        if let Some(sync) = self.sync.take() {
            self.sync_abandoned = Some((sync.op, sync.id));
        }
        self.stats.syncs_aborted += 1;
    }

    /// Peers that advertise the target checkpoint as their newest or the one before; and this
    /// replica itself when the target is its own durable checkpoint, which failed to load: its
    /// intact chunks count as much as a peer's (every replica may hold some chunks damaged, and
    /// between them a whole copy).
    fn sync_sources(&self, op: u64, id: u128) -> ReplicaSet {
        let durable = self.checkpoint();
        let mut sources = if durable.op == op && durable.id == id && op > 0 {
            ReplicaSet::single(self.replica)
        } else {
            ReplicaSet::EMPTY
        };
        for r in 0..self.replica_count {
            let p = self.peers[r as usize];
            let newest = p.checkpoint_op == op && p.checkpoint_id == id;
            let previous = p.previous_op == op && p.previous_id == id;
            if r != self.replica && (newest || previous) {
                sources.insert(r);
            }
        }
        sources
    }

    /// Asks for chunks: the first one until the size is known, then a window of the lowest
    /// chunks not yet received. `retry` re-asks for outstanding ones; `idle` counts the round
    /// towards giving up (the repair timeout).
    fn sync_request_chunks(&mut self, retry: bool, idle: bool) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        if sync.recorded {
            return;
        }
        if idle {
            sync.idle_rounds += 1;
        }
        let (op, id, idle_rounds) = (sync.op, sync.id, sync.idle_rounds);
        let sources = self.sync_sources(op, id);
        if sources == ReplicaSet::EMPTY {
            // The peers moved on (their next checkpoint overwrote this one's area).
            self.sync_abort("no peer serves the target any more");
            return;
        }
        if idle_rounds > 8 {
            // The sources went silent, or none holds an intact copy of the chunks still missing.
            self.sync_abort("no chunk arrived for 8 repair timeouts");
            return;
        }
        let sync = self.sync.as_mut().unwrap();
        let mut wanted: [u32; SYNC_WINDOW as usize] = [0; SYNC_WINDOW as usize];
        let mut count = 0;
        match sync.identity {
            None => {
                wanted[0] = 0;
                count = 1;
            }
            Some(identity) => {
                let mut outstanding = 0;
                for index in 0..sync.next_request {
                    if !sync.received[index as usize] {
                        outstanding += 1;
                        if retry && count < SYNC_WINDOW as usize {
                            wanted[count] = index;
                            count += 1;
                        }
                    }
                }
                let mut room = SYNC_WINDOW.saturating_sub(outstanding);
                while room > 0 && sync.next_request < identity.chunks && count < wanted.len() {
                    if !sync.received[sync.next_request as usize] {
                        wanted[count] = sync.next_request;
                        count += 1;
                        room -= 1;
                    }
                    sync.next_request += 1;
                }
            }
        }
        for &index in &wanted[..count] {
            let peer = self.sync_next_source(sources);
            let request = RequestCheckpointChunk {
                view: self.view,
                replica: self.replica,
                op,
                checkpoint_id: id,
                index: index as u64,
            };
            if peer == self.replica {
                // From our own copy: read, verify, and take it as if a peer had sent it.
                self.on_request_checkpoint_chunk(&request);
            } else {
                self.send_header_to_replica(peer, request.to_header(self.cluster));
            }
        }
    }

    fn sync_next_source(&mut self, sources: ReplicaSet) -> u8 {
        loop {
            self.repair_peer = (self.repair_peer + 1) % self.replica_count;
            if sources.contains(self.repair_peer) {
                return self.repair_peer;
            }
        }
    }

    /// The checkpoint `(op, id)` if we can serve it: our durable one, or (`previous`) the one
    /// before while its area is intact.
    fn servable_checkpoint(&self, op: u64, id: u128) -> Option<(CheckpointRef, bool)> {
        let durable = self.checkpoint();
        if durable.op == op && durable.id == id && op > 0 {
            return Some((durable, false));
        }
        self.checkpoint_previous
            .filter(|p| p.op == op && p.id == id && op > 0)
            .map(|p| (p, true))
    }

    /// A peer asks for a chunk of our durable checkpoint (or the one before): read and send it.
    pub(super) fn on_request_checkpoint_chunk(&mut self, request: &RequestCheckpointChunk) {
        // From a peer, or from this replica itself (a sync reading its own intact chunks).
        assert!(self.status != Status::Recovering && request.replica < self.replica_count);
        let index = request.index;
        let Some((durable, previous)) = self.servable_checkpoint(request.op, request.checkpoint_id)
        else {
            return;
        };
        if self.status == Status::Recovering
            || index >= durable.chunks as u64
            || self.sync_serving >= SYNC_SERVE_MAX
        {
            return;
        }
        let Some(buffer) = self.checkpoint_pool.get() else {
            return;
        };
        self.sync_serving += 1;
        let len = chunk_len(durable.size, self.config.message_size_max, index as u32);
        self.storage.submit(IoRequest {
            kind: IoKind::Read,
            zone: Zone::Checkpoint,
            offset: self
                .storage
                .layout()
                .checkpoint_block_offset(durable.area, index as u32),
            len: (HEADER_SIZE + len).next_multiple_of(crate::config::SECTOR_SIZE),
            buffer,
            token: Token::new(
                Purpose::SyncChunkRead {
                    to: request.replica,
                    previous,
                },
                index as u32,
            )
            .encode(),
        });
    }

    pub(super) fn on_sync_chunk_read(
        &mut self,
        to: u8,
        previous: bool,
        index: u32,
        completion: IoCompletion,
    ) {
        self.sync_serving -= 1;
        let durable = if !previous {
            self.checkpoint()
        } else {
            match self.checkpoint_previous {
                Some(checkpoint) => checkpoint,
                None => return,
            }
        };
        let mut message = completion.buffer;
        let h = *message.header();
        let identity = ChunkIdentity {
            cluster: self.cluster,
            op: durable.op,
            size: durable.size,
            chunks: durable.chunks,
            digest: durable.digest,
        };
        let intact = h.valid_checksum()
            && (h.size as usize) >= HEADER_SIZE
            && (h.size as usize) <= self.config.message_size_max as usize
            && h.valid_checksum_body(message.body())
            && durable.op > 0
            && index < durable.chunks
            && identity.matches(&h, index, self.config.message_size_max);
        if !intact {
            // Our copy is damaged (or a newer checkpoint replaced it meanwhile): the requester
            // asks another peer.
            self.log(format_args!("sync serve: chunk {index} unreadable here"));
            return;
        }
        // The chunk travels with the checkpoint id its header on disk lacks.
        let header = message.header_mut();
        let mut chunk = CheckpointChunk::from_header(header);
        chunk.checkpoint_id = durable.id;
        chunk.write(header);
        header.set_checksum();
        if to == self.replica {
            self.on_checkpoint_chunk(message);
        } else if (to as usize) < REPLICAS_MAX {
            self.bus.send_to_replica(to, &message);
        }
    }

    /// A chunk of the checkpoint we are syncing to.
    pub(super) fn on_checkpoint_chunk(&mut self, message: Message) {
        self.assert_received(&message, Command::CheckpointChunk);
        let h = *message.header();
        let chunk = CheckpointChunk::from_header(&h);
        let message_size_max = self.config.message_size_max;
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        if sync.recorded || chunk.op != sync.op || chunk.checkpoint_id != sync.id {
            return;
        }
        if sync.identity.is_none() {
            let identity = ChunkIdentity {
                cluster: self.cluster,
                op: chunk.op,
                size: chunk.size_bytes,
                chunks: chunk.count as u32,
                digest: chunk.digest,
            };
            // In u64: a size field too large for any chunk count must be refused, not panic.
            let payload = chunk_payload(message_size_max) as u64;
            if chunk.count > u32::MAX as u64
                || identity.size.div_ceil(payload).max(1) != chunk.count
            {
                return;
            }
            let chunks = identity.chunks as usize;
            sync.identity = Some(identity);
            sync.received = vec![false; chunks];
            sync.durable = vec![false; chunks];
            sync.checksums = vec![0; chunks];
        }
        let identity = sync.identity.unwrap();
        let index = chunk.index as u32;
        if chunk.index >= identity.chunks as u64
            || !identity.matches(&h, index, message_size_max)
            || sync.received[index as usize]
        {
            return;
        }
        sync.received[index as usize] = true;
        sync.checksums[index as usize] = h.checksum_body;
        sync.idle_rounds = 0;
        sync.arrived_tick = self.ticks;
        let area = sync.area;
        self.stats.sync_chunks += 1;
        // On disk a chunk does not name the checkpoint id (it is known only once every chunk
        // is): store it exactly as its writer did.
        let mut block = if message.is_unique() {
            message
        } else {
            let Some(mut copy) = self.checkpoint_pool.get() else {
                self.sync.as_mut().unwrap().received[index as usize] = false;
                return;
            };
            copy.buffer_mut()[..h.size as usize].copy_from_slice(message.bytes());
            copy
        };
        let header = block.header_mut();
        let mut chunk = CheckpointChunk::from_header(header);
        chunk.checkpoint_id = 0;
        chunk.write(header);
        header.set_checksum();
        self.sync_writes_in_flight += 1;
        self.storage.submit(IoRequest {
            kind: IoKind::Write,
            zone: Zone::Checkpoint,
            offset: self.storage.layout().checkpoint_block_offset(area, index),
            len: block.size_sectors(),
            buffer: block,
            token: Token::new(
                Purpose::SyncChunkWrite {
                    sync_generation: self.sync_generation,
                },
                index,
            )
            .encode(),
        });
        self.sync_request_chunks(false, false);
    }

    pub(super) fn on_sync_chunk_written(&mut self, sync_generation: u32, index: u32) {
        assert!(self.sync_writes_in_flight > 0);
        self.sync_writes_in_flight -= 1;
        if sync_generation != self.sync_generation {
            // An abandoned sync's write: once none is left, a checkpoint held back may start.
            if self.sync_writes_in_flight == 0
                && self.sync.is_none()
                && self.checkpoint_due()
                && self.checkpoint_durable_on_quorum()
            {
                self.checkpoint_maybe_start();
                self.commit_journal();
            }
            return;
        }
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        let index = index as usize;
        if sync.durable[index] {
            return;
        }
        sync.durable[index] = true;
        sync.durable_count += 1;
        let identity = sync.identity.unwrap();
        let (done, total, started) = (sync.durable_count, identity.chunks, sync.started);
        if total >= 16 && done % (total / 8) == 0 && done < total {
            self.event(format_args!(
                "state sync: {done}/{total} chunks, {} ms",
                self.ms_since(started)
            ));
        }
        let sync = self.sync.as_mut().unwrap();
        if sync.durable_count < identity.chunks {
            return;
        }
        if checkpoint_id(&sync.checksums) != sync.id {
            self.sync_abort("chunks do not add up to the advertised id");
            return;
        }
        sync.recorded = true;
        let checkpoint = CheckpointRef {
            op: sync.op,
            id: sync.id,
            size: identity.size,
            chunks: identity.chunks,
            area: sync.area,
            digest: identity.digest,
        };
        self.log(format_args!(
            "sync: all chunks durable, recording {checkpoint:?}"
        ));
        self.checkpoint_record(checkpoint);
    }

    pub(super) fn sync_on_superblock_durable(&mut self) {
        let durable = self.checkpoint();
        let Some(sync) = self.sync.as_ref() else {
            return;
        };
        if sync.recorded
            && durable.op == sync.op
            && durable.id == sync.id
            && self.checkpoint_load.is_none()
        {
            self.checkpoint_load_start(durable, AfterLoad::Sync);
        }
    }

    /// The synced checkpoint is loaded: the state is at its op; commits resume from there.
    pub(super) fn sync_finish(&mut self, checkpoint: CheckpointRef) {
        let sync = self.sync.take().expect("sync in progress");
        self.event(format_args!(
            "state sync done: checkpoint op={} ({} bytes) installed in {} ms",
            checkpoint.op,
            checkpoint.size,
            self.ms_since(sync.started)
        ));
        self.stats.syncs_completed += 1;
        self.sync_abandoned = None;
        // Headers between our old commit point and the checkpoint were never committed here and
        // may be stale (from a view that lost): forget them rather than serve them.
        for op in self.commit_min + 1..=checkpoint.op {
            self.journal.remove(op);
        }
        assert!(
            checkpoint.op >= self.commit_min,
            "a sync only moves the state forward"
        );
        self.commit_min = checkpoint.op;
        self.commit_max = self.commit_max.max(checkpoint.op);
        if self.op < checkpoint.op {
            self.op = checkpoint.op;
        }
        assert!(self.commit_min <= self.commit_max && self.commit_min <= self.op);
        self.log(format_args!("sync done: op={}", checkpoint.op));
        self.rejoin_maybe_done();
        self.emit(Event::CheckpointDurable {
            op: checkpoint.op,
            id: checkpoint.id,
            synced: true,
        });
        self.commit_journal();
        self.repair();
        self.start_view_deferred_retry();
    }
}
