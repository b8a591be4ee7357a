//! The Linux runtime: one io_uring per process, single-threaded. The loop owns the ring; the
//! replica's storage and bus keep queues of work that the loop submits, and the loop routes each
//! completion back by the owner encoded in its user_data. Ownership flows one way:
//! loop -> replica -> (queued requests to) storage/bus.
//!
//! - `ring`: the io_uring instance and completion routing.
//! - `event_loop`: the replica's loop (submit, wait, route, tick).
//! - `file_storage`: the data file behind the `Storage` seam (O_DIRECT | O_DSYNC).
//! - `tcp_bus`: the message bus over TCP behind the `MessageBus` seam.
//! - `metrics`: the Prometheus endpoint (`--metrics`), served on the same ring.
//! - `os_time`: the OS clocks behind the `Time` seam.
//! - `log`: the log lines (timestamp, level, replica, component; text or JSON).

pub mod event_loop;
pub mod file_storage;
pub mod log;
pub mod metrics;
pub mod os_time;
pub mod ring;
pub mod tcp_bus;

pub use ring::{owner_of, user_data, Io, IoSetupError, Owner};
