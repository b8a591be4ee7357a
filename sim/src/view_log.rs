//! The view-log checker: each view has one log, and a replica normal in that view holds it.
//!
//! The primary of view `v` defines the view's log: the headers its start_views carry (the log
//! the view change chose, up to its head) and the prepares it makes in `v` above them. Within a
//! view the log only grows, so every start_view of `v` and every prepare of `v` must agree on
//! each op (docs/protocol.md §4, one prepare per op per view; §5.1, the start_view is the view's
//! log). A backup normal in `v` installed that log from a start_view (from the start_view's window up:
//! below it, headers of older views wait to be repaired down the hash chain) and since takes
//! only the view's prepares, the primary's headers, and headers the hash chain proves (§6), so
//! every header it holds above its commit point and the window, for an op the view's log names,
//! must be the log's:
//! a header kept from a truncated view above the new head, one taken from a peer still in an
//! older log, or one installed without the chain's proof shows up here at once, where the other
//! checkers see it only if it is later committed or served.
//!
//! Only what the simulator saw sent is known: ops the view's log has not named yet are skipped,
//! as are views older than the newest `VIEWS_KEPT` (their replicas are long past them).

use std::collections::BTreeMap;
use vsr::header::commands::StartView;
use vsr::header::{Command, Header, HEADER_SIZE};

/// Views whose logs are kept (the newest).
const VIEWS_KEPT: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct ViewLogStats {
    /// Headers of view logs recorded from start_views and prepares.
    pub recorded: u64,
    /// Journal headers compared with their view's log.
    pub checked: u64,
}

#[derive(Default)]
pub struct ViewLogs {
    /// view -> (op -> checksum) of that view's log.
    logs: BTreeMap<u32, BTreeMap<u64, u128>>,
    /// view -> the highest first op of its start_views' windows: a backup that installed any of
    /// them holds the view's log from there up. Below its window a start_view leaves headers of
    /// older views in place, to be repaired down the hash chain.
    floors: BTreeMap<u32, u64>,
    /// view -> the highest commit point its start_views announced: every op up to it is
    /// committed, so the view's log there is the canonical history.
    commits: BTreeMap<u32, u64>,
    pub stats: ViewLogStats,
}

impl ViewLogs {
    /// A message `header` (`body`) left replica `replica`: a start_view or a prepare names ops of
    /// a view's log, which must agree with what that view's log already holds.
    pub fn on_send(&mut self, replica: u8, header: &Header, body: &[u8]) -> Result<(), String> {
        match header.command() {
            Some(Command::StartView) => {
                let sv = StartView::from_header(header);
                let headers: Vec<Header> = body
                    .chunks_exact(HEADER_SIZE)
                    .map(Header::read_from)
                    .filter(|h| h.valid_checksum() && h.command() == Some(Command::Prepare))
                    .collect();
                let commit = self.commits.entry(sv.view).or_insert(0);
                *commit = (*commit).max(sv.commit_max);
                self.on_start_view(replica, sv.view, sv.op, &headers)
            }
            Some(Command::Prepare) => self.record(header.view, header.op, header.checksum, || {
                format!(
                    "a prepare of view {} sent by replica {replica}",
                    header.view
                )
            }),
            _ => Ok(()),
        }
    }

    /// Replica `replica` sent a start_view of `view` with head `op` and `headers`, the window of
    /// the log below it.
    fn on_start_view(
        &mut self,
        replica: u8,
        view: u32,
        op: u64,
        headers: &[Header],
    ) -> Result<(), String> {
        let window_min = (op + 1).saturating_sub(headers.len() as u64);
        let floor = self.floors.entry(view).or_insert(0);
        *floor = (*floor).max(window_min);
        for h in headers {
            self.record(view, h.op, h.checksum, || {
                format!("replica {replica}'s start_view of view {view}")
            })?;
        }
        Ok(())
    }

    fn record(
        &mut self,
        view: u32,
        op: u64,
        checksum: u128,
        what: impl Fn() -> String,
    ) -> Result<(), String> {
        if self.logs.len() >= VIEWS_KEPT && !self.logs.contains_key(&view) {
            let oldest = *self.logs.keys().next().expect("kept views");
            if view < oldest {
                return Ok(());
            }
            self.logs.remove(&oldest);
            self.floors.remove(&oldest);
            self.commits.remove(&oldest);
        }
        let log = self.logs.entry(view).or_default();
        match log.insert(op, checksum) {
            Some(old) if old != checksum => Err(format!(
                "view log: {} names op {op} {checksum:032x}, but view {view}'s log holds \
                 {old:032x} there",
                what()
            )),
            _ => {
                self.stats.recorded += 1;
                Ok(())
            }
        }
    }

    /// Whether a view after `view` has a log naming another prepare at `op` than `checksum`: a
    /// view that started without it proves it never committed (a view change keeps every
    /// committed op), so an acknowledgement of it in `view` no longer binds anyone.
    pub fn superseded_after(&self, view: u32, op: u64, checksum: u128) -> bool {
        self.logs
            .range(view + 1..)
            .any(|(_, log)| log.get(&op).is_some_and(|&c| c != checksum))
    }

    /// Replica `replica`, normal in `view` throughout one event, installed the header `op`,
    /// `checksum` in its journal: a backup in normal status installs only headers of its view's
    /// log (its primary's, the view's prepares, and headers the chain proves; §6), so where the
    /// log names `op` the header must be the log's. Unlike `check_normal` this holds below the
    /// start_view window too: it is what was just installed, not what was left there. At or
    /// below the commit point the view's start_views announced, the log is the committed
    /// history (`committed(op)`, once the history reaches it).
    pub fn check_install(
        &mut self,
        replica: usize,
        view: u32,
        op: u64,
        checksum: u128,
        committed: impl Fn(u64) -> Option<u128>,
    ) -> Result<(), String> {
        let logged = self.logs.get(&view).and_then(|log| log.get(&op)).copied();
        let commit = self.commits.get(&view).copied().unwrap_or(0);
        let Some(logged) = logged.or_else(|| (op <= commit).then(|| committed(op)).flatten())
        else {
            return Ok(());
        };
        self.stats.checked += 1;
        if logged != checksum {
            return Err(format!(
                "view log: replica {replica}, normal in view {view}, installed op {op} \
                 {checksum:032x}, but view {view}'s log has {logged:032x} there"
            ));
        }
        Ok(())
    }

    /// Replica `replica`, normal in `view` with commit point `commit_min`: every header its
    /// journal holds above the commit point and from the view's start_view window up, for an op
    /// the view's log names, is the log's.
    pub fn check_normal<'a>(
        &mut self,
        replica: usize,
        view: u32,
        commit_min: u64,
        header_at: impl Fn(u64) -> Option<&'a Header>,
    ) -> Result<(), String> {
        let (Some(log), Some(&floor)) = (self.logs.get(&view), self.floors.get(&view)) else {
            return Ok(());
        };
        for (&op, &checksum) in log.range((commit_min + 1).max(floor)..) {
            let Some(header) = header_at(op) else {
                continue;
            };
            self.stats.checked += 1;
            if header.checksum != checksum {
                return Err(format!(
                    "view log: replica {replica}, normal in view {view} (commit_min \
                     {commit_min}), holds op {op} {:032x} of view {}, but view {view}'s log has \
                     {checksum:032x} there",
                    header.checksum, header.view
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(view: u32, op: u64, checksum: u128) -> Header {
        let mut h = Header::new(Command::Prepare, 1, 0, view);
        h.op = op;
        h.checksum = checksum;
        h
    }

    #[test]
    fn a_view_names_one_prepare_per_op() {
        let mut logs = ViewLogs::default();
        logs.on_send(0, &prepare(3, 10, 7), &[]).unwrap();
        logs.on_send(0, &prepare(3, 10, 7), &[]).unwrap();
        logs.on_send(1, &prepare(4, 10, 8), &[]).unwrap();
        assert!(logs.on_send(1, &prepare(3, 10, 9), &[]).is_err());
    }

    #[test]
    fn a_normal_replica_holds_its_views_log_above_its_commit_point() {
        let mut logs = ViewLogs::default();
        // View 3's start_view: head 10, window 9..=10.
        logs.on_start_view(0, 3, 10, &[prepare(3, 10, 7), prepare(2, 9, 6)])
            .unwrap();
        logs.on_send(0, &prepare(3, 10, 7), &[]).unwrap();
        logs.on_send(0, &prepare(3, 11, 8), &[]).unwrap();
        logs.on_send(0, &prepare(2, 8, 5), &[]).unwrap();
        let held = [prepare(1, 8, 50), prepare(3, 10, 7), prepare(2, 11, 99)];
        let at = |op: u64| held.iter().find(|h| h.op == op);
        // Op 11 differs: caught while above the commit point, not once committed (the journal
        // checker's), nor in another view. Op 8, below the start_view's window, may be stale.
        assert!(logs.check_normal(1, 3, 7, at).is_err());
        assert_eq!(logs.stats.checked, 2);
        assert!(logs.check_normal(1, 3, 11, at).is_ok());
        assert!(logs.check_normal(1, 4, 7, at).is_ok());
        logs.on_send(0, &prepare(3, 11, 99), &[]).unwrap_err();
    }
}
