//! An immutable table of the LSM forest: values sorted by key, in value blocks, named by one
//! index block (docs/storage.md, "Tables").
//!
//! A value is `value_size` bytes whose first `key_size` bytes are its key; keys compare as byte
//! strings (trees encode their keys big-endian, so byte order is numeric order) and are unique
//! within a table. A value block's body is its values, packed and sorted; its header's metadata is
//! its value count. An index block's body has one entry per value block, in key order:
//! `[key_max][address: u64][checksum: u128]`; its header's metadata is the table's value count.
//! A lookup binary-searches the index for the first block whose `key_max` is at least the key,
//! then that block's values: two block reads, the first usually cached.
//!
//! The builder fills caller-owned block buffers (so compaction allocates nothing) and seals each
//! with an address the caller acquired from the free set.

use crate::grid::{block_seal, BlockReference, BlockType};
use crate::header::commands::Block;
use crate::header::{Header, HEADER_SIZE};

/// The largest key: a u128 prefix and a u64 timestamp.
pub const KEY_SIZE_MAX: usize = 24;
/// Address and checksum after each index entry's key.
const INDEX_REFERENCE_SIZE: usize = 8 + 16;

/// The shape of one tree's tables; fixed by the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableLayout {
    pub block_size: usize,
    pub value_size: usize,
    pub key_size: usize,
    /// Value blocks per table, at most what one index block can name.
    pub value_blocks_max: usize,
}

impl TableLayout {
    pub fn new(
        block_size: usize,
        value_size: usize,
        key_size: usize,
        value_blocks_max: usize,
    ) -> TableLayout {
        let layout = TableLayout {
            block_size,
            value_size,
            key_size,
            value_blocks_max,
        };
        assert!(key_size > 0 && key_size <= KEY_SIZE_MAX);
        assert!(value_size >= key_size);
        assert!(
            layout.values_per_block() >= 2,
            "a value block holds two values at least"
        );
        assert!(value_blocks_max >= 1);
        assert!(value_blocks_max <= layout.index_entries_max());
        layout
    }

    pub fn values_per_block(&self) -> usize {
        (self.block_size - HEADER_SIZE) / self.value_size
    }

    fn index_entry_size(&self) -> usize {
        self.key_size + INDEX_REFERENCE_SIZE
    }

    /// Value blocks one index block can name.
    pub fn index_entries_max(&self) -> usize {
        (self.block_size - HEADER_SIZE) / self.index_entry_size()
    }

    pub fn values_max(&self) -> usize {
        self.values_per_block() * self.value_blocks_max
    }

    fn key<'a>(&self, value: &'a [u8]) -> &'a [u8] {
        &value[..self.key_size]
    }
}

/// What the manifest records of a table: enough to find it and to know its key range without
/// reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub index: BlockReference,
    pub tree: u16,
    pub value_count: u64,
    pub key_min: [u8; KEY_SIZE_MAX],
    pub key_max: [u8; KEY_SIZE_MAX],
}

impl TableInfo {
    pub fn key_min(&self, layout: &TableLayout) -> &[u8] {
        &self.key_min[..layout.key_size]
    }

    pub fn key_max(&self, layout: &TableLayout) -> &[u8] {
        &self.key_max[..layout.key_size]
    }
}

/// Builds one table: values appended in strictly increasing key order into the current value
/// block buffer; each full block is sealed at an address the caller supplies, then the index.
#[derive(Debug)]
pub struct TableBuilder {
    layout: TableLayout,
    cluster: u128,
    tree: u16,
    /// Values in the value block being filled.
    block_values: usize,
    /// Value blocks sealed, and their entries written into the index buffer.
    blocks_sealed: usize,
    value_count: u64,
    key_min: [u8; KEY_SIZE_MAX],
    key_last: [u8; KEY_SIZE_MAX],
}

impl TableBuilder {
    pub fn new(layout: TableLayout, cluster: u128, tree: u16) -> TableBuilder {
        TableBuilder {
            layout,
            cluster,
            tree,
            block_values: 0,
            blocks_sealed: 0,
            value_count: 0,
            key_min: [0; KEY_SIZE_MAX],
            key_last: [0; KEY_SIZE_MAX],
        }
    }

    pub fn value_count(&self) -> u64 {
        self.value_count
    }

    /// The table can take no more values (all its value blocks are full).
    pub fn full(&self) -> bool {
        self.blocks_sealed == self.layout.value_blocks_max
            || (self.blocks_sealed + 1 == self.layout.value_blocks_max && self.block_full())
    }

    /// The value block being filled holds `values_per_block` values: seal it before appending.
    pub fn block_full(&self) -> bool {
        self.block_values == self.layout.values_per_block()
    }

    pub fn block_empty(&self) -> bool {
        self.block_values == 0
    }

    /// Appends `value` to the value block in `block` (the buffer of the block being filled).
    pub fn append(&mut self, block: &mut [u8], value: &[u8]) {
        let layout = self.layout;
        assert_eq!(value.len(), layout.value_size);
        assert!(!self.block_full() && self.blocks_sealed < layout.value_blocks_max);
        let key = layout.key(value);
        if self.value_count == 0 {
            self.key_min[..layout.key_size].copy_from_slice(key);
        } else {
            assert!(
                &self.key_last[..layout.key_size] < key,
                "values appended out of key order"
            );
        }
        self.key_last[..layout.key_size].copy_from_slice(key);
        let at = HEADER_SIZE + self.block_values * layout.value_size;
        block[at..at + layout.value_size].copy_from_slice(value);
        self.block_values += 1;
        self.value_count += 1;
    }

    /// Seals the value block in `block` at `address` and records it in the index in `index`.
    pub fn block_seal(&mut self, block: &mut [u8], index: &mut [u8], address: u64) {
        let layout = self.layout;
        assert!(self.block_values > 0);
        assert!(self.blocks_sealed < layout.value_blocks_max);
        let header = Block {
            address,
            block_type: BlockType::Value as u8,
            tree: self.tree,
            metadata: self.block_values as u128,
        };
        let body = self.block_values * layout.value_size;
        let reference = block_seal(block, self.cluster, &header, body, layout.block_size);
        let at = HEADER_SIZE + self.blocks_sealed * layout.index_entry_size();
        let entry = &mut index[at..at + layout.index_entry_size()];
        entry[..layout.key_size].copy_from_slice(&self.key_last[..layout.key_size]);
        entry[layout.key_size..layout.key_size + 8].copy_from_slice(&address.to_le_bytes());
        entry[layout.key_size + 8..].copy_from_slice(&reference.checksum.to_le_bytes());
        self.blocks_sealed += 1;
        self.block_values = 0;
    }

    /// Seals the index in `index` at `address`: the table is whole. Every value block is sealed.
    pub fn finish(self, index: &mut [u8], address: u64) -> TableInfo {
        let layout = self.layout;
        assert_eq!(self.block_values, 0, "a value block is not sealed");
        assert!(self.blocks_sealed > 0);
        let header = Block {
            address,
            block_type: BlockType::Index as u8,
            tree: self.tree,
            metadata: u128::from(self.value_count),
        };
        let body = self.blocks_sealed * layout.index_entry_size();
        let reference = block_seal(index, self.cluster, &header, body, layout.block_size);
        TableInfo {
            index: reference,
            tree: self.tree,
            value_count: self.value_count,
            key_min: self.key_min,
            key_max: self.key_last,
        }
    }
}

/// The value blocks an index block names, in key order. `index` is a verified index block.
pub fn index_entries<'a>(
    layout: &'a TableLayout,
    index: &'a [u8],
) -> impl ExactSizeIterator<Item = (&'a [u8], BlockReference)> + 'a {
    let body = index_body(layout, index);
    (0..body.len() / layout.index_entry_size()).map(move |i| index_entry(layout, body, i))
}

/// The value block of a table that would hold `key` (the first whose `key_max >= key`), if any.
pub fn index_search(layout: &TableLayout, index: &[u8], key: &[u8]) -> Option<BlockReference> {
    assert_eq!(key.len(), layout.key_size);
    let body = index_body(layout, index);
    let count = body.len() / layout.index_entry_size();
    let position = partition_point(count, |i| index_entry(layout, body, i).0 < key);
    (position < count).then(|| index_entry(layout, body, position).1)
}

/// Entry `i` of a verified index block, if it has that many.
pub fn index_entry_at<'a>(
    layout: &TableLayout,
    index: &'a [u8],
    i: usize,
) -> Option<(&'a [u8], BlockReference)> {
    let body = index_body(layout, index);
    (i < body.len() / layout.index_entry_size()).then(|| index_entry(layout, body, i))
}

fn index_body<'a>(layout: &TableLayout, index: &'a [u8]) -> &'a [u8] {
    let header = Header::read_from(index);
    let body = &index[HEADER_SIZE..header.size as usize];
    assert_eq!(body.len() % layout.index_entry_size(), 0);
    body
}

fn index_entry<'a>(layout: &TableLayout, body: &'a [u8], i: usize) -> (&'a [u8], BlockReference) {
    let entry = &body[i * layout.index_entry_size()..(i + 1) * layout.index_entry_size()];
    let (key_max, reference) = entry.split_at(layout.key_size);
    let address = u64::from_le_bytes(reference[..8].try_into().expect("8 bytes"));
    let checksum = u128::from_le_bytes(reference[8..].try_into().expect("16 bytes"));
    (key_max, BlockReference { address, checksum })
}

/// The values of a verified value block, in key order.
pub fn block_values<'a>(layout: &TableLayout, block: &'a [u8]) -> &'a [u8] {
    let header = Header::read_from(block);
    let body = &block[HEADER_SIZE..header.size as usize];
    assert_eq!(body.len() % layout.value_size, 0);
    body
}

/// The value with `key` in a verified value block, if it holds one.
pub fn block_search<'a>(layout: &TableLayout, block: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    values_search(layout, block_values(layout, block), key)
}

/// The value of `key` in `values` (packed, sorted by key, unique), if there.
pub fn values_search<'a>(layout: &TableLayout, values: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    assert_eq!(key.len(), layout.key_size);
    assert_eq!(values.len() % layout.value_size, 0);
    let count = values.len() / layout.value_size;
    let value = |i: usize| &values[i * layout.value_size..(i + 1) * layout.value_size];
    let position = partition_point(count, |i| layout.key(value(i)) < key);
    (position < count && layout.key(value(position)) == key).then(|| value(position))
}

/// The first index in `0..count` for which `before` is false (`before` true, then false).
fn partition_point(count: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        if before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::block_verify;

    const CLUSTER: u128 = 3;

    /// 4 KiB blocks of 64-byte values keyed by a big-endian u64: 60 values a block.
    fn layout(value_blocks_max: usize) -> TableLayout {
        TableLayout::new(4096, 64, 8, value_blocks_max)
    }

    fn value(key: u64) -> [u8; 64] {
        let mut value = [0u8; 64];
        value[..8].copy_from_slice(&key.to_be_bytes());
        value[8..16].copy_from_slice(&key.wrapping_mul(31).to_le_bytes());
        value
    }

    /// A table of `keys` (sorted): its blocks by address (index last) and its info.
    fn build(layout: TableLayout, keys: &[u64]) -> (Vec<Vec<u8>>, TableInfo) {
        let mut builder = TableBuilder::new(layout, CLUSTER, 9);
        let mut blocks = Vec::new();
        let mut index = vec![0u8; layout.block_size];
        let mut block = vec![0u8; layout.block_size];
        for &key in keys {
            if builder.block_full() {
                builder.block_seal(&mut block, &mut index, blocks.len() as u64 + 1);
                blocks.push(std::mem::replace(&mut block, vec![0u8; layout.block_size]));
            }
            builder.append(&mut block, &value(key));
        }
        builder.block_seal(&mut block, &mut index, blocks.len() as u64 + 1);
        blocks.push(block);
        assert_eq!(builder.value_count(), keys.len() as u64);
        let info = builder.finish(&mut index, blocks.len() as u64 + 1);
        blocks.push(index);
        (blocks, info)
    }

    /// Looks `key` up as a reader would: the index, then one value block, both verified.
    fn lookup(layout: &TableLayout, blocks: &[Vec<u8>], info: &TableInfo, key: u64) -> Option<u64> {
        let index = &blocks[info.index.address as usize - 1];
        block_verify(index, CLUSTER, info.index, layout.block_size).unwrap();
        let reference = index_search(layout, index, &key.to_be_bytes())?;
        let block = &blocks[reference.address as usize - 1];
        block_verify(block, CLUSTER, reference, layout.block_size).unwrap();
        let found = block_search(layout, block, &key.to_be_bytes())?;
        assert_eq!(found, value(key));
        Some(u64::from_be_bytes(found[..8].try_into().unwrap()))
    }

    #[test]
    fn table_finds_every_key_and_nothing_else() {
        let layout = layout(8);
        assert_eq!(layout.values_per_block(), 60);
        // Even keys, spanning four value blocks, the last one partly full.
        let keys: Vec<u64> = (0..200).map(|i| 10 + 2 * i).collect();
        let (blocks, info) = build(layout, &keys);
        assert_eq!(blocks.len(), 4 + 1);
        assert_eq!(info.value_count, 200);
        assert_eq!(info.key_min(&layout), 10u64.to_be_bytes());
        assert_eq!(info.key_max(&layout), 408u64.to_be_bytes());
        for &key in &keys {
            assert_eq!(lookup(&layout, &blocks, &info, key), Some(key));
        }
        // Between keys, below the first, at block boundaries' gaps, above the last.
        for key in [0, 9, 11, 129, 131, 409, u64::MAX] {
            assert_eq!(lookup(&layout, &blocks, &info, key), None, "key {key}");
        }
        let entries: Vec<_> = index_entries(&layout, &blocks[4]).collect();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].0, (10 + 2 * 59u64).to_be_bytes());
        assert_eq!(entries[3].0, 408u64.to_be_bytes());
        let values: usize = blocks[..4]
            .iter()
            .map(|b| block_values(&layout, b).len() / 64)
            .sum();
        assert_eq!(values, 200);
    }

    #[test]
    fn table_reports_full_at_its_value_limit() {
        let layout = layout(2);
        let mut builder = TableBuilder::new(layout, CLUSTER, 1);
        let mut block = vec![0u8; 4096];
        let mut index = vec![0u8; 4096];
        for key in 0..60 {
            builder.append(&mut block, &value(key));
        }
        assert!(builder.block_full() && !builder.full());
        builder.block_seal(&mut block, &mut index, 1);
        for key in 60..120 {
            assert!(!builder.full());
            builder.append(&mut block, &value(key));
        }
        assert!(builder.full());
        assert_eq!(layout.values_max(), 120);
    }

    #[test]
    #[should_panic(expected = "out of key order")]
    fn table_refuses_values_out_of_order() {
        let layout = layout(2);
        let mut builder = TableBuilder::new(layout, CLUSTER, 1);
        let mut block = vec![0u8; 4096];
        builder.append(&mut block, &value(5));
        builder.append(&mut block, &value(5));
    }

    #[test]
    fn table_layout_bounds_the_index() {
        // 1 MiB blocks of 128-byte transfers: 8190 a block; an index of 32-byte entries names
        // up to 32,760 value blocks.
        let layout = TableLayout::new(1 << 20, 128, 8, 64);
        assert_eq!(layout.values_per_block(), 8190);
        assert_eq!(layout.index_entries_max(), 32_760);
        assert_eq!(layout.values_max(), 8190 * 64);
    }
}
