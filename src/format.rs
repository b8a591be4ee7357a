//! The image of a freshly formatted data file: superblock copies, a header ring of reserved
//! headers with the root prepare at slot 0, and the root prepare in prepare slot 0. Everything not
//! listed is zero. `vsr format` writes these; the simulator writes them into its memory disk.

use crate::config::Config;
use crate::header::{Header, HEADER_SIZE};
use crate::storage::{Layout, Zone, SUPERBLOCK_COPIES};
use crate::superblock::SuperBlock;
use zerocopy::IntoBytes;

/// (zone, offset within zone, bytes) to write, all sector-aligned.
pub fn format_writes(config: &Config, cluster: u128, replica: u8) -> Vec<(Zone, u64, Vec<u8>)> {
    image_writes(config, cluster, replica, false)
}

/// The image `vsr recover` writes: a formatted file whose superblock says `rejoining`, so the
/// replica neither votes nor acks until a start_view tells it the cluster's log, and never
/// counts as a nack for an op it may have acknowledged before its disk was lost.
pub fn recover_writes(config: &Config, cluster: u128, replica: u8) -> Vec<(Zone, u64, Vec<u8>)> {
    assert!(config.replica_count > 1, "recover: needs peers");
    image_writes(config, cluster, replica, true)
}

fn image_writes(
    config: &Config,
    cluster: u128,
    replica: u8,
    rejoining: bool,
) -> Vec<(Zone, u64, Vec<u8>)> {
    config.validate().expect("format: configuration");
    assert!(
        replica < config.replica_count,
        "format: replica index out of range"
    );
    let layout = Layout::new(config);
    let mut writes = Vec::new();
    let mut superblock = SuperBlock::formatted(config, cluster, replica);
    superblock.vsr_state.rejoining = rejoining;
    for copy in 0..SUPERBLOCK_COPIES {
        let mut bytes = vec![0u8; layout.superblock_copy_size as usize];
        superblock.encode(copy as u8, &mut bytes, &layout);
        writes.push((
            Zone::Superblock,
            copy as u64 * layout.superblock_copy_size,
            bytes,
        ));
    }
    let root = Header::root_prepare(cluster);
    let mut ring = vec![0u8; layout.wal_headers_size as usize];
    for slot in 0..config.journal_slot_count as usize {
        let header = if slot == 0 {
            root
        } else {
            Header::reserved(cluster, slot as u64)
        };
        ring[slot * HEADER_SIZE..(slot + 1) * HEADER_SIZE].copy_from_slice(header.as_bytes());
    }
    writes.push((Zone::WalHeaders, 0, ring));
    let mut prepare = vec![0u8; crate::config::SECTOR_SIZE];
    prepare[..HEADER_SIZE].copy_from_slice(root.as_bytes());
    writes.push((Zone::WalPrepares, 0, prepare));
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_is_aligned_and_inside_zones() {
        let config = Config::timing_defaults(3);
        let layout = Layout::new(&config);
        for (zone, offset, bytes) in format_writes(&config, 9, 2) {
            assert_eq!(offset % crate::config::SECTOR_SIZE as u64, 0);
            assert_eq!(bytes.len() % crate::config::SECTOR_SIZE, 0);
            assert!(offset + bytes.len() as u64 <= layout.zone_size(zone));
        }
    }
}
