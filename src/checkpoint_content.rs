//! Checkpoint content and its chunks, independent of I/O (the replica drives the reads and
//! writes in `replica/checkpoint.rs` and `replica/sync.rs`).
//!
//! The content of a checkpoint at op C is one byte string:
//! `[client section length: u64][client section][state machine snapshot]`. The client section
//! holds every session (slot, client, session, request, commit op) and its latest reply. Both
//! parts depend only on the committed ops, so every replica's checkpoint at C is byte-identical.
//!
//! The content is cut into chunks of `message_size_max - HEADER_SIZE` bytes. Each chunk is stored
//! as a message (`CheckpointChunk` header + body) in one block of a checkpoint area, and the same
//! message, with its `checkpoint_id` set, is what state sync sends. The id is
//! the checksum over the chunk body checksums in order; the superblock records it, so a load or a
//! sync verifies every chunk (its own checksums) and the whole (the id).

use crate::checksum::checksum;
use crate::header::commands::CheckpointChunk;
use crate::header::{Command, Header, HEADER_SIZE};

/// Bytes of content each chunk carries.
pub fn chunk_payload(message_size_max: u32) -> usize {
    message_size_max as usize - HEADER_SIZE
}

/// Chunks a content of `size` bytes needs (at least one).
pub fn chunk_count(size: u64, message_size_max: u32) -> u32 {
    chunk_count_checked(size, message_size_max).expect("checkpoint chunk count fits u32")
}

/// `chunk_count` for a size read from outside (a data file, a peer): None when no chunk count
/// could describe it.
pub fn chunk_count_checked(size: u64, message_size_max: u32) -> Option<u32> {
    let payload = chunk_payload(message_size_max) as u64;
    u32::try_from(size.div_ceil(payload).max(1)).ok()
}

/// Bytes of content chunk `index` carries.
pub fn chunk_len(size: u64, message_size_max: u32, index: u32) -> usize {
    let payload = chunk_payload(message_size_max) as u64;
    let start = index as u64 * payload;
    assert!(start < size.max(1));
    (size - start).min(payload) as usize
}

/// The checkpoint id: the checksum over the chunk body checksums, in order.
pub fn checkpoint_id(chunk_checksums: &[u128]) -> u128 {
    let mut bytes = Vec::with_capacity(chunk_checksums.len() * 16);
    for c in chunk_checksums {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    // Never 0: 0 means "no checkpoint" on the wire.
    checksum(&bytes).max(1)
}

/// What a chunk header must say, for a checkpoint at `op` of `size` bytes with state `digest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkIdentity {
    pub cluster: u128,
    pub op: u64,
    pub size: u64,
    pub chunks: u32,
    pub digest: u128,
}

impl ChunkIdentity {
    /// The header of chunk `index` as stored on disk (no `checkpoint_id`), sealed over `body`.
    pub fn header(&self, index: u32, body: &[u8]) -> Header {
        let chunk = CheckpointChunk {
            op: self.op,
            index: index as u64,
            count: self.chunks as u64,
            size_bytes: self.size,
            digest: self.digest,
            checkpoint_id: 0,
        };
        let mut h = chunk.to_header(self.cluster);
        h.size = (HEADER_SIZE + body.len()) as u32;
        h.set_checksum_body(body);
        h.set_checksum();
        h
    }

    /// Whether `h` (already checksum-verified together with its body) is chunk `index` of this
    /// checkpoint, with the body length that chunk must have.
    pub fn matches(&self, h: &Header, index: u32, message_size_max: u32) -> bool {
        if h.command() != Some(Command::CheckpointChunk) {
            return false;
        }
        let chunk = CheckpointChunk::from_header(h);
        h.cluster == self.cluster
            && chunk.op == self.op
            && chunk.index == index as u64
            && chunk.count == self.chunks as u64
            && chunk.size_bytes == self.size
            && chunk.digest == self.digest
            && h.body_size() == chunk_len(self.size, message_size_max, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking() {
        assert_eq!(chunk_count(0, 4096), 1);
        assert_eq!(chunk_count(3840, 4096), 1);
        assert_eq!(chunk_count(3841, 4096), 2);
        assert_eq!(chunk_len(3841, 4096, 1), 1);
        let identity = ChunkIdentity {
            cluster: 1,
            op: 50,
            size: 3841,
            chunks: 2,
            digest: 99,
        };
        let h = identity.header(1, &[5]);
        assert!(identity.matches(&h, 1, 4096));
        assert!(!identity.matches(&h, 0, 4096));
        assert_eq!(h.invalid(4096), None);
        assert_ne!(checkpoint_id(&[1, 2]), checkpoint_id(&[2, 1]));
    }
}
