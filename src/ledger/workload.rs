//! A deterministic generator of ledger requests, valid and invalid, for the differential test
//! and the simulator's clients.
//!
//! `Workload::new` draws a profile (how many accounts and ledgers, batch sizes, how often chains,
//! two-phase transfers, duplicates and invalid events appear) so that different seeds stress
//! different corners. `Workload::generate` then writes one request body. Bodies always pass
//! `Ledger::input_valid`: the invalid cases are events (bad fields, unknown ids, conflicting
//! retries, limits), which the ledger answers with result codes, not malformed messages.
//!
//! The generator never sees replies, so it remembers the ids it has sent, not whether they were
//! created: references to missing accounts or transfers are part of the mix. Its memory is
//! bounded (fixed-size pools, reserved in `new`).

use rand_chacha::rand_core::Rng;
use rand_chacha::ChaCha8Rng;
use zerocopy::IntoBytes;

use super::types::{
    account_filter_flags, account_flags, query_filter_flags, transfer_flags, Account,
    AccountFilter, QueryFilter, Transfer,
};
use super::LedgerOperation;

/// The swarm parameters of one workload.
#[derive(Clone, Debug)]
pub struct WorkloadProfile {
    /// Account ids the workload draws from.
    pub accounts: usize,
    /// Ledgers accounts are spread over.
    pub ledgers: u32,
    /// Largest batch, in events (further capped by the body size).
    pub batch_max: usize,
    /// Percent of create events that start or continue a linked chain.
    pub linked_percent: u64,
    /// Percent of events made invalid on purpose.
    pub invalid_percent: u64,
    /// Percent of create events that repeat an earlier event (exactly or with a change).
    pub duplicate_percent: u64,
    /// Percent of transfers that are pending (two-phase).
    pub pending_percent: u64,
    /// Percent of transfers that post or void a pending transfer.
    pub resolve_percent: u64,
    /// Percent of transfers that balance.
    pub balancing_percent: u64,
    /// Largest pending timeout, in seconds (0: none).
    pub timeout_max: u32,
    /// Requests at the start that import objects with their own timestamps.
    pub import_requests: u64,
}

const TRANSFER_POOL: usize = 4096;
const PENDING_POOL: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct AccountRef {
    id: u128,
    ledger: u32,
    event: Account,
}

pub struct Workload {
    profile: WorkloadProfile,
    accounts: Vec<AccountRef>,
    transfers: Vec<Transfer>,
    transfers_next: usize,
    pending: Vec<Transfer>,
    pending_next: usize,
    id_base: u128,
    id_next: u128,
    requests: u64,
    import_timestamp: u64,
    timestamp_hint: u64,
}

impl Workload {
    /// A workload with a random profile.
    pub fn new(rng: &mut ChaCha8Rng) -> Workload {
        let profile = WorkloadProfile {
            accounts: pick(rng, &[4, 16, 64, 256, 1024]),
            ledgers: range(rng, 1, 3) as u32,
            batch_max: pick(rng, &[1, 8, 64, 512, usize::MAX]),
            linked_percent: pick(rng, &[0, 5, 20, 50]),
            invalid_percent: pick(rng, &[0, 2, 10, 30]),
            duplicate_percent: pick(rng, &[0, 5, 20]),
            pending_percent: pick(rng, &[0, 20, 40]),
            resolve_percent: pick(rng, &[0, 15, 30]),
            balancing_percent: pick(rng, &[0, 5, 20]),
            timeout_max: pick(rng, &[0, 1, 3]),
            import_requests: if chance(rng, 30) { range(rng, 1, 6) } else { 0 },
        };
        Workload::with_profile(rng, profile)
    }

    pub fn with_profile(rng: &mut ChaCha8Rng, profile: WorkloadProfile) -> Workload {
        // Ids are unique per workload (a random base), so several clients' workloads do not
        // collide unless they mean to.
        let id_base = u128::from(rng.next_u64()) << 64 | 1 << 32;
        Workload {
            accounts: Vec::with_capacity(profile.accounts),
            transfers: Vec::with_capacity(TRANSFER_POOL),
            transfers_next: 0,
            pending: Vec::with_capacity(PENDING_POOL),
            pending_next: 0,
            id_base,
            id_next: 0,
            requests: 0,
            import_timestamp: 1_000,
            timestamp_hint: 0,
            profile,
        }
    }

    pub fn profile(&self) -> &WorkloadProfile {
        &self.profile
    }

    /// The cluster time as last seen by the caller (e.g. a reply's timestamp); filters' time
    /// ranges are drawn around it. Optional.
    pub fn set_timestamp_hint(&mut self, timestamp: u64) {
        self.timestamp_hint = timestamp;
    }

    /// Writes one request body into `body` (whose length bounds the batch: pass at most the
    /// ledger's `body_size_max` bytes, and at least 128); returns the operation and the body's
    /// size.
    pub fn generate(&mut self, rng: &mut ChaCha8Rng, body: &mut [u8]) -> (LedgerOperation, usize) {
        assert!(
            body.len() >= 128,
            "a request body holds at least one 128-byte event"
        );
        self.requests += 1;
        let importing = self.requests <= self.profile.import_requests;
        let operation = if importing {
            if self.accounts.len() < 2 || chance(rng, 40) {
                LedgerOperation::CreateAccounts
            } else {
                LedgerOperation::CreateTransfers
            }
        } else {
            self.pick_operation(rng)
        };
        let size = match operation {
            LedgerOperation::CreateAccounts => self.create_accounts(rng, body, importing),
            LedgerOperation::CreateTransfers => self.create_transfers(rng, body, importing),
            LedgerOperation::LookupAccounts => self.lookup(rng, body, true),
            LedgerOperation::LookupTransfers => self.lookup(rng, body, false),
            LedgerOperation::GetAccountTransfers | LedgerOperation::GetAccountBalances => {
                let filter = self.account_filter(rng);
                write_record(body, 0, filter.as_bytes())
            }
            LedgerOperation::QueryAccounts | LedgerOperation::QueryTransfers => {
                let filter = self.query_filter(rng);
                write_record(body, 0, filter.as_bytes())
            }
        };
        (operation, size)
    }

    fn pick_operation(&self, rng: &mut ChaCha8Rng) -> LedgerOperation {
        // Create accounts mostly until the pool fills.
        let accounts_weight = if self.accounts.len() < self.profile.accounts {
            30
        } else {
            3
        };
        let weights = [
            (LedgerOperation::CreateAccounts, accounts_weight),
            (LedgerOperation::CreateTransfers, 50),
            (LedgerOperation::LookupAccounts, 6),
            (LedgerOperation::LookupTransfers, 6),
            (LedgerOperation::GetAccountTransfers, 5),
            (LedgerOperation::GetAccountBalances, 5),
            (LedgerOperation::QueryAccounts, 3),
            (LedgerOperation::QueryTransfers, 3),
        ];
        let total: u64 = weights.iter().map(|w| w.1).sum();
        let mut x = range(rng, 0, total - 1);
        for (operation, weight) in weights {
            if x < weight {
                return operation;
            }
            x -= weight;
        }
        unreachable!()
    }

    fn batch_size(&self, rng: &mut ChaCha8Rng, body: &[u8], event_size: usize) -> usize {
        let capacity = body.len() / event_size;
        let max = self.profile.batch_max.min(capacity).max(1);
        // Mostly small batches, sometimes full ones, rarely empty.
        match range(rng, 0, 19) {
            0 => 0,
            1 => max,
            2..=9 => range(rng, 1, max.min(4) as u64) as usize,
            _ => range(rng, 1, max as u64) as usize,
        }
    }

    fn fresh_id(&mut self) -> u128 {
        self.id_next += 1;
        self.id_base + self.id_next
    }

    fn create_accounts(&mut self, rng: &mut ChaCha8Rng, body: &mut [u8], imported: bool) -> usize {
        let count = self.batch_size(rng, body, 128);
        let mut chain = 0;
        for index in 0..count {
            // Once the pool is full, mostly retries of accounts already sent.
            let pool_full = self.accounts.len() >= self.profile.accounts;
            let duplicate = if pool_full {
                !chance(rng, 10)
            } else {
                chance(rng, self.profile.duplicate_percent)
            };
            let mut account = if !self.accounts.is_empty() && duplicate {
                let original = self.accounts[index_below(rng, self.accounts.len())].event;
                self.mutate_account(rng, original)
            } else {
                self.new_account(rng)
            };
            account.flags &= !account_flags::LINKED;
            if chain > 0 || chance(rng, self.profile.linked_percent) {
                if chain == 0 {
                    chain = range(rng, 1, 4);
                }
                chain -= 1;
                if chain > 0 || chance(rng, 10) {
                    account.flags |= account_flags::LINKED;
                }
            }
            if imported {
                account.flags |= account_flags::IMPORTED;
                account.timestamp = self.import_timestamp(rng);
            }
            let invalid = chance(rng, self.profile.invalid_percent);
            if invalid {
                self.invalidate_account(rng, &mut account, imported);
            }
            if !invalid
                && self.accounts.len() < self.profile.accounts
                && self.accounts.iter().all(|a| a.id != account.id)
            {
                self.accounts.push(AccountRef {
                    id: account.id,
                    ledger: account.ledger,
                    event: account,
                });
            }
            write_record(body, index, account.as_bytes());
        }
        count * 128
    }

    fn import_timestamp(&mut self, rng: &mut ChaCha8Rng) -> u64 {
        // Usually ahead of the last one; sometimes equal or behind (must_not_regress).
        match range(rng, 0, 19) {
            0 => self.import_timestamp,
            1 => self.import_timestamp.saturating_sub(range(rng, 1, 5)),
            _ => {
                // Gaps, so that a timestamp behind the last can fall between two objects.
                self.import_timestamp += range(rng, 1, 10);
                self.import_timestamp
            }
        }
    }

    fn new_account(&mut self, rng: &mut ChaCha8Rng) -> Account {
        let mut flags = 0;
        if chance(rng, 20) {
            flags |= account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        } else if chance(rng, 15) {
            flags |= account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        }
        if chance(rng, 40) {
            flags |= account_flags::HISTORY;
        }
        // Closed accounts refuse all transfers: rare, and only where there are many accounts.
        if self.profile.accounts >= 64 && chance_per_mille(rng, 5) {
            flags |= account_flags::CLOSED;
        }
        Account {
            id: self.fresh_id(),
            user_data_128: range(rng, 0, 3).into(),
            user_data_64: range(rng, 0, 3),
            user_data_32: range(rng, 0, 3) as u32,
            ledger: range(rng, 1, u64::from(self.profile.ledgers)) as u32,
            code: range(rng, 1, 3) as u16,
            flags,
            ..Account::default()
        }
    }

    fn mutate_account(&mut self, rng: &mut ChaCha8Rng, mut a: Account) -> Account {
        match range(rng, 0, 7) {
            0 => a.flags ^= account_flags::HISTORY,
            1 => a.user_data_128 = a.user_data_128.wrapping_add(1),
            2 => a.user_data_64 = a.user_data_64.wrapping_add(1),
            3 => a.user_data_32 = a.user_data_32.wrapping_add(1),
            4 => a.ledger = a.ledger.wrapping_add(1),
            5 => a.code = a.code.wrapping_add(1),
            _ => {} // An exact retry.
        }
        a
    }

    fn invalidate_account(&mut self, rng: &mut ChaCha8Rng, a: &mut Account, imported: bool) {
        match range(rng, 0, 12) {
            0 => a.reserved = 1,
            1 => a.flags |= 1 << range(rng, 6, 15),
            2 => a.id = 0,
            3 => a.id = u128::MAX,
            4 => {
                a.flags |= account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    | account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS
            }
            5 => a.debits_pending = 1,
            6 => a.debits_posted = 1,
            7 => a.credits_pending = 1,
            8 => a.credits_posted = 1,
            9 => a.ledger = 0,
            10 => a.code = 0,
            11 => {
                if imported {
                    a.timestamp = match range(rng, 0, 2) {
                        0 => 0,
                        1 => u64::MAX,
                        _ => self.timestamp_hint + 1_000_000_000_000,
                    };
                } else {
                    a.timestamp = range(rng, 1, 1 << 40);
                }
            }
            _ => a.flags ^= account_flags::IMPORTED,
        }
    }

    fn account_id(&self, rng: &mut ChaCha8Rng) -> u128 {
        if self.accounts.is_empty() || chance(rng, 3) {
            self.id_base + u128::from(range(rng, 1, 1 << 20))
        } else {
            self.accounts[index_below(rng, self.accounts.len())].id
        }
    }

    fn account_pair(&self, rng: &mut ChaCha8Rng) -> (u128, u128) {
        if self.accounts.len() < 2 {
            return (self.account_id(rng), self.account_id(rng));
        }
        let debit = self.accounts[index_below(rng, self.accounts.len())];
        // Mostly a second account on the same ledger.
        for _ in 0..8 {
            let credit = self.accounts[index_below(rng, self.accounts.len())];
            if credit.id != debit.id && (credit.ledger == debit.ledger || chance(rng, 5)) {
                return (debit.id, credit.id);
            }
        }
        (debit.id, self.account_id(rng))
    }

    fn ledger_of(&self, id: u128) -> u32 {
        self.accounts
            .iter()
            .find(|a| a.id == id)
            .map_or(1, |a| a.ledger)
    }

    fn amount(&self, rng: &mut ChaCha8Rng) -> u128 {
        match range(rng, 0, 39) {
            0 => 0,
            1 => u128::MAX,
            2 => u128::MAX - u128::from(range(rng, 0, 1000)),
            3 => u128::from(u64::MAX) << 64,
            _ => range(rng, 1, 1000).into(),
        }
    }

    fn create_transfers(&mut self, rng: &mut ChaCha8Rng, body: &mut [u8], imported: bool) -> usize {
        let count = self.batch_size(rng, body, 128);
        let mut chain = 0;
        for index in 0..count {
            let mut transfer =
                if !self.transfers.is_empty() && chance(rng, self.profile.duplicate_percent) {
                    let original = self.transfers[index_below(rng, self.transfers.len())];
                    self.mutate_transfer(rng, original)
                } else if !self.pending.is_empty() && chance(rng, self.profile.resolve_percent) {
                    self.resolve_transfer(rng)
                } else {
                    self.new_transfer(rng, imported)
                };
            transfer.flags &= !transfer_flags::LINKED;
            if chain > 0 || chance(rng, self.profile.linked_percent) {
                if chain == 0 {
                    chain = range(rng, 1, 4);
                }
                chain -= 1;
                if chain > 0 || chance(rng, 10) {
                    transfer.flags |= transfer_flags::LINKED;
                }
            }
            if imported {
                transfer.flags |= transfer_flags::IMPORTED;
                transfer.timestamp = self.import_timestamp(rng);
                if chance(rng, 80) {
                    transfer.timeout = 0;
                }
            }
            if chance(rng, self.profile.invalid_percent) {
                self.invalidate_transfer(rng, &mut transfer, imported);
            }
            self.remember_transfer(transfer);
            write_record(body, index, transfer.as_bytes());
        }
        count * 128
    }

    fn remember_transfer(&mut self, transfer: Transfer) {
        if self.transfers.len() < TRANSFER_POOL {
            self.transfers.push(transfer);
        } else {
            self.transfers[self.transfers_next] = transfer;
            self.transfers_next = (self.transfers_next + 1) % TRANSFER_POOL;
        }
        if transfer.flags & transfer_flags::PENDING != 0 {
            if self.pending.len() < PENDING_POOL {
                self.pending.push(transfer);
            } else {
                self.pending[self.pending_next] = transfer;
                self.pending_next = (self.pending_next + 1) % PENDING_POOL;
            }
        }
    }

    fn new_transfer(&mut self, rng: &mut ChaCha8Rng, imported: bool) -> Transfer {
        let (debit, credit) = self.account_pair(rng);
        let mut flags = 0;
        let mut timeout = 0;
        if chance(rng, self.profile.pending_percent) {
            flags |= transfer_flags::PENDING;
            if self.profile.timeout_max > 0 && !imported && chance(rng, 50) {
                timeout = range(rng, 1, u64::from(self.profile.timeout_max)) as u32;
            }
            // Closing is sticky until a void or expiry: rare, and only among many accounts.
            if self.profile.accounts >= 64 {
                if chance_per_mille(rng, 1) {
                    flags |= transfer_flags::CLOSING_DEBIT;
                }
                if chance_per_mille(rng, 1) {
                    flags |= transfer_flags::CLOSING_CREDIT;
                }
            }
        }
        if chance(rng, self.profile.balancing_percent) {
            flags |= transfer_flags::BALANCING_DEBIT;
        }
        if chance(rng, self.profile.balancing_percent) {
            flags |= transfer_flags::BALANCING_CREDIT;
        }
        Transfer {
            id: self.fresh_id(),
            debit_account_id: debit,
            credit_account_id: credit,
            amount: self.amount(rng),
            pending_id: 0,
            user_data_128: range(rng, 0, 3).into(),
            user_data_64: range(rng, 0, 3),
            user_data_32: range(rng, 0, 3) as u32,
            timeout,
            ledger: self.ledger_of(debit),
            code: range(rng, 1, 3) as u16,
            flags,
            timestamp: 0,
        }
    }

    /// A post or void of a remembered pending transfer, with fields that match, are left zero
    /// (inherit), or conflict.
    fn resolve_transfer(&mut self, rng: &mut ChaCha8Rng) -> Transfer {
        let p = self.pending[index_below(rng, self.pending.len())];
        let post = chance(rng, 50);
        let amount = match range(rng, 0, 9) {
            0 => 0,
            1 => u128::MAX,
            2 => p.amount.saturating_add(1),
            3 => p.amount / 2,
            _ => {
                if post {
                    u128::MAX
                } else {
                    p.amount
                }
            }
        };
        let either = |rng: &mut ChaCha8Rng, value: u128, other: u128| match range(rng, 0, 9) {
            0 => other,
            1..=4 => value,
            _ => 0,
        };
        Transfer {
            id: self.fresh_id(),
            debit_account_id: either(rng, p.debit_account_id, p.credit_account_id),
            credit_account_id: either(rng, p.credit_account_id, p.debit_account_id),
            amount,
            pending_id: if chance(rng, 5) {
                self.fresh_id()
            } else {
                p.id
            },
            user_data_128: range(rng, 0, 3).into(),
            user_data_64: range(rng, 0, 3),
            user_data_32: range(rng, 0, 3) as u32,
            timeout: 0,
            ledger: either(rng, p.ledger.into(), p.ledger.wrapping_add(1).into()) as u32,
            code: either(rng, p.code.into(), p.code.wrapping_add(1).into()) as u16,
            flags: if post {
                transfer_flags::POST_PENDING_TRANSFER
            } else {
                transfer_flags::VOID_PENDING_TRANSFER
            },
            timestamp: 0,
        }
    }

    fn mutate_transfer(&mut self, rng: &mut ChaCha8Rng, mut t: Transfer) -> Transfer {
        t.flags &= !transfer_flags::IMPORTED;
        t.timestamp = 0;
        match range(rng, 0, 13) {
            0 => t.flags ^= transfer_flags::PENDING,
            1 => t.pending_id = t.pending_id.wrapping_add(1),
            2 => t.timeout = t.timeout.wrapping_add(1),
            3 => t.debit_account_id = self.account_id(rng),
            4 => t.credit_account_id = self.account_id(rng),
            5 => t.amount = t.amount.wrapping_add(1),
            6 => t.amount = t.amount.wrapping_sub(1),
            7 => t.user_data_128 = t.user_data_128.wrapping_add(1),
            8 => t.user_data_64 = t.user_data_64.wrapping_add(1),
            9 => t.user_data_32 = t.user_data_32.wrapping_add(1),
            10 => t.ledger = t.ledger.wrapping_add(1),
            11 => t.code = t.code.wrapping_add(1),
            _ => {} // An exact retry.
        }
        t
    }

    fn invalidate_transfer(&mut self, rng: &mut ChaCha8Rng, t: &mut Transfer, imported: bool) {
        use transfer_flags as F;
        match range(rng, 0, 17) {
            0 => t.flags |= 1 << range(rng, 9, 15),
            1 => t.id = 0,
            2 => t.id = u128::MAX,
            3 => {
                if chance(rng, 50) {
                    t.debit_account_id = 0;
                } else {
                    t.debit_account_id = u128::MAX;
                }
            }
            4 => {
                if chance(rng, 50) {
                    t.credit_account_id = 0;
                } else {
                    t.credit_account_id = u128::MAX;
                }
            }
            5 => t.credit_account_id = t.debit_account_id,
            6 => t.pending_id = range(rng, 1, 100).into(),
            7 => t.timeout = range(rng, 1, 10) as u32,
            8 => t.flags |= F::CLOSING_DEBIT,
            9 => t.ledger = 0,
            10 => t.code = 0,
            11 => t.flags |= F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER,
            12 => t.flags |= F::PENDING | F::VOID_PENDING_TRANSFER,
            13 => t.pending_id = t.id,
            14 => t.timeout = u32::MAX,
            15 => {
                if imported {
                    t.timestamp = match range(rng, 0, 2) {
                        0 => 0,
                        1 => 1 << 63,
                        _ => self.timestamp_hint + 1_000_000_000_000,
                    };
                } else {
                    t.timestamp = range(rng, 1, 1 << 40);
                }
            }
            _ => t.flags ^= F::IMPORTED,
        }
    }

    fn lookup(&mut self, rng: &mut ChaCha8Rng, body: &mut [u8], accounts: bool) -> usize {
        let count = self.batch_size(rng, body, 128).min(body.len() / 16);
        for index in 0..count {
            let id = if accounts {
                self.account_id(rng)
            } else if !self.transfers.is_empty() && chance(rng, 80) {
                let t = &self.transfers[index_below(rng, self.transfers.len())];
                if chance(rng, 10) {
                    t.pending_id
                } else {
                    t.id
                }
            } else {
                self.id_base + u128::from(range(rng, 0, self.id_next as u64 + 1))
            };
            body[index * 16..(index + 1) * 16].copy_from_slice(&id.to_le_bytes());
        }
        count * 16
    }

    fn timestamp_bounds(&self, rng: &mut ChaCha8Rng) -> (u64, u64) {
        let around = |rng: &mut ChaCha8Rng, hint: u64| {
            hint.saturating_sub(range(rng, 0, 5_000_000_000)).max(1)
        };
        match range(rng, 0, 9) {
            0 => (around(rng, self.timestamp_hint), 0),
            1 => (0, around(rng, self.timestamp_hint)),
            2 => {
                let a = around(rng, self.timestamp_hint);
                let b = around(rng, self.timestamp_hint);
                (a.min(b), a.max(b))
            }
            3 => (range(rng, 0, 3_000), range(rng, 0, 3_000)),
            _ => (0, 0),
        }
    }

    fn account_filter(&mut self, rng: &mut ChaCha8Rng) -> AccountFilter {
        let (timestamp_min, timestamp_max) = self.timestamp_bounds(rng);
        let mut flags = match range(rng, 0, 3) {
            0 => account_filter_flags::DEBITS,
            1 => account_filter_flags::CREDITS,
            _ => account_filter_flags::DEBITS | account_filter_flags::CREDITS,
        };
        if chance(rng, 50) {
            flags |= account_filter_flags::REVERSED;
        }
        let mut filter = AccountFilter {
            account_id: self.account_id(rng),
            user_data_128: if chance(rng, 10) {
                range(rng, 1, 3).into()
            } else {
                0
            },
            user_data_64: if chance(rng, 10) { range(rng, 1, 3) } else { 0 },
            user_data_32: if chance(rng, 10) {
                range(rng, 1, 3) as u32
            } else {
                0
            },
            code: if chance(rng, 10) {
                range(rng, 1, 3) as u16
            } else {
                0
            },
            timestamp_min,
            timestamp_max,
            limit: self.limit(rng),
            flags,
            ..AccountFilter::default()
        };
        if chance(rng, self.profile.invalid_percent) {
            match range(rng, 0, 5) {
                0 => filter.account_id = 0,
                1 => filter.account_id = u128::MAX,
                2 => filter.flags &= account_filter_flags::REVERSED,
                3 => filter.flags |= 1 << range(rng, 3, 31),
                4 => filter.reserved[range(rng, 0, 57) as usize] = 1,
                _ => filter.timestamp_min = u64::MAX,
            }
        }
        filter
    }

    fn limit(&self, rng: &mut ChaCha8Rng) -> u32 {
        match range(rng, 0, 9) {
            0 => u32::MAX,
            1 => 1,
            _ => range(rng, 1, 64) as u32,
        }
    }

    fn query_filter(&mut self, rng: &mut ChaCha8Rng) -> QueryFilter {
        let (timestamp_min, timestamp_max) = self.timestamp_bounds(rng);
        let mut filter = QueryFilter {
            user_data_128: if chance(rng, 20) {
                range(rng, 1, 3).into()
            } else {
                0
            },
            user_data_64: if chance(rng, 20) { range(rng, 1, 3) } else { 0 },
            user_data_32: if chance(rng, 20) {
                range(rng, 1, 3) as u32
            } else {
                0
            },
            ledger: if chance(rng, 20) {
                range(rng, 1, u64::from(self.profile.ledgers)) as u32
            } else {
                0
            },
            code: if chance(rng, 20) {
                range(rng, 1, 3) as u16
            } else {
                0
            },
            reserved: [0; 6],
            timestamp_min,
            timestamp_max,
            limit: self.limit(rng),
            flags: if chance(rng, 50) {
                query_filter_flags::REVERSED
            } else {
                0
            },
        };
        if chance(rng, self.profile.invalid_percent) {
            match range(rng, 0, 3) {
                0 => filter.limit = 0,
                1 => filter.flags |= 1 << range(rng, 1, 31),
                2 => filter.reserved[range(rng, 0, 5) as usize] = 1,
                _ => filter.timestamp_max = 1 << 63,
            }
        }
        filter
    }
}

fn write_record(body: &mut [u8], index: usize, bytes: &[u8]) -> usize {
    let size = bytes.len();
    body[index * size..(index + 1) * size].copy_from_slice(bytes);
    size
}

/// A uniform value in `lo..=hi` (multiply-shift; the tiny bias is irrelevant here).
fn range(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    assert!(lo <= hi);
    let span = hi - lo;
    if span == u64::MAX {
        return rng.next_u64();
    }
    lo + ((u128::from(rng.next_u64()) * u128::from(span + 1)) >> 64) as u64
}

fn index_below(rng: &mut ChaCha8Rng, len: usize) -> usize {
    range(rng, 0, len as u64 - 1) as usize
}

/// True with `percent`% probability.
fn chance(rng: &mut ChaCha8Rng, percent: u64) -> bool {
    range(rng, 0, 99) < percent
}

/// True with `per_mille`‰ probability.
fn chance_per_mille(rng: &mut ChaCha8Rng, per_mille: u64) -> bool {
    range(rng, 0, 999) < per_mille
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[index_below(rng, items.len())]
}
