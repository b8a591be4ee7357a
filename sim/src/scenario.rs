//! The scenario API: deterministic, scripted tests on the same simulator the VOPR runs.
//!
//! A scenario builds a `Simulator` with `SimOptions::quiet` (no random faults, small timeouts,
//! idle clients), gives clients a workload, injects exactly the faults it wants (crash, restart,
//! pause, partition, a corrupt WAL slot, a torn write), and steps until a predicate holds with a
//! tick deadline (`run_until`). Every step runs the safety checker as in a VOPR run, so a
//! scenario that reaches its goal has also kept every safety property on the way; scenarios add
//! `check_journals` and `check_acknowledged` at the points they care about.
//!
//! Everything here is read-only on replicas, except through the fault methods, which act on the
//! simulated world (disk, network, process), never on a replica's memory.

use crate::cluster::{SimReplica, Simulator, Slot};
use crate::network::Process;
use crate::storage::CrashFate;
use rand_chacha::rand_core::Rng;
use vsr::client::Client;
use vsr::config::SECTOR_SIZE;
use vsr::header::commands::Request;
use vsr::header::{Header, HEADER_SIZE};
use vsr::replica::Status;
use vsr::state_machine::HASHING_OPERATION;
use vsr::storage::Zone;
use vsr::superblock::CheckpointRef;

/// Which directions a scripted partition of one replica cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Neither the replica nor the others hear each other.
    Both,
    /// The replica's messages to the other replicas are lost; it still hears them.
    Outgoing,
    /// The other replicas' messages to it are lost; they still hear it.
    Incoming,
}

impl Simulator {
    // ---- Replicas (read-only) -----------------------------------------------------------------

    /// The replica, if it is up (running or paused).
    pub fn replica(&self, index: usize) -> Option<&SimReplica> {
        match &self.replicas[index] {
            Slot::Up(r) => Some(r),
            _ => None,
        }
    }

    pub fn replica_up(&self, index: usize) -> bool {
        self.replica(index).is_some()
    }

    pub fn replica_paused(&self, index: usize) -> bool {
        self.paused(index)
    }

    pub fn replica_status(&self, index: usize) -> Option<Status> {
        self.replica(index).map(|r| r.status())
    }

    pub fn replica_view(&self, index: usize) -> Option<u32> {
        self.replica(index).map(|r| r.view())
    }

    pub fn replica_op(&self, index: usize) -> Option<u64> {
        self.replica(index).map(|r| r.op())
    }

    pub fn replica_commit_min(&self, index: usize) -> Option<u64> {
        self.replica(index).map(|r| r.commit_min())
    }

    pub fn replica_commit_max(&self, index: usize) -> Option<u64> {
        self.replica(index).map(|r| r.commit_max())
    }

    /// The primary of the view this replica is in (or moving to).
    pub fn replica_primary_index(&self, index: usize) -> Option<u8> {
        self.replica(index).map(|r| r.primary_index(r.view()))
    }

    /// The replica that is `Normal` and primary of its view, the highest such view if several
    /// (an old primary cut off from the cluster may still believe it leads an older view).
    pub fn primary(&self) -> Option<usize> {
        (0..self.replicas.len())
            .filter_map(|i| self.replica(i).map(|r| (i, r)))
            .filter(|(_, r)| r.status() == Status::Normal && r.is_primary())
            .max_by_key(|(_, r)| r.view())
            .map(|(i, _)| i)
    }

    /// The highest view of any up replica.
    pub fn view_max(&self) -> u32 {
        (0..self.replicas.len())
            .filter_map(|i| self.replica_view(i))
            .max()
            .unwrap_or(0)
    }

    /// The replica's journal has op `op` with its prepare write submitted and not yet completed.
    pub fn prepare_write_in_flight(&self, index: usize, op: u64) -> bool {
        let Some(r) = self.replica(index) else {
            return false;
        };
        let offset = self.prepare_offset(op);
        r.storage()
            .writes_in_flight()
            .iter()
            .any(|&(zone, o, _)| zone == Zone::WalPrepares && o == offset)
    }

    fn prepare_offset(&self, op: u64) -> u64 {
        let config = &self.options.config;
        (op % config.journal_slot_count as u64) * config.message_size_max as u64
    }

    // ---- Process faults -----------------------------------------------------------------------

    /// Crashes the replica now (writes in flight lost, written or torn by the usual crash rule).
    /// It stays down until `restart_replica`.
    pub fn crash_replica(&mut self, index: usize) {
        self.crash_replica_with(index, |_, _, _| CrashFate::Random);
    }

    /// Crashes the replica now; `fate(zone, offset, len)` decides each write in flight. It stays
    /// down until `restart_replica`.
    pub fn crash_replica_with(
        &mut self,
        index: usize,
        fate: impl Fn(Zone, u64, usize) -> CrashFate,
    ) {
        self.crash_with(index, u64::MAX, fate);
        if self.trace_enabled() {
            eprintln!("[scenario] crash replica {index}");
        }
    }

    /// Crashes the replica with its in-flight write of the prepare slot of `op` torn (every other
    /// write in flight is lost). Fails, without crashing, if that write is not in flight.
    pub fn crash_replica_tearing_prepare(&mut self, index: usize, op: u64) -> Result<(), String> {
        if !self.prepare_write_in_flight(index, op) {
            return Err(format!(
                "replica {index} has no write of op {op}'s prepare slot in flight"
            ));
        }
        let offset = self.prepare_offset(op);
        self.crash_replica_with(index, |zone, o, _| {
            if zone == Zone::WalPrepares && o == offset {
                CrashFate::Torn
            } else {
                CrashFate::Lost
            }
        });
        Ok(())
    }

    /// Replaces the crashed replica's data file with what `vsr recover` writes (blank,
    /// `rejoining`): its disk is lost. It stays down until `restart_replica`.
    pub fn lose_disk(&mut self, index: usize) {
        self.lose_disk_now(index);
    }

    /// Restarts a crashed replica now: it opens its data file and recovers.
    pub fn restart_replica(&mut self, index: usize) {
        assert!(
            matches!(self.replicas[index], Slot::Down { .. }),
            "restart of replica {index}, which is up"
        );
        self.restart(index);
    }

    /// Pauses the replica for `ticks` ticks (see `cluster.rs`: not run, packets to it held).
    pub fn pause_replica(&mut self, index: usize, ticks: u64) {
        assert!(!self.paused(index), "replica {index} is already paused");
        self.pause(index, self.tick + ticks.max(1));
    }

    pub fn resume_replica(&mut self, index: usize) {
        self.resume(index);
    }

    // ---- Network faults -----------------------------------------------------------------------

    /// Cuts replica `index` off from the other replicas in the given direction(s), replacing any
    /// partition. Clients still reach every replica. Holds until `heal_partition`.
    pub fn partition_replica(&mut self, index: usize, cut: Cut) {
        let r = index as u8;
        self.network.partition_manual(|from, to| match cut {
            Cut::Both => (from == r) != (to == r),
            Cut::Outgoing => from == r && to != r,
            Cut::Incoming => to == r && from != r,
        });
    }

    /// Cuts exactly the directions `blocked(from, to)` between replicas, replacing any partition.
    pub fn partition_with(&mut self, blocked: impl Fn(u8, u8) -> bool) {
        self.network.partition_manual(blocked);
    }

    pub fn heal_partition(&mut self) {
        self.network.unpartition();
    }

    // ---- Storage faults -----------------------------------------------------------------------

    /// Writes garbage over the first sector (the header) of the WAL prepare slot of `op` on
    /// replica `index`, up or down, bypassing the fault atlas. The replica is not told.
    pub fn corrupt_prepare(&mut self, index: usize, op: u64) {
        let offset = self.prepare_offset(op);
        let mut garbage = vec![0u8; SECTOR_SIZE];
        self.rng.fill_bytes(&mut garbage);
        garbage[0] |= 1; // Never all zeros: that would read as "never written".
        let storage = match &mut self.replicas[index] {
            Slot::Up(r) => r.seams().storage,
            Slot::Down { storage, .. } => storage,
            Slot::Empty => unreachable!(),
        };
        storage.write_raw(Zone::WalPrepares, offset, &garbage);
    }

    /// The durable checkpoint of replica `index`, if it is up.
    pub fn replica_checkpoint(&self, index: usize) -> Option<CheckpointRef> {
        self.replica(index).map(|r| r.checkpoint())
    }

    /// Writes garbage over the first sector (the chunk header) of block `chunk` of checkpoint
    /// area `area` on replica `index`, up or down, bypassing the fault atlas. The replica is not
    /// told: it finds out when it reads the chunk.
    pub fn corrupt_checkpoint_chunk(&mut self, index: usize, area: u8, chunk: u32) {
        let offset =
            vsr::storage::Layout::new(&self.options.config).checkpoint_block_offset(area, chunk);
        let mut garbage = vec![0u8; SECTOR_SIZE];
        self.rng.fill_bytes(&mut garbage);
        garbage[0] |= 1;
        let storage = match &mut self.replicas[index] {
            Slot::Up(r) => r.seams().storage,
            Slot::Down { storage, .. } => storage,
            Slot::Empty => unreachable!(),
        };
        storage.write_raw(Zone::Checkpoint, offset, &garbage);
    }

    // ---- Clients ------------------------------------------------------------------------------

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn client(&self, index: usize) -> &Client {
        &self.clients[index].client
    }

    /// The client registers (if it has not) and sends requests until `requests` have been
    /// answered in total. 0 leaves an unregistered client idle.
    pub fn set_client_workload(&mut self, index: usize, requests: u64) {
        self.clients[index].requests_target = requests;
    }

    pub fn client_requests_done(&self, index: usize) -> u64 {
        self.clients[index].requests_done
    }

    /// Replies the client accepted (one per answered request).
    pub fn client_replies_accepted(&self, index: usize) -> u64 {
        self.clients[index].replies_accepted
    }

    /// Reply messages that reached the client, duplicates included.
    pub fn client_replies_received(&self, index: usize) -> u64 {
        self.clients[index].replies_received
    }

    /// Request messages the client sent (registers and retries included).
    pub fn client_requests_sent(&self, index: usize) -> u64 {
        self.clients[index].requests_sent
    }

    /// Eviction messages that reached the client.
    pub fn client_evictions_received(&self, index: usize) -> u64 {
        self.clients[index].evictions_received
    }

    /// The last reply the client accepted for a request (not a register).
    pub fn client_last_reply(&self, index: usize) -> Option<Header> {
        self.clients[index].last_reply
    }

    /// Sends, on the client's behalf and bypassing its own checks, its next request in its
    /// (possibly evicted) session straight to replica `to`: what a client that ignored an
    /// eviction, or a stale copy of one, would send. Returns the request's header.
    pub fn client_send_raw_request(&mut self, index: usize, to: u8, body: &[u8]) -> Header {
        let c = &self.clients[index];
        let mut message = c.pool.get().expect("client pool");
        let request = Request {
            view: self.view_max(),
            client: c.client.id,
            session: c.client.session(),
            request: c.client.request_number() + 1,
            previous_reply_checksum: c.last_reply.map_or(0, |h| h.checksum),
            operation: HASHING_OPERATION,
        };
        *message.header_mut() = request.to_header(self.cluster);
        message.buffer_mut()[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(body);
        message.seal(body.len());
        let header = *message.header();
        let bytes = message.bytes().to_vec();
        self.network
            .submit(Process::Client(request.client), Process::Replica(to), bytes);
        header
    }

    /// Puts `bytes` on the network to replica `to` as if replica `from` had sent them: what a
    /// peer with a bug, or a hostile process that learned the cluster id, could send.
    pub fn send_raw_to_replica(&mut self, from: u8, to: u8, bytes: Vec<u8>) {
        self.network
            .submit(Process::Replica(from), Process::Replica(to), bytes);
    }

    // ---- Driving ------------------------------------------------------------------------------

    /// Steps until `predicate` holds (checked before each step), at most `max_ticks` steps.
    /// Returns the ticks taken; fails on a safety violation or at the deadline.
    pub fn run_until(
        &mut self,
        mut predicate: impl FnMut(&Simulator) -> bool,
        max_ticks: u64,
    ) -> Result<u64, String> {
        let start = self.tick;
        loop {
            if predicate(self) {
                return Ok(self.tick - start);
            }
            if self.tick - start >= max_ticks {
                return Err(format!(
                    "deadline: condition not reached within {max_ticks} ticks (tick {}):{}",
                    self.tick,
                    self.describe_state()
                ));
            }
            self.step()?;
        }
    }

    /// Steps `ticks` times (safety checked throughout).
    pub fn run_for(&mut self, ticks: u64) -> Result<(), String> {
        for _ in 0..ticks {
            self.step()?;
        }
        Ok(())
    }

    /// Every replica up and `Normal` in one view, with one head, everything committed, and every
    /// client done with its workload (or evicted); plus the journal and acknowledged-op checks.
    pub fn run_until_converged(&mut self, max_ticks: u64) -> Result<u64, String> {
        let ticks = self.run_until(|sim| sim.converged(), max_ticks)?;
        self.check_journals()?;
        self.check_acknowledged()?;
        Ok(ticks)
    }
}
