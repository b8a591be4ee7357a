//! The LSM forest (docs/storage.md, "The forest"): the ledger's state as trees of immutable,
//! sorted tables in the grid. Built so far: the table format (`table`), the merge of
//! compaction (`merge`) and a level of a tree's manifest (`manifest_level`).

pub mod manifest_level;
pub mod merge;
pub mod table;
