//! What the LSM modules' tests share: values with a version and a tombstone flag, and a "disk"
//! of blocks by address that tables are built into and read back from.

use super::table::{block_values, index_entries, TableBuilder, TableInfo, TableLayout};
use crate::grid::block_verify;
use crate::grid::free_set::FreeSet;
use std::collections::BTreeMap;

pub const CLUSTER: u128 = 5;

/// A 64-byte value: `key` big-endian, then its version, then a tombstone flag.
pub fn value(key: u64, version: u8, tombstone: bool) -> [u8; 64] {
    let mut v = [0u8; 64];
    v[..8].copy_from_slice(&key.to_be_bytes());
    v[8] = version;
    v[9] = u8::from(tombstone);
    v
}

pub fn is_tombstone(v: &[u8]) -> bool {
    v[9] == 1
}

/// Blocks by address, their addresses from a free set.
pub struct Disk {
    pub blocks: BTreeMap<u64, Vec<u8>>,
    pub free_set: FreeSet,
}

impl Disk {
    pub fn new() -> Disk {
        Disk {
            blocks: BTreeMap::new(),
            free_set: FreeSet::new(10_000),
        }
    }

    fn acquire(&mut self) -> u64 {
        let reservation = self.free_set.reserve(1).unwrap();
        let address = self.free_set.acquire(&reservation).unwrap();
        self.free_set.forfeit(reservation);
        address
    }

    /// Tables of `values` (sorted), cut at the table size.
    pub fn tables(&mut self, layout: TableLayout, values: &[[u8; 64]]) -> Vec<TableInfo> {
        let size = layout.block_size;
        let mut infos = Vec::new();
        for chunk in values.chunks(layout.values_max()) {
            let mut builder = TableBuilder::new(layout, CLUSTER, 1);
            let (mut index, mut block) = (vec![0u8; size], vec![0u8; size]);
            for v in chunk {
                if builder.block_full() {
                    let address = self.acquire();
                    builder.block_seal(&mut block, &mut index, address);
                    self.blocks
                        .insert(address, std::mem::replace(&mut block, vec![0; size]));
                }
                builder.append(&mut block, v);
            }
            let address = self.acquire();
            builder.block_seal(&mut block, &mut index, address);
            self.blocks.insert(address, block);
            let address = self.acquire();
            infos.push(builder.finish(&mut index, address));
            self.blocks.insert(address, index);
        }
        infos
    }

    /// Every value of `tables`, read back through their index blocks, verified.
    pub fn read(&self, layout: TableLayout, tables: &[TableInfo]) -> Vec<[u8; 64]> {
        let mut values = Vec::new();
        for table in tables {
            let index = &self.blocks[&table.index.address];
            block_verify(index, CLUSTER, table.index, layout.block_size).unwrap();
            for (key_max, reference) in index_entries(&layout, index) {
                let block = &self.blocks[&reference.address];
                block_verify(block, CLUSTER, reference, layout.block_size).unwrap();
                let packed = block_values(&layout, block);
                assert_eq!(&packed[packed.len() - 64..][..8], key_max);
                values.extend(packed.chunks(64).map(|v| <[u8; 64]>::try_from(v).unwrap()));
            }
        }
        values
    }
}
