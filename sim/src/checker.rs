//! Safety checkers. Every commit any replica makes is compared with the canonical history (the
//! first commit seen at each op); every reply a client accepts must belong to that history; no
//! request may be executed twice; state digests must agree at the same op. Periodically (and at
//! the end of a run) every replica's journal is checked too (`check_journal`): where it claims
//! consecutive committed ops clean they must be hash chained, and every committed op it holds
//! must be the canonical one. `check_acknowledged` proves that no acknowledged op was lost.

use std::collections::BTreeMap;
use vsr::header::commands::{Prepare, Reply};
use vsr::header::{Header, Operation};

#[derive(Clone, Copy, Debug)]
pub struct Canonical {
    pub checksum: u128,
    /// The cluster time the primary gave the op.
    pub timestamp_ns: u64,
    pub client: u128,
    pub request: u64,
    pub operation: u8,
}

#[derive(Default)]
pub struct Checker {
    pub history: BTreeMap<u64, Canonical>,
    /// `history`'s checksums by op (index 0: op 1), for the journal check's hot loop. Ops
    /// commit in order from 1, so `history` never has gaps.
    history_checksums: Vec<u128>,
    /// (client, request) -> op that executed it.
    executed: BTreeMap<(u128, u64), u64>,
    /// State digest after op, from the first replica seen exactly there.
    digests: BTreeMap<u64, u128>,
    /// Per replica: ops checked so far in this incarnation, and the highest commit_max seen.
    checked: Vec<u64>,
    commit_max_seen: Vec<u64>,
    /// (client, request) -> reply checksum first accepted.
    replies: BTreeMap<(u128, u64), u128>,
    /// op -> checksum of the prepare whose reply a client accepted: acknowledged ops.
    pub acknowledged: BTreeMap<u64, u128>,
    pub replies_checked: u64,
    /// op -> id of the first checkpoint recorded at that op.
    checkpoints: BTreeMap<u64, u128>,
    pub checkpoints_observed: u64,
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
        checkpoint_op: u64,
        header_at: impl Fn(u64) -> Option<Header>,
        digest: Option<u128>,
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
        // Ops up to the checkpoint were reached by loading or syncing it: the state digest at
        // commit_min (below) and the checkpoint ids vouch for them, and whatever the journal
        // still holds there (a synced replica's stale, never committed ops) is not a commit.
        for op in self.checked[replica].max(checkpoint_op) + 1..=commit_min {
            let Some(header) = header_at(op) else {
                return Err(format!(
                    "replica {replica} committed op {op} but has no header for it"
                ));
            };
            self.record_commit(replica, op, &header)?;
        }
        self.checked[replica] = commit_min;
        // None: the state is being restored from a checkpoint (or lost and awaiting a sync).
        let Some(digest) = digest else {
            return Ok(());
        };
        match self.digests.get(&commit_min) {
            Some(&d) if d != digest => {
                return Err(format!(
                    "replica {replica} state digest differs at op {commit_min}: {digest:032x}, canonical {d:032x}"
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
        let prepare = Prepare::from_header(header);
        if prepare.op != op {
            return Err(format!(
                "replica {replica} header at op {op} says op {}",
                prepare.op
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
                        if previous.checksum != prepare.parent {
                            return Err(format!("op {op} does not chain to the canonical op {}", op - 1));
                        }
                        // Cluster time only moves forward along the log (docs/protocol.md 10).
                        if prepare.timestamp_ns <= previous.timestamp_ns {
                            return Err(format!(
                                "cluster time: op {op} has timestamp {} not after op {}'s {}",
                                prepare.timestamp_ns, op - 1, previous.timestamp_ns
                            ));
                        }
                    }
                }
                let request = if prepare.operation == Operation::Register as u8 { 0 } else { prepare.request };
                // A register retried after its session was evicted registers anew: it changes no
                // state, so only state machine requests must execute at most once.
                if prepare.operation != Operation::Noop as u8 && prepare.operation != Operation::Register as u8 {
                    if let Some(previous) = self.executed.insert((prepare.client, request), op) {
                        return Err(format!(
                            "request {request} of client {:x} executed twice: ops {previous} and {op}",
                            prepare.client
                        ));
                    }
                }
                assert_eq!(self.history_checksums.len() as u64 + 1, op, "history has a gap");
                self.history_checksums.push(header.checksum);
                self.history.insert(
                    op,
                    Canonical {
                        checksum: header.checksum,
                        timestamp_ns: prepare.timestamp_ns,
                        client: prepare.client,
                        request: prepare.request,
                        operation: prepare.operation,
                    },
                );
                Ok(())
            }
        }
    }

    /// A client accepted this reply.
    pub fn on_reply(&mut self, client: u128, reply: &Header, body: &[u8]) -> CheckResult {
        self.replies_checked += 1;
        let checksum = reply.checksum;
        let reply = Reply::from_header(reply);
        let Some(canonical) = self.history.get(&reply.op) else {
            return Err(format!(
                "client {client:x} accepted a reply for op {} that no replica committed",
                reply.op
            ));
        };
        if canonical.checksum != reply.prepare_checksum || canonical.client != client {
            return Err(format!(
                "client {client:x} accepted a reply for op {} that is not the canonical prepare",
                reply.op
            ));
        }
        if let Some(&digest) = self
            .digests
            .get(&reply.op)
            .filter(|_| reply.operation == vsr::state_machine::HASHING_OPERATION)
        {
            if body.len() >= 16 && u128::from_le_bytes(body[..16].try_into().unwrap()) != digest {
                return Err(format!(
                    "reply body for op {} differs from the committed state",
                    reply.op
                ));
            }
        }
        self.acknowledged.insert(reply.op, reply.prepare_checksum);
        if let Some(previous) = self.replies.insert((client, reply.request), checksum) {
            if previous != checksum {
                return Err(format!(
                    "client {client:x} got two different replies for request {}",
                    reply.request
                ));
            }
        }
        Ok(())
    }

    /// A replica's journal, as it claims it: for consecutive ops `a, a + 1` both present and
    /// clean with `a + 1 <= commit_min`, `a + 1` must name `a` as its parent; and every op in
    /// `1..=commit_min` that it holds must be the canonical prepare (every op a replica committed
    /// is in `history`, because `observe` records it first).
    ///
    /// Only ops `op_min..=commit_min` are checked (`op_min = 1`: the whole committed log), so
    /// that a cheap check of the newest ops can run after every step.
    pub fn check_journal<'a>(
        &self,
        replica: usize,
        op_min: u64,
        commit_min: u64,
        header_at: impl Fn(u64) -> Option<&'a Header>,
        is_dirty: impl Fn(u64) -> bool,
    ) -> CheckResult {
        let Some(canonical) = self.history_checksums.get(..commit_min as usize) else {
            return Err(format!(
                "replica {replica} has commit_min {commit_min} but op {commit_min} was never \
                 recorded as committed"
            ));
        };
        let op_min = op_min.max(1);
        let canonical = canonical.get(op_min as usize - 1..).unwrap_or(&[]);
        // (parent link expected of the op above: this op's checksum) when this op is clean.
        let mut below_clean: Option<u128> = None;
        for (op, &checksum) in (op_min..).zip(canonical) {
            let Some(header) = header_at(op) else {
                below_clean = None;
                continue;
            };
            let clean = !is_dirty(op);
            if let (true, Some(parent)) = (clean, below_clean) {
                if header.parent != parent {
                    return Err(format!(
                        "replica {replica} journal hash chain broken between clean ops {} and {op} \
                         (commit_min {commit_min}): parent {:032x} != checksum {parent:032x}",
                        op - 1,
                        header.parent,
                    ));
                }
            }
            if header.checksum != checksum {
                return Err(format!(
                    "replica {replica} journal holds a non-canonical prepare at committed op {op} \
                     (commit_min {commit_min}): {:032x} vs canonical {checksum:032x}",
                    header.checksum
                ));
            }
            below_clean = clean.then_some(header.checksum);
        }
        Ok(())
    }

    /// The checksum of committed op `op`, if the history has reached it.
    pub fn committed_checksum(&self, op: u64) -> Option<u128> {
        op.checked_sub(1)
            .and_then(|i| self.history_checksums.get(i as usize))
            .copied()
    }

    /// Every acknowledged op must still be canonical.
    pub fn check_acknowledged(&self) -> CheckResult {
        for (&op, &checksum) in &self.acknowledged {
            match self.history.get(&op) {
                Some(c) if c.checksum == checksum => {}
                _ => {
                    return Err(format!(
                        "acknowledged op {op} ({checksum:032x}) is not in the canonical history"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Every acknowledged op up to `commit_min` must be in the replica's journal with the
    /// acknowledged checksum.
    pub fn check_acknowledged_journal<'a>(
        &self,
        replica: usize,
        commit_min: u64,
        checkpoint_op: u64,
        header_at: impl Fn(u64) -> Option<&'a Header>,
    ) -> CheckResult {
        // Ops a checkpoint covers live on in the state, and the journal may overwrite them.
        if commit_min <= checkpoint_op {
            return Ok(());
        }
        for (&op, &checksum) in self.acknowledged.range(checkpoint_op + 1..=commit_min) {
            match header_at(op) {
                Some(h) if h.checksum == checksum => {}
                Some(h) => {
                    return Err(format!(
                        "replica {replica} lost acknowledged op {op}: holds {:032x}, acknowledged {checksum:032x}",
                        h.checksum
                    ))
                }
                None => {
                    return Err(format!(
                        "replica {replica} lost acknowledged op {op}: no header (commit_min {commit_min})"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Every replica's checkpoint at one op must be the same bytes (the same id).
    pub fn observe_checkpoint(&mut self, replica: usize, op: u64, id: u128) -> CheckResult {
        self.checkpoints_observed += 1;
        match self.checkpoints.get(&op) {
            Some(&canonical) if canonical != id => Err(format!(
                "replica {replica} checkpoint at op {op} has id {id:032x}, another replica's {canonical:032x}"
            )),
            Some(_) => Ok(()),
            None => {
                self.checkpoints.insert(op, id);
                Ok(())
            }
        }
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

/// Cluster time (docs/protocol.md 10), checked on every prepare a primary creates: its
/// timestamp is within the bound the protocol promises of the simulator's true time, as long as
/// a majority of clocks is honest (no excursion within the synchronization window). Honest
/// clocks are off by at most their offset and accumulated drift; a primary that agrees with a
/// majority is off by at most that plus the agreed interval's slack (`bound_ns`). A primary
/// that believed a minority, or timestamped without agreement, is off by an excursion (twice
/// the tolerance at least).
///
/// Timestamps strictly increase along the log, so a timestamp may run ahead of cluster time by
/// being held just above an earlier one: one a primary stamped while no honest majority existed
/// (excused) keeps every later op ahead until true time catches up with it. Such a timestamp is
/// excused only when it is within one prepare's increment of the highest timestamp seen before,
/// and only ahead of true time: the floor never pulls a timestamp behind.
pub struct ClusterTimeCheck {
    tolerance_ns: u64,
    window_ticks: u64,
    tick_ns: u64,
    offsets_ns: Vec<i64>,
    drifts_ppm: Vec<i64>,
    /// The wall clocks' accumulated drift stops here (`SimOptions::realtime_drift_max_ns`).
    drift_max_ns: u64,
    /// Per replica: the tick its latest clock excursion ends (0: none). A replica counts as
    /// faulty for the window (plus an epoch) after that: an interval installed from samples
    /// taken while it was off may be used that long.
    excursion_until: Vec<u64>,
    /// Per replica: the newest (view, op) checked, so a resent prepare is not checked again.
    checked: Vec<(u32, u64)>,
    /// The highest timestamp of any prepare created so far, checked or excused.
    timestamp_max_ns: u64,
    /// How far one prepare may raise the timestamp above its predecessor's: one per event, and
    /// a batch has fewer events than bytes.
    timestamp_step_max_ns: u64,
    pub prepares_checked: u64,
    /// Prepares ahead of the bound only because they were held above an earlier timestamp.
    pub prepares_held_ahead: u64,
    /// The largest error seen, in thousandths of the tolerance.
    pub error_max_permille: u64,
}

impl ClusterTimeCheck {
    pub fn new(options: &crate::options::SimOptions) -> ClusterTimeCheck {
        let config = &options.config;
        let tick_ns = vsr::config::TICK_MS * 1_000_000;
        ClusterTimeCheck {
            tolerance_ns: config.clock_offset_tolerance_max_ns,
            // The clock uses no sample later than an epoch plus a window after its epoch began.
            window_ticks: (config.clock_synchronization_window_ns + config.clock_epoch_ns)
                .div_ceil(tick_ns),
            tick_ns,
            offsets_ns: options.clock_offsets_ns.clone(),
            drifts_ppm: options.clock_drifts_ppm.clone(),
            drift_max_ns: options.realtime_drift_max_ns(),
            excursion_until: vec![0; options.replica_count as usize],
            checked: vec![(0, 0); options.replica_count as usize],
            timestamp_max_ns: 0,
            timestamp_step_max_ns: u64::from(config.message_size_max),
            prepares_checked: 0,
            prepares_held_ahead: 0,
            error_max_permille: 0,
        }
    }

    pub fn on_excursion(&mut self, replica: usize, until_tick: u64) {
        self.excursion_until[replica] = until_tick;
    }

    /// How far the cluster may be off true time at `tick` with honest clocks (module docs).
    fn bound_ns(&self, tick: u64) -> u64 {
        let elapsed_ns = tick * self.tick_ns;
        let honest_error_ns = (0..self.offsets_ns.len())
            .map(|r| {
                let drift_ns =
                    elapsed_ns as u128 * self.drifts_ppm[r].unsigned_abs() as u128 / 1_000_000;
                self.offsets_ns[r].unsigned_abs() + (drift_ns as u64).min(self.drift_max_ns)
            })
            .max()
            .unwrap_or(0);
        honest_error_ns + self.tolerance_ns * 3 / 2
    }

    /// Replica `replica` sent the prepare `header` (one it created, if its (view, op) is new).
    pub fn on_prepare(
        &mut self,
        replica: usize,
        header: &Header,
        true_realtime_ns: i64,
        tick: u64,
    ) -> CheckResult {
        let prepare = Prepare::from_header(header);
        if (prepare.view, prepare.op) <= self.checked[replica] || prepare.op == 0 {
            return Ok(());
        }
        self.checked[replica] = (prepare.view, prepare.op);
        let floor_ns = self.timestamp_max_ns;
        self.timestamp_max_ns = self.timestamp_max_ns.max(prepare.timestamp_ns);
        let faulty = self
            .excursion_until
            .iter()
            .filter(|&&until| until > 0 && until + self.window_ticks > tick)
            .count();
        if faulty * 2 >= self.excursion_until.len() {
            return Ok(()); // No honest majority: nothing is promised.
        }
        self.prepares_checked += 1;
        let ahead = prepare.timestamp_ns as i64 > true_realtime_ns;
        let held = prepare.timestamp_ns <= floor_ns.saturating_add(self.timestamp_step_max_ns);
        let error_ns = (prepare.timestamp_ns as i64 - true_realtime_ns).unsigned_abs();
        if ahead && held && error_ns > self.bound_ns(tick) {
            self.prepares_held_ahead += 1;
            return Ok(());
        }
        self.error_max_permille = self
            .error_max_permille
            .max(error_ns.saturating_mul(1000) / self.tolerance_ns.max(1));
        if error_ns > self.bound_ns(tick) {
            return Err(format!(
                "cluster time: replica {replica} timestamped op {} (view {}) {} ms off true time, \
                 beyond the {} ms the protocol promises",
                prepare.op,
                prepare.view,
                error_ns / 1_000_000,
                self.bound_ns(tick) / 1_000_000
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash-chained log of `count` prepares after the root, each by its own client.
    fn chain(count: u64) -> Vec<Header> {
        let mut log = vec![Header::root_prepare(1)];
        for op in 1..=count {
            let prepare = Prepare {
                view: 1,
                op,
                parent: log[op as usize - 1].checksum,
                client: op as u128,
                request: 1,
                timestamp_ns: op * 1_000,
                operation: vsr::state_machine::HASHING_OPERATION,
                ..Prepare::default()
            };
            let mut h = prepare.to_header(1);
            h.set_checksum();
            log.push(h);
        }
        log
    }

    fn checker_with(log: &[Header]) -> Checker {
        let mut checker = Checker::new(1);
        let commit_min = log.len() as u64 - 1;
        checker
            .observe(
                0,
                commit_min,
                commit_min,
                0,
                |op| Some(log[op as usize]),
                Some(0),
            )
            .unwrap();
        checker
    }

    #[test]
    fn journal_check_accepts_a_canonical_chain() {
        let log = chain(6);
        let checker = checker_with(&log);
        let at = |op: u64| log.get(op as usize);
        checker.check_journal(0, 1, 6, at, |_| false).unwrap();
        // Missing and dirty ops are not checked for links.
        checker
            .check_journal(
                0,
                1,
                6,
                |op| (op != 3).then(|| &log[op as usize]),
                |op| op == 5,
            )
            .unwrap();
        checker.check_journal(0, 4, 6, at, |_| false).unwrap();
        checker.check_journal(0, 1, 0, at, |_| false).unwrap();
    }

    #[test]
    fn journal_check_rejects_broken_chain_and_foreign_ops() {
        let log = chain(6);
        let checker = checker_with(&log);
        // Op 5 replaced by a prepare that does not chain to op 4.
        let mut unchained = log.clone();
        unchained[5].parent = 0;
        unchained[5].set_checksum();
        let at = |op: u64| unchained.get(op as usize);
        let error = checker.check_journal(0, 1, 6, at, |_| false).unwrap_err();
        assert!(
            error.contains("chain broken between clean ops 4 and 5"),
            "{error}"
        );
        // With op 5 dirty no link is claimed, but it is still not the canonical op 5.
        let error = checker
            .check_journal(0, 1, 6, at, |op| op == 5)
            .unwrap_err();
        assert!(
            error.contains("non-canonical prepare at committed op 5"),
            "{error}"
        );
        // Beyond the checked range, nothing is claimed.
        checker.check_journal(0, 1, 4, at, |_| false).unwrap();
        // A committed op the checker never saw committed.
        let error = checker
            .check_journal(0, 1, 7, |op| log.get(op as usize), |_| false)
            .unwrap_err();
        assert!(error.contains("never recorded"), "{error}");
    }

    fn stamped(view: u32, op: u64, timestamp_ns: u64) -> Header {
        let prepare = Prepare {
            view,
            op,
            timestamp_ns,
            ..Prepare::default()
        };
        prepare.to_header(1)
    }

    #[test]
    fn cluster_time_excuses_only_timestamps_held_above_an_earlier_one() {
        let options = crate::options::SimOptions::quiet(3, 1);
        let tolerance_ns = options.config.clock_offset_tolerance_max_ns;
        let window_ticks = (options.config.clock_synchronization_window_ns
            + options.config.clock_epoch_ns)
            .div_ceil(vsr::config::TICK_MS * 1_000_000);
        let mut check = ClusterTimeCheck::new(&options);
        let true_ns: i64 = 1_000_000_000_000;
        let far_ns = 10 * tolerance_ns;
        // Two clocks off: no honest majority, so a primary stamped far ahead is excused.
        check.on_excursion(0, 100);
        check.on_excursion(2, 100);
        check
            .on_prepare(0, &stamped(1, 1, true_ns as u64 + far_ns), true_ns, 50)
            .unwrap();
        assert_eq!(check.prepares_checked, 0);
        // Later, with an honest majority, ops held just above it are excused (counted).
        let tick = 100 + window_ticks;
        check
            .on_prepare(
                0,
                &stamped(1, 2, true_ns as u64 + far_ns + 1),
                true_ns,
                tick,
            )
            .unwrap();
        assert_eq!(check.prepares_held_ahead, 1);
        // A jump further ahead than one prepare's increment is not held: caught.
        let error = check
            .on_prepare(
                0,
                &stamped(1, 3, true_ns as u64 + 2 * far_ns),
                true_ns,
                tick,
            )
            .unwrap_err();
        assert!(error.contains("off true time"), "{error}");
        // Behind true time the floor excuses nothing.
        let behind_ns = true_ns + 2 * far_ns as i64;
        let error = check
            .on_prepare(
                1,
                &stamped(2, 4, true_ns as u64 + 2 * far_ns),
                behind_ns * 2,
                tick,
            )
            .unwrap_err();
        assert!(error.contains("off true time"), "{error}");
        // Within the bound is simply fine.
        check
            .on_prepare(1, &stamped(2, 5, true_ns as u64), true_ns, tick)
            .unwrap();
    }
}
