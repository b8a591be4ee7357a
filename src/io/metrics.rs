//! The Prometheus endpoint (`vsr start --metrics=<host:port>`, docs/operations.md "Metrics"):
//! `GET /metrics` answered with the text exposition format from the replica's own event loop, on
//! the same io_uring ring, with no thread and no allocation per request.
//!
//! A scraper can never stall the replica: connections live in a fixed set of slots with fixed
//! buffers; while every slot is busy nothing is accepted (the kernel's listen backlog holds, or
//! refuses, the rest, so a flood of connections costs the replica nothing); a request must arrive
//! whole (at most `REQUEST_MAX` bytes) and the answer be taken within `DEADLINE_TICKS`, or the
//! connection is shut down; every connection is closed after one answer. Rendering reads the
//! replica's counters and does not touch the protocol.

use super::log::{log, Level};
use super::ring::{user_data, Io, Owner};
use crate::header::commands::{
    status_name, StatusReport, STATUS_FLAG_CLOCK_SYNCHRONIZED, STATUS_FLAG_PRIMARY,
    STATUS_FLAG_REJOINING, STATUS_FLAG_SYNCING, STATUS_NORMAL, STATUS_RECOVERING_HEAD,
};
use crate::io::file_storage::FileStorageStats;
use crate::io::tcp_bus::BusStats;
use crate::metrics::{Histogram, Latencies};
use crate::replica::ReplicaStats;
use crate::replica::ViewChangeReason;
use io_uring::{opcode, types};
use std::fmt::Write;
use std::net::SocketAddr;

/// Connections served at once; more are closed on accept.
pub const SLOTS: usize = 16;
/// The most bytes of a request (line and headers) read.
const REQUEST_MAX: usize = 2048;
/// Room for the answer: the metric set is fixed, and renders to about 10 KiB.
const RESPONSE_MAX: usize = 64 * 1024;
/// Connections the kernel holds for the endpoint while every slot is busy.
const LISTEN_BACKLOG: i32 = 1024;
/// Ticks a connection may take from accept to its answer sent (2 s).
const DEADLINE_TICKS: u64 = 200;

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const ACCEPT_SLOT: u64 = 0xff;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// Reading the request.
    Reading,
    /// A whole `GET /metrics` arrived: the runtime renders the answer (`next_render`).
    Render,
    Sending,
    /// Done or failed: closed once no operation is in flight.
    Closing,
}

struct Slot {
    state: State,
    fd: i32,
    generation: u32,
    /// Operations in flight on `fd`.
    ops: u32,
    request: Box<[u8; REQUEST_MAX]>,
    have: usize,
    response: String,
    sent: usize,
    deadline: u64,
}

/// Counters of the endpoint itself (served with the rest).
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsServerStats {
    pub scrapes: u64,
    pub bad_requests: u64,
    /// Connections shut down at their deadline.
    pub timed_out: u64,
}

pub struct MetricsServer {
    listen_fd: i32,
    accept_inflight: bool,
    /// An accept failed (out of file descriptors, say): the next is armed on the next tick,
    /// not at once, or the loop would spin on the failing accept.
    accept_backoff: bool,
    slots: Vec<Slot>,
    ticks: u64,
    pub stats: MetricsServerStats,
}

impl MetricsServer {
    pub fn listen(address: SocketAddr) -> std::io::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(false)?;
        let listen_fd = std::os::fd::IntoRawFd::into_raw_fd(listener);
        // A deep backlog: connections beyond the slots wait in the kernel, not in a client's
        // SYN retries (the kernel caps it at net.core.somaxconn).
        // Safety: a listening socket we own.
        if unsafe { libc::listen(listen_fd, LISTEN_BACKLOG) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let slots = (0..SLOTS)
            .map(|_| Slot {
                state: State::Free,
                fd: -1,
                generation: 0,
                ops: 0,
                request: Box::new([0; REQUEST_MAX]),
                have: 0,
                response: String::with_capacity(RESPONSE_MAX),
                sent: 0,
                deadline: 0,
            })
            .collect();
        Ok(MetricsServer {
            listen_fd,
            accept_inflight: false,
            accept_backoff: false,
            slots,
            ticks: 0,
            stats: MetricsServerStats::default(),
        })
    }

    fn user_data(slot: u64, op: u64, generation: u32) -> u64 {
        user_data(
            Owner::Metrics,
            (slot << 40) | (op << 32) | u64::from(generation),
        )
    }

    /// Submits what the connections can do now: accept (only with a slot free: the kernel's
    /// backlog holds the rest, at no cost to the replica), receive, send.
    pub fn pump(&mut self, io: &mut Io) {
        let slot_free = self.slots.iter().any(|s| s.state == State::Free);
        if !self.accept_inflight && !self.accept_backoff && slot_free {
            let entry = opcode::Accept::new(
                types::Fd(self.listen_fd),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Self::user_data(ACCEPT_SLOT, OP_ACCEPT, 0));
            // Safety: no buffers.
            unsafe { io.push(entry) };
            self.accept_inflight = true;
        }
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let generation = slot.generation;
            let data = |op| Self::user_data(index as u64, op, generation);
            match slot.state {
                State::Reading if slot.ops == 0 => {
                    let buffer = &mut slot.request[slot.have..];
                    let entry = opcode::Recv::new(
                        types::Fd(slot.fd),
                        buffer.as_mut_ptr(),
                        buffer.len() as u32,
                    )
                    .build()
                    .user_data(data(OP_RECV));
                    // Safety: the request buffer is boxed in the slot, which outlives the
                    // operation (a slot is reused only once `ops` is 0).
                    unsafe { io.push(entry) };
                    slot.ops += 1;
                }
                State::Sending if slot.ops == 0 => {
                    let bytes = &slot.response.as_bytes()[slot.sent..];
                    let entry =
                        opcode::Send::new(types::Fd(slot.fd), bytes.as_ptr(), bytes.len() as u32)
                            .flags(libc::MSG_NOSIGNAL)
                            .build()
                            .user_data(data(OP_SEND));
                    // Safety: as above; the response is not changed while it is sent.
                    unsafe { io.push(entry) };
                    slot.ops += 1;
                }
                State::Closing if slot.ops == 0 => {
                    // Safety: the fd is ours and nothing is in flight on it.
                    unsafe { libc::close(slot.fd) };
                    slot.fd = -1;
                    slot.state = State::Free;
                }
                _ => {}
            }
        }
    }

    pub fn on_cqe(&mut self, value: u64, result: i32) {
        let (index, op) = ((value >> 40) as usize, (value >> 32) & 0xff);
        if op == OP_ACCEPT {
            self.accept_inflight = false;
            self.on_accept(result);
            return;
        }
        let slot = &mut self.slots[index];
        assert_eq!(
            slot.generation, value as u32,
            "a completion of a reused slot"
        );
        slot.ops -= 1;
        match (op, slot.state) {
            (OP_RECV, State::Reading) if result > 0 => {
                slot.have += result as usize;
                self.on_request_bytes(index);
            }
            (OP_SEND, State::Sending) if result > 0 => {
                slot.sent += result as usize;
                if slot.sent == slot.response.len() {
                    slot.state = State::Closing;
                }
            }
            // The peer closed or failed, or the slot is closing already.
            _ => self.close(index),
        }
    }

    fn on_accept(&mut self, result: i32) {
        if result < 0 {
            self.accept_backoff = true;
            return;
        }
        let index = self
            .slots
            .iter()
            .position(|s| s.state == State::Free)
            .expect("an accept is armed only with a slot free");
        let slot = &mut self.slots[index];
        slot.state = State::Reading;
        slot.fd = result;
        slot.generation = slot.generation.wrapping_add(1);
        slot.have = 0;
        slot.sent = 0;
        slot.response.clear();
        slot.deadline = self.ticks + DEADLINE_TICKS;
    }

    /// The request so far: wait for more, or take it whole (only `GET /metrics` is served).
    fn on_request_bytes(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let request = &slot.request[..slot.have];
        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            if slot.have == REQUEST_MAX {
                self.answer(index, "431 Request Header Fields Too Large");
            }
            return;
        };
        let line = request[..end].split(|&b| b == b'\r').next().unwrap_or(&[]);
        let mut words = line.split(|&b| b == b' ');
        let (method, path) = (words.next(), words.next());
        let version_ok = words.next().is_some_and(|v| v.starts_with(b"HTTP/1."));
        match (method, path) {
            (Some(b"GET"), Some(b"/metrics")) if version_ok => slot.state = State::Render,
            (Some(b"GET"), Some(_)) if version_ok => self.answer(index, "404 Not Found"),
            _ => self.answer(index, "400 Bad Request"),
        }
    }

    /// An error answer, then the connection closes.
    fn answer(&mut self, index: usize, status: &str) {
        self.stats.bad_requests += 1;
        let slot = &mut self.slots[index];
        slot.response.clear();
        let body = "only GET /metrics is served\n";
        let _ = write!(
            slot.response,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        slot.state = State::Sending;
    }

    /// A slot whose request wants the metrics, if any: the runtime renders into
    /// `response_body` and calls `rendered`.
    pub fn next_render(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.state == State::Render)
    }

    /// The answer's buffer, emptied, for the body; `rendered` then puts the head before it.
    pub fn response_body(&mut self, index: usize) -> &mut String {
        assert_eq!(self.slots[index].state, State::Render);
        let response = &mut self.slots[index].response;
        response.clear();
        response
    }

    pub fn rendered(&mut self, index: usize) {
        self.stats.scrapes += 1;
        let slot = &mut self.slots[index];
        assert_eq!(slot.state, State::Render);
        let length = slot.response.len();
        let mut head = [0u8; 160];
        let mut cursor = std::io::Cursor::new(&mut head[..]);
        std::io::Write::write_fmt(
            &mut cursor,
            format_args!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {length}\r\nConnection: close\r\n\r\n"
            ),
        )
        .expect("the head fits");
        let end = cursor.position() as usize;
        let head = std::str::from_utf8(&head[..end]).expect("ASCII");
        // Within the buffer's capacity (the body is far smaller): nothing is allocated.
        slot.response.insert_str(0, head);
        slot.state = State::Sending;
    }

    /// Shuts down connections past their deadline.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.accept_backoff = false;
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.state != State::Free
                && slot.state != State::Closing
                && self.ticks >= slot.deadline
            {
                self.stats.timed_out += 1;
                self.close(index);
            }
        }
    }

    /// Closes the connection: shut down now (ending whatever is in flight on it), the fd closed
    /// by `pump` once nothing is.
    fn close(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if slot.state == State::Free || slot.state == State::Closing {
            return;
        }
        slot.state = State::Closing;
        // Safety: the fd is ours; shutdown makes any receive or send in flight complete.
        unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
    }
}

/// What a scrape shows, gathered by the runtime.
pub struct Scrape<'a> {
    pub status: StatusReport,
    pub stats: &'a ReplicaStats,
    pub latencies: &'a Latencies,
    pub bus: &'a BusStats,
    pub storage: &'a FileStorageStats,
    pub server: MetricsServerStats,
    pub pool_capacity: usize,
    pub pool_available: usize,
}

/// Renders every metric in the text exposition format (docs/operations.md lists them).
pub fn render(out: &mut String, scrape: &Scrape) {
    let s = &scrape.status;
    let stats = scrape.stats;
    let storage = scrape.storage;
    let counters: [(&str, &str, u64); 29] = [
        (
            "requests",
            "Client requests received (a backup forwards them to the primary).",
            stats.requests,
        ),
        (
            "prepares",
            "Ops prepared by this replica as primary.",
            stats.prepares,
        ),
        ("storage_reads", "Reads of the data file.", storage.reads),
        ("storage_writes", "Writes of the data file.", storage.writes),
        (
            "storage_read_bytes",
            "Bytes read from the data file.",
            storage.bytes_read,
        ),
        (
            "storage_written_bytes",
            "Bytes written to the data file.",
            storage.bytes_written,
        ),
        (
            "commits",
            "Ops committed (executed) by this replica.",
            stats.commits,
        ),
        (
            "view_changes",
            "View changes this replica started or joined.",
            stats.view_changes,
        ),
        (
            "views_started",
            "Views this replica started or installed.",
            stats.views_started,
        ),
        (
            "primary_disconnects",
            "View changes begun because the connection to the primary closed.",
            stats.primary_disconnects,
        ),
        (
            "primary_step_downs",
            "Primaries that gave up their view lacking a prepare of their own log.",
            stats.primary_step_downs,
        ),
        (
            "prepares_resent",
            "Prepares the primary resent to replicas that had not acknowledged them.",
            stats.prepares_resent,
        ),
        (
            "repairs_headers",
            "Headers taken in by repair.",
            stats.repairs_headers,
        ),
        (
            "repairs_prepares",
            "Prepares taken in by repair.",
            stats.repairs_prepares,
        ),
        (
            "truncations",
            "Uncommitted ops truncated by a view change.",
            stats.truncations,
        ),
        ("evictions", "Client sessions evicted.", stats.evictions),
        (
            "checkpoints",
            "Checkpoints written and recorded.",
            stats.checkpoints,
        ),
        (
            "checkpoints_unusable",
            "Checkpoints that failed verification when loaded.",
            stats.checkpoints_unusable,
        ),
        ("syncs_started", "State syncs started.", stats.syncs_started),
        (
            "syncs_completed",
            "State syncs completed.",
            stats.syncs_completed,
        ),
        (
            "syncs_aborted",
            "State syncs abandoned.",
            stats.syncs_aborted,
        ),
        (
            "messages_dropped_invalid",
            "Messages dropped as invalid.",
            stats.messages_dropped_invalid,
        ),
        (
            "pool_exhausted",
            "Times the message pool was empty when the replica needed a message.",
            stats.pool_exhausted,
        ),
        (
            "bus_messages_received",
            "Messages received from peers and clients.",
            scrape.bus.received,
        ),
        (
            "bus_sends_dropped",
            "Messages dropped because a send queue was full or the peer unconnected.",
            scrape.bus.send_dropped,
        ),
        (
            "bus_connections_accepted",
            "Connections accepted.",
            scrape.bus.accepted,
        ),
        (
            "metrics_scrapes",
            "Answers served by this endpoint.",
            scrape.server.scrapes,
        ),
        (
            "metrics_bad_requests",
            "Requests to this endpoint other than GET /metrics.",
            scrape.server.bad_requests,
        ),
        (
            "metrics_timed_out",
            "Connections to this endpoint shut down at their deadline.",
            scrape.server.timed_out,
        ),
    ];
    for (name, help, value) in counters {
        let _ = write!(
            out,
            "# HELP vsr_{name}_total {help}\n# TYPE vsr_{name}_total counter\nvsr_{name}_total {value}\n"
        );
    }
    let _ = write!(
        out,
        "# HELP vsr_view_changes_by_reason_total View changes this replica started, by why.\n\
         # TYPE vsr_view_changes_by_reason_total counter\n"
    );
    for reason in ViewChangeReason::ALL {
        let count = stats.view_changes_by_reason[reason as usize];
        let _ = writeln!(
            out,
            "vsr_view_changes_by_reason_total{{reason=\"{}\"}} {count}",
            reason.name()
        );
    }
    let _ = write!(out, "# HELP vsr_status The replica's status (1 for the current one).\n# TYPE vsr_status gauge\n");
    for status in STATUS_NORMAL..=STATUS_RECOVERING_HEAD {
        let _ = writeln!(
            out,
            "vsr_status{{status=\"{}\"}} {}",
            status_name(status),
            u8::from(status == s.status)
        );
    }
    let flag = |f: u8| u64::from(s.flags & f != 0);
    let gauges: [(&str, &str, u64); 14] = [
        ("replica", "This replica's index.", u64::from(s.replica)),
        (
            "lag",
            "Ops known committed and not yet executed here (commit_max - commit_min).",
            s.commit_max.saturating_sub(s.commit_min),
        ),
        (
            "replica_count",
            "Replicas in the cluster.",
            u64::from(s.replica_count),
        ),
        (
            "primary",
            "1 if this replica is the primary of a normal view.",
            flag(STATUS_FLAG_PRIMARY),
        ),
        (
            "syncing",
            "1 while a state sync runs.",
            flag(STATUS_FLAG_SYNCING),
        ),
        (
            "rejoining",
            "1 while a re-created replica catches up (no votes).",
            flag(STATUS_FLAG_REJOINING),
        ),
        (
            "clock_synchronized",
            "1 if cluster time is synchronized (the primary prepares only then).",
            flag(STATUS_FLAG_CLOCK_SYNCHRONIZED),
        ),
        ("view", "The current view.", u64::from(s.view)),
        ("op", "The head of the log.", s.op),
        ("commit_min", "The highest op executed here.", s.commit_min),
        (
            "commit_max",
            "The highest op known committed.",
            s.commit_max,
        ),
        (
            "checkpoint_op",
            "The op of the durable checkpoint.",
            s.checkpoint_op,
        ),
        (
            "pipeline_depth",
            "Ops prepared and not yet committed (primary).",
            u64::from(s.pipeline),
        ),
        (
            "message_pool_in_use",
            "Messages of the pool in use.",
            (scrape.pool_capacity - scrape.pool_available) as u64,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = write!(
            out,
            "# HELP vsr_{name} {help}\n# TYPE vsr_{name} gauge\nvsr_{name} {value}\n"
        );
    }
    let _ = write!(
        out,
        "# HELP vsr_uptime_seconds Seconds since the replica started.\n# TYPE vsr_uptime_seconds gauge\nvsr_uptime_seconds {}.{:03}\n",
        s.uptime_ms / 1000,
        s.uptime_ms % 1000
    );
    let histograms: [(&str, &str, &Histogram); 4] = [
        (
            "journal_write_seconds",
            "A journal write (prepare or header-ring sector) submitted until durable.",
            &storage.journal_write,
        ),
        (
            "request_seconds",
            "Primary: a request received until its reply was ready.",
            &scrape.latencies.request,
        ),
        (
            "prepare_commit_seconds",
            "Primary: an op prepared until it committed.",
            &scrape.latencies.prepare_commit,
        ),
        (
            "checkpoint_seconds",
            "A checkpoint started until it was durable.",
            &scrape.latencies.checkpoint,
        ),
    ];
    for (name, help, h) in histograms {
        render_histogram(out, name, help, h);
    }
}

fn render_histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = write!(
        out,
        "# HELP vsr_{name} {help}\n# TYPE vsr_{name} histogram\n"
    );
    for (bound_ns, count) in h.cumulative() {
        let _ = write!(out, "vsr_{name}_bucket{{le=\"");
        write_seconds(out, bound_ns);
        let _ = writeln!(out, "\"}} {count}");
    }
    let _ = writeln!(out, "vsr_{name}_bucket{{le=\"+Inf\"}} {}", h.count());
    let _ = write!(out, "vsr_{name}_sum ");
    write_seconds(out, h.sum_ns());
    let _ = writeln!(out, "\nvsr_{name}_count {}", h.count());
}

/// Nanoseconds as seconds, exactly (no float rounding): `1.5`, `0.0001`.
fn write_seconds(out: &mut String, ns: u64) {
    let (whole, mut fraction) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if fraction == 0 {
        let _ = write!(out, "{whole}");
        return;
    }
    let mut width = 9;
    while fraction % 10 == 0 {
        fraction /= 10;
        width -= 1;
    }
    let _ = write!(out, "{whole}.{fraction:0width$}");
}

/// Logs where the endpoint listens.
pub fn log_listening(address: SocketAddr) {
    log(
        Level::Info,
        "metrics",
        &format!("serving GET /metrics on http://{address}/metrics"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact() {
        let seconds = |ns| {
            let mut out = String::new();
            write_seconds(&mut out, ns);
            out
        };
        assert_eq!(seconds(100_000), "0.0001");
        assert_eq!(seconds(2_500_000_000), "2.5");
        assert_eq!(seconds(10_000_000_000), "10");
        assert_eq!(seconds(1_000_000_001), "1.000000001");
        assert_eq!(seconds(0), "0");
    }
}
