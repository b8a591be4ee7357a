//! Normal operation: request -> prepare -> prepare_ok -> commit -> reply.

use super::{Event, PipelineEntry, Replica, ReplicaSet, Status};
use crate::bus::MessageBus;
use crate::header::commands::{
    Commit, Eviction, Prepare, PrepareOk, Reply, Request, REGISTER_REPLY_SIZE,
};
use crate::header::{Command, Header, Operation, HEADER_SIZE};
use crate::journal::ReadPurpose;
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::storage::{IoKind, IoRequest, Storage, Zone};
use crate::time::Time;

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    // ---- Requests (primary) -----------------------------------------------------------------

    pub(super) fn on_request(&mut self, message: Message) {
        self.assert_received(&message, Command::Request);
        self.stats.requests += 1;
        if self.status != Status::Normal {
            return;
        }
        if self.is_backup() {
            // The client's idea of the primary is stale: forward.
            let primary = self.primary_index(self.view);
            self.bus.send_to_replica(primary, &message);
            return;
        }
        // Until the new primary has applied everything committed, its client table is stale and
        // it could execute a retried request a second time.
        if self.commit_min < self.commit_max {
            return;
        }
        let header = *message.header();
        if !self.request_acceptable(&header, &message) {
            return;
        }
        let client = Request::from_header(&header).client;
        if self.pipeline.len() >= self.config.pipeline_max as usize {
            if self.request_queue.len() < self.config.clients_max as usize
                && !self
                    .request_queue
                    .iter()
                    .any(|(m, _)| Request::from_header(m.header()).client == client)
            {
                let received_ns = self.time.monotonic();
                self.request_queue.push_back((message, received_ns));
            }
            return;
        }
        if self
            .clock
            .realtime_synchronized(self.time.monotonic(), self.time.realtime())
            .is_none()
        {
            self.log(format_args!("request dropped: clock unsynchronized"));
            return;
        }
        let received_ns = self.time.monotonic();
        self.primary_prepare(message, received_ns);
    }

    /// The client-session checks: evicted sessions, duplicates, and the request hash chain.
    fn request_acceptable(&mut self, header: &Header, message: &Message) -> bool {
        let request = Request::from_header(header);
        let in_pipeline = self
            .pipeline
            .iter()
            .any(|e| Prepare::from_header(&e.header).client == request.client)
            || self
                .request_queue
                .iter()
                .any(|(m, _)| Request::from_header(m.header()).client == request.client);
        if in_pipeline {
            return false;
        }
        if request.operation == Operation::Register as u8 {
            if let Some(entry) = self.clients.get(request.client) {
                if entry.request == 0 {
                    let reply = entry.reply.clone();
                    self.bus.send_to_client(request.client, &reply);
                }
                return false;
            }
            return true;
        }
        if !self
            .state_machine
            .input_valid(request.operation, message.body())
        {
            return false;
        }
        let Some(entry) = self.clients.get(request.client) else {
            self.send_eviction(request.client);
            return false;
        };
        if entry.session != request.session {
            self.send_eviction(request.client);
            return false;
        }
        if request.request <= entry.request {
            let last_reply = Reply::from_header(entry.reply.header());
            if request.request == entry.request && last_reply.request_checksum == header.checksum {
                let reply = entry.reply.clone();
                self.bus.send_to_client(request.client, &reply);
            }
            return false;
        }
        request.request == entry.request + 1
            && request.previous_reply_checksum == entry.reply.header().checksum
    }

    pub(super) fn send_eviction(&mut self, client: u128) {
        let eviction = Eviction {
            view: self.view,
            replica: self.replica,
            client,
        };
        self.stats.evictions += 1;
        self.send_header_to_client(client, eviction.to_header(self.cluster));
    }

    /// Turns the request into a prepare in the same buffer, journals and replicates it.
    fn primary_prepare(&mut self, mut message: Message, received_ns: u64) {
        assert!(self.is_primary() && self.status == Status::Normal);
        assert!(self.pipeline.len() < self.config.pipeline_max as usize);
        let request_checksum = message.header().checksum;
        let request = Request::from_header(message.header());
        let Some(realtime) = self
            .clock
            .realtime_synchronized(self.time.monotonic(), self.time.realtime())
        else {
            return;
        };
        let op = self.op + 1;
        if op > self.op_limit() {
            self.log(format_args!("journal full at op {op}: request dropped"));
            return;
        }
        let parent = self
            .journal
            .header(self.op)
            .expect("primary has its head")
            .checksum;
        let timestamps = if request.operation == Operation::Register as u8 {
            1
        } else {
            // At least one, so timestamps strictly increase even for an empty batch.
            self.state_machine
                .prepare_timestamps(request.operation, message.body())
                .max(1)
        };
        self.prepare_timestamp = (self.prepare_timestamp + timestamps).max(realtime.max(0) as u64);
        if !message.is_unique() {
            let Some(copy) = self.copy_message(&message) else {
                return;
            };
            message = copy;
        }
        let prepare = Prepare {
            view: self.view,
            replica: self.replica,
            op,
            commit_max: self.commit_max,
            timestamp_ns: self.prepare_timestamp,
            parent,
            request_checksum,
            client: request.client,
            session: request.session,
            request: request.request,
            operation: request.operation,
        };
        // In place: the request's size, body checksum and cluster stay the prepare's.
        let header = message.header_mut();
        prepare.write(header);
        header.set_checksum();
        let header = *header;
        assert_eq!(
            header.invalid(self.config.message_size_max as usize),
            None,
            "{header:?}"
        );
        self.log(format_args!("prepare {header:?}"));
        assert!(self.status == Status::Normal && self.is_primary());
        assert_eq!(op, self.op + 1);
        assert!(op <= self.commit_max + self.config.pipeline_max as u64);
        self.op = op;
        self.stats.prepares += 1;
        self.journal.set_header(&header);
        self.journal.write_prepare(&mut self.storage, &message);
        self.pipeline.push_back(PipelineEntry {
            header,
            message: Some(message.clone()),
            ok_from: ReplicaSet::EMPTY,
            received_ns,
            prepared_ns: self.time.monotonic(),
        });
        self.replicate(&message);
        if !self.timeouts.prepare.ticking {
            self.timeouts.prepare.start();
        }
    }

    fn copy_message(&mut self, message: &Message) -> Option<Message> {
        let mut copy = self.pool.get()?;
        let size = message.header().size as usize;
        copy.buffer_mut()[..size].copy_from_slice(message.bytes());
        Some(copy)
    }

    /// Replication along the ring: each replica forwards to the next, stopping before the primary.
    /// A next replica not heard from for two ping intervals is presumed down: the prepare goes to
    /// it and on to the one after, so one replica down does not leave the rest of the ring
    /// waiting for the primary's prepare timeout on every op.
    fn replicate(&mut self, message: &Message) {
        let header = message.header();
        assert_eq!(header.command, Command::Prepare as u8);
        if header.view != self.view || self.status != Status::Normal {
            return;
        }
        let primary = self.primary_index(header.view);
        let mut next = (self.replica + 1) % self.replica_count;
        while next != primary && next != self.replica {
            self.bus.send_to_replica(next, message);
            if !self.presumed_down(next) {
                break;
            }
            next = (next + 1) % self.replica_count;
        }
    }

    fn presumed_down(&self, replica: u8) -> bool {
        self.ticks.saturating_sub(self.last_heard[replica as usize])
            > 2 * self.config.ping_timeout_ticks
    }

    // ---- Prepares (backup) --------------------------------------------------------------------

    pub(super) fn on_prepare(&mut self, message: Message) {
        self.assert_received(&message, Command::Prepare);
        let header = *message.header();
        if header.view > self.view {
            if header.replica == self.primary_index(header.view) {
                self.jump_to_view(header.view);
            }
            return;
        }
        if self.status == Status::Normal
            && header.view == self.view
            && self.is_backup()
            && header.replica == self.primary_index(self.view)
        {
            self.timeouts.normal_status.reset();
            self.on_prepare_from_primary(message);
            return;
        }
        // Anything else is a repair: accepted only if it is exactly the prepare we lack.
        self.on_repair_prepare(message);
    }

    fn on_prepare_from_primary(&mut self, message: Message) {
        let header = *message.header();
        assert!(header.op > 0);
        self.commit_max_advance(Prepare::from_header(&header).commit_max);
        if header.op > self.commit_min && !self.journal.has_clean(header.op, header.checksum) {
            // Forward first: the ring's latency is what commits wait for. Also when our head
            // is already past this op (its header came by repair): the next replica still
            // needs the prepare from us.
            self.replicate(&message);
        }
        if header.op > self.op {
            if header.op > self.op_limit() {
                // Our checkpoint is behind: this op would overwrite one a restart replays.
                return;
            }
            for op in self.op + 1..header.op {
                self.journal.remove(op);
            }
            assert!(header.view == self.view && self.log_view == self.view);
            self.op = header.op;
        } else if self.journal.has_clean(header.op, header.checksum) {
            // The primary resent it: our prepare_ok was lost.
            self.send_prepare_ok(header.op, header.checksum);
            return;
        } else if header.op <= self.commit_min || !self.op_fits_journal(header.op) {
            // Committed here already (a late copy, or a repair answer meant for a peer), or a
            // journal's length or more below our head (a repair answer that arrived after the
            // head moved on): the slot may hold a newer op that must not be overwritten (VOPR
            // seed 306026458382209393: op 405 written over the head 470, whose prepare_ok then
            // went out while the disk held 405).
            return;
        }
        self.log(format_args!("on_prepare {header:?}"));
        self.journal.set_header(&header);
        self.cache_prepare(&message);
        self.journal.write_prepare(&mut self.storage, &message);
        self.commit_journal();
    }

    pub(super) fn cache_prepare(&mut self, message: &Message) {
        let index = (message.header().op % self.prepare_cache.len() as u64) as usize;
        self.prepare_cache[index] = Some(message.clone());
    }

    /// The prepare `op`/`checksum` if it is in memory (pipeline or recent prepares).
    pub(super) fn cached_prepare(&self, op: u64, checksum: u128) -> Option<Message> {
        if let Some(entry) = self
            .pipeline
            .iter()
            .find(|e| e.header.op == op && e.header.checksum == checksum)
        {
            if let Some(m) = &entry.message {
                return Some(m.clone());
            }
        }
        let index = (op % self.prepare_cache.len() as u64) as usize;
        self.prepare_cache[index]
            .as_ref()
            .filter(|m| m.header().op == op && m.header().checksum == checksum)
            .cloned()
    }

    /// The journal made a prepare durable: acknowledge it (backup) or count our own ack (primary).
    pub(super) fn on_prepare_durable(&mut self, op: u64, checksum: u128) {
        if self.status != Status::Normal
            || op > self.op
            || op <= self.commit_max.min(self.op) && self.is_primary()
        {
            self.commit_journal();
            return;
        }
        if self.is_primary() {
            self.on_prepare_ok_from(self.replica, op, checksum);
        } else {
            self.send_prepare_ok(op, checksum);
        }
        self.commit_journal();
    }

    pub(super) fn send_prepare_ok(&mut self, op: u64, checksum: u128) {
        assert!(self.status == Status::Normal && self.is_backup());
        // The root is committed by definition: nobody waits for it, and an acknowledgement of it
        // promises nothing (a repair answer or a replayed packet can bring it back here).
        if op == 0 {
            return;
        }
        let Some(header) = self.journal.header(op).copied() else {
            return;
        };
        if header.checksum != checksum || !self.journal.acknowledgeable(op, checksum) {
            return;
        }
        // Only ops of this view's log (`in_view_log`). Below a start_view's window the journal
        // may still hold an op of an older view (repaired down the chain later); a resent or
        // replayed copy of that prepare must not be acknowledged in this view, whose log may
        // hold another prepare there (VOPR seed 2648725024586690011: a backup acknowledged view
        // 2's op 75 in view 4, whose op 75 was another).
        if !self.in_view_log(&header) {
            return;
        }
        // Only ops the primary may still wait for.
        if op <= self.commit_max && op + self.config.pipeline_max as u64 <= self.commit_max {
            return;
        }
        // The promise a prepare_ok makes (5.4): the prepare and its ring entry are durable (not
        // dirty), in a view this replica has durably started, so no crash can take it back.
        assert_eq!(self.durable_state().log_view, self.view);
        assert!(self.journal.acknowledgeable(op, checksum));
        let prepare = Prepare::from_header(&header);
        let ok = PrepareOk {
            view: self.view,
            replica: self.replica,
            op,
            prepare_checksum: checksum,
            prepare_parent: prepare.parent,
            prepare_commit_max: prepare.commit_max,
            prepare_timestamp_ns: prepare.timestamp_ns,
        };
        assert!(op > 0);
        self.emit(Event::PrepareAcknowledged {
            view: self.view,
            op,
            checksum,
        });
        let primary = self.primary_index(self.view);
        self.send_header_to_replica(primary, ok.to_header(self.cluster));
    }

    // ---- Prepare oks and commits (primary) ------------------------------------------------------

    pub(super) fn on_prepare_ok(&mut self, ok: &PrepareOk) {
        self.assert_from_peer(ok.replica);
        if self.status != Status::Normal || ok.view != self.view || !self.is_primary() {
            return;
        }
        self.on_prepare_ok_from(ok.replica, ok.op, ok.prepare_checksum);
    }

    fn on_prepare_ok_from(&mut self, replica: u8, op: u64, checksum: u128) {
        assert!(self.status == Status::Normal && self.is_primary());
        assert!(replica < self.replica_count);
        let Some(entry) = self.pipeline.iter_mut().find(|e| e.header.op == op) else {
            return;
        };
        if entry.header.checksum != checksum {
            return;
        }
        entry.ok_from.insert(replica);
        if replica == self.replica {
            self.emit(Event::PrepareAcknowledged {
                view: self.view,
                op,
                checksum,
            });
        }
        self.commit_pipeline();
    }

    /// Commits the pipeline head while it has a replication quorum.
    pub(super) fn commit_pipeline(&mut self) {
        while let Some(head) = self
            .pipeline
            .iter()
            .find(|e| e.header.op == self.commit_max + 1)
        {
            if !head.ok_from.reached(self.quorum_replication) {
                break;
            }
            self.commit_max = head.header.op;
        }
        assert!(self.commit_max <= self.op);
        self.commit_journal();
        if self.pipeline.is_empty() {
            self.timeouts.prepare.stop();
        }
    }

    pub(super) fn on_commit_timeout(&mut self) {
        if self.status != Status::Normal || !self.is_primary() {
            return;
        }
        let abdicating = self.abdicating();
        self.quorum_warn(abdicating);
        if abdicating {
            self.log(format_args!(
                "abdicating: no replication quorum heard recently"
            ));
            return;
        }
        if !self.state_available() || self.sync.is_some() {
            // A primary without a state cannot commit: let the backups elect one that can.
            return;
        }
        let (checkpoint, checkpoint_previous) = self.advertised_checkpoints();
        let commit = Commit {
            view: self.view,
            replica: self.replica,
            op: self.op,
            commit_max: self.commit_max,
            commit_max_checksum: self
                .journal
                .header(self.commit_max)
                .map(|h| h.checksum)
                .unwrap_or(0),
            monotonic_sent_ns: self.time.monotonic(),
            checkpoint,
            checkpoint_previous,
        };
        self.send_header_to_other_replicas(commit.to_header(self.cluster));
    }

    /// Tells the operator, once a view, that this primary hears no replication quorum (it can
    /// commit nothing), and when it hears one again.
    fn quorum_warn(&mut self, abdicating: bool) {
        assert!(self.status == Status::Normal && self.is_primary());
        let warned = self.quorum_lost_warned == Some(self.view);
        if abdicating && !warned {
            self.quorum_lost_warned = Some(self.view);
            let heard = self.peers_heard();
            self.warn(format_args!(
                "primary of view {} hears {heard} of its {} peers and a commit needs {}: it \
                 commits nothing until more are reachable (check that they run and that the \
                 network between them is up)",
                self.view,
                self.replica_count - 1,
                self.quorum_replication - 1
            ));
        } else if !abdicating && warned {
            self.quorum_lost_warned = None;
            self.event(format_args!(
                "primary of view {} hears a replication quorum again",
                self.view
            ));
        }
    }

    /// The primary stops its heartbeats when it has not heard from a replication quorum within
    /// `primary_abdicate_timeout`, so backups that can still hear it (but it cannot hear them)
    /// elect a primary that can make progress.
    fn abdicating(&self) -> bool {
        // Ourselves and the peers heard.
        1 + self.peers_heard() < self.quorum_replication
    }

    /// Peers heard from within `primary_abdicate_timeout`.
    /// Bit `r` set for this replica and each peer heard from in its view within the primary's
    /// abdication timeout (what a primary counts toward a replication quorum).
    pub(super) fn peers_heard_mask(&self) -> u8 {
        (0..self.replica_count)
            .filter(|&r| {
                r == self.replica
                    || self.ticks - self.last_heard[r as usize]
                        <= self.config.primary_abdicate_timeout_ticks
            })
            .fold(0, |mask, r| mask | 1 << r)
    }

    fn peers_heard(&self) -> usize {
        self.peers_heard_mask().count_ones() as usize - 1
    }

    pub(super) fn on_commit(&mut self, commit: &Commit) {
        self.assert_from_peer(commit.replica);
        if commit.view > self.view {
            if commit.replica == self.primary_index(commit.view) {
                self.jump_to_view(commit.view);
            }
            return;
        }
        if self.status != Status::Normal || commit.view < self.view || self.is_primary() {
            return;
        }
        if commit.replica != self.primary_index(self.view) {
            return;
        }
        let (checkpoint, previous) = (commit.checkpoint, commit.checkpoint_previous);
        self.peer_advertised(commit.replica, commit.op, checkpoint, previous);
        self.timeouts.normal_status.reset();
        if let Some(h) = self.journal.header(commit.commit_max) {
            let checksum = commit.commit_max_checksum;
            if h.checksum != checksum && checksum != 0 {
                // Our header at the commit point is stale: the primary's is canonical.
                let op = commit.commit_max;
                assert!(
                    op > self.commit_min,
                    "committed op {op} differs from the primary's"
                );
                self.journal.remove(op);
            }
        }
        self.commit_max_advance(commit.commit_max);
        self.commit_journal();
    }

    /// The cluster's commit point only moves forward.
    pub(super) fn commit_max_advance(&mut self, commit: u64) {
        if commit > self.commit_max {
            self.commit_max = commit;
        }
        assert!(self.commit_max >= commit);
    }

    pub(super) fn on_prepare_timeout(&mut self) {
        if self.status != Status::Normal || !self.is_primary() || self.pipeline.is_empty() {
            self.timeouts.prepare.stop();
            return;
        }
        self.timeouts.prepare.backoff(&mut self.prng);
        if self.abdicating() {
            // Resends would keep backups from timing out the primary it cannot hear from.
            return;
        }
        // Resend the oldest unacknowledged prepare directly to each replica that lacks it.
        let Some(entry) = self.pipeline.front() else {
            return;
        };
        let header = entry.header;
        let ok_from = entry.ok_from;
        self.stats.prepares_resent += 1;
        self.log(format_args!(
            "prepare timeout: op={} ok_from={ok_from:?}",
            header.op
        ));
        let Some(message) = self.cached_prepare(header.op, header.checksum) else {
            self.journal.read_prepare(
                &mut self.storage,
                &self.pool,
                header.op,
                header.checksum,
                ReadPurpose::Pipeline,
            );
            return;
        };
        for replica in 0..self.replica_count {
            if replica != self.replica && !ok_from.contains(replica) {
                self.bus.send_to_replica(replica, &message);
            }
        }
    }

    // ---- Committing ---------------------------------------------------------------------------

    /// Applies committed ops in order, as far as their prepares are at hand and their headers are
    /// proven canonical by the hash chain.
    pub(super) fn commit_journal(&mut self) {
        if self.status == Status::Recovering
            || self.commit_reading.is_some()
            || self.view_change.start_view_install_pending
        {
            return;
        }
        while self.commit_min < self.commit_max.min(self.op) && !self.commits_paused() {
            let op = self.commit_min + 1;
            if self.chain_floor() > op {
                self.log(format_args!(
                    "commit waits: chain floor {} > {op}",
                    self.chain_floor()
                ));
                break;
            }
            let Some(header) = self.journal.header(op).copied() else {
                break;
            };
            if let Some(message) = self.cached_prepare(op, header.checksum) {
                self.commit_op(&message);
                continue;
            }
            if self.journal.has_clean(op, header.checksum)
                && self.journal.read_prepare(
                    &mut self.storage,
                    &self.pool,
                    op,
                    header.checksum,
                    ReadPurpose::Commit,
                )
            {
                self.commit_reading = Some(op);
            }
            break;
        }
        self.primary_pipeline_drain();
    }

    /// Whether `header` (held in the journal) is an op of this view's log: prepared in this view
    /// (by its only primary), or one of the view's start_view headers (the durable view
    /// headers: the window the new primary re-sends from its pipeline), or committed here, or
    /// hash chained to the head (at or above `chain_floor`). The first two need no walk, so a
    /// gap above them (a lost prepare, repaired later) does not hold their acknowledgement back.
    pub(super) fn in_view_log(&self, header: &Header) -> bool {
        if header.view == self.view {
            return true;
        }
        let state = self.durable_state();
        let in_view_headers = state.log_view == self.view
            && state
                .view_headers
                .iter()
                .any(|h| h.op == header.op && h.checksum == header.checksum);
        in_view_headers
            || header.op <= self.commit_min
            || (header.op <= self.op && self.chain_floor() <= header.op)
    }

    /// The lowest op from which the log up to `self.op` is hash chained without gaps.
    pub(super) fn chain_floor(&self) -> u64 {
        let Some(mut next) = self.journal.header(self.op).copied() else {
            return self.op + 1;
        };
        let mut floor = self.op;
        while floor > self.commit_min {
            match self.journal.header(floor - 1) {
                Some(h) if h.checksum == next.parent => {
                    next = *h;
                    floor -= 1;
                }
                _ => break,
            }
        }
        floor
    }

    pub(super) fn on_prepare_read(
        &mut self,
        op: u64,
        checksum: u128,
        purpose: ReadPurpose,
        message: Option<Message>,
    ) {
        match purpose {
            ReadPurpose::Commit => {
                assert_eq!(self.commit_reading, Some(op));
                self.commit_reading = None;
                if let Some(message) = message {
                    // Things may have changed while the read was in flight: a sync or a
                    // checkpoint write may have paused commits, a start_view replaced the header.
                    if op == self.commit_min + 1
                        && op <= self.commit_max
                        && self.journal.has_header(op, checksum)
                        && !self.commits_paused()
                        && !self.view_change.start_view_install_pending
                    {
                        self.commit_op(&message);
                    }
                }
                self.commit_journal();
            }
            ReadPurpose::Pipeline => {
                let Some(message) = message else { return };
                if let Some(entry) = self
                    .pipeline
                    .iter_mut()
                    .find(|e| e.header.checksum == checksum)
                {
                    entry.message = Some(message);
                }
            }
            ReadPurpose::Repair { replica } => {
                self.log(format_args!(
                    "repair read op={op} for {replica}: intact={}",
                    message.is_some()
                ));
                if let Some(message) = message {
                    self.bus.send_to_replica(replica, &message);
                }
            }
        }
    }

    /// Applies one committed prepare; at a checkpoint op, starts the checkpoint of the state
    /// including it (so after the client table took its reply).
    fn commit_op(&mut self, prepare: &Message) {
        self.commit_op_apply(prepare);
        self.rejoin_maybe_done();
        self.checkpoint_maybe_start();
    }

    /// A rejoining replica has committed every op it may have acknowledged before its disk was
    /// lost: from now on its log answers for itself. A superblock write clears `rejoining`; a
    /// restart before it is durable merely rejoins again.
    pub(super) fn rejoin_maybe_done(&mut self) {
        if self.rejoin_head.is_some_and(|head| self.commit_min >= head) {
            self.event(format_args!(
                "rejoined: committed through op {}, votes again",
                self.commit_min
            ));
            self.rejoin_head = None;
            self.stats.rejoins_completed += 1;
            // Say so on disk now (`vsr inspect` stops showing `rejoining`), not at the next
            // checkpoint or view change.
            let state = self.vsr_state_now();
            self.superblock_update(state);
        }
    }

    /// Applies one committed prepare: state machine (or session registration), reply, client table.
    fn commit_op_apply(&mut self, prepare: &Message) {
        let header = *prepare.header();
        let prepared = Prepare::from_header(&header);
        assert_eq!(prepared.op, self.commit_min + 1);
        assert!(self.journal.has_header(prepared.op, header.checksum));
        assert!(prepared.op <= self.commit_max);
        let Some(mut reply) = self.pool.get() else {
            panic!("message pool exhausted at commit: pool sizing bug");
        };
        // A session may be evicted between prepare and commit (by a register ahead of it in the
        // pipeline). Every replica sees the same table here, so every replica skips the same ops.
        let session_alive = match Operation::from_u8(prepared.operation) {
            Some(Operation::Register) => self.clients.get(prepared.client).is_none(),
            Some(Operation::Noop) => true,
            _ => self.clients.get(prepared.client).is_some_and(|e| {
                e.session == prepared.session && e.request + 1 == prepared.request
            }),
        };
        if !session_alive {
            self.log(format_args!("commit skipped (no session) {header:?}"));
            self.commit_min = prepared.op;
            self.stats.commits += 1;
            return;
        }
        let body_size = match Operation::from_u8(prepared.operation) {
            Some(Operation::Register) => {
                // The register reply tells the client the cluster's message size, so that it
                // never sends a request the replicas would refuse.
                let size = self.config.message_size_max;
                reply.buffer_mut()[HEADER_SIZE..HEADER_SIZE + REGISTER_REPLY_SIZE]
                    .copy_from_slice(&u64::from(size).to_le_bytes());
                REGISTER_REPLY_SIZE
            }
            Some(Operation::Noop) => 0,
            Some(_) => unreachable!("op {} has operation {}", prepared.op, prepared.operation),
            None => {
                let (input, output) = (prepare.body(), &mut reply.buffer_mut()[HEADER_SIZE..]);
                self.state_machine.commit(
                    prepared.client,
                    prepared.op,
                    prepared.timestamp_ns,
                    prepared.operation,
                    input,
                    output,
                )
            }
        };
        self.commit_min = prepared.op;
        self.stats.commits += 1;
        if prepared.operation == Operation::Noop as u8 {
            return;
        }
        *reply.header_mut() = self.reply_header(&header);
        reply.seal(body_size);
        self.log(format_args!("commit {header:?}"));
        let index = if prepared.operation == Operation::Register as u8 {
            let (index, evicted) =
                self.clients
                    .register(prepared.client, prepared.op, reply.clone());
            if let Some(evicted) = evicted {
                if self.status == Status::Normal && self.is_primary() {
                    self.send_eviction(evicted);
                }
            }
            index
        } else {
            self.clients.update(
                prepared.client,
                prepared.request,
                prepared.op,
                reply.clone(),
            )
        };
        self.write_client_reply(index, &reply);
        if self.status == Status::Normal && self.is_primary() {
            // A reply only for a committed op, applied here.
            assert!(prepared.op <= self.commit_min && self.commit_min <= self.commit_max);
            self.bus.send_to_client(prepared.client, &reply);
        }
    }

    /// The reply to the committed prepare `header`, before its body is sealed.
    fn reply_header(&self, header: &Header) -> Header {
        let prepare = Prepare::from_header(header);
        let register = prepare.operation == Operation::Register as u8;
        let reply = Reply {
            // Replies must be identical on every replica: the view is not part of them.
            view: 0,
            replica: 0,
            client: prepare.client,
            session: if register {
                prepare.op
            } else {
                prepare.session
            },
            request: prepare.request,
            op: prepare.op,
            commit: prepare.op,
            timestamp_ns: prepare.timestamp_ns,
            operation: prepare.operation,
            prepare_checksum: header.checksum,
            request_checksum: prepare.request_checksum,
        };
        reply.to_header(self.cluster)
    }

    /// Keeps the latest reply of each session durable in the client-replies zone. One write per
    /// table entry at a time: a newer reply waits for the write before it, and replaces any reply
    /// already waiting (only the latest matters). So the writes in flight pin at most one message
    /// per entry besides the table's own, as `Config::messages_max` budgets; unbounded, a burst of
    /// commits (a backup catching up from a backlog) pinned one message per commit and emptied
    /// the pool.
    fn write_client_reply(&mut self, index: usize, reply: &Message) {
        if self.client_reply_writing[index] {
            self.client_reply_waiting[index] = Some(reply.clone());
            return;
        }
        self.client_reply_writing[index] = true;
        let offset = index as u64 * self.config.message_size_max as u64;
        self.storage.submit(IoRequest {
            kind: IoKind::Write,
            zone: Zone::ClientReplies,
            offset,
            len: reply.size_sectors(),
            buffer: reply.clone(),
            token: crate::io_token::Token::new(
                crate::io_token::Purpose::ClientReplyWrite,
                index as u32,
            )
            .encode(),
        });
    }

    pub(super) fn on_client_reply_written(&mut self, index: usize) {
        self.client_reply_writing[index] = false;
        if let Some(next) = self.client_reply_waiting[index].take() {
            self.write_client_reply(index, &next);
        }
    }

    /// A committed entry leaves the pipeline (its reply is ready): its latencies.
    fn latencies_observe(&mut self, entry: &PipelineEntry) {
        let now = self.time.monotonic();
        if entry.prepared_ns > 0 {
            let latencies = &mut self.latencies;
            latencies
                .request
                .observe(now.saturating_sub(entry.received_ns));
            latencies
                .prepare_commit
                .observe(now.saturating_sub(entry.prepared_ns));
        }
    }

    /// Drops committed entries from the pipeline and prepares queued requests into the room.
    fn primary_pipeline_drain(&mut self) {
        if self.status != Status::Normal || !self.is_primary() {
            return;
        }
        while self
            .pipeline
            .front()
            .is_some_and(|e| e.header.op <= self.commit_min)
        {
            let entry = self.pipeline.pop_front().expect("a committed entry");
            self.latencies_observe(&entry);
        }
        if self.pipeline.is_empty() {
            self.timeouts.prepare.stop();
        } else if !self.timeouts.prepare.ticking {
            self.timeouts.prepare.start();
        }
        while self.pipeline.len() < self.config.pipeline_max as usize
            && self.commit_min == self.commit_max
        {
            let Some((request, received_ns)) = self.request_queue.pop_front() else {
                break;
            };
            if self
                .clock
                .realtime_synchronized(self.time.monotonic(), self.time.realtime())
                .is_none()
            {
                break;
            }
            let header = *request.header();
            if self.request_acceptable_queued(&header, &request) {
                self.primary_prepare(request, received_ns);
            }
        }
    }

    fn request_acceptable_queued(&mut self, header: &Header, message: &Message) -> bool {
        // Re-run the session checks: the table may have changed while the request waited.
        let _ = message;
        let request = Request::from_header(header);
        if request.operation == Operation::Register as u8 {
            return self.clients.get(request.client).is_none();
        }
        match self.clients.get(request.client) {
            Some(entry) => {
                entry.session == request.session
                    && request.request == entry.request + 1
                    && request.previous_reply_checksum == entry.reply.header().checksum
            }
            None => false,
        }
    }
}
