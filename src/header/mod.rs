//! The one fixed-size header carried by every message on the wire and every prepare on disk.
//!
//! 256 bytes, `#[repr(C)]`, little-endian, zerocopy. The frame fields (checksums, cluster, size,
//! protocol, command, view, replica) mean the same for every command and are documented here.
//! The command fields mean what each command makes of them: [`commands`] has one struct per
//! command that names them, and messages are read and built through those structs. Only the
//! log's own bookkeeping (journal, view change, repair) reads a prepare's `op` and `parent`
//! directly, where they mean what they are called.

pub mod commands;

use crate::checksum::checksum;
use commands::{
    Block, CheckpointChunk, Commit, DoViewChange, Eviction, Headers, Ping, PingClient, Pong,
    PongClient, Prepare, PrepareOk, Reply, Request, RequestCheckpointChunk, RequestHeaders,
    RequestPrepare, RequestStartView, RequestStatus, Reserved, StartView, StartViewChange,
    StatusReport,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

pub const HEADER_SIZE: usize = 256;

/// The wire/disk protocol version carried in every header (and the superblock).
pub const PROTOCOL_VERSION: u16 = 1;

/// The layout every command shares. Fields without a doc comment are command fields: what they
/// carry is up to the command, whose struct in [`commands`] names them.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Header {
    /// BLAKE3-128 of bytes [16..256) of this header.
    pub checksum: u128,
    /// BLAKE3-128 of the body (bytes [256..size)).
    pub checksum_body: u128,
    pub parent: u128,
    pub client: u128,
    pub context: u128,
    /// The cluster id: a replica or client drops a message of another cluster.
    pub cluster: u128,
    pub op: u64,
    pub commit: u64,
    pub timestamp: u64,
    pub request: u64,
    pub session: u64,
    /// Total message size in bytes, header included.
    pub size: u32,
    /// A view: whose, the command's struct says (for a replica's message, the sender's); 0 for a
    /// command whose struct names none.
    pub view: u32,
    pub log_view: u32,
    /// `PROTOCOL_VERSION`.
    pub protocol: u16,
    /// A `Command`.
    pub command: u8,
    pub operation: u8,
    /// A replica index: which, the command's struct says (for a replica's message, the sender);
    /// 0 for a command whose struct names none.
    pub replica: u8,
    /// Must be zero.
    pub reserved: [u8; 103],
}

const _: () = assert!(core::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(core::mem::align_of::<Header>() == 16);

macro_rules! u8_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $variant = $value),* }

        impl $name {
            pub fn from_u8(value: u8) -> Option<$name> {
                match value { $($value => Some($name::$variant),)* _ => None }
            }
        }
    };
}

// For other modules' byte enums (`grid::BlockType`).
pub(crate) use u8_enum;

u8_enum!(
    /// What a message is. Each command is documented once, on its struct in [`commands`].
    Command {
        Reserved = 0,
        Ping = 1,
        Pong = 2,
        PingClient = 3,
        PongClient = 4,
        Request = 5,
        Prepare = 6,
        PrepareOk = 7,
        Reply = 8,
        Commit = 9,
        StartViewChange = 10,
        DoViewChange = 11,
        StartView = 12,
        RequestStartView = 13,
        RequestHeaders = 14,
        RequestPrepare = 15,
        Headers = 16,
        Eviction = 17,
        CheckpointChunk = 18,
        RequestCheckpointChunk = 19,
        Block = 20,
        /// Operator tool -> replica: what state are you in (`vsr status`).
        RequestStatus = 21,
        /// Replica -> operator tool, in answer, from any status.
        StatusReport = 22,
    }
);

u8_enum!(
    /// The operation a request/prepare/reply carries. Values below `STATE_MACHINE_FIRST` are the
    /// protocol's own; the rest belong to the state machine.
    Operation {
        Reserved = 0,
        /// The synthetic op 0 that anchors the hash chain.
        Root = 1,
        /// A client registering its session.
        Register = 2,
        /// A no-op the new primary may prepare (unused by clients).
        Noop = 3,
    }
);

pub const STATE_MACHINE_OPERATION_FIRST: u8 = 128;

impl Header {
    pub fn zeroed() -> Header {
        Header::new_zeroed()
    }

    pub fn new(command: Command, cluster: u128, replica: u8, view: u32) -> Header {
        let mut header = Header::zeroed();
        header.command = command as u8;
        header.cluster = cluster;
        header.replica = replica;
        header.view = view;
        header.protocol = PROTOCOL_VERSION;
        header.size = HEADER_SIZE as u32;
        header
    }

    /// A blank header for `op`: nothing is known of the prepare there.
    pub fn reserved(cluster: u128, op: u64) -> Header {
        let mut header = Reserved { op }.to_header(cluster);
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    /// The header-ring entry for a slot recovery found faulty with its entry damaged
    /// (`commands::RESERVED_FAULTY_OPERATION`).
    pub fn reserved_faulty(cluster: u128, op: u64) -> Header {
        let mut header = Reserved { op }.to_header(cluster);
        header.operation = commands::RESERVED_FAULTY_OPERATION;
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    /// The synthetic prepare at op 0 every journal starts from; identical on every replica.
    pub fn root_prepare(cluster: u128) -> Header {
        let root = Prepare {
            operation: Operation::Root as u8,
            ..Prepare::default()
        };
        let mut header = root.to_header(cluster);
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    pub fn command(&self) -> Option<Command> {
        Command::from_u8(self.command)
    }

    /// The body's size; 0 for a header whose size is below the header's own (which
    /// `invalid()` refuses), so a check on an unvalidated header cannot panic.
    pub fn body_size(&self) -> usize {
        (self.size as usize).saturating_sub(HEADER_SIZE)
    }

    pub fn calculate_checksum(&self) -> u128 {
        checksum(&self.as_bytes()[16..])
    }

    pub fn set_checksum(&mut self) {
        self.checksum = self.calculate_checksum();
    }

    pub fn valid_checksum(&self) -> bool {
        self.checksum == self.calculate_checksum()
    }

    pub fn set_checksum_body(&mut self, body: &[u8]) {
        self.checksum_body = checksum(body);
    }

    pub fn valid_checksum_body(&self, body: &[u8]) -> bool {
        self.checksum_body == checksum(body)
    }

    pub fn read_from(bytes: &[u8]) -> Header {
        Header::read_from_bytes(&bytes[..HEADER_SIZE]).expect("header slice is HEADER_SIZE bytes")
    }

    /// Why this header is malformed for its command, or None when it is well formed. Checked for
    /// everything from the network or the disk after the header checksum passes; `message_size_max`
    /// bounds `size`. The frame first, then the command's own checks.
    pub fn invalid(&self, message_size_max: usize) -> Option<&'static str> {
        if let Some(reason) = self.invalid_frame(message_size_max) {
            return Some(reason);
        }
        let Some(command) = self.command() else {
            return Some("unknown command");
        };
        match command {
            Command::Reserved => Reserved::invalid(self),
            Command::Ping => Ping::invalid(self),
            Command::Pong => Pong::invalid(self),
            Command::PingClient => PingClient::invalid(self),
            Command::PongClient => PongClient::invalid(self),
            Command::Request => Request::invalid(self),
            Command::Prepare => Prepare::invalid(self),
            Command::PrepareOk => PrepareOk::invalid(self),
            Command::Reply => Reply::invalid(self),
            Command::Commit => Commit::invalid(self),
            Command::StartViewChange => StartViewChange::invalid(self),
            Command::DoViewChange => DoViewChange::invalid(self),
            Command::StartView => StartView::invalid(self),
            Command::RequestStartView => RequestStartView::invalid(self),
            Command::RequestHeaders => RequestHeaders::invalid(self),
            Command::RequestPrepare => RequestPrepare::invalid(self),
            Command::Headers => Headers::invalid(self),
            Command::Eviction => Eviction::invalid(self),
            Command::CheckpointChunk => CheckpointChunk::invalid(self),
            Command::RequestCheckpointChunk => RequestCheckpointChunk::invalid(self),
            Command::Block => Block::invalid(self),
            Command::RequestStatus => RequestStatus::invalid(self),
            Command::StatusReport => StatusReport::invalid(self),
        }
    }

    fn invalid_frame(&self, message_size_max: usize) -> Option<&'static str> {
        if self.protocol != PROTOCOL_VERSION {
            return Some("protocol version");
        }
        if (self.size as usize) < HEADER_SIZE {
            return Some("size < header");
        }
        if self.size as usize > message_size_max {
            return Some("size > message_size_max");
        }
        if self.reserved.iter().any(|&b| b != 0) {
            return Some("reserved != 0");
        }
        None
    }
}

impl core::fmt::Debug for Header {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let command = self
            .command()
            .map(|c| format!("{c:?}"))
            .unwrap_or_else(|| format!("?{}", self.command));
        write!(
            f,
            "{command}{{v={} lv={} r={} op={} commit={} ts={} client={:x} req={} sess={} opn={} size={} ck={:08x} parent={:08x}}}",
            self.view,
            self.log_view,
            self.replica,
            self.op,
            self.commit,
            self.timestamp,
            self.client,
            self.request,
            self.session,
            self.operation,
            self.size,
            (self.checksum >> 96) as u32,
            (self.parent >> 96) as u32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_covers_every_field() {
        let mut h = Header::new(Command::Ping, 7, 1, 3);
        h.set_checksum();
        assert!(h.valid_checksum());
        let bytes = h.as_bytes().to_vec();
        for i in 16..HEADER_SIZE {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(
                !Header::read_from(&b).valid_checksum(),
                "byte {i} not covered"
            );
        }
    }

    #[test]
    fn invalid_catches_reserved_and_size() {
        let mut h = Header::new(Command::Ping, 1, 0, 0);
        assert_eq!(h.invalid(4096), None);
        h.reserved[5] = 1;
        assert_eq!(h.invalid(4096), Some("reserved != 0"));
        let mut h = Header::new(Command::Ping, 1, 0, 0);
        h.size = 8192;
        assert_eq!(h.invalid(4096), Some("size > message_size_max"));
        h.size = 10;
        assert_eq!(h.invalid(4096), Some("size < header"));
        let mut h = Header::new(Command::Ping, 1, 0, 0);
        h.command = 200;
        assert_eq!(h.invalid(4096), Some("unknown command"));
        h.command = Command::Ping as u8;
        h.protocol = 9;
        assert_eq!(h.invalid(4096), Some("protocol version"));
    }
}
