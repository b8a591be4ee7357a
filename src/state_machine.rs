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
}

/// A tiny deterministic machine for protocol tests: its state is a running hash of every committed
/// operation; each reply is the state after applying the request.
#[derive(Clone, Debug, Default)]
pub struct HashingStateMachine {
    state: u128,
    pub commits: u64,
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
}
