//! A blocking network client over std TCP, wrapping the sans-I/O client protocol
//! (`vsr::client`): connects to every replica, registers its session, submits one request at a
//! time and waits for its reply, retrying and following view changes inside. Used by
//! `vsr client`, the REPL, the benchmark, the chaos test and the end-to-end tests.
//!
//! # A session never wedges
//!
//! A call that times out leaves its request in flight: the cluster may still execute it, and the
//! session's next request must follow it (requests of a session form a hash chain). So the next
//! call on the same `NetClient`:
//!
//! - with the same operation and body as the request in flight, *is* that request, retried: it
//!   waits for that request's reply and returns it (executed once, whichever call sees it);
//! - with anything else, first waits, within its own deadline, for the reply of the request in
//!   flight (kept for [`NetClient::take_late_reply`]), then sends its own. If that reply does not
//!   come in time, it fails with [`NetError::PreviousPending`] without sending anything.
//!
//! A request that never left this process (no connection took a copy of it before the
//! deadline: every replica refused the connection) is cancelled at the deadline instead, and its
//! number is reused: its error is definite.
//!
//! # Definite and indefinite errors
//!
//! [`NetError::definite`] tells them apart. A definite error means the request was not executed
//! and never will be; an indefinite one ([`NetError::Timeout`], and [`NetError::Evicted`] after
//! the request was sent) means it may have been executed, or may still be.

use crate::client::{Client, ClientBus, ClientError, ClientEvent};
use crate::header::commands::PongClient;
use crate::header::{Command, Header, HEADER_SIZE};
use crate::message::{Message, MessagePool};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The request timeout's first interval (ticks of 10 ms): a request is retried, and every replica
/// pinged, when no reply came within it.
const REQUEST_TIMEOUT_TICKS: u64 = 20;
/// The longest retry interval (ticks): a new primary or a healed cluster is noticed within half
/// a second.
const REQUEST_TIMEOUT_MAX_TICKS: u64 = 50;

/// Why the cluster did not answer, as far as this client can tell from what it saw since its
/// request was first sent: connection failures, connections closed unanswered, and the pongs
/// replicas sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Every address that did not answer refused the connection (or failed to connect).
    Refused { failures: Vec<(SocketAddr, String)> },
    /// The addresses accepted connections but closed them without answering: not replicas of
    /// this cluster (a replica closes a connection that names another cluster).
    NotThisCluster {
        cluster: u128,
        closed: Vec<SocketAddr>,
        refused: Vec<(SocketAddr, String)>,
    },
    /// A replica's pong does not match its place in the address list.
    WrongAddresses {
        address: SocketAddr,
        /// Its position in the list (0-based).
        position: usize,
        /// What it says it is.
        replica: u8,
        replica_count: u8,
        /// How many addresses the list has.
        listed: usize,
    },
    /// Connections are open, but no replica answered a ping: none is in normal operation.
    NoPrimary {
        silent: Vec<SocketAddr>,
        refused: Vec<(SocketAddr, String)>,
    },
    /// Only backups answered; the primary of their view did not.
    OnlyBackups {
        view: u32,
        primary: u8,
        primary_address: SocketAddr,
        /// Why the primary's connection failed, if it did.
        primary_error: Option<String>,
        backups: Vec<u8>,
    },
    /// The primary answers pings but did not reply to the request.
    PrimaryNotCommitting {
        view: u32,
        primary: u8,
        address: SocketAddr,
    },
    /// Nothing to go on (the deadline came before anything could be learned).
    NoAnswer,
}

fn list(addresses: &[SocketAddr]) -> String {
    addresses
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_failures(failures: &[(SocketAddr, String)]) -> String {
    failures
        .iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Refused { failures } => match failures.as_slice() {
                [(address, error)] => {
                    write!(f, "{error} on {address} (is a replica running there?)")
                }
                _ => write!(
                    f,
                    "no replica reachable ({}): are the replicas running?",
                    list_failures(failures)
                ),
            },
            Unavailable::NotThisCluster {
                cluster,
                closed,
                refused,
            } => {
                write!(
                    f,
                    "no replica of cluster {cluster} answered: {} accepted the connection but \
                     closed it unanswered, as a replica of another cluster does (check --cluster)",
                    list(closed)
                )?;
                if !refused.is_empty() {
                    write!(f, "; {}", list_failures(refused))?;
                }
                Ok(())
            }
            Unavailable::WrongAddresses {
                address,
                position,
                replica,
                replica_count,
                listed,
            } => {
                if *replica_count as usize != *listed {
                    write!(
                        f,
                        "--addresses lists {listed} address(es) but the cluster has \
                         {replica_count} replicas ({address} is replica {replica}): list every \
                         replica's address, in replica order"
                    )
                } else {
                    write!(
                        f,
                        "--addresses is out of order: {address} is replica {replica}, not \
                         replica {position}: list every replica's address, in replica order"
                    )
                }
            }
            Unavailable::NoPrimary { silent, refused } => {
                write!(
                    f,
                    "the cluster has no primary yet: {} accept(s) connections but no replica \
                     answered (a view change or recovery is under way, too few replicas are \
                     running, or they are stopped)",
                    list(silent)
                )?;
                if !refused.is_empty() {
                    write!(f, "; {}", list_failures(refused))?;
                }
                Ok(())
            }
            Unavailable::OnlyBackups {
                view,
                primary,
                primary_address,
                primary_error,
                backups,
            } => write!(
                f,
                "only backups answered (replica(s) {} in view {view}): the primary, replica \
                 {primary} at {primary_address}, did not{} (if it is down, the others elect a \
                 new one within seconds)",
                backups
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                primary_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            Unavailable::PrimaryNotCommitting {
                view,
                primary,
                address,
            } => write!(
                f,
                "the primary (replica {primary} at {address}, view {view}) answers but did not \
                 reply: it cannot commit now (too few replicas running for a quorum, or their \
                 clocks are not synchronized yet)"
            ),
            Unavailable::NoAnswer => write!(f, "no replica answered"),
        }
    }
}

#[derive(Clone, Debug)]
pub enum NetError {
    /// Refused by the client before anything was sent (definite).
    Protocol(ClientError),
    /// Definite: the request was never sent (no replica could be reached, or no session could
    /// be registered), and it will not be.
    NotSent(Unavailable),
    /// Definite: an earlier request of this session (number `request`) still has no reply; this
    /// one waits behind it and was not sent.
    PreviousPending { request: u64, cause: Unavailable },
    /// Indefinite: request number `request` was sent and no reply came before the deadline. It
    /// may have been executed, or may be later: it stays in flight (see the module doc).
    Timeout { request: u64, cause: Unavailable },
    /// The cluster evicted this session (a newer client took its place in the client table).
    /// Indefinite if `sent`: the request may have executed before the eviction.
    Evicted { sent: bool },
}

impl NetError {
    /// True when the request was certainly not executed (and never will be).
    pub fn definite(&self) -> bool {
        match self {
            NetError::Protocol(_) | NetError::NotSent(_) | NetError::PreviousPending { .. } => true,
            NetError::Timeout { .. } => false,
            NetError::Evicted { sent } => !sent,
        }
    }

    /// Why the cluster did not answer, when that is the error.
    pub fn cause(&self) -> Option<&Unavailable> {
        match self {
            NetError::NotSent(cause)
            | NetError::PreviousPending { cause, .. }
            | NetError::Timeout { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Protocol(e) => write!(f, "{e}"),
            NetError::NotSent(cause) => write!(f, "not sent: {cause}"),
            NetError::PreviousPending { request, cause } => write!(
                f,
                "not sent: request {request} of this session still has no reply, and this one \
                 waits behind it: {cause}"
            ),
            NetError::Timeout { cause, .. } => write!(
                f,
                "no reply from the cluster before the deadline: {cause} (the request may have \
                 been executed; it is retried until answered)"
            ),
            NetError::Evicted { sent } => write!(
                f,
                "the cluster evicted this session{}",
                if *sent {
                    " (the request may have been executed)"
                } else {
                    ""
                }
            ),
        }
    }
}

impl std::error::Error for NetError {}

impl From<ClientError> for NetError {
    fn from(e: ClientError) -> NetError {
        match e {
            ClientError::Evicted => NetError::Evicted { sent: false },
            e => NetError::Protocol(e),
        }
    }
}

struct Connection {
    address: SocketAddr,
    stream: Option<TcpStream>,
    inbound: Vec<u8>,
    retry_at: Instant,
    /// A valid message of this cluster arrived on the current stream.
    answered: bool,
    // What was seen since the request in flight was first sent (for `diagnose`):
    /// The last failure to connect, cleared by a connection.
    connect_error: Option<String>,
    /// Connections the peer closed before sending anything valid.
    closed_unanswered: u32,
    /// The last pong.
    pong: Option<PongClient>,
}

struct Links {
    connections: Vec<Connection>,
    /// A whole copy of the request in flight was written to some connection: a replica may have
    /// received it.
    request_sent: bool,
}

fn connect_error_text(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "connection timed out".into(),
        _ => format!("cannot connect: {e}"),
    }
}

impl Links {
    fn ensure(&mut self, replica: usize) -> Option<&mut TcpStream> {
        let c = &mut self.connections[replica];
        if c.stream.is_none() && Instant::now() >= c.retry_at {
            match TcpStream::connect_timeout(&c.address, Duration::from_millis(200)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_nonblocking(true);
                    c.inbound.clear();
                    c.stream = Some(stream);
                    c.answered = false;
                    c.connect_error = None;
                }
                Err(e) => {
                    c.connect_error = Some(connect_error_text(&e));
                    c.retry_at = Instant::now() + Duration::from_millis(100);
                }
            }
        }
        c.stream.as_mut()
    }

    fn drop_connection(&mut self, replica: usize) {
        let c = &mut self.connections[replica];
        if c.stream.is_some() && !c.answered {
            c.closed_unanswered += 1;
        }
        c.stream = None;
        c.inbound.clear();
        c.retry_at = Instant::now() + Duration::from_millis(50);
    }

    /// Forgets what was seen: a new request is about to be sent.
    fn new_window(&mut self) {
        self.request_sent = false;
        for c in &mut self.connections {
            c.connect_error = None;
            c.closed_unanswered = 0;
            c.pong = None;
        }
    }
}

impl ClientBus for Links {
    fn send_to_replica(&mut self, replica: u8, message: &Message) {
        let replica = replica as usize;
        let Some(stream) = self.ensure(replica) else {
            return;
        };
        // Requests are small relative to socket buffers; a would-block write drops the
        // connection and the protocol's retry resends.
        let bytes = message.bytes();
        let mut written = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        while written < bytes.len() {
            match stream.write(&bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if written < bytes.len() {
            // A partial frame fails its checksums at the replica: it cannot be executed.
            self.drop_connection(replica);
        } else if message.header().command == Command::Request as u8 {
            self.request_sent = true;
        }
    }
}

pub struct NetClient {
    client: Client,
    cluster: u128,
    links: Links,
    pool: MessagePool,
    message_size_max: usize,
    /// The reply to a request whose call timed out, received while a later call waited for it.
    late_reply: Option<(u64, Message)>,
}

impl NetClient {
    /// `message_size_max` must be at least the cluster's (replies up to it are accepted).
    pub fn new(cluster: u128, addresses: &[SocketAddr], message_size_max: usize) -> NetClient {
        let mut id_bytes = [0u8; 16];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = f.read_exact(&mut id_bytes);
        }
        let id = u128::from_le_bytes(id_bytes) | 1;
        let mut client = Client::new(
            id,
            cluster,
            addresses.len() as u8,
            message_size_max,
            REQUEST_TIMEOUT_TICKS,
            id as u64,
        );
        client.set_request_timeout_max_ticks(REQUEST_TIMEOUT_MAX_TICKS);
        let connections = addresses
            .iter()
            .map(|&address| Connection {
                address,
                stream: None,
                inbound: Vec::new(),
                retry_at: Instant::now(),
                answered: false,
                connect_error: None,
                closed_unanswered: 0,
                pong: None,
            })
            .collect();
        NetClient {
            client,
            cluster,
            links: Links {
                connections,
                request_sent: false,
            },
            pool: MessagePool::new(8, message_size_max),
            message_size_max,
            late_reply: None,
        }
    }

    pub fn id(&self) -> u128 {
        self.client.id
    }

    /// The largest request body: this client's messages, or the cluster's if smaller (learned
    /// at register).
    pub fn body_size_max(&self) -> usize {
        self.client.body_size_max()
    }

    /// The session, once registered (0 before).
    pub fn session(&self) -> u64 {
        self.client.session()
    }

    /// A request of an earlier call is still in flight (that call timed out).
    pub fn busy(&self) -> bool {
        self.client.busy()
    }

    /// The reply to a request whose call ended in `Timeout`, if it came while a later call
    /// waited for it: (request number, reply). Replaced by the next such reply.
    pub fn take_late_reply(&mut self) -> Option<(u64, Message)> {
        self.late_reply.take()
    }

    /// Registers the session, if it is not yet: returns the session. A register sent by an
    /// earlier call that timed out is waited for, not sent again.
    pub fn register(&mut self, timeout: Duration) -> Result<u64, NetError> {
        if self.client.registered() {
            return Ok(self.client.session());
        }
        self.register_until(Instant::now() + timeout)
    }

    fn register_until(&mut self, deadline: Instant) -> Result<u64, NetError> {
        if !self.client.busy() {
            self.links.new_window();
            // Connect to every replica first: the register goes to the primary of view 0, and if
            // the cluster has moved on, the real primary's reply needs a connection to come back
            // on. The pongs also tell us the view.
            self.client.ping_replicas(&mut self.links);
            self.client.register(&mut self.links)?;
        }
        loop {
            match self.poll(deadline) {
                Some(ClientEvent::Registered { session }) => return Ok(session),
                Some(ClientEvent::Evicted) => return Err(NetError::Evicted { sent: false }),
                Some(ClientEvent::Reply { .. }) => {}
                None => {
                    let cause = self.diagnose();
                    if !self.links.request_sent {
                        self.client.cancel_unsent();
                    }
                    // Either way the caller's request (if any) was not sent.
                    return Err(NetError::NotSent(cause));
                }
            }
        }
    }

    /// Submits one request and waits for its reply. See the module doc for what happens to a
    /// request whose call timed out.
    pub fn request(
        &mut self,
        operation: u8,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Message, NetError> {
        let deadline = Instant::now() + timeout;
        if !self.client.registered() {
            self.register_until(deadline)?;
        }
        if self.client.busy() {
            if self.client.inflight_is(operation, body) {
                // The same request again: a retry of the one in flight.
                return self.wait_reply(deadline);
            }
            let pending = self.client.request_number() + 1;
            loop {
                match self.poll(deadline) {
                    Some(ClientEvent::Reply { request, reply, .. }) => {
                        self.late_reply = Some((request, reply));
                        break;
                    }
                    Some(ClientEvent::Evicted) => return Err(NetError::Evicted { sent: false }),
                    Some(ClientEvent::Registered { .. }) => {}
                    None => {
                        return Err(NetError::PreviousPending {
                            request: pending,
                            cause: self.diagnose(),
                        })
                    }
                }
            }
        }
        self.links.new_window();
        self.client.request(&mut self.links, operation, body)?;
        self.wait_reply(deadline)
    }

    fn wait_reply(&mut self, deadline: Instant) -> Result<Message, NetError> {
        loop {
            match self.poll(deadline) {
                Some(ClientEvent::Reply { reply, .. }) => return Ok(reply),
                Some(ClientEvent::Evicted) => {
                    return Err(NetError::Evicted {
                        sent: self.links.request_sent,
                    })
                }
                Some(ClientEvent::Registered { .. }) => {}
                None => {
                    let cause = self.diagnose();
                    if !self.links.request_sent {
                        self.client.cancel_unsent();
                        return Err(NetError::NotSent(cause));
                    }
                    return Err(NetError::Timeout {
                        request: self.client.request_number() + 1,
                        cause,
                    });
                }
            }
        }
    }

    /// Drives the protocol (ticks every 10 ms, reads every connection) until an event, or None
    /// at the deadline.
    fn poll(&mut self, deadline: Instant) -> Option<ClientEvent> {
        let mut next_tick = Instant::now() + Duration::from_millis(crate::config::TICK_MS);
        loop {
            if let Some(event) = self.read_all() {
                return Some(event);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if now >= next_tick {
                next_tick = now + Duration::from_millis(crate::config::TICK_MS);
                self.client.tick(&mut self.links);
            }
            self.wait_readable(next_tick.min(deadline));
        }
    }

    fn wait_readable(&mut self, until: Instant) {
        let mut fds: Vec<libc::pollfd> = self
            .links
            .connections
            .iter()
            .filter_map(|c| c.stream.as_ref())
            .map(|s| libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(s),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout = until
            .saturating_duration_since(Instant::now())
            .as_millis()
            .min(1000) as i32;
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(timeout.max(1) as u64));
            return;
        }
        // Safety: fds is a valid array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout.max(1)) };
    }

    fn read_all(&mut self) -> Option<ClientEvent> {
        for replica in 0..self.links.connections.len() {
            let mut buffer = [0u8; 64 * 1024];
            loop {
                let c = &mut self.links.connections[replica];
                let Some(stream) = c.stream.as_mut() else {
                    break;
                };
                match stream.read(&mut buffer) {
                    Ok(0) => {
                        self.links.drop_connection(replica);
                        break;
                    }
                    Ok(n) => c.inbound.extend_from_slice(&buffer[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.links.drop_connection(replica);
                        break;
                    }
                }
            }
            while let Some(message) = self.take_message(replica) {
                self.observe(replica, message.header());
                if let Some(event) = self.client.on_message(message) {
                    if matches!(
                        event,
                        ClientEvent::Reply { .. } | ClientEvent::Registered { .. }
                    ) && replica as u8 != self.client.primary()
                    {
                        // Only the primary replies, and replies name no view: the view changed.
                        // Ask for it, so the next request goes straight to the primary rather than
                        // through a backup.
                        self.client.ping_replicas(&mut self.links);
                    }
                    return Some(event);
                }
            }
        }
        None
    }

    /// Notes what a message from `replica`'s connection says about the cluster.
    fn observe(&mut self, replica: usize, header: &Header) {
        if header.cluster != self.cluster || header.client_id() != Some(self.client.id) {
            return;
        }
        let c = &mut self.links.connections[replica];
        c.answered = true;
        if header.command() == Some(Command::PongClient) {
            c.pong = Some(PongClient::from_header(header));
        }
    }

    /// Names the most specific reason the cluster has not answered, from what was seen since the
    /// request in flight was first sent.
    fn diagnose(&self) -> Unavailable {
        let connections = &self.links.connections;
        let listed = connections.len();
        for (position, c) in connections.iter().enumerate() {
            if let Some(pong) = c.pong {
                if pong.replica as usize != position || pong.replica_count as usize != listed {
                    return Unavailable::WrongAddresses {
                        address: c.address,
                        position,
                        replica: pong.replica,
                        replica_count: pong.replica_count,
                        listed,
                    };
                }
            }
        }
        let pongs: Vec<PongClient> = connections.iter().filter_map(|c| c.pong).collect();
        if let Some(view) = pongs.iter().map(|p| p.view).max() {
            let primary = (view % listed as u32) as u8;
            let address = connections[primary as usize].address;
            if pongs.iter().any(|p| p.replica == primary && p.view == view) {
                return Unavailable::PrimaryNotCommitting {
                    view,
                    primary,
                    address,
                };
            }
            let primary_connection = &connections[primary as usize];
            return Unavailable::OnlyBackups {
                view,
                primary,
                primary_address: address,
                primary_error: primary_connection
                    .stream
                    .is_none()
                    .then(|| primary_connection.connect_error.clone())
                    .flatten(),
                backups: pongs.iter().map(|p| p.replica).collect(),
            };
        }
        let refused: Vec<(SocketAddr, String)> = connections
            .iter()
            .filter(|c| c.stream.is_none())
            .filter_map(|c| c.connect_error.clone().map(|e| (c.address, e)))
            .collect();
        let closed: Vec<SocketAddr> = connections
            .iter()
            .filter(|c| c.closed_unanswered > 0 && !c.answered)
            .map(|c| c.address)
            .collect();
        let silent: Vec<SocketAddr> = connections
            .iter()
            .filter(|c| c.stream.is_some() && c.closed_unanswered == 0)
            .map(|c| c.address)
            .collect();
        if !silent.is_empty() {
            return Unavailable::NoPrimary { silent, refused };
        }
        if !closed.is_empty() {
            return Unavailable::NotThisCluster {
                cluster: self.cluster,
                closed,
                refused,
            };
        }
        if !refused.is_empty() {
            return Unavailable::Refused { failures: refused };
        }
        Unavailable::NoAnswer
    }

    /// The next whole message buffered from `replica`, if any; garbage drops the connection.
    fn take_message(&mut self, replica: usize) -> Option<Message> {
        let inbound = &self.links.connections[replica].inbound;
        if inbound.len() < HEADER_SIZE {
            return None;
        }
        let header = Header::read_from(inbound);
        if !header.valid_checksum() || header.invalid(self.message_size_max).is_some() {
            self.links.drop_connection(replica);
            return None;
        }
        let size = header.size as usize;
        if inbound.len() < size {
            return None;
        }
        let mut message = self.pool.get()?;
        message.buffer_mut()[..size].copy_from_slice(&inbound[..size]);
        self.links.connections[replica].inbound.drain(..size);
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Every cause names what to check; every error says whether the request was executed.
    #[test]
    fn every_error_names_its_cause_and_outcome() {
        let refused = || vec![(at(3001), "connection refused".to_string())];
        let causes = [
            (
                Unavailable::Refused {
                    failures: refused(),
                },
                "connection refused on 127.0.0.1:3001 (is a replica running there?)",
            ),
            (
                Unavailable::Refused {
                    failures: vec![
                        (at(3000), "connection refused".into()),
                        (at(3001), "connection timed out".into()),
                    ],
                },
                "no replica reachable (127.0.0.1:3000: connection refused, 127.0.0.1:3001: \
                 connection timed out)",
            ),
            (
                Unavailable::NotThisCluster {
                    cluster: 7,
                    closed: vec![at(3000)],
                    refused: refused(),
                },
                "no replica of cluster 7 answered: 127.0.0.1:3000 accepted the connection but \
                 closed it unanswered",
            ),
            (
                Unavailable::WrongAddresses {
                    address: at(3001),
                    position: 0,
                    replica: 1,
                    replica_count: 3,
                    listed: 1,
                },
                "--addresses lists 1 address(es) but the cluster has 3 replicas (127.0.0.1:3001 \
                 is replica 1): list every replica's address, in replica order",
            ),
            (
                Unavailable::WrongAddresses {
                    address: at(3001),
                    position: 0,
                    replica: 1,
                    replica_count: 3,
                    listed: 3,
                },
                "--addresses is out of order: 127.0.0.1:3001 is replica 1, not replica 0",
            ),
            (
                Unavailable::NoPrimary {
                    silent: vec![at(3000)],
                    refused: refused(),
                },
                "the cluster has no primary yet: 127.0.0.1:3000 accept(s) connections but no \
                 replica answered",
            ),
            (
                Unavailable::OnlyBackups {
                    view: 4,
                    primary: 1,
                    primary_address: at(3001),
                    primary_error: Some("connection refused".into()),
                    backups: vec![0, 2],
                },
                "only backups answered (replica(s) 0, 2 in view 4): the primary, replica 1 at \
                 127.0.0.1:3001, did not: connection refused",
            ),
            (
                Unavailable::PrimaryNotCommitting {
                    view: 4,
                    primary: 1,
                    address: at(3001),
                },
                "the primary (replica 1 at 127.0.0.1:3001, view 4) answers but did not reply: it \
                 cannot commit now",
            ),
            (Unavailable::NoAnswer, "no replica answered"),
        ];
        for (cause, text) in causes {
            assert!(cause.to_string().contains(text), "{cause}");
            let errors = [
                (NetError::NotSent(cause.clone()), true, "not sent: "),
                (
                    NetError::PreviousPending {
                        request: 3,
                        cause: cause.clone(),
                    },
                    true,
                    "not sent: request 3 of this session still has no reply",
                ),
                (
                    NetError::Timeout {
                        request: 3,
                        cause: cause.clone(),
                    },
                    false,
                    "no reply from the cluster before the deadline: ",
                ),
            ];
            for (error, definite, prefix) in errors {
                assert_eq!(error.definite(), definite, "{error}");
                assert!(error.to_string().starts_with(prefix), "{error}");
                assert!(error.to_string().contains(text), "{error}");
                assert_eq!(error.cause(), Some(&cause));
            }
        }
        assert!(NetError::Evicted { sent: false }.definite());
        assert!(!NetError::Evicted { sent: true }.definite());
        assert!(NetError::from(ClientError::Evicted).definite());
        assert!(NetError::from(ClientError::TooMuchData).definite());
    }
}
