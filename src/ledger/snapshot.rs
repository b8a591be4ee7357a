//! The ledger's snapshot (`StateMachine::snapshot_*` and `restore_*`): the whole state as one
//! byte string, a function of the committed operations alone.
//!
//! # Format (version 1)
//!
//! Six sections back to back, no padding between them (so offsets after `status` are not
//! aligned; readers copy, they never cast in place). All integers are little-endian.
//!
//! | section     | records                  | bytes each | contents                          |
//! |-------------|--------------------------|------------|-----------------------------------|
//! | `header`    | 1                        | 128        | `SnapshotHeader` (below)          |
//! | `accounts`  | `header.accounts`        | 128        | `Account`, creation order         |
//! | `balances`  | `header.balances`        | 64         | history balances, in node order   |
//! | `orphans`   | `header.orphans`         | 16         | ids that failed transiently       |
//! | `status`    | `header.transfers`       | 1          | each transfer's `STATUS_*`        |
//! | `transfers` | `header.transfers`       | 128        | `Transfer`, creation order        |
//!
//! The header: `magic` ("VSRLEDGR"), `version`, `header_size` (128), the four counts,
//! `commit_timestamp`, `digest_sum` (the unfinalized digest, see `digest.rs`), and zeros.
//!
//! Every section is one of the ledger's arrays exactly as it is in memory (the records are
//! `#[repr(C)]` plain data, and the project is little-endian only), so `snapshot_read` is a
//! `memcpy` of the overlapping part of each section and allocates nothing. Every array holds
//! objects in the order the committed operations created them, and nothing in it depends on
//! capacity or on the layout of a hash table, so equal histories give equal bytes.
//!
//! # What is not stored, and why
//!
//! The indexes are rebuilt instead, in one O(n) pass as the records arrive (`restore_write`):
//! - the id tables (account ids; transfer ids and orphans): their layout depends on the table's
//!   size, which is capacity (not part of the snapshot), and on the history of insertions and
//!   rollbacks (not just the state). Lookups give the same answers whatever the layout.
//! - the per-account transfer lists (two nodes per transfer): node `2 * slot` / `2 * slot + 1`
//!   are the debit / credit side of transfer `slot`, and each account's list is its nodes in
//!   slot order, so they follow from the transfers. Storing them would add 24 bytes per
//!   transfer (about 19%) and every link would need checking anyway before it could be trusted.
//!   A node's balance record is the next unused one when its account keeps history (the
//!   `HISTORY` flag never changes after creation), so balances are stored in node order.
//! - the account hashes and the digest: recomputed from the records and compared with
//!   `header.digest_sum`, which checks the whole restore end to end.
//! - the expiry heap: rebuilt from the transfers still pending with a timeout. The live heap
//!   may also hold stale entries (resolved or rolled-back transfers), which `expire` skips, and
//!   its order is a total order on (expiry, timestamp, slot), so the rebuilt heap expires the same
//!   transfers at the same operations.
//!
//! Sections are ordered so that everything a record's check needs has arrived before it: the
//! accounts, balance records, orphans and statuses all come before the transfers, which refer
//! to them. `restore_finish` is then cheap: it heapifies the expiry entries (O(pending)) and
//! compares the digest.
//!
//! # Validation
//!
//! A restore returns `Err` (never panics) for a bad magic, version or header, counts over the
//! ledger's capacity, a size that does not match the counts, missing or extra bytes, ids that
//! are zero, `u128::MAX` or duplicated, timestamps out of order, status values that do not fit
//! the transfer, transfers whose accounts or pending transfer do not exist, a balance-record
//! count that does not match the history accounts' nodes, and a digest that does not match.
//! It does not re-derive account balances from the transfers: the digest check covers
//! accidental corruption, and the bytes have passed the replica's checksums before. Nor can it
//! check the order of the orphans (a set to the digest and to lookups): a permutation of them
//! restores an equivalent state, whose snapshot would differ.
//!
//! Between `restore_begin` and `restore_finish` the ledger holds a partial state: committing or
//! taking a snapshot then panics. After an error it is empty (as new), capacity unchanged.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{
    account_hash, balance_hash, finalize, orphan_hash, read_id, status_hash, transfer_hash,
    transfer_id_of, AccountList, BalanceRecord, Expiry, Ledger, Node, NIL, ORPHAN,
    PREFETCH_DISTANCE, STATUS_EXPIRED, STATUS_NONE, STATUS_PENDING,
};
use crate::ledger::types::{account_flags, transfer_flags, Account, Transfer, TIMESTAMP_MAX};

#[cfg(not(target_endian = "little"))]
compile_error!("the ledger's snapshot copies its arrays as they are: little-endian only");

const MAGIC: u64 = u64::from_le_bytes(*b"VSRLEDGR");
const VERSION: u32 = 1;
const HEADER_SIZE: usize = 128;

#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable)]
struct SnapshotHeader {
    magic: u64,
    version: u32,
    header_size: u32,
    accounts: u64,
    balances: u64,
    orphans: u64,
    transfers: u64,
    commit_timestamp: u64,
    reserved_a: u64,
    digest_sum: u128,
    reserved: [u8; 48],
}

const _: () = assert!(core::mem::size_of::<SnapshotHeader>() == HEADER_SIZE);

/// The snapshot frozen for a checkpoint that is written while operations go on
/// (`StateMachine::snapshot_freeze`): the header (its counts) and copies of the two sections that
/// change in place, accounts (balances) and transfer statuses. Balance records, orphans and
/// transfers only grow between operations (a linked chain's rollback truncates only what its own
/// operation appended), so their prefixes up to the frozen counts stay as they were and are read
/// live. The copies keep their allocation from one checkpoint to the next.
#[derive(Default)]
pub(super) struct Frozen {
    header: Option<SnapshotHeader>,
    accounts: Vec<Account>,
    status: Vec<u8>,
}
const _: () = assert!(core::mem::size_of::<Account>() == 128);
const _: () = assert!(core::mem::size_of::<Transfer>() == 128);
const _: () = assert!(core::mem::size_of::<BalanceRecord>() == 64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Header,
    Accounts,
    Balances,
    Orphans,
    Status,
    Transfers,
    End,
}

impl Section {
    fn record_size(self) -> usize {
        match self {
            Section::Header => HEADER_SIZE,
            Section::Accounts => 128,
            Section::Balances => 64,
            Section::Orphans => 16,
            Section::Status => 1,
            Section::Transfers => 128,
            Section::End => 0,
        }
    }

    fn next(self) -> Section {
        match self {
            Section::Header => Section::Accounts,
            Section::Accounts => Section::Balances,
            Section::Balances => Section::Orphans,
            Section::Orphans => Section::Status,
            Section::Status => Section::Transfers,
            Section::Transfers | Section::End => Section::End,
        }
    }

    fn count(self, header: &SnapshotHeader) -> u64 {
        match self {
            Section::Header => 1,
            Section::Accounts => header.accounts,
            Section::Balances => header.balances,
            Section::Orphans => header.orphans,
            Section::Status | Section::Transfers => header.transfers,
            Section::End => 0,
        }
    }
}

/// The snapshot's size for the header's counts (which are at most 2^31 each: no overflow).
fn snapshot_size_of(header: &SnapshotHeader) -> u64 {
    let mut size = 0;
    let mut section = Section::Header;
    while section != Section::End {
        size += section.count(header) * section.record_size() as u64;
        section = section.next();
    }
    size
}

/// A restore in progress.
pub(super) struct Restore {
    /// The size announced by `restore_begin`.
    size: u64,
    received: u64,
    /// The first error; later bytes are ignored and `restore_finish` returns it.
    error: Option<String>,
    header: Option<SnapshotHeader>,
    section: Section,
    /// Records of `section` still to come.
    remaining: u64,
    /// The start of a record split across `restore_write` calls.
    carry: [u8; HEADER_SIZE],
    carry_len: usize,
    last_account_timestamp: u64,
    last_transfer_timestamp: u64,
    /// Balance records given to nodes so far.
    balances_linked: usize,
    digest_sum: u128,
    /// The expiry heap's storage (kept, so its capacity is), filled then heapified at the end.
    expiry: Vec<Reverse<Expiry>>,
}

impl Ledger {
    fn snapshot_header(&self) -> SnapshotHeader {
        SnapshotHeader {
            magic: MAGIC,
            version: VERSION,
            header_size: HEADER_SIZE as u32,
            accounts: self.accounts.len() as u64,
            balances: self.balances.len() as u64,
            orphans: self.orphans.len() as u64,
            transfers: self.transfers.len() as u64,
            commit_timestamp: self.commit_timestamp,
            reserved_a: 0,
            digest_sum: self.digest_sum,
            reserved: [0; 48],
        }
    }

    pub(super) fn snapshot_freeze(&mut self) {
        assert!(self.restore.is_none(), "snapshot during a restore");
        assert!(self.frozen.header.is_none(), "snapshot frozen twice");
        let header = self.snapshot_header();
        let frozen = &mut self.frozen;
        // Once, to the live arrays' capacity: later checkpoints copy without allocating.
        if frozen.accounts.capacity() < self.accounts.capacity() {
            frozen
                .accounts
                .reserve_exact(self.accounts.capacity() - frozen.accounts.len());
        }
        if frozen.status.capacity() < self.transfer_status.capacity() {
            frozen
                .status
                .reserve_exact(self.transfer_status.capacity() - frozen.status.len());
        }
        frozen.accounts.clear();
        frozen.accounts.extend_from_slice(&self.accounts);
        frozen.status.clear();
        frozen.status.extend_from_slice(&self.transfer_status);
        frozen.header = Some(header);
    }

    pub(super) fn snapshot_thaw(&mut self) {
        assert!(
            self.frozen.header.is_some(),
            "thaw of a snapshot not frozen"
        );
        self.frozen.header = None;
    }

    pub(super) fn snapshot_len(&self) -> u64 {
        assert!(self.restore.is_none(), "snapshot during a restore");
        snapshot_size_of(&self.frozen.header.unwrap_or_else(|| self.snapshot_header()))
    }

    pub(super) fn snapshot_copy(&self, offset: u64, out: &mut [u8]) {
        assert!(self.restore.is_none(), "snapshot during a restore");
        let (header, accounts, status) = match &self.frozen.header {
            Some(header) => (
                *header,
                self.frozen.accounts.as_bytes(),
                &self.frozen.status[..],
            ),
            None => (
                self.snapshot_header(),
                self.accounts.as_bytes(),
                &self.transfer_status[..],
            ),
        };
        // Frozen or not, the growing sections are read up to the header's counts.
        assert!(self.balances.len() as u64 >= header.balances);
        assert!(self.orphans.len() as u64 >= header.orphans);
        assert!(self.transfers.len() as u64 >= header.transfers);
        let size = snapshot_size_of(&header);
        let end = offset.checked_add(out.len() as u64);
        assert!(
            end.is_some_and(|end| end <= size),
            "snapshot_read of [{offset}, +{}) beyond the snapshot's {size} bytes",
            out.len()
        );
        // In `Section` order; each is the array itself, viewed as bytes (no copy).
        let sections: [&[u8]; 6] = [
            header.as_bytes(),
            accounts,
            self.balances[..header.balances as usize].as_bytes(),
            self.orphans[..header.orphans as usize].as_bytes(),
            status,
            self.transfers[..header.transfers as usize].as_bytes(),
        ];
        let mut start = 0u64;
        let mut done = 0usize;
        for bytes in sections {
            if done == out.len() {
                break;
            }
            let section_end = start + bytes.len() as u64;
            let at = offset + done as u64;
            if at < section_end {
                let from = (at - start) as usize;
                let n = (bytes.len() - from).min(out.len() - done);
                out[done..done + n].copy_from_slice(&bytes[from..from + n]);
                done += n;
            }
            start = section_end;
        }
        assert_eq!(done, out.len());
    }

    /// Empties the ledger (keeping every allocation).
    fn clear_state(&mut self) {
        self.accounts.clear();
        self.account_hashes.clear();
        self.account_lists.clear();
        self.account_index.clear();
        self.transfers.clear();
        self.transfer_status.clear();
        self.transfer_index.clear();
        self.orphans.clear();
        self.nodes.clear();
        self.balances.clear();
        self.expiry.clear();
        self.chain = None;
        self.undo.clear();
        self.digest_sum = 0;
        self.commit_timestamp = 0;
    }

    pub(super) fn restore_start(&mut self, size: u64) {
        assert!(self.chain.is_none(), "restore inside a linked chain");
        assert!(
            self.frozen.header.is_none(),
            "restore while a snapshot is frozen"
        );
        // A restore begun again discards the first one (and gives back the expiry storage).
        if let Some(restore) = self.restore.take() {
            self.expiry = BinaryHeap::from(restore.expiry);
        }
        self.clear_state();
        let expiry = std::mem::take(&mut self.expiry).into_vec();
        debug_assert!(expiry.is_empty());
        self.restore = Some(Box::new(Restore {
            size,
            received: 0,
            error: None,
            header: None,
            section: Section::Header,
            remaining: 1,
            carry: [0; HEADER_SIZE],
            carry_len: 0,
            last_account_timestamp: 0,
            last_transfer_timestamp: 0,
            balances_linked: 0,
            digest_sum: 0,
            expiry,
        }));
    }

    pub(super) fn restore_append(&mut self, bytes: &[u8]) {
        let mut restore = self
            .restore
            .take()
            .expect("restore_write without restore_begin");
        if restore.error.is_none() {
            if let Err(e) = self.restore_bytes(&mut restore, bytes) {
                restore.error = Some(e);
            }
        }
        self.restore = Some(restore);
    }

    pub(super) fn restore_complete(&mut self) -> Result<(), String> {
        let mut restore = self
            .restore
            .take()
            .expect("restore_finish without restore_begin");
        let result = self.restore_check(&mut restore);
        let mut expiry = std::mem::take(&mut restore.expiry);
        if result.is_err() {
            // Leave an empty, working ledger rather than half a snapshot.
            self.clear_state();
            expiry.clear();
        }
        // O(n) heapify, in place: the storage (and its capacity) is the one `new` reserved.
        self.expiry = BinaryHeap::from(expiry);
        debug_assert!(result.is_err() || self.digest_recompute() == finalize(self.digest_sum));
        result
    }

    fn restore_check(&mut self, r: &mut Restore) -> Result<(), String> {
        if let Some(e) = r.error.take() {
            return Err(e);
        }
        if r.received < r.size || r.section != Section::End {
            return Err(format!(
                "snapshot truncated: {} of {} bytes received (in section {:?})",
                r.received, r.size, r.section
            ));
        }
        let header = r.header.expect("a header before the end");
        if r.balances_linked != self.balances.len() {
            return Err(format!(
                "snapshot holds {} balance records, its history accounts' transfers use {}",
                self.balances.len(),
                r.balances_linked
            ));
        }
        let newest = r.last_account_timestamp.max(r.last_transfer_timestamp);
        if newest > header.commit_timestamp {
            return Err(format!(
                "snapshot has an object with timestamp {newest} after its commit timestamp {}",
                header.commit_timestamp
            ));
        }
        if r.digest_sum != header.digest_sum {
            return Err(format!(
                "snapshot digest mismatch: its header says {:#034x}, its records sum to {:#034x}",
                header.digest_sum, r.digest_sum
            ));
        }
        self.digest_sum = r.digest_sum;
        self.commit_timestamp = header.commit_timestamp;
        Ok(())
    }

    /// Consumes the next piece: whole records straight from `bytes`, a record split across
    /// pieces through `carry`.
    fn restore_bytes(&mut self, r: &mut Restore, mut bytes: &[u8]) -> Result<(), String> {
        r.received += bytes.len() as u64;
        if r.received > r.size {
            return Err(format!(
                "snapshot longer than the {} bytes announced ({} received)",
                r.size, r.received
            ));
        }
        while !bytes.is_empty() {
            if r.section == Section::End {
                return Err(format!(
                    "{} bytes after the end of the snapshot",
                    bytes.len()
                ));
            }
            let size = r.section.record_size();
            if r.carry_len > 0 || bytes.len() < size {
                let take = (size - r.carry_len).min(bytes.len());
                r.carry[r.carry_len..r.carry_len + take].copy_from_slice(&bytes[..take]);
                r.carry_len += take;
                bytes = &bytes[take..];
                if r.carry_len == size {
                    let record = r.carry;
                    r.carry_len = 0;
                    self.restore_records(r, &record[..size])?;
                }
            } else {
                // `remaining` is at most 2^31 (checked with the header), and at least 1.
                let n = (bytes.len() / size).min(r.remaining as usize);
                let (records, rest) = bytes.split_at(n * size);
                self.restore_records(r, records)?;
                bytes = rest;
            }
        }
        Ok(())
    }

    /// Restores whole records of the current section (at most `remaining` of them).
    fn restore_records(&mut self, r: &mut Restore, records: &[u8]) -> Result<(), String> {
        let size = r.section.record_size();
        debug_assert_eq!(records.len() % size, 0);
        let n = records.len() / size;
        debug_assert!(n as u64 <= r.remaining);
        match r.section {
            Section::Header => self.restore_header(r, records)?,
            Section::Accounts => {
                for chunk in records.chunks_exact(size) {
                    let account = Account::read_from_bytes(chunk).expect("128 bytes");
                    self.restore_account(r, &account)?;
                }
            }
            Section::Balances => {
                for chunk in records.chunks_exact(size) {
                    let record = BalanceRecord::read_from_bytes(chunk).expect("64 bytes");
                    // Within capacity: the count was checked against it.
                    self.balances.push(record);
                }
            }
            Section::Orphans => {
                for chunk in records.chunks_exact(size) {
                    let id = u128::read_from_bytes(chunk).expect("16 bytes");
                    self.restore_orphan(r, id)?;
                }
            }
            Section::Status => {
                if let Some(&status) = records.iter().find(|&&s| s > STATUS_EXPIRED) {
                    return Err(format!("snapshot holds a transfer status of {status}"));
                }
                self.transfer_status.extend_from_slice(records);
            }
            Section::Transfers => {
                for (index, chunk) in records.chunks_exact(size).enumerate() {
                    // The id table is far larger than cache: start loading a later bucket.
                    if index + PREFETCH_DISTANCE < n {
                        self.transfer_index
                            .prefetch(read_id(records, index + PREFETCH_DISTANCE));
                    }
                    let transfer = Transfer::read_from_bytes(chunk).expect("128 bytes");
                    self.restore_transfer(r, &transfer)?;
                }
            }
            Section::End => unreachable!("records after the end"),
        }
        r.remaining -= n as u64;
        while r.remaining == 0 && r.section != Section::End {
            r.section = r.section.next();
            r.remaining = r.section.count(r.header.as_ref().expect("header parsed"));
        }
        Ok(())
    }

    fn restore_header(&mut self, r: &mut Restore, bytes: &[u8]) -> Result<(), String> {
        let header = SnapshotHeader::read_from_bytes(bytes).expect("128 bytes");
        if header.magic != MAGIC {
            return Err(format!(
                "not a ledger snapshot (magic {:#018x})",
                header.magic
            ));
        }
        if header.version != VERSION {
            return Err(format!(
                "ledger snapshot version {}, this ledger reads version {VERSION}",
                header.version
            ));
        }
        if header.header_size as usize != HEADER_SIZE
            || header.reserved_a != 0
            || header.reserved.iter().any(|&b| b != 0)
        {
            return Err("ledger snapshot header malformed (size or reserved bytes)".to_string());
        }
        let accounts_max = u64::from(self.config.accounts_max);
        let transfers_max = u64::from(self.config.transfers_max);
        if header.accounts > accounts_max {
            return Err(format!(
                "snapshot holds {} accounts, accounts_max is {accounts_max}",
                header.accounts
            ));
        }
        if header.transfers > transfers_max {
            return Err(format!(
                "snapshot holds {} transfers, transfers_max is {transfers_max}",
                header.transfers
            ));
        }
        if header.orphans > transfers_max - header.transfers {
            return Err(format!(
                "snapshot holds {} transfers and {} failed transfer ids ({} ids), \
                 transfers_max is {transfers_max}",
                header.transfers,
                header.orphans,
                u128::from(header.transfers) + u128::from(header.orphans)
            ));
        }
        if header.balances > 2 * header.transfers {
            return Err(format!(
                "snapshot holds {} balance records for {} transfers",
                header.balances, header.transfers
            ));
        }
        if header.commit_timestamp > TIMESTAMP_MAX {
            return Err(format!(
                "snapshot commit timestamp {} out of range",
                header.commit_timestamp
            ));
        }
        let expected = snapshot_size_of(&header);
        if expected != r.size {
            return Err(format!(
                "snapshot of {} bytes, its header describes {expected}",
                r.size
            ));
        }
        r.header = Some(header);
        Ok(())
    }

    fn restore_account(&mut self, r: &mut Restore, account: &Account) -> Result<(), String> {
        let id = account.id;
        if id == 0 || id == u128::MAX {
            return Err(format!("snapshot holds an account with id {id:#x}"));
        }
        if account.timestamp <= r.last_account_timestamp || account.timestamp > TIMESTAMP_MAX {
            return Err(format!(
                "snapshot accounts out of timestamp order at account {id} ({} after {})",
                account.timestamp, r.last_account_timestamp
            ));
        }
        if account.reserved != 0 || account.flags & account_flags::PADDING != 0 {
            return Err(format!(
                "snapshot account {id} has reserved fields or flags set"
            ));
        }
        let slot = self.accounts.len() as u32;
        let accounts = &self.accounts;
        if !self
            .account_index
            .try_insert(id, slot, |s| accounts[s as usize].id)
        {
            return Err(format!("snapshot holds account {id} twice"));
        }
        r.last_account_timestamp = account.timestamp;
        let hash = account_hash(account);
        r.digest_sum = r.digest_sum.wrapping_add(hash);
        self.accounts.push(*account);
        self.account_hashes.push(hash);
        self.account_lists.push(AccountList {
            head: NIL,
            tail: NIL,
        });
        Ok(())
    }

    fn restore_orphan(&mut self, r: &mut Restore, id: u128) -> Result<(), String> {
        if id == 0 || id == u128::MAX {
            return Err(format!("snapshot holds a failed transfer id {id:#x}"));
        }
        let index = self.orphans.len() as u32;
        let (transfers, orphans) = (&self.transfers, &self.orphans);
        if !self.transfer_index.try_insert(id, ORPHAN | index, |v| {
            transfer_id_of(transfers, orphans, v)
        }) {
            return Err(format!("snapshot holds failed transfer id {id} twice"));
        }
        self.orphans.push(id);
        r.digest_sum = r.digest_sum.wrapping_add(orphan_hash(id));
        Ok(())
    }

    fn restore_transfer(&mut self, r: &mut Restore, t: &Transfer) -> Result<(), String> {
        let id = t.id;
        let slot = self.transfers.len() as u32;
        if id == 0 || id == u128::MAX {
            return Err(format!("snapshot holds a transfer with id {id:#x}"));
        }
        if t.timestamp <= r.last_transfer_timestamp || t.timestamp > TIMESTAMP_MAX {
            return Err(format!(
                "snapshot transfers out of timestamp order at transfer {id} ({} after {})",
                t.timestamp, r.last_transfer_timestamp
            ));
        }
        if t.flags & transfer_flags::PADDING != 0 {
            return Err(format!("snapshot transfer {id} has reserved flags set"));
        }
        // The status section came whole before the transfers.
        let status = self.transfer_status[slot as usize];
        let pending = t.flags & transfer_flags::PENDING != 0;
        if pending != (status != STATUS_NONE) {
            return Err(format!(
                "snapshot transfer {id} (flags {:#x}) has status {status}",
                t.flags
            ));
        }
        let resolves =
            transfer_flags::POST_PENDING_TRANSFER | transfer_flags::VOID_PENDING_TRANSFER;
        if t.flags & resolves != 0 {
            // `transfer_exists` relies on a post or void's pending transfer being there.
            let (transfers, orphans) = (&self.transfers, &self.orphans);
            let found = self
                .transfer_index
                .get(t.pending_id, |v| transfer_id_of(transfers, orphans, v));
            let is_pending = found.is_some_and(|v| {
                v & ORPHAN == 0 && transfers[v as usize].flags & transfer_flags::PENDING != 0
            });
            if !is_pending {
                return Err(format!(
                    "snapshot transfer {id} resolves {}, not an earlier pending transfer",
                    t.pending_id
                ));
            }
        }
        let account_slot = |account_id: u128| {
            self.account_index
                .get(account_id, |s| self.accounts[s as usize].id)
        };
        let (Some(dr_slot), Some(cr_slot)) = (
            account_slot(t.debit_account_id),
            account_slot(t.credit_account_id),
        ) else {
            return Err(format!(
                "snapshot transfer {id} refers to a missing account"
            ));
        };
        if dr_slot == cr_slot {
            return Err(format!(
                "snapshot transfer {id} has one account on both sides"
            ));
        }
        let (transfers, orphans) = (&self.transfers, &self.orphans);
        if !self
            .transfer_index
            .try_insert(id, slot, |v| transfer_id_of(transfers, orphans, v))
        {
            return Err(format!("snapshot holds transfer id {id} twice"));
        }
        r.last_transfer_timestamp = t.timestamp;
        r.digest_sum = r.digest_sum.wrapping_add(transfer_hash(t));
        if pending {
            r.digest_sum = r.digest_sum.wrapping_add(status_hash(t.timestamp, status));
        }
        self.transfers.push(*t);
        self.restore_link(r, dr_slot, t.timestamp)?;
        self.restore_link(r, cr_slot, t.timestamp)?;
        if status == STATUS_PENDING && t.timeout != 0 {
            // Cannot overflow: timestamp < 2^63 and the timeout is under 2^63 ns.
            r.expiry.push(Reverse(Expiry {
                expires_at: t.timestamp + t.timeout_ns(),
                timestamp: t.timestamp,
                slot,
            }));
        }
        Ok(())
    }

    /// `link_node` for a restore: the balance record is the next stored one, not computed.
    fn restore_link(
        &mut self,
        r: &mut Restore,
        account_slot: u32,
        timestamp: u64,
    ) -> Result<(), String> {
        let node = self.nodes.len() as u32;
        let account = &self.accounts[account_slot as usize];
        let balance = if account.flags & account_flags::HISTORY != 0 {
            let index = r.balances_linked;
            let Some(record) = self.balances.get(index) else {
                return Err(format!(
                    "snapshot holds {} balance records, its history accounts' transfers use more",
                    self.balances.len()
                ));
            };
            r.digest_sum = r
                .digest_sum
                .wrapping_add(balance_hash(timestamp, account.id, record));
            r.balances_linked += 1;
            index as u32
        } else {
            NIL
        };
        let list = &mut self.account_lists[account_slot as usize];
        self.nodes.push(Node {
            prev: list.tail,
            next: NIL,
            balance,
        });
        if list.tail == NIL {
            list.head = node;
        } else {
            self.nodes[list.tail as usize].next = node;
        }
        list.tail = node;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::{expiry_live, STATUS_POSTED, STATUS_VOIDED};
    use super::*;
    use crate::ledger::types::NS_PER_S;
    use crate::ledger::workload::{Workload, WorkloadProfile};
    use crate::ledger::LedgerConfig;
    use crate::state_machine::StateMachine;

    const MESSAGE_SIZE_MAX: u32 = 16 * 1024;

    fn ledger(accounts_max: u32, transfers_max: u32) -> Ledger {
        Ledger::new(LedgerConfig {
            accounts_max,
            transfers_max,
            message_size_max: MESSAGE_SIZE_MAX,
        })
    }

    fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
        rng.next_u64() % n
    }

    /// A piece size: mostly small and odd (splitting records every which way), sometimes the
    /// replica's sizes.
    fn piece(rng: &mut ChaCha8Rng) -> usize {
        match below(rng, 8) {
            0 => 1,
            1 => 1 + below(rng, 16) as usize,
            2 | 3 => 1 + below(rng, 300) as usize,
            4 => 4096,
            5 => 1 << 20,
            _ => 1 + below(rng, 8192) as usize,
        }
    }

    /// The whole snapshot, read in pieces of random sizes.
    fn snapshot(ledger: &Ledger, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let size = ledger.snapshot_size() as usize;
        let mut bytes = vec![0xAA; size];
        let mut offset = 0;
        while offset < size {
            let n = piece(rng).min(size - offset);
            ledger.snapshot_read(offset as u64, &mut bytes[offset..offset + n]);
            offset += n;
        }
        bytes
    }

    /// Restores `bytes` (announced as `size`), written in pieces of random sizes.
    fn restore(
        ledger: &mut Ledger,
        size: u64,
        bytes: &[u8],
        rng: &mut ChaCha8Rng,
    ) -> Result<(), String> {
        ledger.restore_begin(size);
        let mut offset = 0;
        while offset < bytes.len() {
            let n = piece(rng).min(bytes.len() - offset);
            ledger.restore_write(&bytes[offset..offset + n]);
            offset += n;
        }
        ledger.restore_finish()
    }

    fn restored(config: (u32, u32), bytes: &[u8], rng: &mut ChaCha8Rng) -> Ledger {
        let mut copy = ledger(config.0, config.1);
        restore(&mut copy, bytes.len() as u64, bytes, rng).expect("restore");
        copy
    }

    /// Generates requests and commits each to several ledgers, which must reply alike.
    struct Driver {
        rng: ChaCha8Rng,
        workload: Workload,
        timestamp: u64,
        body: Vec<u8>,
        output: Vec<u8>,
        reply: Vec<u8>,
        op: u64,
    }

    impl Driver {
        fn new(seed: u64) -> Driver {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // Odd seeds: a random profile; even: one rich in pending transfers, timeouts,
            // resolutions, chains and failures.
            let workload = if seed % 2 == 1 {
                Workload::new(&mut rng)
            } else {
                let profile = WorkloadProfile {
                    accounts: 64,
                    ledgers: 2,
                    batch_max: 64,
                    linked_percent: 20,
                    invalid_percent: 10,
                    duplicate_percent: 5,
                    pending_percent: 40,
                    resolve_percent: 30,
                    balancing_percent: 5,
                    timeout_max: 3,
                    import_requests: 3,
                };
                Workload::with_profile(&mut rng, profile)
            };
            let body_max = MESSAGE_SIZE_MAX as usize - 256;
            Driver {
                rng,
                workload,
                timestamp: 1_000_000_000_000,
                body: vec![0; body_max],
                output: vec![0; body_max],
                reply: Vec::with_capacity(body_max),
                op: 0,
            }
        }

        fn step(&mut self, ledgers: &mut [&mut Ledger]) {
            self.workload.set_timestamp_hint(self.timestamp);
            let (operation, size) = self.workload.generate(&mut self.rng, &mut self.body);
            let input = &self.body[..size];
            let count = ledgers[0].prepare_timestamps(operation as u8, input);
            // Time moves on: usually a little, sometimes by seconds (so timeouts expire).
            let jump = match below(&mut self.rng, 10) {
                0 => below(&mut self.rng, 3 * NS_PER_S),
                1..=3 => below(&mut self.rng, 1_000_000),
                _ => below(&mut self.rng, 1_000),
            };
            self.timestamp += count.max(1) + jump;
            self.op += 1;
            for (index, ledger) in ledgers.iter_mut().enumerate() {
                let n = ledger.commit(
                    0,
                    self.op,
                    self.timestamp,
                    operation as u8,
                    input,
                    &mut self.output,
                );
                if index == 0 {
                    self.reply.clear();
                    self.reply.extend_from_slice(&self.output[..n]);
                } else {
                    assert_eq!(
                        &self.output[..n],
                        &self.reply[..],
                        "op {} ({}): ledger {index} replied differently",
                        self.op,
                        operation.name()
                    );
                }
            }
            let digest = ledgers[0].digest();
            for (index, ledger) in ledgers.iter().enumerate() {
                assert_eq!(ledger.digest(), digest, "op {}: ledger {index}", self.op);
            }
        }

        fn run(&mut self, requests: usize, ledgers: &mut [&mut Ledger]) {
            for _ in 0..requests {
                self.step(ledgers);
            }
        }
    }

    /// What a snapshot holds, to check the tests reach every kind of state.
    #[derive(Debug, Default)]
    struct Coverage {
        snapshots: u64,
        transfers: u64,
        orphans: u64,
        balances: u64,
        live_timeouts: u64,
        pending: u64,
        posted: u64,
        voided: u64,
        expired: u64,
        resolutions: u64,
        history_accounts: u64,
        imported: u64,
    }

    impl Coverage {
        fn add(&mut self, ledger: &Ledger) {
            self.snapshots += 1;
            self.transfers += ledger.transfers.len() as u64;
            self.orphans += ledger.orphans.len() as u64;
            self.balances += ledger.balances.len() as u64;
            for (t, &status) in ledger.transfers.iter().zip(&ledger.transfer_status) {
                match status {
                    STATUS_PENDING if t.timeout != 0 => self.live_timeouts += 1,
                    STATUS_PENDING => self.pending += 1,
                    STATUS_POSTED => self.posted += 1,
                    STATUS_VOIDED => self.voided += 1,
                    STATUS_EXPIRED => self.expired += 1,
                    _ => {}
                }
                let resolves =
                    transfer_flags::POST_PENDING_TRANSFER | transfer_flags::VOID_PENDING_TRANSFER;
                if t.flags & resolves != 0 {
                    self.resolutions += 1;
                }
                if t.flags & transfer_flags::IMPORTED != 0 {
                    self.imported += 1;
                }
            }
            self.history_accounts += ledger
                .accounts
                .iter()
                .filter(|a| a.flags & account_flags::HISTORY != 0)
                .count() as u64;
        }
    }

    /// Drives a ledger with the workload, snapshots it now and then (random piece sizes),
    /// restores each snapshot into another ledger (fresh, or one already holding an older
    /// restore, which is discarded), and requires the copies to reply, digest and snapshot
    /// exactly as the original through every later request.
    #[test]
    fn ledger_snapshot_round_trip() {
        let mut coverage = Coverage::default();
        let mut events = 0u64;
        for seed in 0..8u64 {
            let mut driver = Driver::new(seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED);
            let config = (4096, 65_536);
            let mut original = ledger(config.0, config.1);
            let capacities = original.capacities();
            let mut copies: Vec<Ledger> = Vec::new();
            for checkpoint in 0..6 {
                let requests = 50 + below(&mut rng, 150) as usize;
                let mut all: Vec<&mut Ledger> = std::iter::once(&mut original)
                    .chain(copies.iter_mut())
                    .collect();
                driver.run(requests, &mut all);
                events += requests as u64;

                let bytes = snapshot(&original, &mut rng);
                assert_eq!(bytes.len() as u64, original.snapshot_size());
                coverage.add(&original);
                // Every copy's snapshot is the original's, byte for byte.
                for copy in &copies {
                    assert_eq!(snapshot(copy, &mut rng), bytes, "seed {seed}");
                }
                // A copy from this snapshot; the third and later reuse an older copy.
                let copy = if checkpoint < 2 {
                    copies.push(restored(config, &bytes, &mut rng));
                    copies.last_mut().unwrap()
                } else {
                    let copy = &mut copies[checkpoint % 2];
                    restore(copy, bytes.len() as u64, &bytes, &mut rng).expect("restore");
                    copy
                };
                assert_eq!(copy.digest(), original.digest(), "seed {seed}");
                assert_eq!(copy.digest_recompute(), original.digest(), "seed {seed}");
                assert_eq!(copy.commit_timestamp(), original.commit_timestamp());
                assert_eq!(copy.capacities(), capacities, "seed {seed}: reallocated");
                assert_eq!(snapshot(copy, &mut rng), bytes, "seed {seed}");
                // The same live expiries, in the same order.
                let live = |l: &Ledger| {
                    let mut v: Vec<Expiry> = l
                        .expiry
                        .iter()
                        .map(|r| r.0)
                        .filter(|e| expiry_live(&l.transfers, &l.transfer_status, e))
                        .collect();
                    v.sort();
                    v
                };
                assert_eq!(live(copy), live(&original), "seed {seed}");
            }
            let mut all: Vec<&mut Ledger> = std::iter::once(&mut original)
                .chain(copies.iter_mut())
                .collect();
            driver.run(200, &mut all);
            events += 200;
            let bytes = snapshot(&original, &mut rng);
            for copy in &copies {
                assert_eq!(snapshot(copy, &mut rng), bytes, "seed {seed}");
                assert_eq!(copy.capacities(), capacities, "seed {seed}: reallocated");
            }
            assert_eq!(original.capacities(), capacities);
        }
        eprintln!("ledger snapshot round trip: {events} requests, {coverage:?}");
        assert!(coverage.orphans > 0, "{coverage:?}");
        assert!(coverage.balances > 0, "{coverage:?}");
        assert!(coverage.live_timeouts > 0, "{coverage:?}");
        assert!(coverage.pending > 0, "{coverage:?}");
        assert!(coverage.posted > 0, "{coverage:?}");
        assert!(coverage.voided > 0, "{coverage:?}");
        assert!(coverage.expired > 0, "{coverage:?}");
        assert!(coverage.resolutions > 0, "{coverage:?}");
        assert!(coverage.history_accounts > 0, "{coverage:?}");
        assert!(coverage.imported > 0, "{coverage:?}");
    }

    /// Ledgers of different capacities fed the same operations write the same bytes; reading
    /// the snapshot whole or in any pieces gives the same bytes.
    #[test]
    fn ledger_snapshot_deterministic() {
        for seed in 0..4u64 {
            let mut driver = Driver::new(seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut a = ledger(4096, 65_536);
            let mut b = ledger(5000, 100_003);
            for _ in 0..4 {
                driver.run(150, &mut [&mut a, &mut b]);
                let whole = {
                    let mut v = vec![0; a.snapshot_size() as usize];
                    a.snapshot_read(0, &mut v);
                    v
                };
                assert_eq!(snapshot(&a, &mut rng), whole);
                assert_eq!(snapshot(&b, &mut rng), whole);
                // Empty reads anywhere, including at the end.
                a.snapshot_read(whole.len() as u64, &mut []);
                a.snapshot_read(7, &mut []);
            }
        }
        // The empty ledger: a header alone.
        let empty = ledger(1, 1);
        assert_eq!(empty.snapshot_size(), HEADER_SIZE as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let bytes = snapshot(&empty, &mut rng);
        let copy = restored((1, 1), &bytes, &mut rng);
        assert_eq!(copy.digest(), empty.digest());
    }

    /// A frozen snapshot stays the state at the freeze while operations go on (pending
    /// transfers resolved, balances changed, chains rolled back, transfers and orphans added):
    /// its bytes equal those read before, and a restore of them gives the digest at the freeze.
    #[test]
    fn ledger_snapshot_frozen_while_operations_go_on() {
        for seed in 0..6u64 {
            let mut driver = Driver::new(seed);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut a = ledger(4096, 65_536);
            for round in 0..3 {
                driver.run(100, &mut [&mut a]);
                let before = snapshot(&a, &mut rng);
                let digest = a.digest();
                a.snapshot_freeze();
                driver.run(60, &mut [&mut a]);
                assert_ne!(
                    a.digest(),
                    digest,
                    "seed {seed} round {round}: nothing changed"
                );
                assert_eq!(a.snapshot_size(), before.len() as u64);
                assert_eq!(snapshot(&a, &mut rng), before, "seed {seed} round {round}");
                let copy = restored((4096, 65_536), &before, &mut rng);
                assert_eq!(copy.digest(), digest);
                a.snapshot_thaw();
                let after = snapshot(&a, &mut rng);
                assert_ne!(after, before);
                let copy = restored((4096, 65_536), &after, &mut rng);
                assert_eq!(copy.digest(), a.digest());
            }
        }
    }

    /// A ledger with state, and its snapshot.
    fn sample(seed: u64) -> (Ledger, Vec<u8>) {
        let mut driver = Driver::new(seed);
        let mut original = ledger(4096, 65_536);
        driver.run(300, &mut [&mut original]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bytes = snapshot(&original, &mut rng);
        assert!(original.transfers_count() > 100 && original.orphans_count() > 0);
        (original, bytes)
    }

    fn assert_empty(ledger: &Ledger) {
        let fresh = self::ledger(1, 1);
        assert_eq!(ledger.accounts_count(), 0);
        assert_eq!(ledger.transfers_count(), 0);
        assert_eq!(ledger.orphans_count(), 0);
        assert_eq!(ledger.commit_timestamp(), 0);
        assert_eq!(ledger.digest(), fresh.digest());
        assert!(ledger.expiry.is_empty() && ledger.nodes.is_empty());
    }

    fn expect_err(result: Result<(), String>, contains: &str) {
        match result {
            Ok(()) => panic!("restore accepted a bad snapshot (expected {contains:?})"),
            Err(e) => assert!(e.contains(contains), "{e:?} does not mention {contains:?}"),
        }
    }

    #[test]
    fn ledger_snapshot_capacity_too_small() {
        let (original, bytes) = sample(2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let transfers = original.transfers_count();
        let orphans = original.orphans_count();
        let accounts = original.accounts_count();
        let size = bytes.len() as u64;

        let mut small = ledger(4096, transfers as u32 - 1);
        expect_err(
            restore(&mut small, size, &bytes, &mut rng),
            &format!(
                "snapshot holds {transfers} transfers, transfers_max is {}",
                transfers - 1
            ),
        );
        assert_empty(&small);
        // Room for the transfers but not for the ids remembered as failed as well.
        let mut small = ledger(4096, (transfers + orphans) as u32 - 1);
        expect_err(
            restore(&mut small, size, &bytes, &mut rng),
            "failed transfer ids",
        );
        let mut small = ledger(accounts as u32 - 1, 65_536);
        expect_err(
            restore(&mut small, size, &bytes, &mut rng),
            &format!(
                "snapshot holds {accounts} accounts, accounts_max is {}",
                accounts - 1
            ),
        );
        // Exactly enough is enough: capacity is not part of the snapshot.
        let exact = restored(
            (accounts as u32, (transfers + orphans) as u32),
            &bytes,
            &mut rng,
        );
        assert_eq!(exact.digest(), original.digest());
        assert_eq!(snapshot(&exact, &mut rng), bytes);
    }

    #[test]
    fn ledger_snapshot_malformed() {
        let (original, bytes) = sample(4);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let size = bytes.len() as u64;
        let mut target = ledger(4096, 65_536);
        let header = SnapshotHeader::read_from_bytes(&bytes[..HEADER_SIZE]).unwrap();
        let accounts_at = HEADER_SIZE;
        let transfers_at = bytes.len() - 128 * header.transfers as usize;
        let status_at = transfers_at - header.transfers as usize;
        let orphans_at = status_at - 16 * header.orphans as usize;
        let orphans = orphans_at..status_at;

        let mut patched = |at: usize, patch: &[u8], contains: &str| {
            let mut bad = bytes.clone();
            bad[at..at + patch.len()].copy_from_slice(patch);
            expect_err(restore(&mut target, size, &bad, &mut rng), contains);
            assert_empty(&target);
        };
        patched(0, b"NOTLEDGR", "not a ledger snapshot");
        patched(8, &2u32.to_le_bytes(), "version 2");
        patched(100, &[1], "header malformed");
        patched(64, &[0x5A], "digest mismatch");
        // A second account with the first one's id.
        patched(
            accounts_at + 128,
            &bytes[accounts_at..accounts_at + 16],
            "twice",
        );
        // Accounts out of order.
        patched(
            accounts_at + 120,
            &u64::MAX.to_le_bytes(),
            "out of timestamp order",
        );
        // A transfer from an account that does not exist.
        patched(transfers_at + 16, &7u128.to_le_bytes(), "missing account");
        // A transfer with an id already used.
        patched(
            transfers_at + 128,
            &bytes[transfers_at..transfers_at + 16],
            "twice",
        );
        patched(status_at, &[9], "status of 9");
        // A commit timestamp older than the objects.
        patched(48, &1u64.to_le_bytes(), "after its commit timestamp");
        // Counts that do not match the size.
        patched(
            16,
            &(header.accounts - 1).to_le_bytes(),
            "its header describes",
        );

        // Truncated: announced whole, or announced truncated.
        for cut in [0, 1, 127, 128, 129, bytes.len() / 2, bytes.len() - 1] {
            expect_err(
                restore(&mut target, size, &bytes[..cut], &mut rng),
                "truncated",
            );
            assert_empty(&target);
            let result = restore(&mut target, cut as u64, &bytes[..cut], &mut rng);
            assert!(result.is_err(), "accepted a snapshot cut at {cut}");
            assert_empty(&target);
        }
        // Too long: more than announced, or announced and then some.
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 5]);
        expect_err(restore(&mut target, size, &long, &mut rng), "longer than");
        expect_err(
            restore(&mut target, long.len() as u64, &long, &mut rng),
            "its header describes",
        );
        assert_empty(&target);

        // Random damage: any change but to the commit timestamp (which the snapshot alone cannot
        // tell right from wrong, if it stays after every object) is refused, without a panic.
        for _ in 0..400 {
            let mut bad = bytes.clone();
            match below(&mut rng, 3) {
                0 => {
                    let at = loop {
                        let at = below(&mut rng, bad.len() as u64) as usize;
                        if !(48..56).contains(&at) {
                            break at;
                        }
                    };
                    bad[at] ^= 1 + below(&mut rng, 255) as u8;
                }
                1 => {
                    let at =
                        HEADER_SIZE + below(&mut rng, (bad.len() - HEADER_SIZE) as u64) as usize;
                    let n = (1 + below(&mut rng, 300) as usize).min(bad.len() - at);
                    for b in &mut bad[at..at + n] {
                        *b = rng.next_u64() as u8;
                    }
                    if bad == bytes {
                        continue;
                    }
                }
                _ => {
                    // Two records swapped.
                    let n = (bad.len() - HEADER_SIZE) / 128;
                    let (i, j) = (below(&mut rng, n as u64), below(&mut rng, n as u64));
                    let (i, j) = (i.min(j) as usize, i.max(j) as usize);
                    let at = |k: usize| HEADER_SIZE + k * 128;
                    // Orphans are a set to the digest and have no order to check: a
                    // permutation of them is the same state, which restore accepts.
                    if orphans.contains(&at(i)) && orphans.contains(&(at(j) + 127)) {
                        continue;
                    }
                    let record_i: Vec<u8> = bad[at(i)..at(i) + 128].to_vec();
                    bad.copy_within(at(j)..at(j) + 128, at(i));
                    bad[at(j)..at(j) + 128].copy_from_slice(&record_i);
                    if bad == bytes {
                        continue;
                    }
                }
            }
            assert!(restore(&mut target, size, &bad, &mut rng).is_err());
            assert_empty(&target);
        }
        // Garbage of every size.
        for len in [0usize, 1, 64, 128, 129, 1000, 100_000] {
            let garbage: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            assert!(restore(&mut target, len as u64, &garbage, &mut rng).is_err());
            assert_empty(&target);
        }

        // After all that, the ledger takes a good snapshot and works on.
        restore(&mut target, size, &bytes, &mut rng).expect("restore");
        assert_eq!(target.digest(), original.digest());
        assert_eq!(snapshot(&target, &mut rng), bytes);
        let mut original = original;
        let mut driver = Driver::new(4);
        driver.timestamp = original.commit_timestamp();
        driver.run(100, &mut [&mut original, &mut target]);
    }

    /// Restore begun twice, or over a ledger holding state: the old state is gone.
    #[test]
    fn ledger_snapshot_restore_discards() {
        let (a, bytes_a) = sample(6);
        let (_, bytes_b) = sample(7);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut target = restored((4096, 65_536), &bytes_b, &mut rng);
        target.restore_begin(bytes_b.len() as u64);
        target.restore_write(&bytes_b[..1000]);
        restore(&mut target, bytes_a.len() as u64, &bytes_a, &mut rng).expect("restore");
        assert_eq!(target.digest(), a.digest());
        assert_eq!(snapshot(&target, &mut rng), bytes_a);
    }
}
