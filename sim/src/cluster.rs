//! The simulated cluster: production replicas on simulated seams, clients with a workload, fault
//! injection, and the safety and liveness checks.
//!
//! Process faults: a replica may crash (its disk and clock survive; writes in flight are lost,
//! written or torn) and restart later, or *pause*: for a while it is not run at all (no ticks,
//! no I/O completions, no messages; packets to it are held by the network, see `network.rs`)
//! while its clock and its disk keep running, then it resumes with its memory intact. A resumed
//! replica gets one `tick()` per simulator tick from then on, not a burst of the ticks it
//! missed, as a real event loop would behave after a stall.
//!
//! Scripted scenarios (`scenario.rs`) drive the same simulator with fault injection off
//! (`SimOptions::quiet`) and inject faults themselves.

use crate::checker::{Checker, ClusterTimeCheck};
use crate::durability::Durability;
use crate::ledger_check::{self, LEDGER_CHECK_INTERVAL};
use crate::network::{PacketSimulator, Process};
use crate::options::{Corruption, SimOptions};
use crate::rng::{chance, pick, range};
use crate::storage::{CrashFate, FaultAtlas, SimStorage, StorageStats};
use crate::time::SimTime;
use crate::view_log::ViewLogs;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;
use std::rc::Rc;
use vsr::bus::MessageBus;
use vsr::client::{Client, ClientBus, ClientEvent};
use vsr::config::SECTOR_SIZE;
use vsr::header::commands::{RequestStatus, StatusReport};
use vsr::header::{Command, Header, HEADER_SIZE};
use vsr::ledger::{workload::Workload, Ledger, LedgerConfig};
use vsr::message::{Message, MessagePool};
use vsr::replica::{Event, Replica, ReplicaOptions, ReplicaStats, Status};
use vsr::state_machine::{HashingStateMachine, StateMachine, HASHING_OPERATION};
use vsr::storage::{IoKind, Layout, Storage, Zone, SUPERBLOCK_COPIES};
use vsr::time::Time;

/// A client's bus. Sends are copied out as bytes, as a real network would carry them.
#[derive(Default)]
pub struct SimBus {
    pub outbox: Vec<(Process, Vec<u8>)>,
}

/// A replica's bus: sends as `SimBus`; messages from the network are received into the
/// replica's own pool (a handle to it), as the production bus does.
pub struct ReplicaBus {
    pub outbox: Vec<(Process, Vec<u8>)>,
    pub pool: MessagePool,
    /// Which replicas are up (bit per replica), shared by every bus: a crashed process's
    /// connections close at once, as TCP's would; a paused or partitioned one's do not.
    pub up: Rc<Cell<u64>>,
}

impl MessageBus for ReplicaBus {
    fn send_to_replica(&mut self, replica: u8, message: &Message) {
        self.outbox
            .push((Process::Replica(replica), message.bytes().to_vec()));
    }
    fn send_to_client(&mut self, client: u128, message: &Message) {
        self.outbox
            .push((Process::Client(client), message.bytes().to_vec()));
    }
    fn connected_to_replica(&self, replica: u8) -> bool {
        self.up.get() & (1 << replica) != 0
    }
}

impl ClientBus for SimBus {
    fn send_to_replica(&mut self, replica: u8, message: &Message) {
        self.outbox
            .push((Process::Replica(replica), message.bytes().to_vec()));
    }
}

/// The state machine a seed runs: the toy hashing machine (protocol-only checks, replies carry
/// the state digest) or the ledger (clients send random ledger batches).
pub enum SimStateMachine {
    Hashing(HashingStateMachine),
    Ledger(Box<Ledger>),
}

impl StateMachine for SimStateMachine {
    fn input_valid(&self, operation: u8, input: &[u8]) -> bool {
        match self {
            SimStateMachine::Hashing(m) => m.input_valid(operation, input),
            SimStateMachine::Ledger(m) => m.input_valid(operation, input),
        }
    }
    fn prepare_timestamps(&self, operation: u8, input: &[u8]) -> u64 {
        match self {
            SimStateMachine::Hashing(m) => m.prepare_timestamps(operation, input),
            SimStateMachine::Ledger(m) => m.prepare_timestamps(operation, input),
        }
    }
    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        input: &[u8],
        output: &mut [u8],
    ) -> usize {
        match self {
            SimStateMachine::Hashing(m) => {
                m.commit(client, op, timestamp, operation, input, output)
            }
            SimStateMachine::Ledger(m) => m.commit(client, op, timestamp, operation, input, output),
        }
    }
    fn digest(&self) -> u128 {
        match self {
            SimStateMachine::Hashing(m) => m.digest(),
            SimStateMachine::Ledger(m) => m.digest(),
        }
    }
    fn snapshot_size(&self) -> u64 {
        match self {
            SimStateMachine::Hashing(m) => m.snapshot_size(),
            SimStateMachine::Ledger(m) => m.snapshot_size(),
        }
    }
    fn snapshot_read(&self, offset: u64, out: &mut [u8]) {
        match self {
            SimStateMachine::Hashing(m) => m.snapshot_read(offset, out),
            SimStateMachine::Ledger(m) => m.snapshot_read(offset, out),
        }
    }
    fn snapshot_freeze(&mut self) {
        match self {
            SimStateMachine::Hashing(m) => m.snapshot_freeze(),
            SimStateMachine::Ledger(m) => m.snapshot_freeze(),
        }
    }
    fn snapshot_thaw(&mut self) {
        match self {
            SimStateMachine::Hashing(m) => m.snapshot_thaw(),
            SimStateMachine::Ledger(m) => m.snapshot_thaw(),
        }
    }
    fn restore_begin(&mut self, size: u64) {
        match self {
            SimStateMachine::Hashing(m) => m.restore_begin(size),
            SimStateMachine::Ledger(m) => m.restore_begin(size),
        }
    }
    fn restore_write(&mut self, bytes: &[u8]) {
        match self {
            SimStateMachine::Hashing(m) => m.restore_write(bytes),
            SimStateMachine::Ledger(m) => m.restore_write(bytes),
        }
    }
    fn restore_finish(&mut self) -> Result<(), String> {
        match self {
            SimStateMachine::Hashing(m) => m.restore_finish(),
            SimStateMachine::Ledger(m) => m.restore_finish(),
        }
    }
}

pub type SimReplica = Replica<SimStorage, ReplicaBus, SimTime, SimStateMachine>;

/// A replica slot: up, or down with what survives a crash (its disk and its clock).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Slot {
    Up(Box<SimReplica>),
    Down {
        storage: SimStorage,
        time: SimTime,
        /// `u64::MAX`: down until a scenario restarts it.
        restart_at: u64,
    },
    Empty,
}

pub(crate) struct SimClient {
    pub(crate) client: Client,
    pub(crate) bus: SimBus,
    pub(crate) requests_target: u64,
    pub(crate) requests_done: u64,
    pub(crate) pool: MessagePool,
    /// Replies the client accepted (each request's one reply).
    pub(crate) replies_accepted: u64,
    /// Reply messages for this client that arrived (duplicates and late copies included).
    pub(crate) replies_received: u64,
    /// Eviction messages that arrived for this client.
    pub(crate) evictions_received: u64,
    /// Request messages the client sent, retries included.
    pub(crate) requests_sent: u64,
    /// The last reply the client accepted (register included).
    pub(crate) last_reply: Option<Header>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FaultCounts {
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    pub packets_corrupted: u64,
    pub clock_excursions: u64,
    /// Excursions shared by half or more of the clocks (`clock_shared_excursion_probability`).
    pub clock_shared_excursions: u64,
    /// Crashes that lost the data file: the replica restarts from a `vsr recover` image.
    pub disks_lost: u64,
    /// Crashes at an I/O point (`IoPoint`): right after the replica submitted writes, right
    /// after one of its writes completed, right after it sent messages.
    pub crashes_after_write_submitted: u64,
    pub crashes_after_write_completed: u64,
    pub crashes_after_send: u64,
    /// Crashes right after a superblock copy was written (`superblock_crash_probability`).
    pub crashes_between_superblock_copies: u64,
    /// Long outages (`SimOptions::outage`) that started.
    pub outages: u64,
    /// Sectors corrupted where it hurts, per `Corruption` class.
    pub corrupted: [u64; Corruption::EVERY.len()],
    /// Acknowledged prepares lost or damaged, then a crash (`lose_acknowledged_write`): the
    /// write lost; lost with its ring sector damaged; prepare and ring sector damaged.
    pub acknowledged_writes_lost: [u64; 3],
    /// Primaries crashed as the backup a lost write crashed restarted.
    pub primary_crashes_after_lost_write: u64,
    /// Status requests answered (`Simulator::probe_status`); not a fault, counted here.
    pub status_probes: u64,
}

/// Where a replica stands when an I/O-point crash may strike: right after handling one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IoPoint {
    /// It submitted writes: they are in flight, each lost, written or torn by the crash.
    WriteSubmitted,
    /// One of its writes completed (and it acted on that): the next half of a multi-write
    /// step (a prepare's header-ring sector, the next superblock copy, the superblock after a
    /// checkpoint's chunks) is at most submitted.
    WriteCompleted,
    /// It sent messages: peers may act on what it said while it is down.
    MessageSent,
}

/// Journal checks (`Checker::check_journal`): after every step, each replica's newest
/// `pipeline_max + 2` committed ops (a view change window and its anchor: where view changes
/// and repair rewrite the log); every `JOURNAL_CHECK_INTERVAL` ticks, and at the end of a run,
/// its whole committed log. A whole-log check after every step would slow the VOPR by about a
/// fifth; this costs about a twentieth.
pub const JOURNAL_CHECK_INTERVAL: u64 = 16;

/// Every this many ticks the simulator asks one replica for a status report, as `vsr status`
/// would (`Simulator::probe_status`), from this client id.
const STATUS_PROBE_INTERVAL: u64 = 97;
const STATUS_PROBE_CLIENT: u128 = u128::MAX;

/// The healed cluster's whole budget, in multiples of the stall limit (`Simulator::run`).
pub const LIVENESS_PATIENCE: u64 = 4;

/// A simulated client's longest retry interval, in multiples of its first one (the real client
/// caps at 2.5x; 64x would be the library's default).
const CLIENT_REQUEST_TIMEOUT_MAX_MULTIPLE: u64 = 8;

pub struct Simulator {
    pub seed: u64,
    pub options: SimOptions,
    pub(crate) cluster: u128,
    pub(crate) rng: ChaCha8Rng,
    /// Pause decisions only, so that adding pauses left every other draw where it was.
    pause_rng: ChaCha8Rng,
    /// Disk-loss decisions and the new disks' seeds, likewise.
    disk_rng: ChaCha8Rng,
    /// I/O-point crashes, their restart times and the fates of writes in flight, likewise.
    io_crash_rng: ChaCha8Rng,
    /// Crashes between superblock copies (`SimOptions::superblock_crash_probability`), their
    /// restart times and the fates of writes in flight, likewise.
    superblock_crash_rng: ChaCha8Rng,
    /// Targeted corruption, likewise.
    corrupt_rng: ChaCha8Rng,
    /// Lost acknowledged writes, likewise.
    lost_rng: ChaCha8Rng,
    /// An acknowledgement drew a lost write (`SimOptions::lost_write_probability`): the op,
    /// applied at the I/O point that follows, once the acknowledgement has left.
    lost_write_pending: Option<u64>,
    /// A lost write crashed a backup (`SimOptions::lost_write_primary_crash`): (the backup, the
    /// primary of its view), the primary to crash as the backup restarts.
    crash_primary_on_restart: Option<(usize, usize)>,
    /// Those crashes' restart times, in a stream of their own.
    doom_rng: ChaCha8Rng,
    /// Shared clock excursions, likewise.
    shared_clock_rng: ChaCha8Rng,
    /// The status probe's request (`probe_status`), from outside the replica's pool.
    status_probe_pool: MessagePool,
    pub(crate) replicas: Vec<Slot>,
    /// Bit per replica: up (`ReplicaBus::up`).
    replicas_up: Rc<Cell<u64>>,
    /// Per replica: paused until this tick (exclusive), or running.
    pub(crate) paused_until: Vec<Option<u64>>,
    pub(crate) network: PacketSimulator,
    pub(crate) clients: Vec<SimClient>,
    pub checker: Checker,
    /// Every promise a replica sends, checked against its durable state (`durability.rs`).
    pub durability: Durability,
    /// Each view's log, and that replicas normal in a view hold it (`view_log`).
    pub view_logs: ViewLogs,
    /// Per replica: the view it was normal in after its last event (None: not normal), so that
    /// headers its journal installed during an event are checked only when it was normal in
    /// one view throughout.
    normal_view: Vec<Option<u32>>,
    /// Headers installed during the event being checked (a buffer reused).
    installs: Vec<(u64, u128)>,
    /// Per replica: it was recovering after its last event (its recovery's result is checked
    /// once, as it ends).
    recovering: Vec<bool>,
    pub tick: u64,
    pub faults: FaultCounts,
    pub(crate) faults_enabled: bool,
    /// Ticks between whole-log journal checks (1: after every step).
    pub journal_check_interval: u64,
    trace: bool,
    /// Stats of replica incarnations that crashed, so totals survive restarts.
    retired_stats: ReplicaStats,
    pub replies: u64,
    /// Cluster time: each prepare's timestamp against the simulator's true time.
    pub cluster_time: ClusterTimeCheck,
    pub evictions: u64,
    /// Ticks from the healing of the cluster to full convergence (None: not converged).
    pub heal_to_converge_ticks: Option<u64>,
    /// Why a cluster that did not converge was not a liveness failure (`stuck_by_double_fault`).
    pub liveness_excused: Option<String>,
    /// Ledger seeds: the request generator and its own random stream.
    workload: Option<(Workload, ChaCha8Rng)>,
    body: Vec<u8>,
}

/// SplitMix64 of a tagged seed: independent streams from one seed.
pub(crate) fn derive_seed(seed: u64, tag: u64) -> u64 {
    let mut z = seed ^ tag;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const TAG_WORLD: u64 = 0x776f_726c_6400_0000; // "world"
const TAG_PAUSE: u64 = 0x7061_7573_6500_0000; // "pause"
const TAG_LEDGER: u64 = 0x6c65_6467_6572_0000; // "ledger"
const TAG_DISK: u64 = 0x6469_736b_0000_0000; // "disk"
const TAG_IO_CRASH: u64 = 0x696f_6372_6173_6800; // "iocrash"
const TAG_SUPERBLOCK_CRASH: u64 = 0x7362_6372_6173_6800; // "sbcrash"
const TAG_CORRUPT: u64 = 0x636f_7272_7570_7400; // "corrupt"
const TAG_LOST: u64 = 0x6c6f_7374_0000_0000; // "lost"
const TAG_DOOM: u64 = 0x646f_6f6d_0000_0000; // "doom"
const TAG_SHARED_CLOCK: u64 = 0x6e74_7000_0000_0000; // "ntp"

impl Simulator {
    /// A swarm-tested run: the seed draws the options (`SimOptions::generate`), then the world.
    ///
    /// The world's draws continue the options' stream, and pauses draw from a stream of their
    /// own, so a seed whose run has no pause replays exactly as it did before pauses existed:
    /// regression seeds keep their meaning.
    pub fn new(seed: u64, trace: bool) -> Simulator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut options = SimOptions::generate(&mut rng);
        // Half the seeds run the ledger; drawn from a stream of its own so that hashing seeds
        // replay as they did before the ledger joined the VOPR.
        let mut ledger_rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_LEDGER));
        options.ledger = crate::rng::chance(&mut ledger_rng, 0.5);
        Simulator::build(seed, options, rng, trace)
    }

    /// A run with the given options; the seed drives everything random in the world (cluster
    /// id, fault atlas, network, disks, clocks, clients). Faults are injected as the options
    /// say: use `SimOptions::quiet` for a fault-free world that a scenario controls.
    pub fn with_options(seed: u64, options: SimOptions, trace: bool) -> Simulator {
        let rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_WORLD));
        Simulator::build(seed, options, rng, trace)
    }

    fn build(seed: u64, options: SimOptions, mut rng: ChaCha8Rng, trace: bool) -> Simulator {
        let cluster_time = ClusterTimeCheck::new(&options);
        assert_eq!(options.config.replica_count, options.replica_count);
        assert_eq!(options.requests_per_client.len(), options.client_count);
        assert_eq!(
            options.clock_offsets_ns.len(),
            options.replica_count as usize
        );
        assert_eq!(
            options.clock_drifts_ppm.len(),
            options.replica_count as usize
        );
        options.config.validate().expect("simulator configuration");
        let cluster = (rng.next_u64() as u128) << 64 | rng.next_u64() as u128;
        let layout = Layout::new(&options.config);
        let mut atlas = FaultAtlas::new(
            options.replica_count,
            options.config.quorum_replication(),
            &layout,
            rng.next_u64(),
        );
        if options.lost_write_primary_crash {
            atlas.correlate_ring_with_prepares();
        }
        let atlas = Rc::new(atlas);
        let network = PacketSimulator::new(
            options.replica_count,
            options.network.clone(),
            rng.next_u64(),
        );
        let mut replicas = Vec::new();
        for replica in 0..options.replica_count {
            let mut storage = SimStorage::new(
                layout.clone(),
                replica,
                options.storage.clone(),
                atlas.clone(),
                rng.next_u64(),
            );
            storage.set_keep_replaced_prepares(options.lost_write_probability > 0.0);
            for (zone, offset, bytes) in
                vsr::format::format_writes(&options.config, cluster, replica)
            {
                storage.write_raw(zone, offset, &bytes);
            }
            let mut time = SimTime::new(
                vsr::config::TICK_MS * 1_000_000,
                options.clock_offsets_ns[replica as usize],
                options.clock_drifts_ppm[replica as usize],
                rng.next_u64(),
            );
            time.set_realtime_drift_max_ns(options.realtime_drift_max_ns());
            replicas.push(Slot::Down {
                storage,
                time,
                restart_at: 0,
            });
        }
        let clients = (0..options.client_count)
            .map(|i| {
                let id = (rng.next_u64() as u128) << 64 | (i as u128 + 1);
                let mut client = Client::new(
                    id,
                    cluster,
                    options.replica_count,
                    options.config.message_size_max as usize,
                    options.config.request_timeout_ticks,
                    rng.next_u64(),
                );
                // Like the real client, retry at a bounded interval: left at the library's 64x,
                // a client that backed off during the faults slept through most of the liveness
                // window (VOPR seed 1091968221074316527: 127 s between its last two retries).
                client.set_request_timeout_max_ticks(
                    options.config.request_timeout_ticks * CLIENT_REQUEST_TIMEOUT_MAX_MULTIPLE,
                );
                SimClient {
                    client,
                    bus: SimBus::default(),
                    requests_target: options.requests_per_client[i],
                    requests_done: 0,
                    pool: MessagePool::new(4, options.config.message_size_max as usize),
                    replies_accepted: 0,
                    replies_received: 0,
                    evictions_received: 0,
                    requests_sent: 0,
                    last_reply: None,
                }
            })
            .collect();
        let mut sim = Simulator {
            seed,
            checker: Checker::new(options.replica_count as usize),
            durability: Durability::new(options.replica_count, layout.clone()),
            view_logs: ViewLogs::default(),
            normal_view: vec![None; options.replica_count as usize],
            installs: Vec::new(),
            recovering: vec![false; options.replica_count as usize],
            options,
            cluster,
            rng,
            pause_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_PAUSE)),
            disk_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_DISK)),
            io_crash_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_IO_CRASH)),
            superblock_crash_rng: ChaCha8Rng::seed_from_u64(derive_seed(
                seed,
                TAG_SUPERBLOCK_CRASH,
            )),
            corrupt_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_CORRUPT)),
            lost_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_LOST)),
            lost_write_pending: None,
            crash_primary_on_restart: None,
            doom_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_DOOM)),
            shared_clock_rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_SHARED_CLOCK)),
            status_probe_pool: MessagePool::new(1, SECTOR_SIZE),
            paused_until: vec![None; replicas.len()],
            replicas,
            network,
            clients,
            tick: 0,
            faults: FaultCounts::default(),
            faults_enabled: true,
            journal_check_interval: JOURNAL_CHECK_INTERVAL,
            heal_to_converge_ticks: None,
            replicas_up: Rc::new(Cell::new(0)),
            liveness_excused: None,
            trace,
            retired_stats: ReplicaStats::default(),
            replies: 0,
            cluster_time,
            evictions: 0,
            workload: None,
            body: Vec::new(),
        };
        if sim.options.ledger {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, TAG_LEDGER + 1));
            let workload = Workload::new(&mut rng);
            sim.body = vec![0u8; sim.ledger_config().body_size_max()];
            sim.workload = Some((workload, rng));
        }
        for replica in 0..sim.options.replica_count {
            sim.restart(replica as usize);
        }
        sim.faults.restarts = 0;
        sim
    }

    fn ledger_config(&self) -> LedgerConfig {
        LedgerConfig {
            accounts_max: 1 << 10,
            transfers_max: 1 << 13,
            message_size_max: self.options.config.message_size_max,
        }
    }

    fn new_state_machine(&self) -> SimStateMachine {
        if self.options.ledger {
            SimStateMachine::Ledger(Box::new(Ledger::new(self.ledger_config())))
        } else {
            SimStateMachine::Hashing(HashingStateMachine::default())
        }
    }

    pub(crate) fn trace_enabled(&self) -> bool {
        self.trace
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    pub(crate) fn restart(&mut self, index: usize) {
        let Slot::Down {
            mut storage, time, ..
        } = std::mem::replace(&mut self.replicas[index], Slot::Empty)
        else {
            panic!("restart of a replica that is up");
        };
        storage.reset_shadow();
        self.durability.on_open(index as u8, &storage);
        if self.trace {
            let sequences: Vec<_> = (self.durability.durable_copies(&storage))
                .iter()
                .map(|c| {
                    c.as_ref().map(|c| {
                        let v = &c.vsr_state;
                        (
                            c.sequence,
                            v.view,
                            v.log_view,
                            v.commit_max,
                            v.checkpoint.op,
                        )
                    })
                })
                .collect();
            eprintln!("[sim] restart replica {index}: superblock copies (sequence, view, log_view, commit_max, checkpoint) {sequences:?}");
        }
        let config = &self.options.config;
        let pool = MessagePool::new(config.messages_max(), config.message_size_max as usize);
        let bus = ReplicaBus {
            outbox: Vec::new(),
            pool: pool.clone(),
            up: Rc::clone(&self.replicas_up),
        };
        self.replicas_up.set(self.replicas_up.get() | 1 << index);
        let mut replica = Replica::open_with_pool(
            ReplicaOptions {
                cluster: self.cluster,
                replica: index as u8,
                config: config.clone(),
                seed: self.seed,
                trace: self.trace,
            },
            pool,
            storage,
            bus,
            time,
            self.new_state_machine(),
        );
        replica.journal_installs_trace();
        self.normal_view[index] = None;
        self.recovering[index] = true;
        self.replicas[index] = Slot::Up(Box::new(replica));
        self.network
            .set_process_up(Process::Replica(index as u8), true);
        self.checker.on_restart(index);
        self.faults.restarts += 1;
        self.crash_primary_maybe(index);
    }

    fn crash(&mut self, index: usize) {
        let restart_at = self.tick + self.options.restart_delay_ticks(&mut self.rng);
        self.crash_with(index, restart_at, |_, _, _| CrashFate::Random);
        if self.options.disk_loss_probability > 0.0
            && self.faults.disks_lost == 0
            && chance(&mut self.disk_rng, self.options.disk_loss_probability)
            && self.others_can_change_views(index)
        {
            self.lose_disk_now(index);
        }
    }

    /// Whether the replicas other than `index` include a view-change quorum that can vote:
    /// none of them up with an uncertain head (`Recovering`/`RecoveringHead`) or rejoining
    /// itself (a replica that is down merely crashed, and votes again once restarted).
    /// `vsr recover` requires this of the cluster (docs/operations.md): the re-created replica
    /// does not vote until it has caught up, so without such a quorum no view change could
    /// complete. (Seed 703482914369808875: replica 1 lost its disk while replica 3 was in
    /// `RecoveringHead`, leaving 2 voters of 4 where a view change needs 3.)
    fn others_can_change_views(&self, index: usize) -> bool {
        let quorum = vsr::config::quorums(self.replicas.len()).1;
        let voters = self
            .replicas
            .iter()
            .enumerate()
            .filter(|&(i, slot)| {
                i != index
                    && match slot {
                        Slot::Up(r) => {
                            matches!(r.status(), Status::Normal | Status::ViewChange)
                                && !r.rejoining()
                        }
                        _ => true,
                    }
            })
            .count();
        voters >= quorum
    }

    /// The crashed replica `index` lost its data file: it gets a blank disk holding what
    /// `vsr recover` writes (formatted, `rejoining`), and rejoins from its peers.
    pub(crate) fn lose_disk_now(&mut self, index: usize) {
        let seed = self.disk_rng.next_u64();
        let Slot::Down { storage, .. } = &mut self.replicas[index] else {
            panic!("disk loss of replica {index}, which is up");
        };
        let mut disk = storage.replaced(seed);
        for (zone, offset, bytes) in
            vsr::format::recover_writes(&self.options.config, self.cluster, index as u8)
        {
            disk.write_raw(zone, offset, &bytes);
        }
        *storage = disk;
        self.durability.on_disk_lost(index as u8);
        self.faults.disks_lost += 1;
        if self.trace {
            eprintln!("[sim] replica {index} lost its disk");
        }
    }

    /// Crashes replica `index` now: `fate` decides each write in flight; it restarts at
    /// `restart_at` (`u64::MAX`: only when a scenario restarts it).
    pub(crate) fn crash_with(
        &mut self,
        index: usize,
        restart_at: u64,
        fate: impl Fn(Zone, u64, usize) -> CrashFate,
    ) {
        let Slot::Up(replica) = std::mem::replace(&mut self.replicas[index], Slot::Empty) else {
            panic!("crash of replica {index}, which is down");
        };
        self.resume(index);
        add_stats(&mut self.retired_stats, replica.stats());
        let (mut storage, _bus, time, _sm) = replica.into_parts();
        storage.crash_with(fate);
        self.replicas_up.set(self.replicas_up.get() & !(1 << index));
        self.replicas[index] = Slot::Down {
            storage,
            time,
            restart_at,
        };
        self.network
            .set_process_up(Process::Replica(index as u8), false);
        self.faults.crashes += 1;
        if self.trace {
            eprintln!("[sim] crash replica {index} until tick {restart_at}");
        }
    }

    /// Pauses replica `index` (up, running) until tick `until`.
    pub(crate) fn pause(&mut self, index: usize, until: u64) {
        assert!(
            matches!(self.replicas[index], Slot::Up(_)),
            "pause of a down replica"
        );
        assert!(until > self.tick);
        self.paused_until[index] = Some(until);
        self.network
            .set_process_paused(Process::Replica(index as u8), true);
        self.faults.pauses += 1;
        if self.trace {
            eprintln!("[sim] pause replica {index} until tick {until}");
        }
    }

    /// Resumes replica `index` if it is paused.
    pub(crate) fn resume(&mut self, index: usize) {
        if self.paused_until[index].take().is_some() {
            self.network
                .set_process_paused(Process::Replica(index as u8), false);
            if self.trace {
                eprintln!("[sim] resume replica {index}");
            }
        }
    }

    pub(crate) fn paused(&self, index: usize) -> bool {
        self.paused_until[index].is_some()
    }

    /// Replicas down or paused, not counting `except`.
    fn unavailable_count(&self, except: usize) -> usize {
        (0..self.replicas.len())
            .filter(|&i| {
                i != except && (!matches!(self.replicas[i], Slot::Up(_)) || self.paused(i))
            })
            .count()
    }

    /// One tick of the whole world.
    pub fn step(&mut self) -> Result<(), String> {
        self.tick += 1;
        self.inject_faults();
        for index in 0..self.replicas.len() {
            if self.paused_until[index].is_some_and(|until| until <= self.tick) {
                self.resume(index);
            }
        }
        for index in 0..self.replicas.len() {
            self.step_replica(index)?;
        }
        if self.tick.is_multiple_of(STATUS_PROBE_INTERVAL) {
            let index = (self.tick / STATUS_PROBE_INTERVAL) as usize % self.replicas.len();
            self.probe_status(index)?;
        }
        self.network.tick();
        for (from, to, mut bytes) in self.network.deliver() {
            if self.faults_enabled
                && chance(&mut self.rng, self.options.packet_corrupt_probability)
                && !bytes.is_empty()
            {
                let at = (self.rng.next_u64() % bytes.len() as u64) as usize;
                bytes[at] ^= 1 << (self.rng.next_u32() % 8);
                self.faults.packets_corrupted += 1;
            }
            let _ = from;
            match to {
                Process::Replica(r) => self.deliver_to_replica(r as usize, &bytes)?,
                Process::Client(id) => self.deliver_to_client(id, &bytes)?,
            }
        }
        self.step_clients();
        if self.tick.is_multiple_of(LEDGER_CHECK_INTERVAL) {
            self.check_ledgers(false)?;
        }
        if self.tick.is_multiple_of(self.journal_check_interval.max(1)) {
            self.check_journals()
        } else {
            self.check_journals_window(self.options.config.pipeline_max as u64 + 2)
        }
    }

    /// `Checker::check_journal` over the whole committed log of every replica that is up and
    /// past `Recovering`.
    pub fn check_journals(&self) -> Result<(), String> {
        self.check_journals_window(u64::MAX)
    }

    /// `Checker::check_journal` over the newest `window` committed ops of every replica that is
    /// up and past `Recovering`.
    pub fn check_journals_window(&self, window: u64) -> Result<(), String> {
        for (index, slot) in self.replicas.iter().enumerate() {
            let Slot::Up(replica) = slot else { continue };
            if replica.status() == Status::Recovering {
                continue;
            }
            let journal = replica.journal();
            // Every op the journal still holds at or below the commit point, the checkpoint's
            // included (the replica serves them to peers' repair as committed), except those at
            // or below the checkpoint it opened with: ops a state sync moved past are forgotten
            // in memory only, and a restart reads them back from their slots (seeds
            // 2433836099227641582, op 113, and 171131714279371240, op 108; a known gap,
            // docs/testing.md).
            let slots = u64::from(self.options.config.journal_slot_count);
            let opened = self.durability.opened_checkpoint_op(index as u8);
            self.checker.check_journal(
                index,
                replica
                    .commit_min()
                    .saturating_sub(window)
                    .max(replica.commit_min().saturating_sub(slots) + 1)
                    .max(opened + 1),
                replica.commit_min(),
                |op| journal.header(op),
                |op| journal.is_dirty(op),
            )?;
        }
        Ok(())
    }

    /// The ledger checker (`ledger_check`) on every replica that runs the ledger, is up, past
    /// `Recovering` and has a state: double entry and limits, and with `full` also every
    /// account's balances against its transfers.
    pub fn check_ledgers(&self, full: bool) -> Result<(), String> {
        for (index, slot) in self.replicas.iter().enumerate() {
            let Slot::Up(replica) = slot else { continue };
            if replica.status() == Status::Recovering || !replica.state_available() {
                continue;
            }
            let SimStateMachine::Ledger(ledger) = replica.state_machine() else {
                continue;
            };
            let at = |e: String| {
                format!(
                    "ledger: replica {index} at op {}: {e}",
                    replica.commit_min()
                )
            };
            ledger_check::check_balances(ledger).map_err(at)?;
            if full {
                ledger_check::check_transfers(ledger).map_err(at)?;
            }
        }
        Ok(())
    }

    /// `Checker::check_acknowledged`, and its journal form against every replica that is up and
    /// past `Recovering`: no acknowledged op was lost.
    pub fn check_acknowledged(&self) -> Result<(), String> {
        self.checker.check_acknowledged()?;
        for (index, slot) in self.replicas.iter().enumerate() {
            let Slot::Up(replica) = slot else { continue };
            if replica.status() == Status::Recovering {
                continue;
            }
            let journal = replica.journal();
            self.checker.check_acknowledged_journal(
                index,
                replica.commit_min(),
                replica.checkpoint().op,
                |op| journal.header(op),
            )?;
        }
        Ok(())
    }

    /// The whole VOPR run: `ticks_max` ticks of faults, then heal and require convergence; the
    /// journals and acknowledged ops are checked at the end.
    ///
    /// The healed cluster fails for liveness when it goes `liveness_ticks_max` ticks without
    /// progress (no commit on any replica, no client request completed), or when it has not
    /// converged after `LIVENESS_PATIENCE` times that: a stall fails fast, while a slow but live
    /// run (a big workload on a slow configuration) is not mistaken for one.
    pub fn run(&mut self, ticks_max: u64, liveness_ticks_max: u64) -> Result<(), String> {
        while self.tick < ticks_max {
            self.step()?;
        }
        self.heal();
        let healed = self.tick;
        let cap = healed + LIVENESS_PATIENCE * liveness_ticks_max;
        let mut progress = self.progress();
        let mut progress_tick = self.tick;
        while self.tick < cap && self.tick - progress_tick < liveness_ticks_max {
            self.step()?;
            if self.converged() {
                self.heal_to_converge_ticks = Some(self.tick - healed);
                self.check_journals()?;
                self.check_ledgers(true)?;
                return self.check_acknowledged();
            }
            let now = self.progress();
            if now != progress {
                progress = now;
                progress_tick = self.tick;
            }
        }
        if let Some(reason) = self.stuck_by_double_fault() {
            self.liveness_excused = Some(reason);
            return Ok(());
        }
        Err(format!(
            "liveness: no convergence {} ticks after healing ({} without progress):{}",
            self.tick - healed,
            self.tick - progress_tick,
            self.describe_state()
        ))
    }

    /// A stall the protocol must not resolve, so not a liveness failure. Three shapes, each the
    /// work of two faults on different replicas, beyond the one the fault atlas guarantees the
    /// cluster survives:
    /// - replicas in RecoveringHead (a crash tore their ring and a prepare; they may have
    ///   acknowledged what they lost) leave too few voters for any view change;
    /// - an op above every replica's commit point, as the voters hold it, is intact on no
    ///   replica's disk, and too few replicas can prove they never acknowledged it (a replica
    ///   whose slot for it is damaged, or lost its head, proves nothing), so the view change
    ///   can neither repair it nor truncate it. One replica's only copy damaged where the atlas
    ///   allows it, and another's write of it torn by a crash (crash tears, as in TigerBeetle's
    ///   simulator, are outside the atlas), make this; so does that copy damaged while the
    ///   other replica lost its head.
    /// - every replica either lost its head or lost the only copy of its checkpoint (no peer
    ///   holds it or a newer one to sync from), so none can lead a view or serve a state.
    fn stuck_by_double_fault(&self) -> Option<String> {
        let up: Vec<&SimReplica> = self
            .replicas
            .iter()
            .filter_map(|slot| match slot {
                Slot::Up(r) => Some(&**r),
                _ => None,
            })
            .collect();
        if up.len() != self.replicas.len() || up.iter().any(|r| r.status() == Status::Normal) {
            return None;
        }
        let head_lost = up
            .iter()
            .filter(|r| r.status() == Status::RecoveringHead)
            .count();
        let voters = up.len() - head_lost;
        if head_lost > 0 && voters < up[0].quorum_view_change() {
            return Some(format!(
                "{head_lost} replica(s) lost their head and the {voters} left cannot form a view-change quorum"
            ));
        }
        // A replica whose durable checkpoint is damaged fetches the state from a peer holding
        // that checkpoint or a newer one; where none does (it wrote the only copy while the
        // others lagged, and the copy was damaged), it cannot serve or lead. With every other
        // replica in RecoveringHead, nobody can (seed 282571419510913469).
        let orphans = (0..up.len())
            .filter(|&i| {
                let op = up[i].checkpoint().op;
                !up[i].state_available()
                    && (0..up.len()).all(|j| j == i || up[j].checkpoint().op < op)
            })
            .count();
        if orphans > 0 && head_lost > 0 && orphans + head_lost == up.len() {
            return Some(format!(
                "{orphans} replica(s) lost the only copy of their checkpoint and the other \
                 {head_lost} lost their head"
            ));
        }
        let commit_max = up.iter().map(|r| r.commit_max()).max()?;
        let op_max = up.iter().map(|r| r.op()).max()?;
        for op in commit_max + 1..=op_max {
            // The versions the view change can choose: the voters' (a replica in
            // RecoveringHead sends no do_view_change, so its own copy of another version
            // repairs nothing; seed 785571975232547351).
            let checksums: Vec<u128> = up
                .iter()
                .filter(|r| r.status() != Status::RecoveringHead)
                .filter_map(|r| r.journal().header(op).map(|h| h.checksum))
                .collect();
            let held = checksums
                .iter()
                .any(|&c| up.iter().any(|r| prepare_on_disk(r, op, c)));
            // Voters that can prove they never acknowledged the op: their head is below it, or
            // their slot for it is empty or dirty but readable (a damaged slot proves nothing).
            let nacks = up
                .iter()
                .filter(|r| r.status() != Status::RecoveringHead)
                .filter(|r| r.op() < op || !r.journal().is_faulty_slot(op))
                .count();
            let quorum_nack = up.len() - up[0].quorum_replication() + 1;
            if !checksums.is_empty() && !held && nacks < quorum_nack {
                return Some(format!(
                    "op {op} (above every commit point) is intact on no replica's disk and only \
                     {nacks} of the {quorum_nack} nacks needed can form ({head_lost} replica(s) \
                     lost their head)"
                ));
            }
        }
        None
    }

    /// Commits on every replica that is up, and requests completed by every client.
    fn progress(&self) -> u64 {
        let commits: u64 = self
            .replicas
            .iter()
            .filter_map(|slot| match slot {
                Slot::Up(r) => Some(r.commit_min()),
                _ => None,
            })
            .sum();
        let requests: u64 = self.clients.iter().map(|c| c.requests_done).sum();
        commits + requests
    }

    /// Corrupts, with `corruption_probability` per tick, one sector where it hurts: a class the
    /// seed turned on, on a random replica that is up, where the fault atlas allows it.
    fn inject_corruption(&mut self) {
        if !self.faults_enabled
            || self.options.corruption_probability == 0.0
            || !chance(&mut self.corrupt_rng, self.options.corruption_probability)
        {
            return;
        }
        let classes: Vec<Corruption> = Corruption::EVERY
            .into_iter()
            .filter(|c| c.on(self.options.corruption_classes))
            .collect();
        let class = *pick(&mut self.corrupt_rng, &classes);
        let index = crate::rng::index(&mut self.corrupt_rng, self.replicas.len());
        let Some((zone, offset)) = self.corruption_target(index, class) else {
            return;
        };
        let Slot::Up(replica) = &mut self.replicas[index] else {
            unreachable!()
        };
        let storage = replica.seams().storage;
        let atlas = Rc::clone(storage.atlas());
        if !atlas.faulty(index as u8, zone, atlas.area_of(zone, offset))
            || storage.fault_spared(zone, offset, SECTOR_SIZE)
        {
            return;
        }
        storage.corrupt_sector_at(zone, offset, &mut self.corrupt_rng);
        self.faults.corrupted[class as usize] += 1;
        if self.trace {
            eprintln!("[sim] replica {index}: corrupted {class:?} at {zone:?}+{offset}");
        }
    }

    /// The first sector of what `class` aims at on replica `index`, if it is up and holds one.
    fn corruption_target(&mut self, index: usize, class: Corruption) -> Option<(Zone, u64)> {
        let Slot::Up(r) = &self.replicas[index] else {
            return None;
        };
        if r.status() == Status::Recovering {
            return None;
        }
        let layout = r.storage().layout().clone();
        let rng = &mut self.corrupt_rng;
        let prepare = |op: u64| (op % layout.slot_count) * layout.message_size_max;
        match class {
            Corruption::CommittedPrepare => {
                let (first, last) = (r.checkpoint().op + 1, r.commit_min());
                (first <= last).then(|| (Zone::WalPrepares, prepare(range(rng, first, last))))
            }
            Corruption::ViewChangeHead => {
                let pipeline = self.options.config.pipeline_max as u64;
                let (first, last) = (r.op().saturating_sub(pipeline - 1).max(1), r.op());
                (r.status() == Status::ViewChange && first <= last)
                    .then(|| (Zone::WalPrepares, prepare(range(rng, first, last))))
            }
            Corruption::HeaderRing => {
                let sectors = layout.wal_headers_size / SECTOR_SIZE as u64;
                Some((
                    Zone::WalHeaders,
                    range(rng, 0, sectors - 1) * SECTOR_SIZE as u64,
                ))
            }
            Corruption::SuperblockCopy => {
                let copy = range(rng, 0, SUPERBLOCK_COPIES as u64 - 1);
                Some((Zone::Superblock, copy * layout.superblock_copy_size))
            }
            Corruption::CheckpointChunk => {
                let checkpoint = r.checkpoint();
                (checkpoint.op > 0).then(|| {
                    let chunk = range(rng, 0, checkpoint.chunks as u64 - 1) as u32;
                    let offset = layout.checkpoint_block_offset(checkpoint.area, chunk);
                    (Zone::Checkpoint, offset)
                })
            }
        }
    }

    fn inject_faults(&mut self) {
        self.inject_corruption();
        if let Some(outage) = self.options.outage {
            let index = outage.replica as usize;
            if self.faults_enabled
                && self.tick == outage.start_tick
                && matches!(self.replicas[index], Slot::Up(_))
                && self.unavailable_count(index) < self.options.crashed_max
            {
                let restart_at = self.tick + outage.duration_ticks;
                self.crash_with(index, restart_at, |_, _, _| CrashFate::Random);
                self.faults.outages += 1;
            }
        }
        for index in 0..self.replicas.len() {
            match &self.replicas[index] {
                Slot::Down { restart_at, .. } if *restart_at <= self.tick => self.restart(index),
                Slot::Up(_)
                    if self.faults_enabled
                        && self.unavailable_count(index) < self.options.crashed_max
                        && chance(&mut self.rng, self.options.crash_probability) =>
                {
                    self.crash(index)
                }
                _ => {}
            }
        }
        if self.faults_enabled && self.options.pause_probability > 0.0 {
            for index in 0..self.replicas.len() {
                if matches!(self.replicas[index], Slot::Up(_))
                    && !self.paused(index)
                    && self.unavailable_count(index) < self.options.crashed_max
                    && chance(&mut self.pause_rng, self.options.pause_probability)
                {
                    let ticks = range(
                        &mut self.pause_rng,
                        self.options.pause_ticks_min,
                        self.options.pause_ticks_max,
                    );
                    self.pause(index, self.tick + ticks);
                }
            }
        }
        if self.faults_enabled
            && self.options.clock_shared_excursion_probability > 0.0
            && chance(
                &mut self.shared_clock_rng,
                self.options.clock_shared_excursion_probability,
            )
        {
            self.shared_excursion();
        }
        if self.faults_enabled {
            for index in 0..self.replicas.len() {
                if chance(&mut self.rng, self.options.clock_excursion_probability) {
                    let tolerance = self.options.config.clock_offset_tolerance_max_ns;
                    let magnitude = range(&mut self.rng, tolerance * 2, tolerance * 10) as i64;
                    let sign = if self.rng.next_u32().is_multiple_of(2) {
                        1
                    } else {
                        -1
                    };
                    let duration = range(&mut self.rng, 100, 1000);
                    let time = match &mut self.replicas[index] {
                        Slot::Up(r) => r.seams().time,
                        Slot::Down { time, .. } => time,
                        Slot::Empty => unreachable!(),
                    };
                    time.excursion(sign * magnitude, duration);
                    self.faults.clock_excursions += 1;
                    self.cluster_time.on_excursion(index, self.tick + duration);
                    if self.trace {
                        eprintln!(
                            "[sim] replica {index}: clock excursion of {} ms for {duration} ticks",
                            sign * magnitude / 1_000_000
                        );
                    }
                }
            }
        }
    }

    /// A bad time source (`SimOptions::clock_shared_excursion_probability`): half or more of
    /// the replicas' wall clocks take one excursion together.
    fn shared_excursion(&mut self) {
        let rng = &mut self.shared_clock_rng;
        let count = self.replicas.len();
        let members = range(rng, count.div_ceil(2) as u64, count as u64) as usize;
        let mut order: Vec<usize> = (0..count).collect();
        crate::rng::shuffle(rng, &mut order);
        let tolerance = self.options.config.clock_offset_tolerance_max_ns;
        let magnitude = range(rng, tolerance * 2, tolerance * 30) as i64;
        let offset = if chance(rng, 0.5) {
            magnitude
        } else {
            -magnitude
        };
        let duration = range(rng, 100, 3000);
        for &index in &order[..members] {
            let time = match &mut self.replicas[index] {
                Slot::Up(r) => r.seams().time,
                Slot::Down { time, .. } => time,
                Slot::Empty => unreachable!(),
            };
            time.excursion(offset, duration);
            self.faults.clock_excursions += 1;
            self.cluster_time.on_excursion(index, self.tick + duration);
        }
        self.faults.clock_shared_excursions += 1;
        if self.trace {
            eprintln!(
                "[sim] replicas {:?}: shared clock excursion of {} ms for {duration} ticks",
                &order[..members],
                offset / 1_000_000
            );
        }
    }

    fn step_replica(&mut self, index: usize) -> Result<(), String> {
        let paused = self.paused(index);
        let replica = match &mut self.replicas[index] {
            Slot::Up(r) if paused => {
                // Not run: its clock and its disk go on; completions wait for it.
                let seams = r.seams();
                seams.time.tick();
                seams.storage.tick();
                return Ok(());
            }
            Slot::Up(r) => r,
            Slot::Down { time, storage, .. } => {
                time.tick();
                let _ = storage;
                return Ok(());
            }
            Slot::Empty => unreachable!(),
        };
        let seams = replica.seams();
        seams.time.tick();
        seams.storage.tick();
        // Each completion is its own event: what the replica sends in answer to one is checked
        // against the disk as it stood then, before the next write lands, and a crash may
        // strike right after it.
        loop {
            let Slot::Up(replica) = &mut self.replicas[index] else {
                return Ok(());
            };
            let writes = replica.storage().stats().writes;
            let Some(completion) = replica.seams().storage.next_completion() else {
                break;
            };
            let wrote = (completion.kind == IoKind::Write).then_some(completion.zone);
            replica.on_io_completion(completion);
            let sent = self.flush_replica(index)?;
            self.io_point(index, writes, wrote, sent);
        }
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        let writes = replica.storage().stats().writes;
        replica.tick();
        let sent = self.flush_replica(index)?;
        self.io_point(index, writes, None, sent);
        Ok(())
    }

    /// Replica `index` just handled one event, having submitted writes if the storage's count
    /// moved past `writes_before`, completed a write to `wrote` (its zone), and sent `sent`
    /// messages: an I/O-point crash may strike right here (`SimOptions::io_crash_probability`),
    /// and between two superblock copies (`SimOptions::superblock_crash_probability`).
    fn io_point(&mut self, index: usize, writes_before: u64, wrote: Option<Zone>, sent: usize) {
        if let Some(op) = self.lost_write_pending.take() {
            self.lose_acknowledged_write(index, op);
            return;
        }
        let Slot::Up(replica) = &self.replicas[index] else {
            return;
        };
        let point = if replica.storage().stats().writes > writes_before {
            IoPoint::WriteSubmitted
        } else if wrote.is_some() {
            IoPoint::WriteCompleted
        } else if sent > 0 {
            IoPoint::MessageSent
        } else {
            return;
        };
        if !self.faults_enabled || self.unavailable_count(index) >= self.options.crashed_max {
            return;
        }
        if wrote == Some(Zone::Superblock)
            && self.options.superblock_crash_probability > 0.0
            && chance(
                &mut self.superblock_crash_rng,
                self.options.superblock_crash_probability,
            )
        {
            let mut rng = self.superblock_crash_rng.clone();
            self.crash_at_io_point(index, &mut rng);
            self.superblock_crash_rng = rng;
            self.faults.crashes_between_superblock_copies += 1;
            return;
        }
        if self.options.io_crash_probability == 0.0
            || !chance(&mut self.io_crash_rng, self.options.io_crash_probability)
        {
            return;
        }
        let mut rng = self.io_crash_rng.clone();
        self.crash_at_io_point(index, &mut rng);
        self.io_crash_rng = rng;
        match point {
            IoPoint::WriteSubmitted => self.faults.crashes_after_write_submitted += 1,
            IoPoint::WriteCompleted => self.faults.crashes_after_write_completed += 1,
            IoPoint::MessageSent => self.faults.crashes_after_send += 1,
        }
        if self.trace {
            eprintln!("[sim] replica {index} crashed at an I/O point: {point:?}");
        }
    }

    /// Crashes replica `index` right after the event it handled, drawing from `rng` each
    /// write in flight's fate (not written, written, or torn) and the restart time.
    fn crash_at_io_point(&mut self, index: usize, rng: &mut ChaCha8Rng) {
        let Slot::Up(replica) = &self.replicas[index] else {
            unreachable!("an I/O-point crash of replica {index}, which is down");
        };
        // Each write in flight, in submission order: not written, written, or torn.
        let in_flight = replica.storage().writes_in_flight().len();
        let fates: Vec<CrashFate> = (0..in_flight)
            .map(|_| *pick(rng, &[CrashFate::Lost, CrashFate::Written, CrashFate::Torn]))
            .collect();
        let next = std::cell::Cell::new(0);
        let restart_at = self.tick + self.options.restart_delay_ticks(rng);
        self.crash_with(index, restart_at, |_, _, _| {
            let fate = fates.get(next.get()).copied().unwrap_or(CrashFate::Lost);
            next.set(next.get() + 1);
            fate
        });
    }

    /// Replica `index` acknowledged prepare `acked` (the acknowledgement has left), so that
    /// prepare is durable: the disk loses the completed write of the op below it (which this
    /// replica may have acknowledged too), where the fault atlas allows that slot to be faulty,
    /// in one of three variants, and the replica crashes. Recovery must find the slot faulty,
    /// never a nack: (0) the write lost, the ring entry naming the newer op than the slot's
    /// older prepare (or zeros); (1) the write lost and the slot's header-ring sector damaged,
    /// a gap below the durable head beside a damaged ring entry; (2) the acknowledged prepare
    /// itself damaged with its ring sector, ring entry and prepare both unreadable.
    fn lose_acknowledged_write(&mut self, index: usize, acked: u64) {
        if self.unavailable_count(index) >= self.options.crashed_max {
            return;
        }
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return;
        };
        let layout = replica.storage().layout().clone();
        let storage = replica.seams().storage;
        let atlas = Rc::clone(storage.atlas());
        let offsets = |variant: usize| {
            let op = if variant == 2 { acked } else { acked - 1 };
            let slot = op % layout.slot_count;
            let ring = slot * HEADER_SIZE as u64 / SECTOR_SIZE as u64 * SECTOR_SIZE as u64;
            (op, slot * layout.message_size_max, ring)
        };
        let faulty = |zone: Zone, offset: u64| atlas.range_faulty(index as u8, zone, offset, 1);
        // The deliberate ring damage hits a whole sector: never beside another slot's stale
        // prepare there (the acknowledged op's own, misdirected, say), which would leave that op
        // no trace (`SimStorage::fault_spared`).
        let ring_spared =
            |ring_offset: u64| storage.fault_spared(Zone::WalHeaders, ring_offset, SECTOR_SIZE);
        let allowed = |variant: usize| {
            let (op, prepare_offset, ring_offset) = offsets(variant);
            op > 0
                && faulty(Zone::WalPrepares, prepare_offset)
                && (variant == 0
                    || (faulty(Zone::WalHeaders, ring_offset) && !ring_spared(ring_offset)))
        };
        // The variant drawn, else the plain lost write where the atlas allows no more.
        let drawn = range(&mut self.lost_rng, 0, 2) as usize;
        let Some(variant) = [drawn, 0].into_iter().find(|&v| allowed(v)) else {
            return;
        };
        let (op, prepare_offset, ring_offset) = offsets(variant);
        if variant == 2 {
            storage.corrupt_sector_at(Zone::WalPrepares, prepare_offset, &mut self.lost_rng);
        } else if !storage.lose_latest_prepare_write(prepare_offset, op) {
            return;
        }
        if variant > 0 {
            storage.corrupt_sector_at(Zone::WalHeaders, ring_offset, &mut self.lost_rng);
        }
        self.faults.acknowledged_writes_lost[variant] += 1;
        if self.trace {
            eprintln!("[sim] replica {index}: op {op}'s prepare lost (variant {variant}), crash");
        }
        let restart_at = self.tick + self.options.restart_delay_ticks(&mut self.lost_rng);
        let primary = replica.primary_index(replica.view()) as usize;
        self.crash_with(index, restart_at, |_, _, _| CrashFate::Random);
        if self.options.lost_write_primary_crash && primary != index {
            self.crash_primary_on_restart = Some((index, primary));
        }
    }

    /// Backup `index` acknowledged `acked` in a seed where a lost write also crashes the primary
    /// (`SimOptions::lost_write_primary_crash`): the loss is aimed where it decides a view
    /// change. It is drawn 20 times as often where the fault atlas allows it (100 times where
    /// it allows the ring sector's damage too) and enough other backups lack the op below
    /// `acked` that, with this one's slot counted as a nack, they would make a nack quorum
    /// (docs/protocol.md §5.5: only the faulty flag keeps that op from being truncated).
    fn aim_lost_write(&mut self, index: usize, acked: u64) {
        if !self.faults_enabled
            || self.options.lost_write_probability == 0.0
            || self.lost_write_pending.is_some()
        {
            return;
        }
        let Slot::Up(replica) = &self.replicas[index] else {
            return;
        };
        let primary = replica.primary_index(replica.view()) as usize;
        let count = self.replicas.len();
        let nack_quorum = count - vsr::config::quorums(count).0 + 1;
        let lacking = (0..count)
            .filter(|&r| r != index && r != primary)
            .filter(|&r| match &self.replicas[r] {
                Slot::Up(other) => other.op() + 1 < acked,
                _ => false,
            })
            .count();
        let atlas = replica.storage().atlas();
        let layout = replica.storage().layout();
        let slot = (acked - 1) % layout.slot_count;
        let faulty = |zone: Zone, offset: u64| atlas.range_faulty(index as u8, zone, offset, 1);
        let prepare_allowed = faulty(Zone::WalPrepares, slot * layout.message_size_max);
        let ring_allowed = faulty(Zone::WalHeaders, slot * HEADER_SIZE as u64);
        let multiple = match (lacking + 1 >= nack_quorum, prepare_allowed, ring_allowed) {
            (true, true, true) => 100.0,
            (true, true, false) => 20.0,
            _ => 1.0,
        };
        let probability = (self.options.lost_write_probability * multiple).min(0.5);
        if chance(&mut self.lost_rng, probability) {
            self.lost_write_pending = Some(acked);
        }
    }

    /// Replica `index` restarted: if a lost write crashed it as a backup, its view's primary
    /// crashes now (`SimOptions::lost_write_primary_crash`), when the fault budget allows.
    fn crash_primary_maybe(&mut self, index: usize) {
        let Some((backup, primary)) = self.crash_primary_on_restart else {
            return;
        };
        if backup != index {
            return;
        }
        self.crash_primary_on_restart = None;
        if !self.faults_enabled
            || !matches!(self.replicas[primary], Slot::Up(_))
            || self.unavailable_count(primary) >= self.options.crashed_max
        {
            return;
        }
        let restart_at = self.tick + self.options.restart_delay_ticks(&mut self.doom_rng);
        self.crash_with(primary, restart_at, |_, _, _| CrashFate::Random);
        self.faults.primary_crashes_after_lost_write += 1;
    }

    /// Takes the replica's events and messages (checking each promise), puts the messages on
    /// the network, and runs the safety checker; returns the number of messages sent.
    fn flush_replica(&mut self, index: usize) -> Result<usize, String> {
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(0);
        };
        let replica_index = index as u8;
        let acted = (replica.status() != Status::Recovering)
            .then(|| replica.superblock())
            .flatten();
        self.durability
            .observe_superblock_floor(replica_index, replica.storage(), acted)?;
        if replica.status() != Status::Recovering {
            self.durability
                .observe_superblock(replica_index, replica.storage())?;
        }
        let mut aimed_ack = None;
        while let Some(event) = replica.poll_event() {
            match event {
                Event::Info(line) if self.trace => eprintln!("[r{index}] info: {line}"),
                Event::Warn(line) if self.trace => eprintln!("[r{index}] warn: {line}"),
                Event::Trace(line) => eprintln!("{line}"),
                Event::Info(_) | Event::Warn(_) => {}
                Event::OpenFailed(error) => {
                    return Err(format!("replica {index} failed to open: {error}"))
                }
                Event::CheckpointDurable { op, id, synced } => {
                    self.durability.on_checkpoint_durable(
                        replica_index,
                        replica.storage(),
                        op,
                        id,
                        synced,
                    )?;
                    self.checker.observe_checkpoint(index, op, id)?
                }
                Event::PrepareAcknowledged { view, op, checksum } => {
                    self.durability.on_acknowledged(
                        replica_index,
                        replica.storage(),
                        view,
                        op,
                        checksum,
                    )?;
                    if self.options.lost_write_primary_crash {
                        aimed_ack = Some(op);
                    } else if self.faults_enabled
                        && self.options.lost_write_probability > 0.0
                        && self.lost_write_pending.is_none()
                        && chance(&mut self.lost_rng, self.options.lost_write_probability)
                    {
                        self.lost_write_pending = Some(op);
                    }
                }
            }
        }
        let mut outbox = std::mem::take(&mut replica.seams().bus.outbox);
        let sent = outbox.len();
        for (to, bytes) in outbox.drain(..) {
            let header = Header::read_from(&bytes);
            self.durability.on_send(
                replica_index,
                replica.storage(),
                replica.commit_min(),
                (&header, &bytes[HEADER_SIZE..header.size as usize]),
                &self.checker,
            )?;
            self.view_logs.on_send(
                replica_index,
                &header,
                &bytes[HEADER_SIZE..header.size as usize],
            )?;
            if header.command == Command::Prepare as u8 && header.replica == replica_index {
                self.cluster_time.on_prepare(
                    index,
                    &header,
                    replica.time().true_realtime(),
                    self.tick,
                )?;
            }
            self.network
                .submit(Process::Replica(replica_index), to, bytes);
        }
        replica.seams().bus.outbox = outbox;
        if replica.status() == Status::Normal && replica.is_primary() {
            let journal = replica.journal();
            self.durability
                .on_commit_point(replica.view(), replica.commit_max(), |op| {
                    journal.header(op).map(|h| h.checksum)
                });
        }
        let recovering = replica.status() == Status::Recovering;
        if std::mem::replace(&mut self.recovering[index], recovering)
            && !recovering
            && replica.status() != Status::RecoveringHead
        {
            let journal = replica.journal();
            self.durability.on_recovered(
                replica_index,
                replica.log_view(),
                replica.checkpoint().op,
                |op, checksum| {
                    journal.header(op).is_some_and(|h| h.checksum == checksum)
                        || journal.is_faulty_slot(op)
                },
                |op, checksum| {
                    self.view_logs
                        .superseded_after(replica.log_view(), op, checksum)
                },
            )?;
        }
        if recovering {
            return Ok(sent);
        }
        if let Some(op) = aimed_ack {
            self.aim_lost_write(index, op);
        }
        let Slot::Up(replica) = &self.replicas[index] else {
            unreachable!();
        };
        let journal = replica.journal();
        self.checker.observe(
            index,
            replica.commit_min(),
            replica.commit_max(),
            replica.checkpoint().op,
            |op| journal.header(op).copied(),
            replica
                .state_available()
                .then(|| vsr::state_machine::StateMachine::digest(replica.state_machine())),
        )?;
        let normal = (replica.status() == Status::Normal).then(|| replica.view());
        if let Some(view) = normal {
            self.view_logs
                .check_normal(index, view, replica.commit_min(), |op| journal.header(op))?;
        }
        self.check_installs(index, normal)?;
        Ok(sent)
    }

    /// Every header replica `index` installed in its last event, if it was normal in one view
    /// before and after it, is that view's (`ViewLogs::check_install`).
    fn check_installs(&mut self, index: usize, normal: Option<u32>) -> Result<(), String> {
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        let mut installs = std::mem::take(&mut self.installs);
        replica.journal_installs_drain(|op, checksum| installs.push((op, checksum)));
        let before = std::mem::replace(&mut self.normal_view[index], normal);
        let result = match (before, normal) {
            (Some(before), Some(view)) if before == view => {
                installs.iter().try_for_each(|&(op, checksum)| {
                    self.view_logs
                        .check_install(index, view, op, checksum, |op| {
                            self.checker.committed_checksum(op)
                        })
                })
            }
            _ => Ok(()),
        };
        installs.clear();
        self.installs = installs;
        result
    }

    /// An operator's `vsr status` asks replica `index` (if up, in whatever status): it must
    /// answer at once with one well-formed status report of its own state, and send nothing
    /// else. The report goes to the operator, not the network.
    fn probe_status(&mut self, index: usize) -> Result<(), String> {
        let cluster = self.cluster;
        let paused = self.paused(index);
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        // A paused process answers nothing; one with no free message cannot (the request is
        // the operator's, from a pool of its own).
        if paused || replica.bus().pool.available() == 0 {
            return Ok(());
        }
        let nonce = self.tick;
        let Some(mut message) = self.status_probe_pool.get() else {
            unreachable!("the status probe holds one message at a time");
        };
        *message.header_mut() = RequestStatus {
            client: STATUS_PROBE_CLIENT,
            nonce,
        }
        .to_header(cluster);
        message.seal(0);
        let outbox_before = replica.seams().bus.outbox.len();
        replica.on_message(message);
        let outbox = &mut replica.seams().bus.outbox;
        let sent: Vec<(Process, Vec<u8>)> = outbox.drain(outbox_before..).collect();
        let [(Process::Client(STATUS_PROBE_CLIENT), bytes)] = &sent[..] else {
            return Err(format!(
                "replica {index} answered a status request with {} messages",
                sent.len()
            ));
        };
        let report = Header::read_from(bytes);
        let valid = report.valid_checksum()
            && report.command() == Some(Command::StatusReport)
            && report
                .invalid(self.options.config.message_size_max as usize)
                .is_none();
        let fields = valid.then(|| StatusReport::from_header(&report));
        if !fields.is_some_and(|f| {
            f.nonce == nonce
                && f.replica == index as u8
                && f.view == replica.view()
                && f.op == replica.op()
                && f.commit_min == replica.commit_min()
        }) {
            return Err(format!(
                "replica {index}'s status report does not match its state: {fields:?}"
            ));
        }
        self.faults.status_probes += 1;
        Ok(())
    }

    fn deliver_to_replica(&mut self, index: usize, bytes: &[u8]) -> Result<(), String> {
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        if bytes.len() < HEADER_SIZE {
            return Ok(());
        }
        let Some(message) = replica.bus().pool.get_copy_of(bytes) else {
            return Ok(());
        };
        let writes = replica.storage().stats().writes;
        replica.on_message(message);
        let sent = self.flush_replica(index)?;
        self.io_point(index, writes, None, sent);
        Ok(())
    }

    fn deliver_to_client(&mut self, id: u128, bytes: &[u8]) -> Result<(), String> {
        let Some(c) = self.clients.iter_mut().find(|c| c.client.id == id) else {
            return Ok(());
        };
        if bytes.len() < HEADER_SIZE {
            return Ok(());
        }
        // Counted before the client filters duplicates (no checksum: the scenarios that read
        // these counters run without packet corruption).
        let raw = Header::read_from(bytes);
        if raw.client_id() == Some(id) {
            match raw.command() {
                Some(Command::Reply) => c.replies_received += 1,
                Some(Command::Eviction) => c.evictions_received += 1,
                _ => {}
            }
        }
        let Some(message) = c.pool.get_copy_of(bytes) else {
            return Ok(());
        };
        match c.client.on_message(message) {
            Some(ClientEvent::Reply { reply, .. }) => {
                c.requests_done += 1;
                c.replies_accepted += 1;
                self.replies += 1;
                let header = *reply.header();
                c.last_reply = Some(header);
                self.checker.on_reply(id, &header, reply.body())?;
            }
            Some(ClientEvent::Registered { .. }) => {
                // The register reply is not checked as a reply: its op may be re-registered.
                c.last_reply = None;
            }
            Some(ClientEvent::Evicted) => self.evictions += 1,
            None => {}
        }
        Ok(())
    }

    fn step_clients(&mut self) {
        for c in &mut self.clients {
            c.client.tick(&mut c.bus);
            // A client with no workload (a scenario's, until it sets one) stays idle.
            if !c.client.busy() && !c.client.evicted() && c.requests_target > 0 {
                if !c.client.registered() {
                    let _ = c.client.register(&mut c.bus);
                } else if c.requests_done < c.requests_target && self.workload.is_some() {
                    let (workload, rng) = self.workload.as_mut().unwrap();
                    // Cluster time is about the simulated wall clock: lets pending timeouts expire.
                    workload.set_timestamp_hint(
                        crate::time::EPOCH_NS as u64 + self.tick * vsr::config::TICK_MS * 1_000_000,
                    );
                    let (operation, size) = workload.generate(rng, &mut self.body);
                    c.client
                        .request(&mut c.bus, operation as u8, &self.body[..size])
                        .expect("client request");
                } else if c.requests_done < c.requests_target {
                    let size =
                        (self.rng.next_u64() % (self.options.request_body_max as u64 + 1)) as usize;
                    let mut body = vec![0u8; size];
                    for b in body.iter_mut() {
                        *b = self.rng.next_u32() as u8;
                    }
                    c.client
                        .request(&mut c.bus, HASHING_OPERATION, &body)
                        .expect("client request");
                }
            }
            for (to, bytes) in c.bus.outbox.drain(..) {
                if bytes.len() >= HEADER_SIZE
                    && Header::read_from(&bytes).command == Command::Request as u8
                {
                    c.requests_sent += 1;
                }
                self.network.submit(Process::Client(c.client.id), to, bytes);
            }
        }
    }

    /// Ends the fault phase: restart every replica, heal the network, stop storage and clock
    /// faults. From here the cluster must converge.
    pub fn heal(&mut self) {
        self.faults_enabled = false;
        self.network.heal();
        self.network.set_faults(false);
        for index in 0..self.replicas.len() {
            self.resume(index);
            if matches!(self.replicas[index], Slot::Down { .. }) {
                self.restart(index);
            }
            if let Slot::Up(r) = &mut self.replicas[index] {
                r.seams().storage.set_faults(false);
            }
        }
    }

    /// Converged: every replica normal in one view with everything committed, and every client
    /// done (or evicted).
    pub fn converged(&self) -> bool {
        let clients_done = self.clients.iter().all(|c| {
            c.client.evicted() || (c.requests_done >= c.requests_target && !c.client.busy())
        });
        if !clients_done {
            return false;
        }
        let mut view = None;
        let mut op = None;
        for slot in &self.replicas {
            let Slot::Up(r) = slot else { return false };
            if r.status() != Status::Normal || r.commit_min() != r.op() {
                return false;
            }
            if *view.get_or_insert(r.view()) != r.view() || *op.get_or_insert(r.op()) != r.op() {
                return false;
            }
        }
        true
    }

    pub fn describe_state(&self) -> String {
        let mut out = String::new();
        for (i, slot) in self.replicas.iter().enumerate() {
            match slot {
                Slot::Up(r) => out.push_str(&format!(
                    " r{i}:{:?}/v{}/op{}/cmin{}/cmax{}/io{}{}",
                    r.status(),
                    r.view(),
                    r.op(),
                    r.commit_min(),
                    r.commit_max(),
                    r.storage().pending(),
                    r.debug_summary()
                )),
                _ => out.push_str(&format!(" r{i}:down")),
            }
        }
        for c in &self.clients {
            out.push_str(&format!(
                " c{:x}:{}/{}{}",
                c.client.id & 0xffff,
                c.requests_done,
                c.requests_target,
                if c.client.evicted() {
                    "E"
                } else if c.client.busy() {
                    "*"
                } else {
                    ""
                }
            ));
        }
        out
    }

    pub fn replica_stats(&self) -> ReplicaStats {
        let mut total = self.retired_stats;
        for slot in &self.replicas {
            if let Slot::Up(r) = slot {
                add_stats(&mut total, r.stats());
            }
        }
        total
    }

    pub fn storage_stats(&self) -> StorageStats {
        let mut total = StorageStats::default();
        for slot in &self.replicas {
            let s = match slot {
                Slot::Up(r) => r.storage().stats(),
                Slot::Down { storage, .. } => storage.stats(),
                Slot::Empty => continue,
            };
            total.reads += s.reads;
            total.writes += s.writes;
            total.read_faults += s.read_faults;
            total.write_faults += s.write_faults;
            total.misdirects += s.misdirects;
            total.torn_writes += s.torn_writes;
            total.faults_spared_journal += s.faults_spared_journal;
            total.lost_writes += s.lost_writes;
            total.slow_ios += s.slow_ios;
            total.stalls += s.stalls;
        }
        total
    }

    pub fn network_stats(&self) -> crate::network::NetworkStats {
        self.network.stats()
    }

    pub fn clock_epochs_failed(&self) -> u64 {
        self.replicas
            .iter()
            .map(|s| match s {
                Slot::Up(r) => r.clock().epochs_failed(),
                _ => 0,
            })
            .sum()
    }

    /// The run's digest: canonical history, final replica states, and every counter.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.checker.digest());
        hasher.update(&self.tick.to_le_bytes());
        for slot in &self.replicas {
            if let Slot::Up(r) = slot {
                hasher.update(&r.view().to_le_bytes());
                hasher.update(&r.op().to_le_bytes());
                hasher.update(&r.commit_min().to_le_bytes());
                hasher.update(
                    &vsr::state_machine::StateMachine::digest(r.state_machine()).to_le_bytes(),
                );
                hasher.update(&r.time().monotonic().to_le_bytes());
            }
        }
        hasher.update(
            format!(
                "{:?}{:?}{:?}",
                self.network_stats(),
                self.storage_stats(),
                self.faults
            )
            .as_bytes(),
        );
        hasher.update(format!("{:?}", self.replica_stats()).as_bytes());
        hasher.finalize().to_hex()[..32].to_string()
    }
}

fn add_stats(total: &mut ReplicaStats, s: &ReplicaStats) {
    total.view_changes += s.view_changes;
    total.checkpoints += s.checkpoints;
    total.checkpoints_unusable += s.checkpoints_unusable;
    total.syncs_started += s.syncs_started;
    total.syncs_completed += s.syncs_completed;
    total.syncs_aborted += s.syncs_aborted;
    total.checkpoints_held_back += s.checkpoints_held_back;
    total.sync_chunks += s.sync_chunks;
    total.start_views_deferred += s.start_views_deferred;
    total.rejoins_completed += s.rejoins_completed;
    total.prepares_resent += s.prepares_resent;
    total.primary_step_downs += s.primary_step_downs;
    total.primary_disconnects += s.primary_disconnects;
    total.views_started += s.views_started;
    total.repairs_headers += s.repairs_headers;
    total.repairs_prepares += s.repairs_prepares;
    total.truncations += s.truncations;
    total.commits += s.commits;
    total.evictions += s.evictions;
    total.messages_dropped_invalid += s.messages_dropped_invalid;
    total.pool_exhausted += s.pool_exhausted;
}

/// Whether replica `r`'s disk holds, intact in its slot, the prepare of `op` with `checksum`
/// (read from the simulated disk, not from what the journal believes).
fn prepare_on_disk(r: &SimReplica, op: u64, checksum: u128) -> bool {
    let storage = r.storage();
    let layout = storage.layout();
    let offset = (op % layout.slot_count) * layout.message_size_max;
    let header = Header::read_from(storage.read_raw(Zone::WalPrepares, offset, HEADER_SIZE));
    if header.checksum != checksum || header.op != op || !header.valid_checksum() {
        return false;
    }
    let size = header.size as usize;
    if size < HEADER_SIZE || size as u64 > layout.message_size_max {
        return false;
    }
    let message = storage.read_raw(Zone::WalPrepares, offset, size);
    header.valid_checksum_body(&message[HEADER_SIZE..])
}
