//! `Ledger`: the accounting state machine the replica commits operations to.
//!
//! All memory is reserved in `Ledger::new` from `LedgerConfig`: object arrays grow by `push`
//! into capacity reserved up front (pages are touched as they fill), hash indexes are zeroed
//! arrays of fixed size, and the undo log for linked chains holds a whole batch. Nothing is
//! allocated while committing.
//!
//! Accounts and transfers are stored in creation order, which is also timestamp order (every
//! new object's timestamp exceeds every older one's; imports are checked to keep it so). Each
//! account has a doubly linked list of its transfers (two list nodes per transfer: the debit
//! side and the credit side), which serves `get_account_transfers`, `get_account_balances` and
//! rollback. See docs/ledger.md for the semantics, which are TigerBeetle's.
//!
//! The snapshot (the whole state as bytes, for checkpoints and state sync) and its restore are
//! in `snapshot.rs`, which documents the format.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::digest::{
    finalize, hash_record, hash_words, KIND_ACCOUNT, KIND_BALANCE, KIND_ORPHAN,
    KIND_PENDING_STATUS, KIND_TRANSFER,
};
use super::table::IdTable;
use super::types::{
    account_filter_flags, account_flags, query_filter_flags, transfer_flags, Account,
    AccountBalance, AccountFilter, CreateAccountResult, CreateResult, CreateTransferResult,
    QueryFilter, Transfer, RECORD_SIZE, TIMESTAMP_MAX, TIMESTAMP_MIN,
};
use super::LedgerOperation;
use crate::config::ConfigError;
use crate::header::HEADER_SIZE;
use crate::state_machine::StateMachine;

// A child module (though its file sits next to this one) so that it sees `Ledger`'s fields.
#[path = "snapshot.rs"]
mod snapshot;

/// Sizes the ledger allocates from at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Most accounts the ledger holds; `create_accounts` answers `accounts_full` beyond.
    pub accounts_max: u32,
    /// Most transfer ids the ledger holds: created transfers plus ids remembered as failed
    /// (`id_already_failed`); `create_transfers` answers `transfers_full` beyond.
    pub transfers_max: u32,
    /// The replica's message size; a request body holds `(message_size_max - 256) / 128` events.
    pub message_size_max: u32,
}

impl Default for LedgerConfig {
    /// One million accounts and four million transfers with 1 MiB messages: about 1.5 GiB
    /// reserved (`memory_bytes`), touched only as the ledger fills.
    fn default() -> LedgerConfig {
        LedgerConfig {
            accounts_max: 1 << 20,
            transfers_max: 1 << 22,
            message_size_max: 1 << 20,
        }
    }
}

impl LedgerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: String| Err(ConfigError(s));
        if self.accounts_max == 0 || self.accounts_max > 1 << 30 {
            return err(format!(
                "accounts_max {} must be in 1..=2^30",
                self.accounts_max
            ));
        }
        if self.transfers_max == 0 || self.transfers_max > 1 << 30 {
            return err(format!(
                "transfers_max {} must be in 1..=2^30",
                self.transfers_max
            ));
        }
        let m = self.message_size_max as usize;
        if !(HEADER_SIZE + RECORD_SIZE..=16 * 1024 * 1024).contains(&m) {
            return err(format!(
                "message_size_max {m} must hold a header and one event, and be at most 16 MiB"
            ));
        }
        Ok(())
    }

    /// The largest request or reply body.
    pub fn body_size_max(&self) -> usize {
        self.message_size_max as usize - HEADER_SIZE
    }

    /// The most events a batch carries (and the most records a reply carries).
    pub fn events_max(&self) -> usize {
        self.body_size_max() / RECORD_SIZE
    }

    /// Bytes reserved by `Ledger::new` (virtual; pages are touched as the ledger fills).
    pub fn memory_bytes(&self) -> usize {
        let accounts = self.accounts_max as usize;
        let transfers = self.transfers_max as usize;
        let table = |n: usize| (n.max(8) * 2).next_power_of_two() * 8;
        accounts * (RECORD_SIZE + 16 + core::mem::size_of::<AccountList>())
            + table(accounts)
            + transfers
                * (RECORD_SIZE
                    + 1
                    + 2 * core::mem::size_of::<Node>()
                    + 2 * core::mem::size_of::<BalanceRecord>()
                    + 16
                    + core::mem::size_of::<Expiry>())
            + table(transfers)
            + self.events_max() * UNDO_PER_EVENT * core::mem::size_of::<Undo>()
    }
}

/// Pending status of a transfer (TigerBeetle's `TransferPendingStatus` values).
pub const STATUS_NONE: u8 = 0;
pub const STATUS_PENDING: u8 = 1;
pub const STATUS_POSTED: u8 = 2;
pub const STATUS_VOIDED: u8 = 3;
pub const STATUS_EXPIRED: u8 = 4;

const NIL: u32 = u32::MAX;
/// Marks a transfer-index value as an index into `orphans` (ids that failed transiently).
const ORPHAN: u32 = 1 << 31;
/// Undo entries one event can log: two account updates and one pending-status update.
const UNDO_PER_EVENT: usize = 3;

#[derive(Clone, Copy, Debug)]
struct AccountList {
    /// Oldest node, or NIL.
    head: u32,
    /// Newest node, or NIL.
    tail: u32,
}

/// One side of a transfer in its account's list. Node `2 * slot` is the debit side of transfer
/// `slot`, node `2 * slot + 1` its credit side.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: u32,
    next: u32,
    /// Index into `balances` when the account keeps history, else NIL.
    balance: u32,
}

/// Plain bytes (`IntoBytes`/`FromBytes`): the snapshot copies the array as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable)]
struct BalanceRecord {
    debits_pending: u128,
    debits_posted: u128,
    credits_pending: u128,
    credits_posted: u128,
}

/// A pending transfer with a timeout, ordered by (expiry, creation). Entries are removed
/// lazily: one is acted on only if its transfer is still there and still pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    expires_at: u64,
    timestamp: u64,
    slot: u32,
}

#[derive(Clone, Copy, Debug)]
enum Undo {
    Account { slot: u32, old: Account },
    Status { slot: u32, old: u8 },
}

/// Where a linked chain started, to roll back to.
#[derive(Clone, Copy, Debug)]
struct ChainStart {
    accounts: usize,
    transfers: usize,
    balances: usize,
    digest: u128,
}

enum TransferLookup {
    Found(u32),
    Orphan,
    Missing,
}

pub struct Ledger {
    config: LedgerConfig,
    events_max: usize,

    accounts: Vec<Account>,
    /// Each account's current digest hash, so an update hashes only the new value.
    account_hashes: Vec<u128>,
    account_lists: Vec<AccountList>,
    account_index: IdTable,

    transfers: Vec<Transfer>,
    transfer_status: Vec<u8>,
    /// Transfer ids and orphan ids (values with the ORPHAN bit).
    transfer_index: IdTable,
    orphans: Vec<u128>,
    nodes: Vec<Node>,
    balances: Vec<BalanceRecord>,
    expiry: BinaryHeap<Reverse<Expiry>>,

    chain: Option<ChainStart>,
    undo: Vec<Undo>,

    /// Sum of the hashes of every piece of state (see `digest.rs`).
    digest_sum: u128,
    /// The timestamp of the last committed operation.
    commit_timestamp: u64,

    /// A snapshot being restored (between `restore_begin` and `restore_finish`).
    restore: Option<Box<snapshot::Restore>>,
    frozen: snapshot::Frozen,
}

impl Ledger {
    /// Reserves everything the ledger will use. Panics on an invalid configuration (validate it
    /// first with `LedgerConfig::validate`).
    pub fn new(config: LedgerConfig) -> Ledger {
        if let Err(e) = config.validate() {
            panic!("{e}");
        }
        let accounts_max = config.accounts_max as usize;
        let transfers_max = config.transfers_max as usize;
        let events_max = config.events_max();
        Ledger {
            events_max,
            accounts: Vec::with_capacity(accounts_max),
            account_hashes: Vec::with_capacity(accounts_max),
            account_lists: Vec::with_capacity(accounts_max),
            account_index: IdTable::new(accounts_max),
            transfers: Vec::with_capacity(transfers_max),
            transfer_status: Vec::with_capacity(transfers_max),
            transfer_index: IdTable::new(transfers_max),
            orphans: Vec::with_capacity(transfers_max),
            nodes: Vec::with_capacity(2 * transfers_max),
            balances: Vec::with_capacity(2 * transfers_max),
            expiry: BinaryHeap::with_capacity(transfers_max),
            chain: None,
            undo: Vec::with_capacity(events_max * UNDO_PER_EVENT),
            digest_sum: 0,
            commit_timestamp: 0,
            restore: None,
            frozen: snapshot::Frozen::default(),
            config,
        }
    }

    /// Touches the pages every workload fills, so the kernel backs them now (at start-up) rather
    /// than zeroing pages inside commits as the arrays grow: measured, first-touch page zeroing
    /// was ~40% of a loaded replica's CPU. Contents are unchanged. Returns the bytes touched.
    ///
    /// Orphans (ids that failed transiently, 16 bytes each) are left to fill on demand: they are
    /// rare, so a page fault per 256 of them costs nothing, while touching them would cost 16
    /// bytes of resident memory per transfer of capacity. Balance history is touched: measured,
    /// leaving it to fill in commits cut a history workload from 1.42-1.66M to 1.0M tx/s.
    pub fn prefault(&mut self) -> usize {
        fn touch<T>(v: &mut Vec<T>) -> usize {
            let spare = v.spare_capacity_mut();
            let bytes = std::mem::size_of_val(spare);
            let base = spare.as_mut_ptr() as *mut u8;
            for offset in (0..bytes).step_by(4096) {
                // Safety: inside the vector's own spare capacity, which is uninitialized memory
                // the vector owns; writing a byte there does not change its length or contents.
                unsafe { base.add(offset).write_volatile(0) };
            }
            bytes
        }
        touch(&mut self.accounts)
            + touch(&mut self.account_hashes)
            + touch(&mut self.account_lists)
            + touch(&mut self.transfers)
            + touch(&mut self.transfer_status)
            + touch(&mut self.nodes)
            + touch(&mut self.balances)
            + touch(&mut self.undo)
            + self.account_index.prefault()
            + self.transfer_index.prefault()
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    pub fn accounts_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn transfers_count(&self) -> usize {
        self.transfers.len()
    }

    /// Ids remembered as failed with a transient error.
    pub fn orphans_count(&self) -> usize {
        self.orphans.len()
    }

    /// The timestamp of the last committed operation.
    pub fn commit_timestamp(&self) -> u64 {
        self.commit_timestamp
    }

    pub fn account(&self, id: u128) -> Option<&Account> {
        self.account_slot(id)
            .map(|slot| &self.accounts[slot as usize])
    }

    pub fn transfer(&self, id: u128) -> Option<&Transfer> {
        match self.transfer_lookup(id) {
            TransferLookup::Found(slot) => Some(&self.transfers[slot as usize]),
            _ => None,
        }
    }

    /// The pending status (`STATUS_*`) of a transfer.
    pub fn transfer_status(&self, id: u128) -> Option<u8> {
        match self.transfer_lookup(id) {
            TransferLookup::Found(slot) => Some(self.transfer_status[slot as usize]),
            _ => None,
        }
    }

    /// Accounts in creation (timestamp) order.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// Transfers in creation (timestamp) order.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// The capacity of every growable array: fixed at `new`, so equal before and after any
    /// sequence of commits (the tests check that nothing was reallocated).
    pub fn capacities(&self) -> [usize; 10] {
        [
            self.accounts.capacity(),
            self.account_hashes.capacity(),
            self.account_lists.capacity(),
            self.transfers.capacity(),
            self.transfer_status.capacity(),
            self.orphans.capacity(),
            self.nodes.capacity(),
            self.balances.capacity(),
            self.expiry.capacity(),
            self.undo.capacity(),
        ]
    }

    /// The digest rebuilt from the whole state; always equal to `digest()`.
    pub fn digest_recompute(&self) -> u128 {
        let mut sum: u128 = 0;
        for account in &self.accounts {
            sum = sum.wrapping_add(account_hash(account));
        }
        for (slot, transfer) in self.transfers.iter().enumerate() {
            sum = sum.wrapping_add(transfer_hash(transfer));
            if transfer.flags & transfer_flags::PENDING != 0 {
                sum = sum.wrapping_add(status_hash(transfer.timestamp, self.transfer_status[slot]));
            }
        }
        for &id in &self.orphans {
            sum = sum.wrapping_add(orphan_hash(id));
        }
        for (n, node) in self.nodes.iter().enumerate() {
            if node.balance != NIL {
                let transfer = &self.transfers[n / 2];
                let account_id = if n % 2 == 0 {
                    transfer.debit_account_id
                } else {
                    transfer.credit_account_id
                };
                sum = sum.wrapping_add(balance_hash(
                    transfer.timestamp,
                    account_id,
                    &self.balances[node.balance as usize],
                ));
            }
        }
        finalize(sum)
    }

    fn account_slot(&self, id: u128) -> Option<u32> {
        self.account_index
            .get(id, |slot| self.accounts[slot as usize].id)
    }

    fn transfer_id_of(&self, value: u32) -> u128 {
        transfer_id_of(&self.transfers, &self.orphans, value)
    }

    fn transfer_lookup(&self, id: u128) -> TransferLookup {
        match self.transfer_index.get(id, |v| self.transfer_id_of(v)) {
            None => TransferLookup::Missing,
            Some(v) if v & ORPHAN != 0 => TransferLookup::Orphan,
            Some(slot) => TransferLookup::Found(slot),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Commit.

    fn event_count(&self, operation: LedgerOperation, input: &[u8]) -> usize {
        input.len() / operation.event_size()
    }

    fn create_accounts(&mut self, timestamp: u64, input: &[u8], output: &mut [u8]) -> usize {
        let count = input.len() / RECORD_SIZE;
        let batch_imported =
            count > 0 && read_event::<Account>(input, 0).flags & account_flags::IMPORTED != 0;
        let mut batch = Batch::new(count, output);
        for index in 0..count {
            let event = read_event::<Account>(input, index);
            let timestamp_event = timestamp - count as u64 + index as u64 + 1;
            let linked = event.flags & account_flags::LINKED != 0;
            let result = match batch.before_event(self, index, linked) {
                Some(code) => code,
                None => {
                    self.create_account(timestamp, timestamp_event, batch_imported, &event) as u32
                }
            };
            batch.after_event(self, index, linked, result);
        }
        batch.finish()
    }

    fn create_transfers(&mut self, timestamp: u64, input: &[u8], output: &mut [u8]) -> usize {
        let count = input.len() / RECORD_SIZE;
        let batch_imported =
            count > 0 && read_event::<Transfer>(input, 0).flags & transfer_flags::IMPORTED != 0;
        let mut batch = Batch::new(count, output);
        for index in 0..count.min(PREFETCH_DISTANCE) {
            self.transfer_index.prefetch(read_id(input, index));
        }
        for index in 0..count {
            // The id table is far larger than cache: start loading a later event's bucket.
            if index + PREFETCH_DISTANCE < count {
                self.transfer_index
                    .prefetch(read_id(input, index + PREFETCH_DISTANCE));
            }
            let event = read_event::<Transfer>(input, index);
            let timestamp_event = timestamp - count as u64 + index as u64 + 1;
            let linked = event.flags & transfer_flags::LINKED != 0;
            let result = match batch.before_event(self, index, linked) {
                Some(code) => code,
                None => {
                    let created =
                        self.create_transfer(timestamp, timestamp_event, batch_imported, &event);
                    created.err().unwrap_or(CreateTransferResult::Ok) as u32
                }
            };
            batch.after_event(self, index, linked, result);
            // A transient failure is remembered even when its chain is rolled back, so that
            // retrying the id can never succeed later.
            if let Some(r) = CreateTransferResult::from_u32(result) {
                if r.transient() {
                    self.orphan_insert(event.id);
                }
            }
        }
        batch.finish()
    }

    /// Checks shared by both kinds of event before their own: imports and timestamps.
    fn import_checks(
        imported: bool,
        batch_imported: bool,
        event_timestamp: u64,
        batch_timestamp: u64,
    ) -> Result<(), ImportCheck> {
        if imported != batch_imported {
            return Err(if imported {
                ImportCheck::NotExpected
            } else {
                ImportCheck::Expected
            });
        }
        if imported {
            if !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(&event_timestamp) {
                return Err(ImportCheck::OutOfRange);
            }
            if event_timestamp >= batch_timestamp {
                return Err(ImportCheck::MustNotAdvance);
            }
        } else if event_timestamp != 0 {
            return Err(ImportCheck::MustBeZero);
        }
        Ok(())
    }

    fn create_account(
        &mut self,
        batch_timestamp: u64,
        timestamp_event: u64,
        batch_imported: bool,
        a: &Account,
    ) -> CreateAccountResult {
        use CreateAccountResult as R;
        let imported = a.flags & account_flags::IMPORTED != 0;
        if let Err(check) =
            Self::import_checks(imported, batch_imported, a.timestamp, batch_timestamp)
        {
            return check.into();
        }
        if a.reserved != 0 {
            return R::ReservedField;
        }
        if a.flags & account_flags::PADDING != 0 {
            return R::ReservedFlag;
        }
        if a.id == 0 {
            return R::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(slot) = self.account_slot(a.id) {
            return account_exists(a, &self.accounts[slot as usize]);
        }
        if self.accounts.len() >= self.config.accounts_max as usize {
            return R::AccountsFull;
        }
        if a.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
            && a.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
        {
            return R::FlagsAreMutuallyExclusive;
        }
        if a.debits_pending != 0 {
            return R::DebitsPendingMustBeZero;
        }
        if a.debits_posted != 0 {
            return R::DebitsPostedMustBeZero;
        }
        if a.credits_pending != 0 {
            return R::CreditsPendingMustBeZero;
        }
        if a.credits_posted != 0 {
            return R::CreditsPostedMustBeZero;
        }
        if a.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if a.code == 0 {
            return R::CodeMustNotBeZero;
        }
        let timestamp = if imported {
            if self.import_regresses(a.timestamp, self.accounts.last().map(|l| l.timestamp)) {
                return R::ImportedEventTimestampMustNotRegress;
            }
            if self.transfer_timestamp_exists(a.timestamp) {
                return R::ImportedEventTimestampMustNotRegress;
            }
            a.timestamp
        } else {
            timestamp_event
        };
        self.insert_account(Account {
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            reserved: 0,
            timestamp,
            ..*a
        });
        R::Ok
    }

    fn import_regresses(&self, timestamp: u64, last: Option<u64>) -> bool {
        last.is_some_and(|last| timestamp <= last)
    }

    fn transfer_timestamp_exists(&self, timestamp: u64) -> bool {
        self.transfers
            .binary_search_by_key(&timestamp, |t| t.timestamp)
            .is_ok()
    }

    fn account_timestamp_exists(&self, timestamp: u64) -> bool {
        self.accounts
            .binary_search_by_key(&timestamp, |a| a.timestamp)
            .is_ok()
    }

    /// One `create_transfers` event: `Ok(())`, or the code of the first check it fails. The
    /// order of the checks decides which code a transfer gets; tests.rs and model.rs pin it.
    ///
    /// The phase helpers of this and `post_or_void_pending_transfer` are `#[inline(always)]`:
    /// measured with cachegrind, `commit` (which all of this inlines into) is too large for the
    /// inliner to take them, and out of line they cost ~75 instructions a transfer.
    fn create_transfer(
        &mut self,
        batch_timestamp: u64,
        timestamp_event: u64,
        batch_imported: bool,
        t: &Transfer,
    ) -> Result<(), CreateTransferResult> {
        use transfer_flags as F;
        use CreateTransferResult as R;
        let imported = t.flags & F::IMPORTED != 0;
        Self::import_checks(imported, batch_imported, t.timestamp, batch_timestamp)?;
        if t.flags & F::PADDING != 0 {
            return Err(R::ReservedFlag);
        }
        self.transfer_id_check(t)?;
        if t.flags & (F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER) != 0 {
            return self.post_or_void_pending_transfer(timestamp_event, t);
        }
        let pending = t.flags & F::PENDING != 0;
        Self::transfer_fields_check(t, pending)?;
        let (dr_slot, cr_slot) = self.transfer_accounts(t)?;
        let dr = &self.accounts[dr_slot as usize];
        let cr = &self.accounts[cr_slot as usize];
        let timestamp = if imported {
            self.imported_transfer_timestamp(t, dr, cr)?
        } else {
            timestamp_event
        };
        assert!(timestamp > dr.timestamp && timestamp > cr.timestamp);
        Self::accounts_open_check(dr, cr)?;
        let amount = Self::balancing_amount(t, dr, cr);
        Self::amount_overflow_check(pending, amount, dr, cr)?;
        if timestamp + t.timeout_ns() > TIMESTAMP_MAX {
            return Err(R::OverflowsTimeout);
        }
        Self::account_limits_check(amount, dr, cr)?;
        // Valid: apply. Written out here, not in a helper: measured with cachegrind, a helper
        // taking the two account copies by `&mut` (even inlined) cost ~35 instructions a transfer.
        let mut dr_new = *dr;
        let mut cr_new = *cr;
        if pending {
            dr_new.debits_pending += amount;
            cr_new.credits_pending += amount;
        } else {
            dr_new.debits_posted += amount;
            cr_new.credits_posted += amount;
        }
        if t.flags & F::CLOSING_DEBIT != 0 {
            dr_new.flags |= account_flags::CLOSED;
        }
        if t.flags & F::CLOSING_CREDIT != 0 {
            cr_new.flags |= account_flags::CLOSED;
        }
        let transfer = Transfer {
            amount,
            timestamp,
            ..*t
        };
        let status = if pending { STATUS_PENDING } else { STATUS_NONE };
        let slot = self.insert_transfer(transfer, status, dr_slot, cr_slot, dr_new, cr_new);
        if t.timeout > 0 {
            assert!(pending && !imported);
            self.expiry_push(Expiry {
                expires_at: timestamp + t.timeout_ns(),
                timestamp,
                slot,
            });
        }
        Ok(())
    }

    /// The transfer's id: neither zero nor the maximum, not taken (by a transfer or a failed
    /// attempt), and with room left for one more.
    #[inline(always)]
    fn transfer_id_check(&self, t: &Transfer) -> Result<(), CreateTransferResult> {
        use CreateTransferResult as R;
        if t.id == 0 {
            return Err(R::IdMustNotBeZero);
        }
        if t.id == u128::MAX {
            return Err(R::IdMustNotBeIntMax);
        }
        match self.transfer_lookup(t.id) {
            TransferLookup::Found(slot) => return Err(self.transfer_exists(t, slot)),
            TransferLookup::Orphan => return Err(R::IdAlreadyFailed),
            TransferLookup::Missing => {}
        }
        if self.transfers.len() + self.orphans.len() >= self.config.transfers_max as usize {
            return Err(R::TransfersFull);
        }
        Ok(())
    }

    /// The checks of a new (not post or void) transfer that need only the event itself.
    #[inline(always)]
    fn transfer_fields_check(t: &Transfer, pending: bool) -> Result<(), CreateTransferResult> {
        use CreateTransferResult as R;
        if t.debit_account_id == 0 {
            return Err(R::DebitAccountIdMustNotBeZero);
        }
        if t.debit_account_id == u128::MAX {
            return Err(R::DebitAccountIdMustNotBeIntMax);
        }
        if t.credit_account_id == 0 {
            return Err(R::CreditAccountIdMustNotBeZero);
        }
        if t.credit_account_id == u128::MAX {
            return Err(R::CreditAccountIdMustNotBeIntMax);
        }
        if t.credit_account_id == t.debit_account_id {
            return Err(R::AccountsMustBeDifferent);
        }
        if t.pending_id != 0 {
            return Err(R::PendingIdMustBeZero);
        }
        if !pending {
            if t.timeout != 0 {
                return Err(R::TimeoutReservedForPendingTransfer);
            }
            if t.flags & (transfer_flags::CLOSING_DEBIT | transfer_flags::CLOSING_CREDIT) != 0 {
                return Err(R::ClosingTransferMustBePending);
            }
        }
        if t.ledger == 0 {
            return Err(R::LedgerMustNotBeZero);
        }
        if t.code == 0 {
            return Err(R::CodeMustNotBeZero);
        }
        Ok(())
    }

    /// The transfer's two accounts, by slot: both exist, on the transfer's ledger.
    #[inline(always)]
    fn transfer_accounts(&self, t: &Transfer) -> Result<(u32, u32), CreateTransferResult> {
        use CreateTransferResult as R;
        let Some(dr_slot) = self.account_slot(t.debit_account_id) else {
            return Err(R::DebitAccountNotFound);
        };
        let Some(cr_slot) = self.account_slot(t.credit_account_id) else {
            return Err(R::CreditAccountNotFound);
        };
        let dr_ledger = self.accounts[dr_slot as usize].ledger;
        if dr_ledger != self.accounts[cr_slot as usize].ledger {
            return Err(R::AccountsMustHaveTheSameLedger);
        }
        if t.ledger != dr_ledger {
            return Err(R::TransferMustHaveTheSameLedgerAsAccounts);
        }
        Ok((dr_slot, cr_slot))
    }

    /// An imported transfer keeps its own timestamp, which must be after every transfer's, no
    /// account's, and after both its accounts'.
    #[inline(always)]
    fn imported_transfer_timestamp(
        &self,
        t: &Transfer,
        dr: &Account,
        cr: &Account,
    ) -> Result<u64, CreateTransferResult> {
        use CreateTransferResult as R;
        if self.transfer_import_regresses(t.timestamp) {
            return Err(R::ImportedEventTimestampMustNotRegress);
        }
        if t.timestamp <= dr.timestamp {
            return Err(R::ImportedEventTimestampMustPostdateDebitAccount);
        }
        if t.timestamp <= cr.timestamp {
            return Err(R::ImportedEventTimestampMustPostdateCreditAccount);
        }
        if t.timeout != 0 {
            return Err(R::ImportedEventTimeoutMustBeZero);
        }
        Ok(t.timestamp)
    }

    /// Whether an imported transfer's timestamp is not after the newest transfer's, or is an
    /// account's.
    #[inline]
    fn transfer_import_regresses(&self, timestamp: u64) -> bool {
        self.import_regresses(timestamp, self.transfers.last().map(|l| l.timestamp))
            || self.account_timestamp_exists(timestamp)
    }

    #[inline(always)]
    fn accounts_open_check(dr: &Account, cr: &Account) -> Result<(), CreateTransferResult> {
        if dr.flags & account_flags::CLOSED != 0 {
            return Err(CreateTransferResult::DebitAccountAlreadyClosed);
        }
        if cr.flags & account_flags::CLOSED != 0 {
            return Err(CreateTransferResult::CreditAccountAlreadyClosed);
        }
        Ok(())
    }

    /// The amount a transfer moves: a balancing transfer moves at most what keeps its account's
    /// debits within its credits (or the reverse).
    #[inline(always)]
    fn balancing_amount(t: &Transfer, dr: &Account, cr: &Account) -> u128 {
        let mut amount = t.amount;
        if t.flags & transfer_flags::BALANCING_DEBIT != 0 {
            let balance = dr.debits_posted + dr.debits_pending;
            amount = amount.min(dr.credits_posted.saturating_sub(balance));
        }
        if t.flags & transfer_flags::BALANCING_CREDIT != 0 {
            let balance = cr.credits_posted + cr.credits_pending;
            amount = amount.min(cr.debits_posted.saturating_sub(balance));
        }
        amount
    }

    #[inline(always)]
    fn amount_overflow_check(
        pending: bool,
        amount: u128,
        dr: &Account,
        cr: &Account,
    ) -> Result<(), CreateTransferResult> {
        use CreateTransferResult as R;
        if pending {
            if amount.checked_add(dr.debits_pending).is_none() {
                return Err(R::OverflowsDebitsPending);
            }
            if amount.checked_add(cr.credits_pending).is_none() {
                return Err(R::OverflowsCreditsPending);
            }
        }
        if amount.checked_add(dr.debits_posted).is_none() {
            return Err(R::OverflowsDebitsPosted);
        }
        if amount.checked_add(cr.credits_posted).is_none() {
            return Err(R::OverflowsCreditsPosted);
        }
        // The sum of pending and posted never overflows: every transfer checks it here.
        if amount
            .checked_add(dr.debits_pending + dr.debits_posted)
            .is_none()
        {
            return Err(R::OverflowsDebits);
        }
        if amount
            .checked_add(cr.credits_pending + cr.credits_posted)
            .is_none()
        {
            return Err(R::OverflowsCredits);
        }
        Ok(())
    }

    /// The accounts' `*_must_not_exceed_*` flags.
    #[inline(always)]
    fn account_limits_check(
        amount: u128,
        dr: &Account,
        cr: &Account,
    ) -> Result<(), CreateTransferResult> {
        if dr.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
            && dr.debits_pending + dr.debits_posted + amount > dr.credits_posted
        {
            return Err(CreateTransferResult::ExceedsCredits);
        }
        if cr.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
            && cr.credits_pending + cr.credits_posted + amount > cr.debits_posted
        {
            return Err(CreateTransferResult::ExceedsDebits);
        }
        Ok(())
    }

    /// A post or void of a pending transfer, once the checks every transfer gets (import,
    /// reserved flags, id, room) have passed. The order of the checks decides which code it
    /// gets; tests.rs and model.rs pin it.
    fn post_or_void_pending_transfer(
        &mut self,
        timestamp_event: u64,
        t: &Transfer,
    ) -> Result<(), CreateTransferResult> {
        use transfer_flags as F;
        use CreateTransferResult as R;
        let post = t.flags & F::POST_PENDING_TRANSFER != 0;
        let void = t.flags & F::VOID_PENDING_TRANSFER != 0;
        assert!(post || void);
        Self::post_or_void_fields_check(t, post, void)?;
        let TransferLookup::Found(p_slot) = self.transfer_lookup(t.pending_id) else {
            return Err(R::PendingTransferNotFound);
        };
        let p = self.transfers[p_slot as usize];
        if p.flags & F::PENDING == 0 {
            return Err(R::PendingTransferNotPending);
        }
        let dr_slot = self
            .account_slot(p.debit_account_id)
            .expect("pending debit account");
        let cr_slot = self
            .account_slot(p.credit_account_id)
            .expect("pending credit account");
        let mut dr = self.accounts[dr_slot as usize];
        let mut cr = self.accounts[cr_slot as usize];
        Self::pending_fields_check(t, &p)?;
        let amount = Self::post_or_void_amount(t.amount, void, p.amount);
        if amount > p.amount {
            return Err(R::ExceedsPendingTransferAmount);
        }
        if void && amount < p.amount {
            return Err(R::PendingTransferHasDifferentAmount);
        }
        Self::pending_status_check(self.transfer_status[p_slot as usize], &p, timestamp_event)?;
        let timestamp = if t.flags & F::IMPORTED != 0 {
            if self.transfer_import_regresses(t.timestamp) {
                return Err(R::ImportedEventTimestampMustNotRegress);
            }
            t.timestamp
        } else {
            timestamp_event
        };
        assert!(timestamp > p.timestamp);
        // The only movement a closed account allows is voiding a pending transfer.
        if !void {
            Self::accounts_open_check(&dr, &cr)?;
        }

        // Valid: apply.
        Self::pending_release(&p, &mut dr, &mut cr);
        if post {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        } else {
            Self::pending_reopen(&p, &mut dr, &mut cr);
        }
        let transfer = Self::post_or_void_record(t, &p, amount, timestamp);
        self.set_status(p_slot, if post { STATUS_POSTED } else { STATUS_VOIDED });
        self.insert_transfer(transfer, STATUS_NONE, dr_slot, cr_slot, dr, cr);
        Ok(())
    }

    /// The checks of a post or void that need only the event itself.
    #[inline(always)]
    fn post_or_void_fields_check(
        t: &Transfer,
        post: bool,
        void: bool,
    ) -> Result<(), CreateTransferResult> {
        use transfer_flags as F;
        use CreateTransferResult as R;
        if post && void {
            return Err(R::FlagsAreMutuallyExclusive);
        }
        for exclusive in [
            F::PENDING,
            F::BALANCING_DEBIT,
            F::BALANCING_CREDIT,
            F::CLOSING_DEBIT,
            F::CLOSING_CREDIT,
        ] {
            if t.flags & exclusive != 0 {
                return Err(R::FlagsAreMutuallyExclusive);
            }
        }
        if t.pending_id == 0 {
            return Err(R::PendingIdMustNotBeZero);
        }
        if t.pending_id == u128::MAX {
            return Err(R::PendingIdMustNotBeIntMax);
        }
        if t.pending_id == t.id {
            return Err(R::PendingIdMustBeDifferent);
        }
        if t.timeout != 0 {
            return Err(R::TimeoutReservedForPendingTransfer);
        }
        Ok(())
    }

    /// A post or void may leave the pending transfer's accounts, ledger and code zero; those it
    /// gives must match.
    #[inline(always)]
    fn pending_fields_check(t: &Transfer, p: &Transfer) -> Result<(), CreateTransferResult> {
        use CreateTransferResult as R;
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return Err(R::PendingTransferHasDifferentDebitAccountId);
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return Err(R::PendingTransferHasDifferentCreditAccountId);
        }
        if t.ledger != 0 && t.ledger != p.ledger {
            return Err(R::PendingTransferHasDifferentLedger);
        }
        if t.code != 0 && t.code != p.code {
            return Err(R::PendingTransferHasDifferentCode);
        }
        Ok(())
    }

    /// The amount a post or void moves: its own, or the pending transfer's when it leaves the
    /// amount open (zero for a void, `u128::MAX` for a post).
    #[inline(always)]
    fn post_or_void_amount(amount: u128, void: bool, pending_amount: u128) -> u128 {
        let open = if void {
            amount == 0
        } else {
            amount == u128::MAX
        };
        if open {
            pending_amount
        } else {
            amount
        }
    }

    /// The pending transfer is still pending: not posted, voided or expired, nor due to expire
    /// by `timestamp_event`.
    #[inline(always)]
    fn pending_status_check(
        status: u8,
        p: &Transfer,
        timestamp_event: u64,
    ) -> Result<(), CreateTransferResult> {
        use CreateTransferResult as R;
        match status {
            STATUS_PENDING => {}
            STATUS_POSTED => return Err(R::PendingTransferAlreadyPosted),
            STATUS_VOIDED => return Err(R::PendingTransferAlreadyVoided),
            STATUS_EXPIRED => return Err(R::PendingTransferExpired),
            status => unreachable!("pending transfer with status {status}"),
        }
        if p.timeout != 0 && p.timestamp + p.timeout_ns() <= timestamp_event {
            // Due but not yet swept (the sweep runs before each operation).
            return Err(R::PendingTransferExpired);
        }
        Ok(())
    }

    /// Takes a pending transfer's amount off its accounts' pending balances.
    #[inline(always)]
    fn pending_release(p: &Transfer, dr: &mut Account, cr: &mut Account) {
        dr.debits_pending -= p.amount;
        cr.credits_pending -= p.amount;
    }

    /// Reopens the accounts a pending transfer closed (when it is voided or expires).
    #[inline(always)]
    fn pending_reopen(p: &Transfer, dr: &mut Account, cr: &mut Account) {
        if p.flags & transfer_flags::CLOSING_DEBIT != 0 {
            dr.flags &= !account_flags::CLOSED;
        }
        if p.flags & transfer_flags::CLOSING_CREDIT != 0 {
            cr.flags &= !account_flags::CLOSED;
        }
    }

    /// The transfer a post or void stores: the pending transfer's accounts, ledger and code, and
    /// its user data wherever the event leaves them zero.
    #[inline(always)]
    fn post_or_void_record(t: &Transfer, p: &Transfer, amount: u128, timestamp: u64) -> Transfer {
        Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: t.pending_id,
            user_data_128: inherit(t.user_data_128, p.user_data_128),
            user_data_64: inherit(t.user_data_64.into(), p.user_data_64.into()) as u64,
            user_data_32: inherit(t.user_data_32.into(), p.user_data_32.into()) as u32,
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags,
            timestamp,
        }
    }

    /// The result for an event whose id a transfer already has: `exists` when the event is
    /// that transfer again (a retry), else the first field that differs.
    fn transfer_exists(&self, t: &Transfer, slot: u32) -> CreateTransferResult {
        use transfer_flags as F;
        use CreateTransferResult as R;
        let e = &self.transfers[slot as usize];
        if t.flags != e.flags {
            return R::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return R::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return R::ExistsWithDifferentTimeout;
        }
        if t.flags & (F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER) == 0 {
            return Self::new_transfer_exists(t, e);
        }
        let TransferLookup::Found(p_slot) = self.transfer_lookup(e.pending_id) else {
            unreachable!("a post/void exists without its pending transfer");
        };
        Self::post_or_void_exists(t, e, &self.transfers[p_slot as usize])
    }

    /// `transfer_exists` for a transfer that is not a post or void: every field must match.
    fn new_transfer_exists(t: &Transfer, e: &Transfer) -> CreateTransferResult {
        use transfer_flags as F;
        use CreateTransferResult as R;
        if t.debit_account_id != e.debit_account_id {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if t.credit_account_id != e.credit_account_id {
            return R::ExistsWithDifferentCreditAccountId;
        }
        // A balancing transfer's amount is an upper bound: a retry matches if it allows at
        // least what was moved.
        if t.flags & (F::BALANCING_DEBIT | F::BALANCING_CREDIT) != 0 {
            if t.amount < e.amount {
                return R::ExistsWithDifferentAmount;
            }
        } else if t.amount != e.amount {
            return R::ExistsWithDifferentAmount;
        }
        if t.user_data_128 != e.user_data_128 {
            return R::ExistsWithDifferentUserData128;
        }
        if t.user_data_64 != e.user_data_64 {
            return R::ExistsWithDifferentUserData64;
        }
        if t.user_data_32 != e.user_data_32 {
            return R::ExistsWithDifferentUserData32;
        }
        if t.ledger != e.ledger {
            return R::ExistsWithDifferentLedger;
        }
        if t.code != e.code {
            return R::ExistsWithDifferentCode;
        }
        R::Exists
    }

    /// `transfer_exists` for a post or void `e` of pending transfer `p`: a field the event
    /// leaves zero (or an amount it leaves open) stands for the value `e` took from `p`.
    fn post_or_void_exists(t: &Transfer, e: &Transfer, p: &Transfer) -> CreateTransferResult {
        use CreateTransferResult as R;
        if t.debit_account_id != 0 && t.debit_account_id != e.debit_account_id {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != e.credit_account_id {
            return R::ExistsWithDifferentCreditAccountId;
        }
        let void = t.flags & transfer_flags::VOID_PENDING_TRANSFER != 0;
        if Self::post_or_void_amount(t.amount, void, p.amount) != e.amount {
            return R::ExistsWithDifferentAmount;
        }
        if inherit(t.user_data_128, p.user_data_128) != e.user_data_128 {
            return R::ExistsWithDifferentUserData128;
        }
        if inherit(t.user_data_64.into(), p.user_data_64.into()) != u128::from(e.user_data_64) {
            return R::ExistsWithDifferentUserData64;
        }
        if inherit(t.user_data_32.into(), p.user_data_32.into()) != u128::from(e.user_data_32) {
            return R::ExistsWithDifferentUserData32;
        }
        if t.ledger != 0 && t.ledger != e.ledger {
            return R::ExistsWithDifferentLedger;
        }
        if t.code != 0 && t.code != e.code {
            return R::ExistsWithDifferentCode;
        }
        R::Exists
    }

    // ---------------------------------------------------------------------------------------
    // State changes. Each keeps the digest current and, inside a linked chain, logs what
    // rollback needs.

    fn insert_account(&mut self, account: Account) {
        assert!(self.accounts.len() < self.config.accounts_max as usize);
        if let Some(last) = self.accounts.last() {
            assert!(last.timestamp < account.timestamp);
        }
        let slot = self.accounts.len() as u32;
        self.account_index.insert(account.id, slot);
        self.accounts.push(account);
        self.account_lists.push(AccountList {
            head: NIL,
            tail: NIL,
        });
        let hash = account_hash(&account);
        self.account_hashes.push(hash);
        self.digest_sum = self.digest_sum.wrapping_add(hash);
    }

    fn set_account(&mut self, slot: u32, account: Account) {
        let old = self.accounts[slot as usize];
        assert_eq!(old.id, account.id);
        if old == account {
            return;
        }
        if self.chain.is_some() {
            self.undo_push(Undo::Account { slot, old });
        }
        let hash = account_hash(&account);
        debug_assert_eq!(self.account_hashes[slot as usize], account_hash(&old));
        self.digest_sum = self
            .digest_sum
            .wrapping_sub(self.account_hashes[slot as usize])
            .wrapping_add(hash);
        self.accounts[slot as usize] = account;
        self.account_hashes[slot as usize] = hash;
    }

    fn set_status(&mut self, slot: u32, status: u8) {
        let old = self.transfer_status[slot as usize];
        assert_eq!(old, STATUS_PENDING);
        assert_ne!(status, STATUS_PENDING);
        if self.chain.is_some() {
            self.undo_push(Undo::Status { slot, old });
        }
        let timestamp = self.transfers[slot as usize].timestamp;
        self.digest_sum = self
            .digest_sum
            .wrapping_sub(status_hash(timestamp, old))
            .wrapping_add(status_hash(timestamp, status));
        self.transfer_status[slot as usize] = status;
    }

    fn undo_push(&mut self, undo: Undo) {
        assert!(
            self.undo.len() < self.events_max * UNDO_PER_EVENT,
            "undo log over capacity"
        );
        self.undo.push(undo);
    }

    /// Stores a valid transfer and its effect on both accounts; returns its slot.
    fn insert_transfer(
        &mut self,
        transfer: Transfer,
        status: u8,
        dr_slot: u32,
        cr_slot: u32,
        dr_new: Account,
        cr_new: Account,
    ) -> u32 {
        assert!(self.transfers.len() + self.orphans.len() < self.config.transfers_max as usize);
        assert_ne!(dr_slot, cr_slot);
        if let Some(last) = self.transfers.last() {
            assert!(last.timestamp < transfer.timestamp);
        }
        let slot = self.transfers.len() as u32;
        self.transfer_index.insert(transfer.id, slot);
        self.transfers.push(transfer);
        self.transfer_status.push(status);
        self.digest_sum = self.digest_sum.wrapping_add(transfer_hash(&transfer));
        if transfer.flags & transfer_flags::PENDING != 0 {
            self.digest_sum = self
                .digest_sum
                .wrapping_add(status_hash(transfer.timestamp, status));
        }
        self.set_account(dr_slot, dr_new);
        self.set_account(cr_slot, cr_new);
        self.link_node(dr_slot, transfer.timestamp);
        self.link_node(cr_slot, transfer.timestamp);
        slot
    }

    /// Appends the next node (debit side, then credit side) to the account's list, with the
    /// account's balance after the transfer if it keeps history.
    fn link_node(&mut self, account_slot: u32, timestamp: u64) {
        let node = self.nodes.len() as u32;
        let list = self.account_lists[account_slot as usize];
        let account = &self.accounts[account_slot as usize];
        let balance = if account.flags & account_flags::HISTORY != 0 {
            let record = BalanceRecord {
                debits_pending: account.debits_pending,
                debits_posted: account.debits_posted,
                credits_pending: account.credits_pending,
                credits_posted: account.credits_posted,
            };
            self.digest_sum = self
                .digest_sum
                .wrapping_add(balance_hash(timestamp, account.id, &record));
            self.balances.push(record);
            self.balances.len() as u32 - 1
        } else {
            NIL
        };
        self.nodes.push(Node {
            prev: list.tail,
            next: NIL,
            balance,
        });
        if list.tail == NIL {
            self.account_lists[account_slot as usize].head = node;
        } else {
            self.nodes[list.tail as usize].next = node;
        }
        self.account_lists[account_slot as usize].tail = node;
    }

    /// Removes the newest node of the account's list (rollback).
    fn unlink_tail(&mut self, account_id: u128, node: u32) {
        let slot = self
            .account_slot(account_id)
            .expect("account of a transfer") as usize;
        let list = &mut self.account_lists[slot];
        assert_eq!(list.tail, node);
        let prev = self.nodes[node as usize].prev;
        list.tail = prev;
        if prev == NIL {
            list.head = NIL;
        } else {
            self.nodes[prev as usize].next = NIL;
        }
    }

    fn orphan_insert(&mut self, id: u128) {
        assert!(self.chain.is_none());
        assert!(matches!(self.transfer_lookup(id), TransferLookup::Missing));
        assert!(self.transfers.len() + self.orphans.len() < self.config.transfers_max as usize);
        let index = self.orphans.len() as u32;
        self.transfer_index.insert(id, ORPHAN | index);
        self.orphans.push(id);
        self.digest_sum = self.digest_sum.wrapping_add(orphan_hash(id));
    }

    fn expiry_push(&mut self, expiry: Expiry) {
        if self.expiry.len() >= self.config.transfers_max as usize {
            // Full of entries for transfers since resolved or rolled back: drop those. Live
            // entries belong to distinct older transfers, so room is left for this one.
            let (transfers, status) = (&self.transfers, &self.transfer_status);
            self.expiry
                .retain(|Reverse(e)| expiry_live(transfers, status, e));
            assert!(self.expiry.len() < self.config.transfers_max as usize);
        }
        self.expiry.push(Reverse(expiry));
    }

    /// Voids, by timeout, every pending transfer that expired at or before `now`, oldest
    /// expiry first. Runs at the start of every committed operation, with `now` just before the
    /// operation's first timestamp, so every replica expires the same transfers at the same op.
    fn expire_pending_transfers(&mut self, now: u64) {
        assert!(self.chain.is_none());
        while let Some(&Reverse(expiry)) = self.expiry.peek() {
            if expiry.expires_at > now {
                break;
            }
            self.expiry.pop();
            if !expiry_live(&self.transfers, &self.transfer_status, &expiry) {
                continue;
            }
            let p = self.transfers[expiry.slot as usize];
            let dr_slot = self
                .account_slot(p.debit_account_id)
                .expect("debit account");
            let cr_slot = self
                .account_slot(p.credit_account_id)
                .expect("credit account");
            let mut dr = self.accounts[dr_slot as usize];
            let mut cr = self.accounts[cr_slot as usize];
            // An expiry is a void by timeout.
            Self::pending_release(&p, &mut dr, &mut cr);
            Self::pending_reopen(&p, &mut dr, &mut cr);
            self.set_status(expiry.slot, STATUS_EXPIRED);
            self.set_account(dr_slot, dr);
            self.set_account(cr_slot, cr);
        }
    }

    fn chain_open(&mut self) {
        assert!(self.chain.is_none());
        assert!(self.undo.is_empty());
        self.chain = Some(ChainStart {
            accounts: self.accounts.len(),
            transfers: self.transfers.len(),
            balances: self.balances.len(),
            digest: self.digest_sum,
        });
    }

    fn chain_commit(&mut self) {
        assert!(self.chain.is_some());
        self.chain = None;
        self.undo.clear();
    }

    /// Undoes every effect of the open chain.
    fn chain_rollback(&mut self) {
        let start = self.chain.take().expect("an open chain");
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Account { slot, old } => {
                    self.accounts[slot as usize] = old;
                    self.account_hashes[slot as usize] = account_hash(&old);
                }
                Undo::Status { slot, old } => self.transfer_status[slot as usize] = old,
            }
        }
        while self.transfers.len() > start.transfers {
            let slot = self.transfers.len() - 1;
            let transfer = self.transfers[slot];
            self.unlink_tail(transfer.credit_account_id, 2 * slot as u32 + 1);
            self.unlink_tail(transfer.debit_account_id, 2 * slot as u32);
            self.nodes.truncate(2 * slot);
            self.transfer_index.remove(transfer.id, |v| {
                transfer_id_of(&self.transfers, &self.orphans, v)
            });
            self.transfers.pop();
            self.transfer_status.pop();
        }
        self.balances.truncate(start.balances);
        while self.accounts.len() > start.accounts {
            let id = self.accounts[self.accounts.len() - 1].id;
            let accounts = &self.accounts;
            self.account_index
                .remove(id, |slot| accounts[slot as usize].id);
            self.accounts.pop();
            self.account_hashes.pop();
            self.account_lists.pop();
        }
        self.digest_sum = start.digest;
    }

    // ---------------------------------------------------------------------------------------
    // Queries.

    fn lookup_accounts(&self, input: &[u8], output: &mut [u8]) -> usize {
        let mut out = RecordWriter::new(output, usize::MAX);
        for index in 0..input.len() / 16 {
            let id = read_event::<u128>(input, index);
            if let Some(account) = self.account(id) {
                if !out.push(account.as_bytes()) {
                    break;
                }
            }
        }
        out.len()
    }

    fn lookup_transfers(&self, input: &[u8], output: &mut [u8]) -> usize {
        let mut out = RecordWriter::new(output, usize::MAX);
        for index in 0..input.len() / 16 {
            let id = read_event::<u128>(input, index);
            if let Some(transfer) = self.transfer(id) {
                if !out.push(transfer.as_bytes()) {
                    break;
                }
            }
        }
        out.len()
    }

    fn get_account_transfers(&self, filter: &AccountFilter, output: &mut [u8]) -> usize {
        if !account_filter_valid(filter) {
            return 0;
        }
        let Some(slot) = self.account_slot(filter.account_id) else {
            return 0;
        };
        let mut out = RecordWriter::new(output, filter.limit as usize);
        self.scan_account(slot, filter, |node, transfer| {
            let _ = node;
            out.push(transfer.as_bytes())
        });
        out.len()
    }

    fn get_account_balances(&self, filter: &AccountFilter, output: &mut [u8]) -> usize {
        if !account_filter_valid(filter) {
            return 0;
        }
        let Some(slot) = self.account_slot(filter.account_id) else {
            return 0;
        };
        if self.accounts[slot as usize].flags & account_flags::HISTORY == 0 {
            return 0;
        }
        let mut out = RecordWriter::new(output, filter.limit as usize);
        self.scan_account(slot, filter, |node, transfer| {
            let record = &self.balances[node.balance as usize];
            let balance = AccountBalance {
                debits_pending: record.debits_pending,
                debits_posted: record.debits_posted,
                credits_pending: record.credits_pending,
                credits_posted: record.credits_posted,
                timestamp: transfer.timestamp,
                reserved: [0; 56],
            };
            out.push(balance.as_bytes())
        });
        out.len()
    }

    /// Visits the account's transfers that match the filter, in the filter's order, until
    /// `visit` returns false.
    fn scan_account(
        &self,
        account_slot: u32,
        filter: &AccountFilter,
        mut visit: impl FnMut(&Node, &Transfer) -> bool,
    ) {
        let (min, max) = timestamp_range(filter.timestamp_min, filter.timestamp_max);
        let reversed = filter.flags & account_filter_flags::REVERSED != 0;
        let list = self.account_lists[account_slot as usize];
        let mut n = self.seek(list, min, max, reversed);
        while n != NIL {
            let node = &self.nodes[n as usize];
            let transfer = &self.transfers[n as usize / 2];
            let debit_side = n % 2 == 0;
            if reversed && transfer.timestamp < min || !reversed && transfer.timestamp > max {
                break;
            }
            let side_wanted = if debit_side {
                filter.flags & account_filter_flags::DEBITS != 0
            } else {
                filter.flags & account_filter_flags::CREDITS != 0
            };
            let matches = side_wanted
                && (min..=max).contains(&transfer.timestamp)
                && (filter.user_data_128 == 0 || filter.user_data_128 == transfer.user_data_128)
                && (filter.user_data_64 == 0 || filter.user_data_64 == transfer.user_data_64)
                && (filter.user_data_32 == 0 || filter.user_data_32 == transfer.user_data_32)
                && (filter.code == 0 || filter.code == transfer.code);
            if matches && !visit(node, transfer) {
                break;
            }
            n = if reversed { node.prev } else { node.next };
        }
    }

    /// The first node of the list to visit: the oldest at or after `min` (or the newest at or
    /// before `max` when reversed). Walks from whichever end of the list is likely nearer (the
    /// list is in timestamp order), so paging through a long history stays cheap at both ends.
    fn seek(&self, list: AccountList, min: u64, max: u64, reversed: bool) -> u32 {
        if list.head == NIL {
            return NIL;
        }
        let ts = |n: u32| self.transfers[n as usize / 2].timestamp;
        let (first, last) = (ts(list.head), ts(list.tail));
        let target = if reversed { max } else { min };
        let from_tail = target.saturating_sub(first) > last.saturating_sub(target);
        if !reversed {
            if from_tail {
                // Walk back to the last node before `min`; its successor is the start.
                let mut n = list.tail;
                while n != NIL && ts(n) >= min {
                    let prev = self.nodes[n as usize].prev;
                    if prev == NIL || ts(prev) < min {
                        return n;
                    }
                    n = prev;
                }
                NIL
            } else {
                let mut n = list.head;
                while n != NIL && ts(n) < min {
                    n = self.nodes[n as usize].next;
                }
                n
            }
        } else if from_tail {
            let mut n = list.tail;
            while n != NIL && ts(n) > max {
                n = self.nodes[n as usize].prev;
            }
            n
        } else {
            let mut n = list.head;
            while n != NIL && ts(n) <= max {
                let next = self.nodes[n as usize].next;
                if next == NIL || ts(next) > max {
                    return n;
                }
                n = next;
            }
            NIL
        }
    }

    fn query_accounts(&self, filter: &QueryFilter, output: &mut [u8]) -> usize {
        query_records(&self.accounts, filter, output, |a| {
            (
                a.timestamp,
                a.user_data_128,
                a.user_data_64,
                a.user_data_32,
                a.ledger,
                a.code,
            )
        })
    }

    fn query_transfers(&self, filter: &QueryFilter, output: &mut [u8]) -> usize {
        query_records(&self.transfers, filter, output, |t| {
            (
                t.timestamp,
                t.user_data_128,
                t.user_data_64,
                t.user_data_32,
                t.ledger,
                t.code,
            )
        })
    }
}

impl StateMachine for Ledger {
    fn input_valid(&self, operation: u8, input: &[u8]) -> bool {
        let Some(operation) = LedgerOperation::from_u8(operation) else {
            return false;
        };
        if input.len() > self.config.body_size_max() {
            return false;
        }
        let size = operation.event_size();
        if operation.is_batchable() {
            // An empty batch is valid (and does nothing), as in TigerBeetle.
            input.len() % size == 0 && input.len() / size <= self.events_max
        } else {
            input.len() == size
        }
    }

    fn prepare_timestamps(&self, operation: u8, input: &[u8]) -> u64 {
        match LedgerOperation::from_u8(operation) {
            Some(op @ (LedgerOperation::CreateAccounts | LedgerOperation::CreateTransfers)) => {
                self.event_count(op, input) as u64
            }
            _ => 0,
        }
    }

    fn commit(
        &mut self,
        _client: u128,
        _op: u64,
        timestamp: u64,
        operation: u8,
        input: &[u8],
        output: &mut [u8],
    ) -> usize {
        assert!(
            self.input_valid(operation, input),
            "committing an invalid input"
        );
        assert!(self.restore.is_none(), "committing during a restore");
        let operation = LedgerOperation::from_u8(operation).expect("a ledger operation");
        let count = self.prepare_timestamps(operation as u8, input);
        // The primary reserved (timestamp - count, timestamp] for this operation's events.
        assert!(timestamp > self.commit_timestamp);
        assert!(timestamp <= TIMESTAMP_MAX);
        assert!(timestamp >= count);
        assert!(timestamp - count >= self.commit_timestamp);
        assert!(output.len() >= self.config.body_size_max());
        let output = &mut output[..self.config.body_size_max()];
        self.expire_pending_transfers(timestamp - count);
        let size = match operation {
            LedgerOperation::CreateAccounts => self.create_accounts(timestamp, input, output),
            LedgerOperation::CreateTransfers => self.create_transfers(timestamp, input, output),
            LedgerOperation::LookupAccounts => self.lookup_accounts(input, output),
            LedgerOperation::LookupTransfers => self.lookup_transfers(input, output),
            LedgerOperation::GetAccountTransfers => {
                self.get_account_transfers(&read_event(input, 0), output)
            }
            LedgerOperation::GetAccountBalances => {
                self.get_account_balances(&read_event(input, 0), output)
            }
            LedgerOperation::QueryAccounts => self.query_accounts(&read_event(input, 0), output),
            LedgerOperation::QueryTransfers => self.query_transfers(&read_event(input, 0), output),
        };
        assert!(self.chain.is_none() && self.undo.is_empty());
        self.commit_timestamp = timestamp;
        size
    }

    fn digest(&self) -> u128 {
        finalize(self.digest_sum)
    }

    // The snapshot's format and the restore are in `snapshot.rs`.

    fn snapshot_size(&self) -> u64 {
        self.snapshot_len()
    }

    fn snapshot_read(&self, offset: u64, out: &mut [u8]) {
        self.snapshot_copy(offset, out)
    }

    fn snapshot_freeze(&mut self) {
        Ledger::snapshot_freeze(self)
    }

    fn snapshot_thaw(&mut self) {
        Ledger::snapshot_thaw(self)
    }

    fn restore_begin(&mut self, size: u64) {
        self.restore_start(size)
    }

    fn restore_write(&mut self, bytes: &[u8]) {
        self.restore_append(bytes)
    }

    fn restore_finish(&mut self) -> Result<(), String> {
        self.restore_complete()
    }
}

enum ImportCheck {
    NotExpected,
    Expected,
    MustBeZero,
    OutOfRange,
    MustNotAdvance,
}

/// Both kinds of event name the import failures alike.
impl From<ImportCheck> for CreateAccountResult {
    fn from(check: ImportCheck) -> CreateAccountResult {
        match check {
            ImportCheck::NotExpected => CreateAccountResult::ImportedEventNotExpected,
            ImportCheck::Expected => CreateAccountResult::ImportedEventExpected,
            ImportCheck::MustBeZero => CreateAccountResult::TimestampMustBeZero,
            ImportCheck::OutOfRange => CreateAccountResult::ImportedEventTimestampOutOfRange,
            ImportCheck::MustNotAdvance => {
                CreateAccountResult::ImportedEventTimestampMustNotAdvance
            }
        }
    }
}

impl From<ImportCheck> for CreateTransferResult {
    fn from(check: ImportCheck) -> CreateTransferResult {
        match check {
            ImportCheck::NotExpected => CreateTransferResult::ImportedEventNotExpected,
            ImportCheck::Expected => CreateTransferResult::ImportedEventExpected,
            ImportCheck::MustBeZero => CreateTransferResult::TimestampMustBeZero,
            ImportCheck::OutOfRange => CreateTransferResult::ImportedEventTimestampOutOfRange,
            ImportCheck::MustNotAdvance => {
                CreateTransferResult::ImportedEventTimestampMustNotAdvance
            }
        }
    }
}

/// The linked-chain bookkeeping of one create batch, and its sparse result list.
struct Batch<'a> {
    count: usize,
    chain: Option<usize>,
    chain_broken: bool,
    output: &'a mut [u8],
    results: usize,
}

/// `linked_event_failed` and `linked_event_chain_open` have the same values for both kinds.
const LINKED_EVENT_FAILED: u32 = CreateAccountResult::LinkedEventFailed as u32;
const LINKED_EVENT_CHAIN_OPEN: u32 = CreateAccountResult::LinkedEventChainOpen as u32;
const _: () = assert!(LINKED_EVENT_FAILED == CreateTransferResult::LinkedEventFailed as u32);
const _: () = assert!(LINKED_EVENT_CHAIN_OPEN == CreateTransferResult::LinkedEventChainOpen as u32);

impl<'a> Batch<'a> {
    fn new(count: usize, output: &'a mut [u8]) -> Batch<'a> {
        assert!(output.len() >= count * core::mem::size_of::<CreateResult>());
        Batch {
            count,
            chain: None,
            chain_broken: false,
            output,
            results: 0,
        }
    }

    /// Opens a chain at a linked event; returns the result when the chain decides it.
    fn before_event(&mut self, ledger: &mut Ledger, index: usize, linked: bool) -> Option<u32> {
        if linked {
            if self.chain.is_none() {
                self.chain = Some(index);
                assert!(!self.chain_broken);
                ledger.chain_open();
            }
            if index == self.count - 1 {
                return Some(LINKED_EVENT_CHAIN_OPEN);
            }
        }
        if self.chain_broken {
            return Some(LINKED_EVENT_FAILED);
        }
        None
    }

    fn after_event(&mut self, ledger: &mut Ledger, index: usize, linked: bool, result: u32) {
        if result != 0 {
            if let Some(start) = self.chain {
                if !self.chain_broken {
                    self.chain_broken = true;
                    ledger.chain_rollback();
                    for earlier in start..index {
                        self.push(earlier, LINKED_EVENT_FAILED);
                    }
                }
            }
            self.push(index, result);
        }
        if self.chain.is_some() && (!linked || result == LINKED_EVENT_CHAIN_OPEN) {
            if !self.chain_broken {
                ledger.chain_commit();
            }
            self.chain = None;
            self.chain_broken = false;
        }
    }

    fn push(&mut self, index: usize, result: u32) {
        let entry = CreateResult {
            index: index as u32,
            result,
        };
        let at = self.results * core::mem::size_of::<CreateResult>();
        self.output[at..at + core::mem::size_of::<CreateResult>()]
            .copy_from_slice(entry.as_bytes());
        self.results += 1;
    }

    fn finish(self) -> usize {
        assert!(self.chain.is_none() && !self.chain_broken);
        self.results * core::mem::size_of::<CreateResult>()
    }
}

/// Appends 128-byte records to a reply, up to a limit and the reply's capacity.
struct RecordWriter<'a> {
    output: &'a mut [u8],
    count: usize,
    limit: usize,
}

impl<'a> RecordWriter<'a> {
    fn new(output: &'a mut [u8], limit: usize) -> RecordWriter<'a> {
        let limit = limit.min(output.len() / RECORD_SIZE);
        RecordWriter {
            output,
            count: 0,
            limit,
        }
    }

    /// Appends a record; false once no more will fit.
    fn push(&mut self, record: &[u8]) -> bool {
        assert_eq!(record.len(), RECORD_SIZE);
        if self.count == self.limit {
            return false;
        }
        let at = self.count * RECORD_SIZE;
        self.output[at..at + RECORD_SIZE].copy_from_slice(record);
        self.count += 1;
        self.count < self.limit
    }

    fn len(&self) -> usize {
        self.count * RECORD_SIZE
    }
}

/// How many events ahead `create_transfers` prefetches the transfer-id table.
const PREFETCH_DISTANCE: usize = 16;

/// The id (first 16 bytes) of create event `index`.
fn read_id(input: &[u8], index: usize) -> u128 {
    let at = index * RECORD_SIZE;
    u128::from_le_bytes(input[at..at + 16].try_into().expect("16 bytes"))
}

/// Reads event `index` of a batch (by copy: the body need not be aligned).
fn read_event<T: FromBytes>(input: &[u8], index: usize) -> T {
    let size = core::mem::size_of::<T>();
    T::read_from_bytes(&input[index * size..(index + 1) * size]).expect("event size")
}

/// A post or void's field: its own, or the pending transfer's where the event leaves it zero.
#[inline]
fn inherit(mine: u128, pending: u128) -> u128 {
    if mine != 0 {
        mine
    } else {
        pending
    }
}

fn transfer_id_of(transfers: &[Transfer], orphans: &[u128], value: u32) -> u128 {
    if value & ORPHAN != 0 {
        orphans[(value & !ORPHAN) as usize]
    } else {
        transfers[value as usize].id
    }
}

fn expiry_live(transfers: &[Transfer], status: &[u8], e: &Expiry) -> bool {
    let Some(t) = transfers.get(e.slot as usize) else {
        return false;
    };
    t.timestamp == e.timestamp
        && t.timeout != 0
        && t.timestamp + t.timeout_ns() == e.expires_at
        && status[e.slot as usize] == STATUS_PENDING
}

fn account_exists(a: &Account, e: &Account) -> CreateAccountResult {
    use CreateAccountResult as R;
    if a.flags != e.flags {
        return R::ExistsWithDifferentFlags;
    }
    if a.user_data_128 != e.user_data_128 {
        return R::ExistsWithDifferentUserData128;
    }
    if a.user_data_64 != e.user_data_64 {
        return R::ExistsWithDifferentUserData64;
    }
    if a.user_data_32 != e.user_data_32 {
        return R::ExistsWithDifferentUserData32;
    }
    if a.ledger != e.ledger {
        return R::ExistsWithDifferentLedger;
    }
    if a.code != e.code {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}

fn timestamp_valid_or_zero(timestamp: u64) -> bool {
    timestamp == 0 || (TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(&timestamp)
}

/// The inclusive range a filter selects (0 means unbounded).
fn timestamp_range(min: u64, max: u64) -> (u64, u64) {
    (
        if min == 0 { TIMESTAMP_MIN } else { min },
        if max == 0 { TIMESTAMP_MAX } else { max },
    )
}

pub fn account_filter_valid(f: &AccountFilter) -> bool {
    f.account_id != 0
        && f.account_id != u128::MAX
        && timestamp_valid_or_zero(f.timestamp_min)
        && timestamp_valid_or_zero(f.timestamp_max)
        && (f.timestamp_max == 0 || f.timestamp_min <= f.timestamp_max)
        && f.limit != 0
        && f.flags & (account_filter_flags::DEBITS | account_filter_flags::CREDITS) != 0
        && f.flags & account_filter_flags::PADDING == 0
        && f.reserved.iter().all(|&b| b == 0)
}

pub fn query_filter_valid(f: &QueryFilter) -> bool {
    timestamp_valid_or_zero(f.timestamp_min)
        && timestamp_valid_or_zero(f.timestamp_max)
        && (f.timestamp_max == 0 || f.timestamp_min <= f.timestamp_max)
        && f.limit != 0
        && f.flags & query_filter_flags::PADDING == 0
        && f.reserved.iter().all(|&b| b == 0)
}

fn account_hash(account: &Account) -> u128 {
    hash_record(
        KIND_ACCOUNT,
        account.as_bytes().try_into().expect("128 bytes"),
    )
}

fn transfer_hash(transfer: &Transfer) -> u128 {
    hash_record(
        KIND_TRANSFER,
        transfer.as_bytes().try_into().expect("128 bytes"),
    )
}

fn status_hash(timestamp: u64, status: u8) -> u128 {
    hash_words(KIND_PENDING_STATUS, &[timestamp, u64::from(status)])
}

fn orphan_hash(id: u128) -> u128 {
    hash_words(KIND_ORPHAN, &[id as u64, (id >> 64) as u64])
}

fn balance_hash(timestamp: u64, account_id: u128, b: &BalanceRecord) -> u128 {
    let w = |x: u128| [x as u64, (x >> 64) as u64];
    let [a0, a1] = w(account_id);
    let [b0, b1] = w(b.debits_pending);
    let [c0, c1] = w(b.debits_posted);
    let [d0, d1] = w(b.credits_pending);
    let [e0, e1] = w(b.credits_posted);
    hash_words(
        KIND_BALANCE,
        &[timestamp, a0, a1, b0, b1, c0, c1, d0, d1, e0, e1],
    )
}

/// query_accounts / query_transfers over records kept in timestamp order: the filter's timestamp
/// range by binary search, then every record whose user data, ledger and code match (zero in the
/// filter matches anything), up to `limit`, oldest or newest first.
fn query_records<T: IntoBytes + Immutable>(
    records: &[T],
    filter: &QueryFilter,
    output: &mut [u8],
    fields: impl Fn(&T) -> (u64, u128, u64, u32, u32, u16),
) -> usize {
    if !query_filter_valid(filter) {
        return 0;
    }
    let (min, max) = timestamp_range(filter.timestamp_min, filter.timestamp_max);
    let lo = records.partition_point(|r| fields(r).0 < min);
    let hi = records.partition_point(|r| fields(r).0 <= max);
    let matches = |r: &&T| {
        let (_, user_data_128, user_data_64, user_data_32, ledger, code) = fields(r);
        (filter.user_data_128 == 0 || filter.user_data_128 == user_data_128)
            && (filter.user_data_64 == 0 || filter.user_data_64 == user_data_64)
            && (filter.user_data_32 == 0 || filter.user_data_32 == user_data_32)
            && (filter.ledger == 0 || filter.ledger == ledger)
            && (filter.code == 0 || filter.code == code)
    };
    let range = &records[lo..hi.max(lo)];
    let mut out = RecordWriter::new(output, filter.limit as usize);
    let reversed = filter.flags & query_filter_flags::REVERSED != 0;
    let mut push_all = |iter: &mut dyn Iterator<Item = &T>| {
        for r in iter.filter(matches) {
            if !out.push(r.as_bytes()) {
                break;
            }
        }
    };
    if reversed {
        push_all(&mut range.iter().rev());
    } else {
        push_all(&mut range.iter());
    }
    out.len()
}
