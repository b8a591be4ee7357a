//! The durability checker: every promise a replica makes is checked at the moment it leaves the
//! replica, against what that replica's storage holds durably to its knowledge (the image it read
//! when it last opened, plus every write it was told completed: `SimStorage::durable`). A bug that
//! sends a promise before the state behind it is durable passes every end-of-run check whenever
//! no crash lands in the gap; here it fails the seed at once, naming the promise and the write
//! that was missing.
//!
//! The promises (docs/protocol.md):
//! - an acknowledgement of a prepare (a backup's prepare_ok, or the primary counting its own)
//!   only once the prepare and its header-ring entry are durable, in a view whose log is durably
//!   this replica's (4, 5.1);
//! - a do_view_change of view v only with view >= v durable, naming the durable log_view (5.1);
//!   and never a nack of a prepare that committed before view v and that this replica
//!   acknowledged in the view it committed in or later (5.5);
//!   and an entry flagged CLEAN only for a prepare durable in its slot (5.3);
//! - a start_view of view v only with the view's log durable, and holding every op committed
//!   before view v, which includes every op a client was told committed (5.4).
//!
//! "Committed in view w": a primary normal in view w moved its commit point past the op (the
//! simulator sees it the moment the call that did it returns, before anything else happens).
//! An op is committed once, in the oldest view that did so; every log of a later view must hold
//! it. A view's start_view sent late by a stale primary is held to the ops committed before its
//! own view only, and so is a do_view_change.
//! - a reply only for an op committed at the replica that sends it (9);
//! - a checkpoint advertised (ping, commit) or announced only once the superblock records it (8);
//! - a checkpoint recorded by the superblock only once every chunk of it is durable: the chunks
//!   the replica was told were written at its blocks add up to its id (a chunk of another
//!   checkpoint, or of an abandoned sync, in one's place fails) (8, state sync).

use crate::checker::Checker;
use crate::storage::SimStorage;
use std::collections::{BTreeMap, BTreeSet};
use vsr::checkpoint_content::checkpoint_id;
use vsr::config::REPLICAS_MAX;
use vsr::header::commands::{CheckpointName, Commit, DoViewChange, Ping, Reply, StartView};
use vsr::header::{Command, Header, HEADER_SIZE};
use vsr::journal::{FLAG_CLEAN, FLAG_FAULTY, FLAG_PRESENT};
use vsr::replica::ReplicaSet;
use vsr::storage::{Layout, Zone, SUPERBLOCK_COPIES};
use vsr::superblock::{CheckpointRef, SuperBlock, VsrState};

/// Promises checked in a run, by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct DurabilityStats {
    pub acknowledgements: u64,
    pub do_view_changes: u64,
    /// (op, checksum) pairs a do_view_change was checked not to nack.
    pub nacks: u64,
    pub start_views: u64,
    pub replies: u64,
    pub checkpoints: u64,
    /// Checkpoints newly recorded by a superblock whose chunks were checked durable.
    pub checkpoint_chunks_checked: u64,
    /// Opens whose chosen superblock state was not on every copy (a crash cut a write short,
    /// or a copy is damaged): the open rewrites it before acting on it (§8).
    pub opens_superblock_split: u64,
    /// Recoveries that took their head as certain, checked to hold every prepare acknowledged
    /// in their log_view.
    pub recoveries_checked: u64,
    /// Checkpoints written here whose predecessor was checked to be held by a quorum.
    pub checkpoint_holds_checked: u64,
}

pub struct Durability {
    layout: Layout,
    /// (op, checksum) -> who acknowledged that prepare.
    acks: BTreeMap<(u64, u128), Acks>,
    /// op -> (the view it committed in, its prepare's checksum), for every op committed so far.
    committed: BTreeMap<u64, (u32, u128)>,
    /// The highest op committed so far (`committed` holds those a primary's journal named).
    committed_max: u64,
    /// Per replica: its durable VSR state, and the storage generation it was read at.
    superblocks: Vec<Option<(u64, Durable)>>,
    /// Per replica: the newest superblock it acted on (as last seen open: its sequence and VSR
    /// state), across crashes, and the storage generation its durable state was last checked
    /// at (`observe_superblock_floor`).
    superblock_floor: Vec<Option<(u64, VsrState)>>,
    superblock_floor_generation: Vec<Option<u64>>,
    /// Per replica: its disk was lost (`vsr recover`): what it acknowledged before is gone by
    /// design, and its rejoin flags every slot it does not hold as faulty instead.
    disk_lost: Vec<bool>,
    /// Per replica: every checkpoint its durable superblock has recorded (as durable or the one
    /// before), read at each superblock generation.
    checkpoints_recorded: Vec<BTreeSet<(u64, u128)>>,
    /// Per replica: the checkpoint op its durable superblock recorded when it last opened.
    opened_checkpoint_op: Vec<u64>,
    pub stats: DurabilityStats,
}

pub type Promise = Result<(), String>;

/// The acknowledgements of one prepare.
#[derive(Clone, Copy, Debug)]
struct Acks {
    /// Per replica, the oldest view in which it acknowledged the prepare.
    view_min: [Option<u32>; REPLICAS_MAX],
    /// Per replica, the newest view in which it acknowledged the prepare.
    view_max: [Option<u32>; REPLICAS_MAX],
}

impl Acks {
    /// The replicas that acknowledged it in a view older than `view`.
    fn before(&self, view: u32) -> ReplicaSet {
        let mut set = ReplicaSet::EMPTY;
        for (replica, v) in self.view_min.iter().enumerate() {
            if v.is_some_and(|v| v < view) {
                set.insert(replica as u8);
            }
        }
        set
    }
}

/// What the checks need of a durable VSR state.
#[derive(Clone, Copy, Debug)]
struct Durable {
    view: u32,
    log_view: u32,
    checkpoint: CheckpointName,
    checkpoint_previous: CheckpointName,
}

impl Durable {
    fn of(state: &VsrState) -> Durable {
        Durable {
            view: state.view,
            log_view: state.log_view,
            checkpoint: CheckpointName {
                op: state.checkpoint.op,
                id: state.checkpoint.id,
            },
            checkpoint_previous: CheckpointName {
                op: state.checkpoint_previous.op,
                id: state.checkpoint_previous.id,
            },
        }
    }
}

impl Durability {
    pub fn new(replica_count: u8, layout: Layout) -> Durability {
        Durability {
            layout,
            acks: BTreeMap::new(),
            committed: BTreeMap::new(),
            committed_max: 0,
            superblocks: vec![None; replica_count as usize],
            superblock_floor: vec![None; replica_count as usize],
            superblock_floor_generation: vec![None; replica_count as usize],
            disk_lost: vec![false; replica_count as usize],
            checkpoints_recorded: vec![BTreeSet::new(); replica_count as usize],
            opened_checkpoint_op: vec![0; replica_count as usize],
            stats: DurabilityStats::default(),
        }
    }

    /// Replica `replica` acknowledged the prepare `op`/`checksum` in `view`.
    pub fn on_acknowledged(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        view: u32,
        op: u64,
        checksum: u128,
    ) -> Promise {
        self.stats.acknowledgements += 1;
        let what = format!("replica {replica} acknowledged op {op} in view {view}");
        self.journal_entry_durable(storage, op, checksum)
            .map_err(|missing| format!("durability: {what} before {missing} was durable"))?;
        let state = self.durable_state(replica, storage)?;
        if state.log_view != view {
            return Err(format!(
                "durability: {what} with log_view {} durable (its log is not this view's)",
                state.log_view
            ));
        }
        let acks = self.acks.entry((op, checksum)).or_insert(Acks {
            view_min: [None; REPLICAS_MAX],
            view_max: [None; REPLICAS_MAX],
        });
        let view_min = &mut acks.view_min[replica as usize];
        *view_min = Some(view_min.map_or(view, |v| v.min(view)));
        let view_max = &mut acks.view_max[replica as usize];
        *view_max = Some(view_max.map_or(view, |v| v.max(view)));
        Ok(())
    }

    /// Reads replica `replica`'s durable superblock if it may have changed since the last
    /// read, so every state it passes through is seen (called after every event).
    pub fn observe_superblock(&mut self, replica: u8, storage: &SimStorage) -> Promise {
        self.durable_state(replica, storage).map(|_| ())
    }

    /// A primary normal in `view` has its commit point at `commit_max`: every op up to it not
    /// yet committed commits now, in `view`, with the checksum `header_at` (its journal) names.
    pub fn on_commit_point(
        &mut self,
        view: u32,
        commit_max: u64,
        header_at: impl Fn(u64) -> Option<u128>,
    ) {
        for op in self.committed_max + 1..=commit_max {
            if let Some(checksum) = header_at(op) {
                self.committed.insert(op, (view, checksum));
            }
        }
        self.committed_max = self.committed_max.max(commit_max);
    }

    /// The view in which the prepare `op`/`checksum` committed, if one older than `view`.
    fn committed_before(&self, view: u32, op: u64, checksum: u128) -> Option<u32> {
        self.committed
            .get(&op)
            .filter(|&&(committed_view, c)| committed_view < view && c == checksum)
            .map(|&(committed_view, _)| committed_view)
    }

    /// A message `header` (with `body`) leaves replica `replica`, whose commit point is
    /// `commit_min`; `checker` holds the canonical history and what clients were told.
    pub fn on_send(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        commit_min: u64,
        (header, body): (&Header, &[u8]),
        checker: &Checker,
    ) -> Promise {
        match header.command() {
            Some(Command::DoViewChange) => self.on_do_view_change(replica, storage, header, body),
            Some(Command::StartView) => self.on_start_view(replica, storage, header, body, checker),
            Some(Command::Reply) => {
                self.stats.replies += 1;
                let reply = Reply::from_header(header);
                if reply.op > commit_min {
                    return Err(format!(
                        "durability: replica {replica} replied for op {} with commit_min {commit_min}",
                        reply.op
                    ));
                }
                Ok(())
            }
            Some(Command::Ping) => {
                let ping = Ping::from_header(header);
                self.on_checkpoint_advertised(
                    replica,
                    storage,
                    ping.checkpoint,
                    ping.checkpoint_previous,
                )
            }
            Some(Command::Commit) => {
                let commit = Commit::from_header(header);
                self.on_checkpoint_advertised(
                    replica,
                    storage,
                    commit.checkpoint,
                    commit.checkpoint_previous,
                )
            }
            _ => Ok(()),
        }
    }

    /// Replica `replica` announced the checkpoint `op`/`id` as durable (installed by a state
    /// sync if `synced`). One it wrote itself overwrote the area of the checkpoint before the
    /// one it replaced as durable, so that one (the superblock's previous now) must have been
    /// held by a replication quorum (docs/storage.md, Checkpoints: the fault model keeps each
    /// block of a checkpoint intact on some replica of a quorum that wrote it, not on the one
    /// replica that got furthest). Checked at the end of the write; holders only grow meanwhile
    /// (a checkpoint recorded by a replica's superblock counts for good, as it did for the
    /// replica's decision).
    pub fn on_checkpoint_durable(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        op: u64,
        id: u128,
        synced: bool,
    ) -> Promise {
        let name = CheckpointName { op, id };
        self.on_checkpoint_advertised(replica, storage, name, None)?;
        if synced {
            return Ok(());
        }
        let held = self.durable_state(replica, storage)?.checkpoint_previous.op;
        if held == 0 {
            return Ok(());
        }
        let holders = self
            .checkpoints_recorded
            .iter()
            .filter(|recorded| recorded.last().is_some_and(|&(op, _)| op >= held))
            .count();
        let quorum = vsr::config::quorums(self.checkpoints_recorded.len()).0;
        self.stats.checkpoint_holds_checked += 1;
        if holders < quorum {
            return Err(format!(
                "durability: replica {replica} wrote checkpoint {op} while checkpoint {held}, \
                 the one before, was held by {holders} replica(s), fewer than a replication \
                 quorum ({quorum})"
            ));
        }
        Ok(())
    }

    fn on_checkpoint_advertised(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        checkpoint: CheckpointName,
        previous: Option<CheckpointName>,
    ) -> Promise {
        self.stats.checkpoints += 1;
        let state = self.durable_state(replica, storage)?;
        let (durable, durable_previous) = (state.checkpoint, state.checkpoint_previous);
        // A checkpoint the superblock recorded durably at some point: while a superblock write
        // is under way, a restart could already choose the new state while the replica still
        // names the one before (`None` promises nothing). One never recorded is the bug.
        let recorded = |name: CheckpointName| {
            name.op == 0
                || self.checkpoints_recorded[replica as usize].contains(&(name.op, name.id))
        };
        if !recorded(checkpoint) || previous.is_some_and(|p| !recorded(p)) {
            return Err(format!(
                "durability: replica {replica} advertised checkpoint {checkpoint:?} (previous \
                 {previous:?}) but its superblock records {durable:?} (previous \
                 {durable_previous:?})"
            ));
        }
        Ok(())
    }

    fn on_do_view_change(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        header: &Header,
        body: &[u8],
    ) -> Promise {
        self.stats.do_view_changes += 1;
        let dvc = DoViewChange::from_header(header);
        let state = self.durable_state(replica, storage)?;
        // A do_view_change naming its own view as log_view is moot: the view has started (a
        // resend while that view's log is being made durable; see `send_do_view_change`).
        if state.view < dvc.view || (dvc.log_view != dvc.view && state.log_view != dvc.log_view) {
            return Err(format!(
                "durability: replica {replica} sent do_view_change view {} log_view {} with \
                 view {} log_view {} durable",
                dvc.view, dvc.log_view, state.view, state.log_view
            ));
        }
        let entries = headers_with_flags(body);
        // CLEAN says the prepare is durable here (5.3): the new primary counts on it as no nack
        // and may ask this replica for it.
        for (i, (h, flags)) in entries.iter().enumerate() {
            let clean = flags & FLAG_PRESENT != 0 && flags & FLAG_CLEAN != 0;
            if !clean || h.command != Command::Prepare as u8 {
                continue;
            }
            let op = dvc.op - i as u64;
            if let Err(missing) = self.prepare_durable(storage, op, h.checksum) {
                return Err(format!(
                    "durability: replica {replica}'s do_view_change for view {} flags op {op} \
                     clean before {missing} was durable",
                    dvc.view
                ));
            }
        }
        // Only an acknowledgement in the view the op committed in, or later, binds: the primary
        // of that view counted acknowledgements of its own view, and a replica acknowledges in
        // a view only with that view's log, which keeps the op from then on. One that
        // acknowledged the op only in an older view may since have had it truncated, rightly, by
        // a view change before the op committed (seed 4199224393448867767: acknowledged in view
        // 1, truncated as the would-be primary of view 2, committed in view 3 without it), and
        // its nack is not among those that could outvote the committing quorum.
        for (&(op, checksum), acks) in self.acks.range((dvc.commit_max + 1, 0)..) {
            let acked = acks.before(dvc.view);
            let Some(committed_view) = self.committed_before(dvc.view, op, checksum) else {
                continue;
            };
            let binding = acks.view_max[replica as usize].is_some_and(|v| v >= committed_view);
            if !acked.contains(replica) || !binding {
                continue;
            }
            self.stats.nacks += 1;
            let entry = dvc.op.checked_sub(op).and_then(|i| entries.get(i as usize));
            let nack = match entry {
                None => op > dvc.op,
                Some((_, flags)) if flags & FLAG_FAULTY != 0 => false,
                Some((h, flags)) => {
                    !(flags & FLAG_PRESENT != 0
                        && flags & FLAG_CLEAN != 0
                        && h.checksum == checksum)
                }
            };
            if nack {
                return Err(format!(
                    "durability: replica {replica}'s do_view_change for view {} (head {}, commit \
                     {}) nacks op {op}, which it acknowledged and which committed \
                     (acknowledged by replicas {acked:?})",
                    dvc.view, dvc.op, dvc.commit_max
                ));
            }
        }
        Ok(())
    }

    fn on_start_view(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        header: &Header,
        body: &[u8],
        checker: &Checker,
    ) -> Promise {
        self.stats.start_views += 1;
        let sv = StartView::from_header(header);
        let state = self.durable_state(replica, storage)?;
        if state.log_view != sv.view {
            return Err(format!(
                "durability: replica {replica} sent start_view {} with log_view {} durable",
                sv.view, state.log_view
            ));
        }
        let headers: Vec<Header> = body
            .chunks_exact(HEADER_SIZE)
            .map(Header::read_from)
            .collect();
        let window_min = sv.op + 1 - headers.len() as u64;
        let held = |op: u64| headers.get((sv.op - op) as usize).map(|h| h.checksum);
        // Every op a client was told committed was acknowledged by a replication quorum, so
        // this covers those too (in views before this one; a stale view's late start_view is
        // held to the ops of its own past only).
        let committed = self
            .committed
            .range(window_min..)
            .filter(|(_, &(view, _))| view < sv.view);
        for (&op, &(_, checksum)) in committed {
            if op > sv.op || held(op) != Some(checksum) {
                let told = checker.acknowledged.get(&op) == Some(&checksum);
                return Err(format!(
                    "durability: replica {replica}'s start_view for view {} (head {}) loses op \
                     {op}, which committed{}",
                    sv.view,
                    sv.op,
                    if told {
                        " (a client was told it did)"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }

    /// Whether the prepare `op`/`checksum` and its header-ring entry are durable; else which is
    /// missing.
    fn journal_entry_durable(&self, storage: &SimStorage, op: u64, checksum: u128) -> Promise {
        let slot = op % self.layout.slot_count;
        self.prepare_durable(storage, op, checksum)?;
        let ring = Header::read_from(storage.durable(
            Zone::WalHeaders,
            slot * HEADER_SIZE as u64,
            HEADER_SIZE,
        ));
        if !ring.valid_checksum() || ring.checksum != checksum {
            return Err(format!("its header-ring entry (slot {slot})"));
        }
        Ok(())
    }

    /// Whether the prepare `op`/`checksum` is durable in its slot; else which is missing.
    fn prepare_durable(&self, storage: &SimStorage, op: u64, checksum: u128) -> Promise {
        let slot = op % self.layout.slot_count;
        let prepare = Header::read_from(storage.durable(
            Zone::WalPrepares,
            slot * self.layout.message_size_max,
            HEADER_SIZE,
        ));
        if !prepare.valid_checksum() || prepare.checksum != checksum {
            return Err(format!("its prepare (slot {slot})"));
        }
        Ok(())
    }

    /// Replica `replica` finished recovery and takes its head as certain (not RecoveringHead),
    /// in `log_view`, from the checkpoint at `checkpoint_op`. The promise of journal recovery
    /// (docs/protocol.md §7): a head taken as certain holds every prepare this replica
    /// acknowledged in its log_view (no view change can have truncated those) above the
    /// checkpoint, as a header, clean or not, or its slot is flagged faulty; else the replica
    /// would vote, and nack, without an op it promised to keep. `held(op, checksum)` says
    /// whether the journal has it so. Checked at once, not only if a do_view_change later
    /// counts the op. One exception, `superseded(op, checksum)`: a newer view started with
    /// another prepare at that op, so this one never committed and the promise binds no one (a
    /// replica installing that view's start_view repairs the slot before the view is durable
    /// here; a crash in between reopens the older log_view without it: seed
    /// 4538265127707089907).
    pub fn on_recovered(
        &mut self,
        replica: u8,
        log_view: u32,
        checkpoint_op: u64,
        held: impl Fn(u64, u128) -> bool,
        superseded: impl Fn(u64, u128) -> bool,
    ) -> Promise {
        if self.disk_lost[replica as usize] {
            return Ok(());
        }
        self.stats.recoveries_checked += 1;
        for (&(op, checksum), acks) in self.acks.range((checkpoint_op + 1, 0)..) {
            if acks.view_max[replica as usize] != Some(log_view)
                || held(op, checksum)
                || superseded(op, checksum)
            {
                continue;
            }
            return Err(format!(
                "durability: replica {replica} recovered in log_view {log_view} with its head \
                 certain but holds no trace of op {op} ({checksum:032x}), which it \
                 acknowledged in that view"
            ));
        }
        Ok(())
    }

    /// Replica `replica` (re)opened: the checkpoints its superblock records now are those it
    /// starts from, not ones it recorded since (their chunks may since have been damaged).
    pub fn on_open(&mut self, replica: u8, storage: &SimStorage) {
        assert!(!storage.superblock_written_since_open());
        // A replica with no durable superblock fails to open; that is reported there.
        let opened = self.durable_state(replica, storage);
        let copies = self.durable_copies(storage);
        if let Ok(chosen) = SuperBlock::choose(&copies) {
            let holders = SuperBlock::holders(&copies, &chosen);
            if holders.iter().any(|&h| !h) {
                self.stats.opens_superblock_split += 1;
            }
        }
        self.opened_checkpoint_op[replica as usize] = opened.map_or(0, |d| d.checkpoint.op);
    }

    /// The checkpoint op replica `replica`'s durable superblock recorded when it last opened (0
    /// before its first restart).
    pub fn opened_checkpoint_op(&self, replica: u8) -> u64 {
        self.opened_checkpoint_op[replica as usize]
    }

    /// Every chunk of `checkpoint` is durable at its block, and together they make its id.
    fn checkpoint_chunks_durable(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        checkpoint: &CheckpointRef,
    ) -> Promise {
        let mut checksums = Vec::with_capacity(checkpoint.chunks as usize);
        for index in 0..checkpoint.chunks {
            let offset = self.layout.checkpoint_block_offset(checkpoint.area, index);
            match storage.durable_chunk_checksum_body(offset) {
                Some(checksum) if checksum != 0 => checksums.push(checksum),
                _ => {
                    return Err(format!(
                        "durability: replica {replica}'s superblock records checkpoint {} \
                         ({:x}) while chunk {index} of its {} (area {}) was never durably written",
                        checkpoint.op, checkpoint.id, checkpoint.chunks, checkpoint.area
                    ))
                }
            }
        }
        if checkpoint_id(&checksums) != checkpoint.id {
            return Err(format!(
                "durability: replica {replica}'s superblock records checkpoint {} ({:x}) while \
                 the {} chunks durable at its blocks (area {}) make another id: a chunk of \
                 another checkpoint is in one's place",
                checkpoint.op, checkpoint.id, checkpoint.chunks, checkpoint.area
            ));
        }
        self.stats.checkpoint_chunks_checked += 1;
        Ok(())
    }

    /// The superblock copies as the replica holds them durably (`None`: not a valid copy).
    pub(crate) fn durable_copies(&self, storage: &SimStorage) -> Vec<Option<SuperBlock>> {
        let size = self.layout.superblock_copy_size;
        (0..SUPERBLOCK_COPIES as u64)
            .map(|copy| {
                let bytes = storage.durable(Zone::Superblock, copy * size, size as usize);
                SuperBlock::decode(bytes, &self.layout)
            })
            .collect()
    }

    /// The VSR state replica `replica` holds durably (cached per superblock generation).
    fn durable_state(&mut self, replica: u8, storage: &SimStorage) -> Result<Durable, String> {
        let generation = storage.superblock_generation();
        if let Some((cached, state)) = self.superblocks[replica as usize] {
            if cached == generation {
                return Ok(state);
            }
        }
        let copies = self.durable_copies(storage);
        let state = SuperBlock::choose(&copies)
            .map_err(|e| format!("durability: replica {replica} has no durable superblock: {e}"))?
            .vsr_state;
        let durable = Durable::of(&state);
        // A checkpoint the replica opened with was checked when it was recorded (or came with
        // the disk); one recorded since must have every chunk durable.
        let name = (state.checkpoint.op, state.checkpoint.id);
        if storage.superblock_written_since_open()
            && !self.checkpoints_recorded[replica as usize].contains(&name)
        {
            self.checkpoint_chunks_durable(replica, storage, &state.checkpoint)?;
        }
        self.superblocks[replica as usize] = Some((generation, durable));
        let recorded = &mut self.checkpoints_recorded[replica as usize];
        recorded.insert((durable.checkpoint.op, durable.checkpoint.id));
        recorded.insert((
            durable.checkpoint_previous.op,
            durable.checkpoint_previous.id,
        ));
        Ok(durable)
    }
}

impl Durability {
    /// A replica never goes back past a VSR state it acted on (docs/protocol.md §8): while it
    /// runs, in any status, the state its durable copies choose is at least the newest it
    /// acted on, at every superblock copy write it completes (the write order keeps it), after
    /// a crash (whatever mix of copies it left) and when it opens (what it chose, read faults
    /// and all). `acted`: its superblock if it is open (not `Recovering`): the state it has
    /// made durable on every copy and acts on. The shadow holds what the replica was told is
    /// written, so no disk fault moves it back; the fault atlas leaves a quorum of copies.
    pub fn observe_superblock_floor(
        &mut self,
        replica: u8,
        storage: &SimStorage,
        acted: Option<&SuperBlock>,
    ) -> Promise {
        let r = replica as usize;
        if let Some(acted) = acted {
            match &self.superblock_floor[r] {
                Some((sequence, _)) if *sequence == acted.sequence => {}
                floor => {
                    if let Some((_, floor)) = floor {
                        Self::superblock_monotonic(
                            replica,
                            "it opened with or wrote",
                            floor,
                            &acted.vsr_state,
                        )?;
                    }
                    self.superblock_floor[r] = Some((acted.sequence, acted.vsr_state.clone()));
                }
            }
        }
        let generation = storage.superblock_generation();
        if self.superblock_floor_generation[r] == Some(generation) {
            return Ok(());
        }
        self.superblock_floor_generation[r] = Some(generation);
        let (Some((_, floor)), Ok(chosen)) = (
            &self.superblock_floor[r],
            SuperBlock::choose(&self.durable_copies(storage)),
        ) else {
            return Ok(());
        };
        Self::superblock_monotonic(
            replica,
            "its durable copies choose",
            floor,
            &chosen.vsr_state,
        )
    }

    /// Replica `replica` lost its data file: `vsr recover` starts it afresh.
    pub fn on_disk_lost(&mut self, replica: u8) {
        self.disk_lost[replica as usize] = true;
        self.superblock_floor[replica as usize] = None;
        self.superblock_floor_generation[replica as usize] = None;
    }

    /// `state` may stand where `floor` stood: the order the replica itself keeps for every
    /// superblock update (`VsrState::monotonic_after`, and within one log_view the view head
    /// does not move back).
    fn superblock_monotonic(
        replica: u8,
        what: &str,
        floor: &VsrState,
        state: &VsrState,
    ) -> Promise {
        if state.monotonic_after(floor)
            && (state.log_view != floor.log_view || state.view_head_op() >= floor.view_head_op())
        {
            return Ok(());
        }
        let summary = |s: &VsrState| {
            format!(
                "view {} log_view {} head {} commit_max {} checkpoint {}",
                s.view,
                s.log_view,
                s.view_head_op(),
                s.commit_max,
                s.checkpoint.op
            )
        };
        Err(format!(
            "durability: replica {replica} went back past the superblock state it acted on \
             ({}), while the state {what} is {}",
            summary(floor),
            summary(state)
        ))
    }
}

/// A do_view_change body: the headers, newest first, each with its flag byte.
fn headers_with_flags(body: &[u8]) -> Vec<(Header, u8)> {
    let count = body.len() / (HEADER_SIZE + 1);
    (0..count)
        .map(|i| {
            let header = Header::read_from(&body[i * HEADER_SIZE..]);
            (header, body[count * HEADER_SIZE + i])
        })
        .collect()
}
