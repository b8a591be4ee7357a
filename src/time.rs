//! The time seam. Production reads the OS clocks; the simulator advances ticks with per-replica
//! offset and drift.

pub trait Time {
    /// Nanoseconds from an arbitrary origin; never goes backwards.
    fn monotonic(&self) -> u64;
    /// Nanoseconds since the Unix epoch; may jump.
    fn realtime(&self) -> i64;
}
