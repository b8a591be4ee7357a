//! Safety checkers. Every commit any replica makes is compared with the canonical history (the
//! first commit seen at each op); every reply a client accepts must belong to that history; no
//! request may be executed twice; state digests must agree at the same op.

use std::collections::BTreeMap;
use vsr::header::{Header, Operation};

#[derive(Clone, Copy, Debug)]
pub struct Canonical {
    pub checksum: u128,
    pub client: u128,
    pub request: u64,
    pub operation: u8,
}

#[derive(Default)]
pub struct Checker {
    pub history: BTreeMap<u64, Canonical>,
    /// (client, request) -> op that executed it.
    executed: BTreeMap<(u128, u64), u64>,
    /// State digest after op, from the first replica seen exactly there.
    digests: BTreeMap<u64, u128>,
    /// Per replica: ops checked so far in this incarnation, and the highest commit_max seen.
    checked: Vec<u64>,
    commit_max_seen: Vec<u64>,
    /// (client, request) -> reply checksum first accepted.
    replies: BTreeMap<(u128, u64), u128>,
    pub replies_checked: u64,
}

pub type CheckResult = Result<(), String>;

impl Checker {
    pub fn new(replica_count: usize) -> Checker {
        Checker {
            checked: vec![0; replica_count],
            commit_max_seen: vec![0; replica_count],
            ..Default::default()
        }
    }

    /// A replica restarted: it replays from op 1 and is checked again from there.
    pub fn on_restart(&mut self, replica: usize) {
        self.checked[replica] = 0;
        self.commit_max_seen[replica] = 0;
    }

    /// Called after every event a replica handled.
    pub fn observe(
        &mut self,
        replica: usize,
        commit_min: u64,
        commit_max: u64,
        header_at: impl Fn(u64) -> Option<Header>,
        digest: u128,
    ) -> CheckResult {
        if commit_max < self.commit_max_seen[replica] {
            return Err(format!(
                "replica {replica} commit_max regressed {} -> {commit_max}",
                self.commit_max_seen[replica]
            ));
        }
        self.commit_max_seen[replica] = commit_max;
        if commit_min < self.checked[replica] {
            return Err(format!(
                "replica {replica} commit_min regressed {} -> {commit_min}",
                self.checked[replica]
            ));
        }
        for op in self.checked[replica] + 1..=commit_min {
            let Some(header) = header_at(op) else {
                return Err(format!(
                    "replica {replica} committed op {op} but has no header for it"
                ));
            };
            self.record_commit(replica, op, &header)?;
        }
        self.checked[replica] = commit_min;
        match self.digests.get(&commit_min) {
            Some(&d) if d != digest => {
                return Err(format!(
                    "replica {replica} state digest differs at op {commit_min}"
                ));
            }
            Some(_) => {}
            None => {
                self.digests.insert(commit_min, digest);
            }
        }
        Ok(())
    }

    fn record_commit(&mut self, replica: usize, op: u64, header: &Header) -> CheckResult {
        if header.op != op {
            return Err(format!(
                "replica {replica} header at op {op} says op {}",
                header.op
            ));
        }
        match self.history.get(&op) {
            Some(c) if c.checksum != header.checksum => Err(format!(
                "replica {replica} committed a different prepare at op {op}: {:032x} vs canonical {:032x}",
                header.checksum, c.checksum
            )),
            Some(_) => Ok(()),
            None => {
                if op > 1 {
                    if let Some(previous) = self.history.get(&(op - 1)) {
                        if previous.checksum != header.parent {
                            return Err(format!("op {op} does not chain to the canonical op {}", op - 1));
                        }
                    }
                }
                let request = if header.operation == Operation::Register as u8 { 0 } else { header.request };
                // A register retried after its session was evicted registers anew: it changes no
                // state, so only state machine requests must execute at most once.
                if header.operation != Operation::Noop as u8 && header.operation != Operation::Register as u8 {
                    if let Some(previous) = self.executed.insert((header.client, request), op) {
                        return Err(format!(
                            "request {request} of client {:x} executed twice: ops {previous} and {op}",
                            header.client
                        ));
                    }
                }
                self.history.insert(
                    op,
                    Canonical { checksum: header.checksum, client: header.client, request: header.request, operation: header.operation },
                );
                Ok(())
            }
        }
    }

    /// A client accepted this reply.
    pub fn on_reply(&mut self, client: u128, reply: &Header, body: &[u8]) -> CheckResult {
        self.replies_checked += 1;
        let Some(canonical) = self.history.get(&reply.op) else {
            return Err(format!(
                "client {client:x} accepted a reply for op {} that no replica committed",
                reply.op
            ));
        };
        if canonical.checksum != reply.parent || canonical.client != client {
            return Err(format!(
                "client {client:x} accepted a reply for op {} that is not the canonical prepare",
                reply.op
            ));
        }
        if let Some(&digest) = self.digests.get(&reply.op) {
            if body.len() >= 16 && u128::from_le_bytes(body[..16].try_into().unwrap()) != digest {
                return Err(format!(
                    "reply body for op {} differs from the committed state",
                    reply.op
                ));
            }
        }
        if let Some(previous) = self.replies.insert((client, reply.request), reply.checksum) {
            if previous != reply.checksum {
                return Err(format!(
                    "client {client:x} got two different replies for request {}",
                    reply.request
                ));
            }
        }
        Ok(())
    }

    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for (op, c) in &self.history {
            hasher.update(&op.to_le_bytes());
            hasher.update(&c.checksum.to_le_bytes());
        }
        *hasher.finalize().as_bytes()
    }
}
