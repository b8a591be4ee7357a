//! The grid: the data file's state zone as an array of checksummed blocks (docs/storage.md,
//! "The grid").
//!
//! A block is a message: a `Block` header (address, type, tree, metadata, the body's checksum)
//! and its content as body, at most `block_size` bytes in all, stored at its address. Blocks are
//! named by `BlockReference` (address and header checksum) from their parent, so the state is a
//! tree of checksums rooted in the superblock, and a read verifies exactly the block referenced:
//! a misdirected or lost write, a stale block at the right address, or a sector gone bad each fail
//! `block_verify`, with the reason. `free_set` tracks which addresses are in use; `cache` holds
//! blocks read, by address.

pub mod cache;
pub mod free_set;

use crate::header::commands::Block;
use crate::header::{Command, Header, HEADER_SIZE};

/// A block's address and its header's checksum: all a reader needs to find and verify it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockReference {
    pub address: u64,
    pub checksum: u128,
}

crate::header::u8_enum!(
    /// What a block holds.
    BlockType {
        /// Part of the free set's encoding (a checkpoint's trailer).
        FreeSet = 1,
        /// Part of the client sessions and their replies (a checkpoint's trailer).
        ClientSessions = 2,
        /// Part of the manifest: which tables each tree holds, at which level.
        Manifest = 3,
        /// A table's index: its value blocks and their key ranges.
        Index = 4,
        /// A table's values, sorted by key.
        Value = 5,
    }
);

/// Why a block read is not the block referenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The header's checksum is wrong: damaged, torn, or never written.
    HeaderChecksum,
    /// An intact header of another block: a misdirected write, or an older block at this address.
    NotReferenced { address: u64, checksum: u128 },
    /// The header is the one referenced, the body is not: damaged after the header.
    BodyChecksum,
    /// The referenced checksum matched a header that does not describe a valid block (a bug, not a
    /// disk fault: only valid blocks are ever sealed).
    Invalid(&'static str),
}

/// Seals `buffer` as the block `block` with a body of `body_size` bytes already in place after
/// the header, for `cluster`; returns its reference. `buffer` holds at least the whole block.
/// The rest of the block is zeroed, so a reused buffer leaves nothing of its last block on disk:
/// every replica writes the same bytes for the same block.
pub fn block_seal(
    buffer: &mut [u8],
    cluster: u128,
    block: &Block,
    body_size: usize,
    block_size: usize,
) -> BlockReference {
    assert!(block.address > 0);
    assert!(BlockType::from_u8(block.block_type).is_some());
    let size = HEADER_SIZE + body_size;
    assert!(size <= block_size && block_size <= buffer.len());
    buffer[size..block_size].fill(0);
    let mut header = block.to_header(cluster);
    header.size = u32::try_from(size).expect("block size fits u32");
    header.set_checksum_body(&buffer[HEADER_SIZE..size]);
    header.set_checksum();
    assert_eq!(header.invalid(block_size), None);
    buffer[..HEADER_SIZE].copy_from_slice(zerocopy::IntoBytes::as_bytes(&header));
    BlockReference {
        address: block.address,
        checksum: header.checksum,
    }
}

/// Verifies that `buffer` (read from `reference.address`) holds exactly the block referenced, of
/// `cluster`; returns its header.
pub fn block_verify(
    buffer: &[u8],
    cluster: u128,
    reference: BlockReference,
    block_size: usize,
) -> Result<Header, BlockError> {
    assert!(reference.address > 0);
    // A buffer shorter than the block's size (a short read) fails as a damaged body below.
    assert!(buffer.len() >= HEADER_SIZE);
    let header = Header::read_from(buffer);
    if !header.valid_checksum() {
        return Err(BlockError::HeaderChecksum);
    }
    if header.checksum != reference.checksum
        || header.command() != Some(Command::Block)
        || Block::from_header(&header).address != reference.address
    {
        let address = if header.command() == Some(Command::Block) {
            header.op
        } else {
            0
        };
        return Err(BlockError::NotReferenced {
            address,
            checksum: header.checksum,
        });
    }
    if let Some(reason) = header.invalid(block_size) {
        return Err(BlockError::Invalid(reason));
    }
    if header.cluster != cluster {
        return Err(BlockError::Invalid("block of another cluster"));
    }
    if BlockType::from_u8(header.operation).is_none() {
        return Err(BlockError::Invalid("unknown block type"));
    }
    let size = header.size as usize;
    if size > buffer.len() || !header.valid_checksum_body(&buffer[HEADER_SIZE..size]) {
        return Err(BlockError::BodyChecksum);
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK_SIZE: usize = 4096;
    const CLUSTER: u128 = 7;

    fn sealed(address: u64, fill: u8) -> (Vec<u8>, BlockReference) {
        let mut buffer = vec![0u8; BLOCK_SIZE];
        buffer[HEADER_SIZE..HEADER_SIZE + 100].fill(fill);
        let block = Block {
            address,
            block_type: BlockType::Value as u8,
            tree: 2,
            metadata: 99,
        };
        let reference = block_seal(&mut buffer, CLUSTER, &block, 100, BLOCK_SIZE);
        (buffer, reference)
    }

    #[test]
    fn block_verify_accepts_the_block_referenced() {
        let (buffer, reference) = sealed(5, 0xaa);
        assert_eq!(reference.address, 5);
        let header = block_verify(&buffer, CLUSTER, reference, BLOCK_SIZE).unwrap();
        assert_eq!(header.size as usize, HEADER_SIZE + 100);
        let block = Block::from_header(&header);
        assert_eq!((block.tree, block.metadata), (2, 99));
    }

    #[test]
    fn block_verify_names_each_fault() {
        let (buffer, reference) = sealed(5, 0xaa);
        // A damaged header.
        let mut damaged = buffer.clone();
        damaged[40] ^= 1;
        assert_eq!(
            block_verify(&damaged, CLUSTER, reference, BLOCK_SIZE),
            Err(BlockError::HeaderChecksum)
        );
        // Zeros: never written.
        assert_eq!(
            block_verify(&vec![0; BLOCK_SIZE], CLUSTER, reference, BLOCK_SIZE),
            Err(BlockError::HeaderChecksum)
        );
        // A misdirected write: another block's intact bytes at this address.
        let (other, other_reference) = sealed(6, 0xaa);
        assert_eq!(
            block_verify(&other, CLUSTER, reference, BLOCK_SIZE),
            Err(BlockError::NotReferenced {
                address: 6,
                checksum: other_reference.checksum
            })
        );
        // An older block at the right address (different content, so a different checksum).
        let (older, older_reference) = sealed(5, 0xbb);
        assert_ne!(older_reference, reference);
        assert!(matches!(
            block_verify(&older, CLUSTER, reference, BLOCK_SIZE),
            Err(BlockError::NotReferenced { address: 5, .. })
        ));
        // A damaged body.
        let mut damaged = buffer.clone();
        damaged[HEADER_SIZE + 3] ^= 1;
        assert_eq!(
            block_verify(&damaged, CLUSTER, reference, BLOCK_SIZE),
            Err(BlockError::BodyChecksum)
        );
        // Damage past the block's size is not the block's.
        let mut beyond = buffer.clone();
        beyond[HEADER_SIZE + 200] ^= 1;
        assert!(block_verify(&beyond, CLUSTER, reference, BLOCK_SIZE).is_ok());
    }

    #[test]
    fn block_seal_zeroes_what_a_reused_buffer_held_past_the_block() {
        let (mut buffer, _) = sealed(5, 0xaa);
        let block = Block {
            address: 6,
            block_type: BlockType::Index as u8,
            tree: 1,
            metadata: 0,
        };
        // A shorter block in the same buffer: the old body's tail must not reach the disk.
        block_seal(&mut buffer, CLUSTER, &block, 10, BLOCK_SIZE);
        assert!(buffer[HEADER_SIZE + 10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn block_verify_refuses_another_cluster() {
        let (buffer, reference) = sealed(5, 0xaa);
        assert_eq!(
            block_verify(&buffer, CLUSTER + 1, reference, BLOCK_SIZE),
            Err(BlockError::Invalid("block of another cluster"))
        );
    }
}
