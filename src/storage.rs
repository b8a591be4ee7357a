//! The storage seam and the data file layout.
//!
//! The replica submits reads and writes and later receives completions; it never blocks and is
//! never called back from inside `read`/`write`. A write completion means the bytes are durable
//! (production: O_DIRECT + O_DSYNC; simulation: a crash never loses a completed write).

use crate::config::{Config, SECTOR_SIZE};
use crate::header::HEADER_SIZE;
use crate::message::Message;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Zone {
    Superblock,
    WalHeaders,
    WalPrepares,
    ClientReplies,
    /// Two interleaved checkpoint areas. Last in the file, and unbounded: the file grows as the
    /// state does, so a data file is formatted without knowing the ledger's capacity.
    Checkpoint,
}

pub const ZONES: [Zone; 5] = [
    Zone::Superblock,
    Zone::WalHeaders,
    Zone::WalPrepares,
    Zone::ClientReplies,
    Zone::Checkpoint,
];

/// The checkpoint zone's addressable size (the file only grows as far as it is written).
pub const CHECKPOINT_ZONE_SIZE_MAX: u64 = 1 << 42;

/// Copies of the superblock kept in the superblock zone.
pub const SUPERBLOCK_COPIES: usize = 4;

/// Each superblock copy's size on disk (the superblock module asserts its largest encoding fits).
pub const SUPERBLOCK_COPY_SIZE: usize = 64 * 1024;

/// Where each zone lives in the data file. Derived from the configuration only, so `format` and
/// every later start agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub superblock_copy_size: u64,
    pub wal_headers_size: u64,
    pub wal_prepares_size: u64,
    pub client_replies_size: u64,
    pub message_size_max: u64,
    pub slot_count: u64,
}

impl Layout {
    pub fn new(config: &Config) -> Layout {
        let slot_count = config.journal_slot_count as u64;
        let message_size_max = config.message_size_max as u64;
        // Fixed, so a data file can be read before its configuration is known.
        let superblock_copy_size = SUPERBLOCK_COPY_SIZE as u64;
        Layout {
            superblock_copy_size,
            wal_headers_size: (slot_count * HEADER_SIZE as u64)
                .next_multiple_of(SECTOR_SIZE as u64),
            wal_prepares_size: slot_count * message_size_max,
            client_replies_size: config.clients_max as u64 * message_size_max,
            message_size_max,
            slot_count,
        }
    }

    pub fn zone_size(&self, zone: Zone) -> u64 {
        match zone {
            Zone::Superblock => self.superblock_copy_size * SUPERBLOCK_COPIES as u64,
            Zone::WalHeaders => self.wal_headers_size,
            Zone::WalPrepares => self.wal_prepares_size,
            Zone::ClientReplies => self.client_replies_size,
            Zone::Checkpoint => CHECKPOINT_ZONE_SIZE_MAX,
        }
    }

    pub fn zone_offset(&self, zone: Zone) -> u64 {
        let mut offset = 0;
        for z in ZONES {
            if z == zone {
                return offset;
            }
            offset += self.zone_size(z);
        }
        unreachable!()
    }

    /// Bytes `format` writes: every zone but the checkpoint zone, which follows them and grows.
    pub fn total_size(&self) -> u64 {
        self.zone_offset(Zone::Checkpoint)
    }

    /// Where block `index` of checkpoint area `area` (0 or 1) lives in the checkpoint zone. The
    /// areas interleave block by block, so both grow with the file and neither needs a size
    /// fixed at format time.
    pub fn checkpoint_block_offset(&self, area: u8, index: u32) -> u64 {
        assert!(area < 2);
        (2 * index as u64 + area as u64) * self.message_size_max
    }

    /// The zone and offset within it of an absolute file offset.
    pub fn zone_of(&self, offset: u64) -> Option<(Zone, u64)> {
        ZONES.iter().find_map(|&z| {
            let start = self.zone_offset(z);
            (offset >= start && offset < start + self.zone_size(z)).then(|| (z, offset - start))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
}

/// One read or write. `len` bytes at `offset` within `zone`, from/into `buffer[..len]`.
#[derive(Debug)]
pub struct IoRequest {
    pub kind: IoKind,
    pub zone: Zone,
    pub offset: u64,
    pub len: usize,
    pub buffer: Message,
    /// Opaque to storage; tells the replica what the completion is for.
    pub token: u64,
}

impl IoRequest {
    pub fn assert_valid(&self, layout: &Layout) {
        assert!(
            self.len > 0 && self.len % SECTOR_SIZE == 0,
            "unaligned length {}",
            self.len
        );
        assert!(
            self.offset % SECTOR_SIZE as u64 == 0,
            "unaligned offset {}",
            self.offset
        );
        assert!(self.len <= self.buffer.capacity());
        assert!(
            self.offset + self.len as u64 <= layout.zone_size(self.zone),
            "{:?} i/o beyond zone: {}+{}",
            self.zone,
            self.offset,
            self.len
        );
        if self.kind == IoKind::Read {
            assert!(self.buffer.is_unique(), "read into a shared buffer");
        }
    }
}

/// A finished request, handed back with its buffer (holding the data, for a read).
#[derive(Debug)]
pub struct IoCompletion {
    pub kind: IoKind,
    pub zone: Zone,
    pub offset: u64,
    pub len: usize,
    pub buffer: Message,
    pub token: u64,
}

pub trait Storage {
    fn layout(&self) -> &Layout;
    /// Queue a request. Never completes inside this call.
    fn submit(&mut self, request: IoRequest);
    /// The next finished request, if any; the driving loop hands it to the replica.
    fn next_completion(&mut self) -> Option<IoCompletion>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_contiguous_and_aligned() {
        let layout = Layout::new(&Config::production(3));
        let mut expected = 0;
        for z in ZONES {
            assert_eq!(layout.zone_offset(z), expected);
            assert_eq!(layout.zone_offset(z) % SECTOR_SIZE as u64, 0);
            if z == Zone::Checkpoint {
                assert_eq!(layout.total_size(), expected);
            }
            expected += layout.zone_size(z);
        }
        assert_eq!(
            layout.zone_of(layout.zone_offset(Zone::WalPrepares) + 5),
            Some((Zone::WalPrepares, 5))
        );
    }
}
