//! Ledger tests: one case per result code (in TigerBeetle's order of checks), behaviour of
//! two-phase transfers, expiry, balancing, closing, history and queries, and the randomized
//! differential test against `model::Model`.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zerocopy::{FromBytes, IntoBytes};

use super::model::Model;
use super::state_machine::{STATUS_EXPIRED, STATUS_PENDING, STATUS_POSTED, STATUS_VOIDED};
use super::types::*;
use super::workload::Workload;
use super::{Ledger, LedgerConfig, LedgerOperation};
use crate::state_machine::StateMachine;

const MESSAGE_SIZE_MAX: u32 = 64 * 1024;
const GAP: u64 = 1_000;

struct Harness {
    ledger: Ledger,
    /// The last prepare timestamp committed.
    timestamp: u64,
    output: Vec<u8>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(64, 256)
    }

    fn with(accounts_max: u32, transfers_max: u32) -> Harness {
        Harness {
            ledger: Ledger::new(LedgerConfig {
                accounts_max,
                transfers_max,
                message_size_max: MESSAGE_SIZE_MAX,
            }),
            timestamp: 1_000_000_000,
            output: vec![0; MESSAGE_SIZE_MAX as usize - 256],
        }
    }

    /// Commits with the next prepare timestamp the primary could choose.
    fn commit(&mut self, operation: LedgerOperation, body: &[u8]) -> Vec<u8> {
        let count = self.ledger.prepare_timestamps(operation as u8, body);
        let timestamp = self.timestamp + count + GAP;
        self.commit_at(timestamp, operation, body)
    }

    fn commit_at(&mut self, timestamp: u64, operation: LedgerOperation, body: &[u8]) -> Vec<u8> {
        assert!(self.ledger.input_valid(operation as u8, body));
        let size = self
            .ledger
            .commit(0, 1, timestamp, operation as u8, body, &mut self.output);
        self.timestamp = timestamp;
        assert_eq!(self.ledger.digest(), self.ledger.digest_recompute());
        self.output[..size].to_vec()
    }

    fn advance(&mut self, ns: u64) {
        self.timestamp += ns;
    }

    fn create_accounts(&mut self, accounts: &[Account]) -> Vec<(u32, CreateAccountResult)> {
        let body = accounts.as_bytes().to_vec();
        let reply = self.commit(LedgerOperation::CreateAccounts, &body);
        results(&reply)
            .map(|(i, r)| (i, CreateAccountResult::from_u32(r).unwrap()))
            .collect()
    }

    fn create_transfers(&mut self, transfers: &[Transfer]) -> Vec<(u32, CreateTransferResult)> {
        let body = transfers.as_bytes().to_vec();
        let reply = self.commit(LedgerOperation::CreateTransfers, &body);
        results(&reply)
            .map(|(i, r)| (i, CreateTransferResult::from_u32(r).unwrap()))
            .collect()
    }

    fn transfer_one(&mut self, t: Transfer) -> CreateTransferResult {
        match self.create_transfers(&[t]).as_slice() {
            [] => CreateTransferResult::Ok,
            [(0, r)] => *r,
            other => panic!("{other:?}"),
        }
    }

    fn account_one(&mut self, a: Account) -> CreateAccountResult {
        match self.create_accounts(&[a]).as_slice() {
            [] => CreateAccountResult::Ok,
            [(0, r)] => *r,
            other => panic!("{other:?}"),
        }
    }

    fn account(&self, id: u128) -> Account {
        *self.ledger.account(id).expect("account")
    }

    fn balances(&self, id: u128) -> [u128; 4] {
        let a = self.account(id);
        [
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ]
    }

    fn get_account_transfers(&mut self, filter: AccountFilter) -> Vec<Transfer> {
        let reply = self.commit(LedgerOperation::GetAccountTransfers, filter.as_bytes());
        records(&reply)
    }

    fn get_account_balances(&mut self, filter: AccountFilter) -> Vec<AccountBalance> {
        let reply = self.commit(LedgerOperation::GetAccountBalances, filter.as_bytes());
        records(&reply)
    }

    /// Accounts 1, 2, 8, 9, 10 plain on ledger 1; 3 on ledger 2; 4 debits must not exceed
    /// credits; 5 credits must not exceed debits; 6 closed; 7 with history.
    fn fixture() -> Harness {
        let mut h = Harness::new();
        let mut accounts = vec![
            account(1, 1),
            account(2, 1),
            account(3, 2),
            account(4, 1),
            account(5, 1),
            account(6, 1),
            account(7, 1),
            account(8, 1),
            account(9, 1),
            account(10, 1),
        ];
        accounts[3].flags = account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        accounts[4].flags = account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS;
        accounts[5].flags = account_flags::CLOSED;
        accounts[6].flags = account_flags::HISTORY;
        assert_eq!(h.create_accounts(&accounts), vec![]);
        h
    }
}

fn results(reply: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    reply
        .chunks_exact(8)
        .map(|c| CreateResult::read_from_bytes(c).unwrap())
        .map(|r| (r.index, r.result))
}

fn records<T: FromBytes>(reply: &[u8]) -> Vec<T> {
    reply
        .chunks_exact(128)
        .map(|c| T::read_from_bytes(c).unwrap())
        .collect()
}

fn account(id: u128, ledger: u32) -> Account {
    Account {
        id,
        ledger,
        code: 1,
        ..Account::default()
    }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    }
}

fn pending(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        flags: transfer_flags::PENDING,
        ..transfer(id, debit, credit, amount)
    }
}

fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount,
        flags: transfer_flags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        flags: transfer_flags::VOID_PENDING_TRANSFER,
        ..Transfer::default()
    }
}

fn filter(account_id: u128) -> AccountFilter {
    AccountFilter {
        account_id,
        limit: 100,
        flags: account_filter_flags::DEBITS | account_filter_flags::CREDITS,
        ..AccountFilter::default()
    }
}

// -------------------------------------------------------------------------------------------
// One case per create_accounts result code.

#[test]
fn create_account_result_codes() {
    use CreateAccountResult as R;
    type Case = (R, fn(&mut Harness) -> Vec<(u32, R)>);
    let cases: Vec<Case> = vec![
        (R::Ok, |h| h.create_accounts(&[account(1, 1)])),
        (R::LinkedEventFailed, |h| {
            let linked = Account {
                flags: account_flags::LINKED,
                ..account(1, 1)
            };
            h.create_accounts(&[linked, account(2, 0)])
        }),
        (R::LinkedEventChainOpen, |h| {
            let linked = Account {
                flags: account_flags::LINKED,
                ..account(1, 1)
            };
            h.create_accounts(&[linked])
        }),
        (R::ImportedEventExpected, |h| {
            let first = Account {
                flags: account_flags::IMPORTED,
                timestamp: 5,
                ..account(1, 1)
            };
            h.create_accounts(&[first, account(2, 1)])
        }),
        (R::ImportedEventNotExpected, |h| {
            let second = Account {
                flags: account_flags::IMPORTED,
                timestamp: 5,
                ..account(2, 1)
            };
            h.create_accounts(&[account(1, 1), second])
        }),
        (R::TimestampMustBeZero, |h| {
            h.create_accounts(&[Account {
                timestamp: 1,
                ..account(1, 1)
            }])
        }),
        (R::ImportedEventTimestampOutOfRange, |h| {
            h.create_accounts(&[Account {
                flags: account_flags::IMPORTED,
                timestamp: 1 << 63,
                ..account(1, 1)
            }])
        }),
        (R::ImportedEventTimestampMustNotAdvance, |h| {
            h.create_accounts(&[Account {
                flags: account_flags::IMPORTED,
                timestamp: h.timestamp + 10 * GAP,
                ..account(1, 1)
            }])
        }),
        (R::ReservedField, |h| {
            h.create_accounts(&[Account {
                reserved: 1,
                id: 0,
                ..account(1, 1)
            }])
        }),
        (R::ReservedFlag, |h| {
            h.create_accounts(&[Account {
                flags: 1 << 6,
                id: 0,
                ..account(1, 1)
            }])
        }),
        (R::IdMustNotBeZero, |h| h.create_accounts(&[account(0, 0)])),
        (R::IdMustNotBeIntMax, |h| {
            h.create_accounts(&[account(u128::MAX, 0)])
        }),
        (R::ExistsWithDifferentFlags, |h| {
            h.create_accounts(&[account(1, 1)]);
            h.create_accounts(&[Account {
                flags: account_flags::HISTORY,
                user_data_32: 9,
                ..account(1, 1)
            }])
        }),
        (R::ExistsWithDifferentUserData128, |h| {
            h.create_accounts(&[account(1, 1)]);
            h.create_accounts(&[Account {
                user_data_128: 1,
                user_data_64: 1,
                ..account(1, 1)
            }])
        }),
        (R::ExistsWithDifferentUserData64, |h| {
            h.create_accounts(&[account(1, 1)]);
            h.create_accounts(&[Account {
                user_data_64: 1,
                user_data_32: 1,
                ..account(1, 1)
            }])
        }),
        (R::ExistsWithDifferentUserData32, |h| {
            h.create_accounts(&[account(1, 1)]);
            h.create_accounts(&[Account {
                user_data_32: 1,
                ..account(1, 2)
            }])
        }),
        (R::ExistsWithDifferentLedger, |h| {
            h.create_accounts(&[account(1, 1)]);
            h.create_accounts(&[Account {
                code: 2,
                ..account(1, 2)
            }])
        }),
        (R::ExistsWithDifferentCode, |h| {
            h.create_accounts(&[account(1, 1)]);
            h.create_accounts(&[Account {
                code: 2,
                ..account(1, 1)
            }])
        }),
        (R::Exists, |h| {
            h.create_accounts(&[account(1, 1)]);
            // Exists wins over checks that come later (here: a nonzero balance).
            h.create_accounts(&[Account {
                debits_posted: 5,
                ..account(1, 1)
            }])
        }),
        (R::AccountsFull, |h| {
            let mut h2 = Harness::with(1, 16);
            h2.create_accounts(&[account(1, 1)]);
            let r = h2.create_accounts(&[account(2, 0)]);
            *h = h2;
            r
        }),
        (R::FlagsAreMutuallyExclusive, |h| {
            h.create_accounts(&[Account {
                flags: account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    | account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                debits_pending: 1,
                ..account(1, 1)
            }])
        }),
        (R::DebitsPendingMustBeZero, |h| {
            h.create_accounts(&[Account {
                debits_pending: 1,
                debits_posted: 1,
                ..account(1, 1)
            }])
        }),
        (R::DebitsPostedMustBeZero, |h| {
            h.create_accounts(&[Account {
                debits_posted: 1,
                credits_pending: 1,
                ..account(1, 1)
            }])
        }),
        (R::CreditsPendingMustBeZero, |h| {
            h.create_accounts(&[Account {
                credits_pending: 1,
                credits_posted: 1,
                ..account(1, 1)
            }])
        }),
        (R::CreditsPostedMustBeZero, |h| {
            h.create_accounts(&[Account {
                credits_posted: 1,
                ..account(1, 0)
            }])
        }),
        (R::LedgerMustNotBeZero, |h| {
            h.create_accounts(&[Account {
                code: 0,
                ..account(1, 0)
            }])
        }),
        (R::CodeMustNotBeZero, |h| {
            h.create_accounts(&[Account {
                code: 0,
                ..account(1, 1)
            }])
        }),
        (R::ImportedEventTimestampMustNotRegress, |h| {
            let at = |id, timestamp| Account {
                flags: account_flags::IMPORTED,
                timestamp,
                ..account(id, 1)
            };
            assert_eq!(h.create_accounts(&[at(1, 10)]), vec![]);
            h.create_accounts(&[at(2, 10), at(3, 9), at(4, 11)])
        }),
    ];
    let mut covered = Vec::new();
    for (expected, case) in cases {
        let mut h = Harness::new();
        let got = case(&mut h);
        if expected == R::Ok {
            assert_eq!(got, vec![], "ok");
        } else {
            assert!(
                got.iter().any(|&(_, r)| r == expected),
                "{expected}: got {got:?}"
            );
            // The first failure reported is the expected one (unless it is a chain casualty).
            let first = got
                .iter()
                .find(|&&(_, r)| r != R::LinkedEventFailed)
                .map(|&(_, r)| r);
            if expected != R::LinkedEventFailed {
                assert_eq!(first, Some(expected), "{got:?}");
            }
        }
        covered.push(expected);
    }
    for &code in R::ALL {
        assert!(covered.contains(&code), "no case for {code}");
    }
}

#[test]
fn account_import_regress_details() {
    use CreateAccountResult as R;
    let mut h = Harness::new();
    let at = |id, timestamp| Account {
        flags: account_flags::IMPORTED,
        timestamp,
        ..account(id, 1)
    };
    assert_eq!(h.create_accounts(&[at(1, 10), at(2, 20)]), vec![]);
    assert_eq!(
        h.create_accounts(&[at(3, 20), at(4, 15), at(5, 21)]),
        vec![
            (0, R::ImportedEventTimestampMustNotRegress),
            (1, R::ImportedEventTimestampMustNotRegress)
        ]
    );
    assert_eq!(h.account(1).timestamp, 10);
    assert_eq!(h.account(5).timestamp, 21);
    // An imported account may not take a transfer's timestamp either.
    let t = Transfer {
        flags: transfer_flags::IMPORTED,
        timestamp: 30,
        ..transfer(1, 1, 2, 1)
    };
    assert_eq!(h.transfer_one(t), CreateTransferResult::Ok);
    assert_eq!(
        h.account_one(at(6, 30)),
        R::ImportedEventTimestampMustNotRegress
    );
    assert_eq!(h.account_one(at(6, 31)), R::Ok);
}

// -------------------------------------------------------------------------------------------
// One case per create_transfers result code.

#[test]
fn create_transfer_result_codes() {
    use transfer_flags as F;
    use CreateTransferResult as R;
    type Case = (R, fn(&mut Harness) -> Vec<(u32, R)>);
    let cases: Vec<Case> = vec![
        (R::Ok, |h| h.create_transfers(&[transfer(1, 1, 2, 10)])),
        (R::LinkedEventFailed, |h| {
            let linked = Transfer {
                flags: F::LINKED,
                ..transfer(1, 1, 2, 10)
            };
            h.create_transfers(&[linked, transfer(2, 1, 1, 1)])
        }),
        (R::LinkedEventChainOpen, |h| {
            let linked = Transfer {
                flags: F::LINKED,
                ..transfer(1, 1, 2, 10)
            };
            h.create_transfers(&[linked])
        }),
        (R::ImportedEventExpected, |h| {
            let first = Transfer {
                flags: F::IMPORTED,
                timestamp: h.timestamp + 1,
                ..transfer(1, 1, 2, 10)
            };
            h.create_transfers(&[first, transfer(2, 1, 2, 1)])
        }),
        (R::ImportedEventNotExpected, |h| {
            let second = Transfer {
                flags: F::IMPORTED,
                timestamp: h.timestamp + 1,
                ..transfer(2, 1, 2, 10)
            };
            h.create_transfers(&[transfer(1, 1, 2, 1), second])
        }),
        (R::TimestampMustBeZero, |h| {
            h.create_transfers(&[Transfer {
                timestamp: 7,
                flags: 1 << 9,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ImportedEventTimestampOutOfRange, |h| {
            h.create_transfers(&[Transfer {
                flags: F::IMPORTED,
                timestamp: 0,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ImportedEventTimestampMustNotAdvance, |h| {
            h.create_transfers(&[Transfer {
                flags: F::IMPORTED,
                timestamp: h.timestamp + 100 * GAP,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ReservedFlag, |h| {
            h.create_transfers(&[Transfer {
                flags: 1 << 15,
                id: 0,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::IdMustNotBeZero, |h| {
            h.create_transfers(&[transfer(0, 0, 0, 0)])
        }),
        (R::IdMustNotBeIntMax, |h| {
            h.create_transfers(&[transfer(u128::MAX, 0, 0, 0)])
        }),
        (R::ExistsWithDifferentFlags, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[pending(1, 1, 9, 11)])
        }),
        (R::ExistsWithDifferentPendingId, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                pending_id: 5,
                timeout: 1,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ExistsWithDifferentTimeout, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                timeout: 1,
                ..transfer(1, 9, 2, 10)
            }])
        }),
        (R::ExistsWithDifferentDebitAccountId, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[transfer(1, 9, 8, 11)])
        }),
        (R::ExistsWithDifferentCreditAccountId, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[transfer(1, 1, 8, 11)])
        }),
        (R::ExistsWithDifferentAmount, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                user_data_128: 1,
                ..transfer(1, 1, 2, 11)
            }])
        }),
        (R::ExistsWithDifferentUserData128, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                user_data_128: 1,
                user_data_64: 1,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ExistsWithDifferentUserData64, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                user_data_64: 1,
                user_data_32: 1,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ExistsWithDifferentUserData32, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                user_data_32: 1,
                ledger: 2,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ExistsWithDifferentLedger, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                ledger: 2,
                code: 2,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ExistsWithDifferentCode, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                code: 2,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::Exists, |h| {
            h.create_transfers(&[transfer(1, 1, 2, 10)]);
            h.create_transfers(&[transfer(1, 1, 2, 10)])
        }),
        (R::IdAlreadyFailed, |h| {
            assert_eq!(
                h.transfer_one(transfer(1, 1, 99, 10)),
                R::CreditAccountNotFound
            );
            h.create_transfers(&[transfer(1, 1, 2, 10)])
        }),
        (R::TransfersFull, |h| {
            // Failed ids count against the table: one transfer, one remembered failure.
            let mut h2 = Harness::with(16, 2);
            h2.create_accounts(&[account(1, 1), account(2, 1)]);
            assert_eq!(h2.transfer_one(transfer(1, 1, 2, 10)), R::Ok);
            assert_eq!(
                h2.transfer_one(transfer(2, 1, 99, 10)),
                R::CreditAccountNotFound
            );
            let r = h2.create_transfers(&[transfer(3, 0, 0, 0)]);
            *h = h2;
            r
        }),
        (R::FlagsAreMutuallyExclusive, |h| {
            h.create_transfers(&[Transfer {
                flags: F::POST_PENDING_TRANSFER | F::BALANCING_DEBIT,
                pending_id: 0,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::DebitAccountIdMustNotBeZero, |h| {
            h.create_transfers(&[transfer(1, 0, u128::MAX, 10)])
        }),
        (R::DebitAccountIdMustNotBeIntMax, |h| {
            h.create_transfers(&[transfer(1, u128::MAX, 0, 10)])
        }),
        (R::CreditAccountIdMustNotBeZero, |h| {
            h.create_transfers(&[transfer(1, 1, 0, 10)])
        }),
        (R::CreditAccountIdMustNotBeIntMax, |h| {
            h.create_transfers(&[transfer(1, 1, u128::MAX, 10)])
        }),
        (R::AccountsMustBeDifferent, |h| {
            h.create_transfers(&[Transfer {
                pending_id: 3,
                ..transfer(1, 1, 1, 10)
            }])
        }),
        (R::PendingIdMustBeZero, |h| {
            h.create_transfers(&[Transfer {
                pending_id: 3,
                timeout: 1,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::PendingIdMustNotBeZero, |h| {
            h.create_transfers(&[post(1, 0, 0)])
        }),
        (R::PendingIdMustNotBeIntMax, |h| {
            h.create_transfers(&[post(1, u128::MAX, 0)])
        }),
        (R::PendingIdMustBeDifferent, |h| {
            h.create_transfers(&[post(1, 1, 0)])
        }),
        (R::TimeoutReservedForPendingTransfer, |h| {
            h.create_transfers(&[Transfer {
                timeout: 1,
                flags: F::CLOSING_DEBIT,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::ClosingTransferMustBePending, |h| {
            h.create_transfers(&[Transfer {
                flags: F::CLOSING_CREDIT,
                ledger: 0,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::LedgerMustNotBeZero, |h| {
            h.create_transfers(&[Transfer {
                ledger: 0,
                code: 0,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::CodeMustNotBeZero, |h| {
            h.create_transfers(&[Transfer {
                code: 0,
                ..transfer(1, 98, 99, 10)
            }])
        }),
        (R::DebitAccountNotFound, |h| {
            h.create_transfers(&[transfer(1, 98, 99, 10)])
        }),
        (R::CreditAccountNotFound, |h| {
            h.create_transfers(&[transfer(1, 1, 99, 10)])
        }),
        (R::AccountsMustHaveTheSameLedger, |h| {
            h.create_transfers(&[transfer(1, 1, 3, 10)])
        }),
        (R::TransferMustHaveTheSameLedgerAsAccounts, |h| {
            h.create_transfers(&[Transfer {
                ledger: 2,
                ..transfer(1, 1, 2, 10)
            }])
        }),
        (R::PendingTransferNotFound, |h| {
            h.create_transfers(&[post(1, 50, 0)])
        }),
        (R::PendingTransferNotPending, |h| {
            h.create_transfers(&[transfer(50, 1, 2, 10)]);
            h.create_transfers(&[post(1, 50, 0)])
        }),
        (R::PendingTransferHasDifferentDebitAccountId, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                debit_account_id: 9,
                credit_account_id: 9,
                ..post(1, 50, 0)
            }])
        }),
        (R::PendingTransferHasDifferentCreditAccountId, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                debit_account_id: 1,
                credit_account_id: 9,
                ledger: 7,
                ..post(1, 50, 0)
            }])
        }),
        (R::PendingTransferHasDifferentLedger, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                ledger: 7,
                code: 7,
                ..post(1, 50, 0)
            }])
        }),
        (R::PendingTransferHasDifferentCode, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                code: 7,
                ..post(1, 50, 11)
            }])
        }),
        (R::ExceedsPendingTransferAmount, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[post(1, 50, 11)])
        }),
        (R::PendingTransferHasDifferentAmount, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[Transfer {
                amount: 9,
                ..void(1, 50)
            }])
        }),
        (R::PendingTransferAlreadyPosted, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[post(1, 50, 5)]);
            h.create_transfers(&[void(2, 50)])
        }),
        (R::PendingTransferAlreadyVoided, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[void(1, 50)]);
            h.create_transfers(&[post(2, 50, 5)])
        }),
        (R::PendingTransferExpired, |h| {
            h.create_transfers(&[Transfer {
                timeout: 1,
                ..pending(50, 1, 2, 10)
            }]);
            h.advance(NS_PER_S);
            h.create_transfers(&[post(1, 50, 5)])
        }),
        (R::ImportedEventTimestampMustNotRegress, |h| {
            let at = |id, timestamp| Transfer {
                flags: F::IMPORTED,
                timestamp,
                ..transfer(id, 1, 2, 1)
            };
            let base = h.timestamp + 1;
            assert_eq!(h.create_transfers(&[at(1, base + 5)]), vec![]);
            h.create_transfers(&[at(2, base + 5)])
        }),
        (R::ImportedEventTimestampMustPostdateDebitAccount, |h| {
            h.create_transfers(&[Transfer {
                flags: F::IMPORTED,
                timestamp: 10,
                ..transfer(1, 1, 2, 1)
            }])
        }),
        (R::ImportedEventTimestampMustPostdateCreditAccount, |h| {
            h.create_accounts(&[account(20, 1)]);
            let credit_timestamp = h.account(20).timestamp;
            h.create_transfers(&[Transfer {
                flags: F::IMPORTED,
                timestamp: credit_timestamp - 1,
                ..transfer(1, 1, 20, 1)
            }])
        }),
        (R::ImportedEventTimeoutMustBeZero, |h| {
            h.create_transfers(&[Transfer {
                flags: F::IMPORTED | F::PENDING,
                timestamp: h.timestamp + 1,
                timeout: 1,
                ..transfer(1, 1, 2, 1)
            }])
        }),
        (R::DebitAccountAlreadyClosed, |h| {
            h.create_transfers(&[transfer(1, 6, 6 + 2, u128::MAX)])
        }),
        (R::CreditAccountAlreadyClosed, |h| {
            h.create_transfers(&[transfer(1, 1, 6, u128::MAX)])
        }),
        (R::OverflowsDebitsPending, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[pending(1, 1, 8, u128::MAX - 5)])
        }),
        (R::OverflowsCreditsPending, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10)]);
            h.create_transfers(&[pending(1, 8, 2, u128::MAX - 5)])
        }),
        (R::OverflowsDebitsPosted, |h| {
            h.create_transfers(&[transfer(50, 1, 2, 10)]);
            h.create_transfers(&[pending(1, 1, 8, u128::MAX - 5)])
        }),
        (R::OverflowsCreditsPosted, |h| {
            h.create_transfers(&[transfer(50, 1, 2, 10)]);
            h.create_transfers(&[transfer(1, 8, 2, u128::MAX - 5)])
        }),
        (R::OverflowsDebits, |h| {
            h.create_transfers(&[pending(50, 1, 2, 10), transfer(51, 1, 8, 10)]);
            h.create_transfers(&[transfer(1, 1, 9, u128::MAX - 15)])
        }),
        (R::OverflowsCredits, |h| {
            h.create_transfers(&[pending(50, 2, 1, 10), transfer(51, 8, 1, 10)]);
            h.create_transfers(&[transfer(1, 9, 1, u128::MAX - 15)])
        }),
        (R::OverflowsTimeout, |h| {
            h.timestamp = TIMESTAMP_MAX - u64::from(u32::MAX) * NS_PER_S;
            h.create_transfers(&[Transfer {
                timeout: u32::MAX,
                ..pending(1, 4, 2, 10)
            }])
        }),
        (R::ExceedsCredits, |h| {
            h.create_transfers(&[transfer(1, 4, 5, 1)])
        }),
        (R::ExceedsDebits, |h| {
            h.create_transfers(&[transfer(1, 1, 5, 1)])
        }),
    ];
    let mut covered = Vec::new();
    for (expected, case) in cases {
        let mut h = Harness::fixture();
        let got = case(&mut h);
        if expected == R::Ok {
            assert_eq!(got, vec![], "ok");
        } else {
            let first = got
                .iter()
                .find(|&&(_, r)| r != R::LinkedEventFailed)
                .map(|&(_, r)| r);
            let expected_first = if expected == R::LinkedEventFailed {
                Some(R::AccountsMustBeDifferent)
            } else {
                Some(expected)
            };
            assert_eq!(first, expected_first, "{expected}: {got:?}");
            assert!(
                got.iter().any(|&(_, r)| r == expected),
                "{expected}: {got:?}"
            );
        }
        covered.push(expected);
    }
    for &code in R::ALL {
        if code != R::AmountMustNotBeZero {
            assert!(covered.contains(&code), "no case for {code}");
        }
    }
}

#[test]
fn exists_for_balancing_and_post_retries() {
    use transfer_flags as F;
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    // Account 4 may debit only what it has been credited: 30.
    assert_eq!(h.transfer_one(transfer(1, 1, 4, 30)), R::Ok);
    let balancing = Transfer {
        flags: F::BALANCING_DEBIT,
        ..transfer(2, 4, 2, 100)
    };
    assert_eq!(h.transfer_one(balancing), R::Ok);
    assert_eq!(h.ledger.transfer(2).unwrap().amount, 30);
    // A retry with any upper bound that allows what moved is `exists`.
    assert_eq!(
        h.transfer_one(Transfer {
            amount: 30,
            ..balancing
        }),
        R::Exists
    );
    assert_eq!(
        h.transfer_one(Transfer {
            amount: 1000,
            ..balancing
        }),
        R::Exists
    );
    assert_eq!(
        h.transfer_one(Transfer {
            amount: 29,
            ..balancing
        }),
        R::ExistsWithDifferentAmount
    );

    // Posts inherit fields left zero from the pending transfer.
    let p = Transfer {
        user_data_64: 77,
        ..pending(10, 1, 2, 50)
    };
    assert_eq!(h.transfer_one(p), R::Ok);
    assert_eq!(h.transfer_one(post(11, 10, u128::MAX)), R::Ok);
    let stored = *h.ledger.transfer(11).unwrap();
    assert_eq!(
        (
            stored.amount,
            stored.user_data_64,
            stored.debit_account_id,
            stored.ledger
        ),
        (50, 77, 1, 1)
    );
    assert_eq!(h.transfer_one(post(11, 10, u128::MAX)), R::Exists);
    assert_eq!(h.transfer_one(post(11, 10, 50)), R::Exists);
    assert_eq!(
        h.transfer_one(post(11, 10, 49)),
        R::ExistsWithDifferentAmount
    );
    assert_eq!(
        h.transfer_one(Transfer {
            user_data_64: 77,
            debit_account_id: 1,
            ledger: 1,
            ..post(11, 10, 50)
        }),
        R::Exists
    );
    assert_eq!(
        h.transfer_one(Transfer {
            user_data_64: 78,
            ..post(11, 10, 50)
        }),
        R::ExistsWithDifferentUserData64
    );
    assert_eq!(
        h.transfer_one(Transfer {
            credit_account_id: 9,
            ..post(11, 10, 50)
        }),
        R::ExistsWithDifferentCreditAccountId
    );
    assert_eq!(
        h.transfer_one(Transfer {
            code: 3,
            ..post(11, 10, 50)
        }),
        R::ExistsWithDifferentCode
    );
}

// -------------------------------------------------------------------------------------------
// Behaviour.

#[test]
fn two_phase_post_void_and_balances() {
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    assert_eq!(h.transfer_one(pending(1, 1, 2, 100)), R::Ok);
    assert_eq!(h.balances(1), [100, 0, 0, 0]);
    assert_eq!(h.balances(2), [0, 0, 100, 0]);
    assert_eq!(h.ledger.transfer_status(1), Some(STATUS_PENDING));
    // Partial post: the rest of the reservation is released.
    assert_eq!(h.transfer_one(post(2, 1, 60)), R::Ok);
    assert_eq!(h.balances(1), [0, 60, 0, 0]);
    assert_eq!(h.balances(2), [0, 0, 0, 60]);
    assert_eq!(h.ledger.transfer_status(1), Some(STATUS_POSTED));
    // Void releases all of it.
    assert_eq!(h.transfer_one(pending(3, 1, 2, 40)), R::Ok);
    assert_eq!(h.transfer_one(void(4, 3)), R::Ok);
    assert_eq!(h.ledger.transfer_status(3), Some(STATUS_VOIDED));
    assert_eq!(h.balances(1), [0, 60, 0, 0]);
    assert_eq!(h.ledger.transfer(4).unwrap().amount, 40);
    // Zero-amount transfers are allowed.
    assert_eq!(h.transfer_one(transfer(5, 1, 2, 0)), R::Ok);
}

#[test]
fn pending_transfers_expire_by_cluster_time() {
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    let timed = |id, seconds| Transfer {
        timeout: seconds,
        ..pending(id, 1, 2, 10)
    };
    assert_eq!(
        h.create_transfers(&[timed(1, 1), timed(2, 2), timed(3, 1)]),
        vec![]
    );
    let created = h.ledger.transfer(1).unwrap().timestamp;
    assert_eq!(h.balances(1), [30, 0, 0, 0]);
    assert_eq!(h.transfer_one(post(4, 3, 10)), R::Ok);
    // Just before the first expiry nothing changes; a lookup at or after it sweeps.
    h.commit_at(created + NS_PER_S - 1, LedgerOperation::LookupAccounts, &[]);
    assert_eq!(h.balances(1), [20, 10, 0, 0]);
    h.commit_at(created + NS_PER_S, LedgerOperation::LookupAccounts, &[]);
    assert_eq!(h.balances(1), [10, 10, 0, 0]);
    assert_eq!(h.ledger.transfer_status(1), Some(STATUS_EXPIRED));
    assert_eq!(h.ledger.transfer_status(3), Some(STATUS_POSTED));
    assert_eq!(h.transfer_one(void(5, 1)), R::PendingTransferExpired);
    h.advance(NS_PER_S);
    h.commit(LedgerOperation::LookupAccounts, &[]);
    assert_eq!(h.balances(1), [0, 10, 0, 0]);
    assert_eq!(h.balances(2), [0, 0, 0, 10]);
}

#[test]
fn expiry_due_inside_a_batch_is_reported_before_the_sweep() {
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    assert_eq!(
        h.transfer_one(Transfer {
            timeout: 1,
            ..pending(1, 1, 2, 10)
        }),
        R::Ok
    );
    let expires_at = h.ledger.transfer(1).unwrap().timestamp + NS_PER_S;
    // Two events: timestamps expires_at - 1 and expires_at. The sweep ran before the batch
    // (at expires_at - 2), so the first sees it pending, the second sees it due.
    let body = [transfer(2, 8, 9, 1), post(3, 1, 10)];
    let reply = h.commit_at(
        expires_at,
        LedgerOperation::CreateTransfers,
        body.as_bytes(),
    );
    let got: Vec<_> = results(&reply).collect();
    assert_eq!(got, vec![(1, R::PendingTransferExpired as u32)]);
    assert_eq!(h.balances(1), [10, 0, 0, 0]);
    assert_eq!(h.ledger.transfer_status(1), Some(STATUS_PENDING));
    h.commit(LedgerOperation::LookupAccounts, &[]);
    assert_eq!(h.balances(1), [0, 0, 0, 0]);
}

#[test]
fn linked_chains_are_all_or_nothing() {
    use transfer_flags as F;
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    let digest = h.ledger.digest();
    let linked = |t: Transfer| Transfer {
        flags: t.flags | F::LINKED,
        ..t
    };
    let got = h.create_transfers(&[
        linked(transfer(1, 1, 2, 10)),
        linked(pending(2, 1, 2, 5)),
        linked(post(3, 2, 5)),
        transfer(4, 1, 99, 1), // Fails: the whole chain is undone.
        transfer(5, 1, 2, 7),  // Independent.
        linked(transfer(6, 1, 2, 1)),
        linked(transfer(6, 1, 2, 1)), // Exists within its own chain: fails it.
        transfer(7, 1, 2, 1),
        linked(transfer(8, 1, 2, 1)), // Open at the end of the batch.
    ]);
    assert_eq!(
        got,
        vec![
            (0, R::LinkedEventFailed),
            (1, R::LinkedEventFailed),
            (2, R::LinkedEventFailed),
            (3, R::CreditAccountNotFound),
            (5, R::LinkedEventFailed),
            (6, R::Exists),
            (7, R::LinkedEventFailed),
            (8, R::LinkedEventChainOpen),
        ]
    );
    assert_eq!(h.balances(1), [0, 7, 0, 0]);
    assert!(h.ledger.transfer(1).is_none() && h.ledger.transfer(2).is_none());
    assert_eq!(h.ledger.transfers_count(), 1);
    // The transient failure is remembered even though its chain was rolled back.
    assert_eq!(h.transfer_one(transfer(4, 1, 2, 1)), R::IdAlreadyFailed);
    assert_ne!(h.ledger.digest(), digest);
    // A failed chain leaves the digest as if it had never run.
    let before = h.ledger.digest();
    h.create_transfers(&[linked(transfer(20, 1, 2, 1)), transfer(21, 1, 1, 1)]);
    assert_eq!(h.ledger.digest(), before);
    // And a chain of account creations.
    let a = |id| Account {
        flags: account_flags::LINKED,
        ..account(id, 1)
    };
    assert_eq!(
        h.create_accounts(&[a(30), a(31), account(1, 1), account(32, 1)]),
        vec![
            (0, CreateAccountResult::LinkedEventFailed),
            (1, CreateAccountResult::LinkedEventFailed),
            (2, CreateAccountResult::Exists),
        ]
    );
    assert!(h.ledger.account(30).is_none());
    assert!(h.ledger.account(32).is_some());
}

#[test]
fn closing_accounts_and_reopening_by_void() {
    use transfer_flags as F;
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    let closing = Transfer {
        flags: F::PENDING | F::CLOSING_DEBIT | F::CLOSING_CREDIT,
        ..transfer(1, 1, 2, 0)
    };
    assert_eq!(h.transfer_one(closing), R::Ok);
    assert_ne!(h.account(1).flags & account_flags::CLOSED, 0);
    assert_eq!(
        h.transfer_one(transfer(2, 1, 8, 1)),
        R::DebitAccountAlreadyClosed
    );
    assert_eq!(
        h.transfer_one(transfer(3, 8, 2, 1)),
        R::CreditAccountAlreadyClosed
    );
    assert_eq!(h.transfer_one(post(4, 1, 0)), R::DebitAccountAlreadyClosed);
    assert_eq!(h.transfer_one(void(5, 1)), R::Ok);
    assert_eq!(h.account(1).flags & account_flags::CLOSED, 0);
    assert_eq!(h.account(2).flags & account_flags::CLOSED, 0);
    assert_eq!(h.transfer_one(transfer(6, 1, 8, 1)), R::Ok);
    // A closing transfer that times out reopens the account too.
    let closing = Transfer {
        timeout: 1,
        flags: F::PENDING | F::CLOSING_CREDIT,
        ..transfer(7, 1, 2, 0)
    };
    assert_eq!(h.transfer_one(closing), R::Ok);
    assert_ne!(h.account(2).flags & account_flags::CLOSED, 0);
    h.advance(NS_PER_S);
    h.commit(LedgerOperation::LookupAccounts, &[]);
    assert_eq!(h.account(2).flags & account_flags::CLOSED, 0);
}

#[test]
fn balancing_transfers_move_at_most_what_limits_allow() {
    use transfer_flags as F;
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    assert_eq!(h.transfer_one(transfer(1, 1, 4, 100)), R::Ok);
    let drain = Transfer {
        flags: F::BALANCING_DEBIT,
        ..transfer(2, 4, 2, 70)
    };
    assert_eq!(h.transfer_one(drain), R::Ok);
    assert_eq!(h.ledger.transfer(2).unwrap().amount, 70);
    let drain = Transfer {
        flags: F::BALANCING_DEBIT | F::PENDING,
        ..transfer(3, 4, 2, u128::MAX)
    };
    assert_eq!(h.transfer_one(drain), R::Ok);
    assert_eq!(h.ledger.transfer(3).unwrap().amount, 30);
    assert_eq!(h.balances(4), [30, 70, 0, 100]);
    // Nothing left: a balancing transfer of zero still succeeds.
    let drain = Transfer {
        flags: F::BALANCING_DEBIT,
        ..transfer(4, 4, 2, 5)
    };
    assert_eq!(h.transfer_one(drain), R::Ok);
    assert_eq!(h.ledger.transfer(4).unwrap().amount, 0);
    // Balancing credit against account 5 (credits must not exceed debits).
    assert_eq!(h.transfer_one(transfer(5, 5, 1, 8)), R::Ok);
    let fill = Transfer {
        flags: F::BALANCING_CREDIT,
        ..transfer(6, 1, 5, 20)
    };
    assert_eq!(h.transfer_one(fill), R::Ok);
    assert_eq!(h.ledger.transfer(6).unwrap().amount, 8);
}

#[test]
fn history_and_account_transfers() {
    use CreateTransferResult as R;
    let mut h = Harness::fixture();
    assert_eq!(
        h.create_transfers(&[
            transfer(1, 7, 1, 10),
            Transfer {
                user_data_32: 5,
                ..transfer(2, 1, 7, 3)
            },
            pending(3, 7, 2, 4),
            transfer(4, 1, 2, 100),
        ]),
        vec![]
    );
    assert_eq!(h.transfer_one(void(5, 3)), R::Ok);
    let ids = |ts: &[Transfer]| ts.iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(ids(&h.get_account_transfers(filter(7))), vec![1, 2, 3, 5]);
    let reversed = AccountFilter {
        flags: filter(7).flags | account_filter_flags::REVERSED,
        limit: 2,
        ..filter(7)
    };
    assert_eq!(ids(&h.get_account_transfers(reversed)), vec![5, 3]);
    let debits = AccountFilter {
        flags: account_filter_flags::DEBITS,
        ..filter(7)
    };
    assert_eq!(ids(&h.get_account_transfers(debits)), vec![1, 3, 5]);
    let udf = AccountFilter {
        user_data_32: 5,
        ..filter(7)
    };
    assert_eq!(ids(&h.get_account_transfers(udf)), vec![2]);
    let t2 = h.ledger.transfer(2).unwrap().timestamp;
    let t3 = h.ledger.transfer(3).unwrap().timestamp;
    let window = AccountFilter {
        timestamp_min: t2,
        timestamp_max: t3,
        ..filter(7)
    };
    assert_eq!(ids(&h.get_account_transfers(window)), vec![2, 3]);

    let balances = h.get_account_balances(filter(7));
    let got: Vec<_> = balances
        .iter()
        .map(|b| {
            (
                b.debits_pending,
                b.debits_posted,
                b.credits_pending,
                b.credits_posted,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(0, 10, 0, 0), (0, 10, 0, 3), (4, 10, 0, 3), (0, 10, 0, 3)]
    );
    assert_eq!(balances[1].timestamp, t2);
    // No history: nothing. Invalid filters: nothing.
    assert!(h.get_account_balances(filter(1)).is_empty());
    assert!(h
        .get_account_transfers(AccountFilter {
            flags: 0,
            ..filter(7)
        })
        .is_empty());
    assert!(h
        .get_account_transfers(AccountFilter {
            limit: 0,
            ..filter(7)
        })
        .is_empty());
    assert!(h
        .get_account_transfers(AccountFilter {
            timestamp_min: t3,
            timestamp_max: t2,
            ..filter(7)
        })
        .is_empty());
}

#[test]
fn queries_and_lookups() {
    let mut h = Harness::fixture();
    let reply = h.commit(LedgerOperation::LookupAccounts, [3u128, 99, 1].as_bytes());
    let found: Vec<Account> = records(&reply);
    assert_eq!(found.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 1]);
    let query = QueryFilter {
        ledger: 1,
        limit: 3,
        flags: query_filter_flags::REVERSED,
        ..QueryFilter::default()
    };
    let reply = h.commit(LedgerOperation::QueryAccounts, query.as_bytes());
    let found: Vec<Account> = records(&reply);
    assert_eq!(
        found.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![10, 9, 8]
    );
    h.create_transfers(&[
        Transfer {
            code: 2,
            ..transfer(1, 1, 2, 1)
        },
        transfer(2, 1, 2, 1),
        Transfer {
            code: 2,
            ..transfer(3, 1, 2, 1)
        },
    ]);
    let query = QueryFilter {
        code: 2,
        limit: 10,
        ..QueryFilter::default()
    };
    let reply = h.commit(LedgerOperation::QueryTransfers, query.as_bytes());
    let found: Vec<Transfer> = records(&reply);
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 3]);
    let reply = h.commit(LedgerOperation::LookupTransfers, [3u128, 2].as_bytes());
    let found: Vec<Transfer> = records(&reply);
    assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), vec![3, 2]);
}

#[test]
fn input_validation() {
    let h = Harness::new();
    let l = &h.ledger;
    let events_max = (MESSAGE_SIZE_MAX as usize - 256) / 128;
    assert!(l.input_valid(129, &[]));
    assert!(l.input_valid(130, &vec![0; 128 * events_max]));
    assert!(!l.input_valid(130, &vec![0; 128 * (events_max + 1)]));
    assert!(!l.input_valid(130, &[0; 127]));
    assert!(l.input_valid(131, &[0; 32]));
    assert!(!l.input_valid(131, &[0; 24]));
    assert!(!l.input_valid(131, &vec![0; 16 * (events_max + 1)]));
    assert!(l.input_valid(133, &[0; 128]));
    assert!(!l.input_valid(133, &[]));
    assert!(!l.input_valid(134, &[0; 256]));
    assert!(l.input_valid(135, &[0; 64]));
    assert!(!l.input_valid(136, &[0; 128]));
    assert!(!l.input_valid(128, &[]));
    assert!(!l.input_valid(137, &[]));
    assert_eq!(l.prepare_timestamps(130, &[0; 384]), 3);
    assert_eq!(l.prepare_timestamps(131, &[0; 32]), 0);
    for op in LedgerOperation::ALL {
        assert_eq!(LedgerOperation::from_u8(op as u8), Some(op));
        assert_eq!(LedgerOperation::from_name(op.name()), Some(op));
    }
}

#[test]
fn expiry_heap_drops_stale_entries_instead_of_growing() {
    use transfer_flags as F;
    use CreateTransferResult as R;
    let mut h = Harness::with(4, 2);
    h.create_accounts(&[account(1, 1), account(2, 1)]);
    let capacities = h.ledger.capacities();
    let timed = |id| Transfer {
        timeout: 1,
        ..pending(id, 1, 2, 10)
    };
    // Each rolled-back chain leaves a stale expiry entry behind.
    for id in 0..10 {
        let chain = [
            Transfer {
                flags: F::PENDING | F::LINKED,
                ..timed(100 + id)
            },
            transfer(200 + id, 1, 1, 1),
        ];
        assert_eq!(
            h.create_transfers(&chain),
            vec![(0, R::LinkedEventFailed), (1, R::AccountsMustBeDifferent)]
        );
    }
    assert_eq!(h.transfer_one(timed(1)), R::Ok);
    assert_eq!(h.balances(1), [10, 0, 0, 0]);
    h.advance(NS_PER_S);
    h.commit(LedgerOperation::LookupAccounts, &[]);
    assert_eq!(h.balances(1), [0, 0, 0, 0]);
    assert_eq!(h.ledger.transfer_status(1), Some(STATUS_EXPIRED));
    assert_eq!(h.ledger.capacities(), capacities);
}

#[test]
fn default_memory_budget() {
    let bytes = LedgerConfig::default().memory_bytes();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    assert!((1.4..1.6).contains(&gib), "{gib} GiB");
}

#[test]
fn full_tables_answer_without_panicking() {
    let mut h = Harness::with(2, 3);
    let got = h.create_accounts(&[account(1, 1), account(2, 1), account(3, 1), account(1, 1)]);
    assert_eq!(
        got,
        vec![
            (2, CreateAccountResult::AccountsFull),
            (3, CreateAccountResult::Exists)
        ]
    );
    let got = h.create_transfers(&[
        transfer(1, 1, 2, 1),
        transfer(2, 1, 2, 1),
        transfer(3, 1, 2, 1),
        transfer(4, 1, 2, 1),
        transfer(1, 1, 2, 1),
    ]);
    assert_eq!(
        got,
        vec![
            (3, CreateTransferResult::TransfersFull),
            (4, CreateTransferResult::Exists)
        ]
    );
}

#[test]
fn unaligned_input_is_read_correctly() {
    let mut h = Harness::fixture();
    let mut body = [0u8; 1 + 128];
    body[1..].copy_from_slice(transfer(1, 1, 2, 5).as_bytes());
    let count = h.ledger.prepare_timestamps(130, &body[1..]);
    let timestamp = h.timestamp + count + GAP;
    h.commit_at(timestamp, LedgerOperation::CreateTransfers, &body[1..]);
    assert_eq!(h.balances(1), [0, 5, 0, 0]);
}

// -------------------------------------------------------------------------------------------
// The differential test.

/// Runs the workload against the ledger and the model and requires identical replies and state.
/// `LEDGER_DIFFERENTIAL_EVENTS` sets the number of events (default 400,000) and
/// `LEDGER_DIFFERENTIAL_SEED` the first seed (default 0).
#[test]
fn differential_against_model() {
    let events_target: u64 = std::env::var("LEDGER_DIFFERENTIAL_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let seed_base: u64 = std::env::var("LEDGER_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut totals = Totals::default();
    let mut seed = seed_base;
    while totals.events < events_target {
        run_differential(seed, events_target - totals.events, &mut totals);
        seed += 1;
    }
    let mut codes: Vec<String> = totals
        .transfer_codes
        .iter()
        .map(|(c, n)| format!("{}={n}", CreateTransferResult::from_u32(*c).unwrap()))
        .collect();
    codes.sort();
    eprintln!(
        "ledger differential: {} events in {} requests over {} seeds \
         ({} accounts, {} transfers created; {} of {} transfer result codes seen, \
         {} of {} account result codes seen)",
        totals.events,
        totals.requests,
        seed - seed_base,
        totals.accounts_created,
        totals.transfers_created,
        totals.transfer_codes.len(),
        CreateTransferResult::ALL.len() - 1,
        totals.account_codes.len(),
        CreateAccountResult::ALL.len() - 1,
    );
    eprintln!("ledger differential transfer results: {}", codes.join(" "));
    // The workload must reach the interesting corners, not just agree on trivia.
    for code in [
        CreateTransferResult::LinkedEventFailed,
        CreateTransferResult::LinkedEventChainOpen,
        CreateTransferResult::Exists,
        CreateTransferResult::IdAlreadyFailed,
        CreateTransferResult::ExceedsCredits,
        CreateTransferResult::PendingTransferAlreadyPosted,
        CreateTransferResult::PendingTransferExpired,
        CreateTransferResult::OverflowsDebitsPosted,
        CreateTransferResult::ExistsWithDifferentAmount,
        CreateTransferResult::TransfersFull,
    ] {
        assert!(
            totals.transfer_codes.contains_key(&(code as u32)),
            "the workload never produced {code}"
        );
    }
}

#[derive(Default)]
struct Totals {
    events: u64,
    requests: u64,
    accounts_created: u64,
    transfers_created: u64,
    transfer_codes: BTreeMap<u32, u64>,
    account_codes: BTreeMap<u32, u64>,
}

fn run_differential(seed: u64, events_budget: u64, totals: &mut Totals) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Mostly roomy tables; sometimes tiny ones (and short runs), to reach `*_full`.
    let tiny = rng.next_u64() % 8 == 0;
    let (accounts_max, transfers_max) = if tiny {
        (1 + rng.next_u64() % 64, 1 + rng.next_u64() % 256)
    } else {
        (4096, 65_536)
    };
    let message_size_max = [4096u32, 16 * 1024, 64 * 1024][(rng.next_u64() % 3) as usize];
    let mut ledger = Ledger::new(LedgerConfig {
        accounts_max: accounts_max as u32,
        transfers_max: transfers_max as u32,
        message_size_max,
    });
    let mut model = Model::new(
        accounts_max as usize,
        transfers_max as usize,
        message_size_max as usize,
    );
    let mut workload = Workload::new(&mut rng);
    let capacities = ledger.capacities();
    let body_max = message_size_max as usize - 256;
    let mut body = vec![0u8; body_max];
    let mut output = vec![0u8; body_max];
    // Sometimes late enough in time that long timeouts overflow.
    let mut timestamp: u64 = if rng.next_u64() % 8 == 0 {
        TIMESTAMP_MAX - u64::from(u32::MAX) * NS_PER_S
    } else {
        1_000_000_000_000
    };
    let requests = if tiny {
        100 + rng.next_u64() % 200
    } else {
        100 + rng.next_u64() % 800
    };
    let mut events = 0;
    for request in 0..requests {
        if events >= events_budget {
            break;
        }
        workload.set_timestamp_hint(timestamp);
        let (operation, size) = workload.generate(&mut rng, &mut body[..]);
        let input = &body[..size];
        assert!(ledger.input_valid(operation as u8, input));
        assert!(model.input_valid(operation as u8, input));
        let count = ledger.prepare_timestamps(operation as u8, input);
        // Time moves on: usually a little, sometimes by seconds (so timeouts expire).
        let jump = match rng.next_u64() % 10 {
            0 => rng.next_u64() % (3 * NS_PER_S),
            1..=3 => rng.next_u64() % 1_000_000,
            _ => rng.next_u64() % 1_000,
        };
        timestamp += count.max(1) + jump;
        let size_out = ledger.commit(
            0,
            request + 1,
            timestamp,
            operation as u8,
            input,
            &mut output,
        );
        let expected = model.commit(timestamp, operation as u8, input);
        if output[..size_out] != expected[..] {
            panic!(
                "seed {seed} request {request} ({}): ledger and model differ\n ledger {:?}\n model  {:?}",
                operation.name(),
                describe(operation, &output[..size_out]),
                describe(operation, &expected),
            );
        }
        let n = if operation.is_batchable() {
            (size / operation.event_size()) as u64
        } else {
            1
        };
        events += n;
        totals.events += n;
        totals.requests += 1;
        if operation == LedgerOperation::CreateTransfers
            || operation == LedgerOperation::CreateAccounts
        {
            let failed = results(&expected).count() as u64;
            let codes = if operation == LedgerOperation::CreateTransfers {
                totals.transfers_created += n - failed;
                &mut totals.transfer_codes
            } else {
                totals.accounts_created += n - failed;
                &mut totals.account_codes
            };
            for (_, r) in results(&expected) {
                *codes.entry(r).or_default() += 1;
            }
        }
        if request % 64 == 0 || request + 1 == requests {
            compare_state(seed, &ledger, &model);
        }
    }
    compare_state(seed, &ledger, &model);
    assert_eq!(ledger.capacities(), capacities, "seed {seed}: reallocated");
}

fn compare_state(seed: u64, ledger: &Ledger, model: &Model) {
    assert_eq!(
        ledger.accounts(),
        &model.accounts[..],
        "seed {seed}: accounts"
    );
    assert_eq!(
        ledger.transfers(),
        &model.transfers[..],
        "seed {seed}: transfers"
    );
    assert_eq!(
        ledger.orphans_count(),
        model.failed_ids.len(),
        "seed {seed}"
    );
    for t in ledger.transfers() {
        assert_eq!(
            ledger.transfer_status(t.id),
            Some(model.status[&t.id].code()),
            "seed {seed}: status of {}",
            t.id
        );
    }
    assert_eq!(
        ledger.digest(),
        ledger.digest_recompute(),
        "seed {seed}: digest"
    );
    // Money is conserved.
    let sum = |f: fn(&Account) -> u128| {
        ledger
            .accounts()
            .iter()
            .fold(0u128, |s, a| s.wrapping_add(f(a)))
    };
    assert_eq!(sum(|a| a.debits_posted), sum(|a| a.credits_posted));
    assert_eq!(sum(|a| a.debits_pending), sum(|a| a.credits_pending));
}

fn describe(operation: LedgerOperation, reply: &[u8]) -> Vec<String> {
    match operation {
        LedgerOperation::CreateAccounts => results(reply)
            .map(|(i, r)| format!("{i}:{}", CreateAccountResult::from_u32(r).unwrap()))
            .collect(),
        LedgerOperation::CreateTransfers => results(reply)
            .map(|(i, r)| format!("{i}:{}", CreateTransferResult::from_u32(r).unwrap()))
            .collect(),
        _ => reply
            .chunks(128)
            .map(|c| format!("{:x?}", &c[..16]))
            .collect(),
    }
}

#[test]
fn workload_is_deterministic() {
    let run = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut workload = Workload::new(&mut rng);
        let mut body = vec![0u8; 16 * 1024];
        let mut all = Vec::new();
        for _ in 0..200 {
            let (op, size) = workload.generate(&mut rng, &mut body);
            all.push(op as u8);
            all.extend_from_slice(&body[..size]);
        }
        all
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn prefault_changes_nothing() {
    let mut h = Harness::new();
    assert!(h
        .create_accounts(&[account(1, 1), account(2, 1)])
        .is_empty());
    assert!(h.create_transfers(&[transfer(10, 1, 2, 7)]).is_empty());
    let digest = h.ledger.digest();
    let touched = h.ledger.prefault();
    assert!(touched > 0);
    assert_eq!(h.ledger.digest(), digest);
    assert_eq!(h.ledger.digest_recompute(), digest);
    assert_eq!(h.ledger.account(1).unwrap().debits_posted, 7);
    // The ledger keeps working after it, with no reallocation.
    assert!(h.create_transfers(&[transfer(11, 2, 1, 3)]).is_empty());
    assert_eq!(h.ledger.account(1).unwrap().credits_posted, 3);
}
