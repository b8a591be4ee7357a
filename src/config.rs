//! Runtime configuration: every size the replica allocates from, with the relations between them
//! validated once at start-up. Production and the simulator use the same struct; the VOPR draws
//! small, varied values per seed.

use std::fmt;

/// Direct I/O needs buffers and offsets aligned to the logical sector size.
pub const SECTOR_SIZE: usize = 4096;

/// The largest cluster the protocol supports (quorum tables and bitsets are sized for it).
pub const REPLICAS_MAX: usize = 6;

/// The replica is ticked every `TICK_MS` of its monotonic clock.
pub const TICK_MS: u64 = 10;

/// The largest `pipeline_max`: the superblock keeps `pipeline_max + 1` view headers.
pub const PIPELINE_MAX_LIMIT: u32 = 254;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of replicas in the cluster, 1..=REPLICAS_MAX.
    pub replica_count: u8,
    /// Largest message (header + body) in bytes; a multiple of SECTOR_SIZE.
    pub message_size_max: u32,
    /// Number of slots in the journal ring (each holds one prepare of message_size_max).
    pub journal_slot_count: u32,
    /// Most prepares the primary may have in flight (prepared, not yet committed).
    pub pipeline_max: u32,
    /// Most client sessions kept; the oldest is evicted when a new one registers.
    pub clients_max: u32,

    /// Timeouts, in ticks (`TICK_MS` each).
    pub ping_timeout_ticks: u64,
    pub prepare_timeout_ticks: u64,
    pub commit_timeout_ticks: u64,
    pub normal_status_timeout_ticks: u64,
    pub view_change_status_timeout_ticks: u64,
    pub view_change_message_timeout_ticks: u64,
    pub repair_timeout_ticks: u64,
    pub primary_abdicate_timeout_ticks: u64,
    pub request_timeout_ticks: u64,

    /// Cluster time: the widest interval (ns) Marzullo may agree on and still be synchronized.
    pub clock_offset_tolerance_max_ns: u64,
    /// How long (ns) the replica collects clock samples before deciding an epoch.
    pub clock_epoch_ns: u64,
    /// Samples older than this (ns) are stale; without a fresh epoch the clock is unsynchronized.
    pub clock_synchronization_window_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The production configuration (1 MiB messages, 1024 slots, pipeline 8, 64 clients).
    pub fn production(replica_count: u8) -> Config {
        Config {
            replica_count,
            message_size_max: 1024 * 1024,
            journal_slot_count: 1024,
            pipeline_max: 8,
            clients_max: 64,
            ..Config::timing_defaults(replica_count)
        }
    }

    /// Timeouts and clock settings shared by production and tests.
    pub fn timing_defaults(replica_count: u8) -> Config {
        Config {
            replica_count,
            message_size_max: 64 * 1024,
            journal_slot_count: 256,
            pipeline_max: 8,
            clients_max: 16,
            ping_timeout_ticks: 100,
            prepare_timeout_ticks: 25,
            commit_timeout_ticks: 50,
            normal_status_timeout_ticks: 200,
            view_change_status_timeout_ticks: 500,
            view_change_message_timeout_ticks: 50,
            repair_timeout_ticks: 50,
            primary_abdicate_timeout_ticks: 1000,
            request_timeout_ticks: 100,
            clock_offset_tolerance_max_ns: 10_000_000_000,
            clock_epoch_ns: 3_000_000_000,
            clock_synchronization_window_ns: 20_000_000_000,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        let n = self.replica_count as usize;
        if n == 0 || n > REPLICAS_MAX {
            return err(format!(
                "replica_count {} must be in 1..={}",
                n, REPLICAS_MAX
            ));
        }
        let m = self.message_size_max as usize;
        if m < SECTOR_SIZE || m % SECTOR_SIZE != 0 {
            return err(format!(
                "message_size_max {m} must be a non-zero multiple of {SECTOR_SIZE}"
            ));
        }
        if m > 16 * 1024 * 1024 {
            return err(format!("message_size_max {m} exceeds 16 MiB"));
        }
        if self.pipeline_max == 0 || self.pipeline_max > PIPELINE_MAX_LIMIT {
            return err(format!(
                "pipeline_max must be in 1..={PIPELINE_MAX_LIMIT} (the superblock keeps pipeline_max + 1 view headers)"
            ));
        }
        // A view change carries the possibly-uncommitted suffix plus one committed anchor.
        if self.view_change_headers_max() > self.headers_per_message() {
            return err(format!(
                "pipeline_max {} needs {} headers in a view change message but only {} fit in {} bytes",
                self.pipeline_max,
                self.view_change_headers_max(),
                self.headers_per_message(),
                m
            ));
        }
        // The journal must hold the whole pipeline plus the anchor, with room to repair behind it.
        if (self.journal_slot_count as usize) < 2 * self.view_change_headers_max() + 2 {
            return err(format!(
                "journal_slot_count {} must be at least twice the view change suffix ({})",
                self.journal_slot_count,
                self.view_change_headers_max()
            ));
        }
        // A checkpoint interval (`checkpoint_interval`: half the journal less the view change
        // suffix) must leave at least two view change suffixes of room: a full pipeline, and a
        // pipeline of backup lag, while a checkpoint is written.
        if (self.journal_slot_count as usize) < 6 * self.view_change_headers_max() {
            return err(format!(
                "journal_slot_count {} must be at least six times the view change suffix ({})",
                self.journal_slot_count,
                self.view_change_headers_max()
            ));
        }
        if self.clients_max == 0 {
            return err("clients_max must be at least 1".into());
        }
        let timeouts = [
            self.ping_timeout_ticks,
            self.prepare_timeout_ticks,
            self.commit_timeout_ticks,
            self.normal_status_timeout_ticks,
            self.view_change_status_timeout_ticks,
            self.view_change_message_timeout_ticks,
            self.repair_timeout_ticks,
            self.primary_abdicate_timeout_ticks,
            self.request_timeout_ticks,
        ];
        if timeouts.contains(&0) {
            return err("every timeout must be at least one tick".into());
        }
        // A backup must not give up on the primary before the primary has had a chance to
        // send several heartbeats.
        if self.normal_status_timeout_ticks <= 2 * self.commit_timeout_ticks {
            return err(
                "normal_status_timeout_ticks must exceed twice commit_timeout_ticks".into(),
            );
        }
        if self.primary_abdicate_timeout_ticks <= self.commit_timeout_ticks {
            return err("primary_abdicate_timeout_ticks must exceed commit_timeout_ticks".into());
        }
        if self.clock_epoch_ns == 0 || self.clock_synchronization_window_ns <= self.clock_epoch_ns {
            return err("clock_synchronization_window_ns must exceed clock_epoch_ns > 0".into());
        }
        Ok(())
    }

    /// Replicas whose prepare_ok commit an op.
    pub fn quorum_replication(&self) -> usize {
        quorums(self.replica_count as usize).0
    }

    /// Replicas whose do_view_change start a view; also the nack count that proves an op
    /// cannot have committed.
    pub fn quorum_view_change(&self) -> usize {
        quorums(self.replica_count as usize).1
    }

    pub fn headers_per_message(&self) -> usize {
        // A do_view_change body carries a header plus one flag byte per op.
        (self.message_size_max as usize - crate::header::HEADER_SIZE)
            / (crate::header::HEADER_SIZE + 1)
    }

    /// Headers a view change carries: the pipeline (possibly uncommitted) plus one committed anchor.
    pub fn view_change_headers_max(&self) -> usize {
        self.pipeline_max as usize + 1
    }

    /// Ops between checkpoints: about half the journal. The journal may hold ops up to the
    /// durable checkpoint plus its slot count, so while a checkpoint is written (commits go on,
    /// from a frozen snapshot) the cluster has `slots - interval`, over half a journal, of ops to
    /// prepare and commit before it must wait for the write: a full rewrite of a large state
    /// then costs no stall. The `view_change_headers_max` subtracted keeps room for a pipeline
    /// and a pipeline of backup lag even in the smallest journal. Commits wait before the next
    /// checkpoint's op while the previous write is not durable, and after a checkpoint's op
    /// while the durable checkpoint is not yet held by a replication quorum
    /// (`Replica::commits_paused`, docs/storage.md).
    pub fn checkpoint_interval(&self) -> u64 {
        self.journal_slot_count as u64 / 2 - self.view_change_headers_max() as u64
    }

    /// Messages the pool holds; enough for every reference the replica, its journal, bus and
    /// client table may hold at once. Derived, so nothing is allocated later.
    pub fn messages_max(&self) -> usize {
        let n = self.replica_count as usize;
        let pipeline = self.pipeline_max as usize;
        let clients = self.clients_max as usize;
        // Pipeline prepares, requests waiting for the pipeline, client replies, view change
        // quorum messages, journal reads/writes in flight, bus queues, loopback and repair.
        pipeline * 2 + clients * 2 + n * 4 + journal_io_max(self) + 64
    }
}

/// Concurrent journal reads and writes.
pub fn journal_io_max(config: &Config) -> usize {
    config.pipeline_max as usize * 2 + 8
}

/// (quorum_replication, quorum_view_change) for a cluster of `n` replicas. Flexible quorums:
/// replication needs at most 3 acks, and every view change quorum intersects every replication
/// quorum (`qr + qvc > n`), so an op acknowledged by a replication quorum is seen by the view change.
pub fn quorums(n: usize) -> (usize, usize) {
    assert!((1..=REPLICAS_MAX).contains(&n));
    let majority = n.div_ceil(2);
    let replication = if n <= 2 { n } else { majority.min(3) };
    let view_change = (n - replication + 1).max(majority);
    assert!(replication + view_change > n);
    assert!(replication >= 1 && view_change >= 1);
    (replication, view_change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_table() {
        let table: Vec<(usize, usize)> = (1..=6).map(quorums).collect();
        assert_eq!(table, vec![(1, 1), (2, 1), (2, 2), (2, 3), (3, 3), (3, 4)]);
        for n in 1..=6 {
            let (qr, qvc) = quorums(n);
            assert!(qr + qvc > n, "quorums must intersect for n={n}");
        }
    }

    #[test]
    fn production_config_is_valid() {
        for n in 1..=6 {
            Config::production(n).validate().unwrap();
        }
    }

    #[test]
    fn rejects_bad_relations() {
        let mut c = Config::production(3);
        c.message_size_max = 4097;
        assert!(c.validate().is_err());
        let mut c = Config::production(3);
        c.replica_count = 7;
        assert!(c.validate().is_err());
        let mut c = Config::production(3);
        c.journal_slot_count = 4;
        assert!(c.validate().is_err());
        let mut c = Config::production(3);
        c.message_size_max = 4096;
        c.pipeline_max = 64;
        assert!(c.validate().is_err());
    }
}
