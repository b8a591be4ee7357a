//! One level of one tree's manifest: the tables the level holds, disjoint and ordered by key
//! (docs/storage.md, "Manifest levels").
//!
//! A deep level holds millions of tables, and compaction inserts and removes them every bar, so a
//! sorted array would move megabytes per change. The level is a segmented array instead: tables in
//! nodes of `NODE_TABLES` (sorted, each node's tables below the next node's), nodes from a pool
//! sized at start for the level's capacity, and a directory of the nodes in key order with each
//! node's largest key. Finding a key is a binary search of the directory, then of one node; an
//! insert or a remove moves at most one node's entries and, when a node splits or empties, the
//! directory's (one entry per `NODE_TABLES / 2` tables at least). Nothing allocates after `new`.

use super::table::{TableInfo, TableLayout};

/// Tables per node.
pub const NODE_TABLES: usize = 64;

#[derive(Debug)]
pub struct ManifestLevel {
    layout: TableLayout,
    tables_max: usize,
    /// Node storage; `nodes[n][..counts[n]]` are node `n`'s tables, sorted.
    nodes: Vec<[Option<TableInfo>; NODE_TABLES]>,
    counts: Vec<usize>,
    /// Nodes not in use.
    nodes_free: Vec<u32>,
    /// Nodes in use, in key order.
    directory: Vec<u32>,
    table_count: usize,
}

impl ManifestLevel {
    /// A level for up to `tables_max` tables.
    pub fn new(layout: TableLayout, tables_max: usize) -> ManifestLevel {
        assert!(tables_max > 0);
        // When there is more than one node, every node is at least half full (a split leaves
        // two halves; one that falls below half merges into a neighbour with room or borrows
        // from one without), so this many nodes always suffice.
        let nodes_max = tables_max.div_ceil(NODE_TABLES / 2) + 1;
        ManifestLevel {
            layout,
            tables_max,
            nodes: vec![[None; NODE_TABLES]; nodes_max],
            counts: vec![0; nodes_max],
            nodes_free: (0..nodes_max as u32).rev().collect(),
            directory: Vec::with_capacity(nodes_max),
            table_count: 0,
        }
    }

    pub fn table_count(&self) -> usize {
        self.table_count
    }

    pub fn tables_max(&self) -> usize {
        self.tables_max
    }

    /// The tables in key order.
    pub fn iter(&self) -> impl Iterator<Item = &TableInfo> + '_ {
        self.iter_from(0, 0)
    }

    /// The tables in key order from index `index` of the node at directory `position`.
    fn iter_from(&self, position: usize, index: usize) -> impl Iterator<Item = &TableInfo> + '_ {
        self.directory[position.min(self.directory.len())..]
            .iter()
            .enumerate()
            .flat_map(move |(i, &n)| {
                let skip = if i == 0 { index } else { 0 };
                self.node(n)[skip..].iter().map(|t| t.as_ref().unwrap())
            })
    }

    /// The table whose key range holds `key`, if any.
    pub fn table_holding(&self, key: &[u8]) -> Option<&TableInfo> {
        let (position, index) = self.locate(key)?;
        let table = self.node(self.directory[position])[index].as_ref().unwrap();
        (table.key_min(&self.layout) <= key).then_some(table)
    }

    /// The tables overlapping `[key_min, key_max]`, in key order.
    pub fn overlapping<'a>(
        &'a self,
        key_min: &'a [u8],
        key_max: &'a [u8],
    ) -> impl Iterator<Item = &'a TableInfo> + 'a {
        assert!(key_min <= key_max);
        let (position, index) = self.locate(key_min).unwrap_or((self.directory.len(), 0));
        let layout = self.layout;
        self.iter_from(position, index)
            .take_while(move |t| t.key_min(&layout) <= key_max)
    }

    /// Adds `table`, which must not overlap any table of the level.
    pub fn insert(&mut self, table: TableInfo) {
        assert!(self.table_count < self.tables_max, "level full");
        let layout = self.layout;
        assert!(table.key_min(&layout) <= table.key_max(&layout));
        let (key_min, key_max) = (table.key_min(&layout), table.key_max(&layout));
        assert!(
            self.overlapping(key_min, key_max).next().is_none(),
            "table overlaps the level"
        );
        let position = match self.locate(key_max) {
            Some((position, _)) => position,
            None if self.directory.is_empty() => {
                let node = self.node_acquire();
                self.directory.push(node);
                0
            }
            // Beyond every table: into the last node.
            None => self.directory.len() - 1,
        };
        let node = self.directory[position];
        if self.counts[node as usize] == NODE_TABLES {
            self.node_split(position);
            return self.insert(table);
        }
        let n = node as usize;
        let index = self.nodes[n][..self.counts[n]]
            .partition_point(|t| t.as_ref().unwrap().key_max(&layout) < key_max);
        self.nodes[n].copy_within(index..self.counts[n], index + 1);
        self.nodes[n][index] = Some(table);
        self.counts[n] += 1;
        self.table_count += 1;
    }

    /// Removes `table`, which the level must hold.
    pub fn remove(&mut self, table: &TableInfo) {
        let key_max = table.key_max(&self.layout);
        let (position, index) = self.locate(key_max).expect("table in the level");
        let n = self.directory[position] as usize;
        assert_eq!(
            self.nodes[n][index].as_ref(),
            Some(table),
            "table in the level"
        );
        self.nodes[n].copy_within(index + 1..self.counts[n], index);
        self.counts[n] -= 1;
        self.nodes[n][self.counts[n]] = None;
        self.table_count -= 1;
        if self.counts[n] == 0 {
            self.directory.remove(position);
            self.nodes_free.push(n as u32);
        } else if self.counts[n] < NODE_TABLES / 2 {
            self.node_merge(position);
        }
    }

    fn node(&self, node: u32) -> &[Option<TableInfo>] {
        &self.nodes[node as usize][..self.counts[node as usize]]
    }

    fn node_key_max(&self, node: u32) -> &[u8] {
        let n = node as usize;
        self.nodes[n][self.counts[n] - 1]
            .as_ref()
            .unwrap()
            .key_max(&self.layout)
    }

    /// The first table whose `key_max >= key`: its directory position and index in its node.
    fn locate(&self, key: &[u8]) -> Option<(usize, usize)> {
        let position = self
            .directory
            .partition_point(|&n| self.node_key_max(n) < key);
        let node = *self.directory.get(position)?;
        let index = self
            .node(node)
            .partition_point(|t| t.as_ref().unwrap().key_max(&self.layout) < key);
        Some((position, index))
    }

    fn node_acquire(&mut self) -> u32 {
        let node = self.nodes_free.pop().expect("nodes sized for the level");
        assert_eq!(self.counts[node as usize], 0);
        node
    }

    /// Splits the full node at `position` into two halves.
    fn node_split(&mut self, position: usize) {
        let left = self.directory[position] as usize;
        assert_eq!(self.counts[left], NODE_TABLES);
        let right = self.node_acquire() as usize;
        let half = NODE_TABLES / 2;
        let moved = self.nodes[left];
        self.nodes[right][..NODE_TABLES - half].copy_from_slice(&moved[half..]);
        self.nodes[left][half..].fill(None);
        self.counts[left] = half;
        self.counts[right] = NODE_TABLES - half;
        self.directory.insert(position + 1, right as u32);
    }

    /// The node at `position` fell below half: move its tables into a neighbour with room, or
    /// borrow from a neighbour that has none (it has more than half, and keeps half).
    fn node_merge(&mut self, position: usize) {
        let n = self.directory[position] as usize;
        let count = self.counts[n];
        let neighbours = [position.checked_sub(1), Some(position + 1)];
        let mut neighbours = neighbours
            .into_iter()
            .flatten()
            .filter(|&p| p < self.directory.len());
        let Some(p) = neighbours.next() else {
            return; // The only node.
        };
        if self.counts[self.directory[p] as usize] + count > NODE_TABLES {
            self.node_borrow(position, p);
            return;
        }
        let m = self.directory[p] as usize;
        let (m_count, tables) = (self.counts[m], self.nodes[n]);
        if p < position {
            // Append after the left neighbour's tables.
            self.nodes[m][m_count..m_count + count].copy_from_slice(&tables[..count]);
        } else {
            // Prepend before the right neighbour's tables.
            self.nodes[m].copy_within(..m_count, count);
            self.nodes[m][..count].copy_from_slice(&tables[..count]);
        }
        self.counts[m] += count;
        self.nodes[n] = [None; NODE_TABLES];
        self.counts[n] = 0;
        self.directory.remove(position);
        self.nodes_free.push(n as u32);
    }

    /// Moves tables from the neighbour at `from` (more than half full) into the node at
    /// `position` until that one is half full.
    fn node_borrow(&mut self, position: usize, from: usize) {
        let (n, m) = (
            self.directory[position] as usize,
            self.directory[from] as usize,
        );
        let (count, m_count) = (self.counts[n], self.counts[m]);
        let moved = NODE_TABLES / 2 - count;
        assert!(m_count - moved >= NODE_TABLES / 2);
        if from < position {
            // The left neighbour's last tables go first in this node.
            self.nodes[n].copy_within(..count, moved);
            let lent = self.nodes[m];
            self.nodes[n][..moved].copy_from_slice(&lent[m_count - moved..m_count]);
            self.nodes[m][m_count - moved..m_count].fill(None);
        } else {
            // The right neighbour's first tables go last in this node.
            let lent = self.nodes[m];
            self.nodes[n][count..count + moved].copy_from_slice(&lent[..moved]);
            self.nodes[m].copy_within(moved..m_count, 0);
            self.nodes[m][m_count - moved..m_count].fill(None);
        }
        self.counts[n] += moved;
        self.counts[m] -= moved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::BlockReference;
    use crate::lsm::table::KEY_SIZE_MAX;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    fn layout() -> TableLayout {
        TableLayout::new(4096, 64, 8, 4)
    }

    /// A table covering keys `[min, max]`.
    fn table(min: u64, max: u64) -> TableInfo {
        let key = |k: u64| {
            let mut key = [0u8; KEY_SIZE_MAX];
            key[..8].copy_from_slice(&k.to_be_bytes());
            key
        };
        TableInfo {
            index: BlockReference {
                address: min + 1,
                checksum: u128::from(max),
            },
            tree: 1,
            value_count: max - min + 1,
            key_min: key(min),
            key_max: key(max),
        }
    }

    impl ManifestLevel {
        fn assert_invariants(&self) {
            let nodes = self.directory.len();
            assert_eq!(nodes + self.nodes_free.len(), self.nodes.len());
            for &n in &self.directory {
                let count = self.counts[n as usize];
                assert!(count > 0);
                assert!(
                    nodes == 1 || count >= NODE_TABLES / 2,
                    "node of {count} tables"
                );
            }
            let tables: Vec<_> = self.iter().collect();
            assert_eq!(tables.len(), self.table_count);
            for pair in tables.windows(2) {
                assert!(pair[0].key_max(&self.layout) < pair[1].key_min(&self.layout));
            }
        }
    }

    #[test]
    fn manifest_level_finds_tables_by_key_and_range() {
        let layout = layout();
        let mut level = ManifestLevel::new(layout, 1000);
        for i in (0..300u64).rev() {
            level.insert(table(10 * i, 10 * i + 5));
        }
        level.assert_invariants();
        assert_eq!(level.table_count(), 300);
        let key = |k: u64| k.to_be_bytes();
        assert_eq!(level.table_holding(&key(1234)).unwrap(), &table(1230, 1235));
        assert_eq!(level.table_holding(&key(1237)), None);
        assert_eq!(level.table_holding(&key(5000)), None);
        let found: Vec<_> = level.overlapping(&key(1237), &key(1262)).copied().collect();
        assert_eq!(
            found,
            vec![table(1240, 1245), table(1250, 1255), table(1260, 1265)]
        );
        assert_eq!(level.overlapping(&key(2996), &key(9999)).count(), 0);
        assert_eq!(level.overlapping(&key(0), &key(u64::MAX)).count(), 300);
        for i in 0..300u64 {
            level.remove(&table(10 * i, 10 * i + 5));
            level.assert_invariants();
        }
        assert_eq!(level.table_count(), 0);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn manifest_level_refuses_an_overlapping_table() {
        let mut level = ManifestLevel::new(layout(), 10);
        level.insert(table(10, 20));
        level.insert(table(20, 30));
    }

    /// Random inserts and removes against a model, at the level's capacity.
    #[test]
    fn manifest_level_matches_a_model() {
        let layout = layout();
        for seed in 0..10 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let tables_max = 200 + (rng.next_u64() % 500) as usize;
            let mut level = ManifestLevel::new(layout, tables_max);
            // Slots of 10 keys; a table takes part of one slot, so tables never overlap.
            let mut model: BTreeMap<u64, TableInfo> = BTreeMap::new();
            for _ in 0..5_000 {
                let slot = rng.next_u64() % 1_000;
                if let Some(t) = model.remove(&slot) {
                    level.remove(&t);
                } else if model.len() < tables_max {
                    let t = table(
                        10 * slot + rng.next_u64() % 3,
                        10 * slot + 3 + rng.next_u64() % 6,
                    );
                    level.insert(t);
                    model.insert(slot, t);
                }
                if rng.next_u64() % 50 == 0 {
                    level.assert_invariants();
                }
                let got: Vec<_> = level.iter().copied().collect();
                let want: Vec<_> = model.values().copied().collect();
                assert_eq!(got, want);
                let probe = rng.next_u64() % 10_000;
                let holding = level.table_holding(&probe.to_be_bytes()).copied();
                let expected = model.get(&(probe / 10)).copied().filter(|t| {
                    t.key_min(&layout) <= &probe.to_be_bytes()[..]
                        && &probe.to_be_bytes()[..] <= t.key_max(&layout)
                });
                assert_eq!(holding, expected);
            }
            level.assert_invariants();
        }
    }
}
