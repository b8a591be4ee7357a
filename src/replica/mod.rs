//! The replica: Viewstamped Replication with protocol-aware recovery, written once and driven by
//! its loop through `tick`, `on_message` and `on_io_completion`. Generic over the seams so the
//! simulator runs exactly this code.
//!
//! This file holds the replica's state, its entry points (`tick`, `on_message`,
//! `on_io_completion`), the superblock updates, recovery at open and sending. Submodules hold one
//! concern each: `normal` (requests, prepares, commits, replies), `view_change`, `repair`
//! (headers and prepares from peers), `checkpoint` (writing and loading checkpoints), `sync`
//! (state sync from a peer's checkpoint), `client_table` (client sessions), `replica_set`
//! (quorum votes) and `driver` (what the driver sees: events, the seams, read-only state).

mod checkpoint;
pub mod client_table;
mod driver;
mod normal;
mod repair;
mod replica_set;
mod sync;
mod view_change;

use crate::bus::MessageBus;
use crate::clock::Clock;
use crate::config::{Config, REPLICAS_MAX, TICK_MS};
use crate::header::commands::{
    CheckpointName, Commit, Ping, PingClient, Pong, PongClient, PrepareOk, RequestCheckpointChunk,
    RequestHeaders, RequestPrepare, RequestStartView, RequestStatus, StartViewChange,
};
use crate::header::{Command, Header, HEADER_SIZE};
use crate::io_token::{Purpose, Token};
use crate::journal::{Journal, JournalEvent, RecoveryReport, DURABLE_EVENTS_PER_COMPLETION_MAX};
use crate::message::{Message, MessagePool};
use crate::state_machine::StateMachine;
use crate::storage::{
    IoCompletion, IoKind, IoRequest, Storage, Zone, SUPERBLOCK_COPIES, SUPERBLOCK_COPY_SIZE,
};
use crate::superblock::{CheckpointRef, SuperBlock, SuperBlockError, VsrState};
use crate::time::Time;
use crate::timeout::Timeout;
use client_table::ClientTable;
use driver::events_queued_max;
pub use driver::{Event, Seams};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
pub use replica_set::ReplicaSet;
use std::cell::RefCell;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Reading the superblock and journal.
    Recovering,
    Normal,
    ViewChange,
    /// After a crash, the journal had a slot damaged beyond telling its op, so the log head may
    /// be missing ops this replica acknowledged. It must not vote or acknowledge until a
    /// start_view gives it the head.
    RecoveringHead,
}

/// A prepare in the primary's pipeline and who has acknowledged it.
pub struct PipelineEntry {
    pub header: Header,
    /// None when loaded lazily after a view change (read from the journal when needed).
    pub message: Option<Message>,
    pub ok_from: ReplicaSet,
    /// `Time::monotonic` when the primary received the request and when it prepared it, for
    /// its latencies (`metrics::Latencies`); 0 for entries a new primary took over.
    pub received_ns: u64,
    pub prepared_ns: u64,
}

/// Why a replica started a view change (counted per reason for the operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewChangeReason {
    /// Opened as a primary, mid view change, or alone.
    Open = 0,
    /// A backup heard nothing from its primary within normal_status_timeout.
    PrimarySilent = 1,
    /// A backup's connection to its primary closed and stayed silent.
    PrimaryDisconnected = 2,
    /// The view change did not complete in time: the next view is tried.
    ViewChangeTimeout = 3,
    /// A peer's message named a newer view (start_view_change, do_view_change, or other).
    Peer = 4,
    /// A primary lacked a prepare of its own log that no replica could supply.
    PrimaryStepDown = 5,
}

impl ViewChangeReason {
    pub const ALL: [ViewChangeReason; 6] = [
        ViewChangeReason::Open,
        ViewChangeReason::PrimarySilent,
        ViewChangeReason::PrimaryDisconnected,
        ViewChangeReason::ViewChangeTimeout,
        ViewChangeReason::Peer,
        ViewChangeReason::PrimaryStepDown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ViewChangeReason::Open => "open",
            ViewChangeReason::PrimarySilent => "primary_silent",
            ViewChangeReason::PrimaryDisconnected => "primary_disconnected",
            ViewChangeReason::ViewChangeTimeout => "view_change_timeout",
            ViewChangeReason::Peer => "peer",
            ViewChangeReason::PrimaryStepDown => "primary_step_down",
        }
    }
}

/// Counters the simulator prints and checks that every fault class was exercised.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplicaStats {
    pub view_changes: u64,
    /// View changes by `ViewChangeReason`.
    pub view_changes_by_reason: [u64; ViewChangeReason::ALL.len()],
    /// Client requests received (by any replica: a backup forwards them).
    pub requests: u64,
    /// Ops this replica prepared as primary.
    pub prepares: u64,
    pub views_started: u64,
    pub repairs_headers: u64,
    pub repairs_prepares: u64,
    /// View changes started because the connection to the primary closed (not a timeout).
    pub primary_disconnects: u64,
    pub truncations: u64,
    pub commits: u64,
    pub evictions: u64,
    pub messages_dropped_invalid: u64,
    pub pool_exhausted: u64,
    /// Checkpoints written and recorded in the superblock.
    pub checkpoints: u64,
    /// Checkpoints that failed verification when loaded (the replica then syncs).
    pub checkpoints_unusable: u64,
    /// Checkpoint writes that waited for the durable checkpoint to reach a replication quorum.
    pub checkpoints_held_back: u64,
    pub syncs_started: u64,
    pub syncs_completed: u64,
    pub syncs_aborted: u64,
    pub sync_chunks: u64,
    /// start_views not installed because their head was beyond the journal's room.
    pub start_views_deferred: u64,
    /// Re-created replicas (`vsr recover`) that committed through their first view's head.
    pub rejoins_completed: u64,
    /// Prepare timeouts that resent the oldest unacknowledged prepare (primary).
    pub prepares_resent: u64,
    /// Primaries that started a view change because they lacked a prepare of their own log.
    pub primary_step_downs: u64,
}

/// The replica's timeouts, each counting ticks (`Config::*_timeout_ticks`).
struct Timeouts {
    /// Pings to every peer (liveness, clock samples, checkpoints advertised).
    ping: Timeout,
    /// Primary: resend the oldest unacknowledged prepare.
    prepare: Timeout,
    /// Primary: commit heartbeat.
    commit: Timeout,
    /// Backup: no word from the primary; start a view change.
    normal_status: Timeout,
    /// A view change that did not complete; try the next view.
    view_change_status: Timeout,
    /// Resend this view change's messages.
    view_change_message: Timeout,
    /// Ask peers for what is missing (headers, prepares, checkpoint chunks).
    repair: Timeout,
}

impl Timeouts {
    fn new(config: &Config) -> Timeouts {
        Timeouts {
            ping: Timeout::new("ping", config.ping_timeout_ticks),
            prepare: Timeout::new("prepare", config.prepare_timeout_ticks),
            commit: Timeout::new("commit", config.commit_timeout_ticks),
            normal_status: Timeout::new("normal_status", config.normal_status_timeout_ticks),
            view_change_status: Timeout::new(
                "view_change_status",
                config.view_change_status_timeout_ticks,
            ),
            view_change_message: Timeout::new(
                "view_change_message",
                config.view_change_message_timeout_ticks,
            ),
            repair: Timeout::new("repair", config.repair_timeout_ticks),
        }
    }

    fn tick(&mut self) {
        for timeout in [
            &mut self.ping,
            &mut self.prepare,
            &mut self.commit,
            &mut self.normal_status,
            &mut self.view_change_status,
            &mut self.view_change_message,
            &mut self.repair,
        ] {
            timeout.tick();
        }
    }
}

/// Where this replica stands in the current view change (reset when one starts).
struct ViewChangeState {
    /// Who sent a start_view_change (or a do_view_change) for this view, this replica included.
    svc_from: ReplicaSet,
    /// The new primary: the do_view_changes received for this view, by sender.
    dvc_messages: Vec<Option<Message>>,
    dvc_sent: bool,
    /// Primary: the new log is chosen and the start_view waits for the superblock.
    start_view_pending: bool,
    /// Backup: a start_view is installed and waits for the superblock.
    start_view_install_pending: bool,
    /// Backup: the view's start_view arrived but its head is beyond our `op_limit`, so it is not
    /// installed (we take no part in the view) until a checkpoint makes room; then it is asked
    /// for again.
    start_view_deferred: bool,
}

impl ViewChangeState {
    fn new() -> ViewChangeState {
        ViewChangeState {
            svc_from: ReplicaSet::EMPTY,
            dvc_messages: (0..REPLICAS_MAX).map(|_| None).collect(),
            dvc_sent: false,
            start_view_pending: false,
            start_view_install_pending: false,
            start_view_deferred: false,
        }
    }

    /// A view change of this replica starts: only its own vote counts, nothing is sent yet.
    fn restart_votes(&mut self, replica: u8) {
        self.svc_from = ReplicaSet::single(replica);
        self.drop_do_view_changes();
        self.dvc_sent = false;
        self.start_view_pending = false;
    }

    fn drop_do_view_changes(&mut self) {
        for m in self.dvc_messages.iter_mut() {
            *m = None;
        }
    }
}

pub struct ReplicaOptions {
    pub cluster: u128,
    pub replica: u8,
    pub config: Config,
    /// Seeds the jitter PRNG (with the cluster and replica index): deterministic per replica.
    pub seed: u64,
    /// Queue a protocol trace line (`Event::Trace`) for every step (debugging; costly).
    pub trace: bool,
}

pub struct Replica<S: Storage, B: MessageBus, T: Time, M: StateMachine> {
    config: Config,
    cluster: u128,
    replica: u8,
    replica_count: u8,
    quorum_replication: usize,
    quorum_view_change: usize,

    status: Status,
    view: u32,
    log_view: u32,
    /// The head of the log.
    op: u64,
    /// The highest op applied to the state machine here.
    commit_min: u64,
    /// The highest op known committed in the cluster.
    commit_max: u64,

    pool: MessagePool,
    /// Buffers for superblock copies (larger than small simulator messages).
    superblock_pool: MessagePool,
    storage: S,
    bus: B,
    time: T,
    state_machine: M,
    journal: Journal,
    clients: ClientTable,
    /// Per client-table entry: a client-reply write is in flight, and the newest reply waiting
    /// for it to finish.
    client_reply_writing: Vec<bool>,
    client_reply_waiting: Vec<Option<Message>>,
    clock: Clock,
    prng: ChaCha8Rng,

    superblock: Option<SuperBlock>,
    superblock_copies: Vec<Option<SuperBlock>>,
    /// The copies that hold the durable superblock's state (all of them, unless a crash cut
    /// its write short): the next write goes to the others first (`SuperBlock::write_order`).
    superblock_holders: [bool; SUPERBLOCK_COPIES],
    superblock_reads: usize,
    /// The state being written, its copies in write order, and how many are written.
    superblock_writing: Option<(SuperBlock, [usize; SUPERBLOCK_COPIES], usize)>,
    superblock_queued: Option<VsrState>,

    // Checkpoints and state sync.
    /// Buffers for checkpoint chunks (writes, loads, and reads served to syncing peers).
    checkpoint_pool: MessagePool,
    checkpoint_write: Option<checkpoint::CheckpointWrite>,
    checkpoint_load: Option<checkpoint::CheckpointLoad>,
    /// The state machine does not hold the durable checkpoint's state (it failed to load):
    /// nothing commits until a sync installs one.
    state_lost: bool,
    sync: Option<sync::SyncProgress>,
    sync_generation: u32,
    /// Sync chunk writes submitted and not yet completed, of any sync (an abandoned one's
    /// included): a write into a checkpoint area may complete after a later one to the same
    /// block, so no sync or checkpoint write starts while any is in flight (VOPR seed
    /// 410831212493871707).
    sync_writes_in_flight: u32,
    /// The target of the last sync abandoned: the next picks another one if there is one.
    sync_abandoned: Option<(u64, u128)>,
    sync_serving: usize,
    /// The checkpoint before the durable one, while its area is intact (served to syncing
    /// peers, so a sync survives the cluster's next checkpoint); and the durable one last seen.
    checkpoint_previous: Option<CheckpointRef>,
    /// The checkpoint at `commit_min` waits for the durable one to reach a quorum (logged once).
    checkpoint_held_back: bool,
    checkpoint_seen: CheckpointRef,
    peers: [sync::PeerState; REPLICAS_MAX],
    /// The head of a view whose log does not fit our journal (beyond `op_limit`): a sync to a
    /// checkpoint at least `head - slot_count` is wanted (0: none).
    sync_head_wanted: u64,
    recovery_report: Option<RecoveryReport>,
    latencies: crate::metrics::Latencies,

    pipeline: VecDeque<PipelineEntry>,
    /// Requests waiting for room in the pipeline, with `Time::monotonic` when each arrived.
    request_queue: VecDeque<(Message, u64)>,
    /// Recently received prepares, by op modulo capacity, so backups commit without a disk read.
    prepare_cache: Vec<Option<Message>>,
    prepare_timestamp: u64,
    commit_reading: Option<u64>,

    // View change.
    view_change: ViewChangeState,
    /// Re-created by `vsr recover` (the superblock's `rejoining`): the replica may have
    /// acknowledged ops it no longer holds, so it never nacks an op at or below this head (the
    /// first start_view's; u64::MAX before one is installed) until it has committed that far.
    /// Until then every superblock it writes keeps `rejoining`, so a restart rejoins again.
    rejoin_head: Option<u64>,
    request_start_view_nonce: u128,

    // Repair.
    repair_peer: u8,
    last_heard: [u64; REPLICAS_MAX],
    /// The view in which this primary warned that it hears no replication quorum (once a
    /// view, and again after it heard one).
    quorum_lost_warned: Option<u32>,
    /// Per journal slot: the op whose prepare was last requested for repair and the tick it
    /// was, so an answer refills the window at once without asking again for what is on its way
    /// (a request older than half the repair timeout counts as lost).
    prepare_requested: Vec<(u64, u64)>,
    /// Backup: the tick since which its connection to the primary has been down (the bus's
    /// hint), while it has been continuously (`suspect_disconnected_primary`).
    primary_disconnected_since: Option<u64>,
    /// Headers up to the primary's commit point are on their way (repair of a head behind the
    /// cluster's, one request in flight at a time; the repair timeout clears it).
    head_requested: bool,
    /// Primary: the tick since which it has lacked an uncommitted prepare of its own log (a
    /// latent sector fault found only when read) that no peer has supplied.
    primary_lacks_prepare_since: Option<u64>,

    ticks: u64,
    timeouts: Timeouts,

    stats: ReplicaStats,
    /// Protocol trace lines are queued as `Event::Trace` (costly: off in production).
    trace: bool,
    /// What the replica hands back to its driver, oldest first (`poll_event`). A cell, so the
    /// logging helpers need only `&self` (their arguments borrow the replica's fields).
    events: RefCell<VecDeque<Event>>,
}

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    /// Creates the replica and starts reading its superblock and journal. It becomes usable
    /// (status other than `Recovering`) once those reads complete; `open_error` is set if the data
    /// file is unusable.
    pub fn open(options: ReplicaOptions, storage: S, bus: B, time: T, state_machine: M) -> Self {
        let pool = MessagePool::new(
            options.config.messages_max(),
            options.config.message_size_max as usize,
        );
        Self::open_with_pool(options, pool, storage, bus, time, state_machine)
    }

    /// As `open`, with a pool made by the caller (the production bus receives into the same pool).
    pub fn open_with_pool(
        options: ReplicaOptions,
        pool: MessagePool,
        storage: S,
        bus: B,
        time: T,
        state_machine: M,
    ) -> Self {
        let config = options.config;
        config.validate().expect("replica configuration");
        assert_eq!(pool.message_size_max(), config.message_size_max as usize);
        assert!(options.replica < config.replica_count);
        assert_eq!(*storage.layout(), crate::storage::Layout::new(&config));
        let (quorum_replication, quorum_view_change) =
            crate::config::quorums(config.replica_count as usize);
        // Jitter differs per replica and cluster, and is the same on every run of a seed.
        let seed = options.seed
            ^ (options.cluster as u64)
            ^ ((options.cluster >> 64) as u64)
            ^ (options.replica as u64) << 56;
        let events_max = events_queued_max(&config);
        let mut replica = Replica {
            cluster: options.cluster,
            replica: options.replica,
            replica_count: config.replica_count,
            quorum_replication,
            quorum_view_change,
            status: Status::Recovering,
            view: 0,
            log_view: 0,
            op: 0,
            commit_min: 0,
            commit_max: 0,
            pool,
            superblock_pool: MessagePool::new(SUPERBLOCK_COPIES, SUPERBLOCK_COPY_SIZE),
            storage,
            bus,
            time,
            state_machine,
            journal: Journal::new(&config, options.cluster),
            clients: ClientTable::new(config.clients_max as usize),
            client_reply_writing: vec![false; config.clients_max as usize],
            client_reply_waiting: (0..config.clients_max).map(|_| None).collect(),
            clock: Clock::from_config(&config, options.replica),
            prng: ChaCha8Rng::seed_from_u64(seed),
            superblock: None,
            superblock_copies: vec![None; SUPERBLOCK_COPIES],
            superblock_holders: [false; SUPERBLOCK_COPIES],
            superblock_reads: 0,
            superblock_writing: None,
            superblock_queued: None,
            checkpoint_pool: checkpoint::checkpoint_pool(&config),
            checkpoint_write: None,
            checkpoint_load: None,
            state_lost: false,
            sync: None,
            sync_generation: 0,
            sync_writes_in_flight: 0,
            sync_abandoned: None,
            sync_serving: 0,
            checkpoint_previous: None,
            checkpoint_held_back: false,
            checkpoint_seen: CheckpointRef::default(),
            peers: [sync::PeerState::default(); REPLICAS_MAX],
            sync_head_wanted: 0,
            recovery_report: None,
            latencies: crate::metrics::Latencies::default(),
            pipeline: VecDeque::with_capacity(config.pipeline_max as usize),
            request_queue: VecDeque::with_capacity(config.clients_max as usize),
            prepare_cache: (0..config.pipeline_max * 2).map(|_| None).collect(),
            prepare_timestamp: 0,
            commit_reading: None,
            view_change: ViewChangeState::new(),
            rejoin_head: None,
            request_start_view_nonce: 0,
            repair_peer: options.replica,
            last_heard: [0; REPLICAS_MAX],
            quorum_lost_warned: None,
            prepare_requested: vec![(u64::MAX, 0); config.journal_slot_count as usize],
            head_requested: false,
            primary_disconnected_since: None,
            primary_lacks_prepare_since: None,
            ticks: 0,
            timeouts: Timeouts::new(&config),
            config,
            stats: ReplicaStats::default(),
            trace: options.trace,
            events: RefCell::new(VecDeque::with_capacity(events_max)),
        };
        replica.superblock_read_start();
        replica
    }

    // ---- Roles and quorums ------------------------------------------------------------------

    pub fn primary_index(&self, view: u32) -> u8 {
        (view % self.replica_count as u32) as u8
    }

    pub fn is_primary(&self) -> bool {
        self.primary_index(self.view) == self.replica
    }

    pub fn is_backup(&self) -> bool {
        !self.is_primary()
    }

    pub fn quorum_replication(&self) -> usize {
        self.quorum_replication
    }

    pub fn quorum_view_change(&self) -> usize {
        self.quorum_view_change
    }

    /// Re-created by `vsr recover` and not yet caught up: it neither votes nor acknowledges.
    pub fn rejoining(&self) -> bool {
        self.rejoin_head.is_some()
    }

    /// Nacks that prove an op cannot have committed: more replicas than could complete a
    /// replication quorum without them.
    fn quorum_nack(&self) -> usize {
        self.replica_count as usize - self.quorum_replication + 1
    }

    pub fn pipeline_len(&self) -> usize {
        self.pipeline.len()
    }

    pub fn superblock(&self) -> Option<&SuperBlock> {
        self.superblock.as_ref()
    }

    pub fn clock_synchronized(&self) -> bool {
        self.clock.synchronized(self.time.monotonic())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// An operator event (checkpoints, view changes, state sync, rejoining): rare, so formatted
    /// here and handed to the driver, which logs it.
    fn event(&self, args: std::fmt::Arguments) {
        self.emit(Event::Info(args.to_string()));
    }

    fn warn(&self, args: std::fmt::Arguments) {
        self.emit(Event::Warn(args.to_string()));
    }

    /// Milliseconds since `since` (a `Time::monotonic` reading).
    fn ms_since(&self, since: u64) -> u64 {
        self.time.monotonic().saturating_sub(since) / 1_000_000
    }

    fn log(&self, args: std::fmt::Arguments) {
        if self.trace {
            let line = format!(
                "[r{} v{} {:?} op={} cmin={} cmax={}] {}",
                self.replica,
                self.view,
                self.status,
                self.op,
                self.commit_min,
                self.commit_max,
                args
            );
            self.emit(Event::Trace(line));
        }
    }

    /// Internal state worth seeing when a run fails for liveness.
    pub fn debug_summary(&self) -> String {
        format!(
            "[pool_free={}/{} pipeline={} queue={} checkpoint={} writing={} loading={} state_lost={} sync={} op_limit={} storage_pending_commit_read={:?} journal_dirty={} faulty={}]",
            self.pool.available(),
            self.pool.capacity(),
            self.pipeline.len(),
            self.request_queue.len(),
            self.checkpoint().op,
            self.checkpoint_write.is_some(),
            self.checkpoint_load.is_some(),
            self.state_lost,
            self.sync.is_some(),
            self.op_limit(),
            self.commit_reading,
            self.journal.dirty_count(),
            self.journal.faulty_count(),
        )
    }

    /// Invariants that hold between events; checked after each one.
    pub fn assert_invariants(&self) {
        assert!(
            self.commit_min <= self.commit_max,
            "commit_min {} > commit_max {}",
            self.commit_min,
            self.commit_max
        );
        if self.status == Status::Recovering {
            return;
        }
        assert!(self.log_view <= self.view);
        if self.status == Status::Normal {
            assert!(
                self.commit_max <= self.op || self.is_backup(),
                "primary commit_max > op"
            );
        }
        if self.status == Status::Normal && self.is_primary() {
            assert!(self.commit_max <= self.op);
            assert!(
                self.op - self.commit_max <= self.config.pipeline_max as u64,
                "primary pipeline too long: op={} commit_max={}",
                self.op,
                self.commit_max
            );
            assert!(
                self.pipeline
                    .front()
                    .is_none_or(|e| e.header.op > self.commit_min),
                "committed op left in pipeline: front={:?} commit_min={}",
                self.pipeline.front().map(|e| e.header.op),
                self.commit_min
            );
            let first = self.op + 1 - self.pipeline.len() as u64;
            for (expect, entry) in (first..).zip(self.pipeline.iter()) {
                assert_eq!(entry.header.op, expect, "pipeline ops are contiguous");
            }
        }
        if let Some(sb) = &self.superblock {
            assert!(sb.vsr_state.view <= self.view);
            assert!(sb.vsr_state.log_view <= self.log_view || self.status != Status::Normal);
            // The state holds at least the durable checkpoint (or is being loaded from it).
            assert!(
                self.commit_min >= sb.vsr_state.checkpoint.op
                    || self.state_lost
                    || self.checkpoint_load.is_some(),
                "commit_min {} below the durable checkpoint {}",
                self.commit_min,
                sb.vsr_state.checkpoint.op
            );
        }
        assert!(
            self.op >= self.commit_min,
            "op {} below commit_min {}: a committed op was truncated",
            self.op,
            self.commit_min
        );
        if self.status == Status::Normal {
            // Normal in a view only once that view's log is this replica's log.
            assert_eq!(self.log_view, self.view, "normal outside its log_view");
        }
        if let Some(back) = self.pipeline.back() {
            assert!(self.status == Status::Normal && self.is_primary());
            assert_eq!(back.header.op, self.op, "the pipeline ends at the head");
        }
    }

    // ---- Driving ----------------------------------------------------------------------------

    /// Called every `TICK_MS` of the replica's monotonic clock.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.status == Status::Recovering {
            return;
        }
        self.clock.tick(self.time.monotonic(), self.time.realtime());
        self.journal.flush(&mut self.storage, &self.pool);
        self.suspect_disconnected_primary();
        self.timeouts.tick();
        if self.timeouts.ping.fired() {
            self.timeouts.ping.rearm(&mut self.prng);
            self.send_pings();
        }
        if self.timeouts.prepare.fired() {
            self.on_prepare_timeout();
        }
        if self.timeouts.commit.fired() {
            self.timeouts.commit.rearm(&mut self.prng);
            self.on_commit_timeout();
        }
        if self.timeouts.normal_status.fired() {
            self.on_normal_status_timeout();
        }
        if self.timeouts.view_change_status.fired() {
            self.on_view_change_status_timeout();
        }
        if self.timeouts.view_change_message.fired() {
            self.timeouts.view_change_message.rearm(&mut self.prng);
            self.on_view_change_message_timeout();
        }
        self.sync_retry_soon();
        if self.timeouts.repair.fired() {
            self.timeouts.repair.rearm(&mut self.prng);
            self.repair();
            self.sync_tick();
        }
        self.assert_invariants();
    }

    /// A message from the network. Verified here (checksums, `invalid()`, cluster) before anything
    /// acts on it; the production bus verifies too, but the replica trusts nobody.
    pub fn on_message(&mut self, message: Message) {
        if self.status == Status::Recovering {
            // Only an operator's status request is answered before the replica has opened.
            if message.header().command == Command::RequestStatus as u8 {
                if let Some(header) = self.message_accepted(&message) {
                    self.on_request_status(&RequestStatus::from_header(&header));
                }
            }
            return;
        }
        let Some(header) = self.message_accepted(&message) else {
            return;
        };
        self.dispatch(header, message);
        self.assert_invariants();
    }

    /// The message's header if the message is whole and well formed for its command, of this
    /// cluster, and (for a replica's message) from another replica of it; else it is dropped.
    fn message_accepted(&mut self, message: &Message) -> Option<Header> {
        let header = *message.header();
        if !header.valid_checksum()
            || header.size as usize > message.capacity()
            || header
                .invalid(self.config.message_size_max as usize)
                .is_some()
            || !header.valid_checksum_body(message.body())
            || header.cluster != self.cluster
        {
            self.stats.messages_dropped_invalid += 1;
            self.log(format_args!(
                "drop invalid {:?}: {:?}",
                header,
                header.invalid(self.config.message_size_max as usize)
            ));
            return None;
        }
        let command = header.command().unwrap();
        // Commands whose `replica` names the sending replica (a checkpoint chunk names none).
        let from_replica = matches!(
            command,
            Command::Ping
                | Command::Pong
                | Command::Prepare
                | Command::PrepareOk
                | Command::Commit
                | Command::StartViewChange
                | Command::DoViewChange
                | Command::StartView
                | Command::RequestStartView
                | Command::RequestHeaders
                | Command::RequestPrepare
                | Command::Headers
                | Command::RequestCheckpointChunk
        );
        if from_replica && header.replica >= self.replica_count {
            self.stats.messages_dropped_invalid += 1;
            return None;
        }
        // A prepare's `replica` is the primary that created it, not the sender: a repair may
        // bring back a prepare this replica created in an earlier view.
        if from_replica && header.replica == self.replica && command != Command::Prepare {
            return None;
        }
        if from_replica && header.view == self.view && command != Command::RequestCheckpointChunk {
            self.last_heard[header.replica as usize] = self.ticks;
        }
        Some(header)
    }

    /// Hands an accepted message to its command's handler.
    fn dispatch(&mut self, header: Header, message: Message) {
        match header.command().unwrap() {
            Command::Ping => self.on_ping(&Ping::from_header(&header)),
            Command::Pong => self.on_pong(&Pong::from_header(&header)),
            Command::PingClient => self.on_ping_client(&PingClient::from_header(&header)),
            Command::Request => self.on_request(message),
            Command::Prepare => self.on_prepare(message),
            Command::PrepareOk => self.on_prepare_ok(&PrepareOk::from_header(&header)),
            Command::Commit => self.on_commit(&Commit::from_header(&header)),
            Command::StartViewChange => {
                self.on_start_view_change(&StartViewChange::from_header(&header))
            }
            Command::DoViewChange => self.on_do_view_change(message),
            Command::StartView => self.on_start_view(message),
            Command::RequestStartView => {
                self.on_request_start_view(&RequestStartView::from_header(&header))
            }
            Command::RequestHeaders => {
                self.on_request_headers(&RequestHeaders::from_header(&header))
            }
            Command::RequestPrepare => {
                self.on_request_prepare(&RequestPrepare::from_header(&header))
            }
            Command::Headers => self.on_headers(message),
            Command::CheckpointChunk => self.on_checkpoint_chunk(message),
            Command::RequestCheckpointChunk => {
                self.on_request_checkpoint_chunk(&RequestCheckpointChunk::from_header(&header))
            }
            Command::RequestStatus => self.on_request_status(&RequestStatus::from_header(&header)),
            Command::Reserved
            | Command::Reply
            | Command::Eviction
            | Command::PongClient
            | Command::Block
            | Command::StatusReport => {
                self.stats.messages_dropped_invalid += 1;
            }
        }
    }

    /// An I/O completion from storage, routed by its token.
    pub fn on_io_completion(&mut self, completion: IoCompletion) {
        let token = Token::decode(completion.token);
        match token.purpose {
            Purpose::SuperblockRead => self.on_superblock_read(token.index as usize, completion),
            Purpose::SuperblockWrite => self.on_superblock_written(),
            Purpose::ClientReplyWrite => self.on_client_reply_written(token.index as usize),
            Purpose::CheckpointWrite => self.on_checkpoint_written(),
            Purpose::CheckpointRead => self.on_checkpoint_read(token.index, completion),
            Purpose::SyncChunkWrite { sync_generation } => {
                self.on_sync_chunk_written(sync_generation, token.index)
            }
            Purpose::SyncChunkRead { to, previous } => {
                self.on_sync_chunk_read(to, previous, token.index, completion)
            }
            Purpose::RecoveryHeaders | Purpose::RecoveryPrepare { .. } => {
                self.journal
                    .on_completion(&mut self.storage, &self.pool, completion);
                if self.journal.recovery_done() {
                    self.recovery_finish();
                }
            }
            Purpose::PrepareWrite | Purpose::HeaderSectorWrite | Purpose::PrepareRead => {
                self.journal
                    .on_completion(&mut self.storage, &self.pool, completion);
                self.on_journal_events();
            }
        }
        self.assert_invariants();
    }

    /// Acts on what the journal reports after a completion. Each round handles the events of one
    /// completion (handlers only submit I/O, whose completions come later), so the fixed buffer
    /// holds every durable event; the events the handlers cause are the next round's.
    fn on_journal_events(&mut self) {
        let mut durable = [(0u64, 0u128); DURABLE_EVENTS_PER_COMPLETION_MAX];
        loop {
            let mut durable_count = 0;
            let mut reads = Vec::new();
            for event in self.journal.events() {
                match event {
                    JournalEvent::Durable { op, checksum } => {
                        assert!(
                            durable_count < durable.len(),
                            "more durable events than one completion can yield"
                        );
                        durable[durable_count] = (op, checksum);
                        durable_count += 1;
                    }
                    JournalEvent::Read {
                        op,
                        checksum,
                        purpose,
                        message,
                    } => reads.push((op, checksum, purpose, message)),
                }
            }
            if durable_count == 0 && reads.is_empty() {
                break;
            }
            for &(op, checksum) in &durable[..durable_count] {
                self.on_prepare_durable(op, checksum);
            }
            if durable_count > 0 {
                self.repair_refill();
            }
            for (op, checksum, purpose, message) in reads {
                self.on_prepare_read(op, checksum, purpose, message);
            }
        }
    }

    // ---- Superblock ---------------------------------------------------------------------------

    fn superblock_read_start(&mut self) {
        let size = self.storage.layout().superblock_copy_size;
        for copy in 0..SUPERBLOCK_COPIES {
            let buffer = self.superblock_pool.get().expect("superblock pool");
            self.storage.submit(IoRequest {
                kind: IoKind::Read,
                zone: Zone::Superblock,
                offset: copy as u64 * size,
                len: size as usize,
                buffer,
                token: Token::new(Purpose::SuperblockRead, copy as u32).encode(),
            });
        }
    }

    fn on_superblock_read(&mut self, copy: usize, completion: IoCompletion) {
        assert_eq!(self.status, Status::Recovering);
        self.superblock_copies[copy] =
            SuperBlock::decode(completion.buffer.buffer(), self.storage.layout());
        self.superblock_reads += 1;
        if self.superblock_reads < SUPERBLOCK_COPIES {
            return;
        }
        let chosen = SuperBlock::choose(&self.superblock_copies).and_then(|sb| {
            sb.check_identity(&self.config, Some(self.cluster), Some(self.replica))?;
            Ok(sb)
        });
        match chosen {
            Ok(sb) => {
                sb.vsr_state.assert_valid();
                self.superblock_holders = SuperBlock::holders(&self.superblock_copies, &sb);
                let state = sb.vsr_state.clone();
                self.superblock = Some(sb);
                if self.superblock_holders.iter().all(|&held| held) {
                    self.open_from_superblock();
                } else {
                    // A crash cut a superblock write short (or a copy is damaged, or read
                    // damaged): the chosen state may sit on fewer copies than a quorum, so a
                    // later read could choose an older one. Make it durable on every copy
                    // before acting on it (`on_superblock_written` goes on from there).
                    self.superblock_queued = Some(state);
                    self.superblock_write_next();
                }
            }
            Err(error) => self.fail_open(error),
        }
    }

    /// The superblock is chosen and on every copy: load its checkpoint, then read the journal.
    fn open_from_superblock(&mut self) {
        assert_eq!(self.status, Status::Recovering);
        assert!(self.superblock_holders.iter().all(|&held| held));
        let checkpoint = self.durable_state().checkpoint;
        self.checkpoint_seen = checkpoint;
        self.checkpoint_previous_serve();
        if checkpoint.op > 0 {
            self.checkpoint_load_start(checkpoint, checkpoint::AfterLoad::Recovery);
        } else {
            self.journal.recover_start(&mut self.storage, &self.pool);
        }
    }

    fn fail_open(&mut self, error: SuperBlockError) {
        self.emit(Event::OpenFailed(error));
    }

    /// Queues a durable update of the VSR state. Callers act on it in `on_superblock_durable`.
    /// Updates only move forward from the newest state already requested, so a later update can
    /// never undo an earlier one still waiting in the queue.
    fn superblock_update(&mut self, state: VsrState) {
        state.assert_valid();
        let target = self.superblock_target();
        assert!(
            state.monotonic_after(target),
            "superblock regress: view {}->{} log_view {}->{}",
            target.view,
            state.view,
            target.log_view,
            state.log_view
        );
        if state.log_view == target.log_view {
            // Within one log_view the head only moves forward (a later start_view of the view).
            assert!(
                state.view_head_op() >= target.view_head_op(),
                "view head regressed within a log_view"
            );
        }
        self.superblock_queued = Some(state);
        if self.superblock_writing.is_none() {
            self.superblock_write_next();
        }
    }

    /// The newest VSR state requested: queued, else being written, else durable.
    fn superblock_target(&self) -> &VsrState {
        if let Some(queued) = &self.superblock_queued {
            return queued;
        }
        if let Some((writing, _, _)) = &self.superblock_writing {
            return &writing.vsr_state;
        }
        &self.superblock.as_ref().unwrap().vsr_state
    }

    fn superblock_write_next(&mut self) {
        assert!(self.superblock_writing.is_none());
        let Some(state) = self.superblock_queued.take() else {
            return;
        };
        let mut sb = self.superblock.clone().unwrap();
        sb.sequence += 1;
        sb.vsr_state = state;
        let order = SuperBlock::write_order(&self.superblock_holders);
        self.superblock_writing = Some((sb, order, 0));
        self.superblock_write_copy();
    }

    fn superblock_write_copy(&mut self) {
        let (sb, order, written) = self.superblock_writing.as_ref().unwrap();
        let copy = order[*written];
        let layout = self.storage.layout().clone();
        let mut buffer = self.superblock_pool.get().expect("superblock pool");
        sb.encode(copy as u8, buffer.buffer_mut(), &layout);
        self.storage.submit(IoRequest {
            kind: IoKind::Write,
            zone: Zone::Superblock,
            offset: copy as u64 * layout.superblock_copy_size,
            len: layout.superblock_copy_size as usize,
            buffer,
            token: Token::new(Purpose::SuperblockWrite, copy as u32).encode(),
        });
    }

    fn on_superblock_written(&mut self) {
        let (_, order, written) = self.superblock_writing.as_mut().unwrap();
        // The copy no longer holds the durable state (until the new one is durable everywhere).
        self.superblock_holders[order[*written]] = false;
        *written += 1;
        if *written < SUPERBLOCK_COPIES {
            self.superblock_write_copy();
            return;
        }
        let (sb, _, _) = self.superblock_writing.take().unwrap();
        self.superblock_holders = [true; SUPERBLOCK_COPIES];
        self.log(format_args!(
            "superblock durable: view={} log_view={} head={}",
            sb.vsr_state.view,
            sb.vsr_state.log_view,
            sb.vsr_state.view_head_op()
        ));
        self.superblock = Some(sb);
        if self.status == Status::Recovering {
            // The superblock chosen at open, rewritten to every copy.
            self.open_from_superblock();
            return;
        }
        self.on_superblock_durable();
        self.checkpoint_on_superblock_durable();
        if self.superblock_writing.is_none() {
            self.superblock_write_next();
        }
    }

    pub(super) fn durable_state(&self) -> &VsrState {
        &self.superblock.as_ref().unwrap().vsr_state
    }

    /// The VSR state as it stands in memory (view, commit_max) on top of the newest requested
    /// log_view and view headers, for the next superblock write.
    fn vsr_state_now(&self) -> VsrState {
        let target = self.superblock_target();
        let view = self.view.max(target.view);
        self.vsr_state_with(view, target.log_view, target.view_headers.clone())
    }

    /// The VSR state once this replica's log is the log of its current view (a new primary's or
    /// an installed start_view's), with that log's newest headers.
    fn vsr_state_in_view(&self, view_headers: Vec<Header>) -> VsrState {
        assert!(self.view >= self.superblock_target().view);
        self.vsr_state_with(self.view, self.view, view_headers)
    }

    /// The newest requested state with this view, log and commit point (commit_max never
    /// regresses; the checkpoints are the ones requested).
    fn vsr_state_with(&self, view: u32, log_view: u32, view_headers: Vec<Header>) -> VsrState {
        let target = self.superblock_target();
        VsrState {
            view,
            log_view,
            commit_max: self.commit_max.max(target.commit_max),
            view_headers,
            checkpoint: target.checkpoint,
            checkpoint_previous: target.checkpoint_previous,
            rejoining: self.rejoin_head.is_some(),
        }
    }

    // ---- Recovery -----------------------------------------------------------------------------

    fn recovery_finish(&mut self) {
        let state = self.durable_state().clone();
        let report = self
            .journal
            .recover_finish(&mut self.storage, &self.pool, &state);
        self.log(format_args!("recovered: {report:?}"));
        self.view = state.view;
        self.log_view = state.log_view;
        self.commit_max = state.commit_max;
        let checkpoint = state.checkpoint;
        self.op = report.op_head.max(checkpoint.op);
        self.commit_min = checkpoint.op;
        self.commit_max = self.commit_max.max(checkpoint.op);
        // A replica re-created by `vsr recover` may have acknowledged ops it no longer holds.
        let head_certain = report.head_certain && !state.rejoining;
        self.recovery_report = Some(report);
        if state.rejoining {
            assert!(
                self.replica_count > 1,
                "a one-replica cluster cannot rejoin: no peer holds its data"
            );
            self.rejoin_head = Some(u64::MAX);
            self.journal.mark_unheld_faulty();
            self.event(format_args!(
                "rejoining (re-created data file): no votes until caught up with the cluster"
            ));
        }
        if self.replica_count == 1 {
            // Alone, the replica is its own view change quorum: the log it recovered is the log.
            self.status = Status::Normal;
            self.transition_to_view_change(
                self.view + 1,
                ViewChangeReason::Open,
                "open (a one-replica cluster)",
            );
            return;
        }
        if !head_certain {
            self.status = Status::RecoveringHead;
            self.timeouts.ping.start();
            self.timeouts.repair.start();
            self.timeouts.normal_status.start();
            self.send_request_start_view();
            return;
        }
        if self.log_view == self.view && self.primary_index(self.view) != self.replica {
            self.status = Status::Normal;
            self.start_normal_timeouts();
            self.send_request_start_view();
        } else {
            // A primary lost its pipeline state with the crash, and a replica that crashed in a
            // view change does not know how far it got: both start a view change.
            self.status = Status::ViewChange;
            self.transition_to_view_change(
                self.view + 1,
                ViewChangeReason::Open,
                "open (the primary of its view, or mid view change, when it stopped)",
            );
        }
        self.commit_journal();
    }

    fn start_normal_timeouts(&mut self) {
        self.timeouts.ping.start();
        self.timeouts.repair.start();
        self.timeouts.view_change_status.stop();
        self.timeouts.view_change_message.stop();
        if self.is_primary() {
            self.timeouts.commit.start();
            self.timeouts.prepare.stop();
            self.timeouts.normal_status.stop();
        } else {
            self.timeouts.commit.stop();
            self.timeouts.prepare.stop();
            self.timeouts.normal_status.start();
        }
    }

    // ---- Sending ------------------------------------------------------------------------------

    /// Preconditions of a handler of a peer's message: `on_message` verified it (checksums,
    /// `invalid()`, cluster) and that it names another replica of this cluster, and the replica
    /// is past `Recovering`.
    fn assert_from_peer(&self, replica: u8) {
        assert!(self.status != Status::Recovering);
        assert!(replica < self.replica_count && replica != self.replica);
    }

    /// Preconditions of a handler that takes the whole message: verified, of its command.
    fn assert_received(&self, message: &Message, command: Command) {
        assert!(self.status != Status::Recovering);
        let header = message.header();
        assert_eq!(header.command, command as u8);
        assert_eq!(header.cluster, self.cluster);
        assert!(header.size as usize <= message.capacity());
    }

    /// A header-only message, sealed; None (counted) when the pool is exhausted: the protocol
    /// resends what matters on its timeouts.
    fn header_message(&mut self, mut header: Header) -> Option<Message> {
        header.size = HEADER_SIZE as u32;
        header.set_checksum_body(&[]);
        header.set_checksum();
        let Some(mut message) = self.pool.get() else {
            self.stats.pool_exhausted += 1;
            return None;
        };
        *message.header_mut() = header;
        Some(message)
    }

    /// Sends a header-only message.
    fn send_header_to_replica(&mut self, replica: u8, header: Header) {
        assert_ne!(replica, self.replica);
        if let Some(message) = self.header_message(header) {
            self.bus.send_to_replica(replica, &message);
        }
    }

    fn send_header_to_other_replicas(&mut self, header: Header) {
        for replica in 0..self.replica_count {
            if replica != self.replica {
                self.send_header_to_replica(replica, header);
            }
        }
    }

    fn send_header_to_client(&mut self, client: u128, header: Header) {
        assert_ne!(client, 0);
        if let Some(message) = self.header_message(header) {
            self.bus.send_to_client(client, &message);
        }
    }

    fn send_message_to_other_replicas(&mut self, message: &Message) {
        for replica in 0..self.replica_count {
            if replica != self.replica {
                self.bus.send_to_replica(replica, message);
            }
        }
    }

    /// A message whose body is `headers` (newest first), followed by `flags` if given.
    fn build_headers_message(
        &mut self,
        mut header: Header,
        headers: &[Header],
        flags: Option<&[u8]>,
    ) -> Option<Message> {
        let mut message = self.pool.get()?;
        let mut at = HEADER_SIZE;
        {
            let buffer = message.buffer_mut();
            for h in headers {
                buffer[at..at + HEADER_SIZE].copy_from_slice(zerocopy::IntoBytes::as_bytes(h));
                at += HEADER_SIZE;
            }
            if let Some(flags) = flags {
                assert_eq!(flags.len(), headers.len());
                buffer[at..at + flags.len()].copy_from_slice(flags);
                at += flags.len();
            }
        }
        header.size = at as u32;
        *message.header_mut() = header;
        message.seal(at - HEADER_SIZE);
        Some(message)
    }

    // ---- Ping and clock -------------------------------------------------------------------------

    fn send_pings(&mut self) {
        let (checkpoint, checkpoint_previous) = self.advertised_checkpoints();
        let ping = Ping {
            view: self.view,
            replica: self.replica,
            op: self.op,
            commit_max: self.commit_max,
            monotonic_sent_ns: self.time.monotonic(),
            checkpoint,
            checkpoint_previous,
        };
        self.send_header_to_other_replicas(ping.to_header(self.cluster));
    }

    /// Pings and commit heartbeats carry the durable checkpoint and the one before while it is
    /// served, for peers deciding to sync and to which target, and for checkpoint durability.
    fn advertised_checkpoints(&self) -> (CheckpointName, Option<CheckpointName>) {
        let previous = self.checkpoint_previous.map(|previous| previous.name());
        (self.checkpoint().name(), previous)
    }

    fn on_ping(&mut self, ping: &Ping) {
        self.assert_from_peer(ping.replica);
        let (checkpoint, previous) = (ping.checkpoint, ping.checkpoint_previous);
        self.peer_advertised(ping.replica, ping.op, checkpoint, previous);
        let pong = Pong {
            view: self.view,
            replica: self.replica,
            ping_monotonic_ns: ping.monotonic_sent_ns,
            wall_clock_ns: self.time.realtime(),
        };
        self.send_header_to_replica(ping.replica, pong.to_header(self.cluster));
        if ping.view > self.view && self.status != Status::ViewChange {
            // A peer is in a newer view we have not heard of: ask its primary.
            self.jump_to_view(ping.view);
        }
    }

    fn on_pong(&mut self, pong: &Pong) {
        self.assert_from_peer(pong.replica);
        self.clock.learn(
            pong.replica,
            pong.ping_monotonic_ns,
            pong.wall_clock_ns,
            self.time.monotonic(),
            self.time.realtime(),
        );
    }

    fn on_ping_client(&mut self, ping: &PingClient) {
        assert!(self.status != Status::Recovering && ping.client != 0);
        if self.status != Status::Normal {
            return;
        }
        let pong = PongClient {
            view: self.view,
            replica: self.replica,
            replica_count: self.replica_count,
            client: ping.client,
        };
        self.send_header_to_client(ping.client, pong.to_header(self.cluster));
    }

    /// Takes the replica apart (the simulator keeps storage and time across a crash).
    pub fn into_parts(self) -> (S, B, T, M) {
        (self.storage, self.bus, self.time, self.state_machine)
    }

    /// Elapsed milliseconds of `ticks` (for logs).
    pub fn ticks_ms(ticks: u64) -> u64 {
        ticks * TICK_MS
    }
}
