//! The manifest log (docs/storage.md, "The manifest log"): every change to which tables the
//! trees' levels hold, appended to a chain of blocks, so that a checkpoint names the whole
//! manifest with one reference and a count, and a restart rebuilds the levels by reading the
//! chain, never the tables. Sans I/O: the log names the blocks to write, and the reader names
//! the blocks to read.
//!
//! A block's body starts with the reference of the block before it in the chain (zero for the
//! first) and its entry count, then its entries, oldest first. Each entry is one change: a table
//! inserted into a level, or removed from one. The log only grows by appending; to bound it,
//! `compact` takes the oldest block back (the caller reads it), appends again the inserts in it
//! whose tables are still in their level, and releases it: the chain then starts at the next
//! block, and the entries that block's predecessor would have supplied are all dropped or
//! re-appended. Replaying the chain oldest first, inserting and removing (a removal whose
//! insertion was dropped with its block finds nothing to remove), rebuilds the levels exactly.
//!
//! Appends go into the open block, which is sealed when full, or at a checkpoint (`checkpoint`),
//! whose state (`ManifestLogState`) is then the newest block and the chain's length. Addresses
//! come from the free set past any reservation open (compaction jobs of the half in progress
//! reserve first, in a fixed order), so every replica's log gets the same addresses. On a grid
//! so full that the jobs' worst-case reservations leave no block past them, sealing fails (a
//! panic): the replica must stop taking work well before (issue 17's disk-full handling).

use super::table::{TableInfo, KEY_SIZE_MAX};
use crate::grid::free_set::FreeSet;
use crate::grid::{block_seal, BlockReference, BlockType};
use crate::header::commands::Block;
use crate::header::{Header, HEADER_SIZE};
use std::collections::VecDeque;

/// Bytes of one entry: tree, level, change, padding, the index block's reference, the value
/// count, the key range.
pub const ENTRY_SIZE: usize = 2 + 1 + 1 + 4 + 8 + 16 + 8 + 2 * KEY_SIZE_MAX;
/// Bytes before a block's entries: the previous block's reference, the entry count, padding.
const BODY_HEAD_SIZE: usize = 8 + 16 + 4 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestChange {
    Insert = 1,
    Remove = 2,
}

/// One change to a tree's manifest (the tree is `table.tree`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestEvent {
    pub level: u8,
    pub change: ManifestChange,
    pub table: TableInfo,
}

impl ManifestEvent {
    fn encode(&self, out: &mut [u8]) {
        let t = &self.table;
        out[0..2].copy_from_slice(&t.tree.to_le_bytes());
        out[2] = self.level;
        out[3] = self.change as u8;
        out[4..8].fill(0);
        out[8..16].copy_from_slice(&t.index.address.to_le_bytes());
        out[16..32].copy_from_slice(&t.index.checksum.to_le_bytes());
        out[32..40].copy_from_slice(&t.value_count.to_le_bytes());
        out[40..40 + KEY_SIZE_MAX].copy_from_slice(&t.key_min);
        out[40 + KEY_SIZE_MAX..ENTRY_SIZE].copy_from_slice(&t.key_max);
    }

    /// None if the bytes are not an entry (a block that verified holds only entries the log
    /// wrote, so this is a bug, not a disk fault).
    fn decode(bytes: &[u8]) -> Option<ManifestEvent> {
        let change = match bytes[3] {
            1 => ManifestChange::Insert,
            2 => ManifestChange::Remove,
            _ => return None,
        };
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let table = TableInfo {
            index: BlockReference {
                address: u64_at(8),
                checksum: u128::from_le_bytes(bytes[16..32].try_into().unwrap()),
            },
            tree: u16::from_le_bytes([bytes[0], bytes[1]]),
            value_count: u64_at(32),
            key_min: bytes[40..40 + KEY_SIZE_MAX].try_into().unwrap(),
            key_max: bytes[40 + KEY_SIZE_MAX..ENTRY_SIZE].try_into().unwrap(),
        };
        (table.index.address > 0).then_some(ManifestEvent {
            level: bytes[2],
            change,
            table,
        })
    }
}

/// What a checkpoint records of the log: its newest block and how many blocks the chain holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManifestLogState {
    pub newest: BlockReference,
    pub blocks: u64,
}

pub struct ManifestLog {
    cluster: u128,
    block_size: usize,
    /// The open block's buffer (header space, then body).
    open: Vec<u8>,
    open_count: usize,
    /// The chain's sealed blocks, oldest first, with their entry counts.
    chain: VecDeque<(BlockReference, u32)>,
    /// Sealed blocks not yet handed to the caller to write, oldest first, and spare buffers.
    writes: VecDeque<(u64, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl ManifestLog {
    /// An empty log (a new data file), or the log a reader rebuilt (`ManifestLogReader::log`).
    pub fn new(cluster: u128, block_size: usize) -> ManifestLog {
        assert!(Self::entries_per_block(block_size) >= 2);
        ManifestLog {
            cluster,
            block_size,
            open: vec![0; block_size],
            open_count: 0,
            chain: VecDeque::new(),
            writes: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    pub fn entries_per_block(block_size: usize) -> usize {
        (block_size - HEADER_SIZE - BODY_HEAD_SIZE) / ENTRY_SIZE
    }

    /// Blocks in the chain (sealed), not counting the open one.
    pub fn block_count(&self) -> usize {
        self.chain.len()
    }

    /// Appends one change; seals the open block when full (its write is then pending).
    pub fn append(&mut self, free_set: &mut FreeSet, event: &ManifestEvent) {
        let at = HEADER_SIZE + BODY_HEAD_SIZE + self.open_count * ENTRY_SIZE;
        event.encode(&mut self.open[at..at + ENTRY_SIZE]);
        self.open_count += 1;
        if self.open_count == Self::entries_per_block(self.block_size) {
            self.seal(free_set);
        }
    }

    /// Seals the open block, if it holds anything, at the next free address; its write is
    /// pending until the caller takes it (`write_next`).
    fn seal(&mut self, free_set: &mut FreeSet) {
        if self.open_count == 0 {
            return;
        }
        let reservation = free_set
            .reserve(1)
            .expect("the grid has a block for the manifest");
        let address = free_set.acquire(&reservation).expect("reserved");
        free_set.forfeit(reservation);
        let previous = self.chain.back().map(|&(r, _)| r).unwrap_or_default();
        let body = &mut self.open[HEADER_SIZE..];
        body[0..8].copy_from_slice(&previous.address.to_le_bytes());
        body[8..24].copy_from_slice(&previous.checksum.to_le_bytes());
        body[24..28].copy_from_slice(&(self.open_count as u32).to_le_bytes());
        body[28..32].fill(0);
        let block = Block {
            address,
            block_type: BlockType::Manifest as u8,
            tree: 0,
            metadata: 0,
        };
        let body_size = BODY_HEAD_SIZE + self.open_count * ENTRY_SIZE;
        let reference = block_seal(
            &mut self.open,
            self.cluster,
            &block,
            body_size,
            self.block_size,
        );
        self.chain.push_back((reference, self.open_count as u32));
        let buffer = self.spare.pop().unwrap_or_else(|| vec![0; self.block_size]);
        let sealed = std::mem::replace(&mut self.open, buffer);
        self.writes.push_back((address, sealed));
        self.open_count = 0;
    }

    /// The next sealed block to write, oldest first: the caller writes it, then calls
    /// `write_done`. Every pending write must be durable before the checkpoint that names it.
    pub fn write_next(&self) -> Option<(u64, &[u8])> {
        self.writes.front().map(|(a, b)| (*a, &b[..]))
    }

    pub fn write_done(&mut self) {
        let (_, buffer) = self.writes.pop_front().expect("a write was pending");
        self.spare.push(buffer);
    }

    /// Seals the open block (the checkpoint's manifest must be whole on disk) and returns what
    /// the checkpoint records.
    pub fn checkpoint(&mut self, free_set: &mut FreeSet) -> ManifestLogState {
        self.seal(free_set);
        ManifestLogState {
            newest: self.chain.back().map(|&(r, _)| r).unwrap_or_default(),
            blocks: self.chain.len() as u64,
        }
    }

    /// The oldest block, if the chain is longer than `live_tables` entries need with
    /// `slack_blocks` to spare: the caller reads it and hands it to `compact`.
    pub fn compact_wanted(
        &self,
        live_tables: usize,
        slack_blocks: usize,
    ) -> Option<BlockReference> {
        let needed = live_tables.div_ceil(Self::entries_per_block(self.block_size));
        (self.chain.len() > needed + slack_blocks).then(|| self.chain[0].0)
    }

    /// Takes back the oldest block (read by the caller, verified): appends again its inserts
    /// whose tables `live` says are still in their level, and releases it.
    pub fn compact(
        &mut self,
        free_set: &mut FreeSet,
        oldest: &[u8],
        live: impl Fn(&ManifestEvent) -> bool,
    ) {
        let (reference, count) = self.chain.pop_front().expect("a block to compact");
        assert_eq!(Header::read_from(oldest).checksum, reference.checksum);
        for event in block_events(oldest).take(count as usize) {
            if event.change == ManifestChange::Insert && live(&event) {
                self.append(free_set, &event);
            }
        }
        free_set.release(reference.address);
    }
}

/// The events of a verified manifest block, oldest first.
fn block_events(block: &[u8]) -> impl Iterator<Item = ManifestEvent> + '_ {
    let body = &block[HEADER_SIZE..];
    let count = u32::from_le_bytes(body[24..28].try_into().unwrap()) as usize;
    (0..count).map(move |i| {
        let at = BODY_HEAD_SIZE + i * ENTRY_SIZE;
        ManifestEvent::decode(&body[at..at + ENTRY_SIZE]).expect("a manifest entry")
    })
}

/// The reference of the block before `block` in the chain (zero for the first).
fn block_previous(block: &[u8]) -> BlockReference {
    let body = &block[HEADER_SIZE..];
    BlockReference {
        address: u64::from_le_bytes(body[0..8].try_into().unwrap()),
        checksum: u128::from_le_bytes(body[8..24].try_into().unwrap()),
    }
}

/// Reads a checkpoint's manifest chain, newest block first, then replays it oldest first.
pub struct ManifestLogReader {
    state: ManifestLogState,
    /// Blocks read so far, newest first.
    blocks: Vec<Vec<u8>>,
    next: BlockReference,
}

impl ManifestLogReader {
    pub fn new(state: ManifestLogState) -> ManifestLogReader {
        assert_eq!(state.blocks == 0, state.newest.address == 0);
        ManifestLogReader {
            state,
            blocks: Vec::with_capacity(state.blocks as usize),
            next: state.newest,
        }
    }

    /// The next block to read (the caller reads and verifies it against this reference, then
    /// hands it to `on_read`), or None once the chain is read.
    pub fn next_read(&self) -> Option<BlockReference> {
        (self.blocks.len() < self.state.blocks as usize).then_some(self.next)
    }

    pub fn on_read(&mut self, block: &[u8]) {
        assert_eq!(Header::read_from(block).checksum, self.next.checksum);
        self.next = block_previous(block);
        self.blocks.push(block.to_vec());
    }

    /// Every change, oldest first (once the chain is read).
    pub fn events(&self) -> impl Iterator<Item = ManifestEvent> + '_ {
        assert!(self.next_read().is_none());
        self.blocks
            .iter()
            .rev()
            .flat_map(|block| block_events(block))
    }

    /// The log to append to from here, as it was at the checkpoint.
    pub fn log(&self, cluster: u128, block_size: usize) -> ManifestLog {
        assert!(self.next_read().is_none());
        let mut log = ManifestLog::new(cluster, block_size);
        let mut reference = self.state.newest;
        for block in &self.blocks {
            let count = block_events(block).count() as u32;
            log.chain.push_front((reference, count));
            reference = block_previous(block);
        }
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::block_verify;
    use crate::lsm::manifest_level::ManifestLevel;
    use crate::lsm::table::TableLayout;
    use crate::lsm::test_support::CLUSTER;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    const BLOCK_SIZE: usize = 4096;

    fn layout() -> TableLayout {
        TableLayout::new(BLOCK_SIZE, 64, 8, 4)
    }

    fn table(key_min: u64, key_max: u64, address: u64) -> TableInfo {
        let mut t = TableInfo {
            index: BlockReference {
                address,
                checksum: u128::from(address) * 7919,
            },
            tree: 3,
            value_count: key_max - key_min + 1,
            key_min: [0; KEY_SIZE_MAX],
            key_max: [0; KEY_SIZE_MAX],
        };
        t.key_min[..8].copy_from_slice(&key_min.to_be_bytes());
        t.key_max[..8].copy_from_slice(&key_max.to_be_bytes());
        t
    }

    fn apply(levels: &mut [ManifestLevel], event: &ManifestEvent) {
        let level = &mut levels[event.level as usize];
        match event.change {
            ManifestChange::Insert => level.insert(event.table),
            ManifestChange::Remove => {
                if level.iter().any(|t| *t == event.table) {
                    level.remove(&event.table);
                }
            }
        }
    }

    fn tables(levels: &[ManifestLevel]) -> Vec<Vec<TableInfo>> {
        levels.iter().map(|l| l.iter().copied().collect()).collect()
    }

    /// Random inserts and removes over three levels (each level's tables disjoint), logged;
    /// at random points a checkpoint, then the chain read back from the blocks written and
    /// replayed into empty levels must give the live levels exactly. Compaction keeps the chain
    /// within its bound.
    #[test]
    fn replay_rebuilds_the_levels_and_compaction_bounds_the_chain() {
        for seed in 0..8 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut free_set = FreeSet::new(100_000);
            let mut disk: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut log = ManifestLog::new(CLUSTER, BLOCK_SIZE);
            let mut live: Vec<ManifestLevel> =
                (0..3).map(|_| ManifestLevel::new(layout(), 400)).collect();
            let mut next_address = 1_000_000;
            let mut checkpoints = 0;
            for step in 0..4_000u64 {
                let level = (rng.next_u64() % 3) as usize;
                let count = live[level].table_count();
                let event = if count > 0 && (count >= 300 || rng.next_u64() % 2 == 0) {
                    let victim = *live[level]
                        .iter()
                        .nth((rng.next_u64() % count as u64) as usize)
                        .unwrap();
                    ManifestEvent {
                        level: level as u8,
                        change: ManifestChange::Remove,
                        table: victim,
                    }
                } else {
                    // A free key range of 10 keys (slot `k` holds keys 10k..10k+9).
                    let slot = rng.next_u64() % 1_000;
                    let t = table(slot * 10, slot * 10 + 9, next_address);
                    if live[level].table_holding(&t.key_min[..8]).is_some() {
                        continue;
                    }
                    next_address += 1;
                    ManifestEvent {
                        level: level as u8,
                        change: ManifestChange::Insert,
                        table: t,
                    }
                };
                apply(&mut live, &event);
                log.append(&mut free_set, &event);
                let live_tables: usize = live.iter().map(|l| l.table_count()).sum();
                while let Some(oldest) = log.compact_wanted(live_tables, 2) {
                    drain(&mut log, &mut disk);
                    let block = disk[&oldest.address].clone();
                    block_verify(&block, CLUSTER, oldest, BLOCK_SIZE).unwrap();
                    log.compact(&mut free_set, &block, |e| {
                        live[e.level as usize].iter().any(|t| *t == e.table)
                    });
                }
                let per_block = ManifestLog::entries_per_block(BLOCK_SIZE);
                assert!(
                    log.block_count() <= live_tables.div_ceil(per_block) + 3,
                    "{step}"
                );
                if rng.next_u64() % 200 == 0 || step == 3_999 {
                    checkpoints += 1;
                    let state = log.checkpoint(&mut free_set);
                    drain(&mut log, &mut disk);
                    let mut reader = ManifestLogReader::new(state);
                    while let Some(reference) = reader.next_read() {
                        let block = &disk[&reference.address];
                        block_verify(block, CLUSTER, reference, BLOCK_SIZE).unwrap();
                        reader.on_read(block);
                    }
                    let mut rebuilt: Vec<ManifestLevel> =
                        (0..3).map(|_| ManifestLevel::new(layout(), 400)).collect();
                    for event in reader.events() {
                        apply(&mut rebuilt, &event);
                    }
                    assert_eq!(tables(&rebuilt), tables(&live), "seed {seed} step {step}");
                    // The log rebuilt from the chain appends where the live one would.
                    let reopened = reader.log(CLUSTER, BLOCK_SIZE);
                    assert_eq!(reopened.chain, log.chain);
                }
            }
            assert!(checkpoints > 5);
        }
    }

    fn drain(log: &mut ManifestLog, disk: &mut BTreeMap<u64, Vec<u8>>) {
        while let Some((address, block)) = log.write_next() {
            disk.insert(address, block.to_vec());
            log.write_done();
        }
    }

    #[test]
    fn entry_round_trips() {
        let event = ManifestEvent {
            level: 5,
            change: ManifestChange::Remove,
            table: table(3, 99, 42),
        };
        let mut bytes = [0u8; ENTRY_SIZE];
        event.encode(&mut bytes);
        assert_eq!(ManifestEvent::decode(&bytes), Some(event));
        assert_eq!(ENTRY_SIZE, 88);
    }
}
