//! vsr: a replicated financial ledger on Viewstamped Replication.
//!
//! The protocol code (`replica`, `journal`, `superblock`, `clock`, `client`) is written once and
//! runs both in production and in the simulator (`sim/`, the VOPR), generic over the seams in
//! `storage`, `bus` and `time`.

pub mod bus;
pub mod bus_tcp;
pub mod checkpoint;
pub mod checksum;
pub mod client;
pub mod client_batch;
pub mod client_net;
pub mod clock;
pub mod config;
pub mod format;
pub mod header;
pub mod io_token;
pub mod journal;
pub mod message;
pub mod state_machine;
pub mod storage;
pub mod superblock;
pub mod time;

pub use config::Config;
pub use header::{Command, Header, Operation};
pub use message::{Message, MessagePool};
pub mod cli;
pub mod io;
pub mod ledger;
pub mod replica;
pub mod storage_linux;
pub mod time_os;
