//! The one fixed-size header carried by every message on the wire and every prepare on disk.
//!
//! 256 bytes, `#[repr(C)]`, little-endian, zerocopy. `checksum` covers the header bytes after
//! itself; `checksum_body` covers the body. Fields have a per-command meaning documented on
//! [`Command`]; a field a command does not use must be zero, which `invalid()` checks so that
//! nothing unexpected rides along.

use crate::checksum::checksum;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

pub const HEADER_SIZE: usize = 256;

/// The wire/disk protocol version carried in every header (and the superblock).
pub const PROTOCOL_VERSION: u16 = 1;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Header {
    /// BLAKE3-128 of bytes [16..256) of this header.
    pub checksum: u128,
    /// BLAKE3-128 of the body (bytes [256..size)).
    pub checksum_body: u128,
    /// prepare: checksum of the previous prepare (the hash chain). request: checksum of the
    /// client's previous reply. reply/prepare_ok: checksum of the prepare.
    pub parent: u128,
    /// The client's id (request, prepare, prepare_ok, reply, eviction, ping_client, pong_client).
    /// ping/commit: id of the sender's previous checkpoint while it serves it (0: none).
    pub client: u128,
    /// prepare: checksum of the request. commit: checksum of the prepare at `commit`.
    /// request_prepare: checksum wanted (0: any). start_view/request_start_view: nonce.
    /// ping: ping's monotonic send time echoed in pong.
    pub context: u128,
    pub cluster: u128,
    /// The op number; request_headers: the highest op wanted.
    pub op: u64,
    /// The sender's commit number; request_headers: the lowest op wanted.
    pub commit: u64,
    /// prepare/reply: cluster time of the op. ping: monotonic send time. pong: wall clock.
    pub timestamp: u64,
    /// request/prepare/reply: the client's request number. ping/commit: op of the sender's
    /// durable checkpoint (its id in `parent`).
    pub request: u64,
    /// request/prepare/reply: the client's session (the op that registered it). ping/commit: op
    /// of the sender's previous checkpoint while it serves it (its id in `client`; 0: none).
    pub session: u64,
    /// Total message size in bytes, header included.
    pub size: u32,
    pub view: u32,
    /// do_view_change: the last view in which the sender was normal.
    pub log_view: u32,
    pub protocol: u16,
    pub command: u8,
    pub operation: u8,
    pub replica: u8,
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

u8_enum!(
    /// What a message is. Per-command use of header fields is documented in docs/protocol.md.
    Command {
        /// A blank header: a journal slot with nothing in it, or a gap in a view change suffix.
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
        /// One chunk of a checkpoint: on disk in a checkpoint area, and on the wire in state
        /// sync. op: the checkpoint's op; request: chunk index; commit: chunk count; timestamp:
        /// the checkpoint's byte size; context: the checkpoint id (0 on disk).
        CheckpointChunk = 18,
        /// State sync: asks for chunk `request` of the checkpoint at `op` with id `context`.
        RequestCheckpointChunk = 19,
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
        let mut header = Header::new(Command::Reserved, cluster, 0, 0);
        header.op = op;
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    /// The synthetic prepare at op 0 every journal starts from; identical on every replica.
    pub fn root_prepare(cluster: u128) -> Header {
        let mut header = Header::new(Command::Prepare, cluster, 0, 0);
        header.operation = Operation::Root as u8;
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    pub fn command(&self) -> Option<Command> {
        Command::from_u8(self.command)
    }

    pub fn body_size(&self) -> usize {
        self.size as usize - HEADER_SIZE
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
    /// bounds `size`.
    pub fn invalid(&self, message_size_max: usize) -> Option<&'static str> {
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
        let Some(command) = self.command() else {
            return Some("unknown command");
        };
        let empty = self.size as usize == HEADER_SIZE;
        match command {
            Command::Reserved => {
                if !empty || self.client != 0 || self.view != 0 || self.operation != 0 {
                    return Some("reserved: fields set");
                }
            }
            Command::Ping => {
                if !empty || self.operation != 0 || (self.session == 0) != (self.client == 0) {
                    return Some("ping: fields set");
                }
            }
            Command::Pong => {
                if !empty || self.client != 0 || self.operation != 0 {
                    return Some("pong: fields set");
                }
            }
            Command::PingClient | Command::PongClient => {
                if !empty || self.operation != 0 {
                    return Some("ping_client/pong_client: fields set");
                }
                if command == Command::PingClient && self.client == 0 {
                    return Some("ping_client: client == 0");
                }
            }
            Command::Request => {
                if self.client == 0 {
                    return Some("request: client == 0");
                }
                if self.op != 0 || self.commit != 0 || self.timestamp != 0 || self.replica != 0 {
                    return Some("request: replica fields set");
                }
                match Operation::from_u8(self.operation) {
                    Some(Operation::Register) => {
                        if self.session != 0 || self.request != 0 || !empty {
                            return Some("request: register with session/request/body");
                        }
                    }
                    Some(_) => return Some("request: reserved operation"),
                    None if self.operation < STATE_MACHINE_OPERATION_FIRST => {
                        return Some("request: unknown operation")
                    }
                    None => {
                        if self.session == 0 || self.request == 0 {
                            return Some("request: no session/request number");
                        }
                    }
                }
            }
            Command::Prepare => {
                match Operation::from_u8(self.operation) {
                    Some(Operation::Reserved) => return Some("prepare: reserved operation"),
                    Some(Operation::Root) => {
                        if self.op != 0 || self.parent != 0 || !empty || self.client != 0 {
                            return Some("prepare: malformed root");
                        }
                    }
                    Some(Operation::Noop) => {
                        if self.client != 0 || self.op == 0 {
                            return Some("prepare: malformed noop");
                        }
                    }
                    Some(Operation::Register) | None => {
                        if self.op == 0 || self.client == 0 {
                            return Some("prepare: op 0 or no client");
                        }
                        if self.operation < STATE_MACHINE_OPERATION_FIRST
                            && Operation::from_u8(self.operation).is_none()
                        {
                            return Some("prepare: unknown operation");
                        }
                    }
                }
                if self.op > 0 && self.commit >= self.op {
                    return Some("prepare: commit >= op");
                }
            }
            Command::PrepareOk => {
                if !empty || self.op == 0 || self.commit >= self.op {
                    return Some("prepare_ok: malformed");
                }
            }
            Command::Reply => {
                if self.client == 0 || self.op == 0 || self.commit < self.op {
                    return Some("reply: malformed");
                }
            }
            Command::Commit => {
                if !empty || self.operation != 0 || (self.session == 0) != (self.client == 0) {
                    return Some("commit: fields set");
                }
            }
            Command::StartViewChange | Command::RequestStartView => {
                if !empty || self.client != 0 || self.op != 0 || self.commit != 0 {
                    return Some("view change: fields set");
                }
            }
            Command::DoViewChange => {
                if self.client != 0 || self.log_view > self.view || self.commit > self.op {
                    return Some("do_view_change: malformed");
                }
            }
            Command::StartView => {
                if self.client != 0 || self.commit > self.op {
                    return Some("start_view: malformed");
                }
            }
            Command::RequestHeaders => {
                if !empty || self.commit > self.op {
                    return Some("request_headers: op_min > op_max");
                }
            }
            Command::RequestPrepare => {
                if !empty || self.client != 0 {
                    return Some("request_prepare: fields set");
                }
            }
            Command::Headers => {
                if self.client != 0 {
                    return Some("headers: fields set");
                }
            }
            Command::Eviction => {
                if !empty || self.client == 0 {
                    return Some("eviction: malformed");
                }
            }
            Command::CheckpointChunk => {
                if empty || self.client != 0 || self.operation != 0 || self.op == 0 {
                    return Some("checkpoint_chunk: malformed");
                }
                if self.request >= self.commit {
                    return Some("checkpoint_chunk: index >= count");
                }
            }
            Command::RequestCheckpointChunk => {
                if !empty || self.client != 0 || self.op == 0 || self.context == 0 {
                    return Some("request_checkpoint_chunk: malformed");
                }
            }
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

    #[test]
    fn invalid_per_command() {
        let mut p = Header::new(Command::Prepare, 1, 0, 1);
        p.operation = 128;
        p.op = 5;
        p.commit = 5;
        p.client = 9;
        assert_eq!(p.invalid(4096), Some("prepare: commit >= op"));
        p.commit = 4;
        assert_eq!(p.invalid(4096), None);
        let mut r = Header::new(Command::Request, 1, 0, 0);
        r.client = 3;
        r.operation = Operation::Register as u8;
        assert_eq!(r.invalid(4096), None);
        r.session = 1;
        assert!(r.invalid(4096).is_some());
        let root = Header::root_prepare(1);
        assert_eq!(root.invalid(4096), None);
        assert!(root.valid_checksum());
    }
}
