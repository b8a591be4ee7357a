//! The packet simulator: the simulated network between replicas and clients.
//!
//! Every ordered pair of processes is a *path* with a bounded queue. A packet gets a random
//! one-way delay (minimum plus an exponential tail), so packets on one path overtake each other:
//! that is where reordering comes from. On top of that:
//!
//! - loss: decided at `submit` (counted in `dropped_loss`);
//! - capacity: a path holding `path_maximum_capacity` packets drops new ones at `submit`
//!   (`dropped_capacity`);
//! - partitions (replicas only; clients reach every replica): checked at `submit` *and* again at
//!   `deliver`, so packets in flight when a partition starts are cut too (`dropped_partition`);
//! - clogs: a clogged path holds its packets back (nothing is lost) until it unclogs;
//! - replay (duplication): when a packet is delivered it may be queued again with a fresh delay,
//!   to arrive a second time later (`replayed`);
//! - down processes: packets from a down process are dropped at `submit`, packets to a down
//!   process at `deliver` (`dropped_down`). Packets already in flight from a process that then
//!   goes down are still delivered, as on a real wire.
//! - paused processes (a replica stopped by the scheduler, a GC pause, SIGSTOP): packets to it
//!   are *held* on their paths, as a kernel's socket buffers would hold them, and delivered once
//!   it resumes. Held packets still count against `path_maximum_capacity`, so a long pause
//!   overflows the path and newer packets are dropped at `submit` (`dropped_capacity`). A paused
//!   process sends nothing, because it is not run.
//! - manual partitions (scripted scenarios): `partition_manual` installs a partition that only
//!   `heal`/`unpartition` ends; random partitions never replace it.
//!
//! A packet from a process to itself (loopback) never touches the wire: it is delivered on the
//! next tick, without loss, replay, partition, clog or capacity limits.
//!
//! All decisions come from one `ChaCha8Rng` seeded by the caller; paths live in a `BTreeMap`, so
//! the order in which they are visited is fixed.

use crate::rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Process {
    Replica(u8),
    Client(u128),
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Replica(r) => write!(f, "replica {r}"),
            Process::Client(c) => write!(f, "client {c:x}"),
        }
    }
}

/// How the replicas are split when a partition starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PartitionMode {
    /// Never partition.
    None,
    /// A side size uniform in `1..replica_count`, then that many replicas chosen at random.
    UniformSize,
    /// Each replica joins either side with probability 1/2 (both sides non-empty).
    UniformPartition,
    /// One random replica on its own.
    IsolateSingle,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PartitionSymmetry {
    /// Neither side hears the other.
    Symmetric,
    /// Only one direction (chosen at random per partition) is cut: one side still hears the other.
    Asymmetric,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetworkOptions {
    /// One-way delay in ticks: `min + exponential(mean - min)`, never less than one tick.
    pub one_way_delay_min: u64,
    pub one_way_delay_mean: u64,
    /// Probability that a submitted packet is lost.
    pub packet_loss_probability: f64,
    /// Probability that a delivered packet is delivered again later.
    pub packet_replay_probability: f64,
    /// Packets queued per path; new packets beyond it are dropped.
    pub path_maximum_capacity: usize,
    /// Mean clog duration in ticks (exponential, at least one tick).
    pub path_clog_duration_mean: u64,
    /// Probability per tick per (unclogged) path that it clogs.
    pub path_clog_probability: f64,
    pub partition_mode: PartitionMode,
    pub partition_symmetry: PartitionSymmetry,
    /// Probability per tick that a partition starts (when none is active and it may).
    pub partition_probability: f64,
    /// Probability per tick that the active partition heals (once it may).
    pub unpartition_probability: f64,
    /// Minimum ticks a partition holds before it may heal.
    pub partition_stability: u64,
    /// Minimum ticks without a partition before a new one may start.
    pub unpartition_stability: u64,
    /// Per packet: it is held `1..=slow_packet_ticks_max` ticks longer (a congested queue, a
    /// stalled middlebox): round trips far beyond the usual, and packets overtaken by later
    /// ones (drawn from a stream of its own).
    pub slow_packet_probability: f64,
    pub slow_packet_ticks_max: u64,
}

impl Default for NetworkOptions {
    /// A fault-free network with small delays.
    fn default() -> Self {
        NetworkOptions {
            one_way_delay_min: 1,
            one_way_delay_mean: 2,
            packet_loss_probability: 0.0,
            packet_replay_probability: 0.0,
            path_maximum_capacity: 64,
            path_clog_duration_mean: 20,
            path_clog_probability: 0.0,
            partition_mode: PartitionMode::None,
            partition_symmetry: PartitionSymmetry::Symmetric,
            partition_probability: 0.0,
            unpartition_probability: 0.0,
            partition_stability: 0,
            unpartition_stability: 0,
            slow_packet_probability: 0.0,
            slow_packet_ticks_max: 0,
        }
    }
}

impl NetworkOptions {
    pub fn assert_valid(&self) {
        assert!(
            self.one_way_delay_mean >= self.one_way_delay_min,
            "one_way_delay_mean {} < one_way_delay_min {}",
            self.one_way_delay_mean,
            self.one_way_delay_min
        );
        assert!(self.path_maximum_capacity > 0);
        for (name, p) in [
            ("packet_loss_probability", self.packet_loss_probability),
            ("packet_replay_probability", self.packet_replay_probability),
            ("path_clog_probability", self.path_clog_probability),
            ("partition_probability", self.partition_probability),
            ("unpartition_probability", self.unpartition_probability),
            ("slow_packet_probability", self.slow_packet_probability),
        ] {
            assert!((0.0..=1.0).contains(&p), "{name} {p} outside 0..=1");
        }
        // A replay probability of 1 would replay every packet forever.
        assert!(self.packet_replay_probability < 1.0);
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub submitted: u64,
    pub delivered: u64,
    pub dropped_loss: u64,
    pub dropped_capacity: u64,
    pub dropped_partition: u64,
    /// Dropped because the sender (at submit) or the receiver (at delivery) was down.
    pub dropped_down: u64,
    pub replayed: u64,
    pub partitions: u64,
    pub clogs: u64,
    /// Packets held longer (`NetworkOptions::slow_packet_probability`).
    pub slow_packets: u64,
}

#[derive(Debug)]
struct Packet {
    from: Process,
    to: Process,
    bytes: Vec<u8>,
    deliver_at: u64,
}

#[derive(Debug, Default)]
struct Path {
    packets: Vec<Packet>,
    /// Clogged until this tick (exclusive).
    clogged_until: Option<u64>,
}

/// Which replica-to-replica directions are cut; `blocked[from * n + to]`.
#[derive(Debug)]
struct Partition {
    blocked: Vec<bool>,
    /// Installed by a scenario: never healed at random.
    manual: bool,
}

pub struct PacketSimulator {
    replica_count: u8,
    options: NetworkOptions,
    rng: ChaCha8Rng,
    /// Slow packet draws only, so that adding them left every other draw where it was.
    slow_rng: ChaCha8Rng,
    now: u64,
    faults: bool,
    paths: BTreeMap<(Process, Process), Path>,
    /// Packets whose time has come, waiting for `deliver`.
    ready: Vec<Packet>,
    down: BTreeSet<Process>,
    /// Packets to these processes are held on their paths until they resume.
    paused: BTreeSet<Process>,
    partition: Option<Partition>,
    /// Tick of the last partition start or heal.
    partition_changed_at: u64,
    stats: NetworkStats,
}

impl PacketSimulator {
    pub fn new(replica_count: u8, options: NetworkOptions, seed: u64) -> Self {
        assert!(replica_count >= 1 && replica_count as usize <= vsr::config::REPLICAS_MAX);
        options.assert_valid();
        let mut paths = BTreeMap::new();
        for a in 0..replica_count {
            for b in 0..replica_count {
                if a != b {
                    paths.insert((Process::Replica(a), Process::Replica(b)), Path::default());
                }
            }
        }
        PacketSimulator {
            replica_count,
            options,
            rng: rng::seeded(seed),
            slow_rng: rng::seeded(seed ^ 0x736c_6f77_7061_636b),
            now: 0,
            faults: true,
            paths,
            ready: Vec::new(),
            down: BTreeSet::new(),
            paused: BTreeSet::new(),
            partition: None,
            partition_changed_at: 0,
            stats: NetworkStats::default(),
        }
    }

    pub fn options(&self) -> &NetworkOptions {
        &self.options
    }

    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Ticks elapsed since creation.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether new faults (loss, replay, partitions, clogs) may happen.
    pub fn faults(&self) -> bool {
        self.faults
    }

    /// Packets queued on paths or waiting for `deliver`.
    pub fn in_flight(&self) -> usize {
        self.ready.len() + self.paths.values().map(|p| p.packets.len()).sum::<usize>()
    }

    /// Enables or disables new faults. Disabling does not end an active partition or clog; they
    /// run their course (`heal` ends them at once).
    pub fn set_faults(&mut self, enabled: bool) {
        self.faults = enabled;
    }

    /// Ends the partition and every clog, and stops new faults (the liveness phase).
    pub fn heal(&mut self) {
        self.faults = false;
        if self.partition.take().is_some() {
            self.partition_changed_at = self.now;
        }
        for path in self.paths.values_mut() {
            path.clogged_until = None;
        }
    }

    pub fn set_process_up(&mut self, process: Process, up: bool) {
        if up {
            self.down.remove(&process);
        } else {
            self.down.insert(process);
        }
    }

    pub fn process_up(&self, process: Process) -> bool {
        !self.down.contains(&process)
    }

    /// A paused process has packets to it held on their paths (not dropped) until it resumes.
    pub fn set_process_paused(&mut self, process: Process, paused: bool) {
        self.assert_process(process);
        if paused {
            self.paused.insert(process);
        } else {
            self.paused.remove(&process);
        }
    }

    pub fn process_paused(&self, process: Process) -> bool {
        self.paused.contains(&process)
    }

    /// Installs a partition chosen by the caller: `blocked(from, to)` over replica indexes says
    /// which directions are cut. It replaces any partition and holds until `unpartition` or
    /// `heal`. Packets in flight across a newly cut direction are dropped at delivery.
    pub fn partition_manual(&mut self, blocked: impl Fn(u8, u8) -> bool) {
        let n = self.replica_count as usize;
        let mut cut = vec![false; n * n];
        for from in 0..n {
            for to in 0..n {
                cut[from * n + to] = from != to && blocked(from as u8, to as u8);
            }
        }
        self.partition = Some(Partition {
            blocked: cut,
            manual: true,
        });
        self.partition_changed_at = self.now;
        self.stats.partitions += 1;
    }

    /// Ends the active partition (random or manual), if any.
    pub fn unpartition(&mut self) {
        if self.partition.take().is_some() {
            self.partition_changed_at = self.now;
        }
    }

    pub fn partition_active(&self) -> bool {
        self.partition.is_some()
    }

    /// Whether the partition cuts `from -> to`. Only replicas are ever partitioned.
    pub fn partitioned(&self, from: Process, to: Process) -> bool {
        let (Process::Replica(a), Process::Replica(b), Some(partition)) =
            (from, to, &self.partition)
        else {
            return false;
        };
        let n = self.replica_count as usize;
        assert!((a as usize) < n && (b as usize) < n);
        partition.blocked[a as usize * n + b as usize]
    }

    pub fn clogged(&self, from: Process, to: Process) -> bool {
        self.paths
            .get(&(from, to))
            .is_some_and(|p| p.clogged_until.is_some())
    }

    pub fn submit(&mut self, from: Process, to: Process, bytes: Vec<u8>) {
        self.assert_process(from);
        self.assert_process(to);
        self.stats.submitted += 1;
        if self.down.contains(&from) {
            self.stats.dropped_down += 1;
            return;
        }
        if from == to {
            let deliver_at = self.now + 1;
            self.paths
                .entry((from, to))
                .or_default()
                .packets
                .push(Packet {
                    from,
                    to,
                    bytes,
                    deliver_at,
                });
            return;
        }
        if self.partitioned(from, to) {
            self.stats.dropped_partition += 1;
            return;
        }
        if self.faults && rng::chance(&mut self.rng, self.options.packet_loss_probability) {
            self.stats.dropped_loss += 1;
            return;
        }
        self.enqueue(Packet {
            from,
            to,
            bytes,
            deliver_at: 0,
        });
    }

    /// Advances one tick: partitions and clogs change state, and packets whose delivery time has
    /// come (on unclogged paths) become ready for `deliver`.
    pub fn tick(&mut self) {
        self.now += 1;
        self.tick_partition();
        self.tick_clogs();
        let now = self.now;
        for (&(_, to), path) in self.paths.iter_mut() {
            if path.clogged_until.is_some() || path.packets.is_empty() || self.paused.contains(&to)
            {
                continue;
            }
            let mut i = 0;
            while i < path.packets.len() {
                if path.packets[i].deliver_at <= now {
                    // `remove`, not `swap_remove`: the queue's order stays a function of the seed
                    // alone, and is cheap to reason about when replaying a failure.
                    self.ready.push(path.packets.remove(i));
                } else {
                    i += 1;
                }
            }
        }
    }

    /// The packets delivered this tick, in a seeded-random order. Packets to a down process or
    /// across a partition are dropped here; a delivered packet may be queued again (replay).
    pub fn deliver(&mut self) -> Vec<(Process, Process, Vec<u8>)> {
        let mut ready = std::mem::take(&mut self.ready);
        rng::shuffle(&mut self.rng, &mut ready);
        let mut delivered = Vec::with_capacity(ready.len());
        for packet in ready {
            if self.down.contains(&packet.to) {
                self.stats.dropped_down += 1;
                continue;
            }
            if self.partitioned(packet.from, packet.to) {
                self.stats.dropped_partition += 1;
                continue;
            }
            self.stats.delivered += 1;
            if packet.from != packet.to
                && self.faults
                && rng::chance(&mut self.rng, self.options.packet_replay_probability)
            {
                self.stats.replayed += 1;
                self.enqueue(Packet {
                    from: packet.from,
                    to: packet.to,
                    bytes: packet.bytes.clone(),
                    deliver_at: 0,
                });
            }
            delivered.push((packet.from, packet.to, packet.bytes));
        }
        delivered
    }

    fn assert_process(&self, process: Process) {
        if let Process::Replica(r) = process {
            assert!(r < self.replica_count, "replica {r} out of range");
        }
    }

    /// Queues a packet on its path with a fresh delay, unless the path is full.
    fn enqueue(&mut self, mut packet: Packet) {
        let delay = self.options.one_way_delay_min
            + rng::exponential(
                &mut self.rng,
                self.options.one_way_delay_mean - self.options.one_way_delay_min,
            );
        let mut delay = delay.max(1);
        if self.faults
            && self.options.slow_packet_probability > 0.0
            && rng::chance(&mut self.slow_rng, self.options.slow_packet_probability)
        {
            delay += rng::range(&mut self.slow_rng, 1, self.options.slow_packet_ticks_max);
            self.stats.slow_packets += 1;
        }
        packet.deliver_at = self.now + delay;
        let capacity = self.options.path_maximum_capacity;
        let path = self.paths.entry((packet.from, packet.to)).or_default();
        if path.packets.len() >= capacity {
            self.stats.dropped_capacity += 1;
            return;
        }
        path.packets.push(packet);
    }

    fn tick_partition(&mut self) {
        let since = self.now - self.partition_changed_at;
        if self.partition.as_ref().is_some_and(|p| p.manual) {
            return;
        }
        if self.partition.is_some() {
            if since >= self.options.partition_stability
                && rng::chance(&mut self.rng, self.options.unpartition_probability)
            {
                self.partition = None;
                self.partition_changed_at = self.now;
            }
        } else if self.faults
            && self.replica_count >= 2
            && self.options.partition_mode != PartitionMode::None
            && since >= self.options.unpartition_stability
            && rng::chance(&mut self.rng, self.options.partition_probability)
        {
            self.partition = Some(self.random_partition());
            self.partition_changed_at = self.now;
            self.stats.partitions += 1;
        }
    }

    /// Splits the replicas into two non-empty sides and cuts the paths between them.
    fn random_partition(&mut self) -> Partition {
        let n = self.replica_count as usize;
        assert!(n >= 2);
        let mut side_a = vec![false; n];
        match self.options.partition_mode {
            PartitionMode::None => unreachable!(),
            PartitionMode::UniformSize => {
                let size = rng::range(&mut self.rng, 1, n as u64 - 1) as usize;
                let mut replicas: Vec<usize> = (0..n).collect();
                rng::shuffle(&mut self.rng, &mut replicas);
                for &r in &replicas[..size] {
                    side_a[r] = true;
                }
            }
            PartitionMode::UniformPartition => loop {
                for side in side_a.iter_mut() {
                    *side = rng::chance(&mut self.rng, 0.5);
                }
                let count = side_a.iter().filter(|&&s| s).count();
                if count > 0 && count < n {
                    break;
                }
            },
            PartitionMode::IsolateSingle => {
                side_a[rng::index(&mut self.rng, n)] = true;
            }
        }
        // For an asymmetric partition only a -> b is cut; which side is `a` is random.
        let a_to_b_only = match self.options.partition_symmetry {
            PartitionSymmetry::Symmetric => None,
            PartitionSymmetry::Asymmetric => Some(rng::chance(&mut self.rng, 0.5)),
        };
        let mut blocked = vec![false; n * n];
        for from in 0..n {
            for to in 0..n {
                blocked[from * n + to] = match a_to_b_only {
                    None => side_a[from] != side_a[to],
                    Some(true) => side_a[from] && !side_a[to],
                    Some(false) => !side_a[from] && side_a[to],
                };
            }
        }
        Partition {
            blocked,
            manual: false,
        }
    }

    fn tick_clogs(&mut self) {
        let now = self.now;
        let clog_probability = self.options.path_clog_probability;
        let clog_mean = self.options.path_clog_duration_mean;
        for (&(from, to), path) in self.paths.iter_mut() {
            if from == to {
                continue;
            }
            match path.clogged_until {
                Some(until) => {
                    if now >= until {
                        path.clogged_until = None;
                    }
                }
                None => {
                    if self.faults
                        && clog_probability > 0.0
                        && rng::chance(&mut self.rng, clog_probability)
                    {
                        let duration = rng::exponential(&mut self.rng, clog_mean).max(1);
                        path.clogged_until = Some(now + duration);
                        self.stats.clogs += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u8) -> Process {
        Process::Replica(i)
    }

    fn faulty_options() -> NetworkOptions {
        NetworkOptions {
            one_way_delay_min: 1,
            one_way_delay_mean: 5,
            packet_loss_probability: 0.1,
            packet_replay_probability: 0.2,
            path_maximum_capacity: 32,
            path_clog_duration_mean: 10,
            path_clog_probability: 0.01,
            partition_mode: PartitionMode::UniformSize,
            partition_symmetry: PartitionSymmetry::Asymmetric,
            partition_probability: 0.02,
            unpartition_probability: 0.05,
            partition_stability: 10,
            unpartition_stability: 10,
            slow_packet_probability: 0.05,
            slow_packet_ticks_max: 100,
        }
    }

    /// (tick, from, to, bytes) of every delivery.
    type DeliveryLog = Vec<(u64, Process, Process, Vec<u8>)>;

    /// Drives a network with traffic among replicas and one client; returns everything delivered.
    fn run(seed: u64, options: NetworkOptions, ticks: u64) -> (DeliveryLog, NetworkStats) {
        let mut net = PacketSimulator::new(3, options, seed);
        let mut log = Vec::new();
        let client = Process::Client(0xabc);
        let mut counter = 0u32;
        for tick in 0..ticks {
            for from in 0..3u8 {
                for to in 0..3u8 {
                    counter += 1;
                    net.submit(r(from), r(to), counter.to_le_bytes().to_vec());
                }
                counter += 1;
                net.submit(client, r(from), counter.to_le_bytes().to_vec());
            }
            net.tick();
            for (from, to, bytes) in net.deliver() {
                log.push((tick, from, to, bytes));
            }
        }
        (log, net.stats())
    }

    #[test]
    fn deterministic_per_seed() {
        let a = run(42, faulty_options(), 500);
        let b = run(42, faulty_options(), 500);
        assert_eq!(a, b);
        let c = run(43, faulty_options(), 500);
        assert_ne!(a.0, c.0);
        assert!(a.1.partitions > 0 && a.1.clogs > 0 && a.1.replayed > 0);
    }

    #[test]
    fn loss_and_replay_rates() {
        let options = NetworkOptions {
            packet_loss_probability: 0.2,
            packet_replay_probability: 0.3,
            path_maximum_capacity: 1_000_000,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(2, options, 1);
        let n = 50_000u64;
        for i in 0..n {
            net.submit(r(0), r(1), i.to_le_bytes().to_vec());
        }
        let mut delivered = 0u64;
        for _ in 0..1000 {
            net.tick();
            delivered += net.deliver().len() as u64;
        }
        assert_eq!(net.in_flight(), 0);
        let stats = net.stats();
        assert_eq!(stats.submitted, n);
        assert_eq!(stats.delivered, delivered);
        let loss = stats.dropped_loss as f64 / n as f64;
        assert!((0.19..0.21).contains(&loss), "loss={loss}");
        // Every delivery (originals and replays) is replayed with probability 0.3.
        let replay = stats.replayed as f64 / stats.delivered as f64;
        assert!((0.29..0.31).contains(&replay), "replay={replay}");
        assert_eq!(stats.delivered, n - stats.dropped_loss + stats.replayed);
    }

    #[test]
    fn delay_reorders_but_respects_minimum() {
        let options = NetworkOptions {
            one_way_delay_min: 3,
            one_way_delay_mean: 10,
            path_maximum_capacity: 10_000,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(2, options, 9);
        for i in 0..1000u32 {
            net.submit(r(0), r(1), i.to_le_bytes().to_vec());
        }
        let mut order = Vec::new();
        for tick in 1..=500 {
            net.tick();
            for (_, _, bytes) in net.deliver() {
                assert!(tick >= 3, "delivered before the minimum delay");
                order.push(u32::from_le_bytes(bytes.try_into().unwrap()));
            }
        }
        assert_eq!(order.len(), 1000);
        assert!(order.windows(2).any(|w| w[0] > w[1]), "no reordering");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn capacity_drops_excess() {
        let options = NetworkOptions {
            path_maximum_capacity: 10,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(2, options, 0);
        for _ in 0..25 {
            net.submit(r(0), r(1), vec![1]);
        }
        assert_eq!(net.stats().dropped_capacity, 15);
        assert_eq!(net.in_flight(), 10);
    }

    #[test]
    fn partitions_start_and_heal() {
        let options = NetworkOptions {
            partition_mode: PartitionMode::IsolateSingle,
            partition_symmetry: PartitionSymmetry::Symmetric,
            partition_probability: 0.05,
            unpartition_probability: 0.05,
            partition_stability: 20,
            unpartition_stability: 5,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(5, options, 3);
        let mut started = 0;
        let mut healed = 0;
        let mut was = false;
        let mut since = 0;
        for tick in 1..=5000u64 {
            net.tick();
            let active = net.partition_active();
            if active && !was {
                started += 1;
                since = tick;
                // Isolate single, symmetric: exactly one replica cut from the other four.
                let isolated: Vec<u8> = (0..5)
                    .filter(|&a| {
                        (0..5)
                            .filter(|&b| b != a)
                            .all(|b| net.partitioned(r(a), r(b)))
                    })
                    .collect();
                assert_eq!(isolated.len(), 1);
                let i = isolated[0];
                for b in (0..5).filter(|&b| b != i) {
                    assert!(net.partitioned(r(b), r(i)));
                    for c in (0..5).filter(|&c| c != i && c != b) {
                        assert!(!net.partitioned(r(b), r(c)));
                    }
                }
                assert!(!net.partitioned(Process::Client(1), r(i)));
                assert!(!net.partitioned(r(i), Process::Client(1)));
            }
            if !active && was {
                healed += 1;
                assert!(tick - since >= 20, "partition healed before its stability");
            }
            was = active;
        }
        assert!(
            started > 10 && healed >= started - 1,
            "started={started} healed={healed}"
        );
        assert_eq!(net.stats().partitions, started);

        // heal() ends it at once and no new one starts.
        while !net.partition_active() {
            net.set_faults(true);
            net.tick();
        }
        net.heal();
        assert!(!net.partition_active());
        for _ in 0..2000 {
            net.tick();
            assert!(!net.partition_active());
        }
    }

    #[test]
    fn partition_drops_packets_in_both_directions_or_one() {
        for symmetry in [PartitionSymmetry::Symmetric, PartitionSymmetry::Asymmetric] {
            let options = NetworkOptions {
                partition_mode: PartitionMode::UniformPartition,
                partition_symmetry: symmetry,
                partition_probability: 1.0,
                unpartition_probability: 0.0,
                ..NetworkOptions::default()
            };
            let mut net = PacketSimulator::new(4, options, 11);
            net.tick();
            assert!(net.partition_active());
            let mut cut = 0;
            let mut one_way = 0;
            for a in 0..4 {
                for b in 0..4 {
                    if a == b {
                        assert!(!net.partitioned(r(a), r(b)));
                        continue;
                    }
                    let ab = net.partitioned(r(a), r(b));
                    let ba = net.partitioned(r(b), r(a));
                    cut += ab as u32;
                    one_way += (ab != ba) as u32;
                    let before = net.stats().dropped_partition;
                    net.submit(r(a), r(b), vec![a, b]);
                    assert_eq!(net.stats().dropped_partition - before, ab as u64);
                }
            }
            assert!(cut > 0);
            match symmetry {
                PartitionSymmetry::Symmetric => assert_eq!(one_way, 0),
                PartitionSymmetry::Asymmetric => assert_eq!(one_way, 2 * cut),
            }
            // Everything that was let through arrives (no loss configured).
            let mut got = 0;
            for _ in 0..100 {
                net.tick();
                for (from, to, _) in net.deliver() {
                    assert!(!net.partitioned(from, to));
                    got += 1;
                }
            }
            assert_eq!(got, 12 - cut);
        }
    }

    #[test]
    fn clogs_hold_packets_then_release() {
        let options = NetworkOptions {
            path_clog_probability: 1.0,
            path_clog_duration_mean: 50,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(2, options, 5);
        net.tick();
        assert!(net.clogged(r(0), r(1)) && net.clogged(r(1), r(0)));
        net.set_faults(false);
        net.submit(r(0), r(1), vec![7]);
        let mut arrived = None;
        for tick in 2..1000 {
            net.tick();
            if !net.deliver().is_empty() {
                arrived = Some(tick);
                break;
            }
        }
        assert!(arrived.is_some(), "a clog must eventually release");
        assert_eq!(net.stats().delivered, 1);
        assert_eq!(net.stats().dropped_loss, 0);
    }

    #[test]
    fn heal_unclogs_and_stops_faults() {
        let mut net = PacketSimulator::new(3, faulty_options(), 8);
        for _ in 0..200 {
            net.tick();
        }
        net.heal();
        assert!(!net.partition_active());
        let before = net.stats();
        for i in 0..1000u32 {
            net.submit(r((i % 3) as u8), r(((i + 1) % 3) as u8), vec![0]);
            net.tick();
            net.deliver();
            for a in 0..3 {
                for b in 0..3 {
                    assert!(!net.clogged(r(a), r(b)));
                }
            }
        }
        for _ in 0..200 {
            net.tick();
            net.deliver();
        }
        let after = net.stats();
        assert_eq!(after.dropped_loss, before.dropped_loss);
        assert_eq!(after.replayed, before.replayed);
        assert_eq!(after.partitions, before.partitions);
        assert_eq!(after.clogs, before.clogs);
        assert_eq!(after.delivered - before.delivered, 1000);
    }

    #[test]
    fn down_processes_and_loopback() {
        let options = NetworkOptions {
            packet_loss_probability: 1.0,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(2, options, 0);
        // Loopback is never lost, and arrives on the next tick.
        net.submit(r(0), r(0), vec![1]);
        net.tick();
        assert_eq!(net.deliver(), vec![(r(0), r(0), vec![1])]);

        net.set_faults(false);
        net.submit(r(0), r(1), vec![2]);
        net.set_process_up(r(1), false);
        assert!(!net.process_up(r(1)));
        for _ in 0..50 {
            net.tick();
            assert!(net.deliver().is_empty());
        }
        net.submit(r(1), r(0), vec![3]);
        assert_eq!(net.stats().dropped_down, 2);
        net.set_process_up(r(1), true);
        net.submit(r(1), r(0), vec![4]);
        let mut got = Vec::new();
        for _ in 0..50 {
            net.tick();
            got.extend(net.deliver());
        }
        assert_eq!(got, vec![(r(1), r(0), vec![4])]);
    }

    #[test]
    fn paused_process_packets_are_held_then_delivered() {
        let options = NetworkOptions {
            path_maximum_capacity: 4,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(3, options, 2);
        net.set_process_paused(r(1), true);
        assert!(net.process_paused(r(1)));
        for i in 0..6u8 {
            net.submit(r(0), r(1), vec![i]);
        }
        net.submit(Process::Client(9), r(1), vec![100]);
        net.submit(r(0), r(2), vec![200]);
        let mut got = Vec::new();
        for _ in 0..50 {
            net.tick();
            got.extend(net.deliver());
        }
        // Only the packet to the running replica arrived; the held ones stay queued, and the
        // path's capacity bounds them (the 5th and 6th were dropped at submit).
        assert_eq!(got, vec![(r(0), r(2), vec![200])]);
        assert_eq!(net.in_flight(), 5);
        assert_eq!(net.stats().dropped_capacity, 2);
        net.set_process_paused(r(1), false);
        let mut got = Vec::new();
        for _ in 0..2 {
            net.tick();
            got.extend(net.deliver());
        }
        let mut bytes: Vec<u8> = got.iter().map(|(_, _, b)| b[0]).collect();
        bytes.sort();
        assert_eq!(bytes, vec![0, 1, 2, 3, 100]);
        assert_eq!(net.in_flight(), 0);
    }

    #[test]
    fn manual_partition_holds_until_unpartitioned() {
        let options = NetworkOptions {
            partition_mode: PartitionMode::UniformSize,
            partition_probability: 1.0,
            unpartition_probability: 1.0,
            ..NetworkOptions::default()
        };
        let mut net = PacketSimulator::new(3, options, 4);
        net.set_faults(false);
        // Replica 0 cannot send to the others; it still hears them.
        net.partition_manual(|from, to| from == 0 && to != 0);
        assert!(net.partitioned(r(0), r(1)) && net.partitioned(r(0), r(2)));
        assert!(!net.partitioned(r(1), r(0)) && !net.partitioned(r(1), r(2)));
        for _ in 0..500 {
            net.tick();
            assert!(
                net.partition_active(),
                "a manual partition healed at random"
            );
        }
        net.submit(r(0), r(1), vec![1]);
        net.submit(r(1), r(0), vec![2]);
        let mut got = Vec::new();
        for _ in 0..20 {
            net.tick();
            got.extend(net.deliver());
        }
        assert_eq!(got, vec![(r(1), r(0), vec![2])]);
        net.unpartition();
        assert!(!net.partition_active());
        net.submit(r(0), r(1), vec![3]);
        let mut got = Vec::new();
        for _ in 0..20 {
            net.tick();
            got.extend(net.deliver());
        }
        assert_eq!(got, vec![(r(0), r(1), vec![3])]);
    }
}
