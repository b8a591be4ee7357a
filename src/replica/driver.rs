//! What the driver (the Linux event loop, or the simulator) sees of a replica.
//!
//! The driver calls in through `tick`, `on_message` and `on_io_completion`, and takes back:
//! - **events** (`poll_event`), the replica's one outward channel for everything that is not a
//!   message or an I/O request: operator log lines, trace lines, a failure to open, and each
//!   checkpoint that became durable (the simulator checks that every replica's checkpoint at an
//!   op is the same). The protocol never prints; the driver decides what to log and where.
//! - **the seams** (`seams`): the storage, bus and time the driver lent the replica at open.
//!   Between calls the driver moves their queued work to the device and collects what
//!   completed; nothing of the protocol's own state is reachable through them.
//! - **read-only state** for status lines, tools and the simulator's checkers.
//!
//! Everything the protocol decides stays behind these: the driver never writes a replica field.

use super::client_table::ClientTable;
use super::{Replica, ReplicaStats, Status};
use crate::bus::MessageBus;
use crate::config::Config;
use crate::header::commands::{
    RequestStatus, StatusReport, STATUS_FLAG_CLOCK_SYNCHRONIZED, STATUS_FLAG_PRIMARY,
    STATUS_FLAG_REJOINING, STATUS_FLAG_SYNCING, STATUS_NORMAL, STATUS_RECOVERING,
    STATUS_RECOVERING_HEAD, STATUS_VIEW_CHANGE,
};
use crate::journal::DURABLE_EVENTS_PER_COMPLETION_MAX;
use crate::journal::{Journal, RecoveryReport};
use crate::message::MessagePool;
use crate::state_machine::StateMachine;
use crate::storage::Storage;
use crate::superblock::SuperBlockError;
use crate::time::Time;

/// Events other than traces the queue holds between two polls. One call into the replica emits
/// a handful of log lines and checkpoint events at most, plus an acknowledgement per prepare it
/// makes durable (one header sector's worth) or counts when a view starts (a pipeline's worth).
/// The driver polls after every call, so the queue never grows; exceeding this is a driver bug.
pub(super) fn events_queued_max(config: &Config) -> usize {
    32 + 2 * config.pipeline_max as usize + DURABLE_EVENTS_PER_COMPLETION_MAX
}

/// Something the replica hands back to its driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A line for the operator: checkpoints, view changes, state sync, rejoining.
    Info(String),
    /// A line for the operator about something wrong that the cluster may not fix by itself
    /// (a primary that hears no replication quorum).
    Warn(String),
    /// A protocol trace line (only with `ReplicaOptions::trace`), prefixed with the replica's
    /// view, status, op and commit points when it was emitted.
    Trace(String),
    /// The data file cannot be used (no valid superblock, another cluster's or replica's file).
    /// The replica stays `Recovering` and does nothing more: the driver stops it.
    OpenFailed(SuperBlockError),
    /// A checkpoint became this replica's durable one (written here, or installed by state
    /// sync, `synced`): every replica's checkpoint at `op` must have the same `id`. One written
    /// here started only once the checkpoint before it was held by a replication quorum (the
    /// simulator checks it).
    CheckpointDurable { op: u64, id: u128, synced: bool },
    /// This replica acknowledged the prepare `op` with `checksum` in `view`: a backup sent its
    /// prepare_ok, or the primary counted its own. The promise behind it (docs/protocol.md 4):
    /// the prepare and its header-ring entry are durable here, and this replica will never
    /// report it as a nack (5.5). The simulator checks both.
    PrepareAcknowledged { view: u32, op: u64, checksum: u128 },
}

/// The seams, for the driver that lent them (see the module docs).
pub struct Seams<'a, S, B, T> {
    pub storage: &'a mut S,
    pub bus: &'a mut B,
    pub time: &'a mut T,
}

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    pub(super) fn emit(&self, event: Event) {
        let mut events = self.events.borrow_mut();
        assert!(
            matches!(event, Event::Trace(_))
                || events
                    .iter()
                    .filter(|e| !matches!(e, Event::Trace(_)))
                    .count()
                    < events_queued_max(&self.config),
            "replica events not polled by the driver"
        );
        events.push_back(event);
    }

    /// The oldest event not yet taken. Call until `None` after every call into the replica.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.get_mut().pop_front()
    }

    /// The seams the driver lent at open, to move their queued work between calls.
    pub fn seams(&mut self) -> Seams<'_, S, B, T> {
        Seams {
            storage: &mut self.storage,
            bus: &mut self.bus,
            time: &mut self.time,
        }
    }

    pub fn time(&self) -> &T {
        &self.time
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }

    // ---- Read-only state ----------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cluster(&self) -> u128 {
        self.cluster
    }

    /// This replica's index in the cluster.
    pub fn index(&self) -> u8 {
        self.replica
    }

    pub fn replica_count(&self) -> u8 {
        self.replica_count
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn view(&self) -> u32 {
        self.view
    }

    /// The last view in which this replica's log was the view's log (it was normal in it).
    pub fn log_view(&self) -> u32 {
        self.log_view
    }

    /// The head of the log.
    pub fn op(&self) -> u64 {
        self.op
    }

    /// The highest op applied to the state machine here.
    pub fn commit_min(&self) -> u64 {
        self.commit_min
    }

    /// The highest op known committed in the cluster.
    pub fn commit_max(&self) -> u64 {
        self.commit_max
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Record every header the journal installs from now on (`journal_installs_drain`): for
    /// the simulator's checkers, which compare each with the log of the view it was installed in.
    pub fn journal_installs_trace(&mut self) {
        self.journal.installs_trace();
    }

    /// Hands each header the journal installed since the last drain to `each` (op, checksum).
    pub fn journal_installs_drain(&mut self, each: impl FnMut(u64, u128)) {
        self.journal.installs_drain(each);
    }

    pub fn state_machine(&self) -> &M {
        &self.state_machine
    }

    /// Client sessions (as committed here).
    pub fn clients(&self) -> &ClientTable {
        &self.clients
    }

    /// The message pool the replica and its bus share.
    pub fn pool(&self) -> &MessagePool {
        &self.pool
    }

    /// Latency histograms for the operator (`metrics::Latencies`).
    pub fn latencies(&self) -> &crate::metrics::Latencies {
        &self.latencies
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// How the journal looked when this replica last opened (None while `Recovering`).
    pub fn recovery_report(&self) -> Option<&RecoveryReport> {
        self.recovery_report.as_ref()
    }
}

impl<S: Storage, B: MessageBus, T: Time, M: StateMachine> Replica<S, B, T, M> {
    /// An operator's `vsr status` asks (in any status, recovering included): the state as it
    /// stands, sent back to the asking connection. Changes nothing.
    pub(super) fn on_request_status(&mut self, request: &RequestStatus) {
        assert_ne!(request.client, 0);
        let report = self.status_report(request);
        self.send_header_to_client(request.client, report.to_header(self.cluster));
    }

    fn status_report(&self, request: &RequestStatus) -> StatusReport {
        StatusReport {
            client: request.client,
            nonce: request.nonce,
            ..self.status_now()
        }
    }

    /// The state as `vsr status` reports it (for no request: client and nonce 0), also what
    /// the metrics endpoint serves.
    pub fn status_now(&self) -> StatusReport {
        let status = match self.status {
            Status::Normal => STATUS_NORMAL,
            Status::ViewChange => STATUS_VIEW_CHANGE,
            Status::Recovering => STATUS_RECOVERING,
            Status::RecoveringHead => STATUS_RECOVERING_HEAD,
        };
        let mut flags = 0;
        for (on, flag) in [
            (
                self.status == Status::Normal && self.is_primary(),
                STATUS_FLAG_PRIMARY,
            ),
            (self.sync.is_some(), STATUS_FLAG_SYNCING),
            (self.rejoining(), STATUS_FLAG_REJOINING),
            (self.clock_synchronized(), STATUS_FLAG_CLOCK_SYNCHRONIZED),
        ] {
            if on {
                flags |= flag;
            }
        }
        StatusReport {
            client: 0,
            nonce: 0,
            replica: self.replica,
            replica_count: self.replica_count,
            status,
            flags,
            view: self.view,
            log_view: self.log_view,
            op: self.op,
            commit_min: self.commit_min,
            commit_max: self.commit_max,
            checkpoint_op: self.checkpoint().op,
            peers_heard: self.peers_heard_mask(),
            pipeline: u8::try_from(self.pipeline.len()).unwrap_or(u8::MAX),
            sync_target_op: self.sync.as_ref().map_or(0, |sync| sync.op),
            uptime_ms: Self::ticks_ms(self.ticks),
            version: release_version(),
        }
    }
}

/// This build's release (`Cargo.toml`), as a status_report carries it.
pub fn release_version() -> u64 {
    let part = |s: &str| s.parse::<u64>().unwrap_or(0);
    let (major, minor, patch) = (
        part(env!("CARGO_PKG_VERSION_MAJOR")),
        part(env!("CARGO_PKG_VERSION_MINOR")),
        part(env!("CARGO_PKG_VERSION_PATCH")),
    );
    major << 32 | minor << 16 | patch
}
