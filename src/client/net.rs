//! A blocking network client over std TCP, wrapping the sans-I/O client protocol
//! (`vsr::client`): connects to every replica, registers its session, submits one request at a
//! time and waits for its reply, retrying and following view changes inside. Used by
//! `vsr client`, the REPL, the benchmark and the end-to-end tests.

use crate::client::{Client, ClientBus, ClientError, ClientEvent};
use crate::header::{Header, HEADER_SIZE};
use crate::message::{Message, MessagePool};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum NetError {
    Protocol(ClientError),
    /// No reply before the deadline (the cluster may be unavailable).
    Timeout,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Protocol(e) => write!(f, "{e}"),
            NetError::Timeout => write!(f, "no reply from the cluster before the deadline"),
        }
    }
}

impl std::error::Error for NetError {}

impl From<ClientError> for NetError {
    fn from(e: ClientError) -> NetError {
        NetError::Protocol(e)
    }
}

struct Connection {
    address: SocketAddr,
    stream: Option<TcpStream>,
    inbound: Vec<u8>,
    retry_at: Instant,
}

struct Links {
    connections: Vec<Connection>,
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
                }
                Err(_) => c.retry_at = Instant::now() + Duration::from_millis(100),
            }
        }
        c.stream.as_mut()
    }

    fn drop_connection(&mut self, replica: usize) {
        let c = &mut self.connections[replica];
        c.stream = None;
        c.inbound.clear();
        c.retry_at = Instant::now() + Duration::from_millis(50);
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
            self.drop_connection(replica);
        }
    }
}

pub struct NetClient {
    client: Client,
    links: Links,
    pool: MessagePool,
    message_size_max: usize,
}

impl NetClient {
    /// `message_size_max` must be at least the cluster's (replies up to it are accepted).
    pub fn new(cluster: u128, addresses: &[SocketAddr], message_size_max: usize) -> NetClient {
        let mut id_bytes = [0u8; 16];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = f.read_exact(&mut id_bytes);
        }
        let id = u128::from_le_bytes(id_bytes) | 1;
        let client = Client::new(
            id,
            cluster,
            addresses.len() as u8,
            message_size_max,
            20,
            id as u64,
        );
        let connections = addresses
            .iter()
            .map(|&address| Connection {
                address,
                stream: None,
                inbound: Vec::new(),
                retry_at: Instant::now(),
            })
            .collect();
        NetClient {
            client,
            links: Links { connections },
            pool: MessagePool::new(8, message_size_max),
            message_size_max,
        }
    }

    pub fn id(&self) -> u128 {
        self.client.id
    }

    pub fn body_size_max(&self) -> usize {
        self.message_size_max - HEADER_SIZE
    }

    /// Registers the session (once).
    pub fn register(&mut self, timeout: Duration) -> Result<u64, NetError> {
        // Connect to every replica first: the register goes to the primary of view 0, and if
        // the cluster has moved on, the real primary's reply needs a connection to come back on.
        self.client.ping_replicas(&mut self.links);
        self.client.register(&mut self.links)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll(deadline)? {
                ClientEvent::Registered { session } => return Ok(session),
                ClientEvent::Evicted => return Err(NetError::Protocol(ClientError::Evicted)),
                ClientEvent::Reply { .. } => {}
            }
        }
    }

    /// Submits one request and waits for its reply body.
    pub fn request(
        &mut self,
        operation: u8,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Message, NetError> {
        if !self.client.registered() {
            self.register(timeout)?;
        }
        self.client.request(&mut self.links, operation, body)?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll(deadline)? {
                ClientEvent::Reply { reply, .. } => return Ok(reply),
                ClientEvent::Evicted => return Err(NetError::Protocol(ClientError::Evicted)),
                ClientEvent::Registered { .. } => {}
            }
        }
    }

    /// Drives the protocol (ticks every 10 ms, reads every connection) until an event or the deadline.
    fn poll(&mut self, deadline: Instant) -> Result<ClientEvent, NetError> {
        let mut next_tick = Instant::now() + Duration::from_millis(crate::config::TICK_MS);
        loop {
            if let Some(event) = self.read_all() {
                return Ok(event);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NetError::Timeout);
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
                if let Some(event) = self.client.on_message(message) {
                    return Some(event);
                }
            }
        }
        None
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
