//! vsr: a replicated financial ledger on Viewstamped Replication.
//!
//! The crate's rooms (docs/architecture.md walks through them):
//!
//! - **Protocol** (runs unchanged in production and in the simulator, `sim/`): `replica` (the
//!   replica state machine), `journal`, `superblock`, `checkpoint_content`, `clock`, `timeout`,
//!   the wire format (`header`, `message`, `checksum`, `io_token`), latency histograms for the
//!   operator (`metrics`), the configuration (`config`)
//!   and data file layout (`storage`), and `format` (the writes that create a data file).
//! - **Storage engine** (being built, docs/storage.md): `grid` (checksummed blocks, the free set,
//!   the block cache) and `lsm` (tables, compaction, the manifest and its log, one tree).
//! - **Seams** the protocol is generic over: `storage::Storage`, `bus::MessageBus`, `time::Time`,
//!   `state_machine::StateMachine`.
//! - **Ledger**: `ledger`, the state machine of accounts and transfers.
//! - **Linux runtime**: `io` (io_uring ring, event loop, data file, TCP bus, OS clocks).
//! - **Client side**: `client` (the client protocol, sans I/O; `client::net`, a blocking TCP
//!   client; `client::batch`, a thread-safe batching client).
//! - **Command line**: `cli` (the `vsr` binary's subcommands).

// Protocol.
pub mod checkpoint_content;
pub mod checksum;
pub mod clock;
pub mod config;
pub mod format;
pub mod header;
pub mod io_token;
pub mod journal;
pub mod message;
pub mod metrics;
pub mod replica;
pub mod superblock;
pub mod timeout;

// The storage engine.
pub mod grid;
pub mod lsm;

// Seams.
pub mod bus;
pub mod state_machine;
pub mod storage;
pub mod time;

// The ledger, the Linux runtime, the client side, the command line.
pub mod cli;
pub mod client;
pub mod io;
pub mod ledger;

pub use config::Config;
pub use header::{Command, Header, Operation};
pub use message::{Message, MessagePool};
