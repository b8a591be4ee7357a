//! One LSM tree (docs/storage.md, "The tree"): a mutable table in memory, the immutable table of
//! the bar before, and levels of tables on the grid, with compaction planned per half bar and
//! paced over its ops. Sans I/O, like the parts it drives: the caller performs each block read or
//! write the tree names and steps again.
//!
//! Time is counted in ops, grouped in bars of `bar_ops` ops (an even number). Within a bar:
//!
//! - puts go to the mutable table (one table's worth of values at most); each op's puts are
//!   sealed as a run at its end (`op_end`);
//! - each op starts with `beat_start`, then calls `compact_step` until its budget of block I/O is
//!   spent: the jobs planned for the half bar get an even share of their bound in each of its
//!   ops, so they are done by the half's last op and no op waits behind a whole merge;
//! - at the middle of the bar and at its end (`bar_end`) the half's results enter the manifest.
//!
//! The bar's first op turns the mutable table into the immutable one and plans the first half:
//! for each odd level `b`, if level `b - 1` holds more than `growth_factor^b` tables, its table
//! that overlaps the fewest tables of level `b` (TigerBeetle's policy) is merged into them. The second half does the same for the even levels, and merges the
//! immutable table into the level-0 tables it overlaps. So no level is read by two jobs of one
//! half (an input block is released as it is read, and a block is released once), and level 0
//! drains into level 1 before the immutable table merges into it. A table that overlaps nothing
//! below moves down with no I/O. Each job reserves its output blocks when planned, in level
//! order, so the addresses every replica's jobs write do not depend on how their I/O interleaves.
//!
//! At a checkpoint (between bars) `checkpoint_start` merges the bar's puts into level 0 at
//! once, so the manifest alone describes the tree: a restart rebuilds it from the manifest log
//! and replays the ops after the checkpoint, and, every choice being made from the manifest,
//! writes exactly the blocks it would have written had it not stopped.
//!
//! Until a half ends, lookups see the manifest as it was when the half began: the inputs of
//! running jobs are released, not freed (the free set frees a block only once a later checkpoint
//! is durable), so they stay readable. A lookup asks the mutable table, then the immutable one,
//! then the levels, shallowest first (`get_memory`, then `lookup::LevelsLookup` over `levels()`).

use super::compaction::{Compaction, CompactionBuffers, CompactionStep, Source};
use super::manifest_level::ManifestLevel;
use super::manifest_log::{ManifestChange, ManifestEvent};
use super::table::{values_search, TableInfo, TableLayout, KEY_SIZE_MAX};
use super::table_memory::TableMemory;
use crate::grid::free_set::FreeSet;
use crate::grid::BlockReference;

#[derive(Clone, Copy, Debug)]
pub struct TreeOptions {
    pub layout: TableLayout,
    pub cluster: u128,
    /// The tree's id, written into each of its blocks.
    pub tree: u16,
    pub tombstone: fn(&[u8]) -> bool,
    /// Levels on the grid; the deepest does not compact, and bounds the tree's size.
    pub levels: usize,
    /// Level `i` compacts into level `i + 1` while it holds more than `growth_factor^(i+1)`
    /// tables.
    pub growth_factor: usize,
    /// Ops per bar (even: two halves): the mutable table takes one bar's puts (at most one
    /// table's worth).
    pub bar_ops: u64,
}

impl TreeOptions {
    /// The tables level `level` holds before it compacts into the next (for the deepest, the
    /// most it holds).
    pub fn level_tables_limit(&self, level: usize) -> usize {
        self.growth_factor.pow(level as u32 + 1)
    }

    /// The most tables of level B one job merges into. The immutable table may overlap all of
    /// level 0. A level's job takes its table that overlaps the fewest below: with `a` tables
    /// over level A's limit `g^(i+1)` and at most `g^(i+2) + g + 2` below, whose overlaps sum
    /// to at most `a + b - 1` (a table below that spans k of them holds k - 1 of the gaps
    /// between them, and no gap is held twice), the fewest is at most `1 + (b - 1)/a`, at most
    /// `g + 1`; `g + 3` leaves slack.
    fn tables_b_max(&self) -> usize {
        self.level_tables_max(0).max(self.growth_factor + 3)
    }

    /// The most tables level `level` can hold: its limit, plus the net table a bar's job into it
    /// may add (its output tables are at most its input tables plus one) before its own job
    /// takes one out, with room to spare (asserted by `ManifestLevel::insert`).
    fn level_tables_max(&self, level: usize) -> usize {
        self.level_tables_limit(level) + self.growth_factor + 2
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeStep {
    /// Read this block, verify it, and hand it to `on_read` before stepping again.
    Read(BlockReference),
    /// Write `block_written()` at this address before stepping again.
    Write(u64),
    /// This op's share of the bar's compaction is done.
    BeatDone,
    /// Every job of the half bar is done.
    BarDone,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TreeError {
    /// The deepest level is full: the tree holds all it can until it is configured larger.
    Full { tables: usize },
    /// The grid has too few free blocks for this bar's compactions. Fatal for the tree as it
    /// stands: jobs planned before the one that failed keep their reservations (the replica
    /// must stop taking work before the grid is this full).
    GridFull,
}

/// Counters for logs, metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    pub bars: u64,
    pub jobs_merged: u64,
    pub tables_moved: u64,
    pub blocks_read: u64,
    pub blocks_written: u64,
    /// Block I/Os a bar's last op did beyond its budget (zero while the plan's bound holds).
    pub steps_over_budget: u64,
}

// Jobs live in a vector sized at start: the large variant costs no allocation.
#[allow(clippy::large_enum_variant)]
enum JobWork {
    /// The input table moves down as it is (nothing below overlaps it).
    Move,
    Merge(Compaction),
    /// Merged: the buffers hold the tables merged into and the outputs, until the half ends.
    Merged(CompactionBuffers),
    /// Moved, or merged with its results applied.
    Done,
}

struct Job {
    /// The level the job writes into; the input comes from the level above, or from memory.
    level_b: usize,
    /// The input table of level `level_b - 1` (None: the immutable table).
    table_a: Option<TableInfo>,
    work: JobWork,
}

pub struct Tree {
    options: TreeOptions,
    mutable: TableMemory,
    /// The immutable table's buffer while no job holds it.
    immutable: Option<Vec<u8>>,
    /// Values of the immutable table (sorted, unique), readable until `bar_end`.
    immutable_count: usize,
    levels: Vec<ManifestLevel>,
    jobs: Vec<Job>,
    /// `jobs`' twin: swapped with it to apply a half's results without allocating.
    jobs_spare: Vec<Job>,
    /// One set of compaction buffers per job a half can run, made at start.
    pool: Vec<CompactionBuffers>,
    /// The first job not done.
    job_current: usize,
    bar_open: bool,
    /// Between `checkpoint_start` and `checkpoint_end`.
    checkpointing: bool,
    /// Changes to the levels since the owner last took them (`manifest_changes_take`), for the
    /// manifest log.
    changes: Vec<ManifestEvent>,
    beat_budget: u64,
    beat_left: u64,
    beat_last: bool,
    stats: TreeStats,
}

impl Tree {
    pub fn new(options: TreeOptions) -> Tree {
        let layout = options.layout;
        assert!(options.levels >= 2);
        assert!(options.growth_factor >= 2);
        assert!(options.bar_ops >= 2 && options.bar_ops % 2 == 0);
        let values_max = layout.values_max();
        // The first half runs a job into each odd level, the second into each even one above
        // 0 and the immutable table's: this many at most.
        let jobs_max = (options.levels / 2).max((options.levels - 1) / 2 + 1);
        let tables_b_max = options.tables_b_max();
        Tree {
            options,
            mutable: TableMemory::new(layout, values_max, options.bar_ops as usize),
            immutable: Some(vec![0; values_max * layout.value_size]),
            immutable_count: 0,
            levels: (0..options.levels)
                .map(|level| ManifestLevel::new(layout, options.level_tables_max(level)))
                .collect(),
            jobs: Vec::with_capacity(jobs_max),
            jobs_spare: Vec::with_capacity(jobs_max),
            pool: (0..jobs_max)
                .map(|_| CompactionBuffers::new(layout.block_size, tables_b_max, tables_b_max + 1))
                .collect(),
            job_current: 0,
            bar_open: false,
            checkpointing: false,
            changes: Vec::new(),
            beat_budget: 0,
            beat_left: 0,
            beat_last: false,
            stats: TreeStats::default(),
        }
    }

    pub fn options(&self) -> &TreeOptions {
        &self.options
    }

    pub fn stats(&self) -> TreeStats {
        self.stats
    }

    pub fn levels(&self) -> &[ManifestLevel] {
        &self.levels
    }

    /// Values that can still be put in this bar.
    pub fn room(&self) -> usize {
        self.mutable.room()
    }

    pub fn put(&mut self, value: &[u8]) {
        assert!(self.bar_open && !self.checkpointing, "a put outside a bar");
        self.mutable.put(value);
    }

    /// The op's puts are done: they become visible to lookups.
    pub fn op_end(&mut self) {
        self.mutable.run_seal();
    }

    /// What memory says of `key`: `Some(Some(value))` the newest value, `Some(None)` deleted
    /// (a tombstone), `None` not in memory (look in the levels).
    pub fn get_memory(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let layout = &self.options.layout;
        let found = self.mutable.get(key).or_else(|| {
            let values = match &self.immutable {
                Some(values) => &values[..],
                None => self.immutable_job_values(),
            };
            values_search(
                layout,
                &values[..self.immutable_count * layout.value_size],
                key,
            )
        })?;
        Some((!(self.options.tombstone)(found)).then_some(found))
    }

    fn immutable_job_values(&self) -> &[u8] {
        self.jobs
            .iter()
            .find_map(|job| match &job.work {
                JobWork::Merge(compaction) if job.table_a.is_none() => compaction.memory_values(),
                _ => None,
            })
            .expect("the immutable table is held by its job")
    }

    /// Starts op `beat` (`0..bar_ops`) of a bar and its share of the bar's compaction. Beat 0
    /// turns the mutable table into the immutable one (every op before must have ended) and
    /// plans the first half's jobs; the middle beat applies their results and plans the second
    /// half's. The last beat of each half finishes whatever its jobs have left.
    pub fn beat_start(&mut self, beat: u64, free_set: &mut FreeSet) -> Result<(), TreeError> {
        assert!(!self.checkpointing);
        let half_ops = self.options.bar_ops / 2;
        assert!(beat < self.options.bar_ops);
        if beat == 0 {
            self.bar_start(free_set)?;
        } else if beat == half_ops {
            self.half_end();
            self.half_start(1, free_set)?;
        }
        assert!(self.bar_open);
        self.beat_left = self.beat_budget;
        self.beat_last = beat == half_ops - 1 || beat == self.options.bar_ops - 1;
        Ok(())
    }

    fn bar_start(&mut self, free_set: &mut FreeSet) -> Result<(), TreeError> {
        let deepest = self.options.levels - 1;
        let deepest_tables = self.levels[deepest].table_count();
        if deepest_tables > self.options.level_tables_limit(deepest) {
            return Err(TreeError::Full {
                tables: deepest_tables,
            });
        }
        self.memory_flush_open();
        self.stats.bars += 1;
        self.half_start(0, free_set)
    }

    /// Opens a bar (or a checkpoint's flush): the mutable table's values, sorted, become the
    /// immutable table.
    fn memory_flush_open(&mut self) {
        assert!(!self.bar_open);
        assert!(self.jobs.is_empty());
        assert_eq!(self.immutable_count, 0);
        let mut buffer = self.immutable.take().expect("the immutable buffer is free");
        self.immutable_count = self.mutable.flush(&mut buffer);
        self.immutable = Some(buffer);
        self.bar_open = true;
    }

    /// Plans a half bar's jobs and reserves their output blocks, in level order. The first half
    /// compacts into the odd levels, the second into the even ones (the immutable table into
    /// level 0 among them): no level is read by two jobs of one half, and level 0 drains into
    /// level 1 before the immutable table merges into it.
    fn half_start(&mut self, half: u64, free_set: &mut FreeSet) -> Result<(), TreeError> {
        assert!(self.jobs.is_empty());
        let mut work = 0;
        if half == 1 && self.immutable_count > 0 {
            work += self.job_add_immutable(free_set)?;
        }
        let first = if half == 0 { 1 } else { 2 };
        for level_b in (first..self.options.levels).step_by(2) {
            let level_a = level_b - 1;
            if self.levels[level_a].table_count() <= self.options.level_tables_limit(level_a) {
                continue;
            }
            let table_a = self.pick(level_a);
            let range = (table_a.key_min, table_a.key_max);
            work += self.job_add(
                free_set,
                level_b,
                Some(table_a),
                Source::Table(table_a),
                range,
            )?;
        }
        let half_ops = self.options.bar_ops / 2;
        self.beat_budget = work.div_ceil(half_ops).max(1);
        self.job_current = 0;
        Ok(())
    }

    /// The immutable table's job into level 0.
    fn job_add_immutable(&mut self, free_set: &mut FreeSet) -> Result<u64, TreeError> {
        let range = self.immutable_range();
        let values = self.immutable.take().expect("the immutable buffer is free");
        let source = Source::Memory {
            values,
            count: self.immutable_count,
        };
        self.job_add(free_set, 0, None, source, range)
    }

    /// Adds the job into `level_b` of `source`, whose keys span `range`, and returns a bound on
    /// its block I/O. A merge takes a set of buffers from the pool.
    fn job_add(
        &mut self,
        free_set: &mut FreeSet,
        level_b: usize,
        table_a: Option<TableInfo>,
        source: Source,
        range: ([u8; KEY_SIZE_MAX], [u8; KEY_SIZE_MAX]),
    ) -> Result<u64, TreeError> {
        let layout = self.options.layout;
        let (key_min, key_max) = (&range.0[..layout.key_size], &range.1[..layout.key_size]);
        let level = &self.levels[level_b];
        if table_a.is_some() && level.overlapping(key_min, key_max).next().is_none() {
            self.jobs.push(Job {
                level_b,
                table_a,
                work: JobWork::Move,
            });
            return Ok(0);
        }
        let mut buffers = self.pool.pop().expect("a set of buffers per job of a half");
        buffers.tables_b_set(level.overlapping(key_min, key_max));
        let tables_b = buffers.tables_b();
        let reads: u64 = table_a
            .iter()
            .chain(tables_b)
            .map(|t| table_blocks(&layout, t))
            .sum();
        let writes = Compaction::output_blocks_max(&layout, &source, tables_b);
        // Tombstones can go once nothing older could lie below the output: no job of this half
        // writes deeper then either (the level below is empty, so it has no job).
        let deeper_empty = self.levels[level_b + 1..]
            .iter()
            .all(|level| level.table_count() == 0);
        let compaction = Compaction::new(
            layout,
            self.options.cluster,
            self.options.tree,
            self.options.tombstone,
            deeper_empty,
            source,
            free_set,
            buffers,
        );
        match compaction {
            Ok(compaction) => {
                self.jobs.push(Job {
                    level_b,
                    table_a,
                    work: JobWork::Merge(compaction),
                });
                Ok(reads + writes)
            }
            Err((source, buffers)) => {
                self.pool.push(buffers);
                if let Source::Memory { values, .. } = source {
                    self.immutable = Some(values);
                }
                Err(TreeError::GridFull)
            }
        }
    }

    /// The table of `level` that overlaps the fewest tables of the level below (the first in
    /// key order among equals): the least work per table moved down, and a choice made from the
    /// manifest alone, so a replica that restarted from a checkpoint makes the same one.
    fn pick(&self, level: usize) -> TableInfo {
        let layout = self.options.layout;
        let below = &self.levels[level + 1];
        let mut best: Option<(usize, TableInfo)> = None;
        for table in self.levels[level].iter() {
            let overlap = below
                .overlapping(table.key_min(&layout), table.key_max(&layout))
                .count();
            if best.is_none_or(|(fewest, _)| overlap < fewest) {
                best = Some((overlap, *table));
                if overlap == 0 {
                    break; // A move: nothing does less.
                }
            }
        }
        best.expect("the level holds tables").1
    }

    fn immutable_range(&self) -> ([u8; KEY_SIZE_MAX], [u8; KEY_SIZE_MAX]) {
        let layout = self.options.layout;
        let values = self
            .immutable
            .as_ref()
            .expect("the immutable buffer is free");
        let size = layout.value_size;
        let last = (self.immutable_count - 1) * size;
        let mut key_min = [0; KEY_SIZE_MAX];
        let mut key_max = [0; KEY_SIZE_MAX];
        key_min[..layout.key_size].copy_from_slice(&values[..layout.key_size]);
        key_max[..layout.key_size].copy_from_slice(&values[last..last + layout.key_size]);
        (key_min, key_max)
    }

    /// Advances the bar's jobs until a block must be read or written, the beat's budget is
    /// spent, or every job is done.
    pub fn compact_step(&mut self, free_set: &mut FreeSet) -> TreeStep {
        assert!(self.bar_open);
        while let Some(job) = self.jobs.get_mut(self.job_current) {
            let step = match &mut job.work {
                JobWork::Move => None,
                JobWork::Merged(_) | JobWork::Done => unreachable!("the current job is not done"),
                JobWork::Merge(compaction) => {
                    if self.beat_left == 0 && !self.beat_last {
                        return TreeStep::BeatDone;
                    }
                    Some(compaction.step(free_set))
                }
            };
            let step = match step {
                None | Some(CompactionStep::Done) => {
                    self.job_finish();
                    continue;
                }
                Some(CompactionStep::Read(reference)) => {
                    self.stats.blocks_read += 1;
                    TreeStep::Read(reference)
                }
                Some(CompactionStep::Write(address)) => {
                    self.stats.blocks_written += 1;
                    TreeStep::Write(address)
                }
            };
            if self.checkpointing {
                // A checkpoint's flush has no budget: it runs to its end.
            } else if self.beat_left == 0 {
                self.stats.steps_over_budget += 1;
            } else {
                self.beat_left -= 1;
            }
            return step;
        }
        TreeStep::BarDone
    }

    /// The current job is done: its outputs are kept for `bar_end`, the immutable buffer taken
    /// back.
    fn job_finish(&mut self) {
        let job = &mut self.jobs[self.job_current];
        match std::mem::replace(&mut job.work, JobWork::Done) {
            JobWork::Move => {
                self.stats.tables_moved += 1;
                job.work = JobWork::Move;
            }
            JobWork::Merge(compaction) => {
                self.stats.jobs_merged += 1;
                let (buffers, memory) = compaction.finish();
                assert_eq!(memory.is_some(), job.table_a.is_none());
                if let Some(buffer) = memory {
                    assert!(self.immutable.is_none());
                    self.immutable = Some(buffer);
                }
                job.work = JobWork::Merged(buffers);
            }
            JobWork::Merged(_) | JobWork::Done => unreachable!("a job finishes once"),
        }
        self.job_current += 1;
    }

    /// The block to write, after a `Write` step.
    pub fn block_written(&self) -> &[u8] {
        match &self.jobs[self.job_current].work {
            JobWork::Merge(compaction) => compaction.block_written(),
            _ => unreachable!("a write step comes from a merge"),
        }
    }

    /// The block a `Read` step named, verified by the caller.
    pub fn on_read(&mut self, block: &[u8]) {
        match &mut self.jobs[self.job_current].work {
            JobWork::Merge(compaction) => compaction.on_read(block),
            _ => unreachable!("a read step comes from a merge"),
        }
    }

    /// Ends a half bar: every job is done, and the manifest takes their results.
    fn half_end(&mut self) {
        assert_eq!(
            self.job_current,
            self.jobs.len(),
            "the half bar's compaction is not done"
        );
        let mut jobs = std::mem::take(&mut self.jobs_spare);
        std::mem::swap(&mut jobs, &mut self.jobs);
        for job in jobs.drain(..) {
            let level_b = job.level_b as u8;
            if let Some(table_a) = job.table_a {
                self.manifest_change(level_b - 1, ManifestChange::Remove, table_a);
            }
            match job.work {
                JobWork::Move => {
                    let table_a = job.table_a.expect("a move is of a table");
                    self.manifest_change(level_b, ManifestChange::Insert, table_a);
                }
                JobWork::Merged(buffers) => {
                    for table in buffers.tables_b() {
                        self.manifest_change(level_b, ManifestChange::Remove, *table);
                    }
                    for table in buffers.outputs() {
                        self.manifest_change(level_b, ManifestChange::Insert, *table);
                    }
                    self.pool.push(buffers);
                }
                JobWork::Merge(_) | JobWork::Done => unreachable!("every job finished"),
            }
        }
        self.jobs_spare = jobs;
    }

    fn manifest_change(&mut self, level: u8, change: ManifestChange, table: TableInfo) {
        let event = ManifestEvent {
            level,
            change,
            table,
        };
        // Strict, unlike a replay: `ManifestLevel::remove` asserts the level holds the table.
        let level = &mut self.levels[level as usize];
        match change {
            ManifestChange::Insert => level.insert(table),
            ManifestChange::Remove => level.remove(&table),
        }
        self.changes.push(event);
    }

    /// Applies one change to the levels: as compaction makes it, or as a restart replays the
    /// manifest log (before any bar). A removal of a table the level does not hold (its
    /// insertion was compacted out of the log with its block) changes nothing.
    pub fn manifest_apply(&mut self, event: &ManifestEvent) {
        assert!(event.table.tree == self.options.tree);
        match event.change {
            ManifestChange::Insert => self.levels[event.level as usize].insert(event.table),
            ManifestChange::Remove => {
                if self.holds(event.level, &event.table) {
                    self.levels[event.level as usize].remove(&event.table);
                }
            }
        }
    }

    /// Whether level `level` holds `table` (the manifest log's compaction keeps only those).
    pub fn holds(&self, level: u8, table: &TableInfo) -> bool {
        let key = table.key_max(&self.options.layout);
        self.levels[level as usize].table_holding(key) == Some(table)
    }

    /// The changes to the levels since the last call, oldest first, for the manifest log.
    pub fn manifest_changes_take(&mut self, mut each: impl FnMut(&ManifestEvent)) {
        for event in &self.changes {
            each(event);
        }
        self.changes.clear();
    }

    /// At a checkpoint, between bars: the bar's puts (the mutable table) are merged into level 0
    /// now, so that the manifest alone describes the tree and a restart from the checkpoint
    /// replays only the ops after it. The caller steps (`compact_step`, no budget) until
    /// `BarDone`, then calls `checkpoint_end`. Every replica flushes at the same ops, so their
    /// trees stay identical.
    pub fn checkpoint_start(&mut self, free_set: &mut FreeSet) -> Result<(), TreeError> {
        self.memory_flush_open();
        self.checkpointing = true;
        self.job_current = 0;
        self.beat_left = 0;
        self.beat_last = true;
        if self.immutable_count > 0 {
            self.job_add_immutable(free_set)?;
        }
        Ok(())
    }

    pub fn checkpoint_end(&mut self) {
        assert!(self.checkpointing);
        self.checkpointing = false;
        self.bar_end();
    }

    /// Ends the bar (after its last op's beat): the second half's results enter the manifest,
    /// the immutable table's values among them.
    pub fn bar_end(&mut self) {
        assert!(self.bar_open);
        self.half_end();
        self.immutable_count = 0;
        self.bar_open = false;
        assert!(self.immutable.is_some());
    }
}

/// Blocks of a table: its value blocks (all full but the last) and its index.
fn table_blocks(layout: &TableLayout, table: &TableInfo) -> u64 {
    table.value_count.div_ceil(layout.values_per_block() as u64) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::block_verify;
    use crate::grid::cache::BlockCache;
    use crate::lsm::lookup::{LevelsLookup, LookupStep};
    use crate::lsm::manifest_log::{ManifestLog, ManifestLogReader, ManifestLogState};
    use crate::lsm::test_support::{is_tombstone, value, Disk, CLUSTER};
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::BTreeMap;

    const BLOCK_SIZE: usize = 4096;

    fn options() -> TreeOptions {
        TreeOptions {
            // 60 values a block, 4 blocks a table (240 values).
            layout: TableLayout::new(BLOCK_SIZE, 64, 8, 4),
            cluster: CLUSTER,
            tree: 1,
            tombstone: is_tombstone,
            levels: 4,
            growth_factor: 4,
            bar_ops: 8,
        }
    }

    /// A tree driven op by op over an in-memory grid, checked against a map.
    struct Harness {
        tree: Tree,
        disk: Disk,
        cache: BlockCache<Vec<u8>>,
        model: BTreeMap<u64, [u8; 64]>,
        op: u64,
        checkpoints: Vec<u64>,
        log: ManifestLog,
        /// Take a snapshot at the first checkpoint at or after this op.
        snapshot_at: u64,
        snapshot: Option<Snapshot>,
        reopened: bool,
    }

    struct Snapshot {
        op: u64,
        blocks: BTreeMap<u64, Vec<u8>>,
        free_set_words: Vec<u64>,
        log: ManifestLogState,
        checkpoints: Vec<u64>,
        model: BTreeMap<u64, [u8; 64]>,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                tree: Tree::new(options()),
                disk: Disk::new(),
                cache: BlockCache::new(64),
                model: BTreeMap::new(),
                op: 0,
                checkpoints: Vec::new(),
                log: ManifestLog::new(CLUSTER, BLOCK_SIZE),
                snapshot_at: u64::MAX,
                snapshot: None,
                reopened: false,
            }
        }

        /// One op: its share of compaction, then its puts. Bars start and end on op numbers,
        /// and every fourth bar a checkpoint frees what was released two checkpoints ago.
        fn op(&mut self, puts: &[[u8; 64]]) {
            let bar_ops = self.tree.options().bar_ops;
            let beat = self.op % bar_ops;
            // A reopened harness starts where its checkpoint ended the bar.
            if beat == 0 && self.op > 0 && !std::mem::take(&mut self.reopened) {
                self.tree.bar_end();
                self.log_changes();
                self.checkpoint_maybe();
            }
            if beat == bar_ops / 2 {
                // The first half's changes enter the manifest as the second half starts.
                self.tree.beat_start(beat, &mut self.disk.free_set).unwrap();
                self.log_changes();
            } else {
                self.tree.beat_start(beat, &mut self.disk.free_set).unwrap();
            }
            self.compact_beat();
            for v in puts {
                self.tree.put(v);
                let key = u64::from_be_bytes(v[..8].try_into().unwrap());
                if is_tombstone(v) {
                    self.model.remove(&key);
                } else {
                    self.model.insert(key, *v);
                }
            }
            self.tree.op_end();
            self.op += 1;
        }

        fn compact_beat(&mut self) {
            loop {
                match self.tree.compact_step(&mut self.disk.free_set) {
                    TreeStep::Read(reference) => {
                        let block = self.disk.blocks[&reference.address].clone();
                        block_verify(&block, CLUSTER, reference, BLOCK_SIZE).unwrap();
                        self.tree.on_read(&block);
                    }
                    TreeStep::Write(address) => {
                        let block = self.tree.block_written().to_vec();
                        self.disk.blocks.insert(address, block);
                    }
                    TreeStep::BeatDone | TreeStep::BarDone => return,
                }
            }
        }

        /// The tree's changes into the manifest log, which compacts its oldest block while
        /// the chain is longer than the live tables need (with two blocks to spare).
        fn log_changes(&mut self) {
            let (tree, log, free_set) = (&mut self.tree, &mut self.log, &mut self.disk.free_set);
            tree.manifest_changes_take(|event| log.append(free_set, event));
            let live: usize = self.tree.levels().iter().map(|l| l.table_count()).sum();
            while let Some(oldest) = self.log.compact_wanted(live, 2) {
                self.log_drain();
                let block = self.disk.blocks[&oldest.address].clone();
                block_verify(&block, CLUSTER, oldest, BLOCK_SIZE).unwrap();
                let tree = &self.tree;
                self.log.compact(&mut self.disk.free_set, &block, |e| {
                    tree.holds(e.level, &e.table)
                });
            }
            self.log_drain();
        }

        fn log_drain(&mut self) {
            while let Some((address, block)) = self.log.write_next() {
                self.disk.blocks.insert(address, block.to_vec());
                self.log.write_done();
            }
        }

        /// Every fourth bar boundary: the tree's memory flushed to level 0, the manifest log
        /// sealed, the free set's releases sealed, and the checkpoint two before freed.
        fn checkpoint_maybe(&mut self) {
            if (self.op / self.tree.options().bar_ops) % 4 != 0 {
                return;
            }
            self.tree.checkpoint_start(&mut self.disk.free_set).unwrap();
            self.compact_beat();
            self.tree.checkpoint_end();
            self.log_changes();
            self.log.checkpoint(&mut self.disk.free_set);
            self.log_drain();
            self.disk.free_set.checkpoint(self.op);
            self.checkpoints.push(self.op);
            if self.checkpoints.len() > 2 {
                let durable = self.checkpoints.remove(0);
                self.disk.free_set.checkpoint_durable(durable);
            }
            if self.snapshot.is_none() && self.op >= self.snapshot_at {
                self.snapshot = Some(self.snapshot_take());
            }
        }

        /// What a checkpoint leaves on disk, and the test's own bookkeeping.
        fn snapshot_take(&mut self) -> Snapshot {
            let free_set = &self.disk.free_set;
            let mut words = vec![0u64; free_set.encoded_word_count() as usize];
            free_set.encode_words(0, &mut words);
            Snapshot {
                op: self.op,
                blocks: self.disk.blocks.clone(),
                free_set_words: words,
                log: self.log.checkpoint(&mut self.disk.free_set),
                checkpoints: self.checkpoints.clone(),
                model: self.model.clone(),
            }
        }

        /// A harness restarted from `snapshot`: the tree rebuilt from the manifest log on disk,
        /// the free set decoded, memory empty.
        fn reopen(snapshot: &Snapshot) -> Harness {
            let mut h = Harness::new();
            h.disk.blocks = snapshot.blocks.clone();
            h.disk
                .free_set
                .decode_words(&snapshot.free_set_words)
                .unwrap();
            let mut reader = ManifestLogReader::new(snapshot.log);
            while let Some(reference) = reader.next_read() {
                let block = &h.disk.blocks[&reference.address];
                block_verify(block, CLUSTER, reference, BLOCK_SIZE).unwrap();
                reader.on_read(block);
            }
            for event in reader.events() {
                h.tree.manifest_apply(&event);
            }
            h.log = reader.log(CLUSTER, BLOCK_SIZE);
            h.op = snapshot.op;
            h.checkpoints = snapshot.checkpoints.clone();
            h.model = snapshot.model.clone();
            h.snapshot_at = u64::MAX;
            h.reopened = true;
            h
        }

        fn get(&mut self, key: u64) -> Option<[u8; 64]> {
            let key = key.to_be_bytes();
            if let Some(found) = self.tree.get_memory(&key) {
                return found.map(|v| v.try_into().unwrap());
            }
            let layout = self.tree.options().layout;
            let mut lookup = LevelsLookup::new(&layout, &key);
            let mut out = [0u8; 64];
            loop {
                let levels = self.tree.levels();
                match lookup.step(&layout, levels, &is_tombstone, &mut self.cache, &mut out) {
                    LookupStep::Found => return Some(out),
                    LookupStep::Absent => return None,
                    LookupStep::Read(reference) => {
                        let block = self.disk.blocks[&reference.address].clone();
                        block_verify(&block, CLUSTER, reference, BLOCK_SIZE)
                            .expect("a block the manifest references is intact");
                        self.cache.insert(reference.address, block);
                    }
                }
            }
        }

        fn check(&mut self, key: u64) {
            assert_eq!(self.get(key), self.model.get(&key).copied(), "key {key}");
        }
    }

    /// Random ops: mostly new keys in increasing order (as timestamps are), updates of recent
    /// and old keys, and deletions; every op's keys and a sample of others checked against the
    /// model, and every key at the end.
    /// Each op's puts: mostly new keys in increasing order (as timestamps are), updates of
    /// recent and old keys, and deletions.
    fn random_ops(seed: u64, ops: u64) -> Vec<Vec<[u8; 64]>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut next_key = 0u64;
        let per_op_max = options().layout.values_max() / options().bar_ops as usize;
        (0..ops)
            .map(|_| {
                let count = (rng.next_u64() % (per_op_max as u64 + 1)) as usize;
                (0..count)
                    .map(|_| {
                        let roll = rng.next_u64() % 100;
                        let version = rng.next_u64() as u8;
                        let key = if roll < 60 || next_key == 0 {
                            next_key += 1 + rng.next_u64() % 3;
                            next_key
                        } else {
                            rng.next_u64() % (next_key + 1)
                        };
                        value(key, version, roll >= 90)
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs `ops` on `h`: every op's keys and a sample of others checked against the model,
    /// and every key at the end.
    fn run(h: &mut Harness, ops: &[Vec<[u8; 64]>], seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let key_of = |v: &[u8; 64]| u64::from_be_bytes(v[..8].try_into().unwrap());
        let key_max = ops.iter().flatten().map(key_of).max().unwrap_or(0);
        for puts in ops {
            h.op(puts);
            for v in puts {
                h.check(key_of(v));
            }
            for _ in 0..8 {
                h.check(rng.next_u64() % (key_max + 10));
            }
        }
        for key in 0..key_max + 10 {
            h.check(key);
        }
    }

    fn random_run(seed: u64, ops: u64) -> Harness {
        let mut h = Harness::new();
        run(&mut h, &random_ops(seed, ops), seed);
        h
    }

    #[test]
    fn tree_matches_a_map_through_flushes_compactions_and_frees() {
        for seed in 0..4 {
            let h = random_run(seed, 3_000);
            let stats = h.tree.stats();
            assert_eq!(stats.steps_over_budget, 0, "{stats:?}");
            assert!(
                stats.jobs_merged > 100 && stats.tables_moved > 0,
                "{stats:?}"
            );
            let levels: Vec<usize> = h.tree.levels().iter().map(|l| l.table_count()).collect();
            assert!(levels[2] > 0, "compaction reached level 2: {levels:?}");
            for (level, count) in levels.iter().enumerate() {
                assert!(
                    *count <= h.tree.options().level_tables_max(level),
                    "{levels:?}"
                );
            }
        }
    }

    /// The manifest log of a run, read back from the blocks of its last checkpoint and replayed
    /// into a new tree, gives that checkpoint's levels: the reopened tree holds every table the
    /// live one held then.
    #[test]
    fn manifest_log_replays_the_levels_of_a_checkpoint() {
        let mut h = random_run(11, 1_200);
        let state = h.log.checkpoint(&mut h.disk.free_set);
        h.log_drain();
        let mut reader = ManifestLogReader::new(state);
        while let Some(reference) = reader.next_read() {
            let block = &h.disk.blocks[&reference.address];
            block_verify(block, CLUSTER, reference, BLOCK_SIZE).unwrap();
            reader.on_read(block);
        }
        let mut reopened = Tree::new(options());
        for event in reader.events() {
            reopened.manifest_apply(&event);
        }
        let tables = |tree: &Tree| -> Vec<Vec<TableInfo>> {
            tree.levels()
                .iter()
                .map(|l| l.iter().copied().collect())
                .collect()
        };
        assert!(h.tree.levels()[1].table_count() > 0);
        assert_eq!(tables(&reopened), tables(&h.tree));
        assert!(h.log.block_count() < 20, "{} blocks", h.log.block_count());
    }

    /// A tree reopened from a checkpoint (manifest replayed from the log's blocks, free set
    /// decoded, memory empty) and given the ops after it writes exactly the blocks the tree that
    /// never stopped writes: compaction's choices and addresses depend only on what a
    /// checkpoint holds.
    #[test]
    fn a_tree_reopened_from_a_checkpoint_writes_what_it_would_have() {
        for seed in 0..3 {
            let ops = random_ops(seed, 1_500);
            let mut a = Harness::new();
            a.snapshot_at = 700;
            run(&mut a, &ops, seed);
            let snapshot = a.snapshot.take().expect("a checkpoint past op 700");
            let mut b = Harness::reopen(&snapshot);
            run(&mut b, &ops[snapshot.op as usize..], seed);
            let tables = |tree: &Tree| -> Vec<Vec<TableInfo>> {
                tree.levels()
                    .iter()
                    .map(|l| l.iter().copied().collect())
                    .collect()
            };
            assert_eq!(tables(&b.tree), tables(&a.tree), "seed {seed}");
            assert_eq!(b.disk.blocks, a.disk.blocks, "seed {seed}");
            assert!(b.tree.stats().jobs_merged > 10);
        }
    }

    #[test]
    fn same_ops_same_blocks() {
        let a = random_run(7, 600);
        let b = random_run(7, 600);
        assert_eq!(a.disk.blocks, b.disk.blocks);
        assert_eq!(a.tree.stats(), b.tree.stats());
    }
}
