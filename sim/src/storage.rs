//! Simulated storage: an in-memory data file with latency, reordered completions, and faults.
//!
//! Requests complete after a random latency (minimum plus an exponential tail), in a random order
//! among those that are ready. A request takes effect when the replica receives its completion
//! (`next_completion`): a read copies the bytes then, a write lands then. So a write is durable
//! exactly when it is acknowledged, and a crash loses or tears only writes the replica has not
//! seen complete.
//!
//! Faults, each drawn per request while faults are enabled:
//!
//! - read fault: one sector of the returned buffer is corrupted (bits flipped or garbage); the
//!   stored data is unchanged;
//! - write fault: the write lands, but one of its sectors is corrupted on disk;
//! - misdirected write: the write lands at another sector-aligned offset in the same zone; the
//!   intended place keeps its old bytes;
//! - crash: every write still in flight is lost, fully written, or torn (a random prefix of its
//!   sectors written, and/or one sector of garbage).
//!
//! Read faults, write faults and misdirects only touch areas that the cluster's `FaultAtlas`
//! allows for this replica (for a misdirect: every area of the intended range and of the landing
//! range). Crash tears are allowed anywhere: they only hit writes that were never acknowledged.
//!
//! The checkpoint zone (last in the file, addressable up to `CHECKPOINT_ZONE_SIZE_MAX`) is kept
//! apart from the fixed zones and grows as it is written: its length is the end of the furthest
//! byte ever landed there (`checkpoint_len`), and reads beyond it return zeros, like the never
//! written bytes of a file extended with `set_len`. It suffers the same faults as the other zones, with one
//! area per checkpoint block (see `FaultAtlas`); a misdirected checkpoint write lands inside the
//! part of the zone already written or being written (`0..max(checkpoint_len, offset + len)`),
//! so a misdirect never grows the file beyond what the replica itself asked for.

use crate::rng;
use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::rc::Rc;
use vsr::config::{REPLICAS_MAX, SECTOR_SIZE};
use vsr::header::{Header, HEADER_SIZE};
use vsr::storage::{IoCompletion, IoKind, IoRequest, Layout, Storage, Zone, SUPERBLOCK_COPIES};

const SECTOR: u64 = SECTOR_SIZE as u64;

/// Which replicas may suffer storage faults where. Built once per cluster and shared by every
/// replica's storage, so the promise "each byte of committed data is intact on at least one
/// replica" holds across the cluster:
///
/// - WAL prepares (per slot), WAL headers (per sector) and client replies (per slot): at most
///   `quorum_replication - 1` replicas are faulty per area. A committed op is on at least a
///   replication quorum, so at least one of those copies is outside the faulty set.
/// - Superblock: at most 2 of the `SUPERBLOCK_COPIES` copies are faulty per replica (the copies
///   protect a replica from itself, so this holds even for a single replica).
/// - Checkpoint: one area per block (`message_size_max` bytes; area `2 * index + a` is block
///   `index` of checkpoint area `a`, as `Layout::checkpoint_block_offset` interleaves them). At
///   most `quorum_replication - 1` replicas are faulty per block index, as for WAL prepares. The
///   zone is unbounded, so masks are not stored: the mask of block `index` is a pure function of
///   (atlas seed, `index`), and both checkpoint areas share it, so the cap holds per block index
///   whichever area each replica wrote a checkpoint to.
#[derive(Clone, Debug)]
pub struct FaultAtlas {
    replica_count: u8,
    quorum_replication: usize,
    layout: Layout,
    /// Per replica: bit `c` set when superblock copy `c` may be faulty.
    superblock: Vec<u8>,
    /// Per area: bit `r` set when replica `r` may be faulty there.
    wal_headers: Vec<u8>,
    wal_prepares: Vec<u8>,
    client_replies: Vec<u8>,
    /// Seeds the checkpoint masks (`checkpoint_mask`).
    checkpoint_seed: u64,
    /// Faulty replicas per area at most, for the zones protected by replication.
    faulty_max: usize,
}

/// Superblock copies per replica that may be faulty.
pub const SUPERBLOCK_FAULTY_COPIES_MAX: usize = 2;

impl FaultAtlas {
    pub fn new(replica_count: u8, quorum_replication: usize, layout: &Layout, seed: u64) -> Self {
        assert!(replica_count >= 1 && replica_count as usize <= REPLICAS_MAX);
        assert!(quorum_replication >= 1 && quorum_replication <= replica_count as usize);
        const { assert!(REPLICAS_MAX <= 8 && SUPERBLOCK_COPIES <= 8) };
        let mut rng = rng::seeded(seed);
        let faulty_max = quorum_replication - 1;
        let n = replica_count as usize;

        let mut areas = |zone: Zone| -> Vec<u8> {
            (0..area_count(layout, zone))
                .map(|_| random_mask(&mut rng, n, faulty_max))
                .collect()
        };
        let wal_headers = areas(Zone::WalHeaders);
        let wal_prepares = areas(Zone::WalPrepares);
        let client_replies = areas(Zone::ClientReplies);
        let superblock = (0..n)
            .map(|_| random_mask(&mut rng, SUPERBLOCK_COPIES, SUPERBLOCK_FAULTY_COPIES_MAX))
            .collect();
        // Drawn last, so the masks of the other zones are those of an atlas without it.
        let checkpoint_seed = rng.next_u64();
        FaultAtlas {
            replica_count,
            quorum_replication,
            layout: layout.clone(),
            superblock,
            wal_headers,
            wal_prepares,
            client_replies,
            checkpoint_seed,
            faulty_max,
        }
    }

    /// Each header-ring sector takes the mask of one of the prepare slots it names (chosen by
    /// the sector's index, no draw): the replica that may lose a slot's prepare may then lose
    /// the ring entry beside it too, the state a lost write with a torn ring sector leaves
    /// (`Simulator::lose_acknowledged_write`). The cap per area is unchanged.
    pub fn correlate_ring_with_prepares(&mut self) {
        let headers_per_sector = SECTOR / vsr::header::HEADER_SIZE as u64;
        let slots = self.wal_prepares.len() as u64;
        for (sector, mask) in self.wal_headers.iter_mut().enumerate() {
            let first = sector as u64 * headers_per_sector;
            let count = headers_per_sector.min(slots.saturating_sub(first));
            if count > 0 {
                let slot = first + mix64(sector as u64) % count;
                *mask = self.wal_prepares[slot as usize];
            }
        }
    }

    pub fn replica_count(&self) -> u8 {
        self.replica_count
    }

    pub fn quorum_replication(&self) -> usize {
        self.quorum_replication
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of areas in `zone` (superblock: its copies). For the checkpoint zone, the areas of
    /// its whole addressable size (about 2^42 bytes): never iterate over all of them.
    pub fn area_count(&self, zone: Zone) -> u64 {
        area_count(&self.layout, zone)
    }

    /// Bytes per area of `zone`.
    pub fn area_size(&self, zone: Zone) -> u64 {
        area_size(&self.layout, zone)
    }

    /// The area holding byte `offset` of `zone`.
    pub fn area_of(&self, zone: Zone, offset: u64) -> u64 {
        assert!(offset < self.layout.zone_size(zone));
        offset / self.area_size(zone)
    }

    /// Whether `replica` may suffer faults in area `area` of `zone`.
    pub fn faulty(&self, replica: u8, zone: Zone, area: u64) -> bool {
        assert!(replica < self.replica_count);
        assert!(area < self.area_count(zone));
        let area = area as usize;
        match zone {
            Zone::Superblock => self.superblock[replica as usize] & (1 << area) != 0,
            Zone::WalHeaders => self.wal_headers[area] & (1 << replica) != 0,
            Zone::WalPrepares => self.wal_prepares[area] & (1 << replica) != 0,
            Zone::ClientReplies => self.client_replies[area] & (1 << replica) != 0,
            Zone::Checkpoint => {
                self.checkpoint_mask(checkpoint_block_index(area as u64)) & (1 << replica) != 0
            }
        }
    }

    /// Bit `r` set when replica `r` may be faulty in block `index` of either checkpoint area.
    /// Derived on demand from the atlas seed and `index` alone; at most `quorum_replication - 1`
    /// bits are set.
    pub fn checkpoint_mask(&self, index: u64) -> u8 {
        let mut rng = rng::seeded(mix64(self.checkpoint_seed ^ mix64(index)));
        random_mask(&mut rng, self.replica_count as usize, self.faulty_max)
    }

    /// Replicas that may be faulty in `area` of `zone`.
    pub fn faulty_replicas(&self, zone: Zone, area: u64) -> Vec<u8> {
        (0..self.replica_count)
            .filter(|&r| self.faulty(r, zone, area))
            .collect()
    }

    /// Whether every area that `offset..offset + len` of `zone` touches may be faulty.
    pub fn range_faulty(&self, replica: u8, zone: Zone, offset: u64, len: u64) -> bool {
        assert!(len > 0);
        let first = self.area_of(zone, offset);
        let last = self.area_of(zone, offset + len - 1);
        (first..=last).all(|area| self.faulty(replica, zone, area))
    }
}

fn area_size(layout: &Layout, zone: Zone) -> u64 {
    match zone {
        Zone::Superblock => layout.superblock_copy_size,
        Zone::WalHeaders => SECTOR,
        Zone::WalPrepares | Zone::ClientReplies | Zone::Checkpoint => layout.message_size_max,
    }
}

/// The block index (within its checkpoint area) of checkpoint zone area `area`: the two areas
/// interleave block by block.
fn checkpoint_block_index(area: u64) -> u64 {
    area / 2
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn area_count(layout: &Layout, zone: Zone) -> u64 {
    layout.zone_size(zone).div_ceil(area_size(layout, zone))
}

/// A mask over `0..n` with a random number (uniform in `0..=max`, capped at `n`) of bits set.
fn random_mask(rng: &mut ChaCha8Rng, n: usize, max: usize) -> u8 {
    let count = rng::range(rng, 0, max.min(n) as u64) as usize;
    let mut members: Vec<u8> = (0..n as u8).collect();
    rng::shuffle(rng, &mut members);
    members[..count].iter().fold(0, |mask, &m| mask | (1 << m))
}

#[derive(Clone, Debug, PartialEq)]
pub struct StorageOptions {
    /// Latency in ticks: `min + exponential(mean - min)`, never less than one tick.
    pub read_latency_min: u64,
    pub read_latency_mean: u64,
    pub write_latency_min: u64,
    pub write_latency_mean: u64,
    /// Per read: one sector of the returned data is corrupted.
    pub read_fault_probability: f64,
    /// Per write: one sector lands corrupted.
    pub write_fault_probability: f64,
    /// Per write: the write lands at another offset in the same zone.
    pub write_misdirect_probability: f64,
    /// Per write in flight at a crash: it is torn (otherwise it is lost or fully written, 50/50).
    pub crash_fault_probability: f64,
    /// Per request: the disk stalls on it, adding `1..=slow_io_ticks_max` ticks to its latency
    /// (a device hiccup, a flush behind a full write cache): writes of one step stay in flight
    /// while timeouts fire and the replica moves on (drawn from a stream of its own).
    pub slow_io_probability: f64,
    pub slow_io_ticks_max: u64,
    /// Per tick: the whole disk stalls for `1..=slow_io_ticks_max` ticks; nothing completes
    /// until it ends, then everything that came due completes at once, in random order.
    pub stall_probability: f64,
}

impl Default for StorageOptions {
    /// A fault-free disk with small latencies.
    fn default() -> Self {
        StorageOptions {
            read_latency_min: 1,
            read_latency_mean: 2,
            write_latency_min: 1,
            write_latency_mean: 3,
            read_fault_probability: 0.0,
            write_fault_probability: 0.0,
            write_misdirect_probability: 0.0,
            crash_fault_probability: 0.0,
            slow_io_probability: 0.0,
            slow_io_ticks_max: 0,
            stall_probability: 0.0,
        }
    }
}

impl StorageOptions {
    pub fn assert_valid(&self) {
        assert!(self.read_latency_mean >= self.read_latency_min);
        assert!(self.write_latency_mean >= self.write_latency_min);
        for (name, p) in [
            ("read_fault_probability", self.read_fault_probability),
            ("write_fault_probability", self.write_fault_probability),
            (
                "write_misdirect_probability",
                self.write_misdirect_probability,
            ),
            ("crash_fault_probability", self.crash_fault_probability),
            ("slow_io_probability", self.slow_io_probability),
            ("stall_probability", self.stall_probability),
        ] {
            assert!((0.0..=1.0).contains(&p), "{name} {p} outside 0..=1");
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Requests submitted.
    pub reads: u64,
    pub writes: u64,
    pub read_faults: u64,
    pub write_faults: u64,
    pub misdirects: u64,
    /// In-flight writes torn by a crash.
    pub torn_writes: u64,
    /// In-flight writes that a crash kept from landing at all.
    pub lost_writes: u64,
    /// Completed prepare writes lost after the fact (`lose_latest_prepare_write`).
    pub acknowledged_writes_lost: u64,
    /// Requests the disk stalled on (`StorageOptions::slow_io_probability`).
    pub slow_ios: u64,
    /// Disk stalls (`StorageOptions::stall_probability`).
    pub stalls: u64,
    /// Faults drawn and not made because they would have left a journal slot with neither its
    /// prepare nor its header-ring entry as the replica wrote it (`SimStorage::fault_spared`).
    pub faults_spared_journal: u64,
}

struct InFlight {
    request: IoRequest,
    ready_at: u64,
}

/// What a crash does to one write in flight (scripted scenarios choose; see `crash_with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashFate {
    /// The usual crash rule: torn with `crash_fault_probability` (while faults are enabled),
    /// otherwise lost or fully written, 50/50.
    Random,
    /// Nothing of it reaches the disk.
    Lost,
    /// All of it reaches the disk.
    Written,
    /// Torn, even with faults disabled: a prefix of its sectors lands, and/or one sector is
    /// garbage; never the whole write and never none of it.
    Torn,
}

pub struct SimStorage {
    layout: Layout,
    replica: u8,
    options: StorageOptions,
    atlas: Rc<FaultAtlas>,
    rng: ChaCha8Rng,
    /// The formatted part of the data file (every zone but the checkpoint zone). Zeroed
    /// allocation, so pages never touched cost no memory.
    memory: Vec<u8>,
    /// What the replica holds durably as far as it knows: `memory` as it read it when it last
    /// opened, plus every write it was told completed, as written (no fault, no misdirect).
    /// The durability checker reads a promise's backing here (`durable`).
    shadow: Vec<u8>,
    /// What the replica last wrote (or formatted) at each byte, across restarts: unlike the
    /// shadow, not reset to what it reads at open, so a write that did not land before a crash
    /// still shows as stale after it (`copy_stale`).
    written: Vec<u8>,
    /// Bumped whenever a superblock write completes or the shadow is reset (cache key).
    superblock_generation: u64,
    /// `superblock_generation` as the replica last opened (set by `reset_shadow`).
    superblock_generation_opened: u64,
    /// The checkpoint zone's shadow, by block: for each offset a block write was ever aimed
    /// at, the body checksum of the chunk header it holds durably to the replica's knowledge
    /// (as read at open, then as each completed write wrote it; 0 if not a valid header).
    checkpoint_shadow: BTreeMap<u64, u128>,
    /// While on (`set_keep_replaced_prepares`): per prepare slot offset, the op of the prepare
    /// the latest completed write there wrote and the bytes it replaced, for
    /// `lose_latest_prepare_write`.
    keep_replaced_prepares: bool,
    replaced_prepares: BTreeMap<u64, (u64, Vec<u8>)>,
    /// The checkpoint zone's bytes from its start. A zeroed allocation that grows (to at least
    /// twice its size, copying) when a write lands past its end; bytes past `checkpoint_len` are
    /// zero and, never touched, cost no memory.
    checkpoint: Vec<u8>,
    /// End of the furthest byte ever landed in the checkpoint zone: its written length.
    checkpoint_len: u64,
    /// `message_size_max` zeros, returned by `read_raw` for a checkpoint range not yet allocated.
    zeros: Vec<u8>,
    now: u64,
    faults: bool,
    /// Slow I/O draws only (`StorageOptions::slow_io_probability`), so that adding them left
    /// every other draw where it was.
    slow_rng: ChaCha8Rng,
    /// A stall (`StorageOptions::stall_probability`) holds every completion until this tick.
    stalled_until: u64,
    /// Submitted, latency not yet elapsed.
    pending: Vec<InFlight>,
    /// Latency elapsed; handed out in random order by `next_completion`.
    ready: Vec<IoRequest>,
    stats: StorageStats,
}

impl SimStorage {
    /// A blank disk in this one's place (same layout, replica, fault options and atlas): the
    /// old contents are lost. Stats carry over, so totals survive the replacement.
    pub fn replaced(&self, seed: u64) -> SimStorage {
        let mut disk = SimStorage::new(
            self.layout.clone(),
            self.replica,
            self.options.clone(),
            self.atlas.clone(),
            seed,
        );
        disk.stats = self.stats;
        disk.faults = self.faults;
        disk.keep_replaced_prepares = self.keep_replaced_prepares;
        // Never reused: the durability checker caches a superblock by it.
        disk.superblock_generation = self.superblock_generation + 1;
        disk
    }

    pub fn new(
        layout: Layout,
        replica: u8,
        options: StorageOptions,
        atlas: Rc<FaultAtlas>,
        seed: u64,
    ) -> Self {
        options.assert_valid();
        assert!(replica < atlas.replica_count());
        assert_eq!(
            &layout,
            atlas.layout(),
            "the atlas was built for another layout"
        );
        let size = usize::try_from(layout.total_size()).expect("data file fits in memory");
        SimStorage {
            memory: vec![0; size],
            shadow: vec![0; size],
            written: vec![0; size],
            superblock_generation: 0,
            superblock_generation_opened: 0,
            checkpoint_shadow: BTreeMap::new(),
            keep_replaced_prepares: false,
            replaced_prepares: BTreeMap::new(),
            checkpoint: Vec::new(),
            checkpoint_len: 0,
            zeros: vec![0; layout.message_size_max as usize],
            layout,
            replica,
            options,
            atlas,
            rng: rng::seeded(seed),
            now: 0,
            faults: true,
            slow_rng: rng::seeded(seed ^ 0x736c_6f77_696f_0000),
            stalled_until: 0,
            pending: Vec::new(),
            ready: Vec::new(),
            stats: StorageStats::default(),
        }
    }

    pub fn replica(&self) -> u8 {
        self.replica
    }

    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    pub fn atlas(&self) -> &Rc<FaultAtlas> {
        &self.atlas
    }

    /// Requests submitted and not yet handed back.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// Enables or disables new read, write, misdirect and crash-tear faults. Bytes already
    /// corrupted stay corrupted.
    pub fn set_faults(&mut self, enabled: bool) {
        self.faults = enabled;
    }

    pub fn faults(&self) -> bool {
        self.faults
    }

    /// Advances one tick: requests whose latency has elapsed become ready to complete.
    pub fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        if self.faults
            && self.options.stall_probability > 0.0
            && now >= self.stalled_until
            && rng::chance(&mut self.slow_rng, self.options.stall_probability)
        {
            self.stalled_until =
                now + rng::range(&mut self.slow_rng, 1, self.options.slow_io_ticks_max);
            self.stats.stalls += 1;
        }
        if now < self.stalled_until {
            return;
        }
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].ready_at <= now {
                self.ready.push(self.pending.remove(i).request);
            } else {
                i += 1;
            }
        }
    }

    /// The process crashed: writes in flight are lost, written, or torn; every request is
    /// dropped (its buffer returns to the pool). Acknowledged writes are untouched.
    pub fn crash(&mut self) {
        self.crash_with(|_, _, _| CrashFate::Random);
    }

    /// A crash where `fate(zone, offset, len)` decides what happens to each write in flight.
    /// Writes are visited in submission order.
    pub fn crash_with(&mut self, fate: impl Fn(Zone, u64, usize) -> CrashFate) {
        let mut in_flight: Vec<IoRequest> = self.pending.drain(..).map(|f| f.request).collect();
        in_flight.append(&mut self.ready);
        for request in in_flight {
            if request.kind == IoKind::Write {
                let f = fate(request.zone, request.offset, request.len);
                self.crash_write(&request, f);
            }
        }
        // A write the crash landed, tore or lost is no completed write to lose.
        self.replaced_prepares.clear();
    }

    /// Writes submitted and not yet completed: (zone, offset, len), in no particular order.
    pub fn writes_in_flight(&self) -> Vec<(Zone, u64, usize)> {
        self.pending
            .iter()
            .map(|f| &f.request)
            .chain(self.ready.iter())
            .filter(|r| r.kind == IoKind::Write)
            .map(|r| (r.zone, r.offset, r.len))
            .collect()
    }

    /// The replica (re)opens: what it will read is what is on disk now, faults and all. From
    /// here on, the shadow follows the writes it is told completed.
    pub fn reset_shadow(&mut self) {
        self.shadow.copy_from_slice(&self.memory);
        let offsets: Vec<u64> = self.checkpoint_shadow.keys().copied().collect();
        for offset in offsets {
            let mut bytes = [0; HEADER_SIZE];
            self.copy_out(Zone::Checkpoint, offset, &mut bytes);
            self.checkpoint_shadow
                .insert(offset, chunk_checksum_body(&bytes));
        }
        self.superblock_generation += 1;
        self.superblock_generation_opened = self.superblock_generation;
    }

    /// The body checksum the chunk header at `offset` of the checkpoint zone holds durably, to
    /// the replica's knowledge (see `checkpoint_shadow`); `None` if no write ever aimed there.
    pub fn durable_chunk_checksum_body(&self, offset: u64) -> Option<u128> {
        self.checkpoint_shadow.get(&offset).copied()
    }

    /// Keep, per prepare slot, what the latest completed write replaced (costs a copy per
    /// prepare write: on only in seeds that lose acknowledged writes).
    pub fn set_keep_replaced_prepares(&mut self, on: bool) {
        self.keep_replaced_prepares = on;
    }

    /// The latest completed write of the prepare slot at `offset`, if it wrote op `op`, is lost
    /// after the fact (a write the disk acknowledged and never made, as firmware can): the slot
    /// holds again what that write replaced. The replica is not told and its shadow keeps what
    /// it wrote. False if no such write is known (another op's, none since the replica started
    /// or crashed, or already lost).
    pub fn lose_latest_prepare_write(&mut self, offset: u64, op: u64) -> bool {
        if self
            .replaced_prepares
            .get(&offset)
            .is_none_or(|(o, _)| *o != op)
        {
            return false;
        }
        if self.fault_spared(Zone::WalPrepares, offset, 1) {
            self.stats.faults_spared_journal += 1;
            return false;
        }
        let (_, bytes) = self.replaced_prepares.remove(&offset).unwrap();
        self.bytes_mut(Zone::WalPrepares, offset, bytes.len())
            .copy_from_slice(&bytes);
        self.stats.acknowledged_writes_lost += 1;
        true
    }

    /// Whether a superblock write completed since the replica last opened.
    pub fn superblock_written_since_open(&self) -> bool {
        self.superblock_generation != self.superblock_generation_opened
    }

    /// Bytes of a fixed zone as the replica holds them durably to its knowledge: as it read
    /// them at open, overwritten by every write it has been told completed (see `shadow`).
    pub fn durable(&self, zone: Zone, offset: u64, len: usize) -> &[u8] {
        assert!(
            zone != Zone::Checkpoint,
            "the checkpoint zone has no shadow"
        );
        self.assert_in_zone(zone, offset, len);
        let start = (self.layout.zone_offset(zone) + offset) as usize;
        &self.shadow[start..start + len]
    }

    /// Changes whenever the durable superblock may have changed.
    pub fn superblock_generation(&self) -> u64 {
        self.superblock_generation
    }

    /// Whether a fault on `offset..offset + len` of `zone` must be spared: it would damage one
    /// copy of a journal slot (its prepare, or its header-ring entry) whose other copy is stale:
    /// not as the replica wrote it, yet reading as intact (an older prepare or entry, or zeros:
    /// a write that did not land). A damaged copy reads as damaged, and recovery takes the slot
    /// as faulty; a stale one misleads it. With both copies of the newest op a replica
    /// acknowledged gone, recovery finds no trace of the op and nacks it;
    /// two faults on the two copies of one op on one replica are outside the fault model, as in
    /// TigerBeetle's simulator (docs/testing.md, "What the VOPR cannot see"). The deliberate
    /// pairs of the lost-write fault, below the head, are made directly and not asked.
    pub fn fault_spared(&self, zone: Zone, offset: u64, len: usize) -> bool {
        let (slots, other) = match zone {
            Zone::WalHeaders => (HEADER_SIZE as u64, Zone::WalPrepares),
            Zone::WalPrepares => (self.layout.message_size_max, Zone::WalHeaders),
            _ => return false,
        };
        let end = offset + len.max(1) as u64;
        (offset / slots..end.div_ceil(slots))
            .filter(|&slot| slot < self.layout.slot_count)
            .any(|slot| self.copy_stale(other, slot))
    }

    /// Whether journal slot `slot`'s copy in `zone` (its prepare, or its header-ring entry)
    /// differs from what the replica last wrote there (before any restart, too), and yet reads
    /// as intact or as never written.
    fn copy_stale(&self, zone: Zone, slot: u64) -> bool {
        let size = match zone {
            Zone::WalHeaders => HEADER_SIZE as u64,
            _ => self.layout.message_size_max,
        };
        let start = (self.layout.zone_offset(zone) + slot * size) as usize;
        let range = start..start + size as usize;
        let bytes = &self.memory[range.clone()];
        if bytes == &self.written[range] {
            return false;
        }
        let header = Header::read_from(&bytes[..HEADER_SIZE]);
        let reads_intact = header.valid_checksum()
            && (zone == Zone::WalHeaders
                || (header.size as usize) <= bytes.len()
                    && header.valid_checksum_body(&bytes[HEADER_SIZE..header.size as usize]));
        reads_intact || bytes[..HEADER_SIZE].iter().all(|&b| b == 0)
    }

    /// Corrupts the sector at `offset` of `zone` on disk now (bits flipped or garbage), as
    /// targeted corruption does; the replica is not told, and its durable shadow keeps what it
    /// wrote. `offset` must be sector-aligned.
    pub fn corrupt_sector_at(&mut self, zone: Zone, offset: u64, rng: &mut ChaCha8Rng) {
        assert_eq!(offset % SECTOR, 0);
        let mut bytes = [0; SECTOR_SIZE];
        self.copy_out(zone, offset, &mut bytes);
        corrupt_sector(rng, &mut bytes);
        self.bytes_mut(zone, offset, SECTOR_SIZE)
            .copy_from_slice(&bytes);
    }

    /// Writes bytes directly, with no latency or faults (formatting, tests).
    pub fn write_raw(&mut self, zone: Zone, offset: u64, bytes: &[u8]) {
        self.bytes_mut(zone, offset, bytes.len())
            .copy_from_slice(bytes);
        if zone != Zone::Checkpoint {
            let start = (self.layout.zone_offset(zone) + offset) as usize;
            self.written[start..start + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Reads bytes directly, with no latency or faults (checkers, tests). The checkpoint zone
    /// reads zeros past its written length; a checkpoint range that ends past the allocated part
    /// must either start past it and fit in one block (`message_size_max` bytes), or be read with
    /// `read_raw_vec`. Any range within one block is fine.
    pub fn read_raw(&self, zone: Zone, offset: u64, len: usize) -> &[u8] {
        self.assert_in_zone(zone, offset, len);
        if zone != Zone::Checkpoint {
            let start = (self.layout.zone_offset(zone) + offset) as usize;
            return &self.memory[start..start + len];
        }
        let allocated = self.checkpoint.len() as u64;
        if offset + len as u64 <= allocated {
            &self.checkpoint[offset as usize..offset as usize + len]
        } else {
            assert!(
                offset >= allocated && len <= self.zeros.len(),
                "checkpoint read_raw {offset}+{len} crosses the allocated end {allocated}: \
                 use read_raw_vec"
            );
            &self.zeros[..len]
        }
    }

    /// Reads bytes directly into a new buffer, with no latency or faults; any range (the
    /// checkpoint zone reads zeros past its written length).
    pub fn read_raw_vec(&self, zone: Zone, offset: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.copy_out(zone, offset, &mut bytes);
        bytes
    }

    /// The formatted part of the data file, zones in layout order up to the checkpoint zone
    /// (checkers, digests). See `checkpoint_zone` for the rest.
    pub fn data_file(&self) -> &[u8] {
        &self.memory
    }

    /// The checkpoint zone's written bytes: the data file from `Layout::total_size()` on.
    pub fn checkpoint_zone(&self) -> &[u8] {
        &self.checkpoint[..self.checkpoint_len as usize]
    }

    /// The checkpoint zone's written length: the end of the furthest byte ever landed there
    /// (by a write, a misdirected write, a write torn or completed by a crash, or `write_raw`).
    /// The data file's size is `Layout::total_size() + checkpoint_len()`.
    pub fn checkpoint_len(&self) -> u64 {
        self.checkpoint_len
    }

    fn assert_in_zone(&self, zone: Zone, offset: u64, len: usize) {
        assert!(
            offset + len as u64 <= self.layout.zone_size(zone),
            "{zone:?} access beyond zone: {offset}+{len}"
        );
    }

    /// The stored bytes of `offset..offset + len` in `zone`, to be overwritten. The checkpoint
    /// zone grows to cover them, and its written length with it.
    fn bytes_mut(&mut self, zone: Zone, offset: u64, len: usize) -> &mut [u8] {
        self.assert_in_zone(zone, offset, len);
        if zone != Zone::Checkpoint {
            let start = (self.layout.zone_offset(zone) + offset) as usize;
            return &mut self.memory[start..start + len];
        }
        let end = offset + len as u64;
        if end > self.checkpoint.len() as u64 {
            // Doubling keeps the copies linear in the bytes written. The zeroed allocation
            // leaves untouched pages free, and the copy skips zero pages, so a sparse write far
            // out (or a gap left before it) costs no memory.
            let size = end
                .max(2 * self.checkpoint.len() as u64)
                .next_multiple_of(self.layout.message_size_max)
                .min(self.layout.zone_size(Zone::Checkpoint))
                .max(end);
            let size = usize::try_from(size).expect("checkpoint zone fits in memory");
            let mut grown = vec![0; size];
            const PAGE: usize = 4096;
            for (to, from) in grown
                .chunks_mut(PAGE)
                .zip(self.checkpoint[..self.checkpoint_len as usize].chunks(PAGE))
                .filter(|(_, from)| from.iter().any(|&b| b != 0))
            {
                to[..from.len()].copy_from_slice(from);
            }
            self.checkpoint = grown;
        }
        self.checkpoint_len = self.checkpoint_len.max(end);
        &mut self.checkpoint[offset as usize..end as usize]
    }

    /// Copies the stored bytes of `offset..offset + out.len()` in `zone` into `out` (zeros past
    /// the checkpoint zone's written length).
    fn copy_out(&self, zone: Zone, offset: u64, out: &mut [u8]) {
        self.assert_in_zone(zone, offset, out.len());
        if zone != Zone::Checkpoint {
            let start = (self.layout.zone_offset(zone) + offset) as usize;
            out.copy_from_slice(&self.memory[start..start + out.len()]);
            return;
        }
        let stored = self
            .checkpoint_len
            .saturating_sub(offset)
            .min(out.len() as u64) as usize;
        if stored > 0 {
            let start = offset as usize;
            out[..stored].copy_from_slice(&self.checkpoint[start..start + stored]);
        }
        out[stored..].fill(0);
    }

    fn latency(&mut self, min: u64, mean: u64) -> u64 {
        let latency = (min + rng::exponential(&mut self.rng, mean - min)).max(1);
        if self.faults
            && self.options.slow_io_probability > 0.0
            && rng::chance(&mut self.slow_rng, self.options.slow_io_probability)
        {
            self.stats.slow_ios += 1;
            return latency + rng::range(&mut self.slow_rng, 1, self.options.slow_io_ticks_max);
        }
        latency
    }

    fn complete(&mut self, mut request: IoRequest) -> IoCompletion {
        match request.kind {
            IoKind::Read => self.complete_read(&mut request),
            IoKind::Write => self.complete_write(&request),
        }
        IoCompletion {
            kind: request.kind,
            zone: request.zone,
            offset: request.offset,
            len: request.len,
            buffer: request.buffer,
            token: request.token,
        }
    }

    fn complete_read(&mut self, request: &mut IoRequest) {
        let (zone, offset, len) = (request.zone, request.offset, request.len);
        let buffer = &mut request.buffer.buffer_mut()[..len];
        self.copy_out(zone, offset, buffer);
        if self.faults && rng::chance(&mut self.rng, self.options.read_fault_probability) {
            let sector = self.pick_faulty_sector(zone, offset, len);
            let spared = sector.is_some_and(|s| self.fault_spared(zone, s, SECTOR_SIZE));
            self.stats.faults_spared_journal += u64::from(spared);
            if let Some(sector) = sector.filter(|_| !spared) {
                let at = (sector - offset) as usize;
                corrupt_sector(&mut self.rng, &mut buffer[at..at + SECTOR_SIZE]);
                self.stats.read_faults += 1;
            }
        }
    }

    fn complete_write(&mut self, request: &IoRequest) {
        let (zone, len) = (request.zone, request.len);
        let data = &request.buffer.buffer()[..len];
        if zone != Zone::Checkpoint {
            let start = (self.layout.zone_offset(zone) + request.offset) as usize;
            self.shadow[start..start + len].copy_from_slice(data);
            self.written[start..start + len].copy_from_slice(data);
            if zone == Zone::Superblock {
                self.superblock_generation += 1;
            }
        } else {
            self.checkpoint_shadow
                .insert(request.offset, chunk_checksum_body(data));
        }
        let mut target = request.offset;
        if self.faults && rng::chance(&mut self.rng, self.options.write_misdirect_probability) {
            if self.fault_spared(zone, request.offset, len) {
                self.stats.faults_spared_journal += 1;
            } else if let Some(landing) = self.misdirect_target(zone, request.offset, len) {
                target = landing;
                self.stats.misdirects += 1;
            }
        }
        if self.keep_replaced_prepares && zone == Zone::WalPrepares {
            let header = Header::read_from(&data[..HEADER_SIZE]);
            if target == request.offset && header.valid_checksum() {
                // Reuse the slot's buffer: a prepare write allocates nothing once warm.
                let mut replaced = self
                    .replaced_prepares
                    .remove(&target)
                    .map(|(_, bytes)| bytes)
                    .unwrap_or_default();
                replaced.resize(len, 0);
                self.copy_out(zone, target, &mut replaced);
                self.replaced_prepares.insert(target, (header.op, replaced));
            } else {
                self.replaced_prepares.remove(&request.offset);
            }
        }
        self.bytes_mut(zone, target, len).copy_from_slice(data);
        if self.faults && rng::chance(&mut self.rng, self.options.write_fault_probability) {
            let sector = self.pick_faulty_sector(zone, target, len);
            let spared = sector.is_some_and(|s| self.fault_spared(zone, s, SECTOR_SIZE));
            self.stats.faults_spared_journal += u64::from(spared);
            if let Some(sector) = sector.filter(|_| !spared) {
                let mut bytes = [0; SECTOR_SIZE];
                self.copy_out(zone, sector, &mut bytes);
                corrupt_sector(&mut self.rng, &mut bytes);
                self.bytes_mut(zone, sector, SECTOR_SIZE)
                    .copy_from_slice(&bytes);
                self.stats.write_faults += 1;
            }
        }
    }

    /// A random sector (offset in zone) of `offset..offset + len` whose area may be faulty.
    fn pick_faulty_sector(&mut self, zone: Zone, offset: u64, len: usize) -> Option<u64> {
        // Areas span many sectors, and a checkpoint area's mask is derived on demand: ask once
        // per area.
        let mut last: Option<(u64, bool)> = None;
        let candidates: Vec<u64> = (offset..offset + len as u64)
            .step_by(SECTOR_SIZE)
            .filter(|&s| {
                let area = self.atlas.area_of(zone, s);
                match last {
                    Some((a, faulty)) if a == area => faulty,
                    _ => {
                        let faulty = self.atlas.faulty(self.replica, zone, area);
                        last = Some((area, faulty));
                        faulty
                    }
                }
            })
            .collect();
        (!candidates.is_empty()).then(|| *rng::pick(&mut self.rng, &candidates))
    }

    /// Another sector-aligned offset in `zone` for a misdirected write, if the intended range
    /// and some landing range are both in faulty areas. Prefers the same place in another area
    /// (another slot, another copy), as a wrong block number would. In the checkpoint zone the
    /// landing range stays within `0..max(checkpoint_len, offset + len)`: the part of the zone
    /// written so far, or that this write would extend it to.
    fn misdirect_target(&mut self, zone: Zone, offset: u64, len: usize) -> Option<u64> {
        let len = len as u64;
        let atlas = Rc::clone(&self.atlas);
        if !atlas.range_faulty(self.replica, zone, offset, len) {
            return None;
        }
        let zone_size = match zone {
            Zone::Checkpoint => self.checkpoint_len.max(offset + len),
            _ => self.layout.zone_size(zone),
        };
        let area_size = atlas.area_size(zone);
        let area_count = zone_size.div_ceil(area_size);
        let sectors = (zone_size - len) / SECTOR;
        for _ in 0..16 {
            let landing = if rng::chance(&mut self.rng, 0.5) {
                let area = rng::range(&mut self.rng, 0, area_count - 1);
                area * area_size + offset % area_size
            } else {
                rng::range(&mut self.rng, 0, sectors) * SECTOR
            };
            if landing != offset
                && landing + len <= zone_size
                && atlas.range_faulty(self.replica, zone, landing, len)
                && !self.fault_spared(zone, landing, len as usize)
            {
                return Some(landing);
            }
        }
        None
    }

    fn crash_write(&mut self, request: &IoRequest, fate: CrashFate) {
        let (zone, offset, len) = (request.zone, request.offset, request.len);
        let data = &request.buffer.buffer()[..len];
        let fate = match fate {
            CrashFate::Random => {
                if self.faults && rng::chance(&mut self.rng, self.options.crash_fault_probability) {
                    CrashFate::Torn
                } else if rng::chance(&mut self.rng, 0.5) {
                    CrashFate::Written
                } else {
                    CrashFate::Lost
                }
            }
            fate => fate,
        };
        // A tear that would be a second fault on a journal slot lands whole instead.
        let fate = match fate {
            CrashFate::Torn if self.fault_spared(zone, offset, len) => {
                self.stats.faults_spared_journal += 1;
                CrashFate::Written
            }
            fate => fate,
        };
        match fate {
            CrashFate::Written => {
                self.bytes_mut(zone, offset, len).copy_from_slice(data);
                if zone != Zone::Checkpoint {
                    let start = (self.layout.zone_offset(zone) + offset) as usize;
                    self.written[start..start + len].copy_from_slice(data);
                }
                return;
            }
            CrashFate::Lost => {
                self.stats.lost_writes += 1;
                return;
            }
            CrashFate::Torn => {}
            CrashFate::Random => unreachable!(),
        }
        self.stats.torn_writes += 1;
        let sectors = len / SECTOR_SIZE;
        let prefix = rng::range(&mut self.rng, 0, sectors as u64) as usize;
        let prefix_bytes = prefix * SECTOR_SIZE;
        if prefix_bytes > 0 {
            self.bytes_mut(zone, offset, prefix_bytes)
                .copy_from_slice(&data[..prefix_bytes]);
        }
        // All or nothing would not be torn: then a garbage sector is certain.
        if prefix == 0 || prefix == sectors || rng::chance(&mut self.rng, 0.5) {
            let sector = rng::index(&mut self.rng, sectors) as u64;
            let mut garbage = [0; SECTOR_SIZE];
            self.rng.fill_bytes(&mut garbage);
            self.bytes_mut(zone, offset + sector * SECTOR, SECTOR_SIZE)
                .copy_from_slice(&garbage);
        }
    }
}

/// Corrupts a sector: half the time a few flipped bits, otherwise garbage. Always changes it
/// (garbage equal to the old bytes has probability 2^-32768).
/// The body checksum a checkpoint chunk's header names, or 0 if `bytes` start with no valid
/// header.
fn chunk_checksum_body(bytes: &[u8]) -> u128 {
    let header = Header::read_from(&bytes[..HEADER_SIZE]);
    if header.valid_checksum() {
        header.checksum_body
    } else {
        0
    }
}

fn corrupt_sector(rng: &mut ChaCha8Rng, sector: &mut [u8]) {
    assert_eq!(sector.len(), SECTOR_SIZE);
    if rng::chance(rng, 0.5) {
        let flips = rng::range(rng, 1, 8) as usize;
        // Distinct bytes, each XORed with a non-zero mask, so flips never cancel out.
        let mut bytes: Vec<usize> = (0..flips).map(|_| rng::index(rng, SECTOR_SIZE)).collect();
        bytes.sort_unstable();
        bytes.dedup();
        for at in bytes {
            sector[at] ^= 1 << rng::range(rng, 0, 7);
        }
    } else {
        rng.fill_bytes(sector);
    }
}

impl Storage for SimStorage {
    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn submit(&mut self, request: IoRequest) {
        request.assert_valid(&self.layout);
        let latency = match request.kind {
            IoKind::Read => {
                self.stats.reads += 1;
                self.latency(
                    self.options.read_latency_min,
                    self.options.read_latency_mean,
                )
            }
            IoKind::Write => {
                self.stats.writes += 1;
                self.latency(
                    self.options.write_latency_min,
                    self.options.write_latency_mean,
                )
            }
        };
        self.pending.push(InFlight {
            request,
            ready_at: self.now + latency,
        });
    }

    fn next_completion(&mut self) -> Option<IoCompletion> {
        if self.ready.is_empty() {
            return None;
        }
        let index = rng::index(&mut self.rng, self.ready.len());
        let request = self.ready.swap_remove(index);
        Some(self.complete(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsr::config::Config;
    use vsr::message::{Message, MessagePool};
    use vsr::storage::ZONES;

    fn config(replica_count: u8) -> Config {
        Config {
            message_size_max: 4 * SECTOR_SIZE as u32,
            journal_slot_count: 64,
            pipeline_max: 4,
            clients_max: 4,
            ..Config::timing_defaults(replica_count)
        }
    }

    fn setup(replica_count: u8, seed: u64) -> (Config, Layout, Rc<FaultAtlas>, MessagePool) {
        let config = config(replica_count);
        config.validate().unwrap();
        let layout = Layout::new(&config);
        let atlas = Rc::new(FaultAtlas::new(
            replica_count,
            config.quorum_replication(),
            &layout,
            seed,
        ));
        let pool = MessagePool::new(64, config.message_size_max as usize);
        (config, layout, atlas, pool)
    }

    /// Checkpoint block indexes to sample: the first ones, some far out, and the last.
    fn checkpoint_indexes(atlas: &FaultAtlas) -> impl Iterator<Item = u64> {
        let last = atlas.area_count(Zone::Checkpoint) / 2 - 1;
        (0..256).chain(100_000..100_064).chain(last - 3..=last)
    }

    fn message(pool: &MessagePool, fill: u8) -> Message {
        let mut m = pool.get().unwrap();
        m.buffer_mut().fill(fill);
        m
    }

    fn request(kind: IoKind, zone: Zone, offset: u64, len: usize, buffer: Message) -> IoRequest {
        IoRequest {
            kind,
            zone,
            offset,
            len,
            buffer,
            token: offset,
        }
    }

    /// Ticks until every request has completed; returns the completions in order.
    fn drain(storage: &mut SimStorage) -> Vec<IoCompletion> {
        let mut done = Vec::new();
        for _ in 0..10_000 {
            storage.tick();
            while let Some(c) = storage.next_completion() {
                done.push(c);
            }
            if storage.pending() == 0 {
                return done;
            }
        }
        panic!("storage never drained");
    }

    fn faulty_options() -> StorageOptions {
        StorageOptions {
            read_latency_min: 1,
            read_latency_mean: 5,
            write_latency_min: 1,
            write_latency_mean: 5,
            read_fault_probability: 0.5,
            write_fault_probability: 0.5,
            write_misdirect_probability: 0.5,
            crash_fault_probability: 0.5,
            ..StorageOptions::default()
        }
    }

    #[test]
    fn atlas_invariants() {
        for replica_count in 1..=6u8 {
            for seed in 0..20 {
                let config = config(replica_count);
                let layout = Layout::new(&config);
                let qr = config.quorum_replication();
                let atlas = FaultAtlas::new(replica_count, qr, &layout, seed);
                let mut any = false;
                for zone in [Zone::WalHeaders, Zone::WalPrepares, Zone::ClientReplies] {
                    assert_eq!(
                        atlas.area_count(zone) * atlas.area_size(zone),
                        layout.zone_size(zone)
                    );
                    for area in 0..atlas.area_count(zone) {
                        let faulty = atlas.faulty_replicas(zone, area);
                        assert!(faulty.len() < qr, "{zone:?} area {area}: {faulty:?}");
                        any |= !faulty.is_empty();
                    }
                }
                for index in checkpoint_indexes(&atlas) {
                    let faulty = atlas.faulty_replicas(Zone::Checkpoint, 2 * index);
                    assert!(faulty.len() < qr, "checkpoint block {index}: {faulty:?}");
                    assert_eq!(
                        faulty,
                        atlas.faulty_replicas(Zone::Checkpoint, 2 * index + 1)
                    );
                    any |= !faulty.is_empty();
                }
                assert_eq!(any, qr > 1);
                assert_eq!(atlas.area_count(Zone::Superblock), SUPERBLOCK_COPIES as u64);
                for replica in 0..replica_count {
                    let copies = (0..SUPERBLOCK_COPIES as u64)
                        .filter(|&c| atlas.faulty(replica, Zone::Superblock, c))
                        .count();
                    assert!(copies <= SUPERBLOCK_FAULTY_COPIES_MAX);
                }
            }
        }
    }

    #[test]
    fn atlas_is_deterministic() {
        let config = config(5);
        let layout = Layout::new(&config);
        let dump = |seed| {
            let atlas = FaultAtlas::new(5, 3, &layout, seed);
            let mut v = Vec::new();
            for zone in ZONES {
                let areas = match zone {
                    Zone::Checkpoint => checkpoint_indexes(&atlas)
                        .flat_map(|index| [2 * index, 2 * index + 1])
                        .collect(),
                    _ => (0..atlas.area_count(zone)).collect::<Vec<_>>(),
                };
                for area in areas {
                    v.push(atlas.faulty_replicas(zone, area));
                }
            }
            v
        };
        assert_eq!(dump(1), dump(1));
        assert_ne!(dump(1), dump(2));
    }

    #[test]
    fn read_after_write_without_faults() {
        let (_, layout, atlas, pool) = setup(3, 1);
        let mut storage = SimStorage::new(layout.clone(), 0, faulty_options(), atlas, 7);
        storage.set_faults(false);
        let mut expected = Vec::new();
        for (i, zone) in ZONES.into_iter().enumerate() {
            let len = 2 * SECTOR_SIZE;
            let offset = match zone {
                Zone::Checkpoint => layout.checkpoint_block_offset(1, 100_000),
                _ => layout.zone_size(zone) - len as u64,
            };
            let m = message(&pool, 0x10 + i as u8);
            let shared = m.clone(); // writes may share the buffer with the journal
            storage.submit(request(IoKind::Write, zone, offset, len, m));
            expected.push((zone, offset, len, 0x10 + i as u8));
            drop(shared);
        }
        assert_eq!(storage.next_completion().map(|c| c.token), None);
        let writes = drain(&mut storage);
        assert_eq!(writes.len(), ZONES.len());
        drop(writes);
        for &(zone, offset, len, fill) in &expected {
            storage.submit(request(IoKind::Read, zone, offset, len, message(&pool, 0)));
            assert!(storage
                .read_raw(zone, offset, len)
                .iter()
                .all(|&b| b == fill));
        }
        for c in drain(&mut storage) {
            let &(_, _, len, fill) = expected
                .iter()
                .find(|e| e.0 == c.zone && e.1 == c.offset)
                .unwrap();
            assert_eq!(c.kind, IoKind::Read);
            assert!(c.buffer.buffer()[..len].iter().all(|&b| b == fill));
        }
        let stats = storage.stats();
        assert_eq!((stats.reads, stats.writes), (5, 5));
        assert_eq!(stats.read_faults + stats.write_faults + stats.misdirects, 0);
        assert_eq!(pool.available(), pool.capacity());
    }

    #[test]
    fn completions_are_reordered() {
        let (_, layout, atlas, pool) = setup(3, 1);
        let mut storage = SimStorage::new(layout, 0, StorageOptions::default(), atlas, 3);
        for slot in 0..32u64 {
            storage.submit(request(
                IoKind::Read,
                Zone::WalPrepares,
                slot * 4 * SECTOR,
                SECTOR_SIZE,
                message(&pool, 0),
            ));
        }
        let order: Vec<u64> = drain(&mut storage).iter().map(|c| c.token).collect();
        assert_eq!(order.len(), 32);
        assert!(order.windows(2).any(|w| w[0] > w[1]));
    }

    /// Checkpoint zone bytes `faulty_run` writes: the first 32 blocks of both areas.
    fn checkpoint_extent(layout: &Layout) -> u64 {
        layout.checkpoint_block_offset(0, 32)
    }

    /// Writes a distinct pattern to every sector of every zone (the checkpoint zone: its first
    /// `checkpoint_extent` bytes) through the storage (faults on), then checks that every
    /// difference from the intended image is in an area the atlas allows.
    fn faulty_run(replica: u8, seed: u64) -> (Vec<u8>, Vec<u8>, StorageStats) {
        let (_, layout, atlas, pool) = setup(3, seed);
        let mut storage = SimStorage::new(
            layout.clone(),
            replica,
            faulty_options(),
            atlas.clone(),
            seed,
        );
        let extent = |zone| match zone {
            Zone::Checkpoint => checkpoint_extent(&layout),
            _ => layout.zone_size(zone),
        };
        let image_offset = |zone, offset| match zone {
            Zone::Checkpoint => (layout.total_size() + offset) as usize,
            _ => (layout.zone_offset(zone) + offset) as usize,
        };
        let mut image = vec![0u8; (layout.total_size() + extent(Zone::Checkpoint)) as usize];
        let mut pattern = 0u8;
        for zone in ZONES {
            let zone_size = extent(zone);
            let chunk = atlas.area_size(zone).min(4 * SECTOR);
            let mut offset = 0;
            while offset < zone_size {
                pattern = pattern.wrapping_add(1).max(1);
                let len = chunk.min(zone_size - offset) as usize;
                storage.submit(request(
                    IoKind::Write,
                    zone,
                    offset,
                    len,
                    message(&pool, pattern),
                ));
                let start = image_offset(zone, offset);
                image[start..start + len].fill(pattern);
                offset += len as u64;
                if storage.pending() > 16 {
                    drain(&mut storage);
                }
            }
        }
        drain(&mut storage);
        let stats = storage.stats();
        assert!(stats.write_faults > 0 && stats.misdirects > 0, "{stats:?}");
        // Misdirects stay within what was written (a misdirected last block may leave it short).
        assert!(storage.checkpoint_len() <= extent(Zone::Checkpoint));

        let mut checkpoint_faults = 0;
        for zone in ZONES {
            for sector in 0..extent(zone) / SECTOR {
                let offset = sector * SECTOR;
                let start = image_offset(zone, offset);
                let stored = storage.read_raw(zone, offset, SECTOR_SIZE);
                if stored != &image[start..start + SECTOR_SIZE] {
                    let area = atlas.area_of(zone, offset);
                    assert!(
                        atlas.faulty(replica, zone, area),
                        "corruption in {zone:?} area {area} not allowed for replica {replica}"
                    );
                    checkpoint_faults += (zone == Zone::Checkpoint) as u64;
                }
            }
        }
        let checkpoint_faulty = (0..extent(Zone::Checkpoint) / layout.message_size_max)
            .any(|area| atlas.faulty(replica, Zone::Checkpoint, area));
        assert_eq!(checkpoint_faults > 0, checkpoint_faulty);

        // Read faults only hit allowed areas too, and never change the stored data.
        let before = storage
            .read_raw(Zone::WalPrepares, 0, layout.wal_prepares_size as usize)
            .to_vec();
        let checkpoint_before = storage.checkpoint_zone().to_vec();
        let len = layout.message_size_max as usize;
        for slot in 0..layout.slot_count {
            let offset = slot * layout.message_size_max;
            storage.submit(request(
                IoKind::Read,
                Zone::WalPrepares,
                offset,
                len,
                message(&pool, 0),
            ));
        }
        let done = drain(&mut storage);
        check_reads(&storage, &atlas, replica, done);
        for index in 0..16 {
            for area in 0..2 {
                let offset = layout.checkpoint_block_offset(area, index);
                storage.submit(request(
                    IoKind::Read,
                    Zone::Checkpoint,
                    offset,
                    len,
                    message(&pool, 0),
                ));
            }
            if storage.pending() > 16 {
                let done = drain(&mut storage);
                check_reads(&storage, &atlas, replica, done);
            }
        }
        let done = drain(&mut storage);
        check_reads(&storage, &atlas, replica, done);
        assert_eq!(before, storage.read_raw(Zone::WalPrepares, 0, before.len()));
        assert_eq!(checkpoint_before, storage.checkpoint_zone());
        assert!(storage.stats().read_faults > 0);
        (
            storage.data_file().to_vec(),
            storage.checkpoint_zone().to_vec(),
            storage.stats(),
        )
    }

    /// Every read that returned other bytes than those stored hit a faulty area.
    fn check_reads(
        storage: &SimStorage,
        atlas: &FaultAtlas,
        replica: u8,
        completions: Vec<IoCompletion>,
    ) {
        for c in completions {
            let stored = storage.read_raw_vec(c.zone, c.offset, c.len);
            if stored != c.buffer.buffer()[..c.len] {
                assert!(atlas.faulty(replica, c.zone, atlas.area_of(c.zone, c.offset)));
            }
        }
    }

    #[test]
    fn corruption_only_in_allowed_areas() {
        for replica in 0..3 {
            faulty_run(replica, 100 + replica as u64);
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let a = faulty_run(1, 5);
        let b = faulty_run(1, 5);
        assert!(a == b, "same seed, different result");
        let c = faulty_run(1, 6);
        assert!(a != c);
    }

    #[test]
    fn single_replica_has_no_wal_faults() {
        let (_, layout, atlas, pool) = setup(1, 3);
        let mut storage = SimStorage::new(layout.clone(), 0, faulty_options(), atlas, 3);
        for slot in 0..layout.slot_count {
            let offset = slot * layout.message_size_max;
            storage.submit(request(
                IoKind::Write,
                Zone::WalPrepares,
                offset,
                SECTOR_SIZE,
                message(&pool, 9),
            ));
            if storage.pending() > 16 {
                drain(&mut storage);
            }
        }
        drain(&mut storage);
        let stats = storage.stats();
        assert_eq!(stats.write_faults + stats.misdirects, 0);
        for slot in 0..layout.slot_count {
            let offset = slot * layout.message_size_max;
            assert!(storage
                .read_raw(Zone::WalPrepares, offset, SECTOR_SIZE)
                .iter()
                .all(|&b| b == 9));
        }
    }

    #[test]
    fn crash_tears_only_in_flight_writes() {
        let options = StorageOptions {
            crash_fault_probability: 1.0,
            ..StorageOptions::default()
        };
        for seed in 0..10 {
            let (_, layout, atlas, pool) = setup(3, seed);
            let mut storage = SimStorage::new(layout.clone(), 2, options.clone(), atlas, seed);
            // Acknowledged writes: slots 0..8, pattern 1.
            let len = layout.message_size_max as usize;
            for slot in 0..8 {
                storage.submit(request(
                    IoKind::Write,
                    Zone::WalPrepares,
                    slot * len as u64,
                    len,
                    message(&pool, 1),
                ));
            }
            drain(&mut storage);
            // In flight at the crash: slots 4..6 (some latency elapsed, some not), pattern 2.
            for slot in 4..6 {
                storage.submit(request(
                    IoKind::Write,
                    Zone::WalPrepares,
                    slot * len as u64,
                    len,
                    message(&pool, 2),
                ));
            }
            storage.submit(request(
                IoKind::Read,
                Zone::WalPrepares,
                0,
                len,
                message(&pool, 0),
            ));
            storage.tick();
            assert_eq!(storage.pending(), 3);
            storage.crash();
            assert_eq!(storage.pending(), 0);
            assert!(storage.next_completion().is_none());
            assert_eq!(pool.available(), pool.capacity());
            assert_eq!(storage.stats().torn_writes, 2);
            for slot in 0..8u64 {
                let bytes = storage.read_raw(Zone::WalPrepares, slot * len as u64, len);
                if (4..6).contains(&slot) {
                    // Torn: not the whole new write, and not the whole old one.
                    assert!(bytes.iter().any(|&b| b != 2));
                    assert!(bytes.iter().any(|&b| b != 1));
                } else {
                    assert!(
                        bytes.iter().all(|&b| b == 1),
                        "slot {slot} damaged by a crash"
                    );
                }
            }
        }
    }

    #[test]
    fn crash_without_faults_loses_or_writes_whole() {
        let (_, layout, atlas, pool) = setup(3, 4);
        let mut storage = SimStorage::new(layout.clone(), 0, StorageOptions::default(), atlas, 4);
        let len = layout.message_size_max as usize;
        for slot in 0..32u64 {
            storage.submit(request(
                IoKind::Write,
                Zone::WalPrepares,
                slot * len as u64,
                len,
                message(&pool, 3),
            ));
        }
        storage.crash();
        let stats = storage.stats();
        assert_eq!(stats.torn_writes, 0);
        assert!(stats.lost_writes > 0 && stats.lost_writes < 32);
        let mut written = 0;
        for slot in 0..32u64 {
            let bytes = storage.read_raw(Zone::WalPrepares, slot * len as u64, len);
            assert!(bytes.iter().all(|&b| b == 3) || bytes.iter().all(|&b| b == 0));
            written += bytes[0] as u64 / 3;
        }
        assert_eq!(written + stats.lost_writes, 32);
    }

    #[test]
    fn raw_access_round_trips() {
        let (_, layout, atlas, _) = setup(3, 4);
        let mut storage = SimStorage::new(layout.clone(), 1, StorageOptions::default(), atlas, 4);
        storage.write_raw(Zone::ClientReplies, 5, b"hello");
        assert_eq!(storage.read_raw(Zone::ClientReplies, 5, 5), b"hello");
        let end = layout.zone_size(Zone::Superblock);
        storage.write_raw(Zone::Superblock, end - 2, b"ok");
        assert_eq!(storage.read_raw(Zone::Superblock, end - 2, 2), b"ok");
        assert_eq!(storage.read_raw(Zone::WalHeaders, 0, 2), [0, 0]);
    }

    #[test]
    fn crash_with_chosen_fates() {
        let (_, layout, atlas, pool) = setup(3, 8);
        // Faults disabled: a scripted tear happens anyway.
        let mut storage = SimStorage::new(layout.clone(), 0, StorageOptions::default(), atlas, 8);
        storage.set_faults(false);
        let len = layout.message_size_max as usize;
        for slot in 0..3u64 {
            storage.submit(request(
                IoKind::Write,
                Zone::WalPrepares,
                slot * len as u64,
                len,
                message(&pool, 7),
            ));
        }
        let mut in_flight = storage.writes_in_flight();
        in_flight.sort_by_key(|w| w.1);
        assert_eq!(
            in_flight,
            (0..3u64)
                .map(|slot| (Zone::WalPrepares, slot * len as u64, len))
                .collect::<Vec<_>>()
        );
        storage.crash_with(|_, offset, _| match offset / len as u64 {
            0 => CrashFate::Lost,
            1 => CrashFate::Written,
            _ => CrashFate::Torn,
        });
        assert!(storage.writes_in_flight().is_empty());
        let slot = |s: u64| {
            storage
                .read_raw(Zone::WalPrepares, s * len as u64, len)
                .to_vec()
        };
        assert!(slot(0).iter().all(|&b| b == 0));
        assert!(slot(1).iter().all(|&b| b == 7));
        let torn = slot(2);
        assert!(torn.iter().any(|&b| b != 7) && torn.iter().any(|&b| b != 0));
        let stats = storage.stats();
        assert_eq!((stats.lost_writes, stats.torn_writes), (1, 1));
    }

    /// A storage with the given `message_size_max`, for the checkpoint zone tests.
    fn checkpoint_setup(
        message_size_max: u32,
        replica: u8,
        options: StorageOptions,
        seed: u64,
    ) -> (Layout, Rc<FaultAtlas>, MessagePool, SimStorage) {
        let replica_count = 3;
        let config = Config {
            message_size_max,
            ..config(replica_count)
        };
        config.validate().unwrap();
        let layout = Layout::new(&config);
        let atlas = Rc::new(FaultAtlas::new(
            replica_count,
            config.quorum_replication(),
            &layout,
            seed,
        ));
        let pool = MessagePool::new(64, config.message_size_max as usize);
        let storage = SimStorage::new(layout.clone(), replica, options, atlas.clone(), seed);
        (layout, atlas, pool, storage)
    }

    /// A block whose header is valid and names body checksum `checksum_body`.
    fn chunk_message(pool: &MessagePool, checksum_body: u128) -> Message {
        let mut m = message(pool, 0);
        let mut header = Header::zeroed();
        header.checksum_body = checksum_body;
        header.size = HEADER_SIZE as u32;
        header.set_checksum();
        *m.header_mut() = header;
        m
    }

    /// The checkpoint zone's shadow holds what each completed chunk write wrote at the block it
    /// aimed at (misdirected or damaged on disk or not), is read back from disk when the
    /// replica opens, and knows nothing of blocks never written.
    #[test]
    fn checkpoint_shadow_follows_completed_writes() {
        let (layout, _, pool, mut storage) =
            checkpoint_setup(4096, 0, StorageOptions::default(), 1);
        let len = layout.message_size_max as usize;
        let block = |index| layout.checkpoint_block_offset(0, index);
        assert_eq!(storage.durable_chunk_checksum_body(block(0)), None);
        assert!(!storage.superblock_written_since_open());

        let zone = Zone::Checkpoint;
        storage.submit(request(
            IoKind::Write,
            zone,
            block(0),
            len,
            chunk_message(&pool, 7),
        ));
        storage.submit(request(
            IoKind::Write,
            zone,
            block(1),
            len,
            chunk_message(&pool, 8),
        ));
        assert_eq!(
            storage.durable_chunk_checksum_body(block(0)),
            None,
            "not yet completed"
        );
        drain(&mut storage);
        assert_eq!(storage.durable_chunk_checksum_body(block(0)), Some(7));
        assert_eq!(storage.durable_chunk_checksum_body(block(1)), Some(8));
        assert_eq!(storage.durable_chunk_checksum_body(block(2)), None);

        // Damage on disk is not the replica's knowledge until it reopens and reads it.
        storage.write_raw(zone, block(1), &[0xFF; 64]);
        assert_eq!(storage.durable_chunk_checksum_body(block(1)), Some(8));
        storage.reset_shadow();
        assert_eq!(storage.durable_chunk_checksum_body(block(0)), Some(7));
        assert_eq!(storage.durable_chunk_checksum_body(block(1)), Some(0));

        let superblock = Zone::Superblock;
        storage.submit(request(
            IoKind::Write,
            superblock,
            0,
            SECTOR_SIZE,
            message(&pool, 1),
        ));
        drain(&mut storage);
        assert!(storage.superblock_written_since_open());
        storage.reset_shadow();
        assert!(!storage.superblock_written_since_open());
    }

    #[test]
    fn checkpoint_zone_grows_on_write_and_reads_zeros_beyond() {
        let (layout, _, pool, mut storage) =
            checkpoint_setup(4096, 0, StorageOptions::default(), 1);
        assert_eq!(layout.message_size_max, 4096);
        assert_eq!(storage.checkpoint_len(), 0);
        let len = layout.message_size_max as usize;
        let far = layout.checkpoint_block_offset(1, 100_000);
        assert_eq!(far, 200_001 * 4096);

        // Reads of a zone never written: zeros, and nothing grows.
        storage.submit(request(
            IoKind::Read,
            Zone::Checkpoint,
            far,
            len,
            message(&pool, 0xee),
        ));
        for c in drain(&mut storage) {
            assert!(c.buffer.buffer()[..len].iter().all(|&b| b == 0));
        }
        assert!(storage
            .read_raw(Zone::Checkpoint, far, len)
            .iter()
            .all(|&b| b == 0));
        assert_eq!((storage.checkpoint_len(), storage.checkpoint.len()), (0, 0));

        // A write far out covers exactly its end; nothing before it is touched.
        storage.submit(request(
            IoKind::Write,
            Zone::Checkpoint,
            far,
            len,
            message(&pool, 0x5a),
        ));
        drain(&mut storage);
        assert_eq!(storage.checkpoint_len(), far + len as u64);
        assert_eq!(storage.checkpoint.len() as u64, far + len as u64);
        assert_eq!(storage.checkpoint_zone().len() as u64, far + len as u64);
        assert!(storage
            .read_raw(Zone::Checkpoint, far, len)
            .iter()
            .all(|&b| b == 0x5a));
        assert_eq!(storage.data_file().len() as u64, layout.total_size());

        // Reads: the block written, and others (one before it inside the written length, those
        // after it beyond).
        let reads = [
            (far, len, 0x5a),
            (layout.checkpoint_block_offset(0, 100_000), len, 0),
            (layout.checkpoint_block_offset(0, 100_001), len, 0),
            (layout.checkpoint_block_offset(1, 100_001), len, 0),
            (layout.checkpoint_block_offset(0, 5), len, 0),
        ];
        for &(offset, len, _) in &reads {
            storage.submit(request(
                IoKind::Read,
                Zone::Checkpoint,
                offset,
                len,
                message(&pool, 0xee),
            ));
        }
        for c in drain(&mut storage) {
            let bytes = &c.buffer.buffer()[..c.len];
            let &(_, _, fill) = reads.iter().find(|r| r.0 == c.offset).unwrap();
            assert!(bytes.iter().all(|&b| b == fill));
        }
        assert_eq!(storage.checkpoint_len(), far + len as u64);
        let beyond = layout.checkpoint_block_offset(0, 1_000_000);
        assert!(storage
            .read_raw(Zone::Checkpoint, beyond, len)
            .iter()
            .all(|&b| b == 0));
        let straddle = storage.read_raw_vec(Zone::Checkpoint, far, 2 * len);
        assert!(straddle[..len].iter().all(|&b| b == 0x5a));
        assert!(straddle[len..].iter().all(|&b| b == 0));

        // Writing nearer the start keeps the length and the far block.
        storage.write_raw(Zone::Checkpoint, 0, b"first");
        assert_eq!(storage.read_raw(Zone::Checkpoint, 0, 5), b"first");
        assert_eq!(storage.checkpoint_len(), far + len as u64);
        assert!(storage
            .read_raw(Zone::Checkpoint, far, len)
            .iter()
            .all(|&b| b == 0x5a));

        // Growing further copies what was written (and doubles the allocation).
        let further = layout.checkpoint_block_offset(0, 100_002);
        storage.write_raw(Zone::Checkpoint, further, &[7; 512]);
        assert_eq!(storage.checkpoint_len(), further + 512);
        assert!(storage.checkpoint.len() as u64 >= 2 * (far + len as u64));
        assert_eq!(storage.read_raw(Zone::Checkpoint, 0, 5), b"first");
        assert!(storage
            .read_raw(Zone::Checkpoint, far, len)
            .iter()
            .all(|&b| b == 0x5a));
        assert_eq!(storage.read_raw(Zone::Checkpoint, further, 512), [7; 512]);
        assert!(storage
            .read_raw(Zone::Checkpoint, further + 512, len)
            .iter()
            .all(|&b| b == 0));
        assert_eq!(pool.available(), pool.capacity());
    }

    #[test]
    fn checkpoint_atlas_masks_deterministic_and_capped() {
        for replica_count in 1..=6u8 {
            let config = config(replica_count);
            let layout = Layout::new(&config);
            let qr = config.quorum_replication();
            let masks = |seed| {
                let atlas = FaultAtlas::new(replica_count, qr, &layout, seed);
                checkpoint_indexes(&atlas)
                    .chain(1_000..2_000)
                    .map(|index| {
                        let mask = atlas.checkpoint_mask(index);
                        assert!((mask as u32) < 1 << replica_count);
                        assert!((mask.count_ones() as usize) < qr, "block {index}: {mask:b}");
                        for area in 0..2 {
                            let offset = layout.checkpoint_block_offset(area, index as u32);
                            let at = atlas.area_of(Zone::Checkpoint, offset);
                            assert_eq!(at, 2 * index + area as u64);
                            assert_eq!(
                                atlas.area_of(
                                    Zone::Checkpoint,
                                    offset + layout.message_size_max - 1
                                ),
                                at
                            );
                            let faulty: u8 = atlas
                                .faulty_replicas(Zone::Checkpoint, at)
                                .iter()
                                .fold(0, |m, &r| m | 1 << r);
                            assert_eq!(faulty, mask);
                        }
                        mask
                    })
                    .collect::<Vec<u8>>()
            };
            let a = masks(11);
            assert_eq!(a, masks(11));
            if qr == 1 {
                assert!(a.iter().all(|&m| m == 0));
                continue;
            }
            assert_ne!(a, masks(12));
            // Like the other zones: the number of faulty replicas per block is uniform in
            // 0..=qr - 1, so some blocks have none and some have the most allowed.
            assert!(a.contains(&0));
            assert!(a.iter().any(|&m| m.count_ones() as usize == qr - 1));
            for replica in 0..replica_count {
                assert!(a.iter().any(|&m| m & 1 << replica != 0));
            }
        }
    }

    /// Faulty writes and reads at sparse, far block indexes only touch faulty areas, and a
    /// misdirected write stays within the checkpoint zone's written length.
    #[test]
    fn checkpoint_faults_only_in_faulty_areas() {
        for replica in 0..3u8 {
            let seed = 40 + replica as u64;
            let (layout, atlas, pool, mut storage) =
                checkpoint_setup(4 * SECTOR_SIZE as u32, replica, faulty_options(), seed);
            let block = layout.message_size_max;
            let indexes: Vec<u32> = (0..48).map(|i| 2_000 + 31 * i).collect();
            let mut expected = std::collections::BTreeMap::new();
            let mut pattern = 0u8;
            for &index in &indexes {
                for area in 0..2 {
                    pattern = pattern.wrapping_add(1).max(1);
                    let offset = layout.checkpoint_block_offset(area, index);
                    storage.submit(request(
                        IoKind::Write,
                        Zone::Checkpoint,
                        offset,
                        block as usize,
                        message(&pool, pattern),
                    ));
                    expected.insert(offset / block, pattern);
                }
                if storage.pending() > 16 {
                    drain(&mut storage);
                }
            }
            drain(&mut storage);
            let stats = storage.stats();
            assert!(stats.write_faults > 0 && stats.misdirects > 0, "{stats:?}");
            let end = layout.checkpoint_block_offset(1, *indexes.last().unwrap()) + block;
            assert!(storage.checkpoint_len() <= end);

            let mut faults = 0;
            for (sector, stored) in storage.checkpoint_zone().chunks(SECTOR_SIZE).enumerate() {
                let offset = sector as u64 * SECTOR;
                let area = atlas.area_of(Zone::Checkpoint, offset);
                let fill = expected.get(&area).copied().unwrap_or(0);
                if stored.iter().any(|&b| b != fill) {
                    assert!(
                        atlas.faulty(replica, Zone::Checkpoint, area),
                        "replica {replica}: checkpoint area {area} corrupted, not allowed"
                    );
                    faults += 1;
                }
            }
            assert!(faults > 0);

            let digest = |storage: &SimStorage| {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(storage.checkpoint_zone(), &mut hasher);
                std::hash::Hasher::finish(&hasher)
            };
            let before = digest(&storage);
            for &index in &indexes {
                for area in 0..2 {
                    let offset = layout.checkpoint_block_offset(area, index);
                    storage.submit(request(
                        IoKind::Read,
                        Zone::Checkpoint,
                        offset,
                        block as usize,
                        message(&pool, 0),
                    ));
                }
                if storage.pending() > 16 {
                    let done = drain(&mut storage);
                    check_reads(&storage, &atlas, replica, done);
                }
            }
            let done = drain(&mut storage);
            check_reads(&storage, &atlas, replica, done);
            assert!(storage.stats().read_faults > 0);
            assert_eq!(before, digest(&storage));
        }
    }

    #[test]
    fn checkpoint_crash_fates() {
        let (layout, _, pool, mut storage) =
            checkpoint_setup(4096, 0, StorageOptions::default(), 2);
        storage.set_faults(false);
        let len = layout.message_size_max as usize;
        let offsets: Vec<u64> = (0..3)
            .map(|i| layout.checkpoint_block_offset(1, 50_000 + i))
            .collect();
        for &offset in &offsets {
            storage.submit(request(
                IoKind::Write,
                Zone::Checkpoint,
                offset,
                len,
                message(&pool, 9),
            ));
        }
        // Lost: the furthest; written: the nearest; torn: the middle one.
        storage.crash_with(|zone, offset, _| {
            assert_eq!(zone, Zone::Checkpoint);
            match offsets.iter().position(|&o| o == offset).unwrap() {
                0 => CrashFate::Written,
                1 => CrashFate::Torn,
                _ => CrashFate::Lost,
            }
        });
        assert!(storage.checkpoint_len() > offsets[0]);
        assert!(storage.checkpoint_len() <= offsets[1] + len as u64);
        assert!(storage
            .read_raw(Zone::Checkpoint, offsets[0], len)
            .iter()
            .all(|&b| b == 9));
        let torn = storage.read_raw_vec(Zone::Checkpoint, offsets[1], len);
        assert!(torn.iter().any(|&b| b != 9) && torn.iter().any(|&b| b != 0));
        assert!(storage
            .read_raw(Zone::Checkpoint, offsets[2], len)
            .iter()
            .all(|&b| b == 0));
        let stats = storage.stats();
        assert_eq!((stats.lost_writes, stats.torn_writes), (1, 1));
        assert_eq!(pool.available(), pool.capacity());
    }
}
