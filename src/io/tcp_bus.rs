//! The message bus over TCP, driven by the loop's io_uring.
//!
//! Replicas listen on their address; replica i dials every replica j > i, so each pair has one
//! connection and never two. Clients dial every replica. A connection's peer is identified by its
//! first valid message. Framing: the 256-byte header is read first and checked (checksum,
//! `invalid()`, cluster, size bound) before the body is read; then the body checksum. Anything
//! wrong closes the connection; nothing from the network can panic the replica. Such refusals are
//! logged at most once a minute per peer address and reason (`LogLimiter`): a misconfigured peer
//! that redials forever (a replica of another cluster whose peers' ports meet ours) costs a line
//! a minute, not one per attempt. A dialer backs off until a peer has sent a valid message, so it
//! does not redial such a peer every few ticks either.
//! Send queues are bounded per connection: a slow peer loses messages (the protocol retries), it
//! cannot exhaust memory.

use crate::bus::MessageBus;
use crate::config::{REPLICAS_MAX, TICK_MS};
use crate::header::commands::Ping;
use crate::header::{Command, Header, HEADER_SIZE};
use crate::io::{user_data, Io, Owner};
use crate::message::{Message, MessagePool};
use io_uring::{opcode, types};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

const OP_ACCEPT: u64 = 1;
const OP_CONNECT: u64 = 2;
const OP_RECV: u64 = 3;
const OP_SEND: u64 = 4;
const ACCEPT_CONN: u64 = 0xffff;
pub const CLIENT_SEND_QUEUE_MAX: usize = 2;
/// A refusal is logged at most once per this many ticks per (peer address, reason, cluster).
const REFUSAL_LOG_INTERVAL_TICKS: u64 = 60_000 / TICK_MS;
/// Peer addresses whose refusals the limiter remembers (the oldest is forgotten beyond).
const REFUSAL_LOG_ENTRIES: usize = 64;

/// Rate limits log lines about refused peers: one line per key a minute, counting the rest.
/// Fixed size: a flood of distinct addresses evicts the oldest keys, never allocates.
struct LogLimiter {
    entries: Vec<LimitEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct LimitKey {
    /// The peer's address; the port is 0 for an accepted connection (its port is ephemeral).
    address: SocketAddr,
    reason: &'static str,
    /// The cluster the peer named, for "wrong cluster" (0 otherwise).
    cluster: u128,
}

struct LimitEntry {
    key: LimitKey,
    logged_at: u64,
    suppressed: u64,
}

impl LogLimiter {
    fn new() -> LogLimiter {
        LogLimiter {
            entries: Vec::with_capacity(REFUSAL_LOG_ENTRIES),
        }
    }

    /// Whether to log `key` now; if so, how many lines were suppressed since its last one.
    fn admit(&mut self, key: LimitKey, now: u64) -> Option<u64> {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            if now.saturating_sub(e.logged_at) < REFUSAL_LOG_INTERVAL_TICKS {
                e.suppressed += 1;
                return None;
            }
            let suppressed = e.suppressed;
            e.logged_at = now;
            e.suppressed = 0;
            return Some(suppressed);
        }
        let entry = LimitEntry {
            key,
            logged_at: now,
            suppressed: 0,
        };
        if self.entries.len() < REFUSAL_LOG_ENTRIES {
            self.entries.push(entry);
        } else {
            let oldest = (0..self.entries.len())
                .min_by_key(|&i| self.entries[i].logged_at)
                .unwrap();
            self.entries[oldest] = entry;
        }
        Some(0)
    }
}

/// The dialer's introduction: a ping naming only its sender, so the acceptor can route to it
/// before the replica sends anything. The acceptor's bus consumes it; the replica never sees it
/// (as a ping it would reset the peer's advertised checkpoint to none and echo a zero send
/// time into a clock sample). A replica's own pings always carry its monotonic clock, never 0.
fn hello(cluster: u128, replica: u8) -> Header {
    let hello = Ping {
        replica,
        ..Ping::default()
    };
    let mut hello = hello.to_header(cluster);
    hello.set_checksum_body(&[]);
    hello.set_checksum();
    hello
}

fn is_hello(header: &Header) -> bool {
    header.command == Command::Ping as u8 && *header == hello(header.cluster, header.replica)
}

fn socket_addr_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // Safety: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // Safety: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Connecting,
    Connected,
    /// Shut down; freed once no operation is in flight.
    Closing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Unknown,
    Replica(u8),
    Client(u128),
}

struct Connection {
    fd: i32,
    state: State,
    peer: Peer,
    /// Where the peer is: its listening address when we dialed, its source address when it did.
    address: Option<SocketAddr>,
    /// A valid message arrived on this connection.
    answered: bool,
    generation: u32,
    ops: u8,
    /// Address storage for connect (must outlive the operation).
    addr: Box<libc::sockaddr_storage>,
    addr_len: libc::socklen_t,
    recv: Option<Message>,
    recv_have: usize,
    recv_inflight: bool,
    send_queue: VecDeque<Message>,
    send_done: usize,
    send_inflight: bool,
}

impl Connection {
    fn new(send_queue_max: usize) -> Connection {
        Connection {
            fd: -1,
            state: State::Free,
            peer: Peer::Unknown,
            address: None,
            answered: false,
            generation: 0,
            ops: 0,
            // Safety: all-zero is a valid sockaddr_storage.
            addr: Box::new(unsafe { std::mem::zeroed() }),
            addr_len: 0,
            recv: None,
            recv_have: 0,
            recv_inflight: false,
            send_queue: VecDeque::with_capacity(send_queue_max),
            send_done: 0,
            send_inflight: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct BusStats {
    pub accepted: u64,
    pub connected: u64,
    pub closed_invalid: u64,
    pub closed_peer: u64,
    pub send_dropped: u64,
    pub received: u64,
    /// Refusals not logged (the rate limit).
    pub refusals_unlogged: u64,
    /// Receives not started because the pool was down to the replica's reserve.
    pub receives_deferred: u64,
}

pub struct TcpBus {
    pool: MessagePool,
    cluster: u128,
    message_size_max: usize,
    replica: u8,
    replica_count: u8,
    addresses: Vec<SocketAddr>,
    listen_fd: i32,
    accept_addr: Box<libc::sockaddr_storage>,
    accept_len: Box<libc::socklen_t>,
    accept_inflight: bool,
    connections: Vec<Connection>,
    replicas: [Option<usize>; REPLICAS_MAX],
    reconnect_at: [u64; REPLICAS_MAX],
    reconnect_attempts: [u32; REPLICAS_MAX],
    inbox: VecDeque<Message>,
    send_queue_max: usize,
    ticks: u64,
    jitter: u64,
    /// Free pool messages below which no receive starts (`reserve_for_replica`).
    receive_reserve: usize,
    refusals: LogLimiter,
    pub stats: BusStats,
}

fn sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // Safety: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write(storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // Safety: as above, for sockaddr_in6.
            unsafe { std::ptr::write(storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn set_socket_options(fd: i32) {
    let one: libc::c_int = 1;
    let buffer: libc::c_int = 4 * 1024 * 1024;
    let options = [
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, one),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, one),
        (libc::SOL_SOCKET, libc::SO_SNDBUF, buffer),
        (libc::SOL_SOCKET, libc::SO_RCVBUF, buffer),
    ];
    for (level, name, value) in options {
        // Safety: valid fd and option value pointer/size. Failure only costs performance.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &value as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
    }
}

fn socket_for(addr: &SocketAddr) -> std::io::Result<i32> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // Safety: plain socket(2) call.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

impl TcpBus {
    /// Binds and listens on this replica's address. `connections_max` bounds peers (replicas and
    /// clients) at once; each connection queues at most `send_queue_max` messages.
    pub fn listen(
        pool: MessagePool,
        cluster: u128,
        replica: u8,
        addresses: Vec<SocketAddr>,
        connections_max: usize,
        send_queue_max: usize,
    ) -> std::io::Result<TcpBus> {
        assert!((replica as usize) < addresses.len() && addresses.len() <= REPLICAS_MAX);
        let listen = addresses[replica as usize];
        let fd = socket_for(&listen)?;
        let one: libc::c_int = 1;
        // Safety: valid fd and option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                &one as *const _ as *const libc::c_void,
                4,
            );
        }
        // Safety: zeroed storage is valid; filled by sockaddr().
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = sockaddr(&listen, &mut storage);
        // Safety: storage holds a valid address of `len` bytes.
        if unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) } != 0 {
            let error = std::io::Error::last_os_error();
            // Safety: fd is ours.
            unsafe { libc::close(fd) };
            return Err(std::io::Error::new(
                error.kind(),
                format!("bind {listen}: {error}"),
            ));
        }
        // Safety: bound socket.
        if unsafe { libc::listen(fd, 128) } != 0 {
            let error = std::io::Error::last_os_error();
            // Safety: fd is ours.
            unsafe { libc::close(fd) };
            return Err(error);
        }
        let message_size_max = pool.message_size_max();
        Ok(TcpBus {
            pool,
            cluster,
            message_size_max,
            replica,
            replica_count: addresses.len() as u8,
            addresses,
            listen_fd: fd,
            // Safety: zeroed sockaddr_storage is valid.
            accept_addr: Box::new(unsafe { std::mem::zeroed() }),
            accept_len: Box::new(0),
            accept_inflight: false,
            connections: (0..connections_max)
                .map(|_| Connection::new(send_queue_max))
                .collect(),
            replicas: [None; REPLICAS_MAX],
            reconnect_at: [0; REPLICAS_MAX],
            reconnect_attempts: [0; REPLICAS_MAX],
            inbox: VecDeque::with_capacity(connections_max),
            send_queue_max,
            ticks: 0,
            jitter: 0x9e37_79b9_7f4a_7c15 ^ replica as u64,
            receive_reserve: 0,
            refusals: LogLimiter::new(),
            stats: BusStats::default(),
        })
    }

    /// Starts no receive while fewer than `messages` of the shared pool are free, so a backlog
    /// (a peer's socket buffers full of prepares after this process was stopped) waits in TCP
    /// instead of pinning the replica's messages in journal writes faster than they complete:
    /// the replica keeps what it needs to commit and reply.
    pub fn reserve_for_replica(&mut self, messages: usize) {
        assert!(messages < self.pool.capacity());
        self.receive_reserve = messages;
    }

    pub fn tick(&mut self) {
        self.ticks += 1;
    }

    pub fn next_received(&mut self) -> Option<Message> {
        self.inbox.pop_front()
    }

    pub fn connected_replicas(&self) -> usize {
        self.replicas
            .iter()
            .flatten()
            .filter(|&&c| self.connections[c].state == State::Connected)
            .count()
    }

    fn free_connection(&mut self) -> Option<usize> {
        self.connections.iter().position(|c| c.state == State::Free)
    }

    fn token(&self, conn: usize, op: u64) -> u64 {
        let generation = if conn as u64 == ACCEPT_CONN {
            0
        } else {
            self.connections[conn].generation as u64
        };
        user_data(Owner::Bus, ((conn as u64) << 40) | (op << 32) | generation)
    }

    /// Submits whatever the connections can do now: accept, dial, receive, send.
    pub fn pump(&mut self, io: &mut Io) {
        if !self.accept_inflight && self.free_connection().is_some() {
            *self.accept_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let entry = opcode::Accept::new(
                types::Fd(self.listen_fd),
                &mut *self.accept_addr as *mut _ as *mut libc::sockaddr,
                &mut *self.accept_len,
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(
                Owner::Bus,
                (ACCEPT_CONN << 40) | (OP_ACCEPT << 32),
            ));
            // Safety: accept_addr/accept_len are boxed fields that live as long as the bus.
            unsafe { io.push(entry) };
            self.accept_inflight = true;
        }
        for replica in self.replica + 1..self.replica_count {
            if self.replicas[replica as usize].is_none()
                && self.ticks >= self.reconnect_at[replica as usize]
            {
                self.dial(io, replica);
            }
        }
        for conn in 0..self.connections.len() {
            if self.connections[conn].state == State::Connected {
                self.pump_recv(io, conn);
                self.pump_send(io, conn);
            }
        }
    }

    fn dial(&mut self, io: &mut Io, replica: u8) {
        let Some(conn) = self.free_connection() else {
            return;
        };
        let address = self.addresses[replica as usize];
        let fd = match socket_for(&address) {
            Ok(fd) => fd,
            Err(_) => {
                self.schedule_reconnect(replica);
                return;
            }
        };
        set_socket_options(fd);
        let c = &mut self.connections[conn];
        c.fd = fd;
        c.state = State::Connecting;
        c.peer = Peer::Replica(replica);
        c.address = Some(address);
        c.answered = false;
        c.generation = c.generation.wrapping_add(1);
        c.addr_len = sockaddr(&address, &mut c.addr);
        c.ops += 1;
        let entry = opcode::Connect::new(
            types::Fd(fd),
            &*c.addr as *const _ as *const libc::sockaddr,
            c.addr_len,
        )
        .build()
        .user_data(self.token(conn, OP_CONNECT));
        // Safety: the address is boxed in the connection, which outlives the operation (a slot is
        // only reused once `ops` is back to zero).
        unsafe { io.push(entry) };
        self.replicas[replica as usize] = Some(conn);
    }

    fn schedule_reconnect(&mut self, replica: u8) {
        let attempts = &mut self.reconnect_attempts[replica as usize];
        *attempts = (*attempts + 1).min(8);
        // Exponential backoff (10 ms .. ~2.5 s) with jitter, so replicas do not dial in lockstep.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let base = 1u64 << *attempts;
        self.reconnect_at[replica as usize] = self.ticks + base + self.jitter % (base + 1);
    }

    /// A dial that failed (refused: the peer's process is down, its host is up) is retried in
    /// 50-100 ms, with no backoff: a restarted peer is back in the cluster at once, and a refusal
    /// costs one SYN. (A dead host does not refuse; its dial pends until the kernel gives up.)
    /// Only a peer that accepts and hangs up unanswered is redialed ever more slowly.
    fn schedule_redial_soon(&mut self, replica: u8) {
        const REDIAL_TICKS_MIN: u64 = 5;
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        self.reconnect_at[replica as usize] =
            self.ticks + REDIAL_TICKS_MIN + self.jitter % (REDIAL_TICKS_MIN + 1);
    }

    fn pump_recv(&mut self, io: &mut Io, conn: usize) {
        if self.connections[conn].recv_inflight {
            return;
        }
        if self.connections[conn].recv.is_none() {
            if self.pool.available() <= self.receive_reserve {
                self.stats.receives_deferred += 1;
                return;
            }
            let Some(message) = self.pool.get() else {
                return;
            };
            self.connections[conn].recv = Some(message);
            self.connections[conn].recv_have = 0;
        }
        let token = self.token(conn, OP_RECV);
        let c = &mut self.connections[conn];
        let have = c.recv_have;
        let want = if have < HEADER_SIZE {
            HEADER_SIZE - have
        } else {
            c.recv.as_ref().unwrap().header().size as usize - have
        };
        assert!(want > 0);
        let buffer = c.recv.as_mut().unwrap().buffer_mut();
        let entry = opcode::Recv::new(types::Fd(c.fd), buffer[have..].as_mut_ptr(), want as u32)
            .build()
            .user_data(token);
        c.recv_inflight = true;
        c.ops += 1;
        // Safety: the buffer is held in `c.recv` until the completion.
        unsafe { io.push(entry) };
    }

    fn pump_send(&mut self, io: &mut Io, conn: usize) {
        let token = self.token(conn, OP_SEND);
        let c = &mut self.connections[conn];
        if c.send_inflight {
            return;
        }
        let Some(message) = c.send_queue.front() else {
            return;
        };
        let bytes = &message.bytes()[c.send_done..];
        let entry = opcode::Send::new(types::Fd(c.fd), bytes.as_ptr(), bytes.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token);
        c.send_inflight = true;
        c.ops += 1;
        // Safety: the message is held at the front of `send_queue` until the completion.
        unsafe { io.push(entry) };
    }

    pub fn on_cqe(&mut self, io: &mut Io, value: u64, result: i32) {
        let conn = (value >> 40) as usize;
        let op = (value >> 32) & 0xff;
        if op == OP_ACCEPT {
            self.accept_inflight = false;
            self.on_accept(result);
            return;
        }
        let generation = value as u32;
        let c = &mut self.connections[conn];
        assert_eq!(
            c.generation, generation,
            "completion for a recycled connection"
        );
        c.ops -= 1;
        match op {
            OP_CONNECT => self.on_connect(conn, result),
            OP_RECV => self.on_recv(conn, result),
            OP_SEND => self.on_send(conn, result),
            _ => unreachable!(),
        }
        self.reap(conn);
        let _ = io;
    }

    fn on_accept(&mut self, result: i32) {
        if result < 0 {
            return;
        }
        let fd = result;
        let Some(conn) = self.free_connection() else {
            // Safety: fd is ours.
            unsafe { libc::close(fd) };
            return;
        };
        set_socket_options(fd);
        let address = socket_addr_of(&self.accept_addr);
        let c = &mut self.connections[conn];
        c.fd = fd;
        c.state = State::Connected;
        c.peer = Peer::Unknown;
        c.address = address;
        c.answered = false;
        c.generation = c.generation.wrapping_add(1);
        self.stats.accepted += 1;
    }

    fn on_connect(&mut self, conn: usize, result: i32) {
        let Peer::Replica(replica) = self.connections[conn].peer else {
            unreachable!()
        };
        if self.connections[conn].state != State::Connecting {
            return;
        }
        if result < 0 {
            self.close(conn);
            self.schedule_redial_soon(replica);
            return;
        }
        // The backoff is reset only once the peer sends a valid message: a peer that closes
        // every connection unanswered (another cluster's replica) is redialed ever more slowly.
        self.connections[conn].state = State::Connected;
        self.stats.connected += 1;
        // Introduce ourselves so the acceptor can route messages to us before we send anything.
        if let Some(mut message) = self.pool.get() {
            *message.header_mut() = hello(self.cluster, self.replica);
            self.enqueue(conn, &message);
        }
    }

    fn on_recv(&mut self, conn: usize, result: i32) {
        self.connections[conn].recv_inflight = false;
        if self.connections[conn].state != State::Connected {
            return;
        }
        if result <= 0 {
            self.stats.closed_peer += 1;
            let c = &self.connections[conn];
            if let (Peer::Replica(replica), false) = (c.peer, c.answered) {
                if replica > self.replica {
                    // We dialed, introduced ourselves, and the peer hung up without a word.
                    let cluster = self.cluster;
                    self.log_refusal(
                        conn,
                        "closed our connection unanswered",
                        0,
                        format_args!(
                            "replica {replica} closed our connection without answering: is it \
                             a replica of cluster {cluster} (check --addresses)?"
                        ),
                    );
                }
            }
            self.close(conn);
            return;
        }
        self.connections[conn].recv_have += result as usize;
        let have = self.connections[conn].recv_have;
        if have < HEADER_SIZE {
            return;
        }
        let header = *self.connections[conn].recv.as_ref().unwrap().header();
        if have == HEADER_SIZE {
            if let Some(reason) = self.header_problem(&header) {
                self.refuse(conn, reason, &header);
                return;
            }
        }
        if have < header.size as usize {
            return;
        }
        let message = self.connections[conn].recv.take().unwrap();
        self.connections[conn].recv_have = 0;
        if !header.valid_checksum_body(message.body()) {
            self.refuse(conn, "body checksum", &header);
            return;
        }
        let introduced = self.connections[conn].peer == Peer::Unknown;
        if let Some(reason) = self.identify(conn, &header) {
            self.refuse(conn, reason, &header);
            return;
        }
        let c = &mut self.connections[conn];
        c.answered = true;
        if let Peer::Replica(replica) = c.peer {
            if replica > self.replica {
                // A peer we dialed answered: dial it promptly again if this connection breaks.
                self.reconnect_attempts[replica as usize] = 0;
            }
        }
        self.stats.received += 1;
        if introduced && is_hello(&header) {
            return;
        }
        self.inbox.push_back(message);
    }

    /// Closes a connection that sent something it must not, logging why (rate limited).
    fn refuse(&mut self, conn: usize, reason: &'static str, header: &Header) {
        self.stats.closed_invalid += 1;
        let peer = self.connections[conn].peer;
        if reason == "wrong cluster" {
            let (theirs, ours) = (header.cluster, self.cluster);
            self.log_refusal(
                conn,
                reason,
                theirs,
                format_args!(
                    "closing connection from {peer:?}: wrong cluster: it names cluster {theirs}, \
                     ours is {ours} (a replica or client of another cluster; check its \
                     --addresses or --cluster)"
                ),
            );
        } else {
            self.log_refusal(
                conn,
                reason,
                0,
                format_args!("closing connection from {peer:?}: {reason}"),
            );
        }
        self.close(conn);
    }

    /// Logs `line` about a connection's peer, at most once a minute per (peer address, reason,
    /// cluster).
    fn log_refusal(
        &mut self,
        conn: usize,
        reason: &'static str,
        cluster: u128,
        line: std::fmt::Arguments,
    ) {
        let c = &self.connections[conn];
        let address = match (c.address, c.peer) {
            // An accepted connection's port is ephemeral: the peer is its host.
            (Some(a), Peer::Unknown | Peer::Client(_)) => SocketAddr::new(a.ip(), 0),
            (Some(a), Peer::Replica(r)) if r < self.replica => SocketAddr::new(a.ip(), 0),
            (Some(a), _) => a,
            (None, _) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        };
        let key = LimitKey {
            address,
            reason,
            cluster,
        };
        match self.refusals.admit(key, self.ticks) {
            None => self.stats.refusals_unlogged += 1,
            Some(suppressed) => {
                let from = match c.address {
                    Some(a) if a != address => format!("from {a}; "),
                    _ => String::new(),
                };
                let host = if address.port() == 0 {
                    address.ip().to_string()
                } else {
                    address.to_string()
                };
                let earlier = if suppressed > 0 {
                    format!("; {suppressed} more since the last line")
                } else {
                    String::new()
                };
                super::log::log(
                    super::log::Level::Warn,
                    "bus",
                    &format!("{line} ({from}logged at most once a minute for {host}{earlier})"),
                );
            }
        }
    }

    fn header_problem(&self, header: &Header) -> Option<&'static str> {
        if !header.valid_checksum() {
            return Some("header checksum");
        }
        if let Some(reason) = header.invalid(self.message_size_max) {
            return Some(reason);
        }
        if header.cluster != self.cluster {
            return Some("wrong cluster");
        }
        None
    }

    /// The first valid message names the peer; later ones must agree with it.
    fn identify(&mut self, conn: usize, header: &Header) -> Option<&'static str> {
        let command = header.command().unwrap();
        let from_client = matches!(
            command,
            Command::Request | Command::PingClient | Command::RequestStatus
        );
        match self.connections[conn].peer {
            Peer::Unknown => {
                if from_client {
                    // A client's newest connection wins: replies go where it listens now.
                    let client = header
                        .client_id()
                        .expect("a client command names its client");
                    for other in 0..self.connections.len() {
                        if other != conn && self.connections[other].peer == Peer::Client(client) {
                            self.connections[other].peer = Peer::Unknown;
                        }
                    }
                    self.connections[conn].peer = Peer::Client(client);
                    return None;
                }
                let replica = header.replica;
                // Only replicas below us dial us; anything else is a stranger or a misconfiguration.
                if replica >= self.replica
                    || matches!(
                        command,
                        Command::Reply
                            | Command::Eviction
                            | Command::PongClient
                            | Command::StatusReport
                    )
                {
                    return Some("unexpected peer");
                }
                if let Some(old) = self.replicas[replica as usize] {
                    self.close(old);
                }
                self.connections[conn].peer = Peer::Replica(replica);
                self.replicas[replica as usize] = Some(conn);
                None
            }
            Peer::Client(client) => {
                if !from_client || header.client_id() != Some(client) {
                    return Some("client sent a replica command");
                }
                None
            }
            Peer::Replica(_) => {
                // A backup forwards client requests to the primary; nothing else of a client's.
                if from_client && command != Command::Request {
                    return Some("replica sent a client command");
                }
                None
            }
        }
    }

    fn on_send(&mut self, conn: usize, result: i32) {
        let c = &mut self.connections[conn];
        c.send_inflight = false;
        if c.state != State::Connected {
            return;
        }
        if result <= 0 {
            self.stats.closed_peer += 1;
            self.close(conn);
            return;
        }
        c.send_done += result as usize;
        let size = c.send_queue.front().unwrap().header().size as usize;
        if c.send_done == size {
            c.send_queue.pop_front();
            c.send_done = 0;
        }
    }

    fn close(&mut self, conn: usize) {
        let c = &mut self.connections[conn];
        if c.state == State::Closing || c.state == State::Free {
            return;
        }
        // Wake any operation in flight; the slot is reused once they complete.
        // Safety: fd is ours.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        c.state = State::Closing;
        if let Peer::Replica(r) = c.peer {
            if self.replicas[r as usize] == Some(conn) {
                self.replicas[r as usize] = None;
                if r > self.replica {
                    self.schedule_reconnect(r);
                }
            }
        }
        self.reap(conn);
    }

    fn reap(&mut self, conn: usize) {
        let c = &mut self.connections[conn];
        if c.state != State::Closing || c.ops > 0 {
            return;
        }
        // Safety: no operation references the fd any more.
        unsafe { libc::close(c.fd) };
        c.fd = -1;
        c.state = State::Free;
        c.peer = Peer::Unknown;
        c.address = None;
        c.answered = false;
        c.recv = None;
        c.recv_have = 0;
        c.send_queue.clear();
        c.send_done = 0;
    }

    fn enqueue(&mut self, conn: usize, message: &Message) {
        let c = &mut self.connections[conn];
        // A client has one request in flight: a reply, an eviction or a pong at a time.
        let bound = match c.peer {
            Peer::Replica(_) => self.send_queue_max,
            _ => CLIENT_SEND_QUEUE_MAX,
        };
        if c.state != State::Connected || c.send_queue.len() >= bound {
            self.stats.send_dropped += 1;
            return;
        }
        c.send_queue.push_back(message.clone());
    }
}

impl MessageBus for TcpBus {
    fn send_to_replica(&mut self, replica: u8, message: &Message) {
        match self.replicas.get(replica as usize).copied().flatten() {
            Some(conn) => self.enqueue(conn, message),
            None => self.stats.send_dropped += 1,
        }
    }

    fn send_to_client(&mut self, client: u128, message: &Message) {
        match self
            .connections
            .iter()
            .position(|c| c.peer == Peer::Client(client) && c.state == State::Connected)
        {
            Some(conn) => self.enqueue(conn, message),
            None => self.stats.send_dropped += 1,
        }
    }

    fn connected_to_replica(&self, replica: u8) -> bool {
        self.replicas
            .get(replica as usize)
            .copied()
            .flatten()
            .is_some_and(|conn| self.connections[conn].state == State::Connected)
    }
}

impl Drop for TcpBus {
    fn drop(&mut self) {
        for c in &self.connections {
            if c.fd >= 0 {
                // Safety: fds are ours.
                unsafe { libc::close(c.fd) };
            }
        }
        // Safety: listen fd is ours.
        unsafe { libc::close(self.listen_fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use zerocopy::IntoBytes;

    fn ping_client(cluster: u128) -> Header {
        let ping = crate::header::commands::PingClient {
            view: 0,
            client: 42,
        };
        let mut header = ping.to_header(cluster);
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    const CLUSTER: u128 = 7;

    /// Replica 1 of 2, listening on an ephemeral port.
    fn bus() -> TcpBus {
        let pool = MessagePool::new(8, 4096);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        TcpBus::listen(pool, CLUSTER, 1, vec![any, any], 4, 4).unwrap()
    }

    /// Hands `header` to the bus as received on a fresh accepted connection from `from`.
    fn receive(bus: &mut TcpBus, from: SocketAddr, header: &Header) {
        let conn = bus.free_connection().unwrap();
        let mut message = bus.pool.get().unwrap();
        message.buffer_mut()[..HEADER_SIZE].copy_from_slice(header.as_bytes());
        let c = &mut bus.connections[conn];
        c.state = State::Connected;
        c.peer = Peer::Unknown;
        c.address = Some(from);
        c.recv = Some(message);
        c.recv_have = 0;
        c.recv_inflight = true;
        bus.on_recv(conn, HEADER_SIZE as i32);
    }

    fn ping(cluster: u128, monotonic_sent_ns: u64) -> Header {
        let ping = Ping {
            replica: 0,
            monotonic_sent_ns,
            ..Ping::default()
        };
        let mut header = ping.to_header(cluster);
        header.set_checksum_body(&[]);
        header.set_checksum();
        header
    }

    #[test]
    fn the_hello_identifies_the_dialer_and_never_reaches_the_replica() {
        let mut bus = bus();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert!(is_hello(&hello(CLUSTER, 0)));
        assert!(!is_hello(&ping(CLUSTER, 5)), "a replica's ping is no hello");
        receive(&mut bus, from, &hello(CLUSTER, 0));
        assert!(
            bus.next_received().is_none(),
            "the hello reached the replica as a ping (zero checkpoint, zero send time)"
        );
        let conn = bus.replicas[0].expect("the hello identifies replica 0");
        assert_eq!(bus.connections[conn].peer, Peer::Replica(0));
        // The same connection's real pings are delivered.
        let mut message = bus.pool.get().unwrap();
        message.buffer_mut()[..HEADER_SIZE].copy_from_slice(ping(CLUSTER, 5).as_bytes());
        let c = &mut bus.connections[conn];
        c.recv = Some(message);
        c.recv_have = 0;
        c.recv_inflight = true;
        bus.on_recv(conn, HEADER_SIZE as i32);
        let delivered = bus.next_received().expect("a real ping is delivered");
        assert_eq!(Ping::from_header(delivered.header()).monotonic_sent_ns, 5);
        // A ping as the first message of a connection is delivered too, unless it is the hello.
        receive(&mut bus, from, &ping(CLUSTER, 9));
        assert!(bus.next_received().is_some());
    }

    #[test]
    fn another_clusters_connections_are_refused_and_logged_once_a_minute_per_host() {
        let mut bus = bus();
        for port in 0..100u16 {
            let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + port);
            receive(&mut bus, from, &ping(CLUSTER + 1, 5));
        }
        assert_eq!(bus.stats.closed_invalid, 100);
        assert_eq!(bus.stats.refusals_unlogged, 99, "one line for 100 attempts");
        assert!(bus.next_received().is_none());
        assert!(
            bus.free_connection().is_some(),
            "refused connections are freed"
        );
        // Another host, or another foreign cluster, gets its own line.
        let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 40000);
        receive(&mut bus, other, &ping(CLUSTER + 1, 5));
        receive(&mut bus, other, &ping(CLUSTER + 2, 5));
        assert_eq!(bus.stats.refusals_unlogged, 99);
        // A minute later, the first host is logged again.
        bus.ticks += REFUSAL_LOG_INTERVAL_TICKS;
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
        receive(&mut bus, from, &ping(CLUSTER + 1, 5));
        assert_eq!(bus.stats.refusals_unlogged, 99);
    }

    /// Feeds `stream` to a fresh accepted connection the way io_uring would: each receive asks
    /// for what the bus wants next (the rest of a header, then of the body) and gets any part of
    /// it. Returns the messages the replica would see, stopping when the bus closes the
    /// connection.
    fn feed(bus: &mut TcpBus, stream: &[u8], rng: &mut ChaCha8Rng) -> (Vec<Message>, bool) {
        let conn = bus.free_connection().unwrap();
        let c = &mut bus.connections[conn];
        c.state = State::Connected;
        c.peer = Peer::Unknown;
        c.address = Some("127.0.0.1:40000".parse().unwrap());
        let mut delivered = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            if bus.connections[conn].recv.is_none() {
                bus.connections[conn].recv = Some(bus.pool.get().expect("pool"));
                bus.connections[conn].recv_have = 0;
            }
            let c = &mut bus.connections[conn];
            let have = c.recv_have;
            let want = if have < HEADER_SIZE {
                HEADER_SIZE - have
            } else {
                c.recv.as_ref().unwrap().header().size as usize - have
            };
            let n = (1 + (rng.next_u64() as usize) % want).min(stream.len() - at);
            c.recv.as_mut().unwrap().buffer_mut()[have..have + n]
                .copy_from_slice(&stream[at..at + n]);
            c.recv_inflight = true;
            at += n;
            bus.on_recv(conn, n as i32);
            while let Some(message) = bus.next_received() {
                delivered.push(message);
            }
            if bus.connections[conn].state != State::Connected {
                return (delivered, true);
            }
        }
        // Leave the slot free for the next stream.
        bus.close(conn);
        (delivered, false)
    }

    /// Framing, fuzzed: streams of valid client frames (with and without bodies) with one
    /// damaged frame somewhere, cut at any point and received in any pieces. The bus never
    /// panics, delivers exactly the valid frames before the damage, and closes the connection
    /// at the damage (an unfinished frame at the end is neither).
    #[test]
    fn framing_delivers_exactly_the_valid_frames_before_any_damage() {
        use crate::header::commands::Request;
        let iterations = 10_000
            * std::env::var("VSR_FUZZ_ITERATIONS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1);
        let mut bus = bus();
        for seed in 0..iterations {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut stream = Vec::new();
            // Each frame's header checksum and end offset.
            let mut frames: Vec<(u128, usize)> = Vec::new();
            // The damaged frame, and how much of the stream must arrive for the bus to see it.
            let mut damage: Option<(usize, usize)> = None;
            for frame in 0..1 + rng.next_u64() % 6 {
                let mut message = [0u8; 4096];
                let body_len = (rng.next_u64() % 2) as usize * (rng.next_u64() % 3000) as usize;
                let mut header = if body_len == 0 && rng.next_u64() % 2 == 0 {
                    ping_client(CLUSTER)
                } else {
                    let request = Request {
                        client: 42,
                        session: 1,
                        request: frame + 1,
                        operation: 130,
                        ..Request::default()
                    };
                    request.to_header(CLUSTER)
                };
                rng.fill_bytes(&mut message[HEADER_SIZE..HEADER_SIZE + body_len]);
                header.size = (HEADER_SIZE + body_len) as u32;
                header.set_checksum_body(&message[HEADER_SIZE..HEADER_SIZE + body_len]);
                header.set_checksum();
                let start = stream.len();
                if damage.is_none() && rng.next_u64() % 4 == 0 {
                    // Header damage shows once the header is in; body damage once it all is.
                    let mut seen_at = start + HEADER_SIZE;
                    match rng.next_u64() % 4 {
                        0 => {
                            let mut bytes = header.as_bytes().to_vec();
                            bytes[(rng.next_u64() % HEADER_SIZE as u64) as usize] ^= 0x10;
                            header = Header::read_from(&bytes);
                        }
                        1 if body_len > 0 => {
                            message[HEADER_SIZE + (rng.next_u64() as usize % body_len)] ^= 1;
                            seen_at = start + HEADER_SIZE + body_len;
                        }
                        2 => {
                            header.cluster ^= 1;
                            header.set_checksum();
                        }
                        _ => {
                            header.size = (1 << 20) + rng.next_u32() % (1 << 20);
                            header.set_checksum();
                        }
                    }
                    damage = Some((frames.len(), seen_at));
                }
                message[..HEADER_SIZE].copy_from_slice(header.as_bytes());
                stream.extend_from_slice(&message[..HEADER_SIZE + body_len]);
                frames.push((header.checksum, stream.len()));
            }
            if rng.next_u64() % 3 == 0 {
                let len = (rng.next_u64() as usize) % (stream.len() + 1);
                stream.truncate(len);
            }
            let (delivered, closed) = feed(&mut bus, &stream, &mut rng);
            let whole = frames
                .iter()
                .filter(|(_, end)| *end <= stream.len())
                .count();
            let valid = damage.map_or(whole, |(d, _)| d.min(whole));
            let got: Vec<u128> = delivered.iter().map(|m| m.header().checksum).collect();
            let expected: Vec<u128> = frames[..valid].iter().map(|(c, _)| *c).collect();
            assert_eq!(got, expected, "seed {seed}: delivered frames");
            let damage_seen = damage.is_some_and(|(_, seen_at)| seen_at <= stream.len());
            assert_eq!(
                closed, damage_seen,
                "seed {seed}: closed at the damage, and only there"
            );
            drop(delivered);
            assert_eq!(
                bus.pool.available(),
                bus.pool.capacity(),
                "seed {seed}: leaked"
            );
        }
    }

    #[test]
    fn the_log_limiter_is_bounded() {
        let mut limiter = LogLimiter::new();
        let key = |i: u16| LimitKey {
            address: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), i),
            reason: "wrong cluster",
            cluster: 1,
        };
        for i in 0..1000 {
            assert_eq!(limiter.admit(key(i), i as u64), Some(0));
        }
        assert_eq!(limiter.entries.len(), REFUSAL_LOG_ENTRIES);
        assert_eq!(limiter.admit(key(999), 1000), None);
        assert_eq!(
            limiter.admit(key(999), 999 + REFUSAL_LOG_INTERVAL_TICKS),
            Some(1),
            "the suppressed line is counted in the next"
        );
    }
}
