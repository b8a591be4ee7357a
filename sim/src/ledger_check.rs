//! The ledger checker: invariants of double-entry accounting that hold after every commit, on
//! every replica, whatever the workload sent (docs/ledger.md). The canonical-history checker only
//! sees that replicas agree; a ledger bug that every replica makes alike (a wrong balance, a
//! limit not enforced, a failed linked chain that leaves an effect) is invisible to it.
//!
//! - `check_balances` (cheap, every `LEDGER_CHECK_INTERVAL` ticks): the sums of debits and credits
//!   over all accounts are equal, pending and posted alike (every transfer moves the same amount
//!   out of one account and into another); and no account breaks its
//!   `debits_must_not_exceed_credits` / `credits_must_not_exceed_debits` flag.
//! - `check_transfers` (a scan of every transfer, at the end of a run): each account's four
//!   balances are exactly what its stored transfers add up to. A plain transfer posts its
//!   amount; a pending one holds it as pending while its status is pending; a post stores the
//!   posted amount; a void, an expired or posted pending transfer holds nothing. Accounts start
//!   with zero balances.

use std::collections::BTreeMap;
use vsr::ledger::state_machine::STATUS_PENDING;
use vsr::ledger::{account_flags, transfer_flags, Ledger};

/// Ticks between two `check_balances` of every replica.
pub const LEDGER_CHECK_INTERVAL: u64 = 64;

/// Double entry and the accounts' limit flags.
pub fn check_balances(ledger: &Ledger) -> Result<(), String> {
    let (mut dp, mut dq, mut cp, mut cq) = (0u128, 0u128, 0u128, 0u128);
    for a in ledger.accounts() {
        dp = dp.wrapping_add(a.debits_pending);
        dq = dq.wrapping_add(a.debits_posted);
        cp = cp.wrapping_add(a.credits_pending);
        cq = cq.wrapping_add(a.credits_posted);
        if a.flags & account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS != 0
            && a.debits_pending.checked_add(a.debits_posted) > Some(a.credits_posted)
        {
            return Err(format!(
                "account {:x} must not have debits exceed credits but has debits pending {} + \
                 posted {} > credits posted {}",
                a.id, a.debits_pending, a.debits_posted, a.credits_posted
            ));
        }
        if a.flags & account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS != 0
            && a.credits_pending.checked_add(a.credits_posted) > Some(a.debits_posted)
        {
            return Err(format!(
                "account {:x} must not have credits exceed debits but has credits pending {} + \
                 posted {} > debits posted {}",
                a.id, a.credits_pending, a.credits_posted, a.debits_posted
            ));
        }
    }
    if dp != cp || dq != cq {
        return Err(format!(
            "debits and credits differ over all accounts: pending {dp} vs {cp}, posted {dq} vs {cq}"
        ));
    }
    Ok(())
}

/// Every account's balances are the sum of its transfers.
pub fn check_transfers(ledger: &Ledger) -> Result<(), String> {
    // account id -> [debits_pending, debits_posted, credits_pending, credits_posted]
    let mut sums: BTreeMap<u128, [u128; 4]> = BTreeMap::new();
    for t in ledger.transfers() {
        let post_or_void = t.flags
            & (transfer_flags::POST_PENDING_TRANSFER | transfer_flags::VOID_PENDING_TRANSFER);
        let (debit, credit) = if post_or_void != 0 {
            if t.flags & transfer_flags::POST_PENDING_TRANSFER == 0 {
                continue;
            }
            (1, 3)
        } else if t.flags & transfer_flags::PENDING != 0 {
            if ledger.transfer_status(t.id) != Some(STATUS_PENDING) {
                continue;
            }
            (0, 2)
        } else {
            (1, 3)
        };
        let d = sums.entry(t.debit_account_id).or_default();
        d[debit] = d[debit].wrapping_add(t.amount);
        let c = sums.entry(t.credit_account_id).or_default();
        c[credit] = c[credit].wrapping_add(t.amount);
    }
    for a in ledger.accounts() {
        let expected = sums.get(&a.id).copied().unwrap_or_default();
        let held = [
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ];
        if held != expected {
            return Err(format!(
                "account {:x} holds balances (debits pending, posted, credits pending, posted) \
                 {held:?} but its transfers add up to {expected:?}",
                a.id
            ));
        }
    }
    Ok(())
}
