//! One compaction: a table of level A (or the tree's immutable table, in memory) merged with the
//! tables of level B that overlap it, into new tables for level B (docs/storage.md, "A
//! compaction"). Sans I/O and paced by its caller: each
//! step does as much as the blocks at hand allow and then names one block to read or one sealed
//! block to write; the caller does that and steps again, as many steps an op as its budget
//! allows, so no commit waits for a whole compaction.
//!
//! Input blocks are read into the job's own buffers (a compaction's blocks are read once: they
//! would only push hot blocks out of the cache), and released in the free set as they are read
//! (released, not freed: the checkpoint in force still references them). Output blocks come from
//! one reservation made at the start, of the most the output can need, so the addresses a job
//! writes do not depend on how its I/O interleaves with another job's. The caller updates the
//! manifest with `outputs()` once `Done`.

use super::merge::{merge, MergeInput, MergeRules, MergeStop};
use super::table::{index_entry_at, TableBuilder, TableInfo, TableLayout};
use crate::grid::free_set::{FreeSet, Reservation};
use crate::grid::BlockReference;
use crate::header::{Header, HEADER_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionStep {
    /// Read this block, verify it, and hand it to `on_read` before stepping again.
    Read(BlockReference),
    /// Write `block_written()` (sealed at this address) before stepping again.
    Write(u64),
    /// Every output block has been handed out; `outputs()` are level B's new tables.
    Done,
}

/// What level A contributes.
#[derive(Debug)]
pub enum Source {
    /// One table of level A.
    Table(TableInfo),
    /// The tree's immutable table: `count` values sorted by key, unique, packed at the start of
    /// the buffer (handed back by `Compaction::finish` once done).
    Memory { values: Vec<u8>, count: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    Value,
    Index,
}

/// Walks the value blocks of some tables in key order: each table's index block, then the value
/// blocks it names.
#[derive(Debug)]
struct TablesInput {
    tables: Vec<TableInfo>,
    /// The table whose blocks are being walked.
    table: usize,
    index: Vec<u8>,
    /// The index block of `table` is in `index`.
    index_loaded: bool,
    /// The next entry of the index to read.
    entry: usize,
    values: Vec<u8>,
    /// Where the values begin in `values`: after the block header, or 0 for values in memory.
    values_offset: usize,
    /// For values in memory: the block buffer they stand in for, kept to hand back.
    spare: Vec<u8>,
    merge: MergeInput,
}

impl TablesInput {
    /// Walks `tables` with block buffers `index` and `values`.
    fn new(tables: Vec<TableInfo>, index: Vec<u8>, values: Vec<u8>) -> Self {
        TablesInput {
            tables,
            table: 0,
            index,
            index_loaded: false,
            entry: 0,
            values,
            values_offset: HEADER_SIZE,
            spare: Vec::new(),
            merge: MergeInput::default(),
        }
    }

    /// `count` sorted, unique values already in `values`: no blocks to read. The buffers are
    /// only kept, to hand back.
    fn memory(
        values: Vec<u8>,
        count: usize,
        list: Vec<TableInfo>,
        index: Vec<u8>,
        spare: Vec<u8>,
    ) -> Self {
        let mut merge = MergeInput::default();
        merge.load(count);
        TablesInput {
            tables: list,
            table: 0,
            index,
            index_loaded: false,
            entry: 0,
            values,
            values_offset: 0,
            spare,
            merge,
        }
    }

    /// The buffers back (the table list as it was), and the values in memory (if it held them).
    fn into_buffers(self) -> (Vec<TableInfo>, Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
        if self.values_offset == 0 {
            (self.tables, self.index, self.spare, Some(self.values))
        } else {
            (self.tables, self.index, self.values, None)
        }
    }

    /// The block to read next, or `None` once every table is walked (the input is then ended).
    fn next_read(&mut self, layout: &TableLayout) -> Option<BlockReference> {
        loop {
            let table = self.tables.get(self.table)?;
            if !self.index_loaded {
                return Some(table.index);
            }
            if let Some((_, reference)) = index_entry_at(layout, &self.index, self.entry) {
                return Some(reference);
            }
            self.table += 1;
            self.index_loaded = false;
            self.entry = 0;
        }
    }

    /// `block` is the block `next_read` named.
    fn on_read(&mut self, layout: &TableLayout, block: &[u8]) {
        let size = Header::read_from(block).size as usize;
        if !self.index_loaded {
            self.index[..size].copy_from_slice(&block[..size]);
            self.index_loaded = true;
        } else {
            self.values[..size].copy_from_slice(&block[..size]);
            self.merge.load((size - HEADER_SIZE) / layout.value_size);
            self.entry += 1;
        }
    }
}

/// A job's buffers: allocated once (the tree keeps a pool sized at start) and handed from job to
/// job, so compaction allocates nothing as it runs.
#[derive(Debug)]
pub struct CompactionBuffers {
    /// Index and value block buffers of input A, then of input B.
    a_index: Vec<u8>,
    a_values: Vec<u8>,
    b_index: Vec<u8>,
    b_values: Vec<u8>,
    output_values: Vec<u8>,
    output_index: Vec<u8>,
    tables_a: Vec<TableInfo>,
    tables_b: Vec<TableInfo>,
    outputs: Vec<TableInfo>,
}

impl CompactionBuffers {
    /// For jobs merging into at most `tables_b_max` tables and writing at most `outputs_max`.
    pub fn new(block_size: usize, tables_b_max: usize, outputs_max: usize) -> CompactionBuffers {
        CompactionBuffers {
            a_index: vec![0; block_size],
            a_values: vec![0; block_size],
            b_index: vec![0; block_size],
            b_values: vec![0; block_size],
            output_values: vec![0; block_size],
            output_index: vec![0; block_size],
            tables_a: Vec::with_capacity(1),
            tables_b: Vec::with_capacity(tables_b_max),
            outputs: Vec::with_capacity(outputs_max),
        }
    }

    /// The tables of level B the next job merges into, to fill before `Compaction::new`, and,
    /// after `Compaction::finish`, those it merged into.
    pub fn tables_b(&self) -> &[TableInfo] {
        &self.tables_b
    }

    /// Sets the tables of level B for the next job (no allocation: at most the capacity the
    /// buffers were made with).
    pub fn tables_b_set<'a>(&mut self, tables: impl Iterator<Item = &'a TableInfo>) {
        self.tables_b.clear();
        for table in tables {
            assert!(
                self.tables_b.len() < self.tables_b.capacity(),
                "more tables than fit"
            );
            self.tables_b.push(*table);
        }
    }

    /// The job's new tables of level B, in key order (after `Compaction::finish`).
    pub fn outputs(&self) -> &[TableInfo] {
        &self.outputs
    }
}

pub struct Compaction {
    layout: TableLayout,
    tree: u16,
    cluster: u128,
    drop_tombstones: bool,
    tombstone: fn(&[u8]) -> bool,
    a: TablesInput,
    b: TablesInput,
    /// The input whose read is outstanding.
    reading: Option<Side>,
    builder: Option<TableBuilder>,
    output_values: Vec<u8>,
    output_index: Vec<u8>,
    written: Option<Written>,
    reservation: Option<Reservation>,
    outputs: Vec<TableInfo>,
    /// Both inputs are merged and every output block handed out.
    done: bool,
}

impl Compaction {
    /// Merges `a` (a table of level A, or the immutable table) into the tables of level B it
    /// overlaps (`buffers.tables_b_set`, in key order). `drop_tombstones` when level B is the deepest that
    /// could hold the keys. If the grid has not the blocks the output may need, `a` comes back
    /// (an immutable table's values and buffer are not lost).
    ///
    /// Works in `buffers` (allocates nothing), which `finish` hands back. A job runs to
    /// `Done`: its reservation is forfeited only then.
    // The error hands back what the caller lent (the source and the buffers) when the grid is
    // full, a rare path: boxing it would allocate on every call.
    #[allow(clippy::too_many_arguments, clippy::result_large_err)]
    pub fn new(
        layout: TableLayout,
        cluster: u128,
        tree: u16,
        tombstone: fn(&[u8]) -> bool,
        drop_tombstones: bool,
        a: Source,
        free_set: &mut FreeSet,
        buffers: CompactionBuffers,
    ) -> Result<Compaction, (Source, CompactionBuffers)> {
        let tables_b = &buffers.tables_b[..];
        let outputs_max = Self::output_tables_max(&layout, &a, tables_b);
        assert!(
            outputs_max as usize <= buffers.outputs.capacity(),
            "more output tables than the buffers hold"
        );
        let blocks_max = Self::output_blocks_max(&layout, &a, tables_b);
        let Some(reservation) = free_set.reserve(blocks_max) else {
            return Err((a, buffers));
        };
        let CompactionBuffers {
            a_index,
            a_values,
            b_index,
            b_values,
            output_values,
            output_index,
            mut tables_a,
            tables_b,
            mut outputs,
        } = buffers;
        tables_a.clear();
        assert!(a_values.len() >= layout.block_size && output_values.len() >= layout.block_size);
        let a = match a {
            Source::Table(table) => {
                tables_a.push(table);
                TablesInput::new(tables_a, a_index, a_values)
            }
            Source::Memory { values, count } => {
                assert!(values.len() >= count * layout.value_size);
                TablesInput::memory(values, count, tables_a, a_index, a_values)
            }
        };
        outputs.clear();
        Ok(Compaction {
            layout,
            tree,
            cluster,
            drop_tombstones,
            tombstone,
            a,
            b: TablesInput::new(tables_b, b_index, b_values),
            reading: None,
            builder: None,
            output_values,
            output_index,
            written: None,
            reservation: Some(reservation),
            outputs,
            done: false,
        })
    }

    /// Once `Done`: the buffers back, holding the tables merged into and the outputs, and the
    /// immutable table's buffer (a `Memory` source) for the next bar.
    pub fn finish(self) -> (CompactionBuffers, Option<Vec<u8>>) {
        assert!(self.done);
        let (tables_a, a_index, a_values, memory) = self.a.into_buffers();
        let (tables_b, b_index, b_values, _) = self.b.into_buffers();
        let buffers = CompactionBuffers {
            a_index,
            a_values,
            b_index,
            b_values,
            output_values: self.output_values,
            output_index: self.output_index,
            tables_a,
            tables_b,
            outputs: self.outputs,
        };
        (buffers, memory)
    }

    /// The output holds no more values than the inputs. So it needs no more value blocks than
    /// the inputs' values fill, plus one partial block per output table, and no more tables than
    /// the inputs' values fill whole tables (each input table counts one; memory as many as its
    /// values fill), each with an index block.
    pub fn output_blocks_max(layout: &TableLayout, a: &Source, b: &[TableInfo]) -> u64 {
        let per_block = layout.values_per_block() as u64;
        let value_blocks: u64 = Self::input_counts(a, b)
            .map(|c| c.div_ceil(per_block))
            .sum();
        value_blocks + 2 * Self::output_tables_max(layout, a, b)
    }

    /// Output tables: no more than the inputs' values fill whole tables.
    fn output_tables_max(layout: &TableLayout, a: &Source, b: &[TableInfo]) -> u64 {
        let per_table = layout.values_max() as u64;
        Self::input_counts(a, b)
            .map(|c| c.div_ceil(per_table).max(1))
            .sum()
    }

    fn input_counts<'a>(a: &Source, b: &'a [TableInfo]) -> impl Iterator<Item = u64> + 'a {
        let a_count = match a {
            Source::Table(t) => t.value_count,
            Source::Memory { count, .. } => *count as u64,
        };
        std::iter::once(a_count).chain(b.iter().map(|t| t.value_count))
    }

    /// The immutable table's values while the job holds them (a `Memory` source): the tree's
    /// lookups read them until the job's outputs are in the manifest.
    pub fn memory_values(&self) -> Option<&[u8]> {
        (self.a.values_offset == 0).then_some(&self.a.values[..])
    }

    /// New tables of level B, in key order (complete once `Done`).
    pub fn outputs(&self) -> &[TableInfo] {
        &self.outputs
    }

    /// The block to write, after a `Write` step.
    pub fn block_written(&self) -> &[u8] {
        match self.written.expect("a block was sealed") {
            Written::Value => &self.output_values,
            Written::Index => &self.output_index,
        }
    }

    /// The block a `Read` step named, verified by the caller.
    pub fn on_read(&mut self, block: &[u8]) {
        let layout = self.layout;
        match self.reading.take().expect("a read is outstanding") {
            Side::A => self.a.on_read(&layout, block),
            Side::B => self.b.on_read(&layout, block),
        }
    }

    /// Advances until a block must be read or written, or the compaction is done. Every input
    /// block read is released in `free_set`; the reservation is forfeited when done.
    pub fn step(&mut self, free_set: &mut FreeSet) -> CompactionStep {
        assert!(self.reading.is_none(), "a read is outstanding");
        self.written = None;
        if self.done {
            return CompactionStep::Done;
        }
        if self
            .builder
            .as_ref()
            .is_some_and(|b| b.full() && b.block_empty())
        {
            return self.table_finish(free_set);
        }
        let layout = self.layout;
        let rules = MergeRules {
            value_size: layout.value_size,
            key_size: layout.key_size,
            tombstone: &self.tombstone,
            drop_tombstones: self.drop_tombstones,
        };
        let (tree, cluster) = (self.tree, self.cluster);
        let builder = self
            .builder
            .get_or_insert_with(|| TableBuilder::new(layout, cluster, tree));
        let output_values = &mut self.output_values;
        let mut output = |value: &[u8]| {
            if builder.block_full() {
                return false;
            }
            builder.append(output_values, value);
            true
        };
        let size = layout.value_size;
        let a_values = &self.a.values[self.a.values_offset..][..self.a.merge.count * size];
        let b_values = &self.b.values[HEADER_SIZE..HEADER_SIZE + self.b.merge.count * size];
        let stop = merge(
            &rules,
            a_values,
            &mut self.a.merge,
            b_values,
            &mut self.b.merge,
            &mut output,
        );
        match stop {
            MergeStop::NeedA => self.input_next(Side::A, free_set),
            MergeStop::NeedB => self.input_next(Side::B, free_set),
            MergeStop::OutputFull => self.block_seal(free_set),
            MergeStop::Done => self.output_finish(free_set),
        }
    }

    fn input_next(&mut self, side: Side, free_set: &mut FreeSet) -> CompactionStep {
        let layout = self.layout;
        let input = match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        };
        match input.next_read(&layout) {
            Some(reference) => {
                free_set.release(reference.address);
                self.reading = Some(side);
                CompactionStep::Read(reference)
            }
            None => {
                input.merge.end();
                self.step(free_set)
            }
        }
    }

    fn acquire(&mut self, free_set: &mut FreeSet) -> u64 {
        let reservation = self.reservation.as_ref().expect("reserved until done");
        free_set
            .acquire(reservation)
            .expect("the reservation covers the output")
    }

    fn block_seal(&mut self, free_set: &mut FreeSet) -> CompactionStep {
        let address = self.acquire(free_set);
        let builder = self.builder.as_mut().expect("values were appended");
        builder.block_seal(&mut self.output_values, &mut self.output_index, address);
        self.written = Some(Written::Value);
        CompactionStep::Write(address)
    }

    fn table_finish(&mut self, free_set: &mut FreeSet) -> CompactionStep {
        let address = self.acquire(free_set);
        let builder = self.builder.take().expect("a table is being built");
        self.outputs
            .push(builder.finish(&mut self.output_index, address));
        self.written = Some(Written::Index);
        CompactionStep::Write(address)
    }

    /// Both inputs are merged: seal what the last table holds, then finish it.
    fn output_finish(&mut self, free_set: &mut FreeSet) -> CompactionStep {
        match &self.builder {
            Some(b) if !b.block_empty() => self.block_seal(free_set),
            Some(b) if b.value_count() > 0 => self.table_finish(free_set),
            _ => {
                self.builder = None;
                free_set.forfeit(self.reservation.take().expect("reserved until done"));
                self.done = true;
                CompactionStep::Done
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::block_verify;
    use crate::lsm::test_support::{is_tombstone, value, Disk, CLUSTER};
    use std::collections::{BTreeMap, BTreeSet};

    const BLOCK_SIZE: usize = 4096;

    /// 64-byte values (60 a block), 3 value blocks a table at most (180 values).
    fn layout() -> TableLayout {
        TableLayout::new(BLOCK_SIZE, 64, 8, 3)
    }

    impl Disk {
        /// Runs a compaction to its end; returns its outputs and the addresses it read.
        fn compact(
            &mut self,
            a: TableInfo,
            b: &[TableInfo],
            drop_tombstones: bool,
        ) -> (Vec<TableInfo>, BTreeSet<u64>) {
            let (outputs, read, _) = self.compact_source(Source::Table(a), b, drop_tombstones);
            (outputs, read)
        }

        fn compact_source(
            &mut self,
            a: Source,
            b: &[TableInfo],
            drop_tombstones: bool,
        ) -> (Vec<TableInfo>, BTreeSet<u64>, Option<Vec<u8>>) {
            let mut buffers = CompactionBuffers::new(BLOCK_SIZE, b.len(), 64);
            buffers.tables_b_set(b.iter());
            let mut job = Compaction::new(
                layout(),
                CLUSTER,
                1,
                is_tombstone,
                drop_tombstones,
                a,
                &mut self.free_set,
                buffers,
            )
            .ok()
            .unwrap();
            let mut read = BTreeSet::new();
            loop {
                match job.step(&mut self.free_set) {
                    CompactionStep::Read(reference) => {
                        let block = &self.blocks[&reference.address];
                        block_verify(block, CLUSTER, reference, BLOCK_SIZE).unwrap();
                        assert!(read.insert(reference.address), "block read twice");
                        job.on_read(block);
                    }
                    CompactionStep::Write(address) => {
                        assert!(!self.free_set.is_free(address));
                        let block = job.block_written().to_vec();
                        assert_eq!(Header::read_from(&block).op, address);
                        self.blocks.insert(address, block);
                    }
                    CompactionStep::Done => {
                        let outputs = job.outputs().to_vec();
                        let (buffers, memory) = job.finish();
                        assert_eq!(buffers.outputs(), &outputs[..]);
                        assert_eq!(buffers.tables_b(), b, "the tables merged into, kept");
                        return (outputs, read, memory);
                    }
                }
            }
        }
    }

    /// The merge of `newer` over `older` by key, tombstones dropped or kept.
    fn model(newer: &[[u8; 64]], older: &[[u8; 64]], drop_tombstones: bool) -> Vec<[u8; 64]> {
        let mut merged = BTreeMap::new();
        for v in older.iter().chain(newer) {
            merged.insert(v[..8].to_vec(), *v);
        }
        merged
            .into_values()
            .filter(|v| !(drop_tombstones && is_tombstone(v)))
            .collect()
    }

    #[test]
    fn compaction_merges_a_table_into_the_next_level() {
        let mut disk = Disk::new();
        // Level B: keys 0..400 (three tables); level A: every third key rewritten, some deleted.
        let older: Vec<_> = (0..400).map(|k| value(k, 0, false)).collect();
        let newer: Vec<_> = (100..340)
            .step_by(3)
            .map(|k| value(k, 1, k % 2 == 0))
            .collect();
        let b = disk.tables(layout(), &older);
        assert_eq!(b.len(), 3);
        let a = disk.tables(layout(), &newer);
        assert_eq!(a.len(), 1);
        let inputs: BTreeSet<u64> = disk.blocks.keys().copied().collect();
        for drop_tombstones in [false, true] {
            let mut disk = Disk {
                blocks: disk.blocks.clone(),
                free_set: disk.free_set.clone(),
            };
            let (outputs, read) = disk.compact(a[0], &b, drop_tombstones);
            // Every input block read once and released; no output block reuses one.
            assert_eq!(read, inputs);
            assert!(inputs
                .iter()
                .all(|&address| disk.free_set.is_released(address)));
            let expected = model(&newer, &older, drop_tombstones);
            assert_eq!(disk.read(layout(), &outputs), expected);
            // Outputs: full tables but the last, disjoint and in key order.
            let layout = layout();
            for pair in outputs.windows(2) {
                assert_eq!(pair[0].value_count, layout.values_max() as u64);
                assert!(pair[0].key_max(&layout) < pair[1].key_min(&layout));
            }
            let total: u64 = outputs.iter().map(|t| t.value_count).sum();
            assert_eq!(total, expected.len() as u64);
        }
    }

    #[test]
    fn compaction_of_only_tombstones_into_the_last_level_leaves_nothing() {
        let mut disk = Disk::new();
        let older: Vec<_> = (0..50).map(|k| value(k, 0, false)).collect();
        let newer: Vec<_> = (0..50).map(|k| value(k, 1, true)).collect();
        let b = disk.tables(layout(), &older);
        let a = disk.tables(layout(), &newer);
        let acquired = disk.free_set.count_acquired();
        let (outputs, _) = disk.compact(a[0], &b, true);
        assert!(outputs.is_empty());
        // The reservation was forfeited: nothing new acquired.
        assert_eq!(disk.free_set.count_acquired(), acquired);
    }

    #[test]
    fn compaction_without_overlap_rewrites_the_table() {
        let mut disk = Disk::new();
        let newer: Vec<_> = (0..70).map(|k| value(k, 1, false)).collect();
        let a = disk.tables(layout(), &newer);
        let (outputs, read) = disk.compact(a[0], &[], false);
        assert_eq!(read.len(), 3);
        assert_eq!(disk.read(layout(), &outputs), newer);
    }

    /// Random level contents against the model: the output is the merge, its blocks fit the
    /// reservation (an overrun panics), and every input block is released.
    #[test]
    fn compaction_matches_a_model() {
        use rand_chacha::rand_core::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
        for _ in 0..200 {
            let mut disk = Disk::new();
            let sorted = |rng: &mut rand_chacha::ChaCha8Rng, count: u64, version: u8| {
                let keys: BTreeSet<u64> = (0..count).map(|_| rng.next_u64() % 1_000).collect();
                let tombstones = rng.next_u64() % 3;
                keys.into_iter()
                    .map(|k| value(k, version, tombstones > 0 && k % (tombstones + 1) == 0))
                    .collect::<Vec<_>>()
            };
            let count = rng.next_u64() % 700;
            let older = sorted(&mut rng, count, 0);
            let count = 1 + rng.next_u64() % 179;
            let newer = sorted(&mut rng, count, 1);
            let b = disk.tables(layout(), &older);
            let a = disk.tables(layout(), &newer);
            assert_eq!(a.len(), 1);
            let layout = layout();
            let (a_min, a_max) = (a[0].key_min(&layout), a[0].key_max(&layout));
            let overlapping: Vec<TableInfo> = b
                .iter()
                .filter(|t| t.key_min(&layout) <= a_max && a_min <= t.key_max(&layout))
                .copied()
                .collect();
            let older_overlapping = disk.read(layout, &overlapping);
            let drop_tombstones = rng.next_u64() % 2 == 0;
            let (outputs, read) = disk.compact(a[0], &overlapping, drop_tombstones);
            assert_eq!(
                disk.read(layout, &outputs),
                model(&newer, &older_overlapping, drop_tombstones)
            );
            assert!(read
                .iter()
                .all(|&address| disk.free_set.is_released(address)));
        }
    }

    /// A bar's mutable table flushed into level 0, over tables already there: more values than
    /// one table holds, so several output tables; the buffer comes back for the next bar.
    #[test]
    fn compaction_flushes_the_immutable_table() {
        use crate::lsm::table_memory::TableMemory;
        let layout = layout();
        let mut disk = Disk::new();
        let older: Vec<_> = (0..300).map(|k| value(3 * k, 0, false)).collect();
        let b = disk.tables(layout, &older);
        let mut memory = TableMemory::new(layout, 1_000, 8);
        let mut newer = Vec::new();
        for run in 0..4u64 {
            for k in 0..100u64 {
                let v = value(2 * k + run, 1 + run as u8, false);
                memory.put(&v);
                newer.push(v);
            }
            memory.run_seal();
        }
        let mut buffer = vec![0u8; 1_000 * 64];
        let count = memory.flush(&mut buffer);
        let immutable: Vec<[u8; 64]> = buffer[..count * 64]
            .chunks(64)
            .map(|v| v.try_into().unwrap())
            .collect();
        assert!(count > layout.values_max(), "more than one table's worth");
        let (outputs, read, returned) = disk.compact_source(
            Source::Memory {
                values: buffer,
                count,
            },
            &b,
            false,
        );
        assert_eq!(
            disk.read(layout, &outputs),
            model(&immutable, &older, false)
        );
        assert!(outputs.len() > 1);
        // Only level B's blocks were read; the buffer is handed back whole.
        assert_eq!(read.len(), b.len() + older.len().div_ceil(60));
        assert_eq!(returned.map(|r| r.len()), Some(1_000 * 64));
        // The model of the newer values is the flush: the latest put of each key.
        let mut latest = std::collections::BTreeMap::new();
        for v in &newer {
            latest.insert(v[..8].to_vec(), *v);
        }
        assert_eq!(immutable, latest.into_values().collect::<Vec<_>>());
    }

    /// More output tables than inputs (a big flush into an empty level): the outputs' capacity,
    /// set at the start, holds them all; and a grid too small hands the values back.
    #[test]
    fn compaction_of_a_big_flush_needs_no_growth_and_a_short_grid_loses_nothing() {
        let layout = layout();
        let count = 3 * layout.values_max() + 1;
        let mut values = vec![0u8; count * 64];
        for (k, chunk) in values.chunks_mut(64).enumerate() {
            chunk.copy_from_slice(&value(k as u64, 1, false));
        }
        let mut tiny = FreeSet::new(8);
        let source = Source::Memory {
            values: values.clone(),
            count,
        };
        let back = Compaction::new(
            layout,
            CLUSTER,
            1,
            is_tombstone,
            false,
            source,
            &mut tiny,
            CompactionBuffers::new(BLOCK_SIZE, 0, 4),
        );
        match back {
            Err((
                Source::Memory {
                    values: v,
                    count: c,
                },
                _,
            )) => assert_eq!((v, c), (values.clone(), count)),
            _ => panic!("the source must come back"),
        }
        let mut free_set = FreeSet::new(10_000);
        let source = Source::Memory { values, count };
        let mut job = Compaction::new(
            layout,
            CLUSTER,
            1,
            is_tombstone,
            false,
            source,
            &mut free_set,
            CompactionBuffers::new(BLOCK_SIZE, 0, 4),
        )
        .ok()
        .unwrap();
        let capacity = job.outputs.capacity();
        while job.step(&mut free_set) != CompactionStep::Done {}
        assert_eq!(job.outputs().len(), 4);
        assert_eq!(
            job.outputs.capacity(),
            capacity,
            "outputs grew inside step()"
        );
    }
}
