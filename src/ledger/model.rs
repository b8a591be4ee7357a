//! The reference model: the ledger's semantics written as plainly as possible, for the
//! differential test. Maps instead of hand-made tables, a linked chain undone by restoring a
//! clone of the whole state, every query a linear scan, pending expiry a scan over all
//! transfers. It follows the order of checks in TigerBeetle's documentation
//! (reference/requests/create_accounts.md and create_transfers.md), written separately from
//! `state_machine.rs` so that the two can disagree.

use std::collections::{HashMap, HashSet};

use zerocopy::{FromBytes, IntoBytes};

use super::types::*;
use super::LedgerOperation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    None,
    Pending,
    Posted,
    Voided,
    Expired,
}

impl Status {
    pub fn code(self) -> u8 {
        match self {
            Status::None => 0,
            Status::Pending => 1,
            Status::Posted => 2,
            Status::Voided => 3,
            Status::Expired => 4,
        }
    }
}

#[derive(Clone)]
pub struct Model {
    pub accounts_max: usize,
    pub transfers_max: usize,
    pub events_max: usize,
    pub reply_max: usize,
    pub accounts: Vec<Account>,
    pub account_by_id: HashMap<u128, usize>,
    pub transfers: Vec<Transfer>,
    pub transfer_by_id: HashMap<u128, usize>,
    pub status: HashMap<u128, Status>,
    pub failed_ids: HashSet<u128>,
    /// (transfer timestamp, account id, balance after) for accounts with history.
    pub history: Vec<(u64, u128, AccountBalance)>,
}

fn has(flags: u16, flag: u16) -> bool {
    flags & flag != 0
}

impl Model {
    pub fn new(accounts_max: usize, transfers_max: usize, message_size_max: usize) -> Model {
        let body = message_size_max - 256;
        Model {
            accounts_max,
            transfers_max,
            events_max: body / 128,
            reply_max: body,
            accounts: Vec::new(),
            account_by_id: HashMap::new(),
            transfers: Vec::new(),
            transfer_by_id: HashMap::new(),
            status: HashMap::new(),
            failed_ids: HashSet::new(),
            history: Vec::new(),
        }
    }

    pub fn input_valid(&self, operation: u8, input: &[u8]) -> bool {
        let valid_count =
            |size: usize| input.len() % size == 0 && input.len() / size <= self.events_max;
        match operation {
            129 | 130 => valid_count(128),
            131 | 132 => valid_count(16),
            133 | 134 => input.len() == 128,
            135 | 136 => input.len() == 64,
            _ => false,
        }
    }

    pub fn account(&self, id: u128) -> Option<Account> {
        self.account_by_id.get(&id).map(|&i| self.accounts[i])
    }

    pub fn transfer(&self, id: u128) -> Option<Transfer> {
        self.transfer_by_id.get(&id).map(|&i| self.transfers[i])
    }

    fn put_account(&mut self, account: Account) {
        let i = self.account_by_id[&account.id];
        self.accounts[i] = account;
    }

    /// Applies an operation prepared with `timestamp`; returns the reply body.
    pub fn commit(&mut self, timestamp: u64, operation: u8, input: &[u8]) -> Vec<u8> {
        let operation = LedgerOperation::from_u8(operation).unwrap();
        let events = if matches!(
            operation,
            LedgerOperation::CreateAccounts | LedgerOperation::CreateTransfers
        ) {
            input.len() as u64 / 128
        } else {
            0
        };
        self.expire(timestamp - events);
        match operation {
            LedgerOperation::CreateAccounts => {
                let events: Vec<Account> = input
                    .chunks(128)
                    .map(|c| Account::read_from_bytes(c).unwrap())
                    .collect();
                self.create_batch(timestamp, &events)
            }
            LedgerOperation::CreateTransfers => {
                let events: Vec<Transfer> = input
                    .chunks(128)
                    .map(|c| Transfer::read_from_bytes(c).unwrap())
                    .collect();
                self.create_batch(timestamp, &events)
            }
            LedgerOperation::LookupAccounts => {
                let mut out = Vec::new();
                for c in input.chunks(16) {
                    let id = u128::from_le_bytes(c.try_into().unwrap());
                    if let Some(a) = self.account(id) {
                        out.extend_from_slice(a.as_bytes());
                    }
                }
                out
            }
            LedgerOperation::LookupTransfers => {
                let mut out = Vec::new();
                for c in input.chunks(16) {
                    let id = u128::from_le_bytes(c.try_into().unwrap());
                    if let Some(t) = self.transfer(id) {
                        out.extend_from_slice(t.as_bytes());
                    }
                }
                out
            }
            LedgerOperation::GetAccountTransfers => {
                let f = AccountFilter::read_from_bytes(input).unwrap();
                let found = self.account_transfers(&f);
                let mut out = Vec::new();
                for t in found {
                    out.extend_from_slice(t.as_bytes());
                }
                out
            }
            LedgerOperation::GetAccountBalances => {
                let f = AccountFilter::read_from_bytes(input).unwrap();
                let mut out = Vec::new();
                let Some(account) = self.account(f.account_id) else {
                    return out;
                };
                if !has(account.flags, account_flags::HISTORY) {
                    return out;
                }
                for t in self.account_transfers(&f) {
                    let (_, _, balance) = self
                        .history
                        .iter()
                        .find(|(ts, id, _)| *ts == t.timestamp && *id == f.account_id)
                        .expect("history of a history account");
                    out.extend_from_slice(balance.as_bytes());
                }
                out
            }
            LedgerOperation::QueryAccounts => {
                let f = QueryFilter::read_from_bytes(input).unwrap();
                let mut out = Vec::new();
                if !query_valid(&f) {
                    return out;
                }
                let mut found: Vec<Account> = self
                    .accounts
                    .iter()
                    .filter(|a| {
                        in_range(a.timestamp, f.timestamp_min, f.timestamp_max)
                            && (f.user_data_128 == 0 || f.user_data_128 == a.user_data_128)
                            && (f.user_data_64 == 0 || f.user_data_64 == a.user_data_64)
                            && (f.user_data_32 == 0 || f.user_data_32 == a.user_data_32)
                            && (f.ledger == 0 || f.ledger == a.ledger)
                            && (f.code == 0 || f.code == a.code)
                    })
                    .copied()
                    .collect();
                found.sort_by_key(|a| a.timestamp);
                if f.flags & query_filter_flags::REVERSED != 0 {
                    found.reverse();
                }
                for a in found.iter().take(self.limit(f.limit)) {
                    out.extend_from_slice(a.as_bytes());
                }
                out
            }
            LedgerOperation::QueryTransfers => {
                let f = QueryFilter::read_from_bytes(input).unwrap();
                let mut out = Vec::new();
                if !query_valid(&f) {
                    return out;
                }
                let mut found: Vec<Transfer> = self
                    .transfers
                    .iter()
                    .filter(|t| {
                        in_range(t.timestamp, f.timestamp_min, f.timestamp_max)
                            && (f.user_data_128 == 0 || f.user_data_128 == t.user_data_128)
                            && (f.user_data_64 == 0 || f.user_data_64 == t.user_data_64)
                            && (f.user_data_32 == 0 || f.user_data_32 == t.user_data_32)
                            && (f.ledger == 0 || f.ledger == t.ledger)
                            && (f.code == 0 || f.code == t.code)
                    })
                    .copied()
                    .collect();
                found.sort_by_key(|t| t.timestamp);
                if f.flags & query_filter_flags::REVERSED != 0 {
                    found.reverse();
                }
                for t in found.iter().take(self.limit(f.limit)) {
                    out.extend_from_slice(t.as_bytes());
                }
                out
            }
        }
    }

    fn limit(&self, limit: u32) -> usize {
        (limit as usize).min(self.reply_max / 128)
    }

    fn account_transfers(&self, f: &AccountFilter) -> Vec<Transfer> {
        let valid = f.account_id != 0
            && f.account_id != u128::MAX
            && (f.timestamp_min == 0 || f.timestamp_min < 1 << 63)
            && (f.timestamp_max == 0 || f.timestamp_max < 1 << 63)
            && (f.timestamp_max == 0 || f.timestamp_min <= f.timestamp_max)
            && f.limit != 0
            && (f.flags & 3) != 0
            && f.flags >> 3 == 0
            && f.reserved == [0; 58];
        if !valid {
            return Vec::new();
        }
        let mut found: Vec<Transfer> = self
            .transfers
            .iter()
            .filter(|t| {
                ((f.flags & account_filter_flags::DEBITS != 0
                    && t.debit_account_id == f.account_id)
                    || (f.flags & account_filter_flags::CREDITS != 0
                        && t.credit_account_id == f.account_id))
                    && in_range(t.timestamp, f.timestamp_min, f.timestamp_max)
                    && (f.user_data_128 == 0 || f.user_data_128 == t.user_data_128)
                    && (f.user_data_64 == 0 || f.user_data_64 == t.user_data_64)
                    && (f.user_data_32 == 0 || f.user_data_32 == t.user_data_32)
                    && (f.code == 0 || f.code == t.code)
            })
            .copied()
            .collect();
        found.sort_by_key(|t| t.timestamp);
        if f.flags & account_filter_flags::REVERSED != 0 {
            found.reverse();
        }
        found.truncate(self.limit(f.limit));
        found
    }

    /// Every pending transfer whose timeout has elapsed by `now` loses its pending balances.
    fn expire(&mut self, now: u64) {
        let transfers = self.transfers.clone();
        for t in transfers {
            if t.timeout == 0 || self.status[&t.id] != Status::Pending {
                continue;
            }
            if t.timestamp + u64::from(t.timeout) * 1_000_000_000 > now {
                continue;
            }
            let mut dr = self.account(t.debit_account_id).unwrap();
            let mut cr = self.account(t.credit_account_id).unwrap();
            dr.debits_pending -= t.amount;
            cr.credits_pending -= t.amount;
            if has(t.flags, transfer_flags::CLOSING_DEBIT) {
                dr.flags &= !account_flags::CLOSED;
            }
            if has(t.flags, transfer_flags::CLOSING_CREDIT) {
                cr.flags &= !account_flags::CLOSED;
            }
            self.put_account(dr);
            self.put_account(cr);
            self.status.insert(t.id, Status::Expired);
        }
    }

    fn create_batch<E: ModelEvent>(&mut self, timestamp: u64, events: &[E]) -> Vec<u8> {
        let n = events.len();
        let mut results: Vec<(usize, u32)> = Vec::new();
        let batch_imported = n > 0 && events[0].imported();
        let mut start = 0;
        while start < n {
            // The chain: from `start` through the first event without `linked` (or the end).
            let mut end = start;
            while end < n - 1 && events[end].linked() {
                end += 1;
            }
            // A chain can only be left open by the last event of the batch.
            let open = events[end].linked();
            // A lone event changes nothing when it fails; a chain may need undoing.
            let snapshot = if end > start {
                Some(self.clone())
            } else {
                None
            };
            let mut failure: Option<(usize, u32)> = None;
            for (i, event) in events.iter().enumerate().take(end + 1).skip(start) {
                if open && i == end {
                    failure = Some((i, 2)); // linked_event_chain_open
                    break;
                }
                let timestamp_event = timestamp - n as u64 + i as u64 + 1;
                let r = E::create(self, event, timestamp, timestamp_event, batch_imported);
                if r != 0 {
                    failure = Some((i, r));
                    break;
                }
            }
            if let Some((failed, code)) = failure {
                if let Some(snapshot) = snapshot {
                    *self = snapshot;
                }
                for i in start..=end {
                    if i == failed {
                        results.push((i, code));
                    } else if open && i == end {
                        results.push((i, 2));
                    } else {
                        results.push((i, 1)); // linked_event_failed
                    }
                }
                E::after_failure(self, &events[failed], code);
            }
            start = end + 1;
        }
        let mut out = Vec::new();
        for (index, result) in results {
            out.extend_from_slice(&(index as u32).to_le_bytes());
            out.extend_from_slice(&result.to_le_bytes());
        }
        out
    }

    fn create_account(
        &mut self,
        a: &Account,
        timestamp: u64,
        timestamp_event: u64,
        batch_imported: bool,
    ) -> CreateAccountResult {
        use CreateAccountResult as R;
        let imported = has(a.flags, account_flags::IMPORTED);
        if imported != batch_imported {
            return if imported {
                R::ImportedEventNotExpected
            } else {
                R::ImportedEventExpected
            };
        }
        if imported {
            if a.timestamp == 0 || a.timestamp >= 1 << 63 {
                return R::ImportedEventTimestampOutOfRange;
            }
            if a.timestamp >= timestamp {
                return R::ImportedEventTimestampMustNotAdvance;
            }
        } else if a.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if a.reserved != 0 {
            return R::ReservedField;
        }
        if a.flags >> 6 != 0 {
            return R::ReservedFlag;
        }
        if a.id == 0 {
            return R::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(e) = self.account(a.id) {
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
            return R::Exists;
        }
        if self.accounts.len() >= self.accounts_max {
            return R::AccountsFull;
        }
        if has(a.flags, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && has(a.flags, account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS)
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
        if imported {
            let newest = self.accounts.iter().map(|x| x.timestamp).max().unwrap_or(0);
            if a.timestamp <= newest || self.transfers.iter().any(|t| t.timestamp == a.timestamp) {
                return R::ImportedEventTimestampMustNotRegress;
            }
        }
        let mut account = *a;
        account.timestamp = if imported {
            a.timestamp
        } else {
            timestamp_event
        };
        self.account_by_id.insert(a.id, self.accounts.len());
        self.accounts.push(account);
        R::Ok
    }

    fn create_transfer(
        &mut self,
        t: &Transfer,
        timestamp: u64,
        timestamp_event: u64,
        batch_imported: bool,
    ) -> CreateTransferResult {
        use transfer_flags as F;
        use CreateTransferResult as R;
        let imported = has(t.flags, F::IMPORTED);
        if imported != batch_imported {
            return if imported {
                R::ImportedEventNotExpected
            } else {
                R::ImportedEventExpected
            };
        }
        if imported {
            if t.timestamp == 0 || t.timestamp >= 1 << 63 {
                return R::ImportedEventTimestampOutOfRange;
            }
            if t.timestamp >= timestamp {
                return R::ImportedEventTimestampMustNotAdvance;
            }
        } else if t.timestamp != 0 {
            return R::TimestampMustBeZero;
        }
        if t.flags >> 9 != 0 {
            return R::ReservedFlag;
        }
        if t.id == 0 {
            return R::IdMustNotBeZero;
        }
        if t.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(e) = self.transfer(t.id) {
            return self.transfer_exists(t, &e);
        }
        if self.failed_ids.contains(&t.id) {
            return R::IdAlreadyFailed;
        }
        if self.transfers.len() + self.failed_ids.len() >= self.transfers_max {
            return R::TransfersFull;
        }
        let post = has(t.flags, F::POST_PENDING_TRANSFER);
        let void = has(t.flags, F::VOID_PENDING_TRANSFER);
        if post || void {
            return self.post_or_void(t, timestamp_event);
        }
        if t.debit_account_id == 0 {
            return R::DebitAccountIdMustNotBeZero;
        }
        if t.debit_account_id == u128::MAX {
            return R::DebitAccountIdMustNotBeIntMax;
        }
        if t.credit_account_id == 0 {
            return R::CreditAccountIdMustNotBeZero;
        }
        if t.credit_account_id == u128::MAX {
            return R::CreditAccountIdMustNotBeIntMax;
        }
        if t.debit_account_id == t.credit_account_id {
            return R::AccountsMustBeDifferent;
        }
        if t.pending_id != 0 {
            return R::PendingIdMustBeZero;
        }
        let pending = has(t.flags, F::PENDING);
        if !pending && t.timeout != 0 {
            return R::TimeoutReservedForPendingTransfer;
        }
        if !pending && (has(t.flags, F::CLOSING_DEBIT) || has(t.flags, F::CLOSING_CREDIT)) {
            return R::ClosingTransferMustBePending;
        }
        if t.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if t.code == 0 {
            return R::CodeMustNotBeZero;
        }
        let Some(mut dr) = self.account(t.debit_account_id) else {
            return R::DebitAccountNotFound;
        };
        let Some(mut cr) = self.account(t.credit_account_id) else {
            return R::CreditAccountNotFound;
        };
        if dr.ledger != cr.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if imported {
            let newest = self
                .transfers
                .iter()
                .map(|x| x.timestamp)
                .max()
                .unwrap_or(0);
            if t.timestamp <= newest || self.accounts.iter().any(|a| a.timestamp == t.timestamp) {
                return R::ImportedEventTimestampMustNotRegress;
            }
            if t.timestamp <= dr.timestamp {
                return R::ImportedEventTimestampMustPostdateDebitAccount;
            }
            if t.timestamp <= cr.timestamp {
                return R::ImportedEventTimestampMustPostdateCreditAccount;
            }
            if t.timeout != 0 {
                return R::ImportedEventTimeoutMustBeZero;
            }
        }
        let timestamp_actual = if imported {
            t.timestamp
        } else {
            timestamp_event
        };
        if has(dr.flags, account_flags::CLOSED) {
            return R::DebitAccountAlreadyClosed;
        }
        if has(cr.flags, account_flags::CLOSED) {
            return R::CreditAccountAlreadyClosed;
        }
        // Balancing transfers move at most `amount`, only as much as the limit allows.
        let mut amount = t.amount;
        if has(t.flags, F::BALANCING_DEBIT) {
            let room = dr
                .credits_posted
                .saturating_sub(dr.debits_posted + dr.debits_pending);
            amount = amount.min(room);
        }
        if has(t.flags, F::BALANCING_CREDIT) {
            let room = cr
                .debits_posted
                .saturating_sub(cr.credits_posted + cr.credits_pending);
            amount = amount.min(room);
        }
        let overflows = |a: u128, b: u128| a.checked_add(b).is_none();
        if pending && overflows(dr.debits_pending, amount) {
            return R::OverflowsDebitsPending;
        }
        if pending && overflows(cr.credits_pending, amount) {
            return R::OverflowsCreditsPending;
        }
        if overflows(dr.debits_posted, amount) {
            return R::OverflowsDebitsPosted;
        }
        if overflows(cr.credits_posted, amount) {
            return R::OverflowsCreditsPosted;
        }
        if overflows(dr.debits_pending + dr.debits_posted, amount) {
            return R::OverflowsDebits;
        }
        if overflows(cr.credits_pending + cr.credits_posted, amount) {
            return R::OverflowsCredits;
        }
        if u128::from(timestamp_actual) + u128::from(t.timeout) * 1_000_000_000 >= 1 << 63 {
            return R::OverflowsTimeout;
        }
        if has(dr.flags, account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && dr.debits_pending + dr.debits_posted + amount > dr.credits_posted
        {
            return R::ExceedsCredits;
        }
        if has(cr.flags, account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && cr.credits_pending + cr.credits_posted + amount > cr.debits_posted
        {
            return R::ExceedsDebits;
        }
        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        if has(t.flags, F::CLOSING_DEBIT) {
            dr.flags |= account_flags::CLOSED;
        }
        if has(t.flags, F::CLOSING_CREDIT) {
            cr.flags |= account_flags::CLOSED;
        }
        let mut transfer = *t;
        transfer.amount = amount;
        transfer.timestamp = timestamp_actual;
        self.store_transfer(
            transfer,
            if pending {
                Status::Pending
            } else {
                Status::None
            },
            dr,
            cr,
        );
        R::Ok
    }

    fn store_transfer(&mut self, transfer: Transfer, status: Status, dr: Account, cr: Account) {
        self.put_account(dr);
        self.put_account(cr);
        for account in [dr, cr] {
            if has(account.flags, account_flags::HISTORY) {
                self.history.push((
                    transfer.timestamp,
                    account.id,
                    AccountBalance {
                        debits_pending: account.debits_pending,
                        debits_posted: account.debits_posted,
                        credits_pending: account.credits_pending,
                        credits_posted: account.credits_posted,
                        timestamp: transfer.timestamp,
                        reserved: [0; 56],
                    },
                ));
            }
        }
        self.transfer_by_id
            .insert(transfer.id, self.transfers.len());
        self.transfers.push(transfer);
        self.status.insert(transfer.id, status);
    }

    fn post_or_void(&mut self, t: &Transfer, timestamp_event: u64) -> CreateTransferResult {
        use transfer_flags as F;
        use CreateTransferResult as R;
        let post = has(t.flags, F::POST_PENDING_TRANSFER);
        let void = has(t.flags, F::VOID_PENDING_TRANSFER);
        let exclusive = (post && void)
            || has(t.flags, F::PENDING)
            || has(t.flags, F::BALANCING_DEBIT)
            || has(t.flags, F::BALANCING_CREDIT)
            || has(t.flags, F::CLOSING_DEBIT)
            || has(t.flags, F::CLOSING_CREDIT);
        if exclusive {
            return R::FlagsAreMutuallyExclusive;
        }
        if t.pending_id == 0 {
            return R::PendingIdMustNotBeZero;
        }
        if t.pending_id == u128::MAX {
            return R::PendingIdMustNotBeIntMax;
        }
        if t.pending_id == t.id {
            return R::PendingIdMustBeDifferent;
        }
        if t.timeout != 0 {
            return R::TimeoutReservedForPendingTransfer;
        }
        let Some(p) = self.transfer(t.pending_id) else {
            return R::PendingTransferNotFound;
        };
        if !has(p.flags, F::PENDING) {
            return R::PendingTransferNotPending;
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return R::PendingTransferHasDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return R::PendingTransferHasDifferentCreditAccountId;
        }
        if t.ledger != 0 && t.ledger != p.ledger {
            return R::PendingTransferHasDifferentLedger;
        }
        if t.code != 0 && t.code != p.code {
            return R::PendingTransferHasDifferentCode;
        }
        let amount = match (void, t.amount) {
            (true, 0) => p.amount,
            (false, u128::MAX) => p.amount,
            (_, amount) => amount,
        };
        if amount > p.amount {
            return R::ExceedsPendingTransferAmount;
        }
        if void && amount != p.amount {
            return R::PendingTransferHasDifferentAmount;
        }
        match self.status[&p.id] {
            Status::Posted => return R::PendingTransferAlreadyPosted,
            Status::Voided => return R::PendingTransferAlreadyVoided,
            Status::Expired => return R::PendingTransferExpired,
            Status::Pending => {}
            Status::None => unreachable!(),
        }
        if p.timeout != 0 && p.timestamp + u64::from(p.timeout) * 1_000_000_000 <= timestamp_event {
            return R::PendingTransferExpired;
        }
        let imported = has(t.flags, F::IMPORTED);
        if imported {
            let newest = self
                .transfers
                .iter()
                .map(|x| x.timestamp)
                .max()
                .unwrap_or(0);
            if t.timestamp <= newest || self.accounts.iter().any(|a| a.timestamp == t.timestamp) {
                return R::ImportedEventTimestampMustNotRegress;
            }
        }
        let mut dr = self.account(p.debit_account_id).unwrap();
        let mut cr = self.account(p.credit_account_id).unwrap();
        if has(dr.flags, account_flags::CLOSED) && !void {
            return R::DebitAccountAlreadyClosed;
        }
        if has(cr.flags, account_flags::CLOSED) && !void {
            return R::CreditAccountAlreadyClosed;
        }
        dr.debits_pending -= p.amount;
        cr.credits_pending -= p.amount;
        if post {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        } else {
            if has(p.flags, F::CLOSING_DEBIT) {
                dr.flags &= !account_flags::CLOSED;
            }
            if has(p.flags, F::CLOSING_CREDIT) {
                cr.flags &= !account_flags::CLOSED;
            }
        }
        let transfer = Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: p.id,
            user_data_128: if t.user_data_128 != 0 {
                t.user_data_128
            } else {
                p.user_data_128
            },
            user_data_64: if t.user_data_64 != 0 {
                t.user_data_64
            } else {
                p.user_data_64
            },
            user_data_32: if t.user_data_32 != 0 {
                t.user_data_32
            } else {
                p.user_data_32
            },
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags,
            timestamp: if imported {
                t.timestamp
            } else {
                timestamp_event
            },
        };
        self.status
            .insert(p.id, if post { Status::Posted } else { Status::Voided });
        self.store_transfer(transfer, Status::None, dr, cr);
        R::Ok
    }

    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> CreateTransferResult {
        use transfer_flags as F;
        use CreateTransferResult as R;
        if t.flags != e.flags {
            return R::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return R::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return R::ExistsWithDifferentTimeout;
        }
        let resolves =
            has(t.flags, F::POST_PENDING_TRANSFER) || has(t.flags, F::VOID_PENDING_TRANSFER);
        if !resolves {
            if t.debit_account_id != e.debit_account_id {
                return R::ExistsWithDifferentDebitAccountId;
            }
            if t.credit_account_id != e.credit_account_id {
                return R::ExistsWithDifferentCreditAccountId;
            }
            let balancing = has(t.flags, F::BALANCING_DEBIT) || has(t.flags, F::BALANCING_CREDIT);
            if (balancing && t.amount < e.amount) || (!balancing && t.amount != e.amount) {
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
            return R::Exists;
        }
        let p = self.transfer(e.pending_id).unwrap();
        if t.debit_account_id != 0 && t.debit_account_id != e.debit_account_id {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != e.credit_account_id {
            return R::ExistsWithDifferentCreditAccountId;
        }
        let void = has(t.flags, F::VOID_PENDING_TRANSFER);
        let amount_defaulted = (void && t.amount == 0) || (!void && t.amount == u128::MAX);
        if amount_defaulted && e.amount != p.amount {
            return R::ExistsWithDifferentAmount;
        }
        if !amount_defaulted && t.amount != e.amount {
            return R::ExistsWithDifferentAmount;
        }
        if (t.user_data_128 == 0 && e.user_data_128 != p.user_data_128)
            || (t.user_data_128 != 0 && t.user_data_128 != e.user_data_128)
        {
            return R::ExistsWithDifferentUserData128;
        }
        if (t.user_data_64 == 0 && e.user_data_64 != p.user_data_64)
            || (t.user_data_64 != 0 && t.user_data_64 != e.user_data_64)
        {
            return R::ExistsWithDifferentUserData64;
        }
        if (t.user_data_32 == 0 && e.user_data_32 != p.user_data_32)
            || (t.user_data_32 != 0 && t.user_data_32 != e.user_data_32)
        {
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
}

fn in_range(timestamp: u64, min: u64, max: u64) -> bool {
    (min == 0 || timestamp >= min) && (max == 0 || timestamp <= max)
}

fn query_valid(f: &QueryFilter) -> bool {
    (f.timestamp_min == 0 || f.timestamp_min < 1 << 63)
        && (f.timestamp_max == 0 || f.timestamp_max < 1 << 63)
        && (f.timestamp_max == 0 || f.timestamp_min <= f.timestamp_max)
        && f.limit != 0
        && f.flags >> 1 == 0
        && f.reserved == [0; 6]
}

/// The two kinds of create event, for the shared batch/chain logic.
pub trait ModelEvent {
    fn linked(&self) -> bool;
    fn imported(&self) -> bool;
    fn create(
        model: &mut Model,
        event: &Self,
        timestamp: u64,
        timestamp_event: u64,
        batch_imported: bool,
    ) -> u32;
    fn after_failure(model: &mut Model, event: &Self, code: u32);
}

impl ModelEvent for Account {
    fn linked(&self) -> bool {
        has(self.flags, account_flags::LINKED)
    }
    fn imported(&self) -> bool {
        has(self.flags, account_flags::IMPORTED)
    }
    fn create(m: &mut Model, e: &Account, ts: u64, ts_event: u64, imported: bool) -> u32 {
        m.create_account(e, ts, ts_event, imported) as u32
    }
    fn after_failure(_: &mut Model, _: &Account, _: u32) {}
}

impl ModelEvent for Transfer {
    fn linked(&self) -> bool {
        has(self.flags, transfer_flags::LINKED)
    }
    fn imported(&self) -> bool {
        has(self.flags, transfer_flags::IMPORTED)
    }
    fn create(m: &mut Model, e: &Transfer, ts: u64, ts_event: u64, imported: bool) -> u32 {
        m.create_transfer(e, ts, ts_event, imported) as u32
    }
    fn after_failure(m: &mut Model, e: &Transfer, code: u32) {
        // Transient failures are remembered so the id can never succeed later.
        if CreateTransferResult::from_u32(code).unwrap().transient() {
            m.failed_ids.insert(e.id);
        }
    }
}
