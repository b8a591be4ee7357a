//! A tree's mutable table: the values put since the tree's last flush, in memory (docs/storage.md,
//! "The mutable table").
//!
//! Values are appended in the order they are put. At the end of each op the caller seals them as a
//! *run*: the run's positions are sorted by key (ties by position, so the latest put of a key
//! sorts last), without moving the values. A lookup binary-searches the runs newest first, so a
//! batch of thousands of lookups costs a few binary searches each, not a scan. At the end of a bar
//! `flush` sorts every position at once and writes each key's latest value, in key order, into the
//! caller's buffer: the immutable table that compaction then writes to level 0.
//!
//! Everything is sized in `new` from the most values a bar can put; nothing allocates after.

use super::table::TableLayout;
use std::cmp::Ordering;

#[derive(Debug)]
pub struct TableMemory {
    layout: TableLayout,
    values_max: usize,
    /// Values in the order they were put.
    values: Vec<u8>,
    count: usize,
    /// Positions of `values`, each sealed run's slice sorted by (key, position).
    order: Vec<u32>,
    /// Sealed runs as ranges of `order`, oldest first; `runs_max` at most.
    runs: Vec<(u32, u32)>,
    runs_max: usize,
    /// Where the open (unsealed) run begins in `order`.
    open_start: usize,
}

impl TableMemory {
    pub fn new(layout: TableLayout, values_max: usize, runs_max: usize) -> TableMemory {
        assert!(values_max > 0 && values_max < u32::MAX as usize);
        assert!(runs_max > 0);
        TableMemory {
            layout,
            values_max,
            values: vec![0; values_max * layout.value_size],
            count: 0,
            order: Vec::with_capacity(values_max),
            runs: Vec::with_capacity(runs_max),
            runs_max,
            open_start: 0,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Values that can still be put before the next flush.
    pub fn room(&self) -> usize {
        self.values_max - self.count
    }

    pub fn put(&mut self, value: &[u8]) {
        assert_eq!(value.len(), self.layout.value_size);
        assert!(self.count < self.values_max, "mutable table full");
        let size = self.layout.value_size;
        self.values[self.count * size..(self.count + 1) * size].copy_from_slice(value);
        self.order.push(self.count as u32);
        self.count += 1;
    }

    /// Seals the values put since the last seal as a run (nothing if none were).
    pub fn run_seal(&mut self) {
        let start = self.open_start;
        if start == self.order.len() {
            return;
        }
        assert!(
            self.runs.len() < self.runs_max,
            "more runs than a bar has ops"
        );
        let (layout, values) = (self.layout, &self.values);
        self.order[start..].sort_unstable_by(|&a, &b| compare(&layout, values, a, b));
        self.runs.push((start as u32, self.order.len() as u32));
        self.open_start = self.order.len();
    }

    /// The latest value put for `key` and sealed, if any.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        assert_eq!(key.len(), self.layout.key_size);
        self.runs.iter().rev().find_map(|&(start, end)| {
            let run = &self.order[start as usize..end as usize];
            // The first position whose key is above `key`; the one before it is the latest put
            // of `key`, if that one has it.
            let after = run.partition_point(|&p| self.key(p) <= key);
            let latest = *run.get(after.checked_sub(1)?)?;
            (self.key(latest) == key).then(|| self.value(latest))
        })
    }

    /// Writes each key's latest value, in key order, into `out` (which holds `values_max`
    /// values) and empties the table; returns how many. Every run must be sealed.
    pub fn flush(&mut self, out: &mut [u8]) -> usize {
        assert_eq!(self.open_start, self.order.len(), "an unsealed run");
        let size = self.layout.value_size;
        assert!(out.len() >= self.count * size);
        let (layout, values) = (self.layout, &self.values);
        self.order
            .sort_unstable_by(|&a, &b| compare(&layout, values, a, b));
        let mut written = 0;
        for (i, &position) in self.order.iter().enumerate() {
            let next = self.order.get(i + 1);
            if next.is_some_and(|&n| self.key(n) == self.key(position)) {
                continue; // A later put of the same key follows.
            }
            out[written * size..(written + 1) * size].copy_from_slice(self.value(position));
            written += 1;
        }
        self.count = 0;
        self.order.clear();
        self.runs.clear();
        self.open_start = 0;
        written
    }

    fn value(&self, position: u32) -> &[u8] {
        let size = self.layout.value_size;
        &self.values[position as usize * size..(position as usize + 1) * size]
    }

    fn key(&self, position: u32) -> &[u8] {
        &self.value(position)[..self.layout.key_size]
    }
}

/// Orders positions by their values' keys, then by position (later puts last).
fn compare(layout: &TableLayout, values: &[u8], a: u32, b: u32) -> Ordering {
    let key = |p: u32| {
        let at = p as usize * layout.value_size;
        &values[at..at + layout.key_size]
    };
    key(a).cmp(key(b)).then(a.cmp(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    fn layout() -> TableLayout {
        TableLayout::new(4096, 16, 8, 4)
    }

    fn value(key: u64, version: u64) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&key.to_be_bytes());
        v[8..].copy_from_slice(&version.to_le_bytes());
        v
    }

    #[test]
    fn table_memory_finds_the_latest_put_and_flushes_it_in_key_order() {
        let mut table = TableMemory::new(layout(), 100, 4);
        table.put(&value(5, 1));
        table.put(&value(3, 1));
        table.put(&value(5, 2)); // Same run: the later put wins.
        table.run_seal();
        table.put(&value(3, 3)); // A later run wins over an earlier one.
        table.put(&value(9, 3));
        assert_eq!(table.get(&9u64.to_be_bytes()), None, "not sealed yet");
        table.run_seal();
        table.run_seal(); // Nothing new: no empty run.
        assert_eq!(table.get(&5u64.to_be_bytes()), Some(&value(5, 2)[..]));
        assert_eq!(table.get(&3u64.to_be_bytes()), Some(&value(3, 3)[..]));
        assert_eq!(table.get(&9u64.to_be_bytes()), Some(&value(9, 3)[..]));
        assert_eq!(table.get(&4u64.to_be_bytes()), None);
        let mut out = vec![0u8; 100 * 16];
        let written = table.flush(&mut out);
        assert_eq!(written, 3);
        assert_eq!(
            &out[..48],
            [value(3, 3), value(5, 2), value(9, 3)].concat().as_slice()
        );
        assert_eq!(table.count(), 0);
        assert_eq!(table.get(&3u64.to_be_bytes()), None);
    }

    /// Random puts in random runs against a model: every lookup and every flush agree.
    #[test]
    fn table_memory_matches_a_model() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut table = TableMemory::new(layout(), 2_000, 64);
        let mut out = vec![0u8; 2_000 * 16];
        for _ in 0..20 {
            let mut model: BTreeMap<u64, [u8; 16]> = BTreeMap::new();
            let mut version = 0;
            for _ in 0..(1 + rng.next_u64() % 64) {
                for _ in 0..rng.next_u64() % 30 {
                    version += 1;
                    let v = value(rng.next_u64() % 200, version);
                    table.put(&v);
                    model.insert(rng_key(&v), v);
                }
                table.run_seal();
                for _ in 0..20 {
                    let key = rng.next_u64() % 220;
                    let expected = model.get(&key).map(|v| &v[..]);
                    assert_eq!(table.get(&key.to_be_bytes()), expected);
                }
            }
            let written = table.flush(&mut out);
            let expected: Vec<u8> = model.values().flatten().copied().collect();
            assert_eq!(&out[..written * 16], expected.as_slice());
        }
    }

    fn rng_key(v: &[u8; 16]) -> u64 {
        u64::from_be_bytes(v[..8].try_into().unwrap())
    }
}
