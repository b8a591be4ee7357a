//! A thread-safe client that batches concurrent callers: calls queue up, and a driver thread
//! packs consecutive `create_accounts` / `create_transfers` calls into one request up to the
//! message size, then hands each caller its own results (indices relative to its own events).
//!
//! A caller whose last event opens a linked chain is sent alone: concatenating it with the next
//! caller's events would extend its chain into theirs.
//!
//! Errors say whether the call was executed (`BatchError::definite`). A batch that timed out
//! stays in flight in the driver's `NetClient` (see `client::net`): the next batch waits for its
//! reply before it is sent, so the session carries on once the cluster answers again.

use crate::client::net::{NetClient, NetError};
use crate::ledger::LedgerOperation;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const EVENT_SIZE: usize = 128;
/// Byte offset of `flags` in both `Account` and `Transfer`; bit 0 is `linked`.
const FLAGS_OFFSET: usize = 118;

#[derive(Debug)]
pub enum BatchError {
    Net(NetError),
    /// The body is not a whole number of events, or exceeds a message.
    InvalidBody(String),
    /// Refused: the client is shut down (definite).
    Shutdown,
    /// The driver thread stopped (it panicked) while the call was queued or in flight
    /// (indefinite).
    DriverLost,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Net(e) => write!(f, "{e}"),
            BatchError::InvalidBody(why) => write!(f, "invalid request: {why}"),
            BatchError::Shutdown => write!(f, "the client is shut down"),
            BatchError::DriverLost => write!(
                f,
                "the client's driver stopped (the call may have been executed)"
            ),
        }
    }
}

impl BatchError {
    /// True when the call was certainly not executed (see `NetError::definite`). A call packed
    /// into a batch shares the batch's fate: an indefinite error means each of its events may
    /// have been applied.
    pub fn definite(&self) -> bool {
        match self {
            BatchError::Net(e) => e.definite(),
            BatchError::InvalidBody(_) | BatchError::Shutdown => true,
            BatchError::DriverLost => false,
        }
    }
}

impl std::error::Error for BatchError {}

struct Call {
    operation: u8,
    body: Vec<u8>,
    reply: mpsc::Sender<Result<Vec<u8>, BatchError>>,
}

#[derive(Default)]
struct Queue {
    calls: VecDeque<Call>,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

pub struct BatchClient {
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
    body_size_max: usize,
}

fn batchable(operation: u8) -> bool {
    operation == LedgerOperation::CreateAccounts as u8
        || operation == LedgerOperation::CreateTransfers as u8
}

fn ends_chain_open(body: &[u8]) -> bool {
    body.len() >= EVENT_SIZE && body[body.len() - EVENT_SIZE + FLAGS_OFFSET] & 1 != 0
}

impl BatchClient {
    pub fn new(
        cluster: u128,
        addresses: &[SocketAddr],
        message_size_max: usize,
        timeout: Duration,
    ) -> BatchClient {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let body_size_max = message_size_max - crate::header::HEADER_SIZE;
        let driver = {
            let shared = shared.clone();
            let addresses = addresses.to_vec();
            // The network client (and its message pool) lives on the driver thread only.
            std::thread::Builder::new()
                .name("vsr-client".into())
                .spawn(move || {
                    drive(
                        shared,
                        NetClient::new(cluster, &addresses, message_size_max),
                        timeout,
                    )
                })
                .expect("spawn client driver")
        };
        BatchClient {
            shared,
            driver: Some(driver),
            body_size_max,
        }
    }

    pub fn body_size_max(&self) -> usize {
        self.body_size_max
    }

    /// Submits one call and blocks until its reply body (for create operations: the failed
    /// events as (index, result) pairs, indices relative to this call's events).
    pub fn submit(&self, operation: u8, body: &[u8]) -> Result<Vec<u8>, BatchError> {
        if body.len() > self.body_size_max {
            return Err(BatchError::InvalidBody(format!(
                "{} bytes exceed a message ({})",
                body.len(),
                self.body_size_max
            )));
        }
        if batchable(operation) && body.len() % EVENT_SIZE != 0 {
            return Err(BatchError::InvalidBody(
                "not a whole number of 128-byte events".into(),
            ));
        }
        let (sender, receiver) = mpsc::channel();
        {
            let mut queue = self.shared.queue.lock().unwrap();
            if queue.shutdown {
                return Err(BatchError::Shutdown);
            }
            queue.calls.push_back(Call {
                operation,
                body: body.to_vec(),
                reply: sender,
            });
        }
        self.shared.ready.notify_one();
        receiver.recv().unwrap_or(Err(BatchError::DriverLost))
    }
}

impl Drop for BatchClient {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().shutdown = true;
        self.shared.ready.notify_all();
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}

/// Takes the next call, plus following calls of the same batchable operation that fit.
fn next_batch(queue: &mut Queue, body_size_max: usize) -> Vec<Call> {
    let first = queue.calls.pop_front().unwrap();
    let operation = first.operation;
    let mut size = first.body.len();
    let mut open = ends_chain_open(&first.body);
    let mut batch = vec![first];
    if !batchable(operation) {
        return batch;
    }
    while let Some(next) = queue.calls.front() {
        if open || next.operation != operation || size + next.body.len() > body_size_max {
            break;
        }
        let next = queue.calls.pop_front().unwrap();
        size += next.body.len();
        open = ends_chain_open(&next.body);
        batch.push(next);
    }
    batch
}

fn drive(shared: Arc<Shared>, mut client: NetClient, timeout: Duration) {
    // Registered first, so batches are cut to the cluster's message size (a failure here is
    // retried by the first request).
    let _ = client.register(timeout);
    loop {
        // Until registered the cluster's message size is unknown: one call a request then (each
        // is checked against it when it registers), never a packed batch it may refuse.
        let body_size_max = if client.session() != 0 {
            client.body_size_max()
        } else {
            0
        };
        let batch = {
            let mut queue = shared.queue.lock().unwrap();
            while queue.calls.is_empty() && !queue.shutdown {
                queue = shared.ready.wait(queue).unwrap();
            }
            if queue.calls.is_empty() {
                return;
            }
            next_batch(&mut queue, body_size_max)
        };
        let operation = batch[0].operation;
        let body: Vec<u8> = batch.iter().flat_map(|c| c.body.iter().copied()).collect();
        match client.request(operation, &body, timeout) {
            Ok(reply) => {
                if batch.len() == 1 {
                    let _ = batch[0].reply.send(Ok(reply.body().to_vec()));
                } else {
                    split_results(&batch, reply.body());
                }
            }
            Err(error) => {
                for call in &batch {
                    let _ = call.reply.send(Err(BatchError::Net(error.clone())));
                }
            }
        }
    }
}

/// Create results are (index u32, result u32) pairs over the concatenated events: give each call
/// the pairs in its range, re-indexed from 0.
fn split_results(batch: &[Call], reply: &[u8]) {
    let mut start = 0u32;
    for call in batch {
        let count = (call.body.len() / EVENT_SIZE) as u32;
        let mut own = Vec::new();
        for pair in reply.chunks_exact(8) {
            let index = u32::from_le_bytes(pair[..4].try_into().unwrap());
            if index >= start && index < start + count {
                own.extend_from_slice(&(index - start).to_le_bytes());
                own.extend_from_slice(&pair[4..]);
            }
        }
        let _ = call.reply.send(Ok(own));
        start += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        operation: u8,
        events: usize,
        linked_last: bool,
    ) -> (Call, mpsc::Receiver<Result<Vec<u8>, BatchError>>) {
        let (reply, receiver) = mpsc::channel();
        let mut body = vec![0u8; events * EVENT_SIZE];
        if linked_last {
            let at = body.len() - EVENT_SIZE + FLAGS_OFFSET;
            body[at] = 1;
        }
        (
            Call {
                operation,
                body,
                reply,
            },
            receiver,
        )
    }

    #[test]
    fn packs_same_operation_until_full_or_chain_open() {
        let transfers = LedgerOperation::CreateTransfers as u8;
        let mut queue = Queue::default();
        let mut receivers = Vec::new();
        for (op, n, linked) in [
            (transfers, 2, false),
            (transfers, 3, true),
            (transfers, 1, false),
            (LedgerOperation::LookupAccounts as u8, 0, false),
        ] {
            let (c, r) = if n == 0 {
                let (reply, r) = mpsc::channel();
                (
                    Call {
                        operation: op,
                        body: vec![0; 16],
                        reply,
                    },
                    r,
                )
            } else {
                call(op, n, linked)
            };
            queue.calls.push_back(c);
            receivers.push(r);
        }
        let first = next_batch(&mut queue, 1 << 20);
        assert_eq!(
            first.len(),
            2,
            "the second call ends a chain open: nothing may follow it"
        );
        let second = next_batch(&mut queue, 1 << 20);
        assert_eq!(second.len(), 1, "a lookup is never batched with creates");
        assert_eq!(next_batch(&mut queue, 1 << 20).len(), 1);
        let (a, _ra) = call(transfers, 4, false);
        let (b, _rb) = call(transfers, 4, false);
        queue.calls.push_back(a);
        queue.calls.push_back(b);
        assert_eq!(
            next_batch(&mut queue, 6 * EVENT_SIZE).len(),
            1,
            "the message size bounds a batch"
        );
    }

    #[test]
    fn results_are_split_and_reindexed() {
        let transfers = LedgerOperation::CreateTransfers as u8;
        let (a, ra) = call(transfers, 2, false);
        let (b, rb) = call(transfers, 3, false);
        let mut reply = Vec::new();
        for (index, result) in [(1u32, 7u32), (2, 9), (4, 11)] {
            reply.extend_from_slice(&index.to_le_bytes());
            reply.extend_from_slice(&result.to_le_bytes());
        }
        split_results(&[a, b], &reply);
        let a = ra.recv().unwrap().unwrap();
        let b = rb.recv().unwrap().unwrap();
        assert_eq!(a, [1u32.to_le_bytes(), 7u32.to_le_bytes()].concat());
        assert_eq!(
            b,
            [
                0u32.to_le_bytes(),
                9u32.to_le_bytes(),
                2u32.to_le_bytes(),
                11u32.to_le_bytes()
            ]
            .concat()
        );
    }
}
