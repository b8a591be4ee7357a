//! One struct per command, naming the header's command fields as the protocol uses them.
//!
//! Every command shares `Header`'s layout, and reuses its command fields (`parent`, `client`,
//! `context`, `op`, `commit`, `timestamp`, `request`, `session`, `log_view`, `operation`) under
//! its own meanings. This file is the only place that knows which field carries what: elsewhere a
//! message is read with `X::from_header` and built with `X { .. }.to_header(cluster)` (or
//! `write`, to rewrite a header in place). The structs are plain `Copy` values; the wire layout
//! and so every checksum are those of `Header`.
//!
//! Each struct's `invalid` is its command's part of `Header::invalid`, which runs it after the
//! frame checks. It checks the fields the command names, and some it leaves unused must be zero
//! (not all: a request's `log_view`, say, is not looked at).

use super::{Command, Header, Operation, HEADER_SIZE, STATE_MACHINE_OPERATION_FIRST};

/// A checkpoint as pings and commit heartbeats name it: enough for a peer to pick a sync target
/// and to ask for its chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointName {
    /// The last op applied to the state it holds (0: no checkpoint).
    pub op: u64,
    /// Its id: the checksum over its chunk body checksums (0 with op 0).
    pub id: u128,
}

/// `COMMAND` and `to_header`, the same for every command struct; `from_header`, `write` and
/// `invalid` are each command's own.
macro_rules! command_struct {
    ($name:ident) => {
        impl $name {
            pub const COMMAND: Command = Command::$name;

            /// A header of this command carrying these fields: every other command field zero,
            /// no body, checksums unset (the sender seals it).
            pub fn to_header(&self, cluster: u128) -> Header {
                let mut header = Header::new(Self::COMMAND, cluster, 0, 0);
                self.write(&mut header);
                header
            }
        }
    };
}

fn assert_command(header: &Header, command: Command) {
    assert_eq!(
        header.command, command as u8,
        "{header:?} is not a {command:?}"
    );
}

fn empty(header: &Header) -> bool {
    header.size as usize == HEADER_SIZE
}

/// Pings and commits carry two checkpoints in `request`/`parent` and `session`/`client`.
fn checkpoints_read(header: &Header) -> (CheckpointName, Option<CheckpointName>) {
    let checkpoint = CheckpointName {
        op: header.request,
        id: header.parent,
    };
    let previous = (header.session != 0).then_some(CheckpointName {
        op: header.session,
        id: header.client,
    });
    (checkpoint, previous)
}

fn checkpoints_write(
    header: &mut Header,
    checkpoint: CheckpointName,
    previous: Option<CheckpointName>,
) {
    header.request = checkpoint.op;
    header.parent = checkpoint.id;
    let previous = previous.unwrap_or_default();
    header.session = previous.op;
    header.client = previous.id;
}

/// A previous checkpoint is named whole or not at all.
fn checkpoints_invalid(header: &Header) -> bool {
    (header.session == 0) != (header.client == 0)
}

/// A blank header, never sent alone: a journal slot with nothing in it (`op` is the slot), or a
/// gap in a do_view_change's headers (`op` is the op it stands for). Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub op: u64,
}
command_struct!(Reserved);

impl Reserved {
    pub fn from_header(header: &Header) -> Reserved {
        assert_command(header, Self::COMMAND);
        Reserved { op: header.op }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.op = self.op;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header)
            || header.client != 0
            || header.view != 0
            || (header.operation != 0 && header.operation != RESERVED_FAULTY_OPERATION)
        {
            return Some("reserved: fields set");
        }
        None
    }
}

/// `operation` of a header-ring entry that marks its slot faulty: the slot may hold an op this
/// replica acknowledged, though neither its ring entry nor its prepare could be read (written by
/// recovery in place of a damaged entry, so a later recovery does not read the slot as never
/// written). A plain reserved entry (operation 0) means nothing was ever acknowledged there.
pub const RESERVED_FAULTY_OPERATION: u8 = 1;

/// Replica -> every other replica, on each ping timeout: the sender's head and commit point (for
/// peers that fell behind), its monotonic clock (echoed in the pong, for the cluster clock), and
/// the checkpoints it serves for state sync. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ping {
    pub view: u32,
    pub replica: u8,
    /// The sender's head.
    pub op: u64,
    pub commit_max: u64,
    /// The sender's monotonic clock when it sent the ping.
    pub monotonic_sent_ns: u64,
    /// The sender's durable checkpoint (op 0: none yet, or its data file was re-created).
    pub checkpoint: CheckpointName,
    /// The checkpoint before the durable one, while the sender still serves it.
    pub checkpoint_previous: Option<CheckpointName>,
}
command_struct!(Ping);

impl Ping {
    pub fn from_header(header: &Header) -> Ping {
        assert_command(header, Self::COMMAND);
        let (checkpoint, checkpoint_previous) = checkpoints_read(header);
        Ping {
            view: header.view,
            replica: header.replica,
            op: header.op,
            commit_max: header.commit,
            monotonic_sent_ns: header.timestamp,
            checkpoint,
            checkpoint_previous,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.commit = self.commit_max;
        header.timestamp = self.monotonic_sent_ns;
        checkpoints_write(header, self.checkpoint, self.checkpoint_previous);
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header) || header.operation != 0 || checkpoints_invalid(header) {
            return Some("ping: fields set");
        }
        None
    }
}

/// Replica -> the pinging replica: one sample for the cluster clock. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pong {
    pub view: u32,
    pub replica: u8,
    /// The ping's `monotonic_sent_ns`, echoed: the pinger measures the round trip with it.
    pub ping_monotonic_ns: u64,
    /// The responder's wall clock (ns since the Unix epoch) when it answered.
    pub wall_clock_ns: i64,
}
command_struct!(Pong);

impl Pong {
    pub fn from_header(header: &Header) -> Pong {
        assert_command(header, Self::COMMAND);
        Pong {
            view: header.view,
            replica: header.replica,
            ping_monotonic_ns: header.op,
            // The wall clock travels as its two's complement bits.
            wall_clock_ns: header.timestamp as i64,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.ping_monotonic_ns;
        header.timestamp = self.wall_clock_ns as u64;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header) || header.client != 0 || header.operation != 0 {
            return Some("pong: fields set");
        }
        None
    }
}

/// Client -> every replica: asks for the view (the answer is a pong_client), and over a
/// connection-oriented bus introduces the client to each replica. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingClient {
    /// The client's idea of the view.
    pub view: u32,
    pub client: u128,
}
command_struct!(PingClient);

impl PingClient {
    pub fn from_header(header: &Header) -> PingClient {
        assert_command(header, Self::COMMAND);
        PingClient {
            view: header.view,
            client: header.client,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.client = self.client;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header) || header.operation != 0 {
            return Some("ping_client/pong_client: fields set");
        }
        if header.client == 0 {
            return Some("ping_client: client == 0");
        }
        None
    }
}

/// Replica -> client, in answer to a ping_client, sent only in normal status: the client adopts
/// a higher view. It also names the cluster's size, so a client whose address list does not
/// match the cluster (too short, or out of order) can say so. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PongClient {
    pub view: u32,
    /// The sender's index.
    pub replica: u8,
    /// Replicas in the cluster (in `commit`).
    pub replica_count: u8,
    pub client: u128,
}
command_struct!(PongClient);

impl PongClient {
    pub fn from_header(header: &Header) -> PongClient {
        assert_command(header, Self::COMMAND);
        PongClient {
            view: header.view,
            replica: header.replica,
            replica_count: header.commit as u8,
            client: header.client,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.commit = self.replica_count as u64;
        header.client = self.client;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header) || header.operation != 0 {
            return Some("ping_client/pong_client: fields set");
        }
        if header.commit == 0
            || header.commit > crate::config::REPLICAS_MAX as u64
            || header.replica as u64 >= header.commit
        {
            return Some("pong_client: replica_count");
        }
        None
    }
}

/// Client -> primary (a backup forwards it): one operation of a session; the body is its input.
/// `register` opens the session: no session, request number or body yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The client's idea of the view.
    pub view: u32,
    pub client: u128,
    /// The op that registered the session (0 for `register`).
    pub session: u64,
    /// The request number within the session: 1, 2, ... (0 for `register`).
    pub request: u64,
    /// The checksum of this session's previous reply: chains the session's requests.
    pub previous_reply_checksum: u128,
    /// An `Operation`, or a state machine operation (>= `STATE_MACHINE_OPERATION_FIRST`).
    pub operation: u8,
}
command_struct!(Request);

impl Request {
    pub fn from_header(header: &Header) -> Request {
        assert_command(header, Self::COMMAND);
        Request {
            view: header.view,
            client: header.client,
            session: header.session,
            request: header.request,
            previous_reply_checksum: header.parent,
            operation: header.operation,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.client = self.client;
        header.session = self.session;
        header.request = self.request;
        header.parent = self.previous_reply_checksum;
        header.operation = self.operation;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let request = Request::from_header(header);
        if request.client == 0 {
            return Some("request: client == 0");
        }
        // The primary fills these in when it turns the request into a prepare.
        if header.op != 0 || header.commit != 0 || header.timestamp != 0 || header.replica != 0 {
            return Some("request: replica fields set");
        }
        match Operation::from_u8(request.operation) {
            Some(Operation::Register) => {
                if request.session != 0 || request.request != 0 || !empty(header) {
                    return Some("request: register with session/request/body");
                }
            }
            Some(_) => return Some("request: reserved operation"),
            None if request.operation < STATE_MACHINE_OPERATION_FIRST => {
                return Some("request: unknown operation")
            }
            None => {
                if request.session == 0 || request.request == 0 {
                    return Some("request: no session/request number");
                }
            }
        }
        None
    }
}

/// Primary -> the replication ring (and any replica, in repair); also what the journal holds.
/// The request's header rewritten in its own buffer, body kept. Op 0 is the synthetic root
/// (`operation` `Root`, every other field zero), identical on every replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prepare {
    /// The view it was prepared in.
    pub view: u32,
    /// The primary that prepared it (not necessarily the sender: a repair relays it).
    pub replica: u8,
    pub op: u64,
    /// The primary's commit_max when it prepared the op.
    pub commit_max: u64,
    /// Cluster time of the op (ns since the Unix epoch); strictly increasing along the log.
    pub timestamp_ns: u64,
    /// The checksum of the prepare at `op - 1`: the log's hash chain.
    pub parent: u128,
    /// The checksum of the request it was prepared from.
    pub request_checksum: u128,
    /// The request's client, session, request number and operation, kept.
    pub client: u128,
    pub session: u64,
    pub request: u64,
    pub operation: u8,
}
command_struct!(Prepare);

impl Prepare {
    pub fn from_header(header: &Header) -> Prepare {
        assert_command(header, Self::COMMAND);
        Prepare {
            view: header.view,
            replica: header.replica,
            op: header.op,
            commit_max: header.commit,
            timestamp_ns: header.timestamp,
            parent: header.parent,
            request_checksum: header.context,
            client: header.client,
            session: header.session,
            request: header.request,
            operation: header.operation,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.commit = self.commit_max;
        header.timestamp = self.timestamp_ns;
        header.parent = self.parent;
        header.context = self.request_checksum;
        header.client = self.client;
        header.session = self.session;
        header.request = self.request;
        header.operation = self.operation;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let prepare = Prepare::from_header(header);
        match Operation::from_u8(prepare.operation) {
            Some(Operation::Reserved) => return Some("prepare: reserved operation"),
            Some(Operation::Root) => {
                if prepare.op != 0 || prepare.parent != 0 || !empty(header) || prepare.client != 0 {
                    return Some("prepare: malformed root");
                }
            }
            Some(Operation::Noop) => {
                if prepare.client != 0 || prepare.op == 0 {
                    return Some("prepare: malformed noop");
                }
            }
            Some(Operation::Register) | None => {
                if prepare.op == 0 || prepare.client == 0 {
                    return Some("prepare: op 0 or no client");
                }
                if prepare.operation < STATE_MACHINE_OPERATION_FIRST
                    && Operation::from_u8(prepare.operation).is_none()
                {
                    return Some("prepare: unknown operation");
                }
            }
        }
        if prepare.op > 0 && prepare.commit_max >= prepare.op {
            return Some("prepare: commit >= op");
        }
        None
    }
}

/// Backup -> primary: the prepare is durable in the sender's journal. Echoes the prepare's
/// identity and chain fields. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrepareOk {
    pub view: u32,
    pub replica: u8,
    pub op: u64,
    pub prepare_checksum: u128,
    pub prepare_parent: u128,
    pub prepare_commit_max: u64,
    pub prepare_timestamp_ns: u64,
}
command_struct!(PrepareOk);

impl PrepareOk {
    pub fn from_header(header: &Header) -> PrepareOk {
        assert_command(header, Self::COMMAND);
        PrepareOk {
            view: header.view,
            replica: header.replica,
            op: header.op,
            prepare_checksum: header.context,
            prepare_parent: header.parent,
            prepare_commit_max: header.commit,
            prepare_timestamp_ns: header.timestamp,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.context = self.prepare_checksum;
        header.parent = self.prepare_parent;
        header.commit = self.prepare_commit_max;
        header.timestamp = self.prepare_timestamp_ns;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let ok = PrepareOk::from_header(header);
        if !empty(header) || ok.op == 0 || ok.prepare_commit_max >= ok.op {
            return Some("prepare_ok: malformed");
        }
        None
    }
}

/// The body of a register's reply: the cluster's `message_size_max` (u64, little endian), so a
/// client never sends a request larger than the replicas accept. A reply stored by an older
/// version has no body; the client then keeps its own limit.
pub const REGISTER_REPLY_SIZE: usize = 8;

/// Primary -> client: the result of a committed request; the body is the state machine's output.
/// Identical on every replica (each keeps it in its client table), so `view` and `replica` are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub view: u32,
    pub replica: u8,
    pub client: u128,
    /// The session (for `register`: the new session, which is `op`).
    pub session: u64,
    pub request: u64,
    /// The op of the prepare it answers.
    pub op: u64,
    /// Equal to `op`: the reply exists only once the op committed.
    pub commit: u64,
    /// The prepare's cluster time (ns since the Unix epoch).
    pub timestamp_ns: u64,
    pub operation: u8,
    /// The checksum of the prepare it answers.
    pub prepare_checksum: u128,
    /// The checksum of the request it answers.
    pub request_checksum: u128,
}
command_struct!(Reply);

impl Reply {
    pub fn from_header(header: &Header) -> Reply {
        assert_command(header, Self::COMMAND);
        Reply {
            view: header.view,
            replica: header.replica,
            client: header.client,
            session: header.session,
            request: header.request,
            op: header.op,
            commit: header.commit,
            timestamp_ns: header.timestamp,
            operation: header.operation,
            prepare_checksum: header.parent,
            request_checksum: header.context,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.client = self.client;
        header.session = self.session;
        header.request = self.request;
        header.op = self.op;
        header.commit = self.commit;
        header.timestamp = self.timestamp_ns;
        header.operation = self.operation;
        header.parent = self.prepare_checksum;
        header.context = self.request_checksum;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let reply = Reply::from_header(header);
        if reply.client == 0 || reply.op == 0 || reply.commit < reply.op {
            return Some("reply: malformed");
        }
        None
    }
}

/// Primary -> backups, on each commit timeout: the commit point, proof that the primary lives,
/// and its checkpoints as in `Ping`. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    pub view: u32,
    pub replica: u8,
    /// The primary's head.
    pub op: u64,
    pub commit_max: u64,
    /// The checksum of the prepare at `commit_max` (0: the primary does not hold its header).
    pub commit_max_checksum: u128,
    /// The primary's monotonic clock when it sent the heartbeat.
    pub monotonic_sent_ns: u64,
    pub checkpoint: CheckpointName,
    pub checkpoint_previous: Option<CheckpointName>,
}
command_struct!(Commit);

impl Commit {
    pub fn from_header(header: &Header) -> Commit {
        assert_command(header, Self::COMMAND);
        let (checkpoint, checkpoint_previous) = checkpoints_read(header);
        Commit {
            view: header.view,
            replica: header.replica,
            op: header.op,
            commit_max: header.commit,
            commit_max_checksum: header.context,
            monotonic_sent_ns: header.timestamp,
            checkpoint,
            checkpoint_previous,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.commit = self.commit_max;
        header.context = self.commit_max_checksum;
        header.timestamp = self.monotonic_sent_ns;
        checkpoints_write(header, self.checkpoint, self.checkpoint_previous);
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header) || header.operation != 0 || checkpoints_invalid(header) {
            return Some("commit: fields set");
        }
        None
    }
}

/// Replica -> every other replica: the sender moves to `view`. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartViewChange {
    pub view: u32,
    pub replica: u8,
}
command_struct!(StartViewChange);

impl StartViewChange {
    pub fn from_header(header: &Header) -> StartViewChange {
        assert_command(header, Self::COMMAND);
        StartViewChange {
            view: header.view,
            replica: header.replica,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        view_change_invalid(header)
    }
}

/// start_view_change and request_start_view name no op or client.
fn view_change_invalid(header: &Header) -> Option<&'static str> {
    if !empty(header) || header.client != 0 || header.op != 0 || header.commit != 0 {
        return Some("view change: fields set");
    }
    None
}

/// Replica -> the primary of the new view: the sender's log for the new primary to choose from.
/// The body is its newest `view_change_headers_max` headers (newest first; a `Reserved` one where
/// it has none), then one flag byte per header (`journal::FLAG_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DoViewChange {
    pub view: u32,
    pub replica: u8,
    /// The last view in which the sender was normal.
    pub log_view: u32,
    /// The sender's head.
    pub op: u64,
    /// The sender's commit_max, at most `op`.
    pub commit_max: u64,
}
command_struct!(DoViewChange);

impl DoViewChange {
    pub fn from_header(header: &Header) -> DoViewChange {
        assert_command(header, Self::COMMAND);
        DoViewChange {
            view: header.view,
            replica: header.replica,
            log_view: header.log_view,
            op: header.op,
            commit_max: header.commit,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.log_view = self.log_view;
        header.op = self.op;
        header.commit = self.commit_max;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let dvc = DoViewChange::from_header(header);
        if header.client != 0 || dvc.log_view > dvc.view || dvc.commit_max > dvc.op {
            return Some("do_view_change: malformed");
        }
        None
    }
}

/// New primary -> backups: the view has started with this log. The body is the head's
/// `pipeline_max + 1` headers, newest first, hash chained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartView {
    pub view: u32,
    pub replica: u8,
    /// The head of the view's log.
    pub op: u64,
    /// The primary's commit_max, at most `op`.
    pub commit_max: u64,
    /// The request_start_view's nonce it answers (0 when the view starts).
    pub nonce: u128,
}
command_struct!(StartView);

impl StartView {
    pub fn from_header(header: &Header) -> StartView {
        assert_command(header, Self::COMMAND);
        StartView {
            view: header.view,
            replica: header.replica,
            op: header.op,
            commit_max: header.commit,
            nonce: header.context,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.commit = self.commit_max;
        header.context = self.nonce;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let start_view = StartView::from_header(header);
        if header.client != 0 || start_view.commit_max > start_view.op {
            return Some("start_view: malformed");
        }
        None
    }
}

/// Replica -> the primary of its view: send me the start_view (I missed it, or my head is
/// uncertain). Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStartView {
    pub view: u32,
    pub replica: u8,
    /// Echoed in the start_view.
    pub nonce: u128,
}
command_struct!(RequestStartView);

impl RequestStartView {
    pub fn from_header(header: &Header) -> RequestStartView {
        assert_command(header, Self::COMMAND);
        RequestStartView {
            view: header.view,
            replica: header.replica,
            nonce: header.context,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.context = self.nonce;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        view_change_invalid(header)
    }
}

/// Replica -> peer: send me the headers of ops `op_min..=op_max` you hold (answered with
/// `Headers`). Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    pub view: u32,
    pub replica: u8,
    pub op_min: u64,
    pub op_max: u64,
}
command_struct!(RequestHeaders);

impl RequestHeaders {
    pub fn from_header(header: &Header) -> RequestHeaders {
        assert_command(header, Self::COMMAND);
        RequestHeaders {
            view: header.view,
            replica: header.replica,
            op_min: header.commit,
            op_max: header.op,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.commit = self.op_min;
        header.op = self.op_max;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let request = RequestHeaders::from_header(header);
        if !empty(header) || request.op_min > request.op_max {
            return Some("request_headers: op_min > op_max");
        }
        None
    }
}

/// Replica -> peer: send me the prepare at `op` with exactly this checksum. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestPrepare {
    pub view: u32,
    pub replica: u8,
    pub op: u64,
    pub prepare_checksum: u128,
}
command_struct!(RequestPrepare);

impl RequestPrepare {
    pub fn from_header(header: &Header) -> RequestPrepare {
        assert_command(header, Self::COMMAND);
        RequestPrepare {
            view: header.view,
            replica: header.replica,
            op: header.op,
            prepare_checksum: header.context,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.context = self.prepare_checksum;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header) || header.client != 0 {
            return Some("request_prepare: fields set");
        }
        None
    }
}

/// Peer -> the replica that sent request_headers: the body is prepare headers, newest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub view: u32,
    pub replica: u8,
}
command_struct!(Headers);

impl Headers {
    pub fn from_header(header: &Header) -> Headers {
        assert_command(header, Self::COMMAND);
        Headers {
            view: header.view,
            replica: header.replica,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if header.client != 0 {
            return Some("headers: fields set");
        }
        None
    }
}

/// Primary -> client: the session is gone (evicted, or never known); the client stops. Header
/// only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    pub view: u32,
    pub replica: u8,
    pub client: u128,
}
command_struct!(Eviction);

impl Eviction {
    pub fn from_header(header: &Header) -> Eviction {
        assert_command(header, Self::COMMAND);
        Eviction {
            view: header.view,
            replica: header.replica,
            client: header.client,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.client = self.client;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let eviction = Eviction::from_header(header);
        if !empty(header) || eviction.client == 0 {
            return Some("eviction: malformed");
        }
        None
    }
}

/// One chunk of a checkpoint's content, the chunk as body: on disk in a checkpoint area, and on
/// the wire in state sync. Every chunk names its whole checkpoint, so each is checked alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointChunk {
    /// The checkpoint's op.
    pub op: u64,
    /// This chunk's position, `0..count`.
    pub index: u64,
    /// The checkpoint's chunk count.
    pub count: u64,
    /// The checkpoint's content size.
    pub size_bytes: u64,
    /// The state machine's digest at `op`.
    pub digest: u128,
    /// The checkpoint id on the wire; 0 on disk, where it is known only once every chunk is.
    pub checkpoint_id: u128,
}
command_struct!(CheckpointChunk);

impl CheckpointChunk {
    pub fn from_header(header: &Header) -> CheckpointChunk {
        assert_command(header, Self::COMMAND);
        CheckpointChunk {
            op: header.op,
            index: header.request,
            count: header.commit,
            size_bytes: header.timestamp,
            digest: header.parent,
            checkpoint_id: header.context,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.op = self.op;
        header.request = self.index;
        header.commit = self.count;
        header.timestamp = self.size_bytes;
        header.parent = self.digest;
        header.context = self.checkpoint_id;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let chunk = CheckpointChunk::from_header(header);
        if empty(header) || header.client != 0 || header.operation != 0 || chunk.op == 0 {
            return Some("checkpoint_chunk: malformed");
        }
        if chunk.index >= chunk.count {
            return Some("checkpoint_chunk: index >= count");
        }
        None
    }
}

/// State sync, replica -> peer (or itself): send me chunk `index` of the checkpoint at `op` with
/// this id. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCheckpointChunk {
    pub view: u32,
    pub replica: u8,
    pub op: u64,
    pub checkpoint_id: u128,
    pub index: u64,
}
command_struct!(RequestCheckpointChunk);

impl RequestCheckpointChunk {
    pub fn from_header(header: &Header) -> RequestCheckpointChunk {
        assert_command(header, Self::COMMAND);
        RequestCheckpointChunk {
            view: header.view,
            replica: header.replica,
            op: header.op,
            checkpoint_id: header.context,
            index: header.request,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.view = self.view;
        header.replica = self.replica;
        header.op = self.op;
        header.context = self.checkpoint_id;
        header.request = self.index;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let request = RequestCheckpointChunk::from_header(header);
        if !empty(header) || header.client != 0 || request.op == 0 || request.checkpoint_id == 0 {
            return Some("request_checkpoint_chunk: malformed");
        }
        None
    }
}

/// A block of the grid (docs/storage.md), its content as body: on disk at its address, and on
/// the wire in grid repair. Whoever references a block (a parent block, or the superblock) holds
/// its address and this header's checksum, so a block read from the wrong place, or an older
/// block at the right place, is told apart from the one referenced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// Where the block lives: `1..` (0 is no block).
    pub address: u64,
    /// A `grid::BlockType`.
    pub block_type: u8,
    /// The tree a table block belongs to; 0 for blocks of no tree.
    pub tree: u16,
    /// What the block type says (for instance a table's key range); 0 if nothing.
    pub metadata: u128,
}
command_struct!(Block);

impl Block {
    pub fn from_header(header: &Header) -> Block {
        assert_command(header, Self::COMMAND);
        Block {
            address: header.op,
            block_type: header.operation,
            tree: header.request as u16,
            metadata: header.context,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.op = self.address;
        header.operation = self.block_type;
        header.request = u64::from(self.tree);
        header.context = self.metadata;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let block = Block::from_header(header);
        if header.client != 0 || header.view != 0 || header.replica != 0 || block.address == 0 {
            return Some("block: malformed");
        }
        if header.request > u64::from(u16::MAX) || block.block_type == 0 {
            return Some("block: malformed");
        }
        None
    }
}

/// Operator tool -> any replica (`vsr status`): report your state. The replica answers with a
/// status_report in any status, recovering included; the exchange never enters the log and
/// changes nothing. `client` names the asking process as a client does (its connection is
/// identified by it), `nonce` pairs the answer with the question. Header only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStatus {
    pub client: u128,
    pub nonce: u64,
}
command_struct!(RequestStatus);

impl RequestStatus {
    pub fn from_header(header: &Header) -> RequestStatus {
        assert_command(header, Self::COMMAND);
        RequestStatus {
            client: header.client,
            nonce: header.op,
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.client = self.client;
        header.op = self.nonce;
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        if !empty(header)
            || header.client == 0
            || header.view != 0
            || header.replica != 0
            || header.operation != 0
        {
            return Some("request_status: malformed");
        }
        None
    }
}

/// A replica's `status` as a status_report names it.
pub const STATUS_NORMAL: u8 = 1;
pub const STATUS_VIEW_CHANGE: u8 = 2;
pub const STATUS_RECOVERING: u8 = 3;
pub const STATUS_RECOVERING_HEAD: u8 = 4;

/// Flags of a status_report.
/// A status_report's `status` as `vsr status` and the metrics endpoint name it.
pub fn status_name(status: u8) -> &'static str {
    match status {
        STATUS_NORMAL => "normal",
        STATUS_VIEW_CHANGE => "view_change",
        STATUS_RECOVERING => "recovering",
        STATUS_RECOVERING_HEAD => "recovering_head",
        _ => "unknown",
    }
}

pub const STATUS_FLAG_PRIMARY: u8 = 1 << 0;
pub const STATUS_FLAG_SYNCING: u8 = 1 << 1;
pub const STATUS_FLAG_REJOINING: u8 = 1 << 2;
pub const STATUS_FLAG_CLOCK_SYNCHRONIZED: u8 = 1 << 3;
const STATUS_FLAGS_ALL: u8 = 0b1111;

/// Replica -> operator tool, in answer to a request_status: the replica's state as it stands.
/// Header only: `context` packs the small fields (replica count, status, flags, peers heard,
/// pipeline depth) and `parent` the release version and the state sync's target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    pub client: u128,
    pub nonce: u64,
    pub replica: u8,
    pub replica_count: u8,
    /// `STATUS_NORMAL`, `STATUS_VIEW_CHANGE`, `STATUS_RECOVERING`, `STATUS_RECOVERING_HEAD`.
    pub status: u8,
    /// `STATUS_FLAG_*`.
    pub flags: u8,
    pub view: u32,
    pub log_view: u32,
    pub op: u64,
    pub commit_min: u64,
    pub commit_max: u64,
    /// The op of the durable checkpoint (0: none yet).
    pub checkpoint_op: u64,
    /// Bit `r` set when replica `r` was heard from recently (this replica's own bit is set).
    pub peers_heard: u8,
    /// Prepares in the primary's pipeline (0 on a backup).
    pub pipeline: u8,
    /// The checkpoint op a state sync is fetching (0: not syncing).
    pub sync_target_op: u64,
    /// Milliseconds since the replica opened its data file.
    pub uptime_ms: u64,
    /// The release, `major << 32 | minor << 16 | patch`.
    pub version: u64,
}
command_struct!(StatusReport);

impl StatusReport {
    pub fn from_header(header: &Header) -> StatusReport {
        assert_command(header, Self::COMMAND);
        let context = header.context.to_le_bytes();
        StatusReport {
            client: header.client,
            nonce: header.request,
            replica: header.replica,
            replica_count: context[0],
            status: context[1],
            flags: context[2],
            peers_heard: context[3],
            pipeline: context[4],
            view: header.view,
            log_view: header.log_view,
            op: header.op,
            commit_min: header.timestamp,
            commit_max: header.commit,
            checkpoint_op: header.session,
            sync_target_op: header.parent as u64,
            version: (header.parent >> 64) as u64,
            uptime_ms: u64::from_le_bytes(context[8..16].try_into().unwrap()),
        }
    }

    /// Sets `command` and the fields this struct names; the frame (cluster, size, checksums) and
    /// the fields it does not name are left as they are.
    pub fn write(&self, header: &mut Header) {
        header.command = Self::COMMAND as u8;
        header.client = self.client;
        header.request = self.nonce;
        header.replica = self.replica;
        let mut context = [0u8; 16];
        context[..5].copy_from_slice(&[
            self.replica_count,
            self.status,
            self.flags,
            self.peers_heard,
            self.pipeline,
        ]);
        context[8..16].copy_from_slice(&self.uptime_ms.to_le_bytes());
        header.context = u128::from_le_bytes(context);
        header.view = self.view;
        header.log_view = self.log_view;
        header.op = self.op;
        header.timestamp = self.commit_min;
        header.commit = self.commit_max;
        header.session = self.checkpoint_op;
        header.parent = u128::from(self.version) << 64 | u128::from(self.sync_target_op);
    }

    pub(super) fn invalid(header: &Header) -> Option<&'static str> {
        let report = StatusReport::from_header(header);
        let context = header.context.to_le_bytes();
        if !empty(header) || report.client == 0 || context[5..8] != [0; 3] || header.operation != 0
        {
            return Some("status_report: malformed");
        }
        if report.replica_count == 0
            || usize::from(report.replica_count) > crate::config::REPLICAS_MAX
            || report.replica >= report.replica_count
            || u32::from(report.peers_heard) >> report.replica_count != 0
        {
            return Some("status_report: replica out of range");
        }
        if !(STATUS_NORMAL..=STATUS_RECOVERING_HEAD).contains(&report.status)
            || report.flags & !STATUS_FLAGS_ALL != 0
            || report.log_view > report.view
        {
            return Some("status_report: inconsistent");
        }
        None
    }
}

impl Header {
    /// The client a message is from or for: that of a request, prepare, reply, eviction,
    /// ping_client or pong_client; None for every other command (and an unknown one).
    pub fn client_id(&self) -> Option<u128> {
        let client = match self.command()? {
            Command::Request => Request::from_header(self).client,
            Command::Prepare => Prepare::from_header(self).client,
            Command::Reply => Reply::from_header(self).client,
            Command::Eviction => Eviction::from_header(self).client,
            Command::PingClient => PingClient::from_header(self).client,
            Command::PongClient => PongClient::from_header(self).client,
            Command::RequestStatus => RequestStatus::from_header(self).client,
            Command::StatusReport => StatusReport::from_header(self).client,
            _ => return None,
        };
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::REPLICAS_MAX;

    const MESSAGE_SIZE_MAX: usize = 4096;

    /// Every field a struct names lands in the header and comes back from it unchanged.
    #[test]
    fn fields_roundtrip() {
        let checkpoint = CheckpointName { op: 64, id: 0xc4 };
        let previous = Some(CheckpointName { op: 32, id: 0xc2 });
        let ping = Ping {
            view: 3,
            replica: 2,
            op: 90,
            commit_max: 80,
            monotonic_sent_ns: 123_456,
            checkpoint,
            checkpoint_previous: previous,
        };
        assert_eq!(Ping::from_header(&ping.to_header(1)), ping);
        let pong = Pong {
            view: 3,
            replica: 1,
            ping_monotonic_ns: 123_456,
            wall_clock_ns: -5,
        };
        assert_eq!(Pong::from_header(&pong.to_header(1)), pong);
        let commit = Commit {
            view: 3,
            replica: 0,
            op: 90,
            commit_max: 80,
            commit_max_checksum: 0xab,
            monotonic_sent_ns: 99,
            checkpoint,
            checkpoint_previous: None,
        };
        assert_eq!(Commit::from_header(&commit.to_header(1)), commit);
        let chunk = CheckpointChunk {
            op: 64,
            index: 2,
            count: 3,
            size_bytes: 9000,
            digest: 0xd,
            checkpoint_id: 0xc4,
        };
        assert_eq!(CheckpointChunk::from_header(&chunk.to_header(1)), chunk);
        let block = Block {
            address: 7,
            block_type: 3,
            tree: 513,
            metadata: 0xfeed,
        };
        assert_eq!(Block::from_header(&block.to_header(1)), block);
        let request = RequestStatus {
            client: 0xc1,
            nonce: 3,
        };
        assert_eq!(RequestStatus::from_header(&request.to_header(1)), request);
        let report = StatusReport {
            client: 0xc1,
            nonce: 3,
            replica: 2,
            replica_count: 3,
            status: STATUS_VIEW_CHANGE,
            flags: STATUS_FLAG_SYNCING | STATUS_FLAG_CLOCK_SYNCHRONIZED,
            view: 9,
            log_view: 7,
            op: 1_000,
            commit_min: 900,
            commit_max: 990,
            checkpoint_op: 512,
            peers_heard: 0b101,
            pipeline: 4,
            sync_target_op: 768,
            uptime_ms: 123_456_789,
            version: 1 << 32 | 2 << 16 | 3,
        };
        let header = report.to_header(1);
        assert_eq!(StatusReport::from_header(&header), report);
        assert_eq!(StatusReport::invalid(&header), None);
        for broken in [
            StatusReport {
                replica: 3,
                ..report
            },
            StatusReport {
                status: 0,
                ..report
            },
            StatusReport {
                flags: 1 << 7,
                ..report
            },
            StatusReport {
                log_view: 10,
                ..report
            },
            StatusReport {
                client: 0,
                ..report
            },
            StatusReport {
                replica_count: 9,
                ..report
            },
            StatusReport {
                peers_heard: 0b1001,
                ..report
            },
        ] {
            assert!(
                StatusReport::invalid(&broken.to_header(1)).is_some(),
                "{broken:?}"
            );
        }
        let request = RequestHeaders {
            view: 1,
            replica: 2,
            op_min: 5,
            op_max: 9,
        };
        assert_eq!(RequestHeaders::from_header(&request.to_header(1)), request);
        let prepare = Prepare {
            view: 2,
            replica: 1,
            op: 7,
            commit_max: 6,
            timestamp_ns: 1_000,
            parent: 0x9,
            request_checksum: 0x8,
            client: 5,
            session: 1,
            request: 3,
            operation: STATE_MACHINE_OPERATION_FIRST,
        };
        assert_eq!(Prepare::from_header(&prepare.to_header(1)), prepare);
    }

    /// The mapping is the wire format: a struct writes the same bytes the fields always carried.
    #[test]
    fn fields_land_where_they_always_did() {
        let h = RequestHeaders {
            view: 1,
            replica: 2,
            op_min: 5,
            op_max: 9,
        }
        .to_header(7);
        assert_eq!((h.commit, h.op, h.cluster, h.size), (5, 9, 7, 256));
        let h = Ping {
            checkpoint: CheckpointName { op: 64, id: 0xc4 },
            checkpoint_previous: Some(CheckpointName { op: 32, id: 0xc2 }),
            monotonic_sent_ns: 11,
            ..Ping::default()
        }
        .to_header(7);
        assert_eq!(
            (h.request, h.parent, h.session, h.client),
            (64, 0xc4, 32, 0xc2)
        );
        assert_eq!(h.timestamp, 11);
    }

    #[test]
    fn invalid_per_command() {
        let mut prepare = Prepare {
            view: 1,
            operation: STATE_MACHINE_OPERATION_FIRST,
            op: 5,
            commit_max: 5,
            client: 9,
            ..Prepare::default()
        };
        let invalid = |prepare: &Prepare| prepare.to_header(1).invalid(MESSAGE_SIZE_MAX);
        assert_eq!(invalid(&prepare), Some("prepare: commit >= op"));
        prepare.commit_max = 4;
        assert_eq!(invalid(&prepare), None);
        let mut register = Request {
            client: 3,
            operation: Operation::Register as u8,
            ..Request::default()
        };
        assert_eq!(register.to_header(1).invalid(MESSAGE_SIZE_MAX), None);
        register.session = 1;
        assert!(register.to_header(1).invalid(MESSAGE_SIZE_MAX).is_some());
        let root = Header::root_prepare(1);
        assert_eq!(root.invalid(MESSAGE_SIZE_MAX), None);
        assert!(root.valid_checksum());
        let mut ping = Ping::default().to_header(1);
        ping.session = 1;
        assert_eq!(ping.invalid(MESSAGE_SIZE_MAX), Some("ping: fields set"));
        let mut pong = PongClient {
            view: 4,
            replica: 2,
            replica_count: 3,
            client: 9,
        };
        assert_eq!(pong.to_header(1).invalid(MESSAGE_SIZE_MAX), None);
        assert_eq!(PongClient::from_header(&pong.to_header(1)), pong);
        for replica_count in [0, 2, REPLICAS_MAX as u8 + 1] {
            pong.replica_count = replica_count;
            assert_eq!(
                pong.to_header(1).invalid(MESSAGE_SIZE_MAX),
                Some("pong_client: replica_count"),
                "replica 2 of {replica_count}"
            );
        }
        let request = RequestHeaders {
            op_min: 6,
            op_max: 5,
            ..RequestHeaders::default()
        };
        assert_eq!(
            request.to_header(1).invalid(MESSAGE_SIZE_MAX),
            Some("request_headers: op_min > op_max")
        );
    }

    #[test]
    fn client_id_only_for_client_commands() {
        let eviction = Eviction {
            client: 7,
            ..Eviction::default()
        };
        assert_eq!(eviction.to_header(1).client_id(), Some(7));
        let ping = Ping {
            checkpoint_previous: Some(CheckpointName { op: 1, id: 7 }),
            ..Ping::default()
        };
        assert_eq!(ping.to_header(1).client_id(), None);
    }
}
