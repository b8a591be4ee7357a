//! Swarm testing: every seed draws its own cluster size, client count, configuration sizes and
//! fault probabilities, so that across seeds every corner is visited with different neighbours.

use crate::network::{NetworkOptions, PartitionMode, PartitionSymmetry};
use crate::rng::{self, chance, pick, range, unit};
use crate::storage::StorageOptions;
use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha8Rng;
use vsr::config::{Config, SECTOR_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    pub replica: u8,
    pub start_tick: u64,
    pub duration_ticks: u64,
}

/// Where targeted corruption strikes: what the protocol's recovery and repair rest on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Corruption {
    /// A prepare the replica committed since its checkpoint (what a restart replays).
    CommittedPrepare = 0,
    /// A prepare at the head of the log while the replica is in a view change.
    ViewChangeHead = 1,
    /// A sector of the header ring.
    HeaderRing = 2,
    /// One superblock copy.
    SuperblockCopy = 3,
    /// A chunk of the durable checkpoint.
    CheckpointChunk = 4,
}

impl Corruption {
    pub const EVERY: [Corruption; 5] = [
        Corruption::CommittedPrepare,
        Corruption::ViewChangeHead,
        Corruption::HeaderRing,
        Corruption::SuperblockCopy,
        Corruption::CheckpointChunk,
    ];
    pub const ALL: u8 = (1 << Corruption::EVERY.len()) - 1;

    pub fn on(self, classes: u8) -> bool {
        classes & (1 << self as u8) != 0
    }
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Run the ledger (with a random ledger workload) instead of the hashing machine.
    pub ledger: bool,
    pub replica_count: u8,
    pub client_count: usize,
    pub config: Config,
    pub network: NetworkOptions,
    pub storage: StorageOptions,
    /// Per tick, per up replica.
    pub crash_probability: f64,
    /// One long outage: a replica crashed at `start_tick` and kept down for `duration_ticks`,
    /// while the others go on past several checkpoints (it comes back to state sync).
    pub outage: Option<Outage>,
    /// Per tick: one sector is corrupted where it hurts (`Corruption`), on a replica the fault
    /// atlas allows there, so every piece of data stays intact on enough replicas.
    pub corruption_probability: f64,
    /// Which `Corruption` classes are on (bit `c as u8`).
    pub corruption_classes: u8,
    /// Per I/O point of an up replica (right after it submitted writes, after one of its writes
    /// completed, after it sent messages): it crashes right there, each write in flight lost,
    /// written or torn.
    pub io_crash_probability: f64,
    /// Per superblock copy write an up replica completes: it crashes right there, before the
    /// next copy is written, leaving the new state on some copies and the old on the rest (and
    /// the next write after its restart starts from that mix: docs/protocol.md §8).
    pub superblock_crash_probability: f64,
    /// The chance that a crash also loses the replica's data file (once per run at most). Only
    /// in runs without storage faults: a lost disk plus a damaged copy elsewhere can be a real
    /// loss of data, beyond the faults the cluster promises to survive.
    pub disk_loss_probability: f64,
    pub restart_ticks_min: u64,
    pub restart_ticks_max: u64,
    /// Replicas that may be down or paused at once.
    pub crashed_max: usize,
    /// Per tick, per up (not paused) replica: the process is paused (not run, receives nothing;
    /// packets to it are held by the network) for `pause_ticks_min..=pause_ticks_max` ticks, its
    /// clock running on, then resumes with its memory intact.
    pub pause_probability: f64,
    pub pause_ticks_min: u64,
    pub pause_ticks_max: u64,
    pub packet_corrupt_probability: f64,
    /// Per tick, per replica: a clock jump beyond tolerance that must be detected, not believed.
    pub clock_excursion_probability: f64,
    /// Per tick: a bad time source moves the wall clocks of a random half or more of the
    /// replicas by one excursion together (same offset, same duration): while they are a
    /// majority cluster time follows them, and is ahead or behind of true time when they return.
    pub clock_shared_excursion_probability: f64,
    /// Per acknowledgement of a prepare (where the fault atlas allows the slot to be faulty):
    /// the disk loses that completed write after the fact, alone, with the slot's header-ring
    /// sector damaged too, or the prepare is damaged instead along with its ring sector; then
    /// the replica crashes. What recovery must then not do is nack the op it acknowledged.
    pub lost_write_probability: f64,
    /// When a lost acknowledged write crashes a backup, the primary of its view crashes as it
    /// restarts: the view change that follows runs while its slot is still faulty, on the
    /// replicas that remain (docs/protocol.md §5.5: a faulty slot is never a nack).
    pub lost_write_primary_crash: bool,
    pub clock_offsets_ns: Vec<i64>,
    pub clock_drifts_ppm: Vec<i64>,
    /// Requests each client sends before it is done.
    pub requests_per_client: Vec<u64>,
    pub request_body_max: usize,
}

impl SimOptions {
    /// How far a wall clock's drift may take it (`SimTime::set_realtime_drift_max_ns`): a
    /// quarter of the tolerance, as the offsets are drawn within an eighth.
    pub fn realtime_drift_max_ns(&self) -> u64 {
        self.config.clock_offset_tolerance_max_ns / 4
    }

    /// How long a crashed replica stays down: drawn from `rng` (each fault class has its own).
    pub fn restart_delay_ticks(&self, rng: &mut ChaCha8Rng) -> u64 {
        range(rng, self.restart_ticks_min, self.restart_ticks_max)
    }

    pub fn generate(rng: &mut ChaCha8Rng) -> SimOptions {
        let replica_count = range(rng, 1, 6) as u8;
        let client_count = range(rng, 1, 8) as usize;
        let message_size_max = *pick(rng, &[SECTOR_SIZE, 2 * SECTOR_SIZE, 4 * SECTOR_SIZE]) as u32;
        let mut config = Config::timing_defaults(replica_count);
        config.message_size_max = message_size_max;
        let headers_fit = config.headers_per_message() as u64;
        config.pipeline_max = range(rng, 1, 8.min(headers_fit - 1)) as u32;
        config.journal_slot_count = range(rng, 64, 512) as u32;
        config.clients_max = range(rng, 1, 8) as u32;
        config.ping_timeout_ticks = range(rng, 10, 50);
        config.prepare_timeout_ticks = range(rng, 5, 25);
        config.commit_timeout_ticks = range(rng, 10, 40);
        config.normal_status_timeout_ticks = range(rng, config.commit_timeout_ticks * 2 + 20, 400);
        config.view_change_status_timeout_ticks = range(rng, 100, 400);
        config.view_change_message_timeout_ticks = range(rng, 10, 50);
        config.repair_timeout_ticks = range(rng, 10, 50);
        config.primary_abdicate_timeout_ticks = range(rng, config.commit_timeout_ticks + 50, 500);
        config.request_timeout_ticks = range(rng, 50, 200);
        config.clock_offset_tolerance_max_ns = range(rng, 100, 1000) * 1_000_000;
        config.clock_epoch_ns = range(rng, 50, 200) * 10_000_000;
        config.clock_synchronization_window_ns = config.clock_epoch_ns * range(rng, 3, 10);
        config.validate().expect("generated configuration");

        let faulty_network = chance(rng, 0.8);
        let mut network = NetworkOptions {
            one_way_delay_min: range(rng, 1, 3),
            one_way_delay_mean: range(rng, 3, 12),
            packet_loss_probability: if faulty_network { unit(rng) * 0.3 } else { 0.0 },
            packet_replay_probability: if faulty_network { unit(rng) * 0.5 } else { 0.0 },
            path_maximum_capacity: range(rng, 16, 128) as usize,
            path_clog_duration_mean: range(rng, 10, 500),
            path_clog_probability: if faulty_network {
                unit(rng) * 0.001
            } else {
                0.0
            },
            partition_mode: if faulty_network {
                *pick(
                    rng,
                    &[
                        PartitionMode::None,
                        PartitionMode::UniformSize,
                        PartitionMode::UniformPartition,
                        PartitionMode::IsolateSingle,
                    ],
                )
            } else {
                PartitionMode::None
            },
            partition_symmetry: *pick(
                rng,
                &[PartitionSymmetry::Symmetric, PartitionSymmetry::Asymmetric],
            ),
            partition_probability: unit(rng) * 0.002,
            unpartition_probability: 0.002 + unit(rng) * 0.02,
            partition_stability: range(rng, 50, 500),
            unpartition_stability: range(rng, 50, 500),
            ..NetworkOptions::default()
        };
        let faulty_storage = chance(rng, 0.7);
        let mut storage = StorageOptions {
            read_latency_min: range(rng, 1, 2),
            read_latency_mean: range(rng, 2, 8),
            write_latency_min: range(rng, 1, 2),
            write_latency_mean: range(rng, 2, 10),
            read_fault_probability: if faulty_storage {
                unit(rng) * 0.02
            } else {
                0.0
            },
            write_fault_probability: if faulty_storage {
                unit(rng) * 0.02
            } else {
                0.0
            },
            write_misdirect_probability: if faulty_storage {
                unit(rng) * 0.01
            } else {
                0.0
            },
            crash_fault_probability: unit(rng),
            ..StorageOptions::default()
        };
        let tolerance = config.clock_offset_tolerance_max_ns as i64;
        let clock_offsets_ns = (0..replica_count)
            .map(|_| range(rng, 0, tolerance as u64 / 4) as i64 - tolerance / 8)
            .collect();
        let clock_drifts_ppm = (0..replica_count)
            .map(|_| range(rng, 0, 200) as i64 - 100)
            .collect();
        let ops_budget = config.journal_slot_count as u64 - client_count as u64 - 4;
        let per_client = (ops_budget / client_count as u64).min(range(rng, 5, 60));
        let mut requests_per_client: Vec<u64> = (0..client_count)
            .map(|_| range(rng, 1, per_client.max(1)))
            .collect();
        let crash_probability = if chance(rng, 0.7) {
            unit(rng) * 0.0005
        } else {
            0.0
        };
        let mut restart_ticks_max = range(rng, 50, 2000);
        let packet_corrupt_probability = if faulty_network {
            unit(rng) * 0.01
        } else {
            0.0
        };
        let clock_excursion_probability = if chance(rng, 0.3) {
            unit(rng) * 0.0002
        } else {
            0.0
        };
        let request_body_max = (message_size_max as usize - vsr::header::HEADER_SIZE)
            .min(range(rng, 0, 2048) as usize);
        // Pauses: short ones exercise stale messages and timeouts that fire late; long ones (past
        // normal_status_timeout) make a paused primary come back to a cluster that moved on.
        // Drawn from a stream of their own, so the draws above and the world's after them are
        // those of the simulator before pauses existed (regression seeds replay unchanged).
        let mut pause_rng = rng::seeded(rng.clone().next_u64() ^ 0x7061_7573_6500_0000);
        let pause_probability = if chance(&mut pause_rng, 0.5) {
            unit(&mut pause_rng) * 0.0005
        } else {
            0.0
        };
        let pause_ticks_min = range(&mut pause_rng, 1, 20);
        let pause_ticks_max = range(&mut pause_rng, pause_ticks_min, 1500);
        // Half the seeds run long: a small journal and many times its size in requests, so the
        // journal wraps again and again behind checkpoints, and crashes long enough that a
        // replica comes back behind the cluster's journals and must state sync. Drawn from a
        // stream of their own, like pauses.
        let mut wrap_rng = rng::seeded(rng.clone().next_u64() ^ 0x7772_6170_0000_0000);
        if chance(&mut wrap_rng, 0.7) {
            let slots_min = 6 * (config.pipeline_max as u64 + 1) + 8;
            config.journal_slot_count = range(&mut wrap_rng, slots_min, slots_min + 32) as u32;
            let total = config.journal_slot_count as u64 * range(&mut wrap_rng, 4, 12);
            // A client completes a request every few dozen ticks at best: keep every client's
            // share within what the fault and liveness phases have time for.
            let per_client = total.div_ceil(client_count as u64).min(350);
            requests_per_client = (0..client_count).map(|_| per_client).collect();
            restart_ticks_max = range(&mut wrap_rng, 500, 6000);
        }
        // Depth: most seeds crash (recovery is what the journal's design is for), and some long
        // seeds keep a crashed replica down past several checkpoints, so it must state sync.
        // In a stream of their own, so seeds that crashed before replay as they did.
        let mut depth_rng = rng::seeded(rng.clone().next_u64() ^ 0x6465_7074_6800_0000);
        let mut crash_probability = crash_probability;
        if crash_probability == 0.0 && chance(&mut depth_rng, 0.6) {
            crash_probability = unit(&mut depth_rng) * 0.0005;
        }
        if restart_ticks_max >= 500 && chance(&mut depth_rng, 0.3) {
            restart_ticks_max = range(&mut depth_rng, 6000, 12000);
        }
        let outage = (replica_count > 1 && chance(&mut depth_rng, 0.35)).then(|| Outage {
            replica: range(&mut depth_rng, 0, replica_count as u64 - 1) as u8,
            start_tick: range(&mut depth_rng, 500, 6000),
            duration_ticks: range(&mut depth_rng, 3000, 12000),
        });
        // Lost disks (`vsr recover`): in a stream of their own, like pauses.
        let mut disk_rng = rng::seeded(rng.clone().next_u64() ^ 0x6469_736b_0000_0000);
        let disk_loss_probability =
            if !faulty_storage && replica_count >= 2 && chance(&mut disk_rng, 0.5) {
                0.2 + unit(&mut disk_rng) * 0.8
            } else {
                0.0
            };
        // Targeted corruption: in a stream of their own, like pauses. Only with storage faults on:
        // those seeds never lose a disk (a lost disk plus damage elsewhere can lose data).
        let mut corrupt_rng = rng::seeded(rng.clone().next_u64() ^ 0x636f_7272_7570_7400);
        let (corruption_probability, corruption_classes) =
            if faulty_storage && chance(&mut corrupt_rng, 0.6) {
                let classes = loop {
                    let mask = corrupt_rng.next_u32() as u8 & Corruption::ALL;
                    if mask != 0 {
                        break mask;
                    }
                };
                (unit(&mut corrupt_rng) * 0.01, classes)
            } else {
                (0.0, 0)
            };
        // I/O-point crashes: in a stream of their own, like pauses.
        let mut io_crash_rng = rng::seeded(rng.clone().next_u64() ^ 0x696f_6372_6173_6800);
        // On in every seed (the durability checker's promises are worth most across a crash);
        // the intensity is drawn, from rare to a crash every few hundred writes.
        let io_crash_probability = 0.0001 + unit(&mut io_crash_rng) * 0.002;
        // Crashes between superblock copies: in half the seeds, in a stream of their own.
        let mut superblock_crash_rng = rng::seeded(rng.clone().next_u64() ^ 0x7362_6372_6173_6800);
        let superblock_crash_probability = if chance(&mut superblock_crash_rng, 0.5) {
            0.01 + unit(&mut superblock_crash_rng) * 0.09
        } else {
            0.0
        };
        // Slow packets: in 30% of seeds, in a stream of their own.
        let mut slow_packet_rng = rng::seeded(rng.clone().next_u64() ^ 0x736c_6f77_7061_636b);
        if chance(&mut slow_packet_rng, 0.3) {
            network.slow_packet_probability = 0.001 + unit(&mut slow_packet_rng) * 0.02;
            network.slow_packet_ticks_max = range(&mut slow_packet_rng, 20, 500);
        }
        // Slow I/O (slow requests and disk stalls): in 40% of seeds, in a stream of their own.
        let mut slow_rng = rng::seeded(rng.clone().next_u64() ^ 0x736c_6f77_696f_0000);
        if chance(&mut slow_rng, 0.4) {
            storage.slow_io_probability = 0.001 + unit(&mut slow_rng) * 0.02;
            storage.slow_io_ticks_max = range(&mut slow_rng, 50, 2_000);
            storage.stall_probability = unit(&mut slow_rng) * 0.002;
        }
        // Lost acknowledged writes: with storage faults on, in a stream of their own.
        let mut lost_rng = rng::seeded(rng.clone().next_u64() ^ 0x6c6f_7374_0000_0000);
        let lost_write_probability = if faulty_storage && chance(&mut lost_rng, 0.5) {
            0.002 + unit(&mut lost_rng) * 0.02
        } else {
            0.0
        };
        let mut shared_clock_rng = rng::seeded(rng.clone().next_u64() ^ 0x6e74_7000_0000_0000);
        let clock_shared_excursion_probability = if chance(&mut shared_clock_rng, 0.2) {
            unit(&mut shared_clock_rng) * 0.0002
        } else {
            0.0
        };
        let mut doom_rng = rng::seeded(rng.clone().next_u64() ^ 0x646f_6f6d_0000_0000);
        let lost_write_primary_crash = lost_write_probability > 0.0 && chance(&mut doom_rng, 0.5);
        SimOptions {
            ledger: false,
            replica_count,
            client_count,
            config,
            network,
            storage,
            crash_probability,
            outage,
            corruption_probability,
            corruption_classes,
            io_crash_probability,
            superblock_crash_probability,
            disk_loss_probability,
            restart_ticks_min: 20,
            restart_ticks_max,
            crashed_max: 1
                .max(replica_count as usize - vsr::config::quorums(replica_count as usize).1),
            pause_probability,
            pause_ticks_min,
            pause_ticks_max,
            packet_corrupt_probability,
            clock_excursion_probability,
            clock_shared_excursion_probability,
            lost_write_probability,
            lost_write_primary_crash,
            clock_offsets_ns,
            clock_drifts_ppm,
            requests_per_client,
            request_body_max,
        }
    }

    /// A fault-free, fast configuration for scripted scenarios: no crashes, pauses, packet loss,
    /// replay, corruption, partitions, clogs, storage faults or clock excursions; small
    /// timeouts; clients idle (no workload) until `Simulator::set_client_workload`. Every fault a
    /// scenario wants it injects itself, so it controls faults exactly.
    pub fn quiet(replica_count: u8, client_count: usize) -> SimOptions {
        assert!(replica_count >= 1 && replica_count as usize <= vsr::config::REPLICAS_MAX);
        let mut config = Config::timing_defaults(replica_count);
        config.message_size_max = 2 * SECTOR_SIZE as u32;
        config.journal_slot_count = 256;
        config.pipeline_max = 4;
        config.clients_max = (client_count as u32).clamp(1, 16);
        config.ping_timeout_ticks = 10;
        config.prepare_timeout_ticks = 10;
        config.commit_timeout_ticks = 10;
        config.normal_status_timeout_ticks = 60;
        config.view_change_status_timeout_ticks = 150;
        config.view_change_message_timeout_ticks = 10;
        config.repair_timeout_ticks = 10;
        config.primary_abdicate_timeout_ticks = 80;
        config.request_timeout_ticks = 30;
        config.clock_offset_tolerance_max_ns = 200_000_000;
        config.clock_epoch_ns = 500_000_000;
        config.clock_synchronization_window_ns = 5_000_000_000;
        config.validate().expect("quiet configuration");
        SimOptions {
            ledger: false,
            replica_count,
            client_count,
            config,
            network: NetworkOptions::default(),
            storage: StorageOptions::default(),
            crash_probability: 0.0,
            outage: None,
            corruption_probability: 0.0,
            corruption_classes: 0,
            io_crash_probability: 0.0,
            superblock_crash_probability: 0.0,
            disk_loss_probability: 0.0,
            restart_ticks_min: 20,
            restart_ticks_max: 20,
            crashed_max: 1
                .max(replica_count as usize - vsr::config::quorums(replica_count as usize).1),
            pause_probability: 0.0,
            pause_ticks_min: 1,
            pause_ticks_max: 1,
            packet_corrupt_probability: 0.0,
            clock_excursion_probability: 0.0,
            clock_shared_excursion_probability: 0.0,
            lost_write_probability: 0.0,
            lost_write_primary_crash: false,
            clock_offsets_ns: vec![0; replica_count as usize],
            clock_drifts_ppm: vec![0; replica_count as usize],
            requests_per_client: vec![0; client_count],
            request_body_max: 256,
        }
    }
}
