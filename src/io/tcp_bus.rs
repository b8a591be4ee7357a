//! The message bus over TCP, driven by the loop's io_uring.
//!
//! Replicas listen on their address; replica i dials every replica j > i, so each pair has one
//! connection and never two. Clients dial every replica. A connection's peer is identified by its
//! first valid message. Framing: the 256-byte header is read first and checked (checksum,
//! `invalid()`, cluster, size bound) before the body is read; then the body checksum. Anything
//! wrong closes the connection, logged once; nothing from the network can panic the replica.
//! Send queues are bounded per connection: a slow peer loses messages (the protocol retries), it
//! cannot exhaust memory.

use crate::bus::MessageBus;
use crate::config::REPLICAS_MAX;
use crate::header::commands::Ping;
use crate::header::{Command, Header, HEADER_SIZE};
use crate::io::{user_data, Io, Owner};
use crate::message::{Message, MessagePool};
use io_uring::{opcode, types};
use std::collections::VecDeque;
use std::net::SocketAddr;

const OP_ACCEPT: u64 = 1;
const OP_CONNECT: u64 = 2;
const OP_RECV: u64 = 3;
const OP_SEND: u64 = 4;
const ACCEPT_CONN: u64 = 0xffff;
pub const CLIENT_SEND_QUEUE_MAX: usize = 2;

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
            stats: BusStats::default(),
        })
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

    fn pump_recv(&mut self, io: &mut Io, conn: usize) {
        if self.connections[conn].recv_inflight {
            return;
        }
        if self.connections[conn].recv.is_none() {
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
        let c = &mut self.connections[conn];
        c.fd = fd;
        c.state = State::Connected;
        c.peer = Peer::Unknown;
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
            self.close(conn, None);
            self.schedule_reconnect(replica);
            return;
        }
        self.connections[conn].state = State::Connected;
        self.reconnect_attempts[replica as usize] = 0;
        self.stats.connected += 1;
        // Introduce ourselves so the acceptor can route messages to us before we send anything.
        let hello = Ping {
            replica: self.replica,
            ..Ping::default()
        };
        let mut hello = hello.to_header(self.cluster);
        hello.set_checksum_body(&[]);
        hello.set_checksum();
        if let Some(mut message) = self.pool.get() {
            *message.header_mut() = hello;
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
            self.close(conn, None);
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
                self.close(conn, Some(reason));
                return;
            }
        }
        if have < header.size as usize {
            return;
        }
        let message = self.connections[conn].recv.take().unwrap();
        self.connections[conn].recv_have = 0;
        if !header.valid_checksum_body(message.body()) {
            self.close(conn, Some("body checksum"));
            return;
        }
        if let Some(reason) = self.identify(conn, &header) {
            self.close(conn, Some(reason));
            return;
        }
        self.stats.received += 1;
        self.inbox.push_back(message);
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
        let from_client = matches!(command, Command::Request | Command::PingClient);
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
                        Command::Reply | Command::Eviction | Command::PongClient
                    )
                {
                    return Some("unexpected peer");
                }
                if let Some(old) = self.replicas[replica as usize] {
                    self.close(old, None);
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
            self.close(conn, None);
            return;
        }
        c.send_done += result as usize;
        let size = c.send_queue.front().unwrap().header().size as usize;
        if c.send_done == size {
            c.send_queue.pop_front();
            c.send_done = 0;
        }
    }

    fn close(&mut self, conn: usize, reason: Option<&'static str>) {
        let c = &mut self.connections[conn];
        if c.state == State::Closing || c.state == State::Free {
            return;
        }
        if let Some(reason) = reason {
            self.stats.closed_invalid += 1;
            eprintln!("bus: closing connection from {:?}: {reason}", c.peer);
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
