//! The superblock: the replica's durable VSR state (view, log_view, commit_max, the view's head
//! headers), kept in `SUPERBLOCK_COPIES` checksummed copies with a sequence number.
//!
//! Writes go copy by copy, so a crash tears at most one copy and the others hold either the old or
//! the new state. The replica acts on a state only after every copy of it is durable, so on open
//! the newest sequence held by a quorum of copies wins (`SuperBlock::choose`).

use crate::checksum::checksum;
use crate::config::{Config, PIPELINE_MAX_LIMIT};
use crate::header::commands::CheckpointName;
use crate::header::{Command, Header, HEADER_SIZE, PROTOCOL_VERSION};
use crate::storage::{Layout, SUPERBLOCK_COPIES, SUPERBLOCK_COPY_SIZE};
use std::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const SUPERBLOCK_FIXED_SIZE: usize = 256;
/// Copies that must agree on a sequence for it to be chosen over a newer, lone copy.
pub const SUPERBLOCK_QUORUM: usize = 2;

// A copy holds the fixed part and the view headers of the largest pipeline a configuration may
// have (`pipeline_max + 1` headers; `Config::validate` bounds `pipeline_max`).
const _: () = assert!(
    SUPERBLOCK_FIXED_SIZE + (PIPELINE_MAX_LIMIT as usize + 1) * HEADER_SIZE <= SUPERBLOCK_COPY_SIZE
);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SuperBlockHeader {
    /// BLAKE3-128 over the copy after this field: the rest of this header and the view headers.
    pub checksum: u128,
    pub cluster: u128,
    pub checkpoint_id: u128,
    pub checkpoint_digest: u128,
    pub sequence: u64,
    pub commit_max: u64,
    pub checkpoint_op: u64,
    pub checkpoint_size: u64,
    pub view: u32,
    pub log_view: u32,
    pub message_size_max: u32,
    pub journal_slot_count: u32,
    pub pipeline_max: u32,
    pub clients_max: u32,
    pub view_headers_count: u32,
    pub checkpoint_chunks: u32,
    pub protocol: u16,
    pub replica: u8,
    pub replica_count: u8,
    pub copy: u8,
    pub checkpoint_area: u8,
    pub rejoining: u8,
    /// The checkpoint before `checkpoint` (`PREVIOUS_CHECKPOINT_SIZE` bytes, see
    /// `encode_previous`): all zeros when there is none.
    pub checkpoint_previous: [u8; PREVIOUS_CHECKPOINT_SIZE],
    pub reserved: [u8; 121 - PREVIOUS_CHECKPOINT_SIZE],
}

/// Bytes of a `CheckpointRef` in the superblock's fixed part: id, digest, op, size, chunks, area.
const PREVIOUS_CHECKPOINT_SIZE: usize = 16 + 16 + 8 + 8 + 4 + 1;

fn encode_previous(checkpoint: &CheckpointRef) -> [u8; PREVIOUS_CHECKPOINT_SIZE] {
    let mut out = [0u8; PREVIOUS_CHECKPOINT_SIZE];
    out[0..16].copy_from_slice(&checkpoint.id.to_le_bytes());
    out[16..32].copy_from_slice(&checkpoint.digest.to_le_bytes());
    out[32..40].copy_from_slice(&checkpoint.op.to_le_bytes());
    out[40..48].copy_from_slice(&checkpoint.size.to_le_bytes());
    out[48..52].copy_from_slice(&checkpoint.chunks.to_le_bytes());
    out[52] = checkpoint.area;
    out
}

fn decode_previous(bytes: &[u8; PREVIOUS_CHECKPOINT_SIZE]) -> CheckpointRef {
    CheckpointRef {
        id: u128::from_le_bytes(bytes[0..16].try_into().unwrap()),
        digest: u128::from_le_bytes(bytes[16..32].try_into().unwrap()),
        op: u64::from_le_bytes(bytes[32..40].try_into().unwrap()),
        size: u64::from_le_bytes(bytes[40..48].try_into().unwrap()),
        chunks: u32::from_le_bytes(bytes[48..52].try_into().unwrap()),
        area: bytes[52],
    }
}

const _: () = assert!(core::mem::size_of::<SuperBlockHeader>() == SUPERBLOCK_FIXED_SIZE);

/// The VSR state the superblock makes durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsrState {
    pub view: u32,
    pub log_view: u32,
    pub commit_max: u64,
    /// The head of the log as of `log_view`'s start_view (newest first, contiguous ops, hash
    /// chained). After a crash, journal ops above the first of these that carry a view older than
    /// `log_view` were truncated by that view change and are discarded.
    pub view_headers: Vec<Header>,
    /// The newest durable checkpoint: the state the journal replays from after a crash.
    pub checkpoint: CheckpointRef,
    /// The checkpoint before it, in the other area (`op == 0`: none). Kept so that a restarted
    /// replica still serves it to peers: a peer syncs to it while the newer one is not yet held
    /// by a replication quorum. Its area may be partly overwritten by a later write that a crash
    /// interrupted; a syncing peer verifies every chunk, so a stale one is only refused.
    pub checkpoint_previous: CheckpointRef,
    /// Set by `vsr recover` on a replica whose data file was lost: it may have acknowledged ops
    /// it no longer holds, so it neither votes nor acknowledges until a start_view gives it the
    /// log head again. Cleared by the superblock write that installs that view.
    pub rejoining: bool,
}

/// Where a checkpoint lives and how to verify it. `op == 0` is the formatted, empty state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointRef {
    /// The last op applied to the state the checkpoint holds.
    pub op: u64,
    /// Checksum over the checksums of its chunk bodies, in order: equal on every replica.
    pub id: u128,
    /// Bytes of checkpoint content (client sessions, then the state machine snapshot).
    pub size: u64,
    pub chunks: u32,
    /// Which of the two interleaved checkpoint areas holds it (see `checkpoint.rs`).
    pub area: u8,
    /// The state machine's digest at `op`, checked again after loading.
    pub digest: u128,
}

impl CheckpointRef {
    /// How pings and commit heartbeats name it.
    pub fn name(&self) -> CheckpointName {
        CheckpointName {
            op: self.op,
            id: self.id,
        }
    }

    /// Whether `self` may be recorded as the checkpoint before `newer`: a real checkpoint, older,
    /// and in the other area (the one `newer` did not overwrite).
    pub fn precedes(&self, newer: &CheckpointRef) -> bool {
        self.op > 0 && self.op < newer.op && self.area != newer.area
    }
}

impl VsrState {
    pub fn assert_valid(&self) {
        assert!(self.log_view <= self.view);
        let previous = self.checkpoint_previous;
        assert!(
            previous.op == 0 || previous.precedes(&self.checkpoint),
            "previous checkpoint {previous:?} does not precede {:?}",
            self.checkpoint
        );
        assert!(!self.view_headers.is_empty());
        for pair in self.view_headers.windows(2) {
            assert_eq!(
                pair[0].op,
                pair[1].op + 1,
                "view headers are not contiguous"
            );
            assert_eq!(
                pair[0].parent, pair[1].checksum,
                "view headers do not chain"
            );
        }
    }

    /// The op of the log head recorded by the last view change.
    pub fn view_head_op(&self) -> u64 {
        self.view_headers[0].op
    }

    /// True if `self` may replace `old` on disk: VSR state only moves forward.
    pub fn monotonic_after(&self, old: &VsrState) -> bool {
        self.view >= old.view
            && self.log_view >= old.log_view
            && self.commit_max >= old.commit_max
            && self.checkpoint.op >= old.checkpoint.op
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperBlock {
    pub cluster: u128,
    pub replica: u8,
    pub replica_count: u8,
    pub sequence: u64,
    pub message_size_max: u32,
    pub journal_slot_count: u32,
    pub pipeline_max: u32,
    pub clients_max: u32,
    pub vsr_state: VsrState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuperBlockError {
    /// No copy has a valid checksum: the file was never formatted, or is not a data file.
    NoValidCopy,
    Foreign {
        what: &'static str,
        expected: String,
        found: String,
    },
    /// Two valid copies claim the same sequence but differ.
    Conflict { sequence: u64 },
}

impl fmt::Display for SuperBlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuperBlockError::NoValidCopy => write!(
                f,
                "no valid superblock copy: the data file is unformatted or damaged (run `vsr format`)"
            ),
            SuperBlockError::Foreign { what, expected, found } => {
                write!(f, "data file belongs elsewhere: {what} is {found}, expected {expected}")
            }
            SuperBlockError::Conflict { sequence } => {
                write!(f, "superblock copies disagree at sequence {sequence}: refusing to guess")
            }
        }
    }
}

impl std::error::Error for SuperBlockError {}

impl SuperBlock {
    pub fn new(config: &Config, cluster: u128, replica: u8, vsr_state: VsrState) -> SuperBlock {
        SuperBlock {
            cluster,
            replica,
            replica_count: config.replica_count,
            sequence: 1,
            message_size_max: config.message_size_max,
            journal_slot_count: config.journal_slot_count,
            pipeline_max: config.pipeline_max,
            clients_max: config.clients_max,
            vsr_state,
        }
    }

    /// The state of a freshly formatted replica: view 0, only the root prepare.
    pub fn formatted(config: &Config, cluster: u128, replica: u8) -> SuperBlock {
        let vsr_state = VsrState {
            view: 0,
            log_view: 0,
            commit_max: 0,
            view_headers: vec![Header::root_prepare(cluster)],
            checkpoint: CheckpointRef::default(),
            checkpoint_previous: CheckpointRef::default(),
            rejoining: false,
        };
        SuperBlock::new(config, cluster, replica, vsr_state)
    }

    /// Encodes copy `copy` into `buffer` (at least `layout.superblock_copy_size` bytes).
    pub fn encode(&self, copy: u8, buffer: &mut [u8], layout: &Layout) {
        let size = layout.superblock_copy_size as usize;
        let buffer = &mut buffer[..size];
        buffer.fill(0);
        let headers = &self.vsr_state.view_headers;
        assert!(SUPERBLOCK_FIXED_SIZE + headers.len() * HEADER_SIZE <= size);
        let header = SuperBlockHeader {
            checksum: 0,
            cluster: self.cluster,
            checkpoint_id: self.vsr_state.checkpoint.id,
            checkpoint_digest: self.vsr_state.checkpoint.digest,
            sequence: self.sequence,
            commit_max: self.vsr_state.commit_max,
            checkpoint_op: self.vsr_state.checkpoint.op,
            checkpoint_size: self.vsr_state.checkpoint.size,
            view: self.vsr_state.view,
            log_view: self.vsr_state.log_view,
            message_size_max: self.message_size_max,
            journal_slot_count: self.journal_slot_count,
            pipeline_max: self.pipeline_max,
            clients_max: self.clients_max,
            view_headers_count: headers.len() as u32,
            checkpoint_chunks: self.vsr_state.checkpoint.chunks,
            protocol: PROTOCOL_VERSION,
            replica: self.replica,
            replica_count: self.replica_count,
            copy,
            checkpoint_area: self.vsr_state.checkpoint.area,
            rejoining: self.vsr_state.rejoining as u8,
            checkpoint_previous: encode_previous(&self.vsr_state.checkpoint_previous),
            reserved: [0; 121 - PREVIOUS_CHECKPOINT_SIZE],
        };
        buffer[..SUPERBLOCK_FIXED_SIZE].copy_from_slice(header.as_bytes());
        for (i, h) in headers.iter().enumerate() {
            let at = SUPERBLOCK_FIXED_SIZE + i * HEADER_SIZE;
            buffer[at..at + HEADER_SIZE].copy_from_slice(h.as_bytes());
        }
        let sum = checksum(&buffer[16..]);
        buffer[..16].copy_from_slice(&sum.to_le_bytes());
    }

    /// Decodes one copy; None if it is damaged or malformed.
    pub fn decode(buffer: &[u8], layout: &Layout) -> Option<SuperBlock> {
        let size = layout.superblock_copy_size as usize;
        let buffer = &buffer[..size];
        let header = SuperBlockHeader::read_from_bytes(&buffer[..SUPERBLOCK_FIXED_SIZE]).ok()?;
        if header.checksum != checksum(&buffer[16..]) || header.protocol != PROTOCOL_VERSION {
            return None;
        }
        let count = header.view_headers_count as usize;
        if count == 0 || SUPERBLOCK_FIXED_SIZE + count * HEADER_SIZE > size {
            return None;
        }
        if header.reserved.iter().any(|&b| b != 0) || header.log_view > header.view {
            return None;
        }
        if header.checkpoint_area > 1
            || header.rejoining > 1
            || header.checkpoint_op > header.commit_max
            || (header.checkpoint_op > 0) != (header.checkpoint_chunks > 0)
        {
            return None;
        }
        let checkpoint = CheckpointRef {
            op: header.checkpoint_op,
            id: header.checkpoint_id,
            size: header.checkpoint_size,
            chunks: header.checkpoint_chunks,
            area: header.checkpoint_area,
            digest: header.checkpoint_digest,
        };
        let checkpoint_previous = decode_previous(&header.checkpoint_previous);
        if checkpoint_previous.area > 1
            || (checkpoint_previous.op > 0) != (checkpoint_previous.chunks > 0)
            || (checkpoint_previous.op > 0 && !checkpoint_previous.precedes(&checkpoint))
        {
            return None;
        }
        let mut view_headers = Vec::with_capacity(count);
        for i in 0..count {
            let at = SUPERBLOCK_FIXED_SIZE + i * HEADER_SIZE;
            let h = Header::read_from(&buffer[at..at + HEADER_SIZE]);
            if !h.valid_checksum() || h.command() != Some(Command::Prepare) {
                return None;
            }
            view_headers.push(h);
        }
        for pair in view_headers.windows(2) {
            if pair[0].op != pair[1].op + 1 || pair[0].parent != pair[1].checksum {
                return None;
            }
        }
        let vsr_state = VsrState {
            view: header.view,
            log_view: header.log_view,
            commit_max: header.commit_max,
            view_headers,
            checkpoint,
            checkpoint_previous,
            rejoining: header.rejoining == 1,
        };
        Some(SuperBlock {
            cluster: header.cluster,
            replica: header.replica,
            replica_count: header.replica_count,
            sequence: header.sequence,
            message_size_max: header.message_size_max,
            journal_slot_count: header.journal_slot_count,
            pipeline_max: header.pipeline_max,
            clients_max: header.clients_max,
            vsr_state,
        })
    }

    /// Chooses the superblock from the decoded copies (None = damaged copy).
    ///
    /// Copies are written one after another, and the replica acts on a state only once every
    /// copy of it is durable. So the newest sequence held by a quorum of copies
    /// (`SUPERBLOCK_QUORUM`) wins, and a newer sequence on fewer copies is a write a crash
    /// interrupted, never acted on, and is ignored. Only when no sequence has a quorum (damage on
    /// most copies) is the newest valid copy trusted alone: a state newer than any acted on is
    /// harmless. Valid copies of one sequence must agree.
    pub fn choose(copies: &[Option<SuperBlock>]) -> Result<SuperBlock, SuperBlockError> {
        assert_eq!(copies.len(), SUPERBLOCK_COPIES);
        let valid: Vec<&SuperBlock> = copies.iter().flatten().collect();
        for a in &valid {
            if valid.iter().any(|b| b.sequence == a.sequence && b != a) {
                return Err(SuperBlockError::Conflict {
                    sequence: a.sequence,
                });
            }
        }
        let count = |sequence: u64| valid.iter().filter(|c| c.sequence == sequence).count();
        let quorum = valid
            .iter()
            .filter(|c| count(c.sequence) >= SUPERBLOCK_QUORUM)
            .max_by_key(|c| c.sequence);
        let newest = valid.iter().max_by_key(|c| c.sequence);
        let mut chosen = quorum
            .or(newest)
            .map(|c| (*c).clone())
            .ok_or(SuperBlockError::NoValidCopy)?;
        // The next write must not reuse the sequence of an ignored, interrupted copy.
        chosen.sequence = newest.unwrap().sequence;
        Ok(chosen)
    }

    /// The copies that hold `chosen`'s state (what `choose` returned from `copies`).
    pub fn holders(
        copies: &[Option<SuperBlock>],
        chosen: &SuperBlock,
    ) -> [bool; SUPERBLOCK_COPIES] {
        let mut holders = [false; SUPERBLOCK_COPIES];
        for (holder, copy) in holders.iter_mut().zip(copies) {
            *holder = copy
                .as_ref()
                .is_some_and(|c| c.vsr_state == chosen.vsr_state);
        }
        holders
    }

    /// The order in which to write the copies of the next state, given which copies hold the
    /// durable one: the others first. So the durable state keeps every copy it has until the
    /// new state has a quorum of its own, and `choose` returns the durable state or the new one
    /// at every point of the write, never an older one. (Writing in index order would not do
    /// after a crash left the durable state on only a quorum of copies: overwriting one of those
    /// first would hand `choose` back an older state still on two copies.)
    pub fn write_order(holders: &[bool; SUPERBLOCK_COPIES]) -> [usize; SUPERBLOCK_COPIES] {
        let mut order = [0; SUPERBLOCK_COPIES];
        let others = (0..SUPERBLOCK_COPIES).filter(|&c| !holders[c]);
        let holding = (0..SUPERBLOCK_COPIES).filter(|&c| holders[c]);
        for (slot, copy) in order.iter_mut().zip(others.chain(holding)) {
            *slot = copy;
        }
        order
    }

    /// Refuses a data file formatted for another cluster, replica or configuration.
    pub fn check_identity(
        &self,
        config: &Config,
        cluster: Option<u128>,
        replica: Option<u8>,
    ) -> Result<(), SuperBlockError> {
        let foreign = |what, expected: String, found: String| {
            Err(SuperBlockError::Foreign {
                what,
                expected,
                found,
            })
        };
        if let Some(cluster) = cluster {
            if self.cluster != cluster {
                return foreign("cluster", cluster.to_string(), self.cluster.to_string());
            }
        }
        if let Some(replica) = replica {
            if self.replica != replica {
                return foreign(
                    "replica index",
                    replica.to_string(),
                    self.replica.to_string(),
                );
            }
        }
        if self.replica_count != config.replica_count {
            return foreign(
                "replica count",
                config.replica_count.to_string(),
                self.replica_count.to_string(),
            );
        }
        let layout = [
            (
                "message_size_max",
                config.message_size_max,
                self.message_size_max,
            ),
            (
                "journal_slot_count",
                config.journal_slot_count,
                self.journal_slot_count,
            ),
            ("pipeline_max", config.pipeline_max, self.pipeline_max),
            ("clients_max", config.clients_max, self.clients_max),
        ];
        for (what, expected, found) in layout {
            if expected != found {
                return foreign(what, expected.to_string(), found.to_string());
            }
        }
        if self.replica >= self.replica_count {
            return foreign(
                "replica index",
                format!("< {}", self.replica_count),
                self.replica.to_string(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Config, Layout, SuperBlock) {
        let mut config = Config::timing_defaults(3);
        config.message_size_max = 8192;
        let layout = Layout::new(&config);
        let sb = SuperBlock::formatted(&config, 77, 1);
        (config, layout, sb)
    }

    /// Every mix of copies a crash can leave (each copy: none, or a state at sequence 1..=4),
    /// then every prefix of the next write in `write_order`: `choose` never goes back past
    /// the state chosen at the start, and never fails.
    #[test]
    fn writes_in_write_order_never_regress() {
        let (_, _, base) = setup();
        let state = |sequence: u64| {
            let mut sb = base.clone();
            sb.sequence = sequence;
            sb.vsr_state.commit_max = sequence;
            sb
        };
        let mut mixes = 0;
        for code in 0..5u32.pow(SUPERBLOCK_COPIES as u32) {
            let copies: Vec<Option<SuperBlock>> = (0..SUPERBLOCK_COPIES as u32)
                .map(|c| match code / 5u32.pow(c) % 5 {
                    0 => None,
                    s => Some(state(s as u64)),
                })
                .collect();
            let Ok(durable) = SuperBlock::choose(&copies) else {
                continue;
            };
            mixes += 1;
            let floor = durable.vsr_state.commit_max;
            let next = state(durable.sequence + 1);
            let holders = SuperBlock::holders(&copies, &durable);
            assert!(holders.iter().any(|&h| h));
            let mut writing = copies.clone();
            for copy in SuperBlock::write_order(&holders) {
                writing[copy] = Some(next.clone());
                let chosen = SuperBlock::choose(&writing).expect("a choice mid-write");
                assert!(
                    chosen.vsr_state.commit_max >= floor,
                    "{code}: regressed to {} from {floor}",
                    chosen.vsr_state.commit_max
                );
            }
        }
        assert!(mixes > 300, "{mixes}");
    }

    #[test]
    fn roundtrip() {
        let (_, layout, sb) = setup();
        let mut buf = vec![0u8; layout.superblock_copy_size as usize];
        sb.encode(2, &mut buf, &layout);
        assert_eq!(SuperBlock::decode(&buf, &layout), Some(sb));
    }

    #[test]
    fn previous_checkpoint_roundtrips_and_must_precede() {
        let (_, layout, mut sb) = setup();
        sb.vsr_state.commit_max = 1000;
        sb.vsr_state.checkpoint = CheckpointRef {
            op: 966,
            id: 0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111,
            size: 40_000,
            chunks: 5,
            area: 0,
            digest: 0x1234,
        };
        sb.vsr_state.checkpoint_previous = CheckpointRef {
            op: 483,
            id: 0x1111_2222_3333_4444_5555_6666_7777_8888,
            size: 30_001,
            chunks: 4,
            area: 1,
            digest: u128::MAX - 7,
        };
        sb.vsr_state.assert_valid();
        let mut buf = vec![0u8; layout.superblock_copy_size as usize];
        sb.encode(1, &mut buf, &layout);
        assert_eq!(SuperBlock::decode(&buf, &layout), Some(sb.clone()));
        // A previous checkpoint in the same area, or not older, is malformed.
        for bad in [
            |p: &mut CheckpointRef| p.area = 0,
            |p: &mut CheckpointRef| p.op = 966,
            |p: &mut CheckpointRef| p.chunks = 0,
        ] {
            let mut wrong = sb.clone();
            bad(&mut wrong.vsr_state.checkpoint_previous);
            wrong.encode(1, &mut buf, &layout);
            assert_eq!(SuperBlock::decode(&buf, &layout), None);
        }
    }

    #[test]
    fn damage_is_detected() {
        let (_, layout, sb) = setup();
        let mut buf = vec![0u8; layout.superblock_copy_size as usize];
        sb.encode(0, &mut buf, &layout);
        for at in [0, 20, 100, 300, buf.len() - 1] {
            let mut b = buf.clone();
            b[at] ^= 0x40;
            assert_eq!(SuperBlock::decode(&b, &layout), None, "flip at {at}");
        }
    }

    #[test]
    fn quorum_of_copies_wins_over_an_interrupted_write() {
        let (_, _, sb) = setup();
        let mut newer = sb.clone();
        newer.sequence = 2;
        newer.vsr_state.view = 5;
        // A crash after writing one copy of sequence 2: never acted on, the quorum keeps 1.
        let chosen = SuperBlock::choose(&[
            Some(newer.clone()),
            Some(sb.clone()),
            Some(sb.clone()),
            Some(sb.clone()),
        ])
        .unwrap();
        assert_eq!(chosen.vsr_state, sb.vsr_state);
        assert_eq!(
            chosen.sequence, 2,
            "the next write gets a sequence no copy has used"
        );
        // Two copies of sequence 2 are a quorum: it wins.
        let chosen = SuperBlock::choose(&[
            Some(newer.clone()),
            Some(newer.clone()),
            Some(sb.clone()),
            None,
        ])
        .unwrap();
        assert_eq!(chosen, newer);
        // No quorum anywhere (three copies damaged): the newest valid copy.
        let chosen = SuperBlock::choose(&[None, None, Some(newer.clone()), None]).unwrap();
        assert_eq!(chosen, newer);
        let chosen =
            SuperBlock::choose(&[Some(sb.clone()), None, Some(newer.clone()), None]).unwrap();
        assert_eq!(chosen, newer);
        assert_eq!(
            SuperBlock::choose(&[None, None, None, None]),
            Err(SuperBlockError::NoValidCopy)
        );
        let mut conflicting = newer.clone();
        conflicting.vsr_state.view = 6;
        assert!(matches!(
            SuperBlock::choose(&[Some(newer), Some(conflicting), None, None]),
            Err(SuperBlockError::Conflict { sequence: 2 })
        ));
    }

    #[test]
    fn foreign_file_refused() {
        let (config, _, sb) = setup();
        assert!(sb.check_identity(&config, Some(77), Some(1)).is_ok());
        assert!(sb.check_identity(&config, Some(78), None).is_err());
        assert!(sb.check_identity(&config, None, Some(2)).is_err());
        let mut other = config.clone();
        other.journal_slot_count = 512;
        assert!(sb.check_identity(&other, None, None).is_err());
    }
}
