//! The simulated cluster: production replicas on simulated seams, clients with a workload, fault
//! injection, and the safety and liveness checks.

use crate::checker::Checker;
use crate::network::{PacketSimulator, Process};
use crate::options::SimOptions;
use crate::rng::{chance, range};
use crate::storage::{FaultAtlas, SimStorage, StorageStats};
use crate::time::SimTime;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::rc::Rc;
use vsr::bus::MessageBus;
use vsr::client::{Client, ClientBus, ClientEvent};
use vsr::header::HEADER_SIZE;
use vsr::message::{Message, MessagePool};
use vsr::replica::{Replica, ReplicaOptions, ReplicaStats, Status};
use vsr::state_machine::{HashingStateMachine, HASHING_OPERATION};
use vsr::storage::{Layout, Storage};
use vsr::time::Time;

/// Sends are copied out as bytes, as a real network would carry them.
#[derive(Default)]
pub struct SimBus {
    pub outbox: Vec<(Process, Vec<u8>)>,
}

impl MessageBus for SimBus {
    fn send_to_replica(&mut self, replica: u8, message: &Message) {
        self.outbox
            .push((Process::Replica(replica), message.bytes().to_vec()));
    }
    fn send_to_client(&mut self, client: u128, message: &Message) {
        self.outbox
            .push((Process::Client(client), message.bytes().to_vec()));
    }
}

impl ClientBus for SimBus {
    fn send_to_replica(&mut self, replica: u8, message: &Message) {
        self.outbox
            .push((Process::Replica(replica), message.bytes().to_vec()));
    }
}

pub type SimReplica = Replica<SimStorage, SimBus, SimTime, HashingStateMachine>;

/// A replica slot: up, or down with what survives a crash (its disk and its clock).
#[allow(clippy::large_enum_variant)]
enum Slot {
    Up(Box<SimReplica>),
    Down {
        storage: SimStorage,
        time: SimTime,
        restart_at: u64,
    },
    Empty,
}

struct SimClient {
    client: Client,
    bus: SimBus,
    requests_target: u64,
    requests_done: u64,
    pool: MessagePool,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct FaultCounts {
    pub crashes: u64,
    pub restarts: u64,
    pub packets_corrupted: u64,
    pub clock_excursions: u64,
}

pub struct Simulator {
    pub seed: u64,
    pub options: SimOptions,
    cluster: u128,
    rng: ChaCha8Rng,
    replicas: Vec<Slot>,
    network: PacketSimulator,
    clients: Vec<SimClient>,
    pub checker: Checker,
    pub tick: u64,
    pub faults: FaultCounts,
    faults_enabled: bool,
    trace: bool,
    /// Stats of replica incarnations that crashed, so totals survive restarts.
    retired_stats: ReplicaStats,
    pub replies: u64,
    pub evictions: u64,
}

impl Simulator {
    pub fn new(seed: u64, trace: bool) -> Simulator {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let options = SimOptions::generate(&mut rng);
        let cluster = (rng.next_u64() as u128) << 64 | rng.next_u64() as u128;
        let layout = Layout::new(&options.config);
        let atlas = Rc::new(FaultAtlas::new(
            options.replica_count,
            options.config.quorum_replication(),
            &layout,
            rng.next_u64(),
        ));
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
            for (zone, offset, bytes) in
                vsr::format::format_writes(&options.config, cluster, replica)
            {
                storage.write_raw(zone, offset, &bytes);
            }
            let time = SimTime::new(
                vsr::config::TICK_MS * 1_000_000,
                options.clock_offsets_ns[replica as usize],
                options.clock_drifts_ppm[replica as usize],
                rng.next_u64(),
            );
            replicas.push(Slot::Down {
                storage,
                time,
                restart_at: 0,
            });
        }
        let clients = (0..options.client_count)
            .map(|i| {
                let id = (rng.next_u64() as u128) << 64 | (i as u128 + 1);
                SimClient {
                    client: Client::new(
                        id,
                        cluster,
                        options.replica_count,
                        options.config.message_size_max as usize,
                        options.config.request_timeout,
                        rng.next_u64(),
                    ),
                    bus: SimBus::default(),
                    requests_target: options.requests_per_client[i],
                    requests_done: 0,
                    pool: MessagePool::new(4, options.config.message_size_max as usize),
                }
            })
            .collect();
        let mut sim = Simulator {
            seed,
            checker: Checker::new(options.replica_count as usize),
            options,
            cluster,
            rng,
            replicas,
            network,
            clients,
            tick: 0,
            faults: FaultCounts::default(),
            faults_enabled: true,
            trace,
            retired_stats: ReplicaStats::default(),
            replies: 0,
            evictions: 0,
        };
        for replica in 0..sim.options.replica_count {
            sim.restart(replica as usize);
        }
        sim.faults.restarts = 0;
        sim
    }

    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    fn restart(&mut self, index: usize) {
        let Slot::Down { storage, time, .. } =
            std::mem::replace(&mut self.replicas[index], Slot::Empty)
        else {
            panic!("restart of a replica that is up");
        };
        let mut replica = Replica::open(
            ReplicaOptions {
                cluster: self.cluster,
                replica: index as u8,
                config: self.options.config.clone(),
                seed: self.seed,
            },
            storage,
            SimBus::default(),
            time,
            HashingStateMachine::default(),
        );
        replica.trace = self.trace;
        self.replicas[index] = Slot::Up(Box::new(replica));
        self.network
            .set_process_up(Process::Replica(index as u8), true);
        self.checker.on_restart(index);
        self.faults.restarts += 1;
    }

    fn crash(&mut self, index: usize) {
        let Slot::Up(replica) = std::mem::replace(&mut self.replicas[index], Slot::Empty) else {
            panic!("crash of a replica that is down");
        };
        add_stats(&mut self.retired_stats, &replica.stats);
        let (mut storage, _bus, time, _sm) = replica.into_parts();
        storage.crash();
        let restart_at = self.tick
            + range(
                &mut self.rng,
                self.options.restart_ticks_min,
                self.options.restart_ticks_max,
            );
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

    fn up_count(&self) -> usize {
        self.replicas
            .iter()
            .filter(|s| matches!(s, Slot::Up(_)))
            .count()
    }

    /// One tick of the whole world.
    pub fn step(&mut self) -> Result<(), String> {
        self.tick += 1;
        self.inject_faults();
        for index in 0..self.replicas.len() {
            self.step_replica(index)?;
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
        Ok(())
    }

    fn inject_faults(&mut self) {
        for index in 0..self.replicas.len() {
            match &self.replicas[index] {
                Slot::Down { restart_at, .. } if *restart_at <= self.tick => self.restart(index),
                Slot::Up(_)
                    if self.faults_enabled
                        && self.replicas.len() - self.up_count() < self.options.crashed_max
                        && chance(&mut self.rng, self.options.crash_probability) =>
                {
                    self.crash(index)
                }
                _ => {}
            }
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
                        Slot::Up(r) => &mut r.time,
                        Slot::Down { time, .. } => time,
                        Slot::Empty => unreachable!(),
                    };
                    time.excursion(sign * magnitude, duration);
                    self.faults.clock_excursions += 1;
                }
            }
        }
    }

    fn step_replica(&mut self, index: usize) -> Result<(), String> {
        let replica = match &mut self.replicas[index] {
            Slot::Up(r) => r,
            Slot::Down { time, storage, .. } => {
                time.tick();
                let _ = storage;
                return Ok(());
            }
            Slot::Empty => unreachable!(),
        };
        replica.time.tick();
        replica.storage.tick();
        while let Some(completion) = replica.storage.next_completion() {
            replica.on_io_completion(completion);
        }
        replica.tick();
        if let Some(error) = &replica.open_error {
            return Err(format!("replica {index} failed to open: {error}"));
        }
        self.flush_replica(index)
    }

    fn flush_replica(&mut self, index: usize) -> Result<(), String> {
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        for (to, bytes) in replica.bus.outbox.drain(..) {
            self.network
                .submit(Process::Replica(index as u8), to, bytes);
        }
        if replica.status == Status::Recovering {
            return Ok(());
        }
        let journal = &replica.journal;
        self.checker.observe(
            index,
            replica.commit_min,
            replica.commit_max,
            |op| journal.header(op).copied(),
            vsr::state_machine::StateMachine::digest(&replica.state_machine),
        )
    }

    fn deliver_to_replica(&mut self, index: usize, bytes: &[u8]) -> Result<(), String> {
        let Slot::Up(replica) = &mut self.replicas[index] else {
            return Ok(());
        };
        if bytes.len() < HEADER_SIZE {
            return Ok(());
        }
        let Some(mut message) = replica.pool.get() else {
            return Ok(());
        };
        let n = bytes.len().min(message.capacity());
        message.buffer_mut()[..n].copy_from_slice(&bytes[..n]);
        replica.on_message(message);
        self.flush_replica(index)
    }

    fn deliver_to_client(&mut self, id: u128, bytes: &[u8]) -> Result<(), String> {
        let Some(c) = self.clients.iter_mut().find(|c| c.client.id == id) else {
            return Ok(());
        };
        if bytes.len() < HEADER_SIZE {
            return Ok(());
        }
        let Some(mut message) = c.pool.get() else {
            return Ok(());
        };
        let n = bytes.len().min(message.capacity());
        message.buffer_mut()[..n].copy_from_slice(&bytes[..n]);
        match c.client.on_message(message) {
            Some(ClientEvent::Reply { reply, .. }) => {
                c.requests_done += 1;
                self.replies += 1;
                let header = *reply.header();
                self.checker.on_reply(id, &header, reply.body())?;
            }
            Some(ClientEvent::Registered { .. }) => {}
            Some(ClientEvent::Evicted) => self.evictions += 1,
            None => {}
        }
        Ok(())
    }

    fn step_clients(&mut self) {
        for c in &mut self.clients {
            c.client.tick(&mut c.bus);
            if !c.client.busy() && !c.client.evicted() {
                if !c.client.registered() {
                    let _ = c.client.register(&mut c.bus);
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
            if matches!(self.replicas[index], Slot::Down { .. }) {
                self.restart(index);
            }
            if let Slot::Up(r) = &mut self.replicas[index] {
                r.storage.set_faults(false);
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
            if r.status != Status::Normal || r.commit_min != r.op {
                return false;
            }
            if *view.get_or_insert(r.view) != r.view || *op.get_or_insert(r.op) != r.op {
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
                    " r{i}:{:?}/v{}/op{}/cmin{}/cmax{}",
                    r.status, r.view, r.op, r.commit_min, r.commit_max
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
                add_stats(&mut total, &r.stats);
            }
        }
        total
    }

    pub fn storage_stats(&self) -> StorageStats {
        let mut total = StorageStats::default();
        for slot in &self.replicas {
            let s = match slot {
                Slot::Up(r) => r.storage.stats(),
                Slot::Down { storage, .. } => storage.stats(),
                Slot::Empty => continue,
            };
            total.reads += s.reads;
            total.writes += s.writes;
            total.read_faults += s.read_faults;
            total.write_faults += s.write_faults;
            total.misdirects += s.misdirects;
            total.torn_writes += s.torn_writes;
            total.lost_writes += s.lost_writes;
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
                hasher.update(&r.view.to_le_bytes());
                hasher.update(&r.op.to_le_bytes());
                hasher.update(&r.commit_min.to_le_bytes());
                hasher.update(
                    &vsr::state_machine::StateMachine::digest(&r.state_machine).to_le_bytes(),
                );
                hasher.update(&r.time.monotonic().to_le_bytes());
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
    total.views_started += s.views_started;
    total.repairs_headers += s.repairs_headers;
    total.repairs_prepares += s.repairs_prepares;
    total.truncations += s.truncations;
    total.commits += s.commits;
    total.evictions += s.evictions;
    total.messages_dropped_invalid += s.messages_dropped_invalid;
    total.pool_exhausted += s.pool_exhausted;
}
