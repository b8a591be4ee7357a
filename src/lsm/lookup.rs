//! Looking a key up through a tree's levels on disk, one block at a time (docs/storage.md,
//! "Lookups through the levels"). Sans I/O: each step either answers or names the block it needs; the caller reads
//! that block into the cache (asynchronously, through the event loop) and steps again.
//!
//! Levels are searched shallowest first, because a shallower level holds newer values: the first
//! level whose table holds the key decides, and a tombstone there means the key is absent. In a
//! level, the manifest (in memory) names the one table whose key range holds the key; the table's
//! index block names the one value block that could hold it. So a lookup reads at most two blocks
//! a level, and index blocks, few and hot, are usually cached.

use super::manifest_level::ManifestLevel;
use super::table::{block_search, index_search, TableLayout, KEY_SIZE_MAX};
use crate::grid::cache::BlockCache;
use crate::grid::BlockReference;
use crate::header::Header;

/// Where a lookup finds blocks already read (and verified when read).
pub trait CachedBlocks {
    /// The block cached at `address`, if any, counted as a use.
    fn cached(&mut self, address: u64) -> Option<&[u8]>;
}

impl<V: AsRef<[u8]>> CachedBlocks for BlockCache<V> {
    fn cached(&mut self, address: u64) -> Option<&[u8]> {
        self.get(address).map(|block| block.as_ref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupStep {
    /// The value, copied into the caller's buffer.
    Found,
    /// No level holds the key (or the newest that does holds a tombstone).
    Absent,
    /// Read this block into the cache, then step again.
    Read(BlockReference),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// At level `level`: the manifest is consulted next.
    Level(usize),
    /// At level `level`: this table's index block is consulted next.
    Index(usize, BlockReference),
    /// At level `level`: this value block is consulted next.
    Value(usize, BlockReference),
}

#[derive(Clone, Copy, Debug)]
pub struct LevelsLookup {
    key: [u8; KEY_SIZE_MAX],
    position: Position,
}

impl LevelsLookup {
    pub fn new(layout: &TableLayout, key: &[u8]) -> LevelsLookup {
        assert_eq!(key.len(), layout.key_size);
        let mut lookup = LevelsLookup {
            key: [0; KEY_SIZE_MAX],
            position: Position::Level(0),
        };
        lookup.key[..key.len()].copy_from_slice(key);
        lookup
    }

    /// Advances as far as cached blocks allow. A cached block whose checksum is not the
    /// reference's (the address was reused since) counts as not cached. On `Found`, the value is
    /// in `out`.
    pub fn step(
        &mut self,
        layout: &TableLayout,
        levels: &[ManifestLevel],
        tombstone: &dyn Fn(&[u8]) -> bool,
        cache: &mut dyn CachedBlocks,
        out: &mut [u8],
    ) -> LookupStep {
        assert_eq!(out.len(), layout.value_size);
        let key = &self.key[..layout.key_size];
        loop {
            match self.position {
                Position::Level(level) if level == levels.len() => return LookupStep::Absent,
                Position::Level(level) => {
                    self.position = match levels[level].table_holding(key) {
                        Some(table) => Position::Index(level, table.index),
                        None => Position::Level(level + 1),
                    };
                }
                Position::Index(level, reference) => {
                    let Some(index) = Self::block(cache, reference) else {
                        return LookupStep::Read(reference);
                    };
                    // The manifest's key range holds the key, so some value block could.
                    let value_block = index_search(layout, index, key).expect("key within table");
                    self.position = Position::Value(level, value_block);
                }
                Position::Value(level, reference) => {
                    let Some(block) = Self::block(cache, reference) else {
                        return LookupStep::Read(reference);
                    };
                    match block_search(layout, block, key) {
                        Some(value) if tombstone(value) => return LookupStep::Absent,
                        Some(value) => {
                            out.copy_from_slice(value);
                            return LookupStep::Found;
                        }
                        None => self.position = Position::Level(level + 1),
                    }
                }
            }
        }
    }

    fn block(cache: &mut dyn CachedBlocks, reference: BlockReference) -> Option<&[u8]> {
        let block = cache.cached(reference.address)?;
        (Header::read_from(block).checksum == reference.checksum).then_some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsm::table::TableInfo;
    use crate::lsm::test_support::{is_tombstone, value, Disk, CLUSTER};

    fn layout() -> TableLayout {
        TableLayout::new(4096, 64, 8, 4)
    }

    /// One table of `values` (few enough for one) built into `disk`.
    fn table(disk: &mut Disk, values: &[[u8; 64]]) -> TableInfo {
        let tables = disk.tables(layout(), values);
        assert_eq!(tables.len(), 1);
        tables[0]
    }

    /// Runs a lookup to its end, reading blocks from `disk` into `cache`; returns the value and
    /// the blocks read.
    fn run(
        levels: &[ManifestLevel],
        disk: &Disk,
        cache: &mut BlockCache<Vec<u8>>,
        key: u64,
    ) -> (Option<[u8; 64]>, usize) {
        let layout = layout();
        let mut lookup = LevelsLookup::new(&layout, &key.to_be_bytes());
        let mut out = [0u8; 64];
        let mut reads = 0;
        loop {
            let step = lookup.step(&layout, levels, &is_tombstone, cache, &mut out);
            match step {
                LookupStep::Found => return (Some(out), reads),
                LookupStep::Absent => return (None, reads),
                LookupStep::Read(reference) => {
                    reads += 1;
                    let block = disk.blocks[&reference.address].clone();
                    crate::grid::block_verify(&block, CLUSTER, reference, 4096).unwrap();
                    cache.insert(reference.address, block);
                }
            }
        }
    }

    #[test]
    fn lookup_takes_the_newest_level_and_honours_tombstones() {
        let layout = layout();
        let mut disk = Disk::new();
        let mut levels: Vec<ManifestLevel> =
            (0..3).map(|_| ManifestLevel::new(layout, 8)).collect();
        // Level 2 (oldest): keys 0..200 at version 0.
        let old: Vec<_> = (0..200).map(|k| value(k, 0, false)).collect();
        levels[2].insert(table(&mut disk, &old));
        // Level 1: keys 50..60 rewritten (version 1), key 70 deleted.
        let mut middle: Vec<_> = (50..60).map(|k| value(k, 1, false)).collect();
        middle.push(value(70, 1, true));
        levels[1].insert(table(&mut disk, &middle));
        // Level 0 (newest): key 55 at version 2, and key 500 new.
        levels[0].insert(table(
            &mut disk,
            &[value(55, 2, false), value(500, 2, false)],
        ));

        let mut cache = BlockCache::new(64);
        assert_eq!(
            run(&levels, &disk, &mut cache, 55).0,
            Some(value(55, 2, false))
        );
        assert_eq!(
            run(&levels, &disk, &mut cache, 56).0,
            Some(value(56, 1, false))
        );
        assert_eq!(
            run(&levels, &disk, &mut cache, 10).0,
            Some(value(10, 0, false))
        );
        assert_eq!(
            run(&levels, &disk, &mut cache, 500).0,
            Some(value(500, 2, false))
        );
        assert_eq!(
            run(&levels, &disk, &mut cache, 70).0,
            None,
            "deleted at level 1"
        );
        assert_eq!(run(&levels, &disk, &mut cache, 300).0, None);
        // Key 30: level 0's table does not span it (no read), level 1's neither, level 2: two.
        let mut cold = BlockCache::new(64);
        assert_eq!(
            run(&levels, &disk, &mut cold, 30),
            (Some(value(30, 0, false)), 2)
        );
        // Cached now: no reads.
        assert_eq!(run(&levels, &disk, &mut cold, 31).1, 0);
    }

    #[test]
    fn lookup_rereads_a_block_whose_address_was_reused() {
        let layout = layout();
        let mut disk = Disk::new();
        let mut levels = vec![ManifestLevel::new(layout, 8)];
        let table = table(&mut disk, &[value(1, 0, false), value(2, 0, false)]);
        levels[0].insert(table);
        let mut cache = BlockCache::new(64);
        // The cache holds another block at the index's address (its header checksum differs).
        let mut stale = disk.blocks[&table.index.address].clone();
        stale[0] ^= 1;
        cache.insert(table.index.address, stale);
        assert_eq!(
            run(&levels, &disk, &mut cache, 2),
            (Some(value(2, 0, false)), 2)
        );
    }
}
