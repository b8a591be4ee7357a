//! View change: start_view_change -> do_view_change -> start_view, with `log_view`, nack-quorum
//! truncation of uncommitted ops (never of committed ones), and request_start_view for replicas
//! that missed the start_view.
//!
//! do_view_change body: the sender's newest `view_change_headers_max` ops (newest first; a
//! `Reserved` header where it has none), then one flag byte per header (journal::FLAG_*): whether
//! it holds that op's prepare clean, and whether the slot is faulty (a faulty slot is never a nack).

use super::{Event, Replica, ReplicaSet, Status, ViewChangeReason};
use crate::bus::MessageBus;
use crate::header::commands::{
    DoViewChange, Prepare, RequestStartView, StartView, StartViewChange,
};
use crate::header::{Command, Header, HEADER_SIZE};
use crate::journal::{FLAG_CLEAN, FLAG_FAULTY, FLAG_PRESENT};
use crate::message::Message;
use crate::state_machine::StateMachine;
use crate::storage::Storage;
use crate::time::Time;

/// One do_view_change, parsed.
struct Dvc {
    replica: u8,
    log_view: u32,
    op: u64,
    commit: u64,
    /// (header, flags), newest first.
    entries: Vec<(Header, u8)>,
}

impl Dvc {
    fn parse(message: &Message) -> Option<Dvc> {
        let cluster = message.header().cluster;
        let header = DoViewChange::from_header(message.header());
        let body = message.body();
        let count = body.len() / (HEADER_SIZE + 1);
        if count == 0 || count * (HEADER_SIZE + 1) != body.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let h = Header::read_from(&body[i * HEADER_SIZE..]);
            let flags = body[count * HEADER_SIZE + i];
            let expected_op = header.op.checked_sub(i as u64)?;
            if !h.valid_checksum()
                || h.op != expected_op
                || h.cluster != cluster
                || h.invalid(message.capacity()).is_some()
            {
                return None;
            }
            let is_prepare = h.command == Command::Prepare as u8;
            if is_prepare != (flags & FLAG_PRESENT != 0)
                || (!is_prepare && h.command != Command::Reserved as u8)
            {
                return None;
            }
            if is_prepare && h.view > header.log_view {
                return None;
            }
            entries.push((h, flags));
        }
        Some(Dvc {
            replica: header.replica,
            log_view: header.log_view,
            op: header.op,
            commit: header.commit_max,
            entries,
        })
    }

    fn entry(&self, op: u64) -> Option<&(Header, u8)> {
        let index = self.op.checked_sub(op)? as usize;
        self.entries.get(index)
    }

    /// Whether this replica proves it never acknowledged the prepare `op` with `checksum`
    /// (None: checksum unknown). Conservative: unknown is not a nack.
    fn nacks(&self, op: u64, checksum: Option<u128>) -> bool {
        if self.op < op {
            return true;
        }
        match self.entry(op) {
            None => false,
            Some((h, flags)) => {
                if flags & FLAG_FAULTY != 0 {
                    return false;
                }
                let clean = flags & FLAG_PRESENT != 0 && flags & FLAG_CLEAN != 0;
                match checksum {
                    Some(c) => !(clean && h.checksum == c),
                    None => flags & FLAG_PRESENT == 0,
                }
            }
        }
    }
}

/// Ticks the connection to the primary must stay down before a backup suspects it: longer
/// than a re-dial of a connection that merely broke (20-40 ms), shorter than the silence.
const PRIMARY_DISCONNECTED_TICKS_MIN: u64 = 10;

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    /// `reason` says why, for the operator: a view change is rare in a healthy cluster, and a
    /// string of them is the first thing to look for when throughput collapses.
    pub(super) fn transition_to_view_change(
        &mut self,
        view: u32,
        kind: ViewChangeReason,
        reason: &str,
    ) {
        assert!(
            view > self.view || (view == self.view && self.status != super::Status::ViewChange)
        );
        self.event(format_args!(
            "view change to view {view} (was view {} {:?}): {reason}",
            self.view, self.status
        ));
        self.stats.view_changes += 1;
        self.stats.view_changes_by_reason[kind as usize] += 1;
        self.view = view;
        self.status = Status::ViewChange;
        assert!(self.log_view < self.view || self.log_view == self.view && self.is_primary());
        self.primary_lacks_prepare_since = None;
        self.view_change.restart_votes(self.replica);
        self.view_change.start_view_install_pending = false;
        self.view_change.start_view_deferred = false;
        self.pipeline.clear();
        self.request_queue.clear();
        self.timeouts.normal_status.stop();
        self.timeouts.commit.stop();
        self.timeouts.prepare.stop();
        self.timeouts.view_change_status.start();
        self.timeouts.view_change_message.start();
        self.timeouts.ping.start();
        self.timeouts.repair.start();
        self.send_start_view_change();
        self.view_change_quorum_check();
    }

    /// A message shows a newer view: join its view change, or, if the view has started, ask its
    /// primary for the start_view.
    pub(super) fn jump_to_view(&mut self, view: u32) {
        assert!(view > self.view);
        if self.status == Status::RecoveringHead {
            self.view = view;
            self.send_request_start_view();
            return;
        }
        self.transition_to_view_change(view, ViewChangeReason::Peer, "a message from a newer view");
        self.send_request_start_view();
    }

    fn send_start_view_change(&mut self) {
        let svc = StartViewChange {
            view: self.view,
            replica: self.replica,
        };
        self.send_header_to_other_replicas(svc.to_header(self.cluster));
    }

    pub(super) fn on_start_view_change(&mut self, svc: &StartViewChange) {
        self.assert_from_peer(svc.replica);
        if svc.view < self.view || self.status == Status::Recovering {
            return;
        }
        if self.status == Status::RecoveringHead {
            if svc.view > self.view {
                self.view = svc.view;
            }
            return;
        }
        if svc.view > self.view {
            self.transition_to_view_change(
                svc.view,
                ViewChangeReason::Peer,
                "a peer's start_view_change",
            );
        }
        if self.status != Status::ViewChange || svc.view != self.view {
            return;
        }
        self.view_change.svc_from.insert(svc.replica);
        self.view_change_quorum_check();
    }

    fn view_change_quorum_check(&mut self) {
        if self.status == Status::ViewChange
            && !self.view_change.dvc_sent
            && self.view_change.svc_from.reached(self.quorum_view_change)
        {
            self.send_do_view_change();
        }
    }

    /// Sends our do_view_change, once `view` is durable (so we can never again act in an older view).
    fn send_do_view_change(&mut self) {
        if self.durable_state().view < self.view {
            if self.superblock_target().view < self.view {
                let state = self.vsr_state_now();
                self.superblock_update(state);
            }
            return;
        }
        // The promise a do_view_change makes (5.1): this replica can never again act in an
        // older view, and its log is durably the log of the log_view it names. The one
        // exception is moot: while this view's own log is being made durable (a start_view
        // installed, or the new primary's chosen log), a resent do_view_change names this view,
        // which has started (or is the sender's own), so no view change counts it.
        assert!(self.durable_state().view >= self.view);
        assert!(
            self.durable_state().log_view == self.log_view
                || self.log_view == self.view
                    && (self.view_change.start_view_install_pending
                        || self.view_change.start_view_pending),
            "do_view_change names log_view {} but {} is durable",
            self.log_view,
            self.durable_state().log_view
        );
        let Some(message) = self.build_do_view_change() else {
            return;
        };
        self.view_change.dvc_sent = true;
        let primary = self.primary_index(self.view);
        self.log(format_args!("send do_view_change to {primary}"));
        if primary == self.replica {
            self.on_do_view_change(message);
        } else {
            self.bus.send_to_replica(primary, &message);
        }
    }

    fn build_do_view_change(&mut self) -> Option<Message> {
        let count = (self.config.view_change_headers_max() as u64).min(self.op + 1);
        let mut headers = Vec::with_capacity(count as usize);
        let mut flags = Vec::with_capacity(count as usize);
        for i in 0..count {
            let op = self.op - i;
            match self.journal.header(op) {
                Some(h) if h.view > self.log_view => {
                    // A header of a newer log than ours: installed while we led a view change
                    // that never started. It is not our log_view's, and whatever we once held
                    // in its slot is unknown now: faulty, never a nack.
                    headers.push(Header::reserved(self.cluster, op));
                    flags.push(FLAG_FAULTY);
                    continue;
                }
                Some(h) => headers.push(*h),
                None => headers.push(Header::reserved(self.cluster, op)),
            }
            flags.push(self.journal.view_change_flags(op));
        }
        let header = DoViewChange {
            view: self.view,
            replica: self.replica,
            log_view: self.log_view,
            op: self.op,
            commit_max: self.commit_max.min(self.op),
        };
        let header = header.to_header(self.cluster);
        self.build_headers_message(header, &headers, Some(&flags))
    }

    pub(super) fn on_superblock_durable(&mut self) {
        if self.status == Status::ViewChange
            && !self.view_change.dvc_sent
            && self.durable_state().view >= self.view
        {
            self.view_change_quorum_check();
        }
        if self.view_change.start_view_pending && self.durable_state().log_view == self.view {
            self.view_change.start_view_pending = false;
            self.primary_start_view();
        }
        if self.view_change.start_view_install_pending && self.durable_state().log_view == self.view
        {
            self.view_change.start_view_install_pending = false;
            self.backup_enter_view();
        }
    }

    pub(super) fn on_do_view_change(&mut self, message: Message) {
        self.assert_received(&message, Command::DoViewChange);
        assert!(message.header().replica < self.replica_count);
        let header = DoViewChange::from_header(message.header());
        if header.view < self.view
            || self.status == Status::Recovering
            || self.status == Status::RecoveringHead
        {
            return;
        }
        if self.primary_index(header.view) != self.replica {
            return;
        }
        if header.view > self.view {
            self.transition_to_view_change(
                header.view,
                ViewChangeReason::Peer,
                "a peer's do_view_change",
            );
        }
        if self.status != Status::ViewChange || self.view_change.start_view_pending {
            return;
        }
        if Dvc::parse(&message).is_none() {
            self.stats.messages_dropped_invalid += 1;
            return;
        }
        // A do_view_change also counts as its sender's start_view_change.
        self.view_change.svc_from.insert(header.replica);
        self.view_change.dvc_messages[header.replica as usize] = Some(message);
        self.view_change_quorum_check();
        self.primary_view_change_progress();
    }

    /// The new primary, with a do_view_change quorum (its own included), chooses the log: the
    /// headers of the highest log_view; then it truncates what a nack quorum proves uncommitted and
    /// repairs the rest before it starts the view.
    pub(super) fn primary_view_change_progress(&mut self) {
        if self.status != Status::ViewChange
            || !self.is_primary()
            || self.view_change.start_view_pending
        {
            return;
        }
        if self.view_change.dvc_messages[self.replica as usize].is_none() {
            return;
        }
        let dvcs: Vec<Dvc> = self
            .view_change
            .dvc_messages
            .iter()
            .flatten()
            .filter_map(Dvc::parse)
            .collect();
        if dvcs.len() < self.quorum_view_change {
            return;
        }
        let log_view = dvcs.iter().map(|d| d.log_view).max().unwrap();
        let canonical: Vec<&Dvc> = dvcs.iter().filter(|d| d.log_view == log_view).collect();
        let op_head = canonical.iter().map(|d| d.op).max().unwrap();
        if !self.can_lead_log(op_head) {
            return;
        }
        let commit_max = self.view_change_commit_max(&dvcs, op_head);
        let (window_min, expected) = self.install_canonical_window(&canonical, op_head);
        let (op_head, mut missing) =
            self.truncate_uncommitted(&dvcs, commit_max, op_head, window_min, &expected);
        if missing == 0 {
            missing = self.window_chain_missing(&dvcs, op_head);
        }
        if missing > 0 {
            self.log(format_args!("view change waits for {missing} prepares"));
            return;
        }
        assert!(commit_max <= op_head);
        self.op = op_head;
        self.commit_max = self.commit_max.max(commit_max);
        self.log_view_install();
    }

    /// Whether this replica can install a log with head `op_head`: its checkpoint is not behind
    /// the new log (installing it would overwrite ops we must replay) and it has a state to
    /// commit on. If not, it waits, and lets the view change time out to a primary that can
    /// lead, unless it catches up first.
    fn can_lead_log(&mut self, op_head: u64) -> bool {
        if op_head > self.op_limit() || !self.state_available() || self.sync.is_some() {
            self.log(format_args!(
                "view change waits: head {op_head} beyond op limit {}",
                self.op_limit()
            ));
            self.sync_head_wanted = self.sync_head_wanted.max(op_head);
            return false;
        }
        true
    }

    /// The new view's commit point: the highest any voter knows, and at least a pipeline below
    /// the head (the old primary prepared `op_head` only with its commit at most a pipeline
    /// behind). Every committed op is in the log of the highest log_view in any view change
    /// quorum, so none is beyond the head.
    fn view_change_commit_max(&self, dvcs: &[Dvc], op_head: u64) -> u64 {
        let commit_dvc = dvcs.iter().map(|d| d.commit).max().unwrap();
        let commit_max = commit_dvc
            .max(self.commit_max)
            .max(op_head.saturating_sub(self.config.pipeline_max as u64));
        assert!(
            commit_max <= op_head,
            "committed op {commit_max} beyond the new log head {op_head}"
        );
        commit_max
    }

    /// Installs the canonical header of each op in the window below `op_head` and returns the
    /// window's first op and each op's expected checksum (by op - window_min). Derived top-down
    /// from the highest-log_view senders and the hash chain only (never from this replica's
    /// journal alone, which may be stale or have gaps): a header a canonical sender holds, else
    /// the parent named by the canonical header above. Ours above the head are removed.
    fn install_canonical_window(
        &mut self,
        canonical: &[&Dvc],
        op_head: u64,
    ) -> (u64, Vec<Option<u128>>) {
        let window_min = op_head.saturating_sub(self.config.view_change_headers_max() as u64 - 1);
        let window = (op_head - window_min + 1) as usize;
        let mut expected: Vec<Option<u128>> = vec![None; window];
        let mut canonical_headers: Vec<Option<Header>> = vec![None; window];
        for op in (window_min..=op_head).rev() {
            let index = (op - window_min) as usize;
            let from_dvc = canonical
                .iter()
                .filter_map(|d| d.entry(op))
                .find(|(h, flags)| flags & FLAG_PRESENT != 0 && h.command == Command::Prepare as u8)
                .map(|(h, _)| *h);
            let from_above = canonical_headers
                .get(index + 1)
                .copied()
                .flatten()
                .map(|next| next.parent);
            expected[index] = from_dvc.map(|h| h.checksum).or(from_above);
            canonical_headers[index] = from_dvc.or_else(|| {
                self.journal
                    .header(op)
                    .copied()
                    .filter(|h| Some(h.checksum) == expected[index])
            });
            match (canonical_headers[index], expected[index]) {
                (Some(h), _) => self.journal.set_header(&h),
                // Our header there (if any) is not the one the new log names: stale.
                (None, Some(_)) => self.journal.remove(op),
                (None, None) => {}
            }
        }
        self.journal.remove_above(op_head);
        (window_min, expected)
    }

    /// Walks the uncommitted suffix upward: truncates at the first op a nack quorum disowns, and
    /// requests every prepare still missing below it. Returns the new head and the count of
    /// prepares missing.
    fn truncate_uncommitted(
        &mut self,
        dvcs: &[Dvc],
        commit_max: u64,
        op_head: u64,
        window_min: u64,
        expected: &[Option<u128>],
    ) -> (u64, u64) {
        let mut missing = 0;
        for op in commit_max + 1..=op_head {
            let checksum = expected[(op - window_min) as usize];
            if let Some(c) = checksum {
                if self.journal.has_clean(op, c) {
                    continue;
                }
            }
            let nacks = dvcs.iter().filter(|d| d.nacks(op, checksum)).count();
            // Alone, an op above the commit point that we do not hold clean cannot come from
            // anywhere. A single replica commits only what it has written durably, and tolerates
            // no storage faults (nothing could repair them), so such a slot is a write torn by
            // a crash: never committed, never acknowledged.
            let solo_torn = self.replica_count == 1;
            if solo_torn && nacks < self.quorum_nack() {
                self.event(format_args!(
                    "op {op} is unreadable and no peer holds it: a write torn by the crash, truncated from there"
                ));
            }
            if nacks >= self.quorum_nack() || solo_torn {
                self.log(format_args!("truncate from op {op}: {nacks} nacks"));
                self.stats.truncations += 1;
                for truncated in op..=op_head {
                    self.journal.remove(truncated);
                }
                return (op - 1, missing);
            }
            missing += 1;
            self.log(format_args!(
                "view change needs op {op} ({nacks} nacks, checksum known: {})",
                checksum.is_some()
            ));
            if let Some(c) = checksum {
                self.request_prepare_from_dvcs(op, c, dvcs);
            }
        }
        (op_head, missing)
    }

    /// The start_view carries the whole window below `op_head`, so every header in it must be
    /// present and chained. Walks down from the head: a header that the one above does not name
    /// is stale, and its prepare is requested. Returns 1 at the first one missing, else 0.
    fn window_chain_missing(&mut self, dvcs: &[Dvc], op_head: u64) -> u64 {
        // After a truncation the window ends lower, so it is computed from the new head.
        let window_min = op_head.saturating_sub(self.config.view_change_headers_max() as u64 - 1);
        if self.journal.header(op_head).is_none() {
            return 1;
        }
        // Below our commit point the ops are committed here and canonical already; after a
        // state sync their headers may be gone, and the window ends there.
        for op in (window_min.max(1).max((self.commit_min + 1).min(op_head))..op_head).rev() {
            let Some(next) = self.journal.header(op + 1).copied() else {
                self.log(format_args!(
                    "view change needs the header of op {}",
                    op + 1
                ));
                return 1;
            };
            if self.journal.has_header(op, next.parent) {
                continue;
            }
            if self.journal.header(op).is_some() {
                self.journal.remove(op);
            }
            self.request_prepare_from_dvcs(op, next.parent, dvcs);
            return 1;
        }
        0
    }

    fn request_prepare_from_dvcs(&mut self, op: u64, checksum: u128, dvcs: &[Dvc]) {
        let holders: Vec<u8> = dvcs
            .iter()
            .filter(|d| d.replica != self.replica)
            .filter(|d| {
                d.entry(op)
                    .is_some_and(|(h, flags)| h.checksum == checksum && flags & FLAG_CLEAN != 0)
            })
            .map(|d| d.replica)
            .collect();
        let target = if holders.is_empty() {
            self.next_repair_peer()
        } else {
            holders[(self.prng_index(holders.len() as u64)) as usize]
        };
        let Some(target) = target_some(target) else {
            return;
        };
        self.send_request_prepare(target, op, checksum);
    }

    /// The new primary's log is chosen: make it durable (log_view = view, with its head headers),
    /// then start the view.
    fn log_view_install(&mut self) {
        let view_headers = self.view_headers(self.op);
        self.log(format_args!(
            "new log chosen: op={} commit_max={}",
            self.op, self.commit_max
        ));
        self.view_change.start_view_pending = true;
        self.log_view = self.view;
        let state = self.vsr_state_in_view(view_headers);
        self.superblock_update(state);
    }

    /// Headers of ops (head - view_change_headers_max, head], newest first, hash chained. All
    /// must be present above our commit point; at or below it (committed, possibly synced past)
    /// the list may end early.
    pub(super) fn view_headers(&self, head: u64) -> Vec<Header> {
        let count = (self.config.view_change_headers_max() as u64).min(head + 1);
        let mut headers: Vec<Header> = Vec::with_capacity(count as usize);
        for i in 0..count {
            let op = head - i;
            let header = self.journal.header(op).filter(|h| {
                headers
                    .last()
                    .is_none_or(|above| above.parent == h.checksum)
            });
            match header {
                Some(h) => headers.push(*h),
                None if op <= self.commit_min && !headers.is_empty() => break,
                None => panic!("view header {op} missing"),
            }
        }
        headers
    }

    fn primary_start_view(&mut self) {
        assert!(self.is_primary());
        assert_eq!(self.status, Status::ViewChange);
        // The chosen log is durable as this view's before anything is sent or acknowledged.
        assert_eq!(self.durable_state().log_view, self.view);
        assert_eq!(self.log_view, self.view);
        assert!(self.commit_max <= self.op);
        self.status = Status::Normal;
        self.stats.views_started += 1;
        self.event(format_args!(
            "view {} started as primary: op={} commit_max={}",
            self.view, self.op, self.commit_max
        ));
        self.prepare_timestamp = self.prepare_timestamp.max(
            self.journal
                .header(self.op)
                .map(|h| Prepare::from_header(h).timestamp_ns)
                .unwrap_or(0),
        );
        for op in self.commit_max + 1..=self.op {
            let header = *self.journal.header(op).expect("uncommitted op present");
            let message = self.cached_prepare(op, header.checksum);
            self.pipeline.push_back(super::PipelineEntry {
                header,
                message,
                ok_from: ReplicaSet::single(self.replica),
                received_ns: 0,
                prepared_ns: 0,
            });
            if !self.journal.acknowledgeable(op, header.checksum) {
                // Its own acknowledgement counts once the prepare and its ring entry are
                // durable (`on_prepare_durable`).
                self.pipeline.back_mut().unwrap().ok_from = ReplicaSet::EMPTY;
            } else {
                self.emit(Event::PrepareAcknowledged {
                    view: self.view,
                    op,
                    checksum: header.checksum,
                });
            }
        }
        self.view_change.drop_do_view_changes();
        for replica in 0..self.replica_count {
            self.last_heard[replica as usize] = self.ticks;
        }
        self.start_normal_timeouts();
        if !self.pipeline.is_empty() {
            self.timeouts.prepare.start();
        }
        if let Some(sv) = self.build_start_view(0) {
            self.send_message_to_other_replicas(&sv);
        }
        // Our own acks may already complete a quorum (always, when alone).
        self.commit_pipeline();
        self.repair();
    }

    fn build_start_view(&mut self, nonce: u128) -> Option<Message> {
        let headers = self.view_headers(self.op);
        let header = StartView {
            view: self.view,
            replica: self.replica,
            op: self.op,
            commit_max: self.commit_max.min(self.op),
            nonce,
        };
        let header = header.to_header(self.cluster);
        self.build_headers_message(header, &headers, None)
    }

    pub(super) fn on_request_start_view(&mut self, rsv: &RequestStartView) {
        self.assert_from_peer(rsv.replica);
        if self.status != Status::Normal || rsv.view != self.view || !self.is_primary() {
            return;
        }
        if let Some(sv) = self.build_start_view(rsv.nonce) {
            self.bus.send_to_replica(rsv.replica, &sv);
        }
    }

    pub(super) fn send_request_start_view(&mut self) {
        let primary = self.primary_index(self.view);
        if primary == self.replica {
            return;
        }
        self.request_start_view_nonce = self.request_start_view_nonce.wrapping_add(1);
        let rsv = RequestStartView {
            view: self.view,
            replica: self.replica,
            nonce: self.request_start_view_nonce,
        };
        self.send_header_to_replica(primary, rsv.to_header(self.cluster));
    }

    pub(super) fn on_start_view(&mut self, message: Message) {
        self.assert_received(&message, Command::StartView);
        self.assert_from_peer(message.header().replica);
        let header = StartView::from_header(message.header());
        if header.view < self.view || self.status == Status::Recovering {
            return;
        }
        if header.replica != self.primary_index(header.view) || header.replica == self.replica {
            return;
        }
        let Some(headers) = parse_start_view(&message) else {
            self.stats.messages_dropped_invalid += 1;
            return;
        };
        if header.view == self.view && self.status == Status::Normal {
            // We are already in this view: take it as the primary's word on the head.
            self.install_headers_from_primary(&headers);
            self.commit_max_advance(header.commit_max);
            self.commit_journal();
            return;
        }
        if self.view_change.start_view_install_pending && header.view == self.view {
            return;
        }
        // Our durable checkpoint, too: while a sync's checkpoint is recorded but not yet
        // loaded, commit_min still trails it (and op_limit already counts from it).
        let committed = self.commit_min.max(self.checkpoint().op);
        if header.op < committed {
            // A start_view older than our state (sent when the view began, delivered late),
            // after a state sync put our commit point above its head: installing it would cut
            // committed ops. Ask the primary for its current head instead (VOPR seed
            // 28707700472960594).
            self.log(format_args!(
                "start_view head {} below our commit point {committed}: stale, asking again",
                header.op
            ));
            self.send_request_start_view();
            return;
        }
        if header.op > self.op_limit() {
            self.start_view_defer(&header);
            return;
        }
        self.log(format_args!(
            "install start_view: op={} commit={}",
            header.op, header.commit_max
        ));
        if header.view > self.view || self.status != Status::ViewChange {
            self.enter_view_change_quietly(header.view);
        }
        self.view_change.start_view_deferred = false;
        for h in &headers {
            self.journal.set_header(h);
        }
        self.journal.remove_above(header.op);
        self.op = header.op;
        if self.rejoin_head == Some(u64::MAX) {
            self.rejoin_head = Some(header.op);
        }
        if self.rejoin_head.is_some() {
            self.journal.mark_unheld_faulty();
        }
        self.commit_max_advance(header.commit_max);
        self.log_view = self.view;
        self.view_change.start_view_install_pending = true;
        let state = self.vsr_state_in_view(headers);
        self.superblock_update(state);
    }

    /// Leaves normal status (or an older view change) the way a view change would, but without
    /// announcing one (the view has started): a start_view install is then guarded by the view
    /// change timeouts until its superblock is durable.
    fn enter_view_change_quietly(&mut self, view: u32) {
        self.view = view;
        self.status = Status::ViewChange;
        self.pipeline.clear();
        self.request_queue.clear();
        self.view_change.restart_votes(self.replica);
        self.timeouts.normal_status.stop();
        self.timeouts.commit.stop();
        self.timeouts.prepare.stop();
        self.timeouts.view_change_status.start();
        self.timeouts.view_change_message.start();
    }

    /// The start_view's head is beyond our `op_limit`: the journal cannot hold the view's log
    /// without overwriting ops our checkpoint still needs. Installing only a prefix would be
    /// wrong: `log_view` would then claim the view with a head short of it, and a view change
    /// could pick that short head and lose committed ops. So we stay out of the view (no
    /// `log_view`, no acks; a do_view_change from us names our old log_view, honestly) until a
    /// checkpoint at least `head - slot_count` (ours, or a peer's by sync: the primary's is one)
    /// makes room, then ask for the start_view again.
    fn start_view_defer(&mut self, header: &StartView) {
        if !self.view_change.start_view_deferred {
            self.event(format_args!(
                "view {} is ahead of this replica's journal (head op {}, room up to op {}): catching up before joining",
                header.view,
                header.op,
                self.op_limit()
            ));
        }
        self.stats.start_views_deferred += 1;
        self.sync_head_wanted = self.sync_head_wanted.max(header.op);
        self.peer_advertised_head(header.replica, header.op);
        if self.status == Status::RecoveringHead {
            // Still without a certain head: it must not join any view change meanwhile.
            self.view = self.view.max(header.view);
        } else if header.view > self.view || self.status != Status::ViewChange {
            self.enter_view_change_quietly(header.view);
        }
        // Asked for again as soon as there is room (after a sync or our own checkpoint): the
        // cluster goes on meanwhile, and a late request finds its head beyond the room again.
        self.view_change.start_view_deferred = true;
        self.sync_tick();
    }

    /// Asks again for a deferred start_view once our journal has room for its head.
    pub(super) fn start_view_deferred_retry(&mut self) {
        if self.view_change.start_view_deferred
            && self.op_limit() >= self.sync_head_wanted
            && self.sync.is_none()
        {
            self.send_request_start_view();
        }
    }

    fn backup_enter_view(&mut self) {
        assert!(self.is_backup());
        // The start_view's log is durable as this view's: only now may it be acknowledged.
        assert_eq!(self.durable_state().log_view, self.view);
        assert_eq!(self.log_view, self.view);
        assert!(
            self.op >= self.commit_min,
            "start_view truncated a committed op"
        );
        self.status = Status::Normal;
        self.event(format_args!(
            "view {} started as backup of replica {}: op={} commit_max={}",
            self.view,
            self.primary_index(self.view),
            self.op,
            self.commit_max
        ));
        self.start_normal_timeouts();
        for op in self
            .commit_max
            .saturating_sub(self.config.pipeline_max as u64)
            + 1..=self.op
        {
            if let Some(h) = self.journal.header(op).copied() {
                if !self.journal.is_dirty(op) {
                    self.send_prepare_ok(op, h.checksum);
                }
            }
        }
        self.commit_journal();
        self.repair();
    }

    /// A backup whose connection to its primary has closed (the bus's hint: the primary's
    /// process is likely gone, killed or crashed) does not wait out `normal_status_timeout`: once
    /// the connection has stayed down for `PRIMARY_DISCONNECTED_TICKS_MIN` and the primary has
    /// been silent for half a commit heartbeat interval, it starts the view change. Safe for any
    /// reason (a view change is always safe); a connection that is merely re-dialed (tens of
    /// milliseconds) costs no view. A primary never heard from (just restarted, not yet
    /// connected) is left to the timeout.
    pub(super) fn suspect_disconnected_primary(&mut self) {
        if self.status != Status::Normal || !self.is_backup() {
            self.primary_disconnected_since = None;
            return;
        }
        let primary = self.primary_index(self.view);
        if self.bus.connected_to_replica(primary) {
            self.primary_disconnected_since = None;
            return;
        }
        let since = *self.primary_disconnected_since.get_or_insert(self.ticks);
        let heard = self.last_heard[primary as usize];
        let silence_ticks = (self.config.commit_timeout_ticks / 2).max(1);
        if heard == 0
            || self.ticks - heard < silence_ticks
            || self.ticks - since < PRIMARY_DISCONNECTED_TICKS_MIN
        {
            return;
        }
        assert!(self.ticks > heard && self.ticks > since);
        self.stats.primary_disconnects += 1;
        self.primary_disconnected_since = None;
        self.transition_to_view_change(
            self.view + 1,
            ViewChangeReason::PrimaryDisconnected,
            "the connection to the primary closed and it has been silent since",
        );
    }

    pub(super) fn on_normal_status_timeout(&mut self) {
        match self.status {
            Status::Normal if self.is_backup() => self.transition_to_view_change(
                self.view + 1,
                ViewChangeReason::PrimarySilent,
                "no word from the primary within normal_status_timeout",
            ),
            Status::RecoveringHead => {
                self.timeouts.normal_status.reset();
                self.send_request_start_view();
            }
            _ => self.timeouts.normal_status.stop(),
        }
    }

    pub(super) fn on_view_change_status_timeout(&mut self) {
        if self.status != Status::ViewChange {
            self.timeouts.view_change_status.stop();
            return;
        }
        if self.view_change.start_view_pending
            || self.view_change.start_view_install_pending
            || self.view_change.start_view_deferred
        {
            // A deferred start_view: the view has started without us, and a view change of
            // ours would only disrupt it. If its primary fails, a peer's view change pulls us in.
            self.timeouts.view_change_status.reset();
            return;
        }
        let attempts = self.timeouts.view_change_status.attempts;
        self.transition_to_view_change(
            self.view + 1,
            ViewChangeReason::ViewChangeTimeout,
            "view change did not complete within view_change_status_timeout",
        );
        self.timeouts.view_change_status.attempts = attempts;
        self.timeouts.view_change_status.backoff(&mut self.prng);
    }

    pub(super) fn on_view_change_message_timeout(&mut self) {
        if self.status != Status::ViewChange {
            self.timeouts.view_change_message.stop();
            return;
        }
        self.send_start_view_change();
        if self.view_change.dvc_sent && !self.is_primary() {
            self.view_change.dvc_sent = false;
            self.send_do_view_change();
        }
        if self.is_primary() {
            self.primary_view_change_progress();
        } else if self.view_change.start_view_deferred {
            self.start_view_deferred_retry();
        } else {
            self.send_request_start_view();
        }
    }

    pub(super) fn prng_index(&mut self, n: u64) -> u64 {
        use rand_chacha::rand_core::Rng;
        self.prng.next_u64() % n
    }
}

fn target_some(replica: u8) -> Option<u8> {
    (replica != u8::MAX).then_some(replica)
}

/// The headers of a start_view: contiguous, newest first, hash chained.
fn parse_start_view(message: &Message) -> Option<Vec<Header>> {
    let cluster = message.header().cluster;
    let header = StartView::from_header(message.header());
    let body = message.body();
    if body.is_empty() || body.len() % HEADER_SIZE != 0 {
        return None;
    }
    let count = body.len() / HEADER_SIZE;
    let mut headers = Vec::with_capacity(count);
    for i in 0..count {
        let h = Header::read_from(&body[i * HEADER_SIZE..]);
        if !h.valid_checksum()
            || h.command != Command::Prepare as u8
            || h.op + i as u64 != header.op
            || h.cluster != cluster
            || h.invalid(message.capacity()).is_some()
        {
            return None;
        }
        if h.view > header.view {
            return None;
        }
        if let Some(newer) = headers.last() {
            let newer: &Header = newer;
            if newer.parent != h.checksum {
                return None;
            }
        }
        headers.push(h);
    }
    Some(headers)
}
