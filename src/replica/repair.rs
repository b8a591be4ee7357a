//! Repair: request_headers/headers for missing or disconnected headers, request_prepare for dirty
//! or faulty prepares (round-robin over peers). A repaired header is accepted only when the hash
//! chain proves it canonical (it is the parent of a header already proven) or when it comes from
//! the primary of our view; a repaired prepare only when its checksum is exactly the one our log
//! expects. So any peer may answer, and none can mislead.

use super::{Replica, Status};
use crate::bus::MessageBus;
use crate::header::commands::{Headers, RequestHeaders, RequestPrepare};
use crate::header::{Command, Header, HEADER_SIZE};
use crate::journal::ReadPurpose;
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::storage::Storage;
use crate::time::Time;

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    pub(super) fn repair(&mut self) {
        match self.status {
            Status::Recovering => {}
            Status::RecoveringHead => self.send_request_start_view(),
            Status::ViewChange => {
                if self.is_primary() {
                    self.primary_view_change_progress();
                }
            }
            Status::Normal => self.repair_normal(),
        }
    }

    fn repair_normal(&mut self) {
        let per_message = self.config.headers_per_message() as u64;
        let primary = self.primary_index(self.view);
        // The timeout re-asks whatever an answer did not come back for.
        self.head_requested = false;
        self.repair_head();
        // A gap or a break in the hash chain between commit_min and the head.
        let floor = self.chain_floor();
        if floor > self.repair_op_min() {
            let op_max = floor - 1;
            let op_min = self
                .repair_op_min()
                .max(op_max.saturating_sub(per_message - 1));
            // Any peer's headers below the floor are proven by the chain. A backup also asks its
            // primary, which may not hold them: after a state sync its journal starts above
            // the synced checkpoint.
            if self.is_backup() {
                self.send_request_headers(primary, op_min, op_max);
            }
            let target = self.next_repair_peer();
            if target != u8::MAX && (target != primary || !self.is_backup()) {
                self.send_request_headers(target, op_min, op_max);
            }
        }
        self.repair_prepares();
    }

    /// Repair made progress (headers or a prepare arrived, a repaired prepare became durable):
    /// refill the window at once instead of waiting for the repair timeout, so a replica behind
    /// catches up at the speed of the network and the disk. Only the head and the prepares
    /// windows are refilled here, each bounded; gap repair stays on the timeout.
    pub(super) fn repair_refill(&mut self) {
        if self.status != Status::Normal {
            return;
        }
        self.repair_head();
        self.repair_prepares();
    }

    /// A backup whose head is behind the primary's commit point asks the primary for the next
    /// headers, one request in flight: each answer asks for the next (`repair_refill`).
    fn repair_head(&mut self) {
        if !(self.status == Status::Normal && self.is_backup() && self.op < self.commit_max) {
            return;
        }
        if self.head_requested {
            return;
        }
        let per_message = self.config.headers_per_message() as u64;
        let op_max = self.commit_max.min(self.op + per_message);
        self.send_request_headers(self.primary_index(self.view), self.op + 1, op_max);
        self.head_requested = true;
    }

    /// Whether `op` can be in our journal beside our head: its slot is not the slot of a newer op
    /// we hold. A replica whose checkpoint is ahead of its commit point (a state sync recorded it,
    /// the state is still being fetched) holds ops more than a journal's length above
    /// `commit_min`; one further below would overwrite a newer op's slot (VOPR seed
    /// 3340111812461083769: a repaired op 300 and the head 347 took turns in one slot, and the
    /// prepare_ok of 347 went out while the disk held 300).
    pub(super) fn op_fits_journal(&self, op: u64) -> bool {
        op + self.journal.slot_count() > self.op
    }

    /// The oldest op repair may fetch: above the commit point, and within a journal of the head.
    fn repair_op_min(&self) -> u64 {
        (self.commit_min + 1).max((self.op + 1).saturating_sub(self.journal.slot_count()))
    }

    /// Prepares being repaired at once (requested or being written): the prepare cache holds
    /// each until it is durable, so more would evict one another.
    fn repair_window(&self) -> usize {
        self.prepare_cache.len()
    }

    /// Writes or fetches the prepares between commit_min and the head that are not yet durable,
    /// oldest first (they commit in order), keeping up to `repair_window` of them on their way.
    fn repair_prepares(&mut self) {
        let window = self.repair_window();
        let mut outstanding = 0;
        let mut op = self.repair_op_min();
        let mut lacking = None;
        while op <= self.op && outstanding < window {
            if let Some(header) = self.journal.header(op).copied() {
                if self.journal.is_dirty(op) {
                    outstanding += 1;
                    if !self.journal.writing(op) {
                        self.repair_prepare(op, header.checksum, &mut lacking);
                    }
                }
            }
            op += 1;
        }
        assert!(outstanding <= window);
        self.primary_step_down_if_stuck(lacking);
    }

    /// Writes the prepare if it is in memory, or asks the next peer for it unless a request is
    /// already on its way (one younger than half the repair timeout; older ones count as lost).
    fn repair_prepare(&mut self, op: u64, checksum: u128, lacking: &mut Option<u64>) {
        assert!(self.journal.is_dirty(op) && !self.journal.writing(op));
        if let Some(message) = self.cached_prepare(op, checksum) {
            self.journal.write_prepare(&mut self.storage, &message);
            return;
        }
        if op > self.commit_max {
            *lacking = lacking.or(Some(op));
        }
        let slot = self.journal.slot(op);
        let (requested_op, requested_tick) = self.prepare_requested[slot];
        if requested_op == op && self.ticks - requested_tick < self.config.repair_timeout_ticks / 2
        {
            return;
        }
        let peer = self.next_repair_peer();
        if peer != u8::MAX {
            self.send_request_prepare(peer, op, checksum);
            self.prepare_requested[slot] = (op, self.ticks);
        }
    }

    /// A primary that lacks one of its own uncommitted prepares (its copy was found damaged) and
    /// gets it from no peer for `primary_abdicate_timeout` cannot commit in this view: perhaps no
    /// replica holds it. It starts a view change, where its damaged slot is reported faulty, so
    /// a nack quorum can prove the op uncommitted and truncate it, or a replica that holds it can
    /// supply it. Staying primary would keep the backups content with its heartbeats forever.
    /// (A committed op is held by a replication quorum, so repair supplies it in time; stepping
    /// down for one would only churn views under packet loss.)
    fn primary_step_down_if_stuck(&mut self, lacking: Option<u64>) {
        let Some(op) = lacking.filter(|_| self.is_primary()) else {
            self.primary_lacks_prepare_since = None;
            return;
        };
        let since = *self.primary_lacks_prepare_since.get_or_insert(self.ticks);
        if self.ticks - since >= self.config.primary_abdicate_timeout_ticks {
            self.log(format_args!(
                "primary lacks prepare op={op} for {} ticks: stepping down",
                self.ticks - since
            ));
            self.stats.primary_step_downs += 1;
            self.transition_to_view_change(
                self.view + 1,
                super::ViewChangeReason::PrimaryStepDown,
                "primary lacks a prepare no replica could repair: stepping down",
            );
        }
    }

    /// The next peer in round-robin order, or u8::MAX when alone. Peers heard from within two
    /// ping intervals come first: a request to a peer that is down or not yet reconnected would
    /// wait a whole repair timeout.
    pub(super) fn next_repair_peer(&mut self) -> u8 {
        if self.replica_count == 1 {
            return u8::MAX;
        }
        let recent_ticks = 2 * self.config.ping_timeout_ticks;
        let mut fallback = u8::MAX;
        for _ in 0..self.replica_count {
            self.repair_peer = (self.repair_peer + 1) % self.replica_count;
            if self.repair_peer == self.replica {
                continue;
            }
            let heard = self.last_heard[self.repair_peer as usize];
            if heard > 0 && self.ticks - heard <= recent_ticks {
                return self.repair_peer;
            }
            if fallback == u8::MAX {
                fallback = self.repair_peer;
            }
        }
        assert!(fallback != u8::MAX && fallback != self.replica);
        self.repair_peer = fallback;
        fallback
    }

    pub(super) fn send_request_prepare(&mut self, replica: u8, op: u64, checksum: u128) {
        self.log(format_args!("request_prepare op={op} from {replica}"));
        let request = RequestPrepare {
            view: self.view,
            replica: self.replica,
            op,
            prepare_checksum: checksum,
        };
        self.send_header_to_replica(replica, request.to_header(self.cluster));
    }

    fn send_request_headers(&mut self, replica: u8, op_min: u64, op_max: u64) {
        assert!(op_min <= op_max);
        self.log(format_args!(
            "request_headers {op_min}..={op_max} from {replica}"
        ));
        let request = RequestHeaders {
            view: self.view,
            replica: self.replica,
            op_min,
            op_max,
        };
        self.send_header_to_replica(replica, request.to_header(self.cluster));
    }

    pub(super) fn on_request_prepare(&mut self, request: &RequestPrepare) {
        self.assert_from_peer(request.replica);
        if self.status == Status::Recovering {
            return;
        }
        let (op, checksum) = (request.op, request.prepare_checksum);
        if !self.journal.has_clean(op, checksum) {
            self.log(format_args!(
                "request_prepare op={op} from {}: not held clean (header {:?} dirty={})",
                request.replica,
                self.journal.header(op).map(|h| h.checksum == checksum),
                self.journal.is_dirty(op)
            ));
            return;
        }
        if let Some(message) = self.cached_prepare(op, checksum) {
            self.bus.send_to_replica(request.replica, &message);
            return;
        }
        let started = self.journal.read_prepare(
            &mut self.storage,
            &self.pool,
            op,
            checksum,
            ReadPurpose::Repair {
                replica: request.replica,
            },
        );
        self.log(format_args!(
            "request_prepare op={op} from {}: read started={started}",
            request.replica
        ));
    }

    /// A prepare that did not arrive through normal replication: keep it only if our log expects
    /// exactly this checksum at its op and we do not yet hold it durably.
    pub(super) fn on_repair_prepare(&mut self, message: Message) {
        let header = *message.header();
        if self.status == Status::Recovering {
            return;
        }
        if !self.journal.has_header(header.op, header.checksum) {
            if !self.repair_prepare_named_by_successor(&header) {
                return;
            }
            self.stats.repairs_headers += 1;
            self.journal.set_header(&header);
        }
        if !self.journal.is_dirty(header.op) {
            // A primary resending a prepare of our log from an earlier view (its pipeline after a
            // view change): our prepare_ok was lost.
            if self.status == Status::Normal && self.is_backup() {
                self.send_prepare_ok(header.op, header.checksum);
            }
            return;
        }
        if self.journal.writing(header.op) {
            return;
        }
        self.stats.repairs_prepares += 1;
        self.log(format_args!("repair prepare {header:?}"));
        self.cache_prepare(&message);
        self.journal.write_prepare(&mut self.storage, &message);
        self.repair_refill();
    }

    /// A prepare whose header we lack is still ours to keep when the header above it in our log
    /// names it as parent, and that header is canonical: proven by the chain in normal status,
    /// or installed from the do_view_change quorum by a new primary choosing its log.
    fn repair_prepare_named_by_successor(&self, header: &Header) -> bool {
        if header.op <= self.commit_min || !self.op_fits_journal(header.op) {
            return false;
        }
        let Some(next) = self.journal.header(header.op + 1) else {
            return false;
        };
        if next.parent != header.checksum {
            return false;
        }
        match self.status {
            Status::ViewChange => self.is_primary() && !self.view_change.start_view_pending,
            Status::Normal => header.op < self.op && header.op + 1 >= self.chain_floor(),
            _ => false,
        }
    }

    pub(super) fn on_request_headers(&mut self, request: &RequestHeaders) {
        self.assert_from_peer(request.replica);
        assert!(request.op_min <= request.op_max);
        if self.status == Status::Recovering {
            return;
        }
        let (op_min, op_max) = (request.op_min, request.op_max.min(self.op));
        if op_min > op_max {
            return;
        }
        // Served: the ops hash chained to our head, and committed ops. Above the commit point
        // and below the chain's floor the journal may hold ops of an older view, left below a
        // start_view's window (or a new primary's) until repair walks the chain down to them:
        // never served, for a backup installs its primary's headers without proof (VOPR seed
        // 4202832586690229075: a new primary served its own view 15's op 312, below its window,
        // where view 20 had committed another).
        let floor = self.chain_floor();
        let per_message = self.config.headers_per_message();
        let headers: Vec<Header> = (op_min..=op_max)
            .rev()
            .filter(|&op| op >= floor || op <= self.commit_min)
            .filter_map(|op| self.journal.header(op).copied())
            .take(per_message)
            .collect();
        if headers.is_empty() {
            return;
        }
        let header = Headers {
            view: self.view,
            replica: self.replica,
        };
        let header = header.to_header(self.cluster);
        if let Some(message) = self.build_headers_message(header, &headers, None) {
            self.bus.send_to_replica(request.replica, &message);
        }
    }

    pub(super) fn on_headers(&mut self, message: Message) {
        self.assert_received(&message, Command::Headers);
        self.assert_from_peer(message.header().replica);
        if self.status == Status::Recovering || self.status == Status::RecoveringHead {
            return;
        }
        let header = Headers::from_header(message.header());
        let body = message.body();
        if body.len() % HEADER_SIZE != 0 {
            return;
        }
        let from_primary = self.status == Status::Normal
            && header.view == self.view
            && header.replica == self.primary_index(self.view)
            && self.is_backup();
        let mut headers = Vec::with_capacity(body.len() / HEADER_SIZE);
        for chunk in body.chunks_exact(HEADER_SIZE) {
            let h = Header::read_from(chunk);
            if !h.valid_checksum()
                || h.command != Command::Prepare as u8
                || h.cluster != self.cluster
                || h.op == 0
            {
                return;
            }
            headers.push(h);
        }
        headers.sort_by_key(|h| std::cmp::Reverse(h.op));
        let floor_before = self.chain_floor();
        if from_primary {
            self.install_headers_from_primary(&headers);
            self.head_requested = false;
        } else {
            for h in &headers {
                self.repair_header_chained(h);
            }
        }
        self.commit_journal();
        // The answer extended the proven chain downwards: ask its sender, who evidently holds
        // the log there, for the headers below at once (one request per answer that made
        // progress, so requests never multiply).
        let floor = self.chain_floor();
        if self.status == Status::Normal && floor < floor_before && floor > self.repair_op_min() {
            let per_message = self.config.headers_per_message() as u64;
            let op_max = floor - 1;
            let op_min = self
                .repair_op_min()
                .max(op_max.saturating_sub(per_message - 1));
            self.send_request_headers(header.replica, op_min, op_max);
        }
        self.repair_refill();
    }

    /// Headers from the primary of our view are canonical for it: install them, extending the head.
    pub(super) fn install_headers_from_primary(&mut self, headers: &[Header]) {
        for h in headers {
            if h.op <= self.commit_min || self.journal.has_header(h.op, h.checksum) {
                continue;
            }
            // Newest first: once the head is raised, older ops that do not fit are not held.
            if h.op <= self.op && !self.op_fits_journal(h.op) {
                continue;
            }
            if h.op > self.op_limit() {
                // Our checkpoint is behind: the slot still holds an op a restart replays.
                continue;
            }
            if h.op > self.op {
                for op in self.op + 1..h.op {
                    self.journal.remove(op);
                }
                self.op = h.op;
            }
            self.stats.repairs_headers += 1;
            self.journal.set_header(h);
        }
    }

    /// Accepts a header from anyone if it is the parent of a header the chain already proves.
    fn repair_header_chained(&mut self, h: &Header) {
        if h.op <= self.commit_min
            || h.op >= self.op
            || !self.op_fits_journal(h.op)
            || self.journal.has_header(h.op, h.checksum)
        {
            return;
        }
        let floor = self.chain_floor();
        if h.op + 1 < floor {
            return;
        }
        let Some(next) = self.journal.header(h.op + 1) else {
            return;
        };
        if next.parent != h.checksum {
            return;
        }
        self.stats.repairs_headers += 1;
        self.journal.set_header(h);
    }
}
