//! The state machine seam. The replica asks it how many timestamps an operation consumes when
//! preparing, and has it apply committed operations, writing the reply body.

use crate::checksum::checksum;
use crate::header::STATE_MACHINE_OPERATION_FIRST;

pub trait StateMachine {
    /// Whether `operation` with this body is well formed enough to prepare. A request that fails
    /// is dropped by the primary (and the client told, once clients have typed errors).
    fn input_valid(&self, operation: u8, input: &[u8]) -> bool;
    /// How many timestamps the operation consumes (e.g. one per event). The primary assigns the
    /// prepare's timestamp so that the range (timestamp - count, timestamp] is unused.
    fn prepare_timestamps(&self, operation: u8, input: &[u8]) -> u64;
    /// Applies a committed operation; writes the reply body into `output`, returns its length.
    /// Deterministic: every replica gets the same output from the same input.
    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        input: &[u8],
        output: &mut [u8],
    ) -> usize;
    /// A digest of the whole state, equal on every replica at the same commit.
    fn digest(&self) -> u128;

    /// The snapshot: the whole state as a byte string that depends only on the committed ops, so
    /// every replica's snapshot at the same commit is byte-identical (checkpoints are compared
    /// and shipped between replicas by checksum). Its length now.
    fn snapshot_size(&self) -> u64;
    /// Copies bytes `[offset, offset + out.len())` of the snapshot into `out`.
    fn snapshot_read(&self, offset: u64, out: &mut [u8]);
    /// Freezes the snapshot as the state is now: until `snapshot_thaw`, `snapshot_size` and
    /// `snapshot_read` describe this state while operations go on being applied. A checkpoint
    /// is written from a frozen snapshot, so commits need not wait for its writes.
    fn snapshot_freeze(&mut self);
    fn snapshot_thaw(&mut self);
    /// Discards the state and starts restoring a snapshot of `size` bytes, fed in order to
    /// `restore_write` and completed by `restore_finish`.
    fn restore_begin(&mut self, size: u64);
    fn restore_write(&mut self, bytes: &[u8]);
    /// Rebuilds what the snapshot does not carry (indexes). An error means the bytes are not a
    /// snapshot this machine wrote (they passed their checksums, so this is a bug or a foreign
    /// file); the replica refuses to run on them.
    fn restore_finish(&mut self) -> Result<(), String>;
}

/// A tiny deterministic machine for protocol tests: its state is a running hash of every committed
/// operation; each reply is the state after applying the request.
#[derive(Clone, Debug, Default)]
pub struct HashingStateMachine {
    state: u128,
    pub commits: u64,
    restore: Vec<u8>,
    frozen: Option<[u8; HASHING_SNAPSHOT_SIZE]>,
}

pub const HASHING_OPERATION: u8 = STATE_MACHINE_OPERATION_FIRST;

impl StateMachine for HashingStateMachine {
    fn input_valid(&self, operation: u8, _input: &[u8]) -> bool {
        operation == HASHING_OPERATION
    }

    fn prepare_timestamps(&self, _operation: u8, _input: &[u8]) -> u64 {
        1
    }

    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        input: &[u8],
        output: &mut [u8],
    ) -> usize {
        assert_eq!(operation, HASHING_OPERATION);
        let mut buf = Vec::with_capacity(64 + input.len());
        buf.extend_from_slice(&self.state.to_le_bytes());
        buf.extend_from_slice(&client.to_le_bytes());
        buf.extend_from_slice(&op.to_le_bytes());
        buf.extend_from_slice(&timestamp.to_le_bytes());
        buf.extend_from_slice(input);
        self.state = checksum(&buf);
        self.commits += 1;
        output[..16].copy_from_slice(&self.state.to_le_bytes());
        16
    }

    fn digest(&self) -> u128 {
        self.state
    }

    fn snapshot_size(&self) -> u64 {
        HASHING_SNAPSHOT_SIZE as u64
    }

    fn snapshot_read(&self, offset: u64, out: &mut [u8]) {
        let bytes = self.frozen.unwrap_or_else(|| self.snapshot_bytes());
        let offset = offset as usize;
        out.copy_from_slice(&bytes[offset..offset + out.len()]);
    }

    fn snapshot_freeze(&mut self) {
        assert!(self.frozen.is_none(), "snapshot frozen twice");
        self.frozen = Some(self.snapshot_bytes());
    }

    fn snapshot_thaw(&mut self) {
        assert!(
            self.frozen.take().is_some(),
            "thaw of a snapshot not frozen"
        );
    }

    fn restore_begin(&mut self, size: u64) {
        assert_eq!(size, HASHING_SNAPSHOT_SIZE as u64);
        self.restore = Vec::with_capacity(HASHING_SNAPSHOT_SIZE);
    }

    fn restore_write(&mut self, bytes: &[u8]) {
        self.restore.extend_from_slice(bytes);
    }

    fn restore_finish(&mut self) -> Result<(), String> {
        let bytes = std::mem::take(&mut self.restore);
        if bytes.len() != HASHING_SNAPSHOT_SIZE {
            return Err(format!("hashing snapshot of {} bytes", bytes.len()));
        }
        self.state = u128::from_le_bytes(bytes[..16].try_into().unwrap());
        self.commits = u64::from_le_bytes(bytes[16..].try_into().unwrap());
        Ok(())
    }
}

const HASHING_SNAPSHOT_SIZE: usize = 24;

impl HashingStateMachine {
    fn snapshot_bytes(&self) -> [u8; HASHING_SNAPSHOT_SIZE] {
        let mut bytes = [0u8; HASHING_SNAPSHOT_SIZE];
        bytes[..16].copy_from_slice(&self.state.to_le_bytes());
        bytes[16..].copy_from_slice(&self.commits.to_le_bytes());
        bytes
    }
}
