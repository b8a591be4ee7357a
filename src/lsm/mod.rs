//! The LSM forest (docs/storage.md, "The forest"): the ledger's state as trees of immutable,
//! sorted tables in the grid. Built so far: the table format (`table`), the merge
//! (`merge`) and the job (`compaction`) of compaction, a level of a tree's manifest
//! (`manifest_level`), lookups through the levels (`lookup`), the mutable table
//! (`table_memory`) and one tree driving them, with compaction paced per half bar (`tree`).

pub mod compaction;
pub mod lookup;
pub mod manifest_level;
pub mod manifest_log;
pub mod merge;
pub mod table;
pub mod table_memory;
pub mod tree;

#[cfg(test)]
mod test_support;
