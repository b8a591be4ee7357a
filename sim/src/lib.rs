//! The VOPR: runs whole clusters of the production `Replica` on a simulated network, disk and
//! clock, injects faults, and checks safety and liveness. Deterministic per seed.

pub mod checker;
pub mod cluster;
pub mod durability;
pub mod ledger_check;
pub mod network;
pub mod options;
pub mod rng;
pub mod scenario;
pub mod storage;
pub mod time;
pub mod view_log;
