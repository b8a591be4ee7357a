//! The LSM forest (docs/storage.md, "The forest"): the ledger's state as trees of immutable,
//! sorted tables in the grid. Built so far: the table format (`table`) and the merge of
//! compaction (`merge`).

pub mod merge;
pub mod table;
