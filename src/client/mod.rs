//! The client protocol, sans I/O: register a session, keep one request in flight, retry with
//! backoff, follow view changes, handle eviction. Driven by `tick` and `on_message`; sends through
//! a `ClientBus`. The simulator drives it; the network client (`net`) wraps it.
//!
//! A request in flight stays in flight until its reply (or an eviction): it is retried for as
//! long as it takes, always with the same request number and bytes, so it executes at most once.
//! Errors from `register` and `request` are definite: nothing was sent. The only way to drop a
//! request in flight is `cancel_unsent`, for a caller that knows no byte of it ever left.

pub mod batch;
pub mod net;

use crate::config::TICK_MS;
use crate::header::commands::{PingClient, PongClient, Reply, Request, REGISTER_REPLY_SIZE};
use crate::header::{Command, Header, Operation, HEADER_SIZE};
use crate::message::{Message, MessagePool};
use crate::timeout::Timeout;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fmt;

pub trait ClientBus {
    fn send_to_replica(&mut self, replica: u8, message: &Message);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A request is already in flight (one per session).
    Busy,
    /// `register` has not completed yet.
    NotRegistered,
    /// The body does not fit in a message.
    TooMuchData,
    /// The operation is reserved for the protocol.
    InvalidOperation,
    /// The cluster evicted this session; a new client (new id) must register.
    Evicted,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ClientError::Busy => "a request is already in flight",
            ClientError::NotRegistered => "the session is not registered yet",
            ClientError::TooMuchData => "the request body exceeds the message size",
            ClientError::InvalidOperation => "operation is reserved for the protocol",
            ClientError::Evicted => "the session was evicted by the cluster",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ClientError {}

#[derive(Debug)]
pub enum ClientEvent {
    Registered {
        session: u64,
    },
    /// The reply to the request in flight.
    Reply {
        request: u64,
        operation: u8,
        reply: Message,
    },
    Evicted,
}

pub struct Client {
    pub id: u128,
    cluster: u128,
    replica_count: u8,
    pool: MessagePool,
    view: u32,
    session: u64,
    request_number: u64,
    parent: u128,
    inflight: Option<Message>,
    registering: bool,
    /// The cluster's `message_size_max`, from the register reply (None before, or from an
    /// older cluster that does not say).
    cluster_message_size_max: Option<usize>,
    evicted: bool,
    request_timeout: Timeout,
    attempts: u32,
    prng: ChaCha8Rng,
}

impl Client {
    pub fn new(
        id: u128,
        cluster: u128,
        replica_count: u8,
        message_size_max: usize,
        request_timeout_ticks: u64,
        seed: u64,
    ) -> Client {
        assert!(id != 0, "client id 0 is reserved");
        assert!(replica_count > 0);
        Client {
            id,
            cluster,
            replica_count,
            pool: MessagePool::new(4, message_size_max),
            view: 0,
            session: 0,
            request_number: 0,
            parent: 0,
            inflight: None,
            registering: false,
            cluster_message_size_max: None,
            evicted: false,
            request_timeout: Timeout::new("request", request_timeout_ticks),
            attempts: 0,
            prng: ChaCha8Rng::seed_from_u64(seed ^ id as u64 ^ (id >> 64) as u64),
        }
    }

    /// Caps the retry interval (the request timeout's backoff; `64 * request_timeout_ticks`
    /// unless set). A client that must notice a healed cluster quickly caps it low.
    pub fn set_request_timeout_max_ticks(&mut self, ticks: u64) {
        self.request_timeout.set_backoff_max(ticks);
    }

    pub fn session(&self) -> u64 {
        self.session
    }

    /// The client's idea of the view (raised by pongs).
    pub fn view(&self) -> u32 {
        self.view
    }

    /// The replica this client sends new requests to: the primary of its view.
    pub fn primary(&self) -> u8 {
        (self.view % self.replica_count as u32) as u8
    }

    pub fn replica_count(&self) -> u8 {
        self.replica_count
    }

    /// A `register` is in flight.
    pub fn registering(&self) -> bool {
        self.registering
    }

    /// Whether the request in flight is `operation` with `body` (a caller may resubmit it: the
    /// same request, retried).
    pub fn inflight_is(&self, operation: u8, body: &[u8]) -> bool {
        self.inflight.as_ref().is_some_and(|m| {
            !self.registering && m.header().operation == operation && m.body() == body
        })
    }

    /// Forgets the request (or register) in flight. Only for a caller that knows that no
    /// replica can have received it (no copy was ever handed to a connection): the request
    /// number is then free again, and the next request takes it.
    pub fn cancel_unsent(&mut self) {
        self.inflight = None;
        self.registering = false;
        self.request_timeout.stop();
    }

    pub fn registered(&self) -> bool {
        self.session != 0
    }

    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    pub fn evicted(&self) -> bool {
        self.evicted
    }

    pub fn request_number(&self) -> u64 {
        self.request_number
    }

    /// The request in flight, if any (for the simulator's checkers).
    pub fn inflight(&self) -> Option<&Header> {
        self.inflight.as_ref().map(|m| m.header())
    }

    /// The largest request body: this client's messages, and the cluster's once the register
    /// reply named it (`REGISTER_REPLY_SIZE`).
    pub fn body_size_max(&self) -> usize {
        let own = self.pool.message_size_max();
        self.cluster_message_size_max.map_or(own, |c| c.min(own)) - HEADER_SIZE
    }

    pub fn register<B: ClientBus>(&mut self, bus: &mut B) -> Result<(), ClientError> {
        if self.evicted {
            return Err(ClientError::Evicted);
        }
        if self.inflight.is_some() || self.registered() {
            return Err(ClientError::Busy);
        }
        let mut message = self.pool.get().expect("client pool");
        let register = Request {
            view: self.view,
            client: self.id,
            operation: Operation::Register as u8,
            ..Request::default()
        };
        *message.header_mut() = register.to_header(self.cluster);
        message.seal(0);
        self.registering = true;
        self.send_new(bus, message);
        Ok(())
    }

    pub fn request<B: ClientBus>(
        &mut self,
        bus: &mut B,
        operation: u8,
        body: &[u8],
    ) -> Result<u64, ClientError> {
        if self.evicted {
            return Err(ClientError::Evicted);
        }
        if !self.registered() {
            return Err(ClientError::NotRegistered);
        }
        if self.inflight.is_some() {
            return Err(ClientError::Busy);
        }
        if operation < crate::header::STATE_MACHINE_OPERATION_FIRST {
            return Err(ClientError::InvalidOperation);
        }
        if body.len() > self.body_size_max() {
            return Err(ClientError::TooMuchData);
        }
        let mut message = self.pool.get().expect("client pool");
        let request = Request {
            view: self.view,
            client: self.id,
            session: self.session,
            request: self.request_number + 1,
            previous_reply_checksum: self.parent,
            operation,
        };
        *message.header_mut() = request.to_header(self.cluster);
        message.buffer_mut()[HEADER_SIZE..HEADER_SIZE + body.len()].copy_from_slice(body);
        message.seal(body.len());
        self.send_new(bus, message);
        Ok(request.request)
    }

    fn send_new<B: ClientBus>(&mut self, bus: &mut B, message: Message) {
        self.attempts = 0;
        self.request_timeout.start();
        bus.send_to_replica(self.primary(), &message);
        self.inflight = Some(message);
    }

    pub fn tick<B: ClientBus>(&mut self, bus: &mut B) {
        self.request_timeout.tick();
        if !self.request_timeout.fired() {
            return;
        }
        self.request_timeout.backoff(&mut self.prng);
        let Some(message) = self.inflight.clone() else {
            self.request_timeout.stop();
            return;
        };
        // Try the next replica (backups forward to the primary) and ask everyone for the view.
        self.attempts += 1;
        let target = ((self.view as u64 + self.attempts as u64) % self.replica_count as u64) as u8;
        bus.send_to_replica(target, &message);
        self.ping_replicas(bus);
    }

    /// Asks every replica for the view (`PingClient`). Over a connection-oriented bus this also
    /// introduces the client to every replica, so a reply from a primary it has not yet written
    /// to (a backup forwarded its request) has a way back.
    pub fn ping_replicas<B: ClientBus>(&mut self, bus: &mut B) {
        let ping = PingClient {
            view: self.view,
            client: self.id,
        };
        let mut ping = ping.to_header(self.cluster);
        ping.set_checksum_body(&[]);
        ping.set_checksum();
        if let Some(mut m) = self.pool.get() {
            *m.header_mut() = ping;
            for replica in 0..self.replica_count {
                bus.send_to_replica(replica, &m);
            }
        }
    }

    pub fn on_message(&mut self, message: Message) -> Option<ClientEvent> {
        let header = *message.header();
        if !header.valid_checksum()
            || header.invalid(self.pool.message_size_max()).is_some()
            || !header.valid_checksum_body(message.body())
            || header.cluster != self.cluster
            || header.client_id() != Some(self.id)
        {
            return None;
        }
        match header.command()? {
            Command::PongClient => {
                let pong = PongClient::from_header(&header);
                if pong.view > self.view {
                    self.view = pong.view;
                }
                None
            }
            Command::Eviction => {
                self.evicted = true;
                self.inflight = None;
                self.request_timeout.stop();
                Some(ClientEvent::Evicted)
            }
            Command::Reply => self.on_reply(message),
            _ => None,
        }
    }

    fn on_reply(&mut self, reply: Message) -> Option<ClientEvent> {
        let header = *reply.header();
        let fields = Reply::from_header(&header);
        let inflight = self.inflight.as_ref()?;
        let request_checksum = inflight.header().checksum;
        let request = Request::from_header(inflight.header());
        if fields.request_checksum != request_checksum || fields.request != request.request {
            return None;
        }
        self.inflight = None;
        self.request_timeout.stop();
        // A reply names no view (`view = 0`: replies are identical on every replica, their
        // checksums chain the session), so the view is learned from pongs only.
        self.parent = header.checksum;
        if self.registering {
            assert_eq!(fields.operation, Operation::Register as u8);
            self.registering = false;
            self.session = fields.session;
            if let Some(size) = reply.body().get(..REGISTER_REPLY_SIZE) {
                let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
                // A cluster's messages hold a header at least: anything less is not a size.
                if size > HEADER_SIZE as u64 {
                    self.cluster_message_size_max = Some(size as usize);
                }
            }
            self.request_number = 0;
            return Some(ClientEvent::Registered {
                session: fields.session,
            });
        }
        self.request_number = fields.request;
        Some(ClientEvent::Reply {
            request: fields.request,
            operation: fields.operation,
            reply,
        })
    }

    /// Milliseconds since the request in flight was first sent are not tracked here; the
    /// simulator measures latency in ticks of `TICK_MS`.
    pub const TICK_MS: u64 = TICK_MS;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{Command, Header};
    use crate::message::MessagePool;

    /// Records (replica, command) of everything sent.
    #[derive(Default)]
    struct Recorder {
        sent: Vec<(u8, u8)>,
        /// The checksum of every request sent (registers included).
        requests: Vec<u128>,
        last: Option<Message>,
    }

    impl ClientBus for Recorder {
        fn send_to_replica(&mut self, replica: u8, message: &Message) {
            self.sent.push((replica, message.header().command));
            if message.header().command == Command::Request as u8 {
                self.requests.push(message.header().checksum);
            }
            self.last = Some(message.clone());
        }
    }

    fn reply_to(pool: &MessagePool, request: &Header, view: u32, session: u64) -> Message {
        let fields = Request::from_header(request);
        let reply = Reply {
            view,
            replica: 1,
            client: fields.client,
            request: fields.request,
            request_checksum: request.checksum,
            operation: fields.operation,
            session,
            op: 4,
            commit: 4,
            ..Reply::default()
        };
        let mut reply = reply.to_header(request.cluster);
        reply.set_checksum_body(&[]);
        reply.set_checksum();
        let mut message = pool.get().unwrap();
        *message.header_mut() = reply;
        message
    }

    #[test]
    fn the_register_reply_bounds_request_bodies_by_the_clusters_message_size() {
        let pool = MessagePool::new(4, 8192);
        for (body, expected) in [
            (Some(2048u64), 2048 - HEADER_SIZE),
            (Some(1 << 20), 8192 - HEADER_SIZE), // never above the client's own messages
            (None, 8192 - HEADER_SIZE),          // an older cluster's reply says nothing
        ] {
            let mut client = Client::new(7, 9, 3, 8192, 20, 1);
            let mut bus = Recorder::default();
            client.register(&mut bus).unwrap();
            assert_eq!(client.body_size_max(), 8192 - HEADER_SIZE);
            let register = *bus.last.as_ref().unwrap().header();
            let mut reply = reply_to(&pool, &register, 0, 77);
            if let Some(size) = body {
                let mut header = *reply.header();
                reply.buffer_mut()[HEADER_SIZE..HEADER_SIZE + REGISTER_REPLY_SIZE]
                    .copy_from_slice(&size.to_le_bytes());
                header.size = (HEADER_SIZE + REGISTER_REPLY_SIZE) as u32;
                header.set_checksum_body(&reply.buffer()[HEADER_SIZE..][..REGISTER_REPLY_SIZE]);
                header.set_checksum();
                *reply.header_mut() = header;
            }
            client.on_message(reply).expect("registered");
            assert_eq!(client.body_size_max(), expected, "{body:?}");
            let too_big = vec![0u8; expected + 1];
            assert_eq!(
                client.request(&mut bus, 200, &too_big),
                Err(ClientError::TooMuchData)
            );
        }
    }

    #[test]
    fn ping_replicas_reaches_every_replica() {
        let mut client = Client::new(7, 9, 3, 4096, 20, 1);
        let mut bus = Recorder::default();
        client.ping_replicas(&mut bus);
        let ping = Command::PingClient as u8;
        assert_eq!(bus.sent, vec![(0, ping), (1, ping), (2, ping)]);
    }

    fn pong(pool: &MessagePool, view: u32, replica: u8) -> Message {
        let pong = PongClient {
            view,
            replica,
            replica_count: 3,
            client: 7,
        };
        let mut header = pong.to_header(9);
        header.set_checksum_body(&[]);
        header.set_checksum();
        let mut message = pool.get().unwrap();
        *message.header_mut() = header;
        message
    }

    #[test]
    fn a_pong_from_a_newer_view_redirects_the_next_request() {
        let pool = MessagePool::new(4, 4096);
        let mut client = Client::new(7, 9, 3, 4096, 20, 1);
        let mut bus = Recorder::default();
        client.register(&mut bus).unwrap();
        assert_eq!(bus.sent.last().unwrap().0, 0, "view 0's primary first");
        let request = *bus.last.as_ref().unwrap().header();
        // Replies carry view 0 on every replica: they must not move the client.
        let event = client.on_message(reply_to(&pool, &request, 0, 77));
        assert!(matches!(
            event,
            Some(ClientEvent::Registered { session: 77 })
        ));
        assert_eq!(client.view(), 0);
        // The cluster is in view 4: a pong says so, and its primary is replica 1.
        assert!(client.on_message(pong(&pool, 4, 2)).is_none());
        assert_eq!((client.view(), client.primary()), (4, 1));
        // An older view's pong does not move it back.
        client.on_message(pong(&pool, 3, 0));
        assert_eq!(client.view(), 4);
        client.request(&mut bus, 200, &[1, 2, 3]).unwrap();
        assert_eq!(
            *bus.sent.last().unwrap(),
            (1, Command::Request as u8),
            "the next request goes to view 4's primary"
        );
    }

    #[test]
    fn a_request_in_flight_is_retried_until_answered_and_only_an_unsent_one_is_cancelled() {
        let pool = MessagePool::new(4, 4096);
        let mut client = Client::new(7, 9, 3, 4096, 20, 1);
        client.set_request_timeout_max_ticks(40);
        let mut bus = Recorder::default();
        client.register(&mut bus).unwrap();
        let register = *bus.last.as_ref().unwrap().header();
        client.on_message(reply_to(&pool, &register, 0, 77));
        client.request(&mut bus, 200, &[1, 2, 3]).unwrap();
        assert!(client.inflight_is(200, &[1, 2, 3]));
        assert!(!client.inflight_is(200, &[1, 2]));
        assert_eq!(client.request(&mut bus, 200, &[4]), Err(ClientError::Busy));
        // Retries never stop, and the interval stays within its cap (40 ticks + jitter).
        let request = *bus.last.as_ref().unwrap().header();
        let sent_before = bus.sent.len();
        for _ in 0..1000 {
            client.tick(&mut bus);
        }
        let retries = bus.sent[sent_before..]
            .iter()
            .filter(|(_, command)| *command == Command::Request as u8)
            .count();
        assert!(retries >= 20, "{retries} retries in 1000 ticks");
        // Every retry is the same request (same checksum): it executes at most once.
        assert!(bus.requests[1..].iter().all(|&c| c == request.checksum));
        assert_eq!(Request::from_header(&request).request, 1);
        // Cancelling frees the number: the next request is number 1 again.
        client.cancel_unsent();
        assert!(!client.busy());
        assert_eq!(client.request(&mut bus, 200, &[4]), Ok(1));
    }
}
